"""Commands that keep a workbench running: the web app, backup and restore, the doctor, the image store, accounts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from app.cli.common import app, context, err, out, print_new_accounts
from curation.ops.images import DEFAULT_GRACE_HOURS, collect_garbage, migrate_images, verify_images
from curation.ops.jobs import SAFE_ENV, python_module
from curation.ops.maintenance import backup as backup_database
from curation.ops.maintenance import doctor as run_doctor
from curation.ops.maintenance import fix_store, hold_app_lock
from curation.store.auth import add_user, list_users, set_email, set_password, set_role, unlock
from curation.store.models import ROLES
from schema.errors import SkinflowError

users_app = typer.Typer(no_args_is_help=True, help="Manage accounts (admin).")
app.add_typer(users_app, name="users")
images_app = typer.Typer(no_args_is_help=True, help="The image store: a folder or an S3-compatible bucket (admin).")
app.add_typer(images_app, name="images")


@app.command("app")
def app_(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on. Keep 127.0.0.1 unless a TLS reverse proxy is in front (README)."
    ),
    port: int = typer.Option(8501, help="Port."),
) -> None:
    """Start the web app (Streamlit), after upgrading the database. This process becomes the server (exec), so
    SIGTERM or Ctrl-C from a supervisor stops it; `skinflow restore` refuses while it runs."""
    c = context(ctx)
    wb = c.workbench()  # creates and upgrades the database before the app starts
    hold_app_lock(wb.settings)
    # the server runs in the workbench folder with a safe import path (python_module): started in a folder
    # holding an `app/`, `curation/` or `streamlit/` package, it would have imported that instead of our code.
    # Paths are pinned first (relative ones meant the caller's folder); Streamlit's secrets are still read from
    # the caller's .streamlit/ (single sign-on, docs/guide/administration.md), as before, and then the home's.
    env = {**os.environ, **SAFE_ENV, **wb.settings.child_environ()}
    home = wb.settings.home.resolve()
    secrets = [Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"]
    secrets.append(home / ".streamlit" / "secrets.toml")
    script = Path(__file__).resolve().parents[1] / "ui" / "main.py"
    out.print(f"SkinFlow Workbench on http://{host}:{port} (workbench {wb.settings.home.resolve()}); Ctrl-C stops it")
    command = [
        *python_module("app.ui.server"),  # Streamlit's command line, with its own outbound lookup switched off
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
        *[arg for path in dict.fromkeys(secrets) for arg in ("--secrets.files", str(path))],
    ]
    wb.close()
    sys.stdout.flush()
    # exec, not a child process: a supervisor's SIGTERM to this pid reaches the server (a child was orphaned,
    # still serving and writing), and the lock beside the database (maintenance.app_lock_path) stays held for exactly
    # as long as it runs.
    os.chdir(home)
    os.execve(sys.executable, command, env)


@app.command()
def backup(
    ctx: typer.Context, out_file: Path | None = typer.Option(None, "--out", help="Backup file (default under backups/).")
) -> None:
    """Consistent copy of the SQLite database, safe while the app is running."""
    c = context(ctx)
    path = backup_database(c.workbench(), c.actor(), out_file)
    out.print(f"backup written to {path}")


@app.command()
def restore(ctx: typer.Context, backup_file: Path = typer.Argument(..., help="A file written by `skinflow backup`.")) -> None:
    """Replace the database with a backup (stop the app first); the current one is kept beside it."""
    from curation.ops.maintenance import restore as restore_database

    c = context(ctx)
    report = restore_database(c.settings(), backup_file, c.actor())
    out.print(f"restored {backup_file}; the previous database is kept as {report.previous_copy}")
    if report.sessions_ended:
        out.print(f"ended the {report.sessions_ended} login session(s) the backup held open: everyone logs in again")
    if report.missing_images:
        out.print(
            f"{len(report.missing_images)} of {report.images} images are missing from the store (copy images/ back): "
            + ", ".join(report.missing_images[:10]),
        )


@app.command()
def doctor(
    ctx: typer.Context,
    fix: bool = typer.Option(
        False,
        "--fix",
        help="Remove orphan files (older than an hour) and temp files of killed writers; make the workbench owner-only.",
    ),
) -> None:
    """Integrity check, migration state, image files missing on disk, orphan and temp files, permissions."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    report = run_doctor(wb, actor)
    if fix and report.fixable:
        loose = len(report.loose_permissions)
        out.print(f"removed {fix_store(wb, actor, report)} unused files; made {loose} paths owner-only")
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


@images_app.command("verify")
def images_verify(ctx: typer.Context) -> None:
    """Read back every picture the database names and check its sha256: a report of missing and corrupt ones
    (nothing is changed, so it is safe beside imports on other servers). Exits 1 when one is found."""
    c = context(ctx)
    report = verify_images(c.workbench(), c.actor())
    out.print(f"checked {report.checked} pictures in the {report.store}")
    for problem in report.problems[:50]:
        out.print(f"image #{problem.image_id} {problem.key}: {problem.problem}")
    if report.problems:
        more = " (first 50 listed)" if len(report.problems) > 50 else ""
        err.print(f"{len(report.missing)} missing, {len(report.corrupt)} corrupt{more}")
        raise typer.Exit(1)
    out.print("every picture is there and intact")


