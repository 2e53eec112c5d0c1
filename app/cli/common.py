"""What every command shares: the typer app, the consoles, who acts (--user) and where (--home), progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from curation.store.auth import Actor, add_user, count_users, get_actor, sole_admin
from curation.store.db import Workbench, open_workbench
from curation.store.settings import Settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="SkinFlow Workbench: dermatology annotation, curation, export and training.",
)

# markup and highlighting off: what we print quotes file names, CSV cells and replies, and a "[/bold]" in
# one of them was parsed as rich markup (MarkupError traceback); our own emphasis uses style=
out = Console(soft_wrap=True, markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False)


@dataclass
class CliContext:
    """Parsed once per invocation: the workbench is opened (and migrated) only when a command needs it."""

    home: Path | None
    username: str | None
    _wb: Workbench | None = None

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
            print_new_accounts({"admin": password})
            return actor
        return sole_admin(wb)


def context(ctx: typer.Context) -> CliContext:
    return ctx.obj


def print_new_accounts(accounts: dict[str, str]) -> None:
    if not accounts:
        return
    table = Table(title="New accounts (passwords are shown once: store them now)")
    table.add_column("username")
    table.add_column("password")
    for name, password in accounts.items():
        table.add_row(name, password)
    out.print(table)


@contextmanager
def progress_bar(description: str) -> Iterator:
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


@app.callback()
def _main(
    ctx: typer.Context,
    home: Path | None = typer.Option(None, "--home", help="Workbench folder (default $SKINFLOW_HOME or ./workbench)."),
    user: str | None = typer.Option(None, "--user", "-u", envvar="SKINFLOW_USER", help="Account that acts."),
) -> None:
    ctx.obj = CliContext(home, user)
