"""SIGKILL in the middle of an import and of an export, then the same command again: it completes, with no
duplicate rows and no half-written files (work is staged and renamed into place)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import jpeg_bytes, photo

SKINFLOW = str(Path(sys.executable).with_name("skinflow"))
pytestmark = pytest.mark.slow


def start(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SKINFLOW_HOME": str(home)}
    env.pop("SKINFLOW_USER", None)
    return subprocess.Popen([SKINFLOW, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(process: subprocess.Popen, condition, timeout: float = 120) -> bool:
    """SIGKILL the process as soon as condition() holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    raise AssertionError("the condition never held")


def images_stored(home: Path) -> int:
    """Rows in images, read without opening a workbench (which would take part in the importer's start)."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{home / 'skinflow.db'}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute("SELECT count(*) FROM images").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_an_import_killed_midway_completes_on_rerun_without_duplicates(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(400):
        (folder / f"p{i:03d}.jpg").write_bytes(jpeg_bytes(photo(i, (320, 240)), camera=True))
    home = tmp_path / "wb"
    first = start(home, "import", str(folder))
    killed = kill_when(first, lambda: (home / "skinflow.db").exists() and 0 < images_stored(home) < 400)
    assert killed, "the import finished before it could be interrupted"
    rerun = start(home, "import", str(folder))
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read().decode()
    assert images_stored(home) == 400
    stored_files = [p for p in (home / "images").rglob("*") if p.is_file()]
    assert len(stored_files) == 400 and not [p for p in stored_files if p.name.endswith((".tmp", ".partial"))]


def test_an_export_killed_midway_completes_on_rerun(tmp_path):
    home = tmp_path / "wb"
    demo = start(home, "demo", "--n", "300", "--seed", "0")
    assert demo.wait(timeout=300) == 0, demo.stdout.read().decode()
    out = tmp_path / "exports" / "v1"
    first = start(home, "export", "--out", str(out), "--format", "hf,grpo")
    killed = kill_when(
        first, lambda: any(p.name.startswith(".v1.tmp-") for p in out.parent.glob(".*")) if out.parent.exists() else False
    )
    assert killed, "the export finished before it could be interrupted"
    assert not out.exists()  # nothing half-written under the real name
    rerun = start(home, "export", "--out", str(out), "--format", "hf,grpo")
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read().decode()
    verify = start(home, "export", "verify", str(out))
    assert verify.wait(timeout=120) == 0, verify.stdout.read().decode()


def drafts_stored(home: Path) -> tuple[int, int]:
    """(draft rows, distinct images drafted), read without opening a workbench."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{home / 'skinflow.db'}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute("SELECT count(*), count(DISTINCT image_id) FROM drafts WHERE kind = 'llm'").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return 0, 0


def test_a_drafting_run_killed_midway_completes_on_rerun_without_duplicates(tmp_path):
    from tests.fake_llm import FakeLLM

    folder = tmp_path / "cases"
    folder.mkdir()
    for case in range(80):
        (folder / f"case{case:02d}.jpg").write_bytes(jpeg_bytes(photo(case, (64, 48))))
    home = tmp_path / "wb"
    assert start(home, "import", str(folder)).wait(timeout=120) == 0
    with FakeLLM(latency_s=0.1) as server:
        os.environ.update(SKINFLOW_LLM_BASE_URL=server.url, SKINFLOW_LLM_MODEL="fake-vlm")
        try:
            first = start(home, "draft", "--concurrency", "4")
            assert kill_when(first, lambda: 0 < drafts_stored(home)[0] < 80), "the run finished before it could be interrupted"
            rows, images = drafts_stored(home)
            assert rows == images  # what was written is whole: one draft per image
            rerun = start(home, "draft", "--concurrency", "8")
            assert rerun.wait(timeout=120) == 0, rerun.stdout.read().decode()
        finally:
            os.environ.pop("SKINFLOW_LLM_BASE_URL", None)
            os.environ.pop("SKINFLOW_LLM_MODEL", None)
    assert drafts_stored(home) == (80, 80)  # the rerun drafted only the rest
