"""Backups and health checks."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from curation.errors import DatabaseError, SkinflowError
from curation.store import audit
from curation.store.auth import Actor, require
from curation.store.db import Workbench, alembic_config, open_workbench
from curation.store.files import sweep_leftovers, sweep_store
from curation.store.images import FolderImageStore, open_image_store
from curation.store.models import Image
from curation.store.sessions import revoke_all_sessions
from schema.files import TEMP_PREFIX, write_atomic


def _sqlite_copy(source: str, destination: Path) -> None:
    """A consistent copy of a SQLite database (the online backup API), even while others write to it."""
    src = sqlite3.connect(source, uri=source.startswith("file:"))
    dst = sqlite3.connect(destination)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


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
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = wb.settings.backup_dir / f"skinflow-{stamp}.db"
    out = Path(out)
    if out.exists():
        raise DatabaseError(f"{out} exists already; choose another file name")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = out.with_name(out.name + ".partial")
    partial.touch(mode=0o600)  # a backup holds what the database holds: owner-only from its first byte
    _sqlite_copy(str(source), partial)
    partial.replace(out)
    with wb.session() as s:  # the image manifest: which stored files this database refers to, and their hashes
        images = [
            {"id": i, "file_path": f, "sha256": h}
            for i, f, h in s.execute(
                select(Image.id, Image.file_path, Image.sha256).where(Image.file_path.is_not(None)).order_by(Image.id)
            )
        ]
        audit.record(s, actor, "database.backup", "database", None, path=str(out), images=len(images))
    write_atomic(manifest_path(out), json.dumps({"database": out.name, "images": images}, indent=1) + "\n")
    return out


def manifest_path(backup_file: Path) -> Path:
    return backup_file.with_name(backup_file.name + ".images.json")


@dataclass
class RestoreReport:
    restored_from: Path
    previous_copy: Path
    images: int = 0
    missing_images: list[str] = field(default_factory=list)
    sessions_ended: int = 0  # login sessions the backup held open: every browser logs in again


APP_LOCK = ".app.lock"
# pg_advisory_lock's key for "an app server serves this database" (any fixed 64-bit number; this one spells "skinflow")
PG_APP_LOCK_KEY = 0x736B696E666C6F77
_held: list = []  # the PostgreSQL connection holding the advisory lock: alive as long as this process


def app_lock_path(settings) -> Path:
    """The app server's lock file. It belongs to the database, not to the home: beside the SQLite file, so a
    second home pointing at the same file (SKINFLOW_DATABASE_URL) sees the running app and cannot restore under
    it; in the home for a server database (which also takes an advisory lock: hold_app_lock)."""
    db = settings.db_path
    if db is None:
        return settings.home / APP_LOCK
    db = db.resolve()
    return db.with_name(db.name + ".app-lock")


def hold_app_lock(settings) -> int:
    """Mark this process as the app server of the database until it ends: an exclusive lock on app_lock_path
    (released by the system when the process dies, so never stale), with the pid inside; on PostgreSQL also a
    shared session advisory lock on a connection kept open. Both are inheritable, so they survive the exec into
    Streamlit. Refuses a second app on the same SQLite file or in the same home; several app servers, each with its
    own home, serve one PostgreSQL database."""
    path = app_lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SkinflowError(f"the app already runs for this database (pid {pid}); open it, or stop it first") from None
    if settings.db_path is None:
        _hold_server_lock(settings, fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def _hold_server_lock(settings, fd: int) -> None:
    import psycopg

    url = settings.db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    connection = psycopg.connect(url, autocommit=True)
    # shared: any number of app servers serve one PostgreSQL database (docs/deploy.md); what must run alone
    # takes the exclusive lock on the same key, which waits for every server to stop
    if not connection.execute("SELECT pg_try_advisory_lock_shared(%s)", (PG_APP_LOCK_KEY,)).fetchone()[0]:
        connection.close()
        os.close(fd)
        raise SkinflowError("a maintenance command holds this database alone; start the app when it is done")
    os.set_inheritable(connection.fileno(), True)  # the server keeps the lock while the socket stays open
    _held.append(connection)


def running_app_pid(settings) -> int | None:
    """The pid of the app server holding this database's lock, or None when no app runs."""
    path = app_lock_path(settings)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def restore(settings, backup_file: Path, actor: Actor) -> RestoreReport:
    """Replace the workbench database with a backup. Stop the app and other skinflow processes first.
    The backup is checked (SQLite, integrity, a skinflow schema) before anything changes; the current
    database is kept beside it as <db>.before-restore-<time>; images the backup's manifest lists but the
    store lacks are reported (copy images/ back from your file backup). The restored database is migrated to
    this version and the restore is audited in it."""
    require(actor, "admin", "restore the database")
    backup_file = Path(backup_file)
    if (pid := running_app_pid(settings)) is not None:
        raise DatabaseError(
            f"the app is running on this database (pid {pid}): stop it first (Ctrl-C, or kill {pid}), then restore"
        )
    if not backup_file.is_file():
        raise DatabaseError(f"backup file {backup_file} does not exist")
    try:
        check = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            integrity = check.execute("PRAGMA integrity_check").fetchone()[0]
            revision = check.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            check.close()
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"{backup_file} is not a skinflow SQLite backup ({e}); nothing was changed") from None
    if integrity != "ok" or revision is None:
        raise DatabaseError(f"{backup_file} fails the integrity check ({integrity}); nothing was changed")
    url = settings.db_url
    if not url.startswith("sqlite:///"):
        raise DatabaseError("restore works on SQLite databases; for PostgreSQL use pg_restore")
    target = Path(url.removeprefix("sqlite:///"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    previous = target.with_name(f"{target.name}.before-restore-{stamp}")
    if target.exists():
        _sqlite_copy(str(target), previous)  # a consistent copy of the current state, WAL included
    staging = target.with_name(target.name + ".restoring")
    _sqlite_copy(f"file:{backup_file}?mode=ro", staging)
    for suffix in ("-wal", "-shm"):  # the old database's journal must not be replayed onto the restored one
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    staging.replace(target)
    report = RestoreReport(backup_file, previous)
    wb = open_workbench(settings)  # runs the migrations a backup from an older version needs
    try:
        with wb.session() as session:
            report.sessions_ended = revoke_all_sessions(session)  # logins, logouts since the backup: all end
            # by name: the restored database may number its accounts differently
            audit.record(
                session,
                None,
                "database.restore",
                "database",
                None,
                source=str(backup_file),
                by=actor.username,
                sessions_ended=report.sessions_ended,
            )
    finally:
        wb.close()
    if manifest_path(backup_file).exists():
        listed = json.loads(manifest_path(backup_file).read_text(encoding="utf-8"))["images"]
        report.images = len(listed)
        store = open_image_store(settings.image_store, settings.store_dir, settings.home / "cache" / "images")
        present = {o.key for o in store.objects()}  # a bucket's listing, or the folder's
        report.missing_images = [i["file_path"] for i in listed if i["file_path"] not in present]
    return report


@dataclass
class DoctorReport:
    integrity: str = "not checked"
    revision: str | None = None
    head: str | None = None
    images_checked: int = 0
    missing_files: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    leftover_temp_files: list[str] = field(default_factory=list)
    loose_permissions: list[str] = field(default_factory=list)  # readable or writable by other accounts

    @property
    def problems(self) -> list[str]:
        out = []
        if self.integrity != "ok":
            out.append(f"database integrity check: {self.integrity}")
        if self.revision != self.head:
            out.append(
                f"database at migration {self.revision}, code expects {self.head}: back it up (`skinflow backup`), "
                "then run `skinflow init`, which upgrades it"
            )
        if self.missing_files:
            out.append(
                f"{len(self.missing_files)} image files missing from the store: copy images/ back from where it was "
                "backed up, or import the source again: a file already known adds no row and puts its missing picture back"
            )
        if self.orphan_files:
            out.append(
                f"{len(self.orphan_files)} files in the store belong to no image (left by an interrupted import): "
                "harmless; `skinflow doctor --fix` (a folder) or `skinflow images gc` (any store) removes them"
            )
        if self.leftover_temp_files:
            out.append(
                f"{len(self.leftover_temp_files)} temporary files left by an interrupted write: the next import "
                "or `skinflow doctor --fix` removes them"
            )
        if self.loose_permissions:
            out.append(
                f"{len(self.loose_permissions)} files or folders of the workbench are open to other accounts on this "
                f"machine (e.g. {self.loose_permissions[0]}): the database holds password hashes and the audit log, "
                "the store patient pictures; `skinflow doctor --fix` makes them owner-only (folders 0700, files 0600)"
            )
        return out

    @property
    def fixable(self) -> bool:
        return bool(self.orphan_files or self.leftover_temp_files or self.loose_permissions)


# An orphan younger than this may be an import's file whose row is not committed yet: left alone.
ORPHAN_MIN_AGE_S = 3600


def fix_store(wb: Workbench, actor: Actor, report: DoctorReport) -> int:
    """Delete what `doctor` found that no image uses: temp files and folders of killed writers and orphans
    older than an hour (never a file an image row points at), and make what it found open to other accounts
    owner-only. Returns how many files went (the permission changes are in the audit event)."""
    require(actor, "admin", "clean the image store")
    removed = sweep_store(wb.store_dir) + sweep_leftovers(wb.settings.home.glob(f"{TEMP_PREFIX}*"), TEMP_PREFIX)
    tightened = 0
    for relative in report.loose_permissions:
        path = wb.settings.home / relative if relative != "." else wb.settings.home
        if path.exists() and not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)
            tightened += 1
    now = time.time()
    with wb.session() as s:
        referenced = {path for (path,) in s.execute(select(Image.file_path).where(Image.file_path.is_not(None)))}
    for relative in report.orphan_files:
        path = wb.store_dir / relative
        if relative in referenced or not path.is_file() or now - path.stat().st_mtime < ORPHAN_MIN_AGE_S:
            continue
        path.unlink()
        removed += 1
    with wb.session() as s:
        audit.record(s, actor, "store.fix", "image_store", None, removed=removed, tightened=tightened)
    return removed


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
    if isinstance(wb.images, FolderImageStore):
        _check_store_folder(wb.store_dir, referenced, report)
    else:  # a bucket: its listing, one request per 1,000 pictures
        listed = {o.key for o in wb.images.objects()}
        report.missing_files = sorted(referenced - listed)
        report.orphan_files = sorted(listed - referenced)  # `skinflow images gc` removes them after its grace period
    # working folders of killed commands (e.g. `skinflow suggest`) beside the database
    report.leftover_temp_files += sorted(p.name for p in wb.settings.home.glob(f"{TEMP_PREFIX}*"))
    report.loose_permissions = loose_permissions(wb.settings.home)
    return report


def _check_store_folder(store: Path, referenced: set[str], report: DoctorReport) -> None:
    report.missing_files = sorted(p for p in referenced if not (store / p).is_file())
    for path in sorted(store.rglob("*")) if store.exists() else []:
        if not path.is_file():
            continue
        relative = str(path.relative_to(store))
        if path.name.startswith(TEMP_PREFIX):
            report.leftover_temp_files.append(relative)
        elif relative not in referenced:
            report.orphan_files.append(relative)


def loose_permissions(home: Path) -> list[str]:
    """Paths under the workbench folder (itself included, as ".") that other accounts may read or write.
    Links are not followed (a link's own mode means nothing)."""
    loose = []
    for folder, dirs, files in os.walk(home):
        for name in [".", *dirs, *files] if folder == str(home) else [*dirs, *files]:
            path = Path(folder) / name if name != "." else home
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                loose.append("." if path == home else str(path.relative_to(home)))
    return sorted(loose)
