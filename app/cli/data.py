"""Commands that move data: create the workbench, import, fetch, demo, status, export, Label Studio, LLM drafting,
reasonings and weights."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from app.cli.common import app, context, err, out, print_new_accounts, progress_bar
from curation.assist.choice import CONFIDENCE
from curation.assist.drafting import draft_images
from curation.assist.evidence import MEASURES, describe_decision, source_evidence
from curation.assist.weights import collect_reasonings, create_weight_set, list_weight_sets
from curation.export.canonical import verify_export
from curation.export.dataset import export_dataset
from curation.export.formats import EXTRA_FORMATS
from curation.export.labelstudio import label_studio_token, pull, push
from curation.export.records import ExportFilter
from curation.ingest import import_path
from curation.ingest.common import ImportReport
from curation.ingest.fetch import fetch_images
from curation.labelling.insights import team_insights
from curation.labelling.source_labels import verify_source_labels
from curation.labelling.vocabulary import decide_term, pending_terms
from curation.ops.demo import build_demo
from curation.ops.status import workbench_status
from curation.store.auth import add_user, count_users
from schema.errors import SkinflowError


def print_import_report(report: ImportReport, report_file: Path | None, home: Path, shown: int = 20) -> None:
    """The counts, the first `shown` items of each kind, warnings counted by kind; everything in a report file
    (--report, or one in <home>/reports when more was found than is shown)."""
    summary = report.summary()
    table = Table(title="Import")  # one row per count: fits a narrow terminal however many kinds there are
    table.add_column("")
    table.add_column("", justify="right")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)
    cut = False
    for title, rows in (("Failed", report.failed), ("Duplicates", report.duplicates), ("Linked", report.linked)):
        for item, reason in rows[:shown]:
            kept = ": kept as another source row of that picture" if title == "Linked" else ""
            out.print(f"{title.lower()} {item}: {reason}{kept}")
        if len(rows) > shown:
            out.print(f"... {len(rows) - shown} more {title.lower()}")
            cut = True
    for warning in report.warnings[:shown]:
        out.print(f"warning {warning}", soft_wrap=True)
    if report.warning_kinds:
        kinds = ", ".join(f"{count} {kind}" for kind, count in report.warning_kinds.most_common())
        out.print(f"warnings by kind: {kinds}")
        cut = cut or sum(report.warning_kinds.values()) > shown
    if report_file is None and cut:
        report_file = home / "reports" / f"import-{datetime.now():%Y%m%d-%H%M%S}.json"
    if report_file:
        report_file.parent.mkdir(parents=True, exist_ok=True)
        report_file.write_text(
            json.dumps(
                {
                    **summary,
                    "failed_items": report.failed,
                    "duplicate_items": report.duplicates,
                    "linked_items": report.linked,
                    "warning_items": report.warnings,
                    "warnings_by_kind": dict(report.warning_kinds),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        out.print(f"the full report: {report_file}")


@app.command()
def init(ctx: typer.Context, admin: str = typer.Option("admin", help="Name of the first admin account.")) -> None:
    """Create the workbench (database, image store) and the first admin account."""
    c = context(ctx)
    wb = c.workbench()
    if count_users(wb) == 0:
        _, password = add_user(wb, None, admin, "admin")
        print_new_accounts({admin: password})
    out.print(f"workbench ready at {wb.settings.home.resolve()} ({wb.engine.url.render_as_string(hide_password=True)})")


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A folder of images (recursive), a CSV file, or one image."),
    images_dir: Path | None = typer.Option(None, help="CSV only: folder holding the images (Fitzpatrick17k: <md5hash>.jpg)."),
    label_from_folder: bool = typer.Option(False, help="Folder only: use each image's parent folder name as its label."),
    dataset: str = typer.Option(
        "auto",
        help="CSV only: a public dataset's metadata (ham10000, isic, pad-ufes-20, ddi), auto (detected from the header) "
        "or csv (generic columns). Images are found by file name anywhere under --images-dir.",
    ),
    source: str | None = typer.Option(
        None,
        help="Generic CSV only: the name of the source its ids belong to (default csv), e.g. clinic-a. Ids are unique "
        "per source: give each clinic's file its own name. A public dataset's source is its recipe.",
    ),
    report: Path | None = typer.Option(None, help="Write the full report (every failure and duplicate) as JSON."),
) -> None:
    """Import images and metadata. Re-running the same import adds nothing."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    options = {"source": source} if source is not None else {}
    with progress_bar(f"importing {path.name}") as progress:
        result = import_path(
            wb,
            actor,
            path,
            images_dir=images_dir,
            label_from_folder=label_from_folder,
            dataset=dataset,
            progress=progress,
            **options,
        )
    print_import_report(result, report, wb.settings.home)
    if result.failed and not (result.imported or result.missing_images or result.already_present or result.duplicates):
        raise typer.Exit(1)


