"""Controlled vocabularies of the caption fields, and how raw text maps onto them.

The data lives in schema/data/vocabulary.json (one entry per field: terms with synonyms).
Matching is exact after cleaning (case, Unicode form, dashes, whitespace) plus a plural rule;
there is deliberately no fuzzy matching here: "papule" and "pustule" are one edit apart and
mean different things.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from schema.fields import MULTI_FIELDS, ORDINAL_VALUES

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unicode-normalised, control characters removed, whitespace collapsed (case kept)."""
    text = unicodedata.normalize("NFKC", text).translate(_DASHES)
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def clean_term(text: str) -> str:
    """The comparable form of a vocabulary term: clean_text, lower case, no edge punctuation."""
    # Iterate to a fixed point: lower() can change what NFKC or stripping would do next.
    for _ in range(4):
        cleaned = clean_text(text).lower().strip(" .:;!?\"'`*_")
        if cleaned == text:
            break
        text = cleaned
    return text


def _singular_forms(term: str) -> list[str]:
    forms = []
    if term.endswith("ae"):
        forms.append(term[:-1])  # bullae -> bulla
    if term.endswith("es"):
        forms.append(term[:-2])  # crusted lesions rarely; "nodules" handled by -s
    if term.endswith("s") and not term.endswith("ss"):
        forms.append(term[:-1])
    return forms


@dataclass(frozen=True)
class Vocabulary:
    """Terms of every controlled field, their synonyms, and the ordinal synonyms."""

    version: str
    terms: dict[str, tuple[str, ...]]  # field -> canonical terms in display order
    lookup: dict[str, dict[str, str]]  # field -> cleaned term or synonym -> canonical term
    synonyms: dict[str, dict[str, tuple[str, ...]]]  # field -> term -> synonyms
    sources: str

    def normalise(self, field: str, raw: str) -> tuple[str, bool]:
        """(canonical term, known) for one raw value of a controlled or ordinal field.

        Unknown values come back cleaned with known=False: the caller keeps them and flags them.
        """
        cleaned = clean_term(raw)
        table = self.lookup[field]
        if cleaned in table:
            return table[cleaned], True
        for form in _singular_forms(cleaned):
            if form in table:
                return table[form], True
        return cleaned, False

    def order_key(self, field: str):
        """Sort key: vocabulary terms in vocabulary order, then new terms alphabetically."""
        position = {t: i for i, t in enumerate(self.terms[field])}
        return lambda term: (position.get(term, len(position)), term)


def _build(doc: dict) -> Vocabulary:
    terms: dict[str, tuple[str, ...]] = {}
    lookup: dict[str, dict[str, str]] = {}
    synonyms: dict[str, dict[str, tuple[str, ...]]] = {}
    for field in MULTI_FIELDS:
        entries = doc["fields"][field]
        terms[field] = tuple(e["term"] for e in entries)
        synonyms[field] = {e["term"]: tuple(e.get("synonyms", ())) for e in entries}
        table: dict[str, str] = {}
        for e in entries:
            for name in (e["term"], *e.get("synonyms", ())):
                key = clean_term(name)
                if table.get(key, e["term"]) != e["term"]:
                    raise ValueError(f"vocabulary: {name!r} maps to two terms of field {field!r}")
                table[key] = e["term"]
        lookup[field] = table
    for field, values in ORDINAL_VALUES.items():
        extra = doc.get("ordinal_synonyms", {}).get(field, {})
        terms[field] = values
        synonyms[field] = {v: tuple(extra.get(v, ())) for v in values}
        table = {clean_term(v): v for v in values}
        table.update({clean_term(s): v for v, syns in extra.items() for s in syns})
        lookup[field] = table
    return Vocabulary(doc["version"], terms, lookup, synonyms, doc.get("sources", ""))


@lru_cache(maxsize=1)
def _packaged_document() -> dict:
    return json.loads(resources.files("schema").joinpath("data/vocabulary.json").read_text(encoding="utf-8"))


# Terms a reviewer accepted into this workbench's vocabulary (curation/labelling/vocabulary.py keeps them in the
# database): field -> ((term, synonyms), ...). They extend the packaged vocabulary for this process.
_local_terms: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = ()


@lru_cache(maxsize=8)
def _with_local_terms(local: tuple) -> Vocabulary:
    doc = _packaged_document()
    if not local:
        return _build(doc)
    fields = {field: list(entries) for field, entries in doc["fields"].items()}
    for field, additions in local:
        fields[field] = fields[field] + [{"term": term, "synonyms": list(synonyms)} for term, synonyms in additions]
    count = sum(len(additions) for _, additions in local)
    return _build({**doc, "fields": fields, "version": f"{doc['version']}+{count}-local"})


def default_vocabulary() -> Vocabulary:
    """The packaged vocabulary plus the terms this workbench accepted (`use_local_terms`)."""
    return _with_local_terms(_local_terms)


def packaged_vocabulary() -> Vocabulary:
    """The vocabulary shipped with SkinFlow, without local additions."""
    return _with_local_terms(())


def _local_key(terms: dict[str, list[tuple[str, tuple[str, ...]]]]) -> tuple:
    return tuple(
        (field, tuple((term, tuple(synonyms)) for term, synonyms in sorted(entries)))
        for field, entries in sorted(terms.items())
        if entries
    )


def vocabulary_with(terms: dict[str, list[tuple[str, tuple[str, ...]]]]) -> Vocabulary:
    """The packaged vocabulary extended by these terms (field -> [(term, synonyms)]); raises ValueError when a
    name would map to two terms of one field."""
    return _with_local_terms(_local_key(terms))


def use_local_terms(terms: dict[str, list[tuple[str, tuple[str, ...]]]]) -> None:
    """Make `default_vocabulary()` the packaged vocabulary extended by these accepted local terms."""
    global _local_terms
    local = _local_key(terms)
    _with_local_terms(local)  # builds (and checks) before it takes effect
    _local_terms = local
