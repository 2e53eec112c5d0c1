"""Driving the app's pages in tests: streamlit's AppTest on main.py (login as a person does) or on one page for a
logged-in user, and finding a widget by its label."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from curation.store.auth import get_actor
from curation.store.models import Image
from tests.conftest import PASSWORDS

APP = str(Path(__file__).resolve().parents[1] / "app" / "ui" / "main.py")


def by_label(elements, label: str):
    """The widget whose label starts with `label` (how a person finds it)."""
    matches = [e for e in elements if e.label.startswith(label)]
    assert len(matches) == 1, [e.label for e in elements]
    return matches[0]


def login(username: str, password: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(username)
    at.text_input[1].input(password or PASSWORDS[username])
    at.button[0].click().run()
    return at


def _page(name):
    import importlib

    importlib.import_module(f"app.ui.screens.{name}").render()


def page(wb, name: str, username: str) -> AppTest:
    """One page rendered for a logged-in user (what st.navigation shows at that page's url)."""
    import time

    at = AppTest.from_function(_page, args=(name,), default_timeout=30)
    at.session_state["actor"] = get_actor(wb, username)
    at.session_state["login_at"] = time.time()
    return at.run()


def give_lesions(wb, lesion_of) -> None:
    """Lesion ids on the demo images, as a HAM10000 or PAD-UFES-20 import brings them."""
    with wb.session() as s:
        for image in s.scalars(select(Image)):
            image.meta = {**(image.meta or {}), "lesion_id": lesion_of(image.id)}
