import json
import sqlite3

import pytest

from curation.ops.demo import build_demo
from curation.ops.maintenance import backup, doctor
from curation.store.auth import get_actor
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.mark.sqlite_only
def test_backup_is_a_complete_consistent_copy(wb, tmp_path):
    build_demo(wb, None, n=8, seed=0)
    admin = get_actor(wb, "admin")
    path = backup(wb, admin, tmp_path / "b.db")
    copy = sqlite3.connect(path)
    live = sqlite3.connect(wb.engine.url.database)
    for table in ("images", "drafts", "annotations", "users"):
        assert (
            copy.execute(f"SELECT count(*) FROM {table}").fetchone() == live.execute(f"SELECT count(*) FROM {table}").fetchone()
        )
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not (tmp_path / "b.db.partial").exists()


def test_doctor_finds_missing_orphan_and_temp_files(wb, tmp_path):
    build_demo(wb, None, n=4, seed=0)
    admin = get_actor(wb, "admin")
    healthy = doctor(wb, admin)
    assert healthy.problems == [] and healthy.images_checked == 4
    stored = sorted(p for p in wb.store_dir.rglob("*.jpg"))
    stored[0].unlink()
    (wb.store_dir / "zz").mkdir()
    (wb.store_dir / "zz" / "stray.jpg").write_bytes(b"x")
    (wb.store_dir / "zz" / ".tmp-123.jpg").write_bytes(b"x")
    report = doctor(wb, admin)
    assert report.missing_files == [str(stored[0].relative_to(wb.store_dir))]
    assert report.orphan_files == ["zz/stray.jpg"] and report.leftover_temp_files == ["zz/.tmp-123.jpg"]
    assert len(report.problems) == 3


def test_doctor_fix_removes_old_orphans_and_dead_temp_files_but_never_a_used_image(wb, tmp_path):
    import os

    from curation.ops.maintenance import ORPHAN_MIN_AGE_S, fix_store

    build_demo(wb, None, n=4, seed=0)
    admin = get_actor(wb, "admin")
    used = sorted(wb.store_dir.rglob("*.jpg"))
    (wb.store_dir / "zz").mkdir()
    old_orphan, new_orphan = wb.store_dir / "zz" / "old.jpg", wb.store_dir / "zz" / "new.jpg"
    dead_temp = wb.store_dir / "zz" / ".tmp-unknown-host-1-abcd.jpg"
    for path in (old_orphan, new_orphan, dead_temp):
        path.write_bytes(b"x")
    past = old_orphan.stat().st_mtime - ORPHAN_MIN_AGE_S - 60
    for path in (old_orphan, dead_temp, *used):  # old used images must survive too
        os.utime(path, (past - 86400, past - 86400))
    import socket

    from schema.files import TEMP_PREFIX, temp_owner_tag

    killed_suggest = wb.settings.home / f"{TEMP_PREFIX}{socket.gethostname()}-999999-suggestabc"  # a dead pid's folder
    live_suggest = wb.settings.home / f"{TEMP_PREFIX}{temp_owner_tag()}suggestdef"  # this process: still working
    for folder in (killed_suggest, live_suggest):
        folder.mkdir()
        (folder / "predictions.jsonl").write_text("{}")
    report = doctor(wb, admin)
    assert report.fixable and sorted(report.orphan_files) == ["zz/new.jpg", "zz/old.jpg"]
    assert {killed_suggest.name, live_suggest.name} <= set(report.leftover_temp_files)
    assert fix_store(wb, admin, report) == 3
    assert not old_orphan.exists() and not dead_temp.exists() and new_orphan.exists()
    assert not killed_suggest.exists() and live_suggest.exists()
    assert all(path.exists() for path in used)
    assert doctor(wb, admin).orphan_files == ["zz/new.jpg"]


