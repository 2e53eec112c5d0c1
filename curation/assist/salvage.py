"""Field-level salvage of a caption that comes from outside: an LLM reply, a Label Studio result, a prediction file.

Every field that validates is kept. What can be read safely is coerced, and noted: a count ("2", "three",
"multiple (about 10)") to its number band; a measurement or a range ("3-4 mm", "about 1.5 cm") to its size band and
measurement; a band that contradicts the measurement to the measurement's band; a list in the free-text field
joined. What cannot be read is dropped, and noted: a field that does not validate, a measurement that is not a
positive size (0 is how models say "unknown"). Keys that are not fields (e.g. "confidence") are ignored, and noted.
The caption fails only when nothing usable is left.

    caption, notes = salvage_caption({"number": "2", "size": "3-4 mm", "confidence": 0.8})
    # number "few"; size "<5 mm" with size_mm 3.5; notes say what changed and what was ignored
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from schema.caption import _FIELD_FOR_LABEL, Caption, validate_caption
from schema.errors import CaptionError
from schema.fields import FIELD_KEYS, MAX_OTHER_CHARS, MAX_SIZE_MM, MAX_TERMS_PER_FIELD, size_band_for_mm
from schema.vocabulary import clean_term

NUMBER_WORDS = {
    word: n
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
# the number bands by count: single 1, few 2-5, multiple 6-20, numerous > 20 (schema/data/vocabulary.json)
COUNT_BANDS = ((1, "single"), (5, "few"), (20, "multiple"))
_RANGE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:-|–|—|to)\s*(\d+(?:[.,]\d+)?)\s*(mm|cm)\b", re.I)
_AMOUNT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(mm|cm)\b", re.I)
_COUNT = re.compile(r"\b(\d{1,4})\b")
_PARENTHESES = re.compile(r"\s*\(.*?\)\s*")
MAX_ORIGINAL_CHARS = 120
# Text longer than these is dropped before any regex reads it: searching a number pattern through a run of
# digits is quadratic (a 30,000-digit size took 90 s and held the GIL, stalling the app for every user). A count
# or a size is a few words; no field holds more than the free text's limit; a key is a field's name.
MAX_MEASURE_CHARS = 200
MAX_KEY_CHARS = 60
MAX_LIST_ITEMS = 5 * MAX_TERMS_PER_FIELD


@dataclass(frozen=True)
class FieldNote:
    """What salvage did to one field: "changed" (coerced; the new value is kept), "dropped" or "ignored"."""

    field: str
    action: str
    reason: str
    original: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ORIGINAL_CHARS else text[: MAX_ORIGINAL_CHARS - 1] + "…"


def _valid(field: str, value: Any) -> str | None:
    """None when `value` validates for `field` alone, else the reason."""
    try:
        validate_caption({field: value})
    except CaptionError as e:
        return str(e).removeprefix("invalid caption: ").removeprefix(f"{field}: ")
    return None


def _too_long(field: str, value: Any) -> str | None:
    """Why `value` is too long to read at all (before any regex or validation sees it), or None."""
    limit = MAX_MEASURE_CHARS if field in ("number", "size", "size_mm") else MAX_OTHER_CHARS
    if isinstance(value, str) and len(value) > limit:
        return f"{len(value):,} characters, over the {limit:,} the {field} field can hold: not read"
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST_ITEMS:
            return f"{len(value):,} items, over {MAX_LIST_ITEMS}: not read"
        if any(isinstance(item, str) and len(item) > limit for item in value):
            return f"an item over the {limit:,} characters the {field} field can hold: not read"
    return None


def _band_for_count(count: int) -> str:
    return next((band for limit, band in COUNT_BANDS if count <= limit), "numerous")


def _number(value: Any) -> tuple[str | None, str]:
    """(band, how) for a count given as a number, digits or words; (None, why) when it cannot be read."""
    if isinstance(value, bool):
        return None, "not a count"
    if isinstance(value, (int, float)):
        count = int(value) if float(value).is_integer() else None
    else:
        text = clean_term(str(value))
        plain = _PARENTHESES.sub(" ", text).strip()
        if plain != text and _valid("number", plain) is None:
            return validate_caption({"number": plain}).number, f"read as {plain!r} (the words in brackets left out)"
        digits = _COUNT.search(text)
        word = next((NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text) if w in NUMBER_WORDS), None)
        count = int(digits.group(1)) if digits else word
    if count is None or count < 1:
        return None, "not a count of lesions"
    band = _band_for_count(count)
    return band, f"{count} lesion(s) is the band {band!r}"


def _millimetres(amount: str, unit: str) -> float:
    return float(amount.replace(",", ".")) * (10 if unit.lower() == "cm" else 1)


def _size(value: Any) -> tuple[float | None, str]:
    """(measurement in mm, how) from a size text that is a range or an amount; (None, why) otherwise."""
    if not isinstance(value, str):
        return None, "not a size"
    text = value.strip()
    found = _RANGE.search(text)
    if found:
        low, high = _millimetres(found.group(1), found.group(3)), _millimetres(found.group(2), found.group(3))
        if 0 < low <= high:
            return round((low + high) / 2, 1), f"the range {found.group(0)!r} read as its middle, {(low + high) / 2:g} mm"
    found = _AMOUNT.search(text)
    if found:
        return _millimetres(*found.groups()), f"{found.group(0)!r} read as a measurement"
    return None, "not a size band or a measurement"


def _given_fields(data: dict, notes: list[FieldNote]) -> dict[str, Any]:
    """The caption fields an object names (keys by field or by label), each once; the rest noted as ignored."""
    given: dict[str, Any] = {}
    for key, value in data.items():
        if len(str(key)) > MAX_KEY_CHARS:
            notes.append(FieldNote(str(key)[:MAX_KEY_CHARS], "ignored", "not a caption field (a long key)", _shown(value)))
            continue
        field = _FIELD_FOR_LABEL.get(clean_term(str(key)).replace("_", " "), str(key))
        if field in FIELD_KEYS or field == "size_mm":
            too_long = _too_long(field, value)
            if too_long:
                notes.append(FieldNote(field, "dropped", too_long, _shown(value)))
                continue
        if field not in FIELD_KEYS and field != "size_mm":
            notes.append(FieldNote(str(key)[:60], "ignored", "not a caption field", _shown(value)))
        elif field in given:
            notes.append(FieldNote(field, "ignored", f"given twice (as {key!r}); the first is kept", _shown(value)))
        else:
            given[field] = value
    return given


def _keep_measurement(measured: Any, data: dict, kept: dict[str, Any], notes: list[FieldNote]) -> None:
    """A measured diameter into kept["size_mm"] when it is a plausible one; noted as dropped otherwise."""
    if isinstance(measured, str):
        measured, _how = _size(measured)
    if isinstance(measured, (int, float)) and not isinstance(measured, bool) and 0 < measured <= MAX_SIZE_MM:
        kept["size_mm"] = float(measured)
        return
    reason = "no measurement (0 or less means unknown)" if isinstance(measured, (int, float)) else "not a number"
    if isinstance(measured, (int, float)) and measured > MAX_SIZE_MM:
        reason = f"over {MAX_SIZE_MM:g} mm: not a lesion's diameter"
    notes.append(FieldNote("size_mm", "dropped", reason, _shown(data.get("size_mm", measured))))


def _coerced(field: str, value: Any, problem: str, kept: dict[str, Any]) -> tuple[Any, str]:
    """(the value a field's invalid answer can be read as, or None; how). A size given as a measurement also sets
    kept["size_mm"] when none was measured."""
    if field == "number":
        return _number(value)
    if field == "size":
        mm, how = _size(value)
        if mm is None or not 0 < mm <= MAX_SIZE_MM:
            return None, how
        if "size_mm" in kept and size_band_for_mm(kept["size_mm"]) != size_band_for_mm(mm):
            how = f"{how}, but the measurement {kept['size_mm']:g} mm disagrees; the measurement decides"
        else:
            kept.setdefault("size_mm", mm)
        return size_band_for_mm(kept["size_mm"]), how
    if field == "other" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "; ".join(v.strip() for v in value if v.strip()), "a list joined into one text"
    return None, problem


def salvage_caption(data: Any) -> tuple[Caption, list[FieldNote]]:
    """The usable part of a caption and a note per field that was coerced, dropped or ignored. CaptionError when
    nothing usable is left."""
    if isinstance(data, Caption):
        return data, []
    if not isinstance(data, dict):
        raise CaptionError(f"a caption must be an object with the 11 fields, got {type(data).__name__}")
    notes: list[FieldNote] = []
    given = _given_fields(data, notes)
    kept: dict[str, Any] = {}
    measured = given.pop("size_mm", None)
    if measured is not None:
        _keep_measurement(measured, data, kept, notes)
    for field, value in given.items():
        problem = _valid(field, value)
        if problem is None:
            kept[field] = value
            continue
        coerced, how = _coerced(field, value, problem, kept)
        if coerced is not None and _valid(field, coerced) is None:
            kept[field] = coerced
            notes.append(FieldNote(field, "changed", how, _shown(value)))
        else:
            notes.append(FieldNote(field, "dropped", problem, _shown(value)))
    # a band that contradicts the measurement: the measurement decides (models guess bands, measure less often)
    if "size_mm" in kept and kept.get("size") is not None:
        band = size_band_for_mm(kept["size_mm"])
        if _valid("size", kept["size"]) is None and validate_caption({"size": kept["size"]}).size != band:
            notes.append(
                FieldNote(
                    "size", "changed", f"the band contradicts the measured {kept['size_mm']:g} mm: {band}", _shown(kept["size"])
                )
            )
            kept["size"] = band
    caption = validate_caption(kept)
    if caption.is_empty() and any(n.action == "dropped" for n in notes):
        reasons = "; ".join(f"{n.field}: {n.reason}" for n in notes if n.action == "dropped")
        raise CaptionError(f"nothing usable in the caption ({reasons})")
    return caption, notes