@app.command()
def verify(
    ctx: typer.Context,
    source: str = typer.Option(..., help="The source whose own labels to accept, e.g. ham10000 (see `skinflow status`)."),
    where: list[str] = typer.Option(
        [],
        help="Only rows whose metadata column has one of these values: COLUMN=VALUE or COLUMN=V1|V2, e.g. dx_type=histo "
        "(repeat: every condition must hold). Import keeps each dataset's provenance column (HAM10000 dx_type, ISIC "
        "diagnosis_confirm_type, PAD-UFES-20 biopsed) and label_provenance.",
    ),
    undo: bool = typer.Option(False, help="Stop accepting these rows' source labels (what an earlier verify did)."),
) -> None:
    """Accept a source's own labels in bulk (admin): they export with --labels source|both, no annotation needed."""
    c = context(ctx)
    result = verify_source_labels(c.workbench(), c.actor(), source, where, undo=undo)
    done = "no longer accepted" if undo else "accepted"
    conditions = " and ".join(f"{column} in {'|'.join(values)}" for column, values in result.where.items()) or "all rows"
    out.print(
        f"{result.source} ({conditions}): {result.matched} rows match, {result.changed} source labels {done} now"
        + (f"; {result.without_label} have a label outside the taxonomy (annotate them)" if result.without_label else "")
    )
    if not undo and result.changed:
        out.print("export them with: skinflow export --out exports/vN --labels source (or both)")


@app.command("fetch-images")
def fetch_images_(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, help="At most this many downloads."),
    allow_private: bool = typer.Option(False, help="Allow loopback/private/link-local addresses (refused by default)."),
    report: Path | None = typer.Option(None, help="Write the full report as JSON."),
) -> None:
    """Download images of rows imported by URL only (needs a network)."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    with progress_bar("fetching images") as progress:
        result = fetch_images(wb, actor, limit=limit, allow_private=allow_private or None, progress=progress)
    print_import_report(result, report, wb.settings.home)


@app.command()
def demo(
    ctx: typer.Context,
    n: int = typer.Option(300, min=1, max=100_000, help="Number of synthetic images."),
    seed: int = typer.Option(0, help="Random seed (same seed, same data)."),
    verified_fraction: float = typer.Option(0.5, min=0.0, max=1.0, help="Share annotated and verified by the demo accounts."),
) -> None:
    """Build the synthetic demo workbench: accounts, images with true captions, noisy drafts."""
    c = context(ctx)
    wb = c.workbench()
    actor = c.actor() if count_users(wb) else None  # a new workbench gets all three demo accounts at once
    with progress_bar("building demo") as progress:
        result = build_demo(
            wb,
            actor,
            n=n,
            seed=seed,
            verified_fraction=verified_fraction,
            annotated_fraction=min(0.1, 1.0 - verified_fraction),
            progress=progress,
        )
    print_new_accounts(result.accounts)
    if not result.accounts:
        out.print("demo accounts exist already (admin, reviewer, annotator); reset a password with `skinflow users set-password`")
    r = result.import_report
    out.print(
        f"demo at {wb.settings.home.resolve()}: {r.imported} new images ({r.already_present} already there), "
        f"{result.drafts} drafts, {result.annotated} annotated, {result.verified} verified"
    )


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Counts by state, label, Fitzpatrick type and source."""
    wb = context(ctx).workbench()
    info = workbench_status(wb)
    if as_json:  # every number of the app's Insights page is here too
        out.print_json(json.dumps({**info, "insights": team_insights(wb, context(ctx).actor())}, default=str))
        return
    out.print(f"{info['images']} images, {info['annotations']} annotations, drafts {info['drafts'] or 0}, users {info['users']}")
    for title, key, limit in (
        ("State", "by_status", None),
        ("Source", "by_source", None),
        ("Fitzpatrick type", "by_fitzpatrick", None),
        ("Label (top 25)", "by_label", 25),
    ):
        table = Table(title=title)
        table.add_column(title.split(" (")[0])
        table.add_column("images", justify="right")
        for name, count in list(info[key].items())[:limit]:
            table.add_row(str(name), str(count))
        out.print(table)
    if info["group_code_labels"]:
        out.print(
            f"{info['group_code_labels']} images carry a source code naming a group of conditions (e.g. HAM10000 bkl): "
            "kept with its group, counted as 'unknown' label until an annotator picks one"
        )
    if info["free_text_labels"]:
        out.print(f"{info['free_text_labels']} images carry a label outside the taxonomy (counted as 'unknown')")


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
    out_dir: Path | None = typer.Option(None, "--out", help="New folder for this export version, e.g. exports/v1."),
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
def export_verify(folder: Path = typer.Argument(..., help="An export folder.")) -> None:
    """Re-hash every file of an export against its manifest."""
    problems = verify_export(folder)
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
    images: str = typer.Option("local", help="local: Label Studio serves the image store; data: images embedded in tasks."),
) -> None:
    """Create or update the project and upload tasks with predictions (pushing twice adds nothing).
    The API token comes from LABEL_STUDIO_API_KEY or the file named by LABEL_STUDIO_API_KEY_FILE."""
    c = context(ctx)
    report = push(c.workbench(), c.actor(), url, label_studio_token(), project=project, image_mode=images)
    out.print(f"project #{report.project_id}: {report.created} tasks created, {report.already_there} already there")


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


