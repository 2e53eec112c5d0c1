"""The files every export has: records.jsonl and records.parquet (the canonical records), and the check of a
whole export folder against the sha256 of every file in its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import ExportError
from schema.fields import FIELDS
from schema.files import file_sha256


def parquet_table(records: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list] = {
        "id": [r["id"] for r in records],
        "image": [r["image"] for r in records],
        "sha256": [r["sha256"] for r in records],
        "split": [r["split"] for r in records],
        "caption_json": [orjson.dumps(r["caption"], option=orjson.OPT_SORT_KEYS).decode() for r in records],
        "caption_text": [r["caption_text"] for r in records],
        # the metadata columns the export was asked for (a different set per dataset): one JSON object per record
        "metadata_json": [orjson.dumps(r["metadata"], option=orjson.OPT_SORT_KEYS).decode() for r in records],
    }
    types: dict[str, pa.DataType] = {
        "id": pa.int64(),
        "image": pa.string(),
        "sha256": pa.string(),
        "split": pa.string(),
        "caption_json": pa.string(),
        "caption_text": pa.string(),
        "metadata_json": pa.string(),
    }
    for f in FIELDS:  # one column per caption field, for filtering in pandas / SQL engines
        columns[f.key] = [r["caption"][f.key] for r in records]
        types[f.key] = pa.list_(pa.string()) if f.kind == "multi" else pa.string()
    columns["size_mm"], types["size_mm"] = [r["caption"]["size_mm"] for r in records], pa.float64()
    for key, kind in (
        ("diagnosis_key", pa.string()),
        ("diagnosis_display", pa.string()),
        ("diagnosis_text", pa.string()),
        ("group9", pa.string()),
        ("group3", pa.string()),
        ("diagnosis_status", pa.string()),
        ("fitzpatrick", pa.int64()),
        ("fitzpatrick_band", pa.string()),
        ("annotators", pa.list_(pa.string())),
        ("reviewer", pa.string()),
        ("verified", pa.bool_()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("source_label", pa.string()),
        ("label_kind", pa.string()),
        ("label_provenance", pa.string()),
        ("image_license", pa.string()),
        ("split_group", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ):
        columns[key], types[key] = [r[key] for r in records], kind
    schema = pa.schema([(name, types[name]) for name in columns])
    return pa.table(columns, schema=schema)


def write_canonical(records: list[dict[str, Any]], folder: Path) -> None:
    """records.jsonl (one record per line, keys sorted, UTF-8) and records.parquet (zstd) into folder."""
    # orjson: ~3x faster than json.dumps here, which was most of the time of this step at 100k records
    with (folder / "records.jsonl").open("wb") as handle:
        handle.writelines(orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE) for record in records)
    pq.write_table(parquet_table(records), folder / "records.parquet", compression="zstd")


def verify_export(folder: Path) -> list[str]:
    """Re-hash every file of an export against its manifest; the problems found (empty: all good)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(f"{folder} has no readable manifest.json: is it a SkinFlow export folder?") from None
    problems = []
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif file_sha256(path) != digest:
            problems.append(f"changed: {name}")
    listed = set(files) | {"manifest.json"}
    problems += [
        f"not in the manifest: {p.relative_to(folder)}"
        for p in sorted(folder.rglob("*"))
        if p.is_file() and str(p.relative_to(folder)) not in listed
    ]
    return problems
