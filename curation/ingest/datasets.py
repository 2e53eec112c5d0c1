"""Public dermatology datasets as import recipes (curation/ingest/recipes/*.json, one file per dataset).

A recipe says how to read a dataset's metadata CSV: which header it has (for detection), which column is the
image id, the label and the Fitzpatrick type, how an image file is named, which columns name a lesion or a
patient (kept in one split by exports), its license and citation, and a crosswalk from its label codes to the
taxonomy. A crosswalk entry is one of:

    {"key": "melanoma"}                    the code names one taxonomy label
    {"group9": "benign epidermal"}         the code spans several conditions (HAM10000 `bkl`): the nearest
                                           nine-partition group is kept, the dermatologist picks the label
    {"none": true}                         the dataset's "no diagnosis" (ISIC `unknown`)
    {}                                     no safe mapping: the code stays free text

each with an optional "note" saying what the code means. Codes match case-insensitively.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from schema.errors import SkinflowError
from schema.taxonomy import Taxonomy


class DatasetRecipeError(SkinflowError):
    """A dataset recipe is unknown, malformed, or does not fit the file being imported."""


@dataclass(frozen=True)
class LabelMapping:
    code: str
    key: str | None = None
    group9: str | None = None
    no_label: bool = False
    note: str = ""


@dataclass(frozen=True)
class MappedLabel:
    """A source label read through a crosswalk."""

    key: str | None  # taxonomy key
    group9: str | None  # the nearest group, when the code spans several labels
    group3: str | None
    note: str  # what the code means ("" when the crosswalk does not know it)
    known: bool  # whether the crosswalk has the code


@dataclass(frozen=True)
class DatasetRecipe:
    name: str
    title: str
    detect: tuple[str, ...]  # columns the header must have
    id_columns: tuple[str, ...]  # the first one present is the image id
    label_column: str
    image_file: str  # file name of an image, formatted with the row's columns and {id}
    fitzpatrick_column: str | None
    # how a row's label was established (HAM10000 dx_type: histo, follow_up, consensus, confocal; ISIC
    # diagnosis_confirm_type; PAD-UFES-20 biopsed), or one value for a whole dataset (DDI: every label is histopathology)
    provenance_column: str | None
    provenance_value: str | None
    provenance_values: dict[str, str]  # a column's codes in words (PAD-UFES-20 biopsed True -> histopathology)
    # a column giving the three-way group of every row (DDI malignant, ISIC benign_malignant): the group of a row whose
    # label the crosswalk does not map; values not listed give none
    group3_column: str | None
    group3_values: dict[str, str]
    # the column a lesion id is unique within (PAD-UFES-20 numbers lesions per patient): stored lesion ids are then
    # "<patient>/<lesion>", the file's own kept as source_lesion_id
    lesion_scope: str | None
    license_column: str | None  # a per-image license (ISIC Archive copyright_license: CC-0, CC-BY, CC-BY-NC)
    fitzpatrick_bands: dict[str, str]  # a column of bands (DDI "12") -> band name ("I-II"), when not single types
    group_by: tuple[str, ...]
    license: str
    license_id: str  # Hugging Face card license id
    citation: str
    url: str
    notes: str
    crosswalk: dict[str, LabelMapping]

    def matches(self, header: list[str]) -> bool:
        return set(self.detect) <= set(header) and any(c in header for c in self.id_columns)

    def id_column(self, header: list[str]) -> str:
        found = next((c for c in self.id_columns if c in header), None)
        missing = [c for c in (*self.detect, self.label_column) if c not in header]
        if found is None or missing:
            id_wanted = [] if found is not None or set(self.id_columns) & set(missing) else [" or ".join(self.id_columns)]
            wanted = list(dict.fromkeys([*missing, *id_wanted]))  # each column once (the label is often detected too)
            raise DatasetRecipeError(
                f"this CSV is not {self.title} metadata: it lacks the column(s) {', '.join(wanted)}. "
                "Check the file, or import it as a generic CSV (--dataset csv). Nothing was imported."
            )
        return found

    def image_name(self, row: dict[str, str], image_id: str) -> str:
        # the recipe's {id} wins over a column that happens to be named "id" (with **row, that crashed the import)
        return self.image_file.format_map({**row, "id": image_id})

    def map_label(self, code: str, taxonomy: Taxonomy) -> MappedLabel:
        """A code read through the crosswalk; codes it does not know are normalised like any free-text label."""
        mapping = self.crosswalk.get(code.strip().lower())
        if mapping is None:
            key = taxonomy.normalise(code)
            return MappedLabel(key, *_groups(taxonomy, key, None), note="", known=False)
        if mapping.no_label:
            return MappedLabel(None, None, None, mapping.note, True)
        key = mapping.key if mapping.key in taxonomy.labels else taxonomy.normalise(mapping.key) if mapping.key else None
        return MappedLabel(key, *_groups(taxonomy, key, mapping.group9), note=mapping.note, known=True)

    def provenance(self, row: dict[str, str]) -> str | None:
        """How this row's label was established, as the dataset says it (None where it does not)."""
        if self.provenance_column:
            code = (row.get(self.provenance_column) or "").strip()
            return self.provenance_values.get(code.lower(), code) or None
        return self.provenance_value

    def row_group3(self, row: dict[str, str]) -> str | None:
        """The three-way group the row's own column gives (None without one)."""
        if not self.group3_column:
            return None
        return self.group3_values.get((row.get(self.group3_column) or "").strip().lower())

    def card_line(self) -> str:
        return f"{self.name}: {self.title}. License: {self.license}. Cite: {self.citation}. Source: {self.url}."

    def describe(self) -> dict[str, str]:
        return {"title": self.title, "license": self.license, "citation": self.citation, "url": self.url}


