"""Running `skinflow app` for a real browser: Debian chromium's path and flags, a free port, the server.
Shared by the browser tests (tests/conftest.py's `running_app`) and benchmarks/browser.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def demo_workbench(home: Path):
    """Six demo images, nothing annotated, no gold questions; the annotator's password is browser-pass-1."""
    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor, set_password
    from curation.store.db import open_workbench
    from curation.store.settings import Settings
    from curation.store.workflow import update_workflow_settings

    wb = open_workbench(Settings.load(environ={}, home=home))
    build_demo(wb, None, n=6, seed=0, verified_fraction=0.0, annotated_fraction=0.0)
    set_password(wb, get_actor(wb, "admin"), "annotator", "browser-pass-1")
    update_workflow_settings(wb, get_actor(wb, "admin"), gold_rate=0.0)
    return wb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(home: Path, port: int, cwd: Path | None = None, env: dict[str, str] | None = None):
    """`skinflow app` on 127.0.0.1:port (started in `cwd`, where Streamlit looks for .streamlit/secrets.toml), with
    `env` added to its environment."""
    env = {**os.environ, "SKINFLOW_HOME": str(home), **(env or {})}
    skinflow = str(Path(sys.executable).with_name("skinflow"))
    process = subprocess.Popen(
        [skinflow, "app", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the app did not come up within 60 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # skinflow app and the streamlit child it started
        process.wait(timeout=20)


@contextlib.contextmanager
def chromium():
    """Debian's chromium, headless, driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


# A bound on waiting for the app's first page: a cold server on a machine busy with other jobs took over 30 s. The
# waits are on conditions (the field is there), so a quiet machine does not wait for it.
FIRST_PAGE_MS = 120_000


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url, wait_until="networkidle")
    page.get_by_label("Username").wait_for(timeout=FIRST_PAGE_MS)
    page.get_by_label("Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Annotate").wait_for(timeout=FIRST_PAGE_MS)


def settled(page) -> None:
    """The page has drawn what the last change asked for: no element is marked stale (a rerun is not in flight)."""
    page.wait_for_function("!document.querySelector(\"[data-stale='true']\")", timeout=60_000)


def image_on_screen(page) -> int:
    caption = page.get_by_text(re.compile(r"^image #\d+, \d+x\d+$")).first.inner_text()
    return int(caption.split("#")[1].split(",")[0])


def chips(page, label: str) -> list[str]:
    """The terms chosen in the multiselect labelled `label`, as their chips read."""
    return page.get_by_test_id("stMultiSelect").filter(has_text=label).locator("[data-tag]").all_inner_texts()


def form_ready(page) -> None:
    """The Annotate form is on screen with its fields live (a person waits for the page to settle too)."""
    page.locator(".st-key-kbd-fields [data-testid='stMultiSelect'] input").first.wait_for(state="attached", timeout=60_000)
    settled(page)


def correct_to_psoriasis_and_submit(page, image_id: int, timeout_ms: int = 30_000) -> None:
    """Choose Correct, find Psoriasis in the diagnosis search by typing, submit, and wait for the status line to
    say the annotation of `image_id` was saved: what a dermatologist correcting the label does."""
    page.get_by_test_id("stRadio").filter(has_text="Diagnosis").get_by_text("Correct", exact=True).click()
    diagnosis = page.get_by_test_id("stSelectbox").filter(has_text="Diagnosis (search")
    diagnosis.wait_for(timeout=15_000)
    diagnosis.click()
    page.keyboard.type("psoriasis")
    page.get_by_role("option", name="Psoriasis — inflammatory / non-neoplastic", exact=True).click()
    settled(page)
    page.get_by_role("button", name="Submit").click()
    page.get_by_text(f"Saved annotation of image #{image_id}").wait_for(timeout=timeout_ms)
