"""Entry point: `skinflow app` runs `streamlit run app/ui/main.py` (through app/ui/server.py).

The page modules live in app/ui/screens/, not pages/: Streamlit treats a pages/ folder beside the
entry script as legacy auto-discovered pages, which breaks st.navigation on reruns."""

from __future__ import annotations

import streamlit as st

from app.ui import keyboard, state, viewer
from app.ui.screens import admin, annotate, dataset, drafting, evaluation, insights, reader_study, review, train, weights
from app.ui.widgets import plain, readable_chips
from curation.store.auth import InvalidCredentials, account_for_email, authenticate

st.set_page_config(page_title="SkinFlow Workbench", layout="wide")
readable_chips()


def single_sign_on() -> None:
    """Log in through the hospital's identity provider (st.login, OIDC), when the app's secrets configure one;
    the identity maps to the local account with that email, and takes its role."""
    sso = state.sso_provider()
    if sso is None:
        return
    provider, title = sso
    if st.user.is_logged_in:  # back from the identity provider
        try:
            actor = account_for_email(state.workbench(), st.user.get("email"), verified=st.user.get("email_verified"))
        except InvalidCredentials as e:
            st.error(f"{plain(e)}.")  # it quotes the provider's claims: text from outside, never markdown
            st.button("Use another account", on_click=st.logout)
        else:
            state.log_in(actor)
            st.rerun()
        return
    st.button(f"Log in with {title}", type="primary", on_click=st.login, args=(provider,) if provider else ())
    st.caption("or with a local account:")


def login_page() -> None:
    st.title("SkinFlow Workbench")
    message = st.session_state.pop("login_message", None)
    if message:
        st.info(message)
    single_sign_on()
    with st.form("login"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            # counted per address: guesses lock out their own address, not the account's owner
            state.log_in(authenticate(state.workbench(), username, password, client=state.client_address()))
        except InvalidCredentials as e:
            # it may quote the name typed: shown as text, never markdown
            st.error(plain(f"{e}." if "unlock" in str(e) else f"{e}. Ask an admin to reset your password if you forgot it."))
        else:
            st.rerun()


actor = state.current_actor()
if actor is None:
    # a navigation of its own (hidden): it replaces the pages a session had before it was logged out
    state.sync_cookie()  # a logout or a refused cookie: the browser forgets it
    st.navigation([st.Page(login_page, title="Log in", default=True)], position="hidden").run()
else:
    # Pages grouped by what people do. A page's identity is its url_path, so each screen's render() is the page.
    # (role, section, screen, title, url_path), in sidebar order; a section shows only the pages the role may open.
    layout = [
        ("annotator", "Label", annotate, "Annotate", "annotate"),
        ("reviewer", "Label", review, "Review", "review"),
        ("reviewer", "Label", reader_study, "Reader study", "reader-study"),
        ("reviewer", "Curate", dataset, "Dataset", "dataset"),
        ("reviewer", "Curate", insights, "Insights", "insights"),
        ("reviewer", "Curate", weights, "Weights", "weights"),
        ("admin", "Curate", drafting, "Drafting", "drafting"),
        ("reviewer", "Model", evaluation, "Evaluation", "evaluation"),
        ("admin", "Model", train, "Train", "train"),
        ("admin", "Admin", admin, "Admin", "admin"),
    ]
    sections: dict[str, list] = {}
    for role, section, screen, title, url_path in layout:
        if actor.can(role):
            sections.setdefault(section, []).append(
                st.Page(screen.render, title=title, url_path=url_path, default=url_path == "annotate")
            )
    with st.sidebar:
        st.caption(f"Logged in as **{plain(actor.username)}** ({actor.role})")  # www.x.example would be a link
        if st.button("Log out"):
            state.log_out("You are logged out.", end_session=True)
            if state.sso_provider() is not None and st.user.is_logged_in:
                st.logout()  # the identity provider's login too, or the login page would take it straight back
            st.rerun()
        state.sync_cookie()
        # the picture viewer and the Annotate keys: listeners installed once per tab (no room taken in the page)
        st.html(viewer.SCRIPT + keyboard.SCRIPT, unsafe_allow_javascript=True, width=1)
    st.navigation(sections).run()