def _groups(taxonomy: Taxonomy, key: str | None, group9: str | None) -> tuple[str | None, str | None]:
    if key is not None:
        label = taxonomy.labels[key]
        return label.group9, label.group3
    group3 = next((label.group3 for label in taxonomy.labels.values() if label.group9 == group9), None)
    return (group9, group3) if group3 else (None, None)  # a group a custom taxonomy lacks is not kept


def _recipe(doc: dict[str, Any], where: str) -> DatasetRecipe:
    try:
        crosswalk = {}
        for code, entry in doc["crosswalk"].items():
            unknown = set(entry) - {"key", "group9", "none", "note"}
            if unknown or ("key" in entry and "group9" in entry):
                raise DatasetRecipeError(f"{where}: crosswalk entry {code!r} has {sorted(entry)}; use key, group9 or none")
            crosswalk[code.lower()] = LabelMapping(
                code, entry.get("key"), entry.get("group9"), bool(entry.get("none")), entry.get("note", "")
            )
        return DatasetRecipe(
            name=doc["name"],
            title=doc["title"],
            detect=tuple(doc["detect"]),
            id_columns=tuple(doc["id_columns"]),
            label_column=doc["label_column"],
            image_file=doc["image_file"],
            fitzpatrick_column=doc.get("fitzpatrick_column"),
            provenance_column=doc.get("provenance_column"),
            provenance_value=doc.get("provenance_value"),
            provenance_values={k.lower(): v for k, v in doc.get("provenance_values", {}).items()},
            group3_column=doc.get("group3_column"),
            license_column=doc.get("license_column"),
            lesion_scope=doc.get("lesion_scope"),
            group3_values={k.lower(): v for k, v in doc.get("group3_values", {}).items()},
            fitzpatrick_bands=dict(doc.get("fitzpatrick_bands", {})),
            group_by=tuple(doc.get("group_by", ())),
            license=doc["license"],
            license_id=doc["license_id"],
            citation=doc["citation"],
            url=doc["url"],
            notes=doc.get("notes", ""),
            crosswalk=crosswalk,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetRecipeError(
            f"{where} is not a dataset recipe (missing or wrong {e}); see curation/ingest/datasets.py"
        ) from None


@lru_cache(maxsize=1)
def dataset_recipes() -> dict[str, DatasetRecipe]:
    """The shipped recipes by name."""
    folder = resources.files("curation.ingest").joinpath("recipes")
    recipes = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            recipe = _recipe(json.loads(entry.read_bytes()), entry.name)
            recipes[recipe.name] = recipe
    return recipes


def recipe_named(name: str) -> DatasetRecipe:
    recipes = dataset_recipes()
    if name not in recipes:
        raise DatasetRecipeError(f"no dataset recipe {name!r}; use one of: {', '.join(recipes)} (or csv for a generic CSV)")
    return recipes[name]


def detect_recipe(header: list[str]) -> DatasetRecipe | None:
    """The recipe whose columns the header has (the most specific one when several fit)."""
    fitting = [r for r in dataset_recipes().values() if r.matches(header)]
    return max(fitting, key=lambda r: len(r.detect), default=None)
