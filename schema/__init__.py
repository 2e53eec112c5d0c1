"""The 11-field caption schema, vocabularies and the diagnosis taxonomy, and the file formats both sides
share. Pure Python; its I/O is reading its own data files and schema/files.py, the one place that writes
files (atomically, with private permissions) for curation and the trainer alike."""

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
