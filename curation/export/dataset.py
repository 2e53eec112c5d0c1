"""The canonical export: verified records -> JSONL + Parquet + images + manifest.

Guarantees:
- the same database state exported twice gives byte-identical files (no timestamps in files,
  records sorted by image id, keys sorted);
- the split is deterministic and stratified by label (splits.py): whole groups go to one split, a group being
  near-duplicate pictures joined with the images that share a lesion or patient id (`group_by` columns);
- the export is built in a temporary sibling folder and renamed into place: an interrupted
  export leaves nothing half-written at the destination.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.assist.drafts import latest_model_drafts
from curation.errors import ExportError
from curation.export.canonical import write_canonical
from curation.export.datacard import fitzpatrick_chart, render_card
from curation.export.formats import EXTRA_FORMATS, WRITERS
from curation.export.neardup import MAX_SUPPORTED_DISTANCE
from curation.export.records import ExportFilter, Grouping, collect_records
from curation.export.splits import SPLITS
from curation.ingest.datasets import dataset_recipes
from curation.labelling.insights import insights
from curation.labelling.source_labels import LABEL_KINDS
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench
from curation.store.files import sweep_leftovers
from curation.store.images import ImageMissing
from curation.store.models import LESION_COLUMNS, DraftKind, Export, WeightSet
from schema.bucket import S3_SCHEME, check_folder_free, upload_folder
from schema.caption import SCHEMA_VERSION
from schema.files import file_sha256, temp_owner_tag
from schema.vocabulary import default_vocabulary

IDENTIFYING_COLUMNS = (*LESION_COLUMNS, "patient", "lesion")  # ids of people: exported as pseudonyms by default

FORMAT_VERSION = 1
COPY_THREADS = 8


@dataclass(frozen=True)
class ExportResult:
    path: Path | str  # a folder, or the s3:// address it was copied to
    n_records: int
    by_split: dict[str, int]
    manifest_sha256: str
    duplicate_groups: int = 0
    grouping: Grouping | None = None

    def split_warning(self) -> str | None:
        """What a user should hear when the split cannot evaluate anything: every record in train."""
        if self.n_records < 2 or self.by_split.get("val") or self.by_split.get("test"):
            return None
        columns = self.grouping.columns if self.grouping else ()
        why = (
            f"keeping images that share {', '.join(columns)} in one split left too few groups"
            if columns
            else "there are too few records (or near-duplicate groups) to split"
        )
        return (
            f"every record is in train (val 0, test 0): {why}. Nothing can be evaluated on this export; export by "
            "another column, or with fewer columns, or verify more images"
        )


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # same file system: no copy, and stored images are never modified
    except OSError:
        shutil.copyfile(source, target)


def _active_weight_set(session: Session) -> dict | None:
    ws = session.scalar(select(WeightSet).where(WeightSet.active).order_by(WeightSet.id.desc()).limit(1))
    return None if ws is None else {"id": ws.id, "name": ws.name, "method": ws.method, "weights": ws.weights}


def _skin_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Records by Fitzpatrick type, and by band where only the band is known (not 'unknown')."""
    keys = (
        str(r["fitzpatrick"])
        if r["fitzpatrick"] is not None
        else f"band {r['fitzpatrick_band']}"
        if r["fitzpatrick_band"]
        else "unknown"
        for r in records
    )
    return dict(sorted(Counter(keys).items()))


def _counts(records: list[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r[key]) if r[key] is not None else "unknown" for r in records).items()))