@pytest.mark.sqlite_only
def test_backup_and_restore_round_trip(wb, admin, tmp_path):
    from sqlalchemy import func, select

    from curation.errors import DatabaseError
    from curation.ingest import import_path
    from curation.ops.maintenance import backup, manifest_path, restore
    from curation.store.auth import add_user, list_users
    from curation.store.db import open_workbench
    from curation.store.models import AuditEvent, Image
    from curation.store.sessions import close_session, open_session, resume_session
    from tests.helpers import jpeg_bytes, photo, write

    import_path(wb, admin, write(tmp_path / "in" / "a.jpg", jpeg_bytes(photo(1))))
    token, _ = open_session(wb, admin, 60)  # open in the backup...
    saved = backup(wb, admin, tmp_path / "b" / "state.db")
    close_session(wb, token)  # ...then a logout: the restore must not bring the cookie back
    assert resume_session(wb, token) is None
    listed = json.loads(manifest_path(saved).read_text())["images"]
    assert len(listed) == 1 and len(listed[0]["sha256"]) == 64
    add_user(wb, admin, "later", "annotator")  # after the backup: the restore must undo it
    with wb.session() as s:
        stored = s.scalar(select(Image.file_path))
    settings = wb.settings
    wb.close()
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"not a database at all")
    with pytest.raises(DatabaseError, match="nothing was changed"):
        restore(settings, not_a_db, admin)
    (settings.store_dir / stored).unlink()  # a lost image file is reported
    report = restore(settings, saved, admin)
    assert report.previous_copy.exists() and report.missing_images == [stored]
    again = open_workbench(settings)
    try:
        assert "later" not in [u["username"] for u in list_users(again, admin)]
        assert resume_session(again, token) is None  # revoked, not revived by the restore
        assert report.sessions_ended == 1
        with again.session() as s:
            assert s.scalar(select(func.count(Image.id))) == 1
            restored = s.scalars(select(AuditEvent).where(AuditEvent.action == "database.restore")).all()
            assert [e.payload["source"] for e in restored] == [str(saved)]  # audited in the database it restored
    finally:
        again.close()
    previous = open_workbench(
        type(settings).load(environ={}, home=tmp_path / "peek", database_url=f"sqlite:///{report.previous_copy}")
    )
    try:
        assert "later" in [u["username"] for u in list_users(previous, admin)]  # the replaced state is kept
    finally:
        previous.close()


@pytest.mark.skipif(not ON_POSTGRES, reason="needs SKINFLOW_TEST_DATABASE_URL (make test-postgres)")
def test_on_postgresql_backup_and_restore_point_at_pg_dump(wb, admin, tmp_path):
    from curation.errors import DatabaseError

    with pytest.raises(DatabaseError, match="pg_dump"):
        backup(wb, admin, tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()
    report = doctor(wb, admin)
    assert report.integrity == "ok" and report.revision == report.head and report.problems == []


def test_the_app_lock_is_the_databases_not_the_homes(wb, admin, tmp_path):
    """Two homes on one SQLite file: the second app is refused (the lock beside the file), and so is a restore
    under the first. On PostgreSQL several app servers, each in its own home, serve one database (a shared
    advisory lock): the second is let in, and a second app in the same home is still refused."""
    import os

    from curation.errors import DatabaseError, SkinflowError
    from curation.ops import maintenance
    from curation.store.settings import Settings

    def release(fd: int) -> None:
        os.close(fd)
        for connection in maintenance._held:  # the advisory lock's connection (PostgreSQL)
            connection.close()
        maintenance._held.clear()

    other = Settings.load(environ={}, home=tmp_path / "other-home", database_url=wb.settings.db_url)
    fd = maintenance.hold_app_lock(wb.settings)
    try:
        if other.db_path is None:
            second = maintenance.hold_app_lock(other)  # a second server on the same PostgreSQL database: let in
            os.close(second)
            maintenance._held.pop().close()  # (its lock; the first server's stays held)
            other = Settings.load(environ={}, home=wb.settings.home, database_url=wb.settings.db_url)  # one home twice
        with pytest.raises(SkinflowError, match="already runs for this database"):
            maintenance.hold_app_lock(other)
        if other.db_path is not None:
            assert maintenance.running_app_pid(other) == os.getpid()
            with pytest.raises(DatabaseError, match=f"the app is running on this database \\(pid {os.getpid()}\\)"):
                maintenance.restore(other, tmp_path / "any-backup.db", admin)
    finally:
        release(fd)
    release(maintenance.hold_app_lock(other))  # free again once the first app is gone
