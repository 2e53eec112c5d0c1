"""The 11 fields of a lesion caption (docs/schema.md), in their canonical order.

Three kinds:
- multi: a set of controlled vocabulary terms (new terms allowed, flagged for review);
- ordinal: one value from an ordered list (adjacent values earn partial credit);
- free: free text.
"""

from dataclasses import dataclass
from typing import Any, Literal

FieldKind = Literal["multi", "ordinal", "free"]


@dataclass(frozen=True)
class Field:
    key: str
    label: str  # how the field is named in the canonical text
    kind: FieldKind
    aliases: tuple[str, ...] = ()  # other names a parser accepts for the label


FIELDS: tuple[Field, ...] = (
    Field("color", "Color", "multi", ("colour", "colors", "colours")),
    Field("location", "Location", "multi", ("site", "body site", "anatomical site", "sites")),
    Field("shape", "Shape", "multi", ("shapes", "configuration")),
    Field("lesion_type", "Lesion type", "multi", ("lesion type", "type", "primary lesion", "morphology")),
    Field("number", "Number", "ordinal", ("count",)),
    Field("size", "Size", "ordinal", ()),
    Field("texture", "Texture", "multi", ("surface texture",)),
    Field(
        "border_surface",
        "Border/surface",
        "multi",
        ("border", "border and surface", "border and surface characteristics", "border surface", "margin"),
    ),
    Field("distribution", "Distribution", "multi", ("arrangement",)),
    Field("surrounding", "Surrounding", "multi", ("surrounding features", "surrounding skin", "perilesional")),
    Field("other", "Other", "free", ("other descriptors", "other relevant descriptors", "notes")),
)

FIELD_KEYS: tuple[str, ...] = tuple(f.key for f in FIELDS)
FIELD_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}
MULTI_FIELDS: tuple[str, ...] = tuple(f.key for f in FIELDS if f.kind == "multi")

# Ordinal scales, low to high. The first entry of each tuple is the canonical value.
NUMBER_VALUES: tuple[str, ...] = ("single", "few", "multiple", "numerous")
SIZE_VALUES: tuple[str, ...] = ("<5 mm", "5-10 mm", "1-2 cm", "2-5 cm", ">5 cm")
ORDINAL_VALUES: dict[str, tuple[str, ...]] = {"number": NUMBER_VALUES, "size": SIZE_VALUES}

# Upper bounds (mm, exclusive) of the size bands, used to derive a band from a measured size.
SIZE_BAND_UPPER_MM: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0, float("inf"))

# Values that mean "this field does not apply" wherever they appear.
EMPTY_MARKERS: frozenset[str] = frozenset(
    {"", "none", "n/a", "na", "not applicable", "not apparent", "-", "--", "—", "null", "nil", "not visible"}
)

MAX_OTHER_CHARS = 2000
MAX_TERM_CHARS = 80
MAX_TERMS_PER_FIELD = 20
MAX_SIZE_MM = 1000.0


def size_band_for_mm(mm: float) -> str:
    """The size band a measured diameter (mm) falls in."""
    for band, upper in zip(SIZE_VALUES, SIZE_BAND_UPPER_MM, strict=True):
        if mm < upper:
            return band
    return SIZE_VALUES[-1]


def is_filled(value: Any) -> bool:
    """Whether a field's value says something (a term, a band, text): None, "" and an empty list say nothing."""
    return value not in (None, "", [], ())
