"""How two captions compare, field by field: the s_i of the stage I reward and of agreement.

- multi-value fields: set F1 after vocabulary normalisation;
- ordinal fields (number, size): 1 exact, 0.5 adjacent, 0 otherwise;
- free text (`other`): token F1;
- both empty: 1; exactly one empty: 0.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from schema.caption import Caption, _normalise_multi, _normalise_ordinal
from schema.errors import CaptionError
from schema.fields import FIELD_BY_KEY, FIELD_KEYS, ORDINAL_VALUES

_TOKEN = re.compile(r"\w+")


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if n_pred == 0 and n_ref == 0:
        return 1.0
    if overlap == 0:
        return 0.0
    return 2 * overlap / (n_pred + n_ref)


def set_f1(predicted: set[str] | tuple[str, ...], reference: set[str] | tuple[str, ...]) -> float:
    p, r = set(predicted), set(reference)
    return _f1(len(p & r), len(p), len(r))


def token_f1(predicted: str, reference: str) -> float:
    p = Counter(_TOKEN.findall(predicted.lower()))
    r = Counter(_TOKEN.findall(reference.lower()))
    return _f1(sum((p & r).values()), sum(p.values()), sum(r.values()))


def ordinal_score(field: str, predicted: str | None, reference: str | None) -> float:
    if predicted is None and reference is None:
        return 1.0
    if predicted is None or reference is None:
        return 0.0
    scale = ORDINAL_VALUES[field]
    distance = abs(scale.index(predicted) - scale.index(reference))
    return 1.0 if distance == 0 else 0.5 if distance == 1 else 0.0


def field_score(field: str, predicted: Any, reference: Any) -> float:
    """s_i in [0, 1] for one field; values may be raw (they are normalised first)."""
    spec = FIELD_BY_KEY.get(field)
    if spec is None:
        raise CaptionError(f"unknown field {field!r}; the fields are {', '.join(FIELD_KEYS)}")
    try:
        if spec.kind == "multi":
            return set_f1(_normalise_multi(field, predicted), _normalise_multi(field, reference))
        if spec.kind == "ordinal":
            return ordinal_score(field, _normalise_ordinal(field, predicted), _normalise_ordinal(field, reference))
    except ValueError as e:
        raise CaptionError(f"{field}: {e}") from None
    return token_f1(predicted or "", reference or "")


def caption_scores(predicted: Caption, reference: Caption) -> dict[str, float]:
    """Per-field scores s_i for all 11 fields, in schema order."""
    out = {}
    for key in FIELD_KEYS:
        p, r = getattr(predicted, key), getattr(reference, key)
        kind = FIELD_BY_KEY[key].kind
        if kind == "multi":
            out[key] = set_f1(p, r)
        elif kind == "ordinal":
            out[key] = ordinal_score(key, p, r)
        else:
            out[key] = token_f1(p, r)
    return out
