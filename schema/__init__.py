"""The 11-field caption schema, vocabularies and the diagnosis taxonomy. Pure Python, no I/O
beyond reading its own data files."""

from schema.caption import SCHEMA_VERSION, Caption, json_schema, parse, render, validate_caption
from schema.compare import caption_scores, field_score
from schema.errors import CaptionError, CaptionParseError, SkinflowError, TaxonomyError
from schema.fields import FIELD_KEYS, FIELDS
from schema.taxonomy import (
    Relevance,
    Taxonomy,
    default_taxonomy,
    is_safety_error,
    load_taxonomy,
    normalise_diagnosis,
    relevance,
)
from schema.vocabulary import default_vocabulary

__all__ = [
    "SCHEMA_VERSION",
    "Caption",
    "CaptionError",
    "CaptionParseError",
    "FIELDS",
    "FIELD_KEYS",
    "Relevance",
    "SkinflowError",
    "Taxonomy",
    "TaxonomyError",
    "caption_scores",
    "default_taxonomy",
    "default_vocabulary",
    "field_score",
    "is_safety_error",
    "json_schema",
    "load_taxonomy",
    "normalise_diagnosis",
    "parse",
    "relevance",
    "render",
    "validate_caption",
]