@images_app.command("gc")
def images_gc(
    ctx: typer.Context,
    grace_hours: float = typer.Option(
        DEFAULT_GRACE_HOURS, help="Keep unreferenced pictures younger than this (an import elsewhere may not have committed)."
    ),
    dry_run: bool = typer.Option(False, help="Only list what would be removed."),
) -> None:
    """Remove pictures no image names, once older than the grace period (safe beside imports on other servers)."""
    c = context(ctx)
    report = collect_garbage(c.workbench(), c.actor(), grace_hours=grace_hours, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    out.print(
        f"{report.listed} pictures in the {report.store}: {report.unreferenced} named by no image, {verb} "
        f"{len(report.removed)}, {report.young} kept inside the {grace_hours:g} h grace period"
    )
    for key in report.removed[:50] if dry_run else []:
        out.print(key)


@images_app.command("migrate")
def images_migrate(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="s3://bucket/prefix, or `folder` for the images folder under the home."),
) -> None:
    """Copy every picture into another store (a bucket, or back to the folder), checked; rerun to resume. Then set
    SKINFLOW_IMAGE_STORE on every server and run it again for what was imported meanwhile."""
    c = context(ctx)
    report = migrate_images(c.workbench(), c.actor(), to)
    out.print(
        f"{report.copied} pictures copied to the {report.target}, {report.already_there} there already (from the {report.source})"
    )
    for problem in report.problems[:50]:
        out.print(f"image #{problem.image_id} {problem.key}: {problem.problem} in the source, not copied")
    if report.problems:
        err.print(f"{len(report.problems)} pictures could not be copied: `skinflow images verify` lists them")
        raise typer.Exit(1)
    setting = "leave SKINFLOW_IMAGE_STORE unset" if to.strip() == "folder" else f"set SKINFLOW_IMAGE_STORE={to.strip()}"
    out.print(f"next: {setting} on every server, restart them, and run this again to copy what was imported meanwhile")


PASSWORD_FILE_HELP = (
    "Read the password from this file (or - for standard input); never from a flag, which shows in `ps` and "
    "shell history. Default: a generated password, printed once."
)


def _read_password(source: Path | None) -> str | None:
    if source is None:
        return None
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
    except OSError as e:
        raise SkinflowError(f"cannot read the password file {source}: {e.strerror}") from None
    return text.rstrip("\r\n")  # the line end an editor or `echo` adds is not part of the password


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    username: str,
    role: str = typer.Option("annotator", help=f"One of: {', '.join(ROLES)}."),
    password_file: Path | None = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
    email: str | None = typer.Option(None, help="The address single sign-on (OIDC) maps to this account."),
) -> None:
    """Create an account."""
    c = context(ctx)
    password = _read_password(password_file)
    _, pw = add_user(c.workbench(), c.actor(), username, role, password, email=email)
    if password is None:
        print_new_accounts({username: pw})
    else:
        out.print(f"user {username} created")


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List accounts."""
    c = context(ctx)
    table = Table()
    for column in ("username", "role", "active", "email", "created"):
        table.add_column(column)
    for u in list_users(c.workbench(), c.actor()):
        active = "yes" if u["active"] else "no"
        table.add_row(u["username"], u["role"], active, u["email"] or "", u["created_at"].strftime("%Y-%m-%d"))
    out.print(table)


@users_app.command("set-role")
def users_set_role(ctx: typer.Context, username: str, role: str) -> None:
    """Change an account's role."""
    c = context(ctx)
    set_role(c.workbench(), c.actor(), username, role)
    out.print(f"{username} is now {role}")


@users_app.command("set-email")
def users_set_email(
    ctx: typer.Context, username: str, email: str = typer.Argument(..., help="The address, or 'none' for local login only.")
) -> None:
    """Set the email single sign-on maps to this account (this ends the account's open app sessions)."""
    c = context(ctx)
    set_email(c.workbench(), c.actor(), username, None if email.strip().lower() == "none" else email)
    out.print(f"{username}: single sign-on email {'removed' if email.strip().lower() == 'none' else email}")


@users_app.command("unlock")
def users_unlock(ctx: typer.Context, username: str) -> None:
    """Let an account locked by failed logins log in at once (its failed attempts are forgotten)."""
    c = context(ctx)
    failures = unlock(c.workbench(), c.actor(), username)
    out.print(f"unlocked {username} ({failures} failed login(s) forgotten)")


@users_app.command("set-password")
def users_set_password(
    ctx: typer.Context,
    username: str,
    password_file: Path | None = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
) -> None:
    """Set an account's password (this ends the account's open app sessions)."""
    c = context(ctx)
    password = _read_password(password_file)
    pw = set_password(c.workbench(), c.actor(), username, password)
    if password is None:
        print_new_accounts({username: pw})
    else:
        out.print(f"password of {username} changed")
