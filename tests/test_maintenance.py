import sqlite3

from curation.demo import build_demo
from curation.auth import get_actor
from curation.maintenance import backup, doctor


def test_backup_is_a_complete_consistent_copy(wb, tmp_path):
    build_demo(wb, None, n=8, seed=0)
    admin = get_actor(wb, "admin")
    path = backup(wb, admin, tmp_path / "b.db")
    copy = sqlite3.connect(path)
    live = sqlite3.connect(wb.engine.url.database)
    for table in ("images", "drafts", "annotations", "users"):
        assert copy.execute(f"SELECT count(*) FROM {table}").fetchone() == live.execute(f"SELECT count(*) FROM {table}").fetchone()
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
