"""Session helpers shared by the pages: the workbench, who is logged in, role gates, expiry."""

from __future__ import annotations

import time

import streamlit as st

from app.ui.widgets import plain
from curation.labelling.workflow import get_workflow_settings
from curation.store.auth import Actor, current_account
from curation.store.db import Workbench, open_workbench
from curation.store.secrets import scrub
from curation.store.settings import Settings
from schema.errors import SkinflowError


@st.cache_resource(show_spinner=False)
def _workbench(home: str, url: str | None) -> Workbench:
    return open_workbench(Settings.load())


def workbench() -> Workbench:
    """One Workbench per process and database (cached: engines are expensive)."""
    settings = Settings.load()
    return _workbench(str(settings.home.resolve()), settings.database_url)


def log_in(actor: Actor) -> None:
    st.session_state["actor"] = actor
    st.session_state["login_at"] = time.time()


def log_out(message: str | None = None) -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if message:
        st.session_state["login_message"] = message


def current_actor() -> Actor | None:
    """The logged-in account as it is now, or None: when the session has expired, or the account was
    deactivated or its role or password changed since this session logged in (checked on every request)."""
    actor = st.session_state.get("actor")
    if actor is None:
        return None
    wb = workbench()
    minutes = get_workflow_settings(wb).session_minutes
    if time.time() - st.session_state.get("login_at", 0) > minutes * 60:
        log_out(f"Your session expired after {minutes} minutes; please log in again.")
        return None
    now = current_account(wb, actor)
    if now is None:
        log_out("Your account changed (role, password or access) since you logged in; please log in again.")
        return None
    st.session_state["actor"] = now
    return now


def require_role(role: str, what: str) -> Actor:
    """Stop the page unless the logged-in account has the role (the curation functions check too)."""
    actor = current_actor()
    if actor is None:
        st.warning("Please log in.")
        st.stop()
    if not actor.can(role):
        st.error(f"{what} needs the {role} role; you are logged in as {actor.username} ({actor.role}).")
        st.stop()
    return actor


def show_error(error: SkinflowError) -> None:
    st.error(plain(scrub(str(error))))  # messages quote file names, labels, replies
