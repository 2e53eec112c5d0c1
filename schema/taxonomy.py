"""The diagnosis taxonomy: labels -> nine-partition group -> three-partition group.

Default: Fitzpatrick17k (114 labels, 9 groups, 3 groups; CC BY-NC-SA 3.0, see the file's _meta).
A team can load its own file of the same shape with `load_taxonomy(path)`:

    {"_meta": {"name": ..., "malignant_groups": ["malignant"]},
     "labels": {"<key>": {"nine_partition": ..., "three_partition": ...,
                          "display": optional, "synonyms": optional list, "count": optional}}}

Free-text diagnoses are normalised to a key by: cleaning (case, accents, punctuation, possessives),
abbreviation expansion (BCC, "ca"), exact key / display / synonym match, then a fuzzy match above
a threshold that also beats the runner-up by a margin. Otherwise the text stays free text (None).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path

from rapidfuzz import fuzz, process

from schema.errors import TaxonomyError

FUZZY_THRESHOLD = 88.0
FUZZY_MARGIN = 3.0
FUZZY_MIN_CHARS = 5

# Token rewrites applied before matching (spelling variants and common abbreviations).
_TOKEN_REWRITES = {
    "ca": "carcinoma",
    "carc": "carcinoma",
    "naevus": "nevus",
    "naevi": "nevi",
    "seborrhoeic": "seborrheic",
    "haemangioma": "hemangioma",
    "oedema": "edema",
    "tumour": "tumor",
    "melanocytic naevus": "melanocytic nevus",
}


class Relevance(StrEnum):
    """How a predicted diagnosis relates to the true one, best first."""

    EXACT = "exact"
    SAME_GROUP9 = "same_group9"
    SAME_GROUP3 = "same_group3"
    UNRELATED = "unrelated"


def clean_diagnosis(text: str) -> str:
    """Lower case, accents removed, possessive apostrophes dropped, other punctuation to spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['\u2019`]", "", text)
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    return " ".join(_TOKEN_REWRITES.get(t, t) for t in text.split())


@dataclass(frozen=True)
class Label:
    key: str
    display: str
    group9: str
    group3: str
    count: int
    synonyms: tuple[str, ...]


class Taxonomy:
    """A loaded taxonomy. Immutable; cheap to share."""

    def __init__(self, doc: dict, version: str):
        meta = doc.get("_meta", {})
        raw_labels = doc.get("labels")
        if not isinstance(raw_labels, dict) or not raw_labels:
            raise TaxonomyError("taxonomy file has no 'labels' object; see schema/taxonomy.py for the expected shape")
        self.name: str = meta.get("name", "custom")
        self.version = version
        self.meta = meta
        self.malignant_groups: frozenset[str] = frozenset(meta.get("malignant_groups", ["malignant"]))
        self.labels: dict[str, Label] = {}
        for key, entry in raw_labels.items():
            try:
                label = Label(
                    key=key,
                    display=entry.get("display") or key[:1].upper() + key[1:],
                    group9=entry["nine_partition"],
                    group3=entry["three_partition"],
                    count=int(entry.get("count", 0)),
                    synonyms=tuple(entry.get("synonyms", ())),
                )
            except (KeyError, TypeError, AttributeError, ValueError):
                raise TaxonomyError(f"taxonomy label {key!r} needs 'nine_partition' and 'three_partition' text fields") from None
            self.labels[key] = label
        # name (cleaned) -> key. Keys and display names win over synonyms on a clash.
        self._names: dict[str, str] = {}
        for label in self.labels.values():
            for name in label.synonyms:
                self._names.setdefault(clean_diagnosis(name), label.key)
        for label in self.labels.values():
            self._names[clean_diagnosis(label.display)] = label.key
        for label in self.labels.values():
            self._names[clean_diagnosis(label.key)] = label.key
        self._choices = list(self._names)

    # -- lookups ---------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self.labels

    def label(self, key: str) -> Label:
        try:
            return self.labels[key]
        except KeyError:
            raise TaxonomyError(f"{key!r} is not a label of taxonomy {self.name!r}") from None

    def groups9(self) -> list[str]:
        return sorted({l.group9 for l in self.labels.values()})

    def groups3(self) -> list[str]:
        return sorted({l.group3 for l in self.labels.values()})

    def is_malignant(self, key: str) -> bool:
        return self.label(key).group3 in self.malignant_groups

    # -- normalisation -----------------------------------------------------------------------
    def normalise(self, text: str | None) -> str | None:
        """The taxonomy key a free-text diagnosis names, or None (keep it as free text)."""
        if not text or not isinstance(text, str):
            return None
        if text in self.labels:
            return text
        cleaned = clean_diagnosis(text)
        if not cleaned:
            return None
        if cleaned in self._names:
            return self._names[cleaned]
        if len(cleaned) < FUZZY_MIN_CHARS:
            return None
        best = process.extract(cleaned, self._choices, scorer=fuzz.ratio, limit=5)
        if not best or best[0][1] < FUZZY_THRESHOLD:
            return None
        top_key = self._names[best[0][0]]
        # A close runner-up naming a different label makes the match ambiguous.
        for name, score, _ in best[1:]:
            if self._names[name] != top_key and best[0][1] - score < FUZZY_MARGIN:
                return None
        return top_key

    def _resolve(self, value: str | None) -> str | None:
        return value if value in self.labels else self.normalise(value)

    def relevance(self, predicted: str | None, truth: str) -> Relevance:
        truth_key = self._resolve(truth)
        if truth_key is None:
            raise TaxonomyError(f"true diagnosis {truth!r} is not in taxonomy {self.name!r}")
        pred_key = self._resolve(predicted)
        if pred_key is None:
            return Relevance.UNRELATED
        p, t = self.labels[pred_key], self.labels[truth_key]
        if p.key == t.key:
            return Relevance.EXACT
        if p.group9 == t.group9:
            return Relevance.SAME_GROUP9
        if p.group3 == t.group3:
            return Relevance.SAME_GROUP3
        return Relevance.UNRELATED

    def is_safety_error(self, predicted: str | None, truth: str) -> bool:
        """True when the truth is malignant and the answer is not (no answer counts as not)."""
        truth_key = self._resolve(truth)
        if truth_key is None:
            raise TaxonomyError(f"true diagnosis {truth!r} is not in taxonomy {self.name!r}")
        if not self.is_malignant(truth_key):
            return False
        pred_key = self._resolve(predicted)
        return pred_key is None or not self.is_malignant(pred_key)


def _from_bytes(data: bytes, where: str) -> Taxonomy:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaxonomyError(f"taxonomy file {where} is not valid UTF-8 JSON: {e}") from None
    if not isinstance(doc, dict):
        raise TaxonomyError(f"taxonomy file {where} must hold a JSON object with 'labels'")
    return Taxonomy(doc, version=f"{doc.get('_meta', {}).get('name', 'custom')}-{hashlib.sha256(data).hexdigest()[:12]}")


def load_taxonomy(path: str | Path) -> Taxonomy:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TaxonomyError(f"cannot read taxonomy file {path}: {e.strerror}") from None
    return _from_bytes(data, str(path))


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    data = resources.files("schema").joinpath("data/fitzpatrick17k_taxonomy.json").read_bytes()
    return _from_bytes(data, "fitzpatrick17k_taxonomy.json")


def normalise_diagnosis(text: str | None, taxonomy: Taxonomy | None = None) -> str | None:
    return (taxonomy or default_taxonomy()).normalise(text)


def relevance(predicted: str | None, truth: str, taxonomy: Taxonomy | None = None) -> Relevance:
    return (taxonomy or default_taxonomy()).relevance(predicted, truth)


def is_safety_error(predicted: str | None, truth: str, taxonomy: Taxonomy | None = None) -> bool:
    return (taxonomy or default_taxonomy()).is_safety_error(predicted, truth)