@app.command()
def draft(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, help="At most this many images."),
    concurrency: int | None = typer.Option(None, help="Requests in flight at once (default: setting llm_concurrency, 8)."),
    model: str | None = typer.Option(None, help="Model name (default: SKINFLOW_LLM_MODEL)."),
    redo: bool = typer.Option(False, help="Draft again images that already have a draft from this model and prompt."),
) -> None:
    """Draft captions with an OpenAI-compatible vision model (SKINFLOW_LLM_BASE_URL, SKINFLOW_LLM_MODEL)."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    with progress_bar("drafting") as progress:
        report = draft_images(wb, actor, model=model, limit=limit, concurrency=concurrency, redo=redo, progress=progress)
    out.print(
        f"drafted {report.done} of {report.todo} images in {report.seconds:.1f} s; failed {len(report.failed)}; "
        f"tokens {report.prompt_tokens} in, {report.completion_tokens} out"
        + ("" if report.structured_output else "; the server has no structured output: JSON was read from the text")
    )
    for image_id, reason in report.failed[:20]:
        out.print(f"failed image #{image_id}: {reason}")


@app.command()
def reasonings(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, help="At most this many verified records."),
    concurrency: int | None = typer.Option(None, help="Requests in flight at once."),
    model: str | None = typer.Option(None, help="Model name (default: SKINFLOW_LLM_MODEL)."),
) -> None:
    """Ask the LLM for the diagnostic reasoning of each verified record (input of `weights`)."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    with progress_bar("reasonings") as progress:
        report = collect_reasonings(wb, actor, model=model, limit=limit, concurrency=concurrency, progress=progress)
    out.print(f"stored {report.done} of {report.todo} reasonings in {report.seconds:.1f} s; failed {len(report.failed)}")
    for image_id, reason in report.failed[:20]:
        out.print(f"failed image #{image_id}: {reason}")


@app.command()
def weights(
    ctx: typer.Context,
    source: str = typer.Option("all", help="Which reasonings count: llm, annotator or all."),
    floor: float = typer.Option(0.01, help="Minimum weight of every field."),
    activate: bool | None = typer.Option(
        None, "--activate/--no-activate", help="Make the new set active (default: only if none is)."
    ),
    list_only: bool = typer.Option(False, "--list", help="Only list the weight sets."),
) -> None:
    """Attribute weights from reasoning frequency: a new versioned weight set."""
    c = context(ctx)
    wb = c.workbench()
    if not list_only:
        info = create_weight_set(wb, c.actor(), source=source, floor=floor, activate=activate)
        table = Table(title=f"{info.name} from {info.n_reasonings} reasonings" + (" (active)" if info.active else ""))
        for column in ("field", "mentions", "weight"):
            table.add_column(column, justify="left" if column == "field" else "right")
        for key, weight in info.weights.items():
            table.add_row(key, str(info.counts[key]), f"{weight:.4f}")
        out.print(table)
    for ws in list_weight_sets(wb):
        out.print(
            f"#{ws.id} {ws.name}{' (active)' if ws.active else ''}: {ws.n_reasonings} reasonings, source "
            f"{ws.params.get('source')}, "
            f"floor {ws.floor}",
        )


