"""Session helpers shared by the pages: the workbench, who is logged in, role gates, expiry.

A login also opens a login session (curation/store/sessions.py) whose random token the browser keeps in a
cookie, so a reload (F5, or the reconnect after a dropped WebSocket) resumes it instead of asking for the
password again. Streamlit can read cookies (st.context.cookies) but not set them, so the server sets it on a
route of its own (app/ui/cookies.py), for a one-time ticket the page posts: HttpOnly (no script reads it, ours or
another port's), SameSite=Strict, Secure when the page came over https, Path=/, and Max-Age up to the session's
expiry. The token dies with logout, expiry or an account change.
"""

from __future__ import annotations

import hashlib
import json
import time

import streamlit as st

from app.ui.cookies import route_path, ticket_for
from app.ui.widgets import plain
from curation.labelling.vocabulary import load_local_terms
from curation.store.auth import Actor, current_account
from curation.store.db import Workbench, open_workbench
from curation.store.secrets import scrub
from curation.store.sessions import close_session, open_session, resume_session
from curation.store.settings import Settings
from curation.store.workflow import get_workflow_settings
from schema.errors import SkinflowError


@st.cache_resource(show_spinner=False)
def _workbench(home: str, url: str | None) -> Workbench:
    return open_workbench(Settings.load())


def workbench() -> Workbench:
    """One Workbench per process and database (cached: engines are expensive)."""
    settings = Settings.load()
    wb = _workbench(str(settings.home.resolve()), settings.database_url)
    load_local_terms(wb)  # a term accepted elsewhere (the CLI, another server) is offered on this page run
    return wb


def sso_provider() -> tuple[str | None, str] | None:
    """(provider name for st.login, its title) when the app's secrets configure single sign-on ([auth] in
    .streamlit/secrets.toml: Streamlit's own OIDC settings), else None. One provider: the unnamed [auth]
    settings, or the first named one ([auth.keycloak])."""
    try:
        auth = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets file at all
        return None
    if not auth:
        return None
    if "client_id" in auth:
        return None, str(auth.get("skinflow_title", "single sign-on"))
    named = [name for name, value in auth.items() if hasattr(value, "get") and "client_id" in value]
    return (named[0], str(auth[named[0]].get("skinflow_title", named[0]))) if named else None


def cookie_name(wb: Workbench) -> str:
    """One cookie per workbench: browsers share cookies between ports, and two workbenches on one host must
    not log each other out."""
    where = wb.engine.url.render_as_string(hide_password=True)
    return "skinflow_session_" + hashlib.sha256(where.encode()).hexdigest()[:12]


def log_in(actor: Actor) -> None:
    """A fresh login (the password was just checked): a login session and its cookie."""
    wb = workbench()
    token, expires = open_session(wb, actor, get_workflow_settings(wb).session_minutes)
    _remember(actor, token, expires.timestamp())


def _remember(actor: Actor, token: str | None, expires_at: float) -> None:
    st.session_state["actor"] = actor
    st.session_state["login_at"] = time.time()
    st.session_state["expires_at"] = expires_at
    st.session_state["session_token"] = token


def log_out(message: str | None = None, *, end_session: bool = False) -> None:
    """Forget this tab's login; `end_session` also revokes the login session (the Log out button)."""
    token = st.session_state.get("session_token")
    if end_session and token:
        close_session(workbench(), token)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["clear_cookie"] = True
    if message:
        st.session_state["login_message"] = message


def _resume_from_cookie() -> Actor | None:
    """A reload: the browser's cookie, if it opens a live session, logs this tab in without a password."""
    wb = workbench()
    token = st.context.cookies.get(cookie_name(wb))
    if not isinstance(token, str) or not token or st.session_state.get("clear_cookie"):  # AppTest has no cookies
        return None
    resumed = resume_session(wb, token)
    if resumed is None:
        st.session_state["clear_cookie"] = True  # unknown, expired or revoked: the browser forgets it
        return None
    actor, expires = resumed
    _remember(actor, token, expires.timestamp())
    return actor


def current_actor() -> Actor | None:
    """The logged-in account as it is now, or None: when the session has expired or was revoked, or the account
    was deactivated or its role or password changed since this session logged in (checked on every request)."""
    actor = st.session_state.get("actor")
    if actor is None:
        return _resume_from_cookie()
    wb = workbench()
    expires_at = st.session_state.get("expires_at")
    if expires_at is None:  # a tab logged in without a login session: the expiry counts from the login
        minutes = get_workflow_settings(wb).session_minutes
        expires_at = st.session_state.get("login_at", 0) + minutes * 60
    if time.time() > expires_at:
        log_out("Your session expired; please log in again.")
        return None
    now = current_account(wb, actor)
    if now is None:
        log_out("Your account changed (role, password or access) since you logged in; please log in again.")
        return None
    token = st.session_state.get("session_token")
    if token and resume_session(wb, token) is None:
        log_out("Your session expired or was ended (a logout in another tab); please log in again.")
        return None
    st.session_state["actor"] = now
    return now


def sync_cookie() -> None:
    """Have the server set (or delete) the session cookie, HttpOnly, once per login or logout (nothing visible):
    the page's script gets a one-time ticket, never the token (app/ui/cookies.py)."""
    wb = workbench()
    name = cookie_name(wb)
    token = st.session_state.get("session_token")
    if token and st.session_state.get("cookie_set") != token:
        max_age = max(0, int(st.session_state["expires_at"] - time.time()))
        value = f"{name}={token}; Path=/; Max-Age={max_age}; SameSite=Strict"
        st.session_state["cookie_set"] = token
    elif not token and st.session_state.pop("clear_cookie", False):
        value = f"{name}=; Path=/; Max-Age=0; SameSite=Strict"
    elif token:  # set already: still one element here, so the sidebar's elements keep their places on every run
        st.html("<span hidden></span>", unsafe_allow_javascript=True, width=1)
        return
    else:
        return
    script = (
        "<script>(function(){var secure = location.protocol === 'https:' ? '?secure=1' : '';"
        f"fetch({json.dumps(route_path())} + secure, "
        f"{{method: 'POST', body: {json.dumps(ticket_for(value))}, credentials: 'same-origin'}});"
        "})();</script>"
    )
    st.html(script, unsafe_allow_javascript=True, width=1)


def require_role(role: str, what: str) -> Actor:
    """Stop the page unless the logged-in account has the role (the curation functions check too)."""
    actor = current_actor()
    if actor is None:
        st.warning("Please log in.")
        st.stop()
    if not actor.can(role):
        st.error(f"{what} needs the {role} role; you are logged in as {plain(actor.username)} ({actor.role}).")
        st.stop()
    return actor


def show_error(error: SkinflowError) -> None:
    st.error(plain(scrub(str(error))))  # messages quote file names, labels, replies


def client_address() -> str | None:
    """The browser's address as the server's TCP peer (None for localhost): what the login throttle counts by.
    Streamlit reads no forwarded-for header, so a client cannot choose it."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None  # (AppTest has no connection: nothing to count by)