def _check_selection(wb: Workbench, selection: ExportFilter, formats: tuple[str, ...]) -> ExportFilter:
    unknown = [f for f in formats if f not in ("jsonl", "parquet", *EXTRA_FORMATS)]
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; use: jsonl, parquet, {', '.join(EXTRA_FORMATS)}")
    taxonomy = wb.taxonomy

    def keys(values: tuple[str, ...], what: str) -> tuple[str, ...]:
        found = []
        for value in values:
            key = taxonomy.normalise(value)
            if key is None:
                raise ExportError(
                    f"{what} {value!r} is not in the taxonomy; use a label such as 'melanoma' (see `skinflow status`)"
                )
            found.append(key)
        return tuple(found)

    groups = set(taxonomy.groups9()) | set(taxonomy.groups3())
    bad_groups = [g for g in selection.groups if g not in groups]
    if bad_groups:
        raise ExportError(f"unknown group(s) {bad_groups}; use one of: {', '.join(sorted(groups))}")
    if selection.group_by is not None and any(not c.strip() for c in selection.group_by):
        raise ExportError("an empty column name in --group-by; give metadata column names, e.g. --group-by lesion_id,patient_id")
    if selection.max_hash_distance is not None and not 0 <= selection.max_hash_distance <= MAX_SUPPORTED_DISTANCE:
        raise ExportError(f"the near-duplicate distance must be between 0 and {MAX_SUPPORTED_DISTANCE} bits (or off)")
    if selection.label_kinds not in LABEL_KINDS:
        raise ExportError(f"--labels {selection.label_kinds!r}: use one of {', '.join(LABEL_KINDS)}")
    if any(not c.strip() for c in selection.metadata_columns):
        raise ExportError("an empty column name in --metadata; give metadata column names, e.g. --metadata age,sex")
    bad_types = [t for t in selection.fitzpatrick if t not in range(1, 7)]
    if bad_types:
        raise ExportError(f"Fitzpatrick types are 1-6, not {bad_types}")
    return ExportFilter(
        **{
            **selection.__dict__,
            "labels": keys(selection.labels, "label"),
            "holdout_labels": keys(selection.holdout_labels, "held-out label"),
        }
    )


def export_dataset(
    wb: Workbench,
    actor: Actor,
    out: Path | str,
    *,
    include_unverified: bool = False,
    selection: ExportFilter | None = None,
    formats: tuple[str, ...] = (),
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write an export: canonical JSONL + Parquet + images + dataset card + manifest, and any extra formats.
    `out` is a new folder, or an s3://bucket/folder address: the export is then written locally (under the
    workbench's cache) and copied up, the manifest last, then the local copy removed."""
    require(actor, "admin", "export datasets")
    selection = selection or ExportFilter(include_unverified=include_unverified)
    if str(out).startswith(S3_SCHEME):
        out = str(out)
        check_folder_free(out, replace=overwrite)  # before the work, not after it
        local = Path(tempfile.mkdtemp(prefix="export-", dir=_cache(wb))) / "export"
        try:
            result, manifest = _write_export(wb, local, selection, formats, False, progress)
            upload_folder(local, out, replace=overwrite)
        finally:
            shutil.rmtree(local.parent, ignore_errors=True)
        result = dataclasses.replace(result, path=out)
    else:
        out = Path(out)
        result, manifest = _write_export(wb, out, selection, formats, overwrite, progress)
    with wb.session() as session:
        row = Export(
            path=str(out) if isinstance(out, str) else str(out.resolve()),
            format="+".join(manifest["formats"]),
            n_records=result.n_records,
            manifest_sha256=result.manifest_sha256,
            params={"filters": manifest["filters"], "seed": manifest["split"]["seed"]},
            created_by=actor.id,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor,
            "export.create",
            "export",
            row.id,
            path=str(out),
            n_records=result.n_records,
            formats=manifest["formats"],
        )
    return result


def _cache(wb: Workbench) -> Path:
    folder = wb.settings.home / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _copy_images(wb: Workbench, records: list[dict], staging: Path, progress: Callable[[int, int], None] | None) -> None:
    """Every record's picture into the export, COPY_THREADS at a time (a bucket's latency, not the disk, is what
    this waits on). Pictures missing from the store are all named, by record and key, before anything is kept."""

    def copy(record: dict) -> str | None:
        key = record["image"].removeprefix("images/")
        try:
            source = wb.images.local_path(key)
            if not source.exists():
                raise ImageMissing(key, wb.images.describe())
        except ImageMissing:
            return f"#{record['id']} ({key})"
        _link_or_copy(source, staging / record["image"])
        return None

    missing = []
    with ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
        for index, problem in enumerate(pool.map(copy, records), 1):
            if problem:
                missing.append(problem)
            if progress:
                progress(index, len(records))
    if missing:
        raise ExportError(
            f"{len(missing)} record(s) have no picture in the image store ({wb.images.describe()}): "
            f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}. Nothing was exported: put the pictures "
            "back (from a backup), or see them all with `skinflow images verify`"
        )


