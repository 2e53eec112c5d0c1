from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from curation.store.auth import add_user
from curation.store.db import open_workbench
from curation.store.settings import Settings

# Set (e.g. postgresql+psycopg://skinflow@127.0.0.1:5432/postgres) to run the database tests on a real
# PostgreSQL server: each test gets its own database, copied from a migrated template. `make test-postgres`.
TEST_DATABASE_URL = os.environ.get("SKINFLOW_TEST_DATABASE_URL")
ON_POSTGRES = bool(TEST_DATABASE_URL)
# the demo accounts' passwords in app tests (demo_home)
PASSWORDS = {"admin": "admin-pass-1", "reviewer": "reviewer-pass-1", "annotator": "annotator-pass-1"}


def _admin_engine():
    from sqlalchemy import create_engine

    return create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def _postgres_template():
    """A database migrated once to head; every test's database is a copy of it (CREATE DATABASE ... TEMPLATE)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from curation.store.db import make_engine, upgrade

    name = f"skinflow_template_{os.getpid()}"
    admin_engine = _admin_engine()
    with admin_engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False))
    upgrade(engine)
    engine.dispose()
    yield name
    with admin_engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin_engine.dispose()


@pytest.fixture
def database_url(request) -> Iterator[str | None]:
    """None (SQLite under the workbench folder), or the URL of a fresh PostgreSQL database."""
    if not ON_POSTGRES:
        yield None
        return
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    template = request.getfixturevalue("_postgres_template")
    name = f"skinflow_test_{uuid.uuid4().hex[:12]}"
    admin_engine = _admin_engine()
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    with admin_engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin_engine.dispose()


@pytest.fixture
def wb(tmp_path: Path, database_url):
    """A fresh workbench: a real SQLite file in a temporary folder, or a real PostgreSQL database."""
    bench = open_workbench(Settings.load(environ={}, home=tmp_path / "wb", database_url=database_url))
    yield bench
    bench.close()


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL, tests of SQLite's own machinery (the file, WAL, online backup) do not apply."""
    if not ON_POSTGRES:
        return
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="SQLite-specific (SKINFLOW_TEST_DATABASE_URL is set)"))


@pytest.fixture
def admin(wb):
    return add_user(wb, None, "admin", "admin", "admin-password")[0]


@pytest.fixture
def reviewer(wb, admin):
    return add_user(wb, admin, "rev", "reviewer", "reviewer-password")[0]


@pytest.fixture
def annotator(wb, admin):
    return add_user(wb, admin, "ann", "annotator", "annotator-password")[0]


TINY_TEXTS = [
    "Color: erythematous\nLocation: face\nShape: round\nLesion type: papule\nNumber: few",
    "Melanoma",
    "Psoriasis",
    "Describe the skin lesion",
    "List up to 6 diagnoses",
] * 4


@pytest.fixture
def tiny_model():
    """A factory for a tiny random Qwen2.5-VL (and processor), FDLinear settings as given."""
    from trainer.model import build_tiny

    def make(fd=None, seed=0):
        return build_tiny(TINY_TEXTS, seed=seed, fd=fd, vocab_size=400)

    return make


@pytest.fixture
def running_app(tmp_path):
    """`skinflow app` on a six-image demo workbench (tests/browser_app.py): (the workbench, its URL)."""
    from tests.browser_app import demo_workbench, free_port, serve

    wb = demo_workbench(tmp_path / "wb")
    try:
        with serve(tmp_path / "wb", free_port()) as url:
            yield wb, url
    finally:
        wb.close()


@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    """The demo workbench (12 images) the app-page tests log in to, with known passwords; SKINFLOW_HOME points at it."""
    import streamlit as st

    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor, set_password
    from curation.store.workflow import update_workflow_settings

    home = tmp_path / "wb"
    monkeypatch.setenv("SKINFLOW_HOME", str(home))
    monkeypatch.delenv("SKINFLOW_DATABASE_URL", raising=False)
    st.cache_resource.clear()  # the app caches its workbench: never reuse another test's database
    wb = open_workbench(Settings.load())
    build_demo(wb, None, n=12, seed=0, verified_fraction=0.25, annotated_fraction=0.25)
    admin = get_actor(wb, "admin")
    for name, password in PASSWORDS.items():
        set_password(wb, admin, name, password)
    update_workflow_settings(wb, admin, gold_rate=0.0)
    yield wb
    st.cache_resource.clear()
    wb.close()


class Decoys:
    """Packages named like ours (and streamlit) that record their import. Planted in the folder a command is
    started from, and in the folder a process runs in: `python -m` puts the working directory first on the import
    path, so without a safe path (curation.ops.jobs.python_module) these were imported instead of our code."""

    PACKAGES = ("app", "curation", "schema", "trainer", "streamlit")

    def __init__(self, marker: Path):
        self.marker = marker

    def plant(self, folder: Path) -> Path:
        for name in self.PACKAGES:
            package = folder / name
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").write_text(
                f"open({str(self.marker)!r}, 'a').write({name!r} + ' from ' + __file__ + '\\n')\n"
            )
        return folder

    def imported(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []


@pytest.fixture
def decoys(tmp_path, monkeypatch) -> Decoys:
    """Work from a folder of decoy packages (the test's working directory for its duration); plant more with
    `decoys.plant(folder)`, and check `decoys.imported()` is empty at the end."""
    found = Decoys(tmp_path / "decoys-imported.txt")
    monkeypatch.chdir(found.plant(tmp_path / "started-here"))
    return found


# -- trainer fixtures: a tiny pretrained Qwen2.5-VL checkpoint and a GRPO export of the demo ----------------
@pytest.fixture(scope="module")
def pretrained_deep(tmp_path_factory):
    """A tiny plain Qwen2.5-VL saved as a hub checkpoint would be, with 8 vision blocks (the one-GPU presets put
    FDLinear on the last 8)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from trainer.model import tiny_config, tiny_processor, train_tokenizer

    tokenizer = train_tokenizer(TINY_TEXTS, vocab_size=400)
    processor = tiny_processor(tokenizer, 112)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer, None, vision_depth=8))
    folder = tmp_path_factory.mktemp("deep") / "pretrained"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# -- a real (small) run ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grpo_export(tmp_path_factory):
    from curation.export.dataset import export_dataset
    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    home = tmp_path_factory.mktemp("trainer")
    wb = open_workbench(Settings.load(environ={}, home=home / "wb"))
    build_demo(wb, None, n=16, seed=0, verified_fraction=1.0, annotated_fraction=0.0)
    export = home / "export"
    export_dataset(wb, get_actor(wb, "admin"), export, formats=("grpo",))
    wb.close()
    return export
