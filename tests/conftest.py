from __future__ import annotations

from pathlib import Path

import pytest

from curation.auth import add_user
from curation.db import open_workbench
from curation.settings import Settings


@pytest.fixture
def wb(tmp_path: Path):
    """A fresh workbench on a real SQLite file in a temporary folder."""
    bench = open_workbench(Settings.load(environ={}, home=tmp_path / "wb"))
    yield bench
    bench.close()


@pytest.fixture
def admin(wb):
    return add_user(wb, None, "admin", "admin", "admin-password")[0]


@pytest.fixture
def reviewer(wb, admin):
    return add_user(wb, admin, "rev", "reviewer", "reviewer-password")[0]


@pytest.fixture
def annotator(wb, admin):
    return add_user(wb, admin, "ann", "annotator", "annotator-password")[0]


TINY_TEXTS = ["Color: erythematous\nLocation: face\nShape: round\nLesion type: papule\nNumber: few", "Melanoma", "Psoriasis",
              "Describe the skin lesion", "List up to 6 diagnoses"] * 4


@pytest.fixture
def tiny_model():
    """A factory for a tiny random Qwen2.5-VL (and processor), FDLinear settings as given."""
    from trainer.model import build_tiny

    def make(fd=None, seed=0):
        return build_tiny(TINY_TEXTS, seed=seed, fd=fd, vocab_size=400)

    return make