def _write_export(
    wb: Workbench,
    out: Path,
    selection: ExportFilter,
    formats: tuple[str, ...],
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
) -> tuple[ExportResult, dict[str, Any]]:
    if out.exists() and not overwrite:
        raise ExportError(
            f"{out} exists already: exports are versioned, so pick a new folder (e.g. exports/v2) or replace it "
            '(--overwrite; on the Export tab: "Replace the folder if it exists")'
        )
    selection = _check_selection(wb, selection, tuple(formats))
    extras = [f for f in dict.fromkeys(formats) if f in EXTRA_FORMATS]
    seed = wb.settings.split_seed
    with wb.session() as session:
        records, grouping = collect_records(wb, session, seed=seed, selection=selection)
        weight_set = _active_weight_set(session)
        drafts = latest_model_drafts(session, [r["id"] for r in records]) if records else {}
    if not records:
        raise ExportError(
            "nothing to export: no verified records match (verify annotations in review, "
            "pass --include-unverified, accept a public dataset's own labels with `skinflow verify --source NAME` and "
            "export with --labels source, or loosen the filters)"
        )
    agreement = insights(wb)["agreement"]["krippendorff_alpha"]
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out.parent.glob(f".{out.name}.tmp-*"), f".{out.name}.tmp-")  # from a killed run
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{temp_owner_tag()}", dir=out.parent))
    try:
        _copy_images(wb, records, staging, progress)
        write_canonical(records, staging)
        for name in extras:
            WRITERS[name](staging, records, taxonomy=wb.taxonomy, weight_set=weight_set, drafts=drafts)
        manifest = {
            "format": "skinflow-canonical",
            "format_version": FORMAT_VERSION,
            "formats": ["jsonl", "parquet", *extras],
            "schema_version": SCHEMA_VERSION,
            "vocabulary_version": default_vocabulary().version,
            "taxonomy": {"name": wb.taxonomy.name, "version": wb.taxonomy.version},
            "weight_set": weight_set,
            "filters": selection.describe(),
            "split": {
                "method": "groups (near-duplicates joined with shared group_by metadata) stratified by diagnosis_key, "
                "ordered by sha256(seed:group)",
                "seed": seed,
                "fractions": list(wb.settings.split_fractions),
                "group_by": list(grouping.columns),
            },
            "duplicate_groups": grouping.duplicate_groups,
            "groups": grouping.describe(),
            "counts": {
                "records": len(records),
                "by_split": {s: sum(r["split"] == s for r in records) for s in SPLITS},
                "by_label": _counts(records, "diagnosis_key"),
                "by_group3": _counts(records, "group3"),
                "by_fitzpatrick": _skin_counts(records),
                "by_source": _counts(records, "source"),
            },
            "synthetic": any(r["source"] == "synthetic" for r in records),
            "licenses": {
                "taxonomy": wb.taxonomy.meta.get("license", "see taxonomy file"),
                "note": "image licenses follow their sources (see each record's source and README.md)",
                "datasets": {
                    name: recipe.describe()
                    for name, recipe in dataset_recipes().items()
                    if name in {r["source"] for r in records}
                },
            },
        }
        producers = sorted({f"{d.producer} ({d.version})" for ds in drafts.values() for d in ds if d.kind == DraftKind.LLM})
        (staging / "fitzpatrick.png").write_bytes(fitzpatrick_chart(records))
        # the card names no folder or date: the same database state must give the same bytes
        (staging / "README.md").write_text(
            render_card(
                records,
                manifest,
                name="SkinFlow Workbench dataset",
                agreement=agreement,
                duplicate_groups=grouping.duplicate_groups,
                drafting=", ".join(producers) or None,
            ),
            encoding="utf-8",
        )
        # Stored images are content-addressed: their sha256 is known and need not be read again.
        files = {record["image"]: record["sha256"] for record in records}
        for path in staging.rglob("*"):
            relative = str(path.relative_to(staging))
            if path.is_file() and relative not in files:
                files[relative] = file_sha256(path)
        manifest["files"] = dict(sorted(files.items()))
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
    return ExportResult(out, len(records), by_split, manifest_sha, grouping.duplicate_groups, grouping), manifest
