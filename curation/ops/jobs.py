"""Background jobs: our own code started as a detached process (training, ablation, suggestions, the app server),
with a safe import path, its output in a log; whether one is still alive; the end of its log."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

SAFE_ENV = {"PYTHONSAFEPATH": "1"}
_children: dict[int, subprocess.Popen] = {}  # processes this interpreter started (each reaped by its waiter thread)


def python_module(module: str) -> list[str]:
    """The command that runs `module` of the installed code with this interpreter. `-P` keeps the working
    directory off the import path: `python -m` puts it first, so started in a folder holding an `app/` or
    `curation/` package, the process imported that instead of ours (and ran it with the database and the LLM key).
    Children started with it also get PYTHONSAFEPATH=1 (SAFE_ENV), which their own Python children inherit."""
    return [sys.executable, "-P", "-m", module]


def spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a detached background job (its own session: closing the browser or restarting the app does not stop
    it), its output appended to `log_path`, in the folder that holds the log (the workbench's runs/, never the
    caller's folder: see python_module). A thread waits on it, so a job that ends is reaped at once and leaves
    no zombie behind in the app server however long the server lives (nothing else has to poll it)."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(log_path.parent),
            env={**os.environ, **SAFE_ENV, **(env or {})},
        )
    _children[process.pid] = process
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    return process


def is_alive(pid: int | None, marker: str) -> bool:
    """Is the process still running and still ours (pids are reused)?"""
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return marker in text and stat.split(") ")[-1][:1] != "Z"
    return True


def log_tail_of(path: str | None, lines: int = 20) -> list[str]:
    """The last lines of a log (only its end is read: logs of long runs grow large)."""
    if not path or not Path(path).exists():
        return []
    with Path(path).open("rb") as handle:
        handle.seek(max(0, Path(path).stat().st_size - 64_000))
        return handle.read().decode("utf-8", "replace").splitlines()[-lines:]
