"""Evaluation (reviewer, admin): the reports `skinflow eval --out <home>/reports/NAME` wrote, their charts,
and two reports side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.widgets import report_markdown
from curation.ops.reports import list_reports, reports_dir


def render() -> None:
    actor = state.require_role("reviewer", "The evaluation page")
    wb = state.workbench()
    st.title("Evaluation")
    reports = list_reports(wb, actor)
    if not reports:
        st.info(
            f"No reports yet. Write one with `skinflow eval --export EXPORT --checkpoint RUN --out {reports_dir(wb)}/NAME` "
            "(or --predictions FILE, or --llm MODEL for a baseline)."
        )
        return
    names = [r.name for r in reports]
    chosen = st.selectbox("Report", names)
    report = reports[names.index(chosen)]
    # the file is outside input (labels from an export, a report someone copied in): laid out, never active
    st.markdown(report_markdown(report.markdown.split("![reliability]")[0]))
    left, right = st.columns(2)
    for column, chart in ((left, "reliability.png"), (right, "fitzpatrick.png")):
        if (report.folder / chart).exists():
            column.image(str(report.folder / chart))
    if len(reports) >= 2:
        st.subheader("Side by side")
        a, b = st.columns(2)
        first = a.selectbox("First", names, key="eval-a")
        second = b.selectbox("Second", names, index=1, key="eval-b")
        table = pd.DataFrame({name: reports[names.index(name)].data["headline"] for name in dict.fromkeys((first, second))})
        st.dataframe(table, width="stretch")
