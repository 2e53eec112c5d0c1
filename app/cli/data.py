"""Commands that bring data in: create the workbench, import, verify source labels, fetch, demo, status.
(Exports and Label Studio: exports.py; drafting, reasonings, weights, sources, vocabulary: assist.py.)"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from app.cli.common import app, context, out, print_new_accounts, progress_bar
from curation.ingest import import_path
from curation.ingest.common import ImportReport
from curation.ingest.fetch import fetch_images
from curation.labelling.insights import team_insights
from curation.labelling.source_labels import verify_source_labels
from curation.ops.demo import build_demo
from curation.ops.status import workbench_status
from curation.store.auth import add_user, count_users


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
    path: str = typer.Argument(
        ..., help="A folder of images (recursive), a CSV file, a zip, one image, or a folder in a bucket (s3://bucket/prefix/)."
    ),
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
    with progress_bar(f"importing {path.rstrip('/').rsplit('/', 1)[-1]}") as progress:
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
