"""The real console script, run as a user would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import jpeg_bytes, photo, write

SKINFLOW = str(Path(sys.executable).with_name("skinflow"))


def run(home, *args, check=True):
    env = {**os.environ, "SKINFLOW_HOME": str(home)}
    env.pop("SKINFLOW_USER", None)
    result = subprocess.run([SKINFLOW, *args], capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"skinflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("command", [[], ["init"], ["import"], ["fetch-images"], ["demo"], ["status"], ["export"],
                                     ["users"], ["users", "add"], ["users", "list"], ["users", "set-role"],
                                     ["users", "set-password"], ["backup"], ["doctor"]])
def test_every_command_has_help(tmp_path, command):
    result = run(tmp_path, *command, "--help")
    assert "Usage:" in result.stdout


def test_import_status_export_walkthrough(tmp_path):
    home = tmp_path / "wb"
    write(tmp_path / "derm" / "a.jpg", jpeg_bytes(photo(1)))
    write(tmp_path / "derm" / "nested" / "b.jpg", jpeg_bytes(photo(2)))
    write(tmp_path / "derm" / "broken.jpg", b"nope")
    first = run(home, "import", str(tmp_path / "derm"))
    assert "admin" in first.stdout and "passwords are shown once" in first.stdout  # first admin created, password shown once
    assert "broken.jpg: not a readable image" in first.stdout
    second = run(home, "import", str(tmp_path / "derm"))
    assert "passwords" not in second.stdout
    status = json.loads(run(home, "status", "--json").stdout)
    assert status["images"] == 2 and status["by_status"] == {"pending": 2}
    export = run(home, "export", "--out", str(tmp_path / "exp"), check=False)
    assert export.returncode == 2 and export.stderr.startswith("error: nothing to export")
    assert "Traceback" not in export.stderr


def test_demo_then_export_then_errors_are_one_line(tmp_path):
    home = tmp_path / "demo"
    demo = run(home, "demo", "--n", "12")
    assert all(name in demo.stdout for name in ("admin", "reviewer", "annotator"))
    run(home, "export", "--out", str(tmp_path / "v1"))
    assert (tmp_path / "v1" / "manifest.json").exists()
    again = run(home, "export", "--out", str(tmp_path / "v1"), check=False)
    assert again.returncode == 2 and again.stderr.count("\n") <= 2 and "pick a new folder" in again.stderr
    bad_user = run(home, "--user", "ghost", "status", check=False)
    assert bad_user.returncode == 0  # status needs no account
    bad_user = run(home, "--user", "ghost", "doctor", check=False)
    assert bad_user.returncode == 2 and "no active user 'ghost'" in bad_user.stderr
    as_annotator = run(home, "--user", "annotator", "export", "--out", str(tmp_path / "v9"), check=False)
    assert as_annotator.returncode == 2 and "needs the admin role" in as_annotator.stderr
    run(home, "users", "add", "drsmith", "--role", "reviewer")
    listing = run(home, "users", "list").stdout
    assert "drsmith" in listing and "reviewer" in listing
    assert run(home, "doctor").returncode == 0
    assert "backup written" in run(home, "backup").stdout
    run(home, "users", "add", "chief", "--role", "admin")
    ambiguous = run(home, "doctor", check=False)
    assert ambiguous.returncode == 2 and "cannot tell who acts (admins: admin, chief)" in ambiguous.stderr
    assert run(home, "--user", "chief", "doctor").returncode == 0


def test_bad_settings_are_one_line_errors(tmp_path):
    env_home = tmp_path / "h"
    result = subprocess.run([SKINFLOW, "status"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SKINFLOW_HOME": str(env_home), "SKINFLOW_MAX_IMAGE_MB": "many"})
    assert result.returncode == 2 and result.stderr.startswith("error: invalid settings") and "Traceback" not in result.stderr