@app.command()
def sources(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Who to trust for what: each draft source's held-out agreement with verified annotations, per field and
    for the diagnosis, with the number of items; the best source per field with enough evidence (reviewer)."""
    c = context(ctx)
    report = source_evidence(c.workbench(), c.actor())
    if as_json:
        out.print_json(json.dumps(report.to_json(), default=str))
        return
    if not report.sources:
        out.print("no draft source has a usable draft on a verified image yet")
        return
    table = Table(title=f"Held-out agreement with {report.verified_images} verified images (mean, n)")
    table.add_column("measure")
    for entry in report.sources:
        table.add_column(entry.source, justify="right")
    table.add_column(f"best (n >= {report.min_evidence})")
    for measure in MEASURES:
        cells = []
        for entry in report.sources:
            score = entry.measures[measure]
            cells.append("-" if score.mean is None else f"{score.mean:.2f} ({score.n})")
        table.add_row(measure, *cells, report.chosen[measure] or "not enough evidence")
    out.print(table)
    for entry in report.sources:
        out.print(f"{entry.source}: {entry.held_out}")
    out.print(f"How each measure was decided (a source replaces the choice only when better with P >= {CONFIDENCE:.4f}):")
    for measure in MEASURES:
        out.print(f"  {measure}: {describe_decision(report, measure)}")
    for run_id in report.run_ids():
        verdicts = report.run_verdicts(run_id) or []
        kinds = ("beats", "below", "no clear difference", "not enough evidence")
        by_verdict = {kind: [v.measure for v in verdicts if v.verdict == kind] for kind in kinds}
        out.print(
            f"run #{run_id} against the source chosen among the others: "
            + "; ".join(f"{kind} on {', '.join(by_verdict[kind]) or 'nothing'}" for kind in kinds)
        )


def _field_term(value: str) -> tuple[str, str]:
    field_key, sep, term = value.partition(":")
    if not sep or not term.strip():
        raise typer.BadParameter(f"{value!r}: give FIELD:TERM, e.g. color:salmon-pink")
    return field_key.strip(), term


@app.command()
def vocabulary(
    ctx: typer.Context,
    pending: bool = typer.Option(False, "--pending", help="List the new terms waiting for a decision (the default)."),
    accept: str | None = typer.Option(None, "--accept", metavar="FIELD:TERM", help="Accept a term into the vocabulary."),
    reject: str | None = typer.Option(None, "--reject", metavar="FIELD:TERM", help="Reject a term (it leaves the list)."),
    synonyms: list[str] = typer.Option([], "--synonym", help="A synonym of the accepted term (repeat for more)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Vocabulary review (reviewer): caption terms annotators added that the vocabulary lacks; accept them (with
    synonyms) into this workbench's vocabulary or reject them."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    if accept and reject:
        raise typer.BadParameter("give --accept or --reject, not both")
    if synonyms and not accept:
        raise typer.BadParameter("--synonym goes with --accept")
    if accept or reject:
        field_key, term = _field_term(accept or reject)
        row = decide_term(wb, actor, field_key, term, accept=bool(accept), synonyms=tuple(synonyms))
        also = f" with synonyms {', '.join(row.synonyms)}" if row.synonyms else ""
        out.print(f"{row.decision} {row.field}: {row.term}{also}")
        return
    terms = pending_terms(wb, actor)
    if as_json:
        out.print_json(json.dumps([t.__dict__ for t in terms]))
        return
    if not terms:
        out.print("no new terms wait for review")
        return
    table = Table(title=f"{len(terms)} new terms (accept: --accept FIELD:TERM [--synonym S]; reject: --reject FIELD:TERM)")
    for column in ("field", "term", "annotations", "images"):
        table.add_column(column, justify="right" if column == "annotations" else "left")
    for t in terms:
        table.add_row(t.field, t.term, str(t.annotations), ", ".join(f"#{i}" for i in t.image_ids))
    out.print(table)
