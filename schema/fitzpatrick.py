"""Fitzpatrick skin types and the bands some datasets give instead (DDI skin_tone 12, 34, 56)."""

from __future__ import annotations

BAND_TYPES = {"I-II": (1, 2), "III-IV": (3, 4), "V-VI": (5, 6)}


def band_of(skin_type: int | None) -> str | None:
    """The band a Fitzpatrick type falls in (None for an unknown type)."""
    return next((band for band, types in BAND_TYPES.items() if skin_type in types), None)
