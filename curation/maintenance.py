"""Backups and health checks."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from curation import audit
from curation.auth import Actor, require
from curation.db import Workbench, alembic_config
from curation.errors import DatabaseError
from curation.models import Image


def _sqlite_path(wb: Workbench) -> Path:
    url = wb.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        raise DatabaseError("backup works on SQLite databases; for PostgreSQL use pg_dump")
    return Path(url.database)


def backup(wb: Workbench, actor: Actor, out: Path | None = None) -> Path:
    """A consistent copy of the SQLite database while it is in use (SQLite online backup API).
    Image files are immutable and content-addressed: copy the images/ folder with rsync."""
    require(actor, "admin", "back up the database")
    source = _sqlite_path(wb)
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = wb.settings.backup_dir / f"skinflow-{stamp}.db"
    out = Path(out)
    if out.exists():
        raise DatabaseError(f"{out} exists already; choose another file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    src = sqlite3.connect(source)
    dst = sqlite3.connect(partial)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()
    partial.replace(out)
    with wb.session() as s:
        audit.record(s, actor, "database.backup", "database", None, path=str(out))
    return out


@dataclass
class DoctorReport:
    integrity: str = "not checked"
    revision: str | None = None
    head: str | None = None
    images_checked: int = 0
    missing_files: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    leftover_temp_files: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = []
        if self.integrity != "ok":
            out.append(f"database integrity check: {self.integrity}")
        if self.revision != self.head:
            out.append(f"database at migration {self.revision}, code expects {self.head}")
        if self.missing_files:
            out.append(f"{len(self.missing_files)} image files missing from the store")
        if self.orphan_files:
            out.append(f"{len(self.orphan_files)} files in the store belong to no image (left by an interrupted import)")
        if self.leftover_temp_files:
            out.append(f"{len(self.leftover_temp_files)} temporary files left by an interrupted write")
        return out


def doctor(wb: Workbench, actor: Actor) -> DoctorReport:
    require(actor, "admin", "run health checks")
    report = DoctorReport()
    with wb.engine.connect() as connection:
        if wb.engine.url.get_backend_name() == "sqlite":
            report.integrity = str(connection.execute(text("PRAGMA integrity_check")).scalar())
        else:
            report.integrity = "ok"
        report.revision = MigrationContext.configure(connection).get_current_revision()
    report.head = ScriptDirectory.from_config(alembic_config(wb.engine)).get_current_head()
    with wb.session() as s:
        referenced = {path for (path,) in s.execute(select(Image.file_path).where(Image.file_path.is_not(None)))}
    report.images_checked = len(referenced)
    store = wb.store_dir
    report.missing_files = sorted(p for p in referenced if not (store / p).is_file())
    for path in sorted(store.rglob("*")) if store.exists() else []:
        if not path.is_file():
            continue
        relative = str(path.relative_to(store))
        if path.name.startswith(".tmp-"):
            report.leftover_temp_files.append(relative)
        elif relative not in referenced:
            report.orphan_files.append(relative)
    return report
