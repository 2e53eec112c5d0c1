"""Commands that take data out: `export` (and `export verify`), Label Studio `ls push` and `ls pull`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from app.cli.common import app, context, err, out, progress_bar
from curation.export.canonical import verify_export
from curation.export.dataset import export_dataset
from curation.export.formats import EXTRA_FORMATS
from curation.export.labelstudio import label_studio_token, pull, push
from curation.export.records import ExportFilter
from schema.bucket import download_folder
from schema.errors import SkinflowError

export_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Export curated records (canonical JSONL + Parquet + card + manifest, extra formats); `export verify DIR`.",
)
app.add_typer(export_app, name="export")


def split_option(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@export_app.callback()
def export(
    ctx: typer.Context,
    out_dir: str | None = typer.Option(
        None, "--out", help="New folder for this export version, e.g. exports/v1, or a bucket folder: s3://derm-exports/v1."
    ),
    formats: list[str] = typer.Option(
        [], "--format", help=f"Extra formats: {', '.join(EXTRA_FORMATS)} (repeat or comma-separate)."
    ),
    include_unverified: bool = typer.Option(False, help="Also export annotated but not yet verified records."),
    label: list[str] = typer.Option([], help="Only these labels (taxonomy keys or names; repeat or comma-separate)."),
    group: list[str] = typer.Option([], help="Only these nine- or three-partition groups, e.g. malignant."),
    fitzpatrick: list[int] = typer.Option([], help="Only these Fitzpatrick types (repeat)."),
    source: list[str] = typer.Option(
        [],
        help="Only these sources: folder, csv, fitzpatrick17k, synthetic, or a dataset (ham10000, isic, pad-ufes-20, ddi).",
    ),
    holdout_labels: list[str] = typer.Option([], help="Put these whole classes only in test (zero-shot split)."),
    dup_distance: int = typer.Option(
        6, help="Near-duplicates: perceptual hashes at most this many bits apart share a split (0-7)."
    ),
    no_dedup: bool = typer.Option(False, help="Switch near-duplicate grouping off."),
    group_by: str = typer.Option(
        "auto",
        help="Metadata columns whose images share a split, e.g. lesion_id,patient_id; "
        "auto: lesion_id and patient_id where the data has them; none: near-duplicates only.",
    ),
    raw_group_keys: bool = typer.Option(
        False,
        help="Write the patient and lesion ids into group_keys as imported (they may identify patients); "
        "by default they are pseudonymised with this workbench's key. The data card says which.",
    ),
    metadata: list[str] = typer.Option(
        [],
        help="Imported metadata columns each record carries under `metadata`, e.g. age,sex,localization,license "
        "(patient and lesion ids among them pseudonymised unless --raw-group-keys); the card lists them.",
    ),
    labels: str = typer.Option(
        "verified",
        "--labels",
        help="Which labels: verified (annotations verified in review), source (source labels accepted with "
        "`skinflow verify`, no curated caption), both (an image's verified annotation wins).",
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing export folder."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if out_dir is None:
        raise SkinflowError("say where to write the export: skinflow export --out exports/v1 (or `skinflow export verify DIR`)")
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    selection = ExportFilter(
        include_unverified=include_unverified,
        labels=split_option(label),
        groups=split_option(group),
        fitzpatrick=tuple(fitzpatrick),
        sources=split_option(source),
        holdout_labels=split_option(holdout_labels),
        max_hash_distance=None if no_dedup else dup_distance,
        group_by={"auto": None, "none": ()}.get(group_by.strip().lower(), split_option([group_by])),
        raw_group_keys=raw_group_keys,
        label_kinds=labels.strip().lower(),
        metadata_columns=split_option(metadata),
    )
    with progress_bar("exporting") as progress:
        result = export_dataset(
            wb, actor, out_dir, selection=selection, formats=split_option(formats), overwrite=overwrite, progress=progress
        )
    columns = result.grouping.columns if result.grouping else ()
    grouped = f"; {result.grouping.split_groups} split groups by {', '.join(columns)}" if columns else ""
    out.print(
        f"exported {result.n_records} records to {result.path} (train {result.by_split['train']}, "
        f"val {result.by_split['val']}, test {result.by_split['test']}; "
        f"{result.duplicate_groups} near-duplicate groups{grouped}); "
        f"manifest sha256 {result.manifest_sha256[:12]}"
    )
    if result.split_warning():
        err.print(f"warning: {result.split_warning()}")


@export_app.command("verify")
def export_verify(folder: str = typer.Argument(..., help="An export folder, or its s3:// address.")) -> None:
    """Re-hash every file of an export against its manifest (one in a bucket is downloaded and checked as it comes)."""
    if folder.startswith("s3://"):
        with tempfile.TemporaryDirectory() as scratch:
            download_folder(folder, Path(scratch))  # checks every file against the manifest, refuses what differs
        out.print(f"{folder}: every file matches the manifest")
        return
    problems = verify_export(Path(folder))
    for problem in problems[:50]:
        out.print(problem)
    if problems:
        err.print(f"{len(problems)} problem(s): this export was changed after it was written")
        raise typer.Exit(1)
    out.print(f"{folder}: every file matches the manifest")


ls_app = typer.Typer(no_args_is_help=True, help="Label Studio round trip: push tasks with predictions, pull annotations back.")
app.add_typer(ls_app, name="ls")


@ls_app.command("push")
def ls_push(
    ctx: typer.Context,
    url: str = typer.Option(..., envvar="LABEL_STUDIO_URL", help="Label Studio address, e.g. http://127.0.0.1:8080."),
    project: str = typer.Option("SkinFlow", help="Project title (created if missing)."),
    images: str = typer.Option(
        "auto",
        help="local: Label Studio serves the image store folder; data: images embedded in tasks; presigned: links to "
        "a bucket store, renewed by each push; auto: presigned for a bucket, else local.",
    ),
) -> None:
    """Create or update the project and upload tasks with predictions (pushing twice adds nothing).
    The API token comes from LABEL_STUDIO_API_KEY or the file named by LABEL_STUDIO_API_KEY_FILE."""
    c = context(ctx)
    report = push(c.workbench(), c.actor(), url, label_studio_token(), project=project, image_mode=images)
    renewed = f" ({report.refreshed} image links renewed)" if report.refreshed else ""
    out.print(f"project #{report.project_id}: {report.created} tasks created, {report.already_there} already there{renewed}")


@ls_app.command("pull")
def ls_pull(
    ctx: typer.Context,
    url: str = typer.Option(..., envvar="LABEL_STUDIO_URL", help="Label Studio address."),
    project: str = typer.Option("SkinFlow", help="Project title."),
) -> None:
    """Bring completed Label Studio annotations back as annotations (pulling twice adds nothing).
    The API token comes from LABEL_STUDIO_API_KEY or the file named by LABEL_STUDIO_API_KEY_FILE."""
    c = context(ctx)
    report = pull(c.workbench(), c.actor(), url, label_studio_token(), project=project)
    out.print(
        f"imported {report.imported} annotations, {report.already_imported} already imported, {len(report.skipped)} skipped"
        + (f"; new accounts for {', '.join(report.users_created)}" if report.users_created else "")
    )
    for task_id, what in report.salvaged[:20]:
        out.print(f"task {task_id}: {what}")
    for task_id, why in report.skipped[:20]:
        out.print(f"skipped task {task_id}: {why}")
