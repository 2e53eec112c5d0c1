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
    login_page()  # no navigation before login: the default page is served once logged in
else:
    # Streamlit identifies a callable page by its function name, so each page gets its own.
    def annotate_page() -> None:
        annotate.render()

    def review_page() -> None:
        review.render()

    def dataset_page() -> None:
        dataset.render()

    def insights_page() -> None:
        insights.render()

    def admin_page() -> None:
        admin.render()

    def drafting_page() -> None:
        drafting.render()

    def weights_page() -> None:
        weights.render()

    def train_page() -> None:
        train.render()

    def evaluation_page() -> None:
        evaluation.render()

    def reader_study_page() -> None:
        reader_study.render()

    pages = [st.Page(annotate_page, title="Annotate", url_path="annotate", default=True)]
    if actor.can("reviewer"):
        pages += [st.Page(review_page, title="Review", url_path="review"),
                  st.Page(dataset_page, title="Dataset", url_path="dataset"),
                  st.Page(insights_page, title="Insights", url_path="insights"),
                  st.Page(weights_page, title="Weights", url_path="weights"),
                  st.Page(evaluation_page, title="Evaluation", url_path="evaluation"),
                  st.Page(reader_study_page, title="Reader study", url_path="reader-study")]
    if actor.can("admin"):
        pages += [st.Page(drafting_page, title="Drafting", url_path="drafting"),
                  st.Page(train_page, title="Train", url_path="train"),
                  st.Page(admin_page, title="Admin", url_path="admin")]
    with st.sidebar:
        st.caption(f"Logged in as **{actor.username}** ({actor.role})")
        if st.button("Log out"):
            state.log_out("You are logged out.")
            st.rerun()
    st.navigation(pages).run()
