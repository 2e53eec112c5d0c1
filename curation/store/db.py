"""The one session factory. `open_workbench(settings)` creates the folders, connects, upgrades the
database to the newest migration and hands back a Workbench that curation functions take.

SQLite gets WAL (readers never block the writer), foreign keys on, and a busy timeout so that
concurrent writers wait instead of failing with "database is locked".
"""

from __future__ import annotations

import fcntl
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from curation.errors import DatabaseError
from curation.store.images import ImageStore, open_image_store
from curation.store.models import VocabularyTerm
from curation.store.settings import Settings
from schema.files import owner_only
from schema.taxonomy import Taxonomy, default_taxonomy, load_taxonomy
from schema.vocabulary import use_local_terms

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: a crash loses at most the last commit
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    config = alembic_config(engine)
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and current not in known:
            raise DatabaseError(
                f"the database at {engine.url.render_as_string(hide_password=True)} is at migration {current!r}, which this "
                "version of SkinFlow does not know: it was written by a newer SkinFlow. Update the code (git pull && make "
                "install) "
                "or point SKINFLOW_HOME / SKINFLOW_DATABASE_URL at another workbench; nothing was changed."
            )
        command.upgrade(config, "head")
    except SQLAlchemyError as e:
        raise DatabaseError(
            f"cannot upgrade the database at {engine.url!r}: {e.__class__.__name__}: {e.args[0] if e.args else e}"
        ) from None


@dataclass
class Workbench:
    """Settings + engine + session factory: what every curation function needs."""

    settings: Settings
    engine: Engine

    @cached_property
    def sessionmaker(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def taxonomy(self) -> Taxonomy:
        path = self.settings.taxonomy_path
        return load_taxonomy(path) if path else default_taxonomy()

    @property
    def store_dir(self) -> Path:
        return self.settings.store_dir

    @cached_property
    def images(self) -> ImageStore:
        """Where the pictures are: the images/ folder, or the bucket SKINFLOW_IMAGE_STORE names."""
        return open_image_store(self.settings.image_store, self.settings.store_dir, self.settings.home / "cache" / "images")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def open_workbench(settings: Settings | None = None) -> Workbench:
    settings = settings or Settings.load()
    new_database = settings.db_path is not None and not settings.db_path.exists()
    owner_only()  # the database holds password hashes and the audit log, the store patient pictures
    try:
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise DatabaseError(
            f"cannot create the workbench folder {settings.home}: {e.strerror}; set SKINFLOW_HOME to a writable folder"
        ) from None
    engine = make_engine(settings.db_url)
    # Two processes opening a new workbench at once (the app and a CLI command) would both run the
    # migrations; a lock file in the workbench folder makes the second wait and find them done.
    with (settings.home / ".migrate.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            upgrade(engine)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if new_database:
        settings.db_path.chmod(0o600)  # SQLite gives its -wal and -shm files the database file's mode
    workbench = Workbench(settings, engine)
    load_local_terms(workbench)
    return workbench


def load_local_terms(wb: Workbench) -> None:
    """Make this process's vocabulary the packaged one plus the terms this workbench accepted (reviewers decide
    them in curation/labelling/vocabulary.py)."""
    with wb.session() as s:
        rows = s.execute(
            select(VocabularyTerm.field, VocabularyTerm.term, VocabularyTerm.synonyms).where(
                VocabularyTerm.decision == "accepted"
            )
        ).all()
    terms: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
    for field_key, term, synonyms in rows:
        terms[field_key].append((term, tuple(synonyms or ())))
    use_local_terms(dict(terms))
