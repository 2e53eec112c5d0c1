"""The real console script, run as a user would run it: one module, since each test is a command line a person types
and the list of every command (HELP_COMMANDS) is checked against the CLI's whole tree."""

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


# every command and group; tests/test_single_source.py checks that this list is the CLI's whole tree
HELP_COMMANDS = [
    [],
    ["init"],
    ["import"],
    ["fetch-images"],
    ["demo"],
    ["status"],
    ["vocabulary"],
    ["export"],
    ["export", "verify"],
    ["users"],
    ["users", "add"],
    ["users", "list"],
    ["users", "set-role"],
    ["users", "set-password"],
    ["users", "set-email"],
    ["users", "unlock"],
    ["ls"],
    ["ls", "push"],
    ["ls", "pull"],
    ["backup"],
    ["doctor"],
    ["images"],
    ["images", "verify"],
    ["images", "gc"],
    ["images", "migrate"],
    ["draft"],
    ["reasonings"],
    ["weights"],
    ["app"],
    ["train"],
    ["predict"],
    ["suggest"],
    ["eval"],
    ["restore"],
    ["ablate"],
    ["sources"],
    ["verify"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS)
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
    result = subprocess.run(
        [SKINFLOW, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SKINFLOW_HOME": str(env_home), "SKINFLOW_MAX_IMAGE_MB": "many"},
    )
    assert result.returncode == 2 and result.stderr.startswith("error: invalid settings") and "Traceback" not in result.stderr


def test_draft_reasonings_and_weights_commands(tmp_path):
    from tests.fake_llm import FakeLLM

    home = tmp_path / "wb"
    run(home, "demo", "--n", "8")
    with FakeLLM() as server:
        env = {
            **os.environ,
            "SKINFLOW_HOME": str(home),
            "SKINFLOW_LLM_BASE_URL": server.url,
            "SKINFLOW_LLM_MODEL": "fake-vlm",
            "SKINFLOW_LLM_API_KEY": "sk-cli-secret-value",
        }
        drafted = subprocess.run([SKINFLOW, "draft", "--concurrency", "4"], capture_output=True, text=True, env=env, timeout=120)
        assert drafted.returncode == 0 and "drafted 8 of 8 images" in drafted.stdout, drafted.stderr
        again = subprocess.run([SKINFLOW, "draft"], capture_output=True, text=True, env=env, timeout=120)
        assert "drafted 0 of 0 images" in again.stdout
        reasoned = subprocess.run([SKINFLOW, "reasonings"], capture_output=True, text=True, env=env, timeout=120)
        assert reasoned.returncode == 0 and "stored" in reasoned.stdout
        weighed = subprocess.run([SKINFLOW, "weights", "--source", "llm"], capture_output=True, text=True, env=env, timeout=120)
        assert weighed.returncode == 0 and "weights-v1" in weighed.stdout and "(active)" in weighed.stdout
        assert "sk-cli-secret-value" not in drafted.stdout + drafted.stderr + reasoned.stdout + weighed.stdout
    no_model = run(home, "draft", check=False)
    assert no_model.returncode == 2 and "SKINFLOW_LLM_MODEL" in no_model.stderr


def test_export_formats_filters_and_verify(tmp_path):
    home = tmp_path / "wb"
    run(home, "demo", "--n", "30")
    done = run(
        home,
        "export",
        "--out",
        str(tmp_path / "v1"),
        "--format",
        "grpo,csv",
        "--format",
        "sharegpt",
        "--holdout-labels",
        "melanoma",
        "--group",
        "malignant,benign",
    )
    assert "exported" in done.stdout and (tmp_path / "v1" / "grpo" / "stage1.jsonl").exists()
    assert (tmp_path / "v1" / "records.csv").exists() and (tmp_path / "v1" / "sharegpt.json").exists()
    assert "every file matches" in run(home, "export", "verify", str(tmp_path / "v1")).stdout
    (tmp_path / "v1" / "records.csv").write_text("changed")
    tampered = run(home, "export", "verify", str(tmp_path / "v1"), check=False)
    assert tampered.returncode == 1 and "changed: records.csv" in tampered.stdout
    bad = run(home, "export", "--out", str(tmp_path / "v2"), "--label", "dragon pox", check=False)
    assert bad.returncode == 2 and "not in the taxonomy" in bad.stderr and not (tmp_path / "v2").exists()
    missing = run(home, "export", check=False)
    assert missing.returncode == 2 and "--out" in missing.stderr


def test_train_and_predict_refuse_bad_input_in_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    result = run(tmp_path, "train", "--export", str(tmp_path / "plain"), "--runs", str(tmp_path / "runs"), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "is not a grpo export" in result.stderr and "--format grpo" in result.stderr
    result = run(tmp_path, "train", "--export", str(tmp_path / "plain"), "--preset", "huge", check=False)
    assert result.returncode == 2 and "unknown preset 'huge'" in result.stderr
    result = run(tmp_path, "train", "--preset", "tiny", check=False)
    assert result.returncode == 2 and "give --export FOLDER" in result.stderr and "--plan" in result.stderr
    import torch

    if not torch.cuda.is_available():  # without a GPU to read the size from, --plan asks for one
        result = run(tmp_path, "train", "--plan", "--preset", "qwen2.5-vl-7b-lora", check=False)
        assert result.returncode == 2 and "--gpu-memory-gb" in result.stderr
    result = run(
        tmp_path, "predict", "--checkpoint", str(tmp_path / "plain"), "--images", "x.jsonl", "--out", "p.jsonl", check=False
    )
    assert result.returncode == 2 and "not a checkpoint folder" in result.stderr
    assert not (tmp_path / "runs").exists()


def _mode(path):
    return path.stat().st_mode & 0o777


def test_the_workbench_is_owner_only_and_doctor_repairs_looser_modes(tmp_path):
    home = tmp_path / "wb"
    write(tmp_path / "derm" / "a.jpg", jpeg_bytes(photo(1)))
    run(home, "import", str(tmp_path / "derm"))
    run(home, "backup", "--out", str(home / "backups" / "b.db"))
    run(home, "demo", "--n", "6")
    run(home, "export", "--out", str(home / "exports" / "v1"), "--include-unverified")
    assert _mode(home) == 0o700 and _mode(home / "skinflow.db") == 0o600
    assert _mode(home / "backups" / "b.db") == 0o600 and _mode(home / "backups") == 0o700
    stored = next((home / "images").rglob("*.jpg"))
    assert _mode(stored) == 0o600 and _mode(stored.parent) == 0o700 and _mode(home / "images") == 0o700
    exported = home / "exports" / "v1"
    assert _mode(exported) == 0o700 and _mode(exported / "records.jsonl") == 0o600
    assert all(_mode(p) & 0o077 == 0 for p in home.rglob("*") if not p.is_symlink())  # nothing anywhere is open
    assert run(home, "doctor").returncode == 0

    (home / "skinflow.db").chmod(0o644)  # what an older SkinFlow (or a careless copy) left
    stored.parent.chmod(0o755)
    found = run(home, "doctor", check=False)
    assert found.returncode == 1 and "open to other accounts" in found.stderr
    fixed = run(home, "doctor", "--fix")
    assert "paths owner-only" in fixed.stdout and "no problems found" in fixed.stdout  # the db, its -wal/-shm, the folder
    assert _mode(home / "skinflow.db") == 0o600 and _mode(stored.parent) == 0o700
    assert all(_mode(p) & 0o077 == 0 for p in home.rglob("*") if not p.is_symlink())


def test_sigterm_stops_the_app_and_restore_refuses_while_it_runs(tmp_path):
    import signal
    import socket
    import time
    import urllib.request

    home = tmp_path / "wb"
    run(home, "init")
    backup = home / "backups" / "before.db"
    run(home, "backup", "--out", str(backup))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = f"http://127.0.0.1:{port}/_stcore/health"
    server = subprocess.Popen(
        [SKINFLOW, "app", "--port", str(port)],
        env={**os.environ, "SKINFLOW_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(health, timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not come up")
        refused = run(home, "restore", str(backup), check=False)
        assert refused.returncode == 2 and f"the app is running on this database (pid {server.pid})" in refused.stderr
        second = run(home, "app", "--port", str(port + 1), check=False)
        assert second.returncode == 2 and "already runs" in second.stderr
        # another home pointed at the same database file: the lock is the database's, not the home's
        other = {
            **os.environ,
            "SKINFLOW_HOME": str(tmp_path / "other"),
            "SKINFLOW_DATABASE_URL": f"sqlite:///{home / 'skinflow.db'}",
        }
        for args in (["restore", str(backup)], ["app", "--port", str(port + 2)]):
            result = subprocess.run([SKINFLOW, *args], capture_output=True, text=True, env=other, timeout=120)
            assert result.returncode == 2 and f"(pid {server.pid})" in result.stderr, result.stderr

        server.send_signal(signal.SIGTERM)  # what a supervisor sends to the pid it started
        assert server.wait(timeout=30) is not None
        with pytest.raises(OSError):
            urllib.request.urlopen(health, timeout=2)  # nothing is left serving the workbench
    finally:
        if server.poll() is None:
            server.kill()
    assert "restored" in run(home, "restore", str(backup)).stdout


def test_status_json_and_restore_check_the_role(tmp_path):
    home = tmp_path / "wb"
    run(home, "demo", "--n", "6")
    backup = home / "backups" / "b.db"
    run(home, "backup", "--out", str(backup))
    assert "images" in run(home, "--user", "annotator", "status").stdout  # the counts are for everyone
    denied = run(home, "--user", "annotator", "status", "--json", check=False)
    assert denied.returncode == 2 and "needs the reviewer role" in denied.stderr
    assert "insights" in json.loads(run(home, "--user", "reviewer", "status", "--json").stdout)
    refused = run(home, "--user", "reviewer", "restore", str(backup), check=False)
    assert refused.returncode == 2 and "needs the admin role" in refused.stderr
    assert not list(home.glob("skinflow.db.before-restore-*"))  # nothing was touched
    assert "restored" in run(home, "--user", "admin", "restore", str(backup)).stdout


def test_rich_markup_in_file_names_and_cells_is_printed_as_text(tmp_path):
    home = tmp_path / "wb"
    write(tmp_path / "derm" / "[/bold]broken[link=x].jpg", b"not an image")
    (tmp_path / "rows.csv").write_text("url,label\nhttps://example.org/a.jpg,[/red]psoriasis[bold]\n", encoding="utf-8")
    result = run(home, "import", str(tmp_path / "derm"), check=False)
    assert "Traceback" not in result.stderr and "[/bold]broken[link=x].jpg: not a readable image" in result.stdout
    csv_result = run(home, "import", str(tmp_path / "rows.csv"))
    assert "label '[/red]psoriasis[bold]' is not in the taxonomy" in csv_result.stdout


def test_passwords_come_from_a_file_or_stdin_never_from_a_flag(tmp_path):
    from curation.store.auth import authenticate
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    home = tmp_path / "wb"
    run(home, "init")
    assert "No such option: --password" in run(home, "users", "add", "alice", "--password", "visible-in-ps", check=False).stderr
    secret = tmp_path / "alice.txt"
    secret.write_text("alice-secret-pw\n")
    assert "user alice created" in run(home, "users", "add", "alice", "--password-file", str(secret)).stdout
    piped = subprocess.run(
        [SKINFLOW, "users", "set-password", "alice", "--password-file", "-"],
        input="from-stdin-pw\n",
        capture_output=True,
        text=True,
        env={**os.environ, "SKINFLOW_HOME": str(home)},
        timeout=120,
    )
    assert piped.returncode == 0 and "password of alice changed" in piped.stdout
    missing = run(home, "users", "set-password", "alice", "--password-file", str(tmp_path / "nope.txt"), check=False)
    assert missing.returncode == 2 and "cannot read the password file" in missing.stderr
    wb = open_workbench(Settings.load(environ={}, home=home))
    try:
        assert authenticate(wb, "alice", "from-stdin-pw").username == "alice"
    finally:
        wb.close()


def test_sources_reports_held_out_agreement_per_source_and_field(tmp_path):
    home = tmp_path / "wb"
    run(home, "demo", "--n", "20", "--verified-fraction", "0.5")
    doc = json.loads(run(home, "--user", "reviewer", "sources", "--json").stdout)
    synthetic = doc["sources"]["synthetic:skinflow-demo:1"]
    verified = doc["verified_images"]
    assert verified > 0 and synthetic["measures"]["color"]["n"] == verified
    assert 0.0 <= synthetic["measures"]["color"]["mean"] <= 1.0 and doc["measures"]["color"]["chosen"] is None  # n < 20
    table = run(home, "--user", "reviewer", "sources").stdout
    assert "synthetic:skinflow-demo:1" in table and "not enough evidence" in table
    assert "color: no source has 20 items yet: fallback order" in table  # how each measure was decided
    assert run(home, "--user", "annotator", "sources", check=False).returncode == 2


def test_users_unlock_lets_a_locked_account_log_in_at_once(tmp_path):
    from curation.store import auth
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    home = tmp_path / "wb"
    run(home, "init")
    password_file = tmp_path / "pw"
    password_file.write_text("kate-password-1\n")
    run(home, "users", "add", "kate", "--password-file", str(password_file))
    wb = open_workbench(Settings.load(environ={}, home=home))
    try:
        for n in range(auth.MAX_FAILED_LOGINS):
            with pytest.raises(auth.InvalidCredentials):
                auth.authenticate(wb, "kate", f"guess-{n}")
        with pytest.raises(auth.InvalidCredentials, match="skinflow users unlock kate"):
            auth.authenticate(wb, "kate", "kate-password-1")
        result = run(home, "users", "unlock", "kate")
        assert f"{auth.MAX_FAILED_LOGINS} failed login(s) forgotten" in result.stdout
        assert auth.authenticate(wb, "kate", "kate-password-1").username == "kate"
        refused = run(home, "--user", "kate", "users", "unlock", "kate", check=False)
        assert refused.returncode != 0 and "admin" in refused.stderr
    finally:
        wb.close()


@pytest.mark.parametrize("size", ["inf", "nan", "-1", "0"])
def test_train_plan_refuses_a_gpu_size_that_is_not_one(tmp_path, size):
    result = run(tmp_path / "wb", "train", "--plan", "--preset", "qwen2.5-vl-7b", "--gpu-memory-gb", size, check=False)
    assert result.returncode == 2 and "is not a GPU's size" in result.stderr, result.stderr


def test_train_and_ablate_take_a_relative_export_folder_as_absolute(tmp_path, monkeypatch):
    """The trainer reads the export again from elsewhere: a relative --export trained 44 s, then failed."""
    from typer.testing import CliRunner

    import trainer.ablate
    import trainer.train
    from app.cli import app

    seen = {}
    monkeypatch.setattr(trainer.train, "train", lambda config, resume=False: seen.update(train=config.export) or tmp_path)
    monkeypatch.setattr(trainer.ablate, "run_ablation", lambda config, **kw: seen.update(ablate=config.export))  # None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-export").mkdir()
    CliRunner().invoke(app, ["train", "--export", "my-export", "--preset", "tiny"])
    CliRunner().invoke(app, ["ablate", "--export", "my-export"])
    assert seen["train"] == str(tmp_path / "my-export")
    assert seen.get("ablate") == str(tmp_path / "my-export")


def test_images_verify_lists_a_missing_picture_and_exits_1(tmp_path):
    home = tmp_path / "wb"
    write(tmp_path / "in" / "a.jpg", jpeg_bytes(photo(1)))
    write(tmp_path / "in" / "b.jpg", jpeg_bytes(photo(2)))
    run(home, "import", str(tmp_path / "in"))
    assert "every picture is there and intact" in run(home, "images", "verify").stdout
    removed = sorted((home / "images").rglob("*.jpg"))[0]
    removed.unlink()
    result = run(home, "images", "verify", check=False)
    assert result.returncode == 1 and f"{removed.parent.name}/{removed.name}: missing" in result.stdout
    assert "1 missing, 0 corrupt" in result.stderr and "Traceback" not in result.stderr
