"""`skinflow`: the command line. Every command calls curation functions (the same ones the app uses);
errors print one line and exit non-zero.

Who acts: `--user NAME` (or SKINFLOW_USER). Without it, commands act as the only admin; on a new
workbench the first command that needs an account creates `admin` and prints its password once.
Anyone with shell access to the workbench folder has full access to the data anyway, so the CLI
asks for no password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from curation.assist.drafting import draft_images
from curation.assist.weights import collect_reasonings, create_weight_set, list_weight_sets
from curation.export.dataset import ExportFilter, export_dataset, verify_export
from curation.export.formats import EXTRA_FORMATS
from curation.export.labelstudio import label_studio_token, pull, push
from curation.ingest import import_path
from curation.ingest.common import ImportReport
from curation.ingest.demo import build_demo
from curation.ingest.fetch import fetch_images
from curation.ops.insights import insights
from curation.ops.maintenance import backup as backup_database
from curation.ops.maintenance import doctor as run_doctor
from curation.ops.maintenance import fix_store
from curation.ops.status import workbench_status
from curation.store.auth import Actor, add_user, count_users, get_actor, list_users, set_password, set_role, sole_admin
from curation.store.db import Workbench, open_workbench
from curation.store.models import ROLES
from curation.store.secrets import scrub
from curation.store.settings import Settings
from schema.errors import SkinflowError
from trainer.config import ABLATION_VARIANTS, PRESET_NOTES

PRESET_HELP = "; ".join(f"{name}: {note}" for name, note in PRESET_NOTES.items()) + "."

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="SkinFlow Workbench: dermatology annotation, curation, export and training.",
)
users_app = typer.Typer(no_args_is_help=True, help="Manage accounts (admin).")
app.add_typer(users_app, name="users")
out = Console(soft_wrap=True)
err = Console(stderr=True)


@dataclass
class _Context:
    home: Optional[Path]
    username: Optional[str]
    _wb: Optional[Workbench] = None

    def settings(self) -> Settings:
        return Settings.load(**({"home": self.home} if self.home else {}))

    def workbench(self) -> Workbench:
        if self._wb is None:
            self._wb = open_workbench(self.settings())
        return self._wb

    def actor(self) -> Actor:
        wb = self.workbench()
        if self.username:
            return get_actor(wb, self.username)
        if count_users(wb) == 0:
            actor, password = add_user(wb, None, "admin", "admin")
            _print_new_accounts({"admin": password})
            return actor
        return sole_admin(wb)


def _ctx(ctx: typer.Context) -> _Context:
    return ctx.obj


def _print_new_accounts(accounts: dict[str, str]) -> None:
    if not accounts:
        return
    table = Table(title="New accounts (passwords are shown once: store them now)")
    table.add_column("username")
    table.add_column("password")
    for name, password in accounts.items():
        table.add_row(name, password)
    out.print(table)


@contextmanager
def _progress(description: str) -> Iterator:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # no bar (and no stray newlines) in logs and pipes
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _print_import_report(report: ImportReport, report_file: Optional[Path], shown: int = 20) -> None:
    summary = report.summary()
    table = Table(title="Import")
    for key in summary:
        table.add_column(key.replace("_", " "))
    table.add_row(*(str(v) for v in summary.values()))
    out.print(table)
    for title, rows in (("Failed", report.failed), ("Duplicates", report.duplicates)):
        for item, reason in rows[:shown]:
            out.print(f"[bold]{title.lower()}[/bold] {item}: {reason}", markup=True, highlight=False, soft_wrap=True)
        if len(rows) > shown:
            out.print(f"... {len(rows) - shown} more {title.lower()} (see --report FILE for all)")
    for warning in report.warnings[:shown]:
        out.print(f"warning {warning}", markup=False, highlight=False, soft_wrap=True)
    if report_file:
        report_file.write_text(
            json.dumps(
                {
                    **summary,
                    "failed_items": report.failed,
                    "duplicate_items": report.duplicates,
                    "warning_items": report.warnings,
                },
                indent=2,
            ),
            encoding="utf-8",
        )


@app.callback()
def _main(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(None, "--home", help="Workbench folder (default $SKINFLOW_HOME or ./workbench)."),
    user: Optional[str] = typer.Option(None, "--user", "-u", envvar="SKINFLOW_USER", help="Account that acts."),
) -> None:
    ctx.obj = _Context(home, user)


@app.command()
def init(ctx: typer.Context, admin: str = typer.Option("admin", help="Name of the first admin account.")) -> None:
    """Create the workbench (database, image store) and the first admin account."""
    c = _ctx(ctx)
    wb = c.workbench()
    if count_users(wb) == 0:
        _, password = add_user(wb, None, admin, "admin")
        _print_new_accounts({admin: password})
    out.print(f"workbench ready at {wb.settings.home.resolve()} ({wb.engine.url.render_as_string(hide_password=True)})")


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A folder of images (recursive), a CSV file, or one image."),
    images_dir: Optional[Path] = typer.Option(None, help="CSV only: folder holding the images (Fitzpatrick17k: <md5hash>.jpg)."),
    label_from_folder: bool = typer.Option(False, help="Folder only: use each image's parent folder name as its label."),
    report: Optional[Path] = typer.Option(None, help="Write the full report (every failure and duplicate) as JSON."),
) -> None:
    """Import images and metadata. Re-running the same import adds nothing."""
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    with _progress(f"importing {path.name}") as progress:
        result = import_path(wb, actor, path, images_dir=images_dir, label_from_folder=label_from_folder, progress=progress)
    _print_import_report(result, report)
    if result.failed and not (result.imported or result.missing_images or result.already_present or result.duplicates):
        raise typer.Exit(1)


@app.command("fetch-images")
def fetch_images_(
    ctx: typer.Context,
    limit: Optional[int] = typer.Option(None, help="At most this many downloads."),
    allow_private: bool = typer.Option(False, help="Allow loopback/private/link-local addresses (refused by default)."),
    report: Optional[Path] = typer.Option(None, help="Write the full report as JSON."),
) -> None:
    """Download images of rows imported by URL only (needs a network)."""
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    with _progress("fetching images") as progress:
        result = fetch_images(wb, actor, limit=limit, allow_private=allow_private or None, progress=progress)
    _print_import_report(result, report)


@app.command()
def demo(
    ctx: typer.Context,
    n: int = typer.Option(300, min=1, max=100_000, help="Number of synthetic images."),
    seed: int = typer.Option(0, help="Random seed (same seed, same data)."),
    verified_fraction: float = typer.Option(0.5, min=0.0, max=1.0, help="Share annotated and verified by the demo accounts."),
) -> None:
    """Build the synthetic demo workbench: accounts, images with true captions, noisy drafts."""
    c = _ctx(ctx)
    wb = c.workbench()
    actor = c.actor() if count_users(wb) else None  # a new workbench gets all three demo accounts at once
    with _progress("building demo") as progress:
        result = build_demo(
            wb,
            actor,
            n=n,
            seed=seed,
            verified_fraction=verified_fraction,
            annotated_fraction=min(0.1, 1.0 - verified_fraction),
            progress=progress,
        )
    _print_new_accounts(result.accounts)
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
    wb = _ctx(ctx).workbench()
    info = workbench_status(wb)
    if as_json:  # every number of the app's Insights page is here too
        out.print_json(json.dumps({**info, "insights": insights(wb)}, default=str))
        return
    out.print(
        f"[bold]{info['images']}[/bold] images, {info['annotations']} annotations, drafts {info['drafts'] or 0}, users "
        f"{info['users']}"
    )
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
    if info["free_text_labels"]:
        out.print(f"{info['free_text_labels']} images carry a label outside the taxonomy (counted as 'unknown')")


export_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Export curated records (canonical JSONL + Parquet + card + manifest, extra formats); `export verify DIR`.",
)
app.add_typer(export_app, name="export")


def _split_option(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@export_app.callback()
def export(
    ctx: typer.Context,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="New folder for this export version, e.g. exports/v1."),
    formats: list[str] = typer.Option(
        [], "--format", help=f"Extra formats: {', '.join(EXTRA_FORMATS)} (repeat or comma-separate)."
    ),
    include_unverified: bool = typer.Option(False, help="Also export annotated but not yet verified records."),
    label: list[str] = typer.Option([], help="Only these labels (taxonomy keys or names; repeat or comma-separate)."),
    group: list[str] = typer.Option([], help="Only these nine- or three-partition groups, e.g. malignant."),
    fitzpatrick: list[int] = typer.Option([], help="Only these Fitzpatrick types (repeat)."),
    source: list[str] = typer.Option([], help="Only these sources: folder, csv, fitzpatrick17k, synthetic."),
    holdout_labels: list[str] = typer.Option([], help="Put these whole classes only in test (zero-shot split)."),
    dup_distance: int = typer.Option(
        6, help="Near-duplicates: perceptual hashes at most this many bits apart share a split (0-7)."
    ),
    no_dedup: bool = typer.Option(False, help="Switch near-duplicate grouping off."),
    overwrite: bool = typer.Option(False, help="Replace an existing export folder."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if out_dir is None:
        raise SkinflowError("say where to write the export: skinflow export --out exports/v1 (or `skinflow export verify DIR`)")
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    selection = ExportFilter(
        include_unverified=include_unverified,
        labels=_split_option(label),
        groups=_split_option(group),
        fitzpatrick=tuple(fitzpatrick),
        sources=_split_option(source),
        holdout_labels=_split_option(holdout_labels),
        max_hash_distance=None if no_dedup else dup_distance,
    )
    with _progress("exporting") as progress:
        result = export_dataset(
            wb, actor, out_dir, selection=selection, formats=_split_option(formats), overwrite=overwrite, progress=progress
        )
    out.print(
        f"exported {result.n_records} records to {result.path} (train {result.by_split['train']}, "
        f"val {result.by_split['val']}, test {result.by_split['test']}; {result.duplicate_groups} near-duplicate groups); "
        f"manifest sha256 {result.manifest_sha256[:12]}"
    )


@export_app.command("verify")
def export_verify(folder: Path = typer.Argument(..., help="An export folder.")) -> None:
    """Re-hash every file of an export against its manifest."""
    problems = verify_export(folder)
    for problem in problems[:50]:
        out.print(problem, markup=False, highlight=False)
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
    c = _ctx(ctx)
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
    c = _ctx(ctx)
    report = pull(c.workbench(), c.actor(), url, label_studio_token(), project=project)
    out.print(
        f"imported {report.imported} annotations, {report.already_imported} already imported, {len(report.skipped)} skipped"
        + (f"; new accounts for {', '.join(report.users_created)}" if report.users_created else "")
    )
    for task_id, why in report.skipped[:20]:
        out.print(f"skipped task {task_id}: {why}", markup=False, highlight=False)


@app.command()
def draft(
    ctx: typer.Context,
    limit: Optional[int] = typer.Option(None, help="At most this many images."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at once (default: setting llm_concurrency, 8)."),
    model: Optional[str] = typer.Option(None, help="Model name (default: SKINFLOW_LLM_MODEL)."),
    redo: bool = typer.Option(False, help="Draft again images that already have a draft from this model and prompt."),
) -> None:
    """Draft captions with an OpenAI-compatible vision model (SKINFLOW_LLM_BASE_URL, SKINFLOW_LLM_MODEL)."""
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    with _progress("drafting") as progress:
        report = draft_images(wb, actor, model=model, limit=limit, concurrency=concurrency, redo=redo, progress=progress)
    out.print(
        f"drafted {report.done} of {report.todo} images in {report.seconds:.1f} s; failed {len(report.failed)}; "
        f"tokens {report.prompt_tokens} in, {report.completion_tokens} out"
        + ("" if report.structured_output else "; the server has no structured output: JSON was read from the text")
    )
    for image_id, reason in report.failed[:20]:
        out.print(f"failed image #{image_id}: {reason}", markup=False, highlight=False)


@app.command()
def reasonings(
    ctx: typer.Context,
    limit: Optional[int] = typer.Option(None, help="At most this many verified records."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at once."),
    model: Optional[str] = typer.Option(None, help="Model name (default: SKINFLOW_LLM_MODEL)."),
) -> None:
    """Ask the LLM for the diagnostic reasoning of each verified record (input of `weights`)."""
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    with _progress("reasonings") as progress:
        report = collect_reasonings(wb, actor, model=model, limit=limit, concurrency=concurrency, progress=progress)
    out.print(f"stored {report.done} of {report.todo} reasonings in {report.seconds:.1f} s; failed {len(report.failed)}")
    for image_id, reason in report.failed[:20]:
        out.print(f"failed image #{image_id}: {reason}", markup=False, highlight=False)


@app.command()
def weights(
    ctx: typer.Context,
    source: str = typer.Option("all", help="Which reasonings count: llm, annotator or all."),
    floor: float = typer.Option(0.01, help="Minimum weight of every field."),
    activate: Optional[bool] = typer.Option(
        None, "--activate/--no-activate", help="Make the new set active (default: only if none is)."
    ),
    list_only: bool = typer.Option(False, "--list", help="Only list the weight sets."),
) -> None:
    """Attribute weights from reasoning frequency: a new versioned weight set."""
    c = _ctx(ctx)
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
            markup=False,
            highlight=False,
        )


@app.command("app")
def app_(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on. Keep 127.0.0.1 unless a TLS reverse proxy is in front (README)."
    ),
    port: int = typer.Option(8501, help="Port."),
) -> None:
    """Start the web app (Streamlit), after upgrading the database."""
    c = _ctx(ctx)
    wb = c.workbench()  # creates and upgrades the database before the app starts
    env = {**os.environ, "SKINFLOW_HOME": str(wb.settings.home.resolve())}
    script = Path(__file__).with_name("ui") / "main.py"
    out.print(f"SkinFlow Workbench on http://{host}:{port} (workbench {wb.settings.home.resolve()}); Ctrl-C stops it")
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
    ]
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
def backup(
    ctx: typer.Context, out_file: Optional[Path] = typer.Option(None, "--out", help="Backup file (default under backups/).")
) -> None:
    """Consistent copy of the SQLite database, safe while the app is running."""
    c = _ctx(ctx)
    path = backup_database(c.workbench(), c.actor(), out_file)
    out.print(f"backup written to {path}")


@app.command()
def restore(ctx: typer.Context, backup_file: Path = typer.Argument(..., help="A file written by `skinflow backup`.")) -> None:
    """Replace the database with a backup (stop the app first); the current one is kept beside it."""
    from curation.ops.maintenance import restore as restore_database

    settings = _ctx(ctx).settings()
    report = restore_database(settings, backup_file)
    wb = open_workbench(settings)  # runs the migrations a backup from an older version needs
    with wb.session() as s:
        from curation.store import audit

        audit.record(s, None, "database.restore", "database", None, source=str(backup_file))
    out.print(f"restored {backup_file}; the previous database is kept as {report.previous_copy}")
    if report.missing_images:
        out.print(
            f"{len(report.missing_images)} of {report.images} images are missing from the store (copy images/ back): "
            + ", ".join(report.missing_images[:10]),
            markup=False,
            highlight=False,
        )


@app.command()
def doctor(
    ctx: typer.Context,
    fix: bool = typer.Option(False, "--fix", help="Remove orphan files (older than an hour) and temp files of killed writers."),
) -> None:
    """Integrity check, migration state, image files missing on disk, orphan and temp files."""
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    report = run_doctor(wb, actor)
    if fix and report.fixable:
        out.print(f"removed {fix_store(wb, actor, report)} unused files from the store")
        report = run_doctor(wb, actor)
    out.print(
        f"integrity: {report.integrity}; migration {report.revision} (head {report.head}); "
        f"{report.images_checked} image files referenced"
    )
    for path in report.missing_files[:20]:
        out.print(f"missing {path}")
    for path in report.orphan_files[:20]:
        out.print(f"orphan {path}")
    if report.problems:
        for problem in report.problems:
            err.print(f"problem: {problem}")
        raise typer.Exit(1)
    out.print("no problems found")


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    username: str,
    role: str = typer.Option("annotator", help=f"One of: {', '.join(ROLES)}."),
    password: Optional[str] = typer.Option(None, help="Default: a generated password, printed once."),
) -> None:
    """Create an account."""
    c = _ctx(ctx)
    _, pw = add_user(c.workbench(), c.actor(), username, role, password)
    if password is None:
        _print_new_accounts({username: pw})
    else:
        out.print(f"user {username} created")


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List accounts."""
    c = _ctx(ctx)
    table = Table()
    for column in ("username", "role", "active", "created"):
        table.add_column(column)
    for u in list_users(c.workbench(), c.actor()):
        table.add_row(u["username"], u["role"], "yes" if u["active"] else "no", u["created_at"].strftime("%Y-%m-%d"))
    out.print(table)


