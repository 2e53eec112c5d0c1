"""The caption: 11 fields, validated, with one canonical text form that parses back.

    caption = Caption(color=["Red", "brown"], lesion_type="papules", number="solitary")
    text = render(caption)          # "Color: erythematous, brown\nLocation: none\n..."
    assert parse(text) == caption

Multi-value fields are stored as sorted tuples of canonical terms (vocabulary order first,
then new terms alphabetically), so two captions with the same content are equal and render
the same. Values that are not in the vocabulary are kept and reported by `new_terms()`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from schema.errors import CaptionError, CaptionParseError
from schema.fields import (
    EMPTY_MARKERS,
    FIELD_BY_KEY,
    FIELDS,
    MAX_OTHER_CHARS,
    MAX_SIZE_MM,
    MAX_TERM_CHARS,
    MAX_TERMS_PER_FIELD,
    MULTI_FIELDS,
    ORDINAL_VALUES,
    size_band_for_mm,
)
from schema.vocabulary import clean_term, clean_text, default_vocabulary

SCHEMA_VERSION = "1"

_SPLIT = re.compile(r"[,;\n]")
_MEASURE = re.compile(r"^\s*(?:about|approx\.?|approximately|~)?\s*(\d+(?:[.,]\d+)?)\s*(mm|cm)\s*$", re.I)


def _is_empty(value: str) -> bool:
    return clean_term(value) in EMPTY_MARKERS


def _normalise_multi(field: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    # Split after NFKC: a compatibility character such as U+1F101 ("0,") becomes a separator there,
    # and splitting before it would store a term that the canonical text cannot carry back.
    if isinstance(value, str):
        parts = _SPLIT.split(unicodedata.normalize("NFKC", value))
    elif isinstance(value, (list, tuple, set, frozenset)):
        parts = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"expected text terms, got {type(item).__name__}")
            parts.extend(_SPLIT.split(unicodedata.normalize("NFKC", item)))
    else:
        raise ValueError(f"expected a list of terms or a comma-separated text, got {type(value).__name__}")
    vocab = default_vocabulary()
    terms: set[str] = set()
    for part in parts:
        if _is_empty(part):
            continue
        term, _known = vocab.normalise(field, part)
        if len(term) > MAX_TERM_CHARS:
            raise ValueError(f"term {term[:30]!r}... is longer than {MAX_TERM_CHARS} characters; shorten it")
        if term:
            terms.add(term)
    if len(terms) > MAX_TERMS_PER_FIELD:
        raise ValueError(f"{len(terms)} terms; at most {MAX_TERMS_PER_FIELD} per field")
    return tuple(sorted(terms, key=vocab.order_key(field)))


def _normalise_ordinal(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected one of {', '.join(ORDINAL_VALUES[field])}")
    if _is_empty(value):
        return None
    term, known = default_vocabulary().normalise(field, value)
    if not known:
        raise ValueError(f"{value!r} is not a {field} value; use one of: {', '.join(ORDINAL_VALUES[field])}")
    return term


class Caption(BaseModel):
    """A lesion description in the 11-field schema. Empty means "not applicable"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    color: tuple[str, ...] = ()
    location: tuple[str, ...] = ()
    shape: tuple[str, ...] = ()
    lesion_type: tuple[str, ...] = ()
    number: str | None = None
    size: str | None = None
    size_mm: float | None = None  # measured diameter, optional; the band is derived from it
    texture: tuple[str, ...] = ()
    border_surface: tuple[str, ...] = ()
    distribution: tuple[str, ...] = ()
    surrounding: tuple[str, ...] = ()
    other: str = ""

    @model_validator(mode="before")
    @classmethod
    def _measured_size(cls, data: Any) -> Any:
        # "size": "7 mm" is a measurement, not a band: keep the number and derive the band.
        if isinstance(data, dict) and isinstance(data.get("size"), str):
            match = _MEASURE.match(data["size"])
            if match and data.get("size_mm") is None:
                amount = float(match.group(1).replace(",", "."))
                data = {**data, "size": None, "size_mm": amount * (10 if match.group(2).lower() == "cm" else 1)}
        return data

    @field_validator(*MULTI_FIELDS, mode="before")
    @classmethod
    def _multi(cls, value: Any, info) -> tuple[str, ...]:
        return _normalise_multi(info.field_name, value)

    @field_validator("number", "size", mode="before")
    @classmethod
    def _ordinal(cls, value: Any, info) -> str | None:
        return _normalise_ordinal(info.field_name, value)

    @field_validator("size_mm")
    @classmethod
    def _size_mm(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if not (0 < value <= MAX_SIZE_MM):
            raise ValueError(f"measured size must be between 0 and {MAX_SIZE_MM:g} mm")
        return round(float(value), 1) or 0.1

    @field_validator("other", mode="before")
    @classmethod
    def _other(cls, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError("expected text")
        if len(value) > MAX_OTHER_CHARS * 2:
            raise ValueError(f"text is longer than {MAX_OTHER_CHARS} characters; shorten it")
        # Leading '*' would read as markdown bold when the canonical text is parsed back.
        text = clean_text(value).lstrip("* ")
        if len(text) > MAX_OTHER_CHARS:
            raise ValueError(f"text is longer than {MAX_OTHER_CHARS} characters; shorten it")
        return "" if _is_empty(text) else text

    @model_validator(mode="after")
    def _size_consistent(self) -> Caption:
        if self.size_mm is not None:
            band = size_band_for_mm(self.size_mm)
            if self.size is None:
                object.__setattr__(self, "size", band)
            elif self.size != band:
                raise ValueError(f"size band {self.size!r} does not match the measured {self.size_mm:g} mm ({band})")
        return self

    # -- views -------------------------------------------------------------------------------
    def new_terms(self) -> dict[str, tuple[str, ...]]:
        """Terms not in the vocabulary, per field (for vocabulary review)."""
        vocab = default_vocabulary()
        out = {}
        for field in MULTI_FIELDS:
            unknown = tuple(t for t in getattr(self, field) if t not in vocab.synonyms[field])
            if unknown:
                out[field] = unknown
        return out

    def is_empty(self) -> bool:
        return self == Caption()

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON dict (lists, not tuples) with every field present."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> Caption:
        return validate_caption(json.loads(data) if isinstance(data, str) else data)


def _explain(error: ValidationError) -> str:
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "caption"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = f"unknown field; the fields are {', '.join(f.key for f in FIELDS)}"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def validate_caption(data: Any) -> Caption:
    """A Caption from a dict (field keys or their aliases), raising CaptionError with a readable reason."""
    if isinstance(data, Caption):
        return data
    if not isinstance(data, dict):
        raise CaptionError(f"a caption must be an object with the 11 fields, got {type(data).__name__}")
    mapped: dict[str, Any] = {}
    for key, value in data.items():
        field = _FIELD_FOR_LABEL.get(clean_term(str(key)).replace("_", " "), str(key))
        if field in mapped:
            raise CaptionError(f"field {field!r} is given twice")
        mapped[field] = value
    try:
        return Caption.model_validate(mapped)
    except ValidationError as e:
        raise CaptionError(f"invalid caption: {_explain(e)}") from None


# -- canonical text ------------------------------------------------------------------------------
_EMPTY_TEXT = "none"
_FIELD_FOR_LABEL: dict[str, str] = {}
for _f in FIELDS:
    for _name in (_f.key, _f.key.replace("_", " "), _f.label, *_f.aliases):
        _FIELD_FOR_LABEL[clean_term(_name).replace("_", " ")] = _f.key
_FIELD_FOR_LABEL["size mm"] = "size_mm"
_LINE = re.compile(r"^[\s\-*•#>]*\**\s*([A-Za-z][A-Za-z /_&-]{0,40}?)\s*\**\s*:\s*\**\s*(.*?)\s*$")
_SIZE_WITH_MM = re.compile(r"^(.*?)\s*\((\d+(?:\.\d+)?)\s*mm\)$")


def render(caption: Caption) -> str:
    """The one canonical text of a caption: one `Label: values` line per field, in schema order."""
    lines = []
    for f in FIELDS:
        value = getattr(caption, f.key)
        if f.kind == "multi":
            text = ", ".join(value)
        elif f.key == "size" and caption.size_mm is not None:
            text = f"{value} ({caption.size_mm:g} mm)"
        else:
            text = value or ""
        lines.append(f"{f.label}: {text or _EMPTY_TEXT}")
    return "\n".join(lines)


def _loads_json_object(text: str) -> dict | None:
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, re.S)
    candidate = fenced.group(1) if fenced else text
    if not candidate.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as e:
        raise CaptionParseError(f"the caption looks like JSON but is not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(data, dict):
        raise CaptionParseError("the caption JSON must be an object with the 11 fields")
    return data


def parse(text: str) -> Caption:
    """Read a caption from its canonical text (tolerant of case, bullets, markdown bold, aliases,
    missing fields) or from a JSON object with the field keys. Raises CaptionParseError."""
    if not isinstance(text, str) or not text.strip():
        raise CaptionParseError("empty caption text")
    data = _loads_json_object(text.strip())
    if data is None:
        data = {}
        for line in text.splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            field = _FIELD_FOR_LABEL.get(clean_term(match.group(1)).replace("_", " "))
            if field is None:
                continue
            if field in data:
                raise CaptionParseError(f"field {FIELD_BY_KEY[field].label!r} appears twice")
            value = match.group(2)
            if field == "size":
                with_mm = _SIZE_WITH_MM.match(value)
                if with_mm:
                    value = with_mm.group(1)
                    data["size_mm"] = float(with_mm.group(2))
            data[field] = value
        if not data:
            raise CaptionParseError("no caption field found; expected lines like 'Color: erythematous' with the 11 schema fields")
    try:
        return validate_caption(data)
    except CaptionError as e:
        raise CaptionParseError(str(e)) from None


def json_schema() -> dict[str, Any]:
    """JSON schema for LLM structured output (OpenAI strict mode compatible: all keys required,
    no additional properties). Multi-value fields list their vocabulary in the description."""
    vocab = default_vocabulary()
    properties: dict[str, Any] = {}
    for f in FIELDS:
        if f.kind == "multi":
            properties[f.key] = {
                "type": "array",
                "items": {"type": "string"},
                "description": f"{f.label}: zero or more of: {', '.join(vocab.terms[f.key])} "
                "(another precise term only if none fits; empty list if not applicable)",
            }
        elif f.kind == "ordinal":
            properties[f.key] = {
                "type": ["string", "null"],
                "enum": [*ORDINAL_VALUES[f.key], None],
                "description": f"{f.label}: one of {', '.join(ORDINAL_VALUES[f.key])}, or null if not applicable",
            }
        else:
            properties[f.key] = {"type": "string", "description": "Other relevant descriptors; empty if none"}
    properties["size_mm"] = {
        "type": ["number", "null"],
        # what the validator needs, said to the model (strict mode allows these keywords): 0 is not "unknown"
        "exclusiveMinimum": 0,
        "maximum": MAX_SIZE_MM,
        "description": "Measured diameter in mm if visible, else null (never 0)",
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
