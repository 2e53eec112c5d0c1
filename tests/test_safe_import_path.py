"""The app and its background jobs run the installed code only, wherever they are started: a folder holding an
`app/`, `curation/`, `schema/`, `trainer/` or `streamlit/` package is never imported from (docs/security.md,
search-path hijack). The retrain and ablate jobs are checked the same way by the slow tests in test_runs.py."""

import os
import time
from pathlib import Path

import pytest

from curation.ops.runs import activate_run, run_dir, runs_dir
from curation.store.models import TrainingRun
from tests.browser_app import CHROMIUM, chromium, demo_workbench, free_port, log_in, serve


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium (apt-get install chromium)")
def test_the_app_started_in_a_folder_of_decoys_serves_our_code(tmp_path, decoys):
    home = tmp_path / "wb"
    wb = demo_workbench(home)
    decoys.plant(home)  # where the server runs now: its own folder is kept off the import path too
    try:
        with serve(home, free_port(), cwd=Path.cwd()) as url, chromium() as browser:
            page = browser.new_page()
            log_in(page, url, "annotator", "browser-pass-1")  # the real pages: the login worked, Annotate is open
            server = [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_streamlit_of(pid, url)]
            assert server and all(os.readlink(f"/proc/{pid}/cwd") == str(home.resolve()) for pid in server)
    finally:
        wb.close()
    assert decoys.imported() == []


def _is_streamlit_of(pid: str, url: str) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"app.ui.server" in command and url.rsplit(":", 1)[1].encode() in command  # the server `skinflow app` became


def test_the_activation_suggest_job_runs_our_code_wherever_it_is_started(wb, admin, decoys):
    with wb.session() as s:
        run = TrainingRun(preset="tiny", status="done", config={"kind": "train"})
        s.add(run)
        s.flush()
        run_id = run.id
    run_dir(wb, run_id).mkdir(parents=True)  # an empty checkpoint: the real `skinflow suggest` says so and ends
    decoys.plant(runs_dir(wb))  # the folder the job runs in
    pid = activate_run(wb, admin, run_id)
    deadline = time.monotonic() + 120
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = (runs_dir(wb) / f"run-{run_id}-suggest.log").read_text()
    assert "nothing to suggest" in log, log  # our CLI ran, and said what it says
    assert decoys.imported() == []


def test_paths_given_relative_to_the_caller_are_pinned_before_a_process_moves_to_the_workbench(tmp_path, monkeypatch):
    from curation.store.settings import Settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf.toml").write_text("")
    environ = {"SKINFLOW_HOME": "wb", "SKINFLOW_DATABASE_URL": "sqlite:///data/sf.db", "SKINFLOW_CONFIG": "conf.toml"}
    pinned = Settings.load(environ=environ, taxonomy_path=Path("tax.json")).child_environ(environ)
    assert pinned == {
        "SKINFLOW_HOME": str(tmp_path / "wb"),
        "SKINFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'sf.db'}",
        "SKINFLOW_TAXONOMY_PATH": str(tmp_path / "tax.json"),
        "SKINFLOW_CONFIG": str(tmp_path / "conf.toml"),
    }
    server = Settings.load(environ={"SKINFLOW_HOME": "wb", "SKINFLOW_DATABASE_URL": "postgresql://u@h/db"}).child_environ({})
    assert server == {"SKINFLOW_HOME": str(tmp_path / "wb")}  # a server's URL (and its password) is not copied
