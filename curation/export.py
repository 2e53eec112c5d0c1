"""The canonical export: verified records -> JSONL + Parquet + images + manifest.

Guarantees:
- the same database state exported twice gives byte-identical files (no timestamps in files,
  records sorted by image id, keys sorted);
- the split is deterministic and stratified by label: within each label, images are ordered by
  sha256(seed:image sha256) and the first 80% go to train, the next 10% to val, the rest to test;
- the export is built in a temporary sibling folder and renamed into place: an interrupted
  export leaves nothing half-written at the destination.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation import audit
from curation.auth import Actor, require
from curation.db import Workbench
from curation.errors import ExportError
from curation.models import Annotation, Export, Image, Review, User, WeightSet
from schema.caption import SCHEMA_VERSION, Caption, render
from schema.fields import FIELDS
from schema.vocabulary import default_vocabulary

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    n_records: int
    by_split: dict[str, int]
    manifest_sha256: str


def assign_splits(items: list[tuple[str, str]], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """{item sha256: split} for (sha256, stratum) pairs; stratified by stratum, deterministic by seed."""
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for digest, stratum in items:
        by_stratum[stratum].append(digest)
    out = {}
    train_end, val_end = fractions[0], fractions[0] + fractions[1]
    for digests in by_stratum.values():
        ordered = sorted(digests, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
        n = len(ordered)
        for rank, digest in enumerate(ordered):
            position = (rank + 0.5) / n
            out[digest] = "train" if position < train_end else "val" if position < val_end else "test"
    return out


def _chain_authors(session: Session, annotation: Annotation) -> list[str]:
    """Usernames of everyone who wrote a version of this annotation, oldest first."""
    names, current = [], annotation
    while current is not None:
        names.append(current.user.username)
        current = session.get(Annotation, current.supersedes_id) if current.supersedes_id else None
    return sorted(set(names), key=names[::-1].index)


def _latest_annotations(session: Session, image_ids: list[int]) -> dict[int, Annotation]:
    """The newest version of the most recent annotation chain per image (for unverified exports)."""
    superseded = select(Annotation.supersedes_id).where(Annotation.supersedes_id.is_not(None))
    rows = session.scalars(
        select(Annotation).where(Annotation.image_id.in_(image_ids), Annotation.id.not_in(superseded)).order_by(Annotation.id)
    )
    return {a.image_id: a for a in rows}


def collect_records(wb: Workbench, session: Session, *, include_unverified: bool, seed: int) -> list[dict[str, Any]]:
    statuses = ("verified", "annotated") if include_unverified else ("verified",)
    images = list(session.scalars(select(Image).where(Image.status.in_(statuses), Image.sha256.is_not(None)).order_by(Image.id)))
    latest = _latest_annotations(session, [i.id for i in images if i.verified_annotation_id is None])
    records = []
    taxonomy = wb.taxonomy
    for image in images:
        annotation = session.get(Annotation, image.verified_annotation_id) if image.verified_annotation_id else latest.get(image.id)
        if annotation is None:
            continue
        caption = Caption.model_validate(annotation.caption)
        reviewer = None
        if image.verified_annotation_id:
            reviewer = session.scalar(
                select(User.username).join(Review, Review.reviewer_id == User.id)
                .where(Review.annotation_id == annotation.id, Review.decision == "verified").order_by(Review.id.desc()).limit(1)
            )
        label = taxonomy.labels.get(annotation.diagnosis_key) if annotation.diagnosis_key else None
        records.append({
            "id": image.id,
            "image": f"images/{image.file_path}",
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "caption": caption.to_json(),
            "caption_text": render(caption),
            "diagnosis_key": annotation.diagnosis_key,
            "diagnosis_display": label.display if label else None,
            "diagnosis_text": annotation.diagnosis_text,
            "group9": label.group9 if label else None,
            "group3": label.group3 if label else None,
            "diagnosis_status": annotation.diagnosis_status,
            "fitzpatrick": image.fitzpatrick,
            "annotators": _chain_authors(session, annotation),
            "reviewer": reviewer,
            "verified": image.verified_annotation_id is not None,
            "source": image.source,
            "source_label": image.source_label,
        })
    splits = assign_splits([(r["sha256"], r["diagnosis_key"] or "__free_text__") for r in records], seed, wb.settings.split_fractions)
    for record in records:
        record["split"] = splits[record["sha256"]]
    return records


def _parquet_table(records: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list] = {
        "id": [r["id"] for r in records],
        "image": [r["image"] for r in records],
        "sha256": [r["sha256"] for r in records],
        "split": [r["split"] for r in records],
        "caption_json": [json.dumps(r["caption"], sort_keys=True, ensure_ascii=False) for r in records],
        "caption_text": [r["caption_text"] for r in records],
    }
    types: dict[str, pa.DataType] = {
        "id": pa.int64(), "image": pa.string(), "sha256": pa.string(), "split": pa.string(),
        "caption_json": pa.string(), "caption_text": pa.string(),
    }
    for f in FIELDS:  # one column per caption field, for filtering in pandas / SQL engines
        columns[f.key] = [r["caption"][f.key] for r in records]
        types[f.key] = pa.list_(pa.string()) if f.kind == "multi" else pa.string()
    columns["size_mm"], types["size_mm"] = [r["caption"]["size_mm"] for r in records], pa.float64()
    for key, kind in (
        ("diagnosis_key", pa.string()), ("diagnosis_display", pa.string()), ("diagnosis_text", pa.string()),
        ("group9", pa.string()), ("group3", pa.string()), ("diagnosis_status", pa.string()), ("fitzpatrick", pa.int64()),
        ("annotators", pa.list_(pa.string())), ("reviewer", pa.string()), ("verified", pa.bool_()),
        ("source", pa.string()), ("source_label", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ):
        columns[key], types[key] = [r[key] for r in records], kind
    schema = pa.schema([(name, types[name]) for name in columns])
    return pa.table(columns, schema=schema)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # same file system: no copy, and stored images are never modified
    except OSError:
        shutil.copyfile(source, target)


def _active_weight_set(session: Session) -> dict | None:
    ws = session.scalar(select(WeightSet).where(WeightSet.active).order_by(WeightSet.id.desc()).limit(1))
    return None if ws is None else {"id": ws.id, "name": ws.name, "method": ws.method, "weights": ws.weights}


def _counts(records: list[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r[key]) if r[key] is not None else "unknown" for r in records).items()))


def export_dataset(
    wb: Workbench, actor: Actor, out: Path, *, include_unverified: bool = False, overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    require(actor, "admin", "export datasets")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists already: exports are versioned, so pick a new folder (e.g. exports/v2) or pass --overwrite")
    seed = wb.settings.split_seed
    with wb.session() as session:
        records = collect_records(wb, session, include_unverified=include_unverified, seed=seed)
        weight_set = _active_weight_set(session)
    if not records:
        raise ExportError(
            "nothing to export: no verified records yet (verify annotations in review, or pass --include-unverified)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for index, record in enumerate(records, 1):
            source = wb.store_dir / record["image"].removeprefix("images/")
            if not source.exists():
                raise ExportError(f"image file of record #{record['id']} is missing from the store ({source}); run `skinflow doctor`")
            _link_or_copy(source, staging / record["image"])
            if progress:
                progress(index, len(records))
        with (staging / "records.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
        pq.write_table(_parquet_table(records), staging / "records.parquet", compression="zstd")
        # Stored images are content-addressed: their sha256 is known and need not be read again.
        files = {record["image"]: record["sha256"] for record in records}
        files.update({name: _file_sha256(staging / name) for name in ("records.jsonl", "records.parquet")})
        files = dict(sorted(files.items()))
        manifest = {
            "format": "skinflow-canonical",
            "format_version": FORMAT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "vocabulary_version": default_vocabulary().version,
            "taxonomy": {"name": wb.taxonomy.name, "version": wb.taxonomy.version},
            "weight_set": weight_set,
            "filters": {"include_unverified": include_unverified},
            "split": {"method": "stratified by diagnosis_key, ordered by sha256(seed:image sha256)", "seed": seed,
                      "fractions": list(wb.settings.split_fractions)},
            "counts": {
                "records": len(records),
                "by_split": {s: sum(r["split"] == s for r in records) for s in SPLITS},
                "by_label": _counts(records, "diagnosis_key"),
                "by_group3": _counts(records, "group3"),
                "by_fitzpatrick": _counts(records, "fitzpatrick"),
                "by_source": _counts(records, "source"),
            },
            "synthetic": any(r["source"] == "synthetic" for r in records),
            "licenses": {
                "taxonomy": wb.taxonomy.meta.get("license", "see taxonomy file"),
                "note": "image licenses follow their sources (see each record's source)",
            },
            "files": files,
        }
        manifest_text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (staging / "manifest.json").write_text(manifest_text, encoding="utf-8")
        manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()
        if out.exists():  # --overwrite: swap in the new export, then remove the old one
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    by_split = manifest["counts"]["by_split"]
    with wb.session() as session:
        row = Export(path=str(out.resolve()), format="canonical", n_records=len(records), manifest_sha256=manifest_sha,
                     params={"include_unverified": include_unverified, "seed": seed}, created_by=actor.id)
        session.add(row)
        session.flush()
        audit.record(session, actor, "export.create", "export", row.id, path=str(out), n_records=len(records))
    return ExportResult(out, len(records), by_split, manifest_sha)
