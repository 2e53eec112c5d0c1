"""Reading a `grpo` export folder (curation/export/formats.py writes it): everything training needs, and
nothing from the database.

    <export>/grpo/stage1.jsonl  image + caption instruction -> verified caption (dict and canonical text)
    <export>/grpo/stage2.jsonl  image + diagnosis instruction -> verified diagnosis key and its groups
    <export>/grpo/weights.json  the active reasoning-frequency weight set
    <export>/grpo/taxonomy.json, schema.json, instructions.json
    <export>/images/...         the pictures the rows point at
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schema.bucket import S3_SCHEME, StoreUnavailable, download_folder
from schema.errors import SkinflowError
from schema.files import read_jsonl
from schema.taxonomy import Taxonomy, load_taxonomy
from trainer.errors import TrainerError
from trainer.rewards import normalised_weights

NEEDED = ("stage1.jsonl", "stage2.jsonl", "weights.json", "taxonomy.json", "instructions.json")


@dataclass
class ExportData:
    folder: Path
    stage1: list[dict[str, Any]]
    stage2: list[dict[str, Any]]
    weights: dict[str, float]
    weight_set_name: str
    taxonomy: Taxonomy
    instructions: dict[str, str]

    def rows(self, stage: int, split: str) -> list[dict[str, Any]]:
        return [r for r in (self.stage1 if stage == 1 else self.stage2) if r["split"] == split]

    def image_path(self, row: dict[str, Any]) -> Path:
        return self.folder / row["image"]

    def split_images(self, split: str) -> list[dict[str, Any]]:
        """{"id", "path"} of every record of a split (what predict and an LLM baseline are asked about)."""
        rows = self.rows(2, split) or self.rows(1, split)
        if not rows:
            raise TrainerError(f"the export has no {split!r} rows; pick --split train, val or test")
        return [{"id": r["id"], "path": self.image_path(r)} for r in rows]

    def texts(self) -> list[str]:
        """All the text a tiny tokenizer should know: instructions, captions, label names."""
        names = [label.display for label in self.taxonomy.labels.values()] + list(self.taxonomy.labels)
        return [*self.instructions.values(), *(r["caption_text"] for r in self.stage1), *names]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(
        path,
        check=lambda row: "image" in row and "split" in row,
        error=TrainerError,
        problem="lacks 'image' or 'split'; re-export with `skinflow export --format grpo`",
    )


def export_cache() -> Path:
    """Where exports read from a bucket are copied: SKINFLOW_CACHE, else ~/.cache/skinflow (one folder per bucket
    and prefix; a copy already there is checked, not downloaded again)."""
    return Path(os.environ.get("SKINFLOW_CACHE") or Path.home() / ".cache" / "skinflow") / "exports"


def export_folder(where: str | Path) -> Path:
    """The local folder of an export: the folder itself, or for s3://bucket/folder a copy in export_cache(), every
    file checked against the manifest as it is downloaded."""
    if not str(where).startswith(S3_SCHEME):
        return Path(where)
    try:
        return download_folder(str(where), export_cache())
    except StoreUnavailable as e:
        raise TrainerError(str(e)) from None


def load_export(folder: str | Path) -> ExportData:
    """An export folder, or one in a bucket (s3://bucket/folder, see export_folder)."""
    folder = export_folder(folder)
    grpo = folder / "grpo"
    if not folder.is_dir():
        raise TrainerError(
            f"export folder {folder} does not exist; create one with `skinflow export --format grpo --out {folder}`"
        )
    missing = [name for name in NEEDED if not (grpo / name).is_file()]
    if missing:
        raise TrainerError(
            f"{folder} is not a grpo export (missing {', '.join('grpo/' + m for m in missing)}); "
            f"export with `skinflow export --format grpo --out NEW_FOLDER`"
        )
    stage1, stage2 = _read_jsonl(grpo / "stage1.jsonl"), _read_jsonl(grpo / "stage2.jsonl")
    for stage, rows, column in ((1, stage1, "caption"), (2, stage2, "diagnosis_key")):
        bad = [r.get("id") for r in rows if column not in r]
        if bad:
            raise TrainerError(f"grpo/stage{stage}.jsonl rows {bad[:5]} have no {column!r}; re-export the dataset")
    try:
        weight_doc = json.loads((grpo / "weights.json").read_text(encoding="utf-8"))
        weights = normalised_weights(weight_doc.get("weights"))
        instructions = json.loads((grpo / "instructions.json").read_text(encoding="utf-8"))
        taxonomy = load_taxonomy(grpo / "taxonomy.json")
    except (json.JSONDecodeError, AttributeError, SkinflowError) as e:
        raise TrainerError(f"{grpo} is malformed ({e}); re-export the dataset") from None
    unknown = sorted({r["diagnosis_key"] for r in stage2} - set(taxonomy.labels))
    if unknown:
        raise TrainerError(f"stage 2 labels {unknown[:5]} are not in the export's taxonomy; re-export the dataset")
    missing_images = [r["image"] for r in stage1 + stage2 if not (folder / r["image"]).is_file()]
    if missing_images:
        raise TrainerError(
            f"{len(missing_images)} image(s) the export lists are missing, e.g. {missing_images[0]}; "
            f"check the folder with `skinflow export verify {folder}`"
        )
    if not any(r["split"] == "train" for r in stage1 + stage2):
        raise TrainerError(f"{folder} has no training rows (split 'train'); export more verified images")
    return ExportData(folder, stage1, stage2, weights, weight_doc.get("name", ""), taxonomy, instructions)