@users_app.command("set-role")
def users_set_role(ctx: typer.Context, username: str, role: str) -> None:
    """Change an account's role."""
    c = _ctx(ctx)
    set_role(c.workbench(), c.actor(), username, role)
    out.print(f"{username} is now {role}")


@users_app.command("set-password")
def users_set_password(
    ctx: typer.Context,
    username: str,
    password: Optional[str] = typer.Option(None, help="Default: a generated password, printed once."),
) -> None:
    """Set an account's password."""
    c = _ctx(ctx)
    pw = set_password(c.workbench(), c.actor(), username, password)
    if password is None:
        _print_new_accounts({username: pw})
    else:
        out.print(f"password of {username} changed")


@app.command()
def train(
    export_dir: Path = typer.Option(..., "--export", help="An export folder written with --format grpo."),
    preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
    config_file: Optional[Path] = typer.Option(
        None, "--config", help="A TOML file with TrainConfig settings; flags override it."
    ),
    stages: Optional[str] = typer.Option(
        None, help="Comma-separated stages: 0 SFT warm start, 1 caption GRPO, 2 diagnosis GRPO."
    ),
    model: Optional[str] = typer.Option(None, help="Pretrained weights (local folder or hub id) for the 7B preset."),
    output_dir: Optional[str] = typer.Option(None, "--runs", help="Where run folders go (default: runs)."),
    run_id: Optional[str] = typer.Option(None, help="Name of the run folder (default: time + random)."),
    resume: bool = typer.Option(False, help="Continue the run --run-id from its last checkpoint."),
    seed: Optional[int] = typer.Option(None),
    sft_epochs: Optional[float] = typer.Option(None, help="Stage 0 epochs."),
    stage1_steps: Optional[int] = typer.Option(None, help="Stage 1 GRPO steps."),
    stage2_steps: Optional[int] = typer.Option(None, help="Stage 2 GRPO steps."),
    num_generations: Optional[int] = typer.Option(None, help="Completions per prompt (GRPO group size)."),
    batch_size: Optional[int] = typer.Option(None, help="Completions per step (a multiple of --num-generations)."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every this many steps (what --resume restarts from)."),
    no_fdlinear: bool = typer.Option(False, help="Plain linears in the vision tower (ablation)."),
    use_vllm: bool = typer.Option(False, help="Generate with vLLM (GPU machines with vllm installed)."),
) -> None:
    """Train on an export: SFT warm start, GRPO stage I (caption reward), stage II (top-K diagnosis reward)."""
    from trainer.config import TrainConfig
    from trainer.train import train as run_training

    overrides = {
        "export": str(export_dir),
        "model": model,
        "output_dir": output_dir,
        "run_id": run_id,
        "seed": seed,
        "sft_epochs": sft_epochs,
        "stage1_steps": stage1_steps,
        "stage2_steps": stage2_steps,
        "num_generations": num_generations,
        "batch_size": batch_size,
        "save_steps": save_steps,
        "stages": tuple(int(s) for s in stages.split(",") if s.strip()) if stages else None,
        "fdlinear": False if no_fdlinear else None,
        "use_vllm": True if use_vllm else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        config = TrainConfig.from_toml(config_file, **({"preset": preset} if preset else {}), **overrides)
    else:
        config = TrainConfig.for_preset(preset or "tiny", **overrides)
    run_dir = run_training(config, resume=resume)
    out.print(f"run {config.run_id} done: model in {run_dir / 'model'}; metrics in {run_dir / 'metrics.jsonl'}")


@app.command()
def ablate(
    export_dir: Path = typer.Option(..., "--export", help="An export folder written with --format grpo."),
    preset: str = typer.Option("tiny", help=PRESET_HELP),
    seeds: int = typer.Option(3, min=1, help="Seeds per variant (0, 1, ... N-1)."),
    variants: str = typer.Option(",".join(ABLATION_VARIANTS), help=f"Comma-separated: {', '.join(ABLATION_VARIANTS)}."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Ablation folder (default: runs/ablation-<time>); rerun to resume."
    ),
    split: str = typer.Option("test", help="The split every variant is evaluated on."),
    model: Optional[str] = typer.Option(None, help="Pretrained weights (local folder or hub id) for the 7B preset."),
    sft_epochs: Optional[float] = typer.Option(None, help="Stage 0 epochs (every variant)."),
    stage1_steps: Optional[int] = typer.Option(None, help="Stage 1 GRPO steps (variants with stage I)."),
    stage2_steps: Optional[int] = typer.Option(None, help="Stage 2 GRPO steps (every variant)."),
    num_generations: Optional[int] = typer.Option(None, help="Completions per prompt (GRPO group size)."),
    batch_size: Optional[int] = typer.Option(None, help="Completions per step (a multiple of --num-generations)."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every this many steps (what a resume restarts from)."),
) -> None:
    """Test the paper's claims on your data: the recipe with FDLinear and/or stage I removed, same budget and
    seeds, each evaluated on the same split; one report with paired differences against the full recipe."""
    import time

    from trainer.ablate import AblationConfig, run_ablation

    overrides = {
        "model": model,
        "sft_epochs": sft_epochs,
        "stage1_steps": stage1_steps,
        "stage2_steps": stage2_steps,
        "num_generations": num_generations,
        "batch_size": batch_size,
        "save_steps": save_steps,
    }
    out_dir = out_dir or Path("runs") / time.strftime("ablation-%Y%m%d-%H%M%S")
    config = AblationConfig(
        export=str(export_dir),
        out=str(out_dir),
        preset=preset,
        seeds=tuple(range(seeds)),
        variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
        split=split,
        overrides={k: v for k, v in overrides.items() if v is not None},
    )
    report = run_ablation(config, on_progress=lambda line: out.print(line, markup=False, highlight=False))
    if report is None:
        out.print(f"ablation cancelled; run the same command again to resume it ({out_dir})")
        return
    for name, variant in report["variants"].items():
        top1, top6 = variant["metrics"]["top1"], variant["metrics"]["top6"]
        out.print(
            f"{name}: top-1 {top1['mean']:.3f} ± {top1['std']:.3f}, top-6 {top6['mean']:.3f} ± {top6['std']:.3f}",
            markup=False,
            highlight=False,
        )
    out.print(f"report: {out_dir / 'report.md'}")


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="A run folder (runs/<id>) or a checkpoint folder."),
    images: Path = typer.Option(
        ..., help='JSONL of {"image": path} rows (an export\'s grpo/stage1.jsonl works) or one path per line.'
    ),
    out_file: Path = typer.Option(..., "--out", help="Where to write the predictions (JSONL)."),
    batch_size: int = typer.Option(8, min=1),
    k: int = typer.Option(6, min=1, help="Diagnoses per image."),
) -> None:
    """Caption and top-K diagnoses (with scores) for each image, as JSONL for `skinflow` to import as suggestions."""
    from trainer.predict import predict_to_file

    count = predict_to_file(checkpoint, images, out_file, batch_size=batch_size, k=k)
    out.print(f"{count} predictions written to {out_file}")


@app.command()
def suggest(
    ctx: typer.Context,
    predictions: Optional[Path] = typer.Option(None, help="A prediction file from `skinflow predict` (JSONL) to import."),
    checkpoint: Optional[Path] = typer.Option(
        None, help="Or: a run folder; predict every image that still needs work, then import."
    ),
    limit: Optional[int] = typer.Option(None, help="With --checkpoint: at most this many images."),
    batch_size: int = typer.Option(8, min=1),
) -> None:
    """Model suggestions (model drafts) for the labelling queue, shown beside the LLM draft when annotating."""
    from curation.assist.suggestions import import_predictions, suggest_with_model

    if (predictions is None) == (checkpoint is None):
        raise SkinflowError("give either --predictions FILE (from `skinflow predict`) or --checkpoint RUN_FOLDER")
    c = _ctx(ctx)
    wb, actor = c.workbench(), c.actor()
    if checkpoint is not None:
        from trainer.predict import predict_to_file

        made = suggest_with_model(
            wb,
            actor,
            lambda manifest, out_file: predict_to_file(checkpoint, manifest, out_file, batch_size=batch_size),
            limit=limit,
        )
        if made is None:
            out.print("no image needs work: nothing to suggest")
            return
        out.print(f"predicted {made.predicted} images with {checkpoint}")
        report = made.report
    else:
        report = import_predictions(wb, actor, predictions)
    out.print(f"{report.added} suggestions added, {report.already_there} already there, {len(report.skipped)} skipped")
    for line, why in report.skipped[:20]:
        out.print(f"line {line}: {why}", markup=False, highlight=False)


@app.command("eval")
def eval_(
    ctx: typer.Context,
    export_dir: Path = typer.Option(..., "--export", help="The export folder (written with --format grpo) to evaluate on."),
    out_dir: Path = typer.Option(..., "--out", help="Report folder: report.md, report.json, PNG charts (and predictions.jsonl)."),
    predictions: Optional[Path] = typer.Option(None, help="A prediction file from `skinflow predict`."),
    checkpoint: Optional[Path] = typer.Option(None, help="Or: a run folder or checkpoint to predict with first."),
    llm: Optional[str] = typer.Option(
        None, help="Or: an OpenAI-compatible model (SKINFLOW_LLM_BASE_URL), same prompt as drafting."
    ),
    split: str = typer.Option("test", help="train, val or test."),
    baseline: Optional[Path] = typer.Option(
        None, help="A second prediction file: paired comparison (difference with CI, McNemar)."
    ),
) -> None:
    """Clinically grounded evaluation: top-1/3/6, group levels, clinical score, malignant misses, fairness,
    calibration, long tail, captions, with bootstrap CIs."""
    from trainer.data import load_export
    from trainer.evaluate import evaluate_files

    if sum(x is not None for x in (predictions, checkpoint, llm)) != 1:
        raise SkinflowError("give exactly one of --predictions FILE, --checkpoint RUN or --llm MODEL")
    out_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        from trainer.predict import predict_split

        predictions = predict_split(checkpoint, load_export(export_dir), split, out_dir)
    elif llm is not None:
        from curation.assist.drafting import write_llm_predictions

        data = load_export(export_dir)
        predictions = write_llm_predictions(
            _ctx(ctx).settings(), data.taxonomy, data.split_images(split), out_dir / "predictions.jsonl", model=llm
        )
    report = evaluate_files(export_dir, predictions, out_dir, split=split, baseline=baseline)
    h = report["headline"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in h.items() if v is not None)
    out.print(f"{report['n_diagnosis']} {split} items: {shown}; report in {out_dir / 'report.md'}", markup=False, highlight=False)


def main() -> None:
    try:
        app()
    except SkinflowError as e:
        print(f"error: {scrub(str(e))}", file=sys.stderr)  # one line, never wrapped: scripts grep it
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished work is saved; run the same command again to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
