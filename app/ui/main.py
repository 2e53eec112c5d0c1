"""Entry point: `skinflow app` runs `streamlit run app/ui/main.py`.

The page modules live in app/ui/screens/, not pages/: Streamlit treats a pages/ folder beside the
entry script as legacy auto-discovered pages, which breaks st.navigation on reruns."""

from __future__ import annotations

import streamlit as st

from app.ui import state
from app.ui.screens import admin, annotate, dataset, drafting, evaluation, insights, reader_study, review, train, weights
from curation.store.auth import InvalidCredentials, authenticate

st.set_page_config(page_title="SkinFlow Workbench", layout="wide")


def login_page() -> None:
    st.title("SkinFlow Workbench")
    message = st.session_state.pop("login_message", None)
    if message:
        st.info(message)
    with st.form("login"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            state.log_in(authenticate(state.workbench(), username, password))
        except InvalidCredentials as e:
            st.error(f"{e}. Ask an admin to reset your password if you forgot it.")
        else:
            st.rerun()


actor = state.current_actor()
if actor is None:
    # a navigation of its own (hidden): it replaces the pages a session had before it was logged out
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
        st.caption(f"Logged in as **{actor.username}** ({actor.role})")
        if st.button("Log out"):
            state.log_out("You are logged out.")
            st.rerun()
    st.navigation(sections).run()
