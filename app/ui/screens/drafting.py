"""Drafting (admin): connection test, start a drafting run with live progress, the failures."""

from __future__ import annotations

import asyncio

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.widgets import plain
from curation.assist.drafting import draft_images, recent_failures
from curation.assist.llm import NO_KEY, LLMConfig, LLMError, connection_test
from schema.errors import SkinflowError


def render() -> None:
    actor = state.require_role("admin", "Drafting")
    wb = state.workbench()
    st.title("LLM drafting")
    settings = wb.settings
    model = st.text_input("Model", value=settings.llm_model or "", help="SKINFLOW_LLM_MODEL; any OpenAI-compatible vision model")
    st.caption(
        f"Server: {settings.llm_base_url or 'OpenAI (api.openai.com)'} · set SKINFLOW_LLM_BASE_URL to change it. "
        "The API key comes from SKINFLOW_LLM_API_KEY, OPENAI_API_KEY or SKINFLOW_LLM_API_KEY_FILE and is never shown."
    )
    try:
        config = LLMConfig.from_settings(settings, model or None)
    except SkinflowError as e:
        state.show_error(e)
        return
    st.caption("API key: " + ("none set (fine for local servers)" if config.key == NO_KEY else "set"))
    if st.button("Test connection"):
        try:
            answer = asyncio.run(connection_test(config))
        except (LLMError, SkinflowError) as e:
            state.show_error(e)
        else:
            st.success(f"The server answered: {plain(repr(answer))}")
    c1, c2, c3 = st.columns(3)
    limit = c1.number_input("At most (0 = all)", min_value=0, value=0, step=10)
    concurrency = c2.number_input("Requests at once", min_value=1, max_value=64, value=settings.llm_concurrency)
    redo = c3.checkbox("Draft again images that have a draft from this model and prompt")
    if st.button("Start drafting", type="primary"):
        bar = st.progress(0.0, text="starting")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"{done} of {total} images")

        try:
            report = draft_images(
                wb,
                actor,
                model=model or None,
                limit=int(limit) or None,
                concurrency=int(concurrency),
                redo=redo,
                progress=progress,
            )
        except SkinflowError as e:
            state.show_error(e)
        else:
            bar.progress(1.0, text="done")
            st.success(
                f"Drafted {report.done} of {report.todo} images in {report.seconds:.1f} s; failed {len(report.failed)}; "
                f"tokens {report.prompt_tokens} in / {report.completion_tokens} out."
            )
    st.subheader("Failures")
    failures = recent_failures(wb, actor)
    if failures:
        st.dataframe(pd.DataFrame(failures), hide_index=True, width="stretch")
    else:
        st.caption("No failed drafts.")
