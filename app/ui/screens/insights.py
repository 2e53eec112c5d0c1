"""Insights: progress, throughput, distributions, agreement, gold accuracy.
Every number here is also in `skinflow status --json` (key "insights")."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.ui import state
from curation.assist.evidence import MEASURES, describe_decision, source_evidence
from curation.labelling.insights import team_insights


def _bar(counts: dict, name: str, by_count: bool = True) -> alt.Chart:
    frame = pd.DataFrame({name: list(counts), "images": list(counts.values())})
    return alt.Chart(frame).mark_bar().encode(x=alt.X("images:Q"), y=alt.Y(f"{name}:N", sort="-x" if by_count else "ascending"))


def render() -> None:
    actor = state.require_role("reviewer", "Insights")
    wb = state.workbench()
    st.title("Insights")
    numbers = team_insights(wb, actor)
    st.caption('The same numbers: `skinflow status --json` (key "insights").')
    a, b, c = st.columns(3)
    a.metric("Images", numbers["images"])
    b.metric("Verified", numbers["verified"])
    c.metric("Items with 2+ annotators", numbers["agreement"]["items_with_2_or_more_annotators"])

    st.subheader("Progress")
    progress = pd.DataFrame(
        [{"day": day, "kind": kind, "count": n} for day, v in numbers["progress_by_day"].items() for kind, n in v.items()]
    )
    if not progress.empty:
        st.altair_chart(alt.Chart(progress).mark_line(point=True).encode(x="day:T", y="count:Q", color="kind:N"), width="stretch")

    st.subheader("Throughput per annotator")
    throughput = pd.DataFrame(numbers["throughput"]).T
    st.dataframe(throughput, width="stretch")

    st.subheader("Distributions")
    left, right = st.columns(2)
    dist = numbers["distributions"]
    left.altair_chart(_bar(dict(list(dist["label"].items())[:20]), "label"), width="stretch")
    right.altair_chart(_bar(dist["group9"], "group9"), width="stretch")
    left.altair_chart(_bar(dist["group3"], "group3"), width="stretch")
    right.altair_chart(_bar(dist["fitzpatrick"], "fitzpatrick", by_count=False), width="stretch")  # types in order

    st.subheader("Agreement")
    alpha = pd.DataFrame({"Krippendorff's alpha": numbers["agreement"]["krippendorff_alpha"]})
    st.dataframe(alpha, width="stretch")
    kappa = numbers["agreement"]["cohen_kappa_diagnosis"]
    if kappa:
        st.markdown("Cohen's kappa on the diagnosis, per pair of annotators")
        st.dataframe(pd.DataFrame(kappa).T, width="stretch")

    st.subheader("Edit rate per field")
    rates = numbers["edit_rates"]
    if rates:
        st.caption(
            "How often annotators change the draft they prefilled from: the share of first versions whose field "
            "differs. A model suggestion with lower rates than the LLM draft is saving work."
        )
        frame = pd.DataFrame(
            [
                {"source": kind, "field": field, "edit rate": rate}
                for kind, v in rates.items()
                for field, rate in {**v["fields"], "diagnosis": v["diagnosis"]}.items()
            ]
        )
        st.altair_chart(
            alt.Chart(frame).mark_bar().encode(x="edit rate:Q", y="field:N", color="source:N", yOffset="source:N"),
            width="stretch",
        )
        st.dataframe(frame.pivot(index="field", columns="source", values="edit rate"), width="stretch")
    else:
        st.caption("No annotation started from a draft yet.")

    _who_to_trust(wb, actor)

    st.subheader("Accuracy on gold items")
    if numbers["gold_accuracy"]:
        st.dataframe(pd.DataFrame(numbers["gold_accuracy"]).T, width="stretch")
    else:
        st.caption("No gold items answered yet (gold rate is set on the Admin page).")


def _who_to_trust(wb, actor) -> None:
    st.subheader("Who to trust for what")
    report = source_evidence(wb, actor)
    if not report.sources:
        st.caption("No draft source has a usable draft on a verified image yet.")
        return
    st.caption(
        f"Each draft source's agreement with the {report.verified_images} verified annotations, per field (mean field "
        "score) and for the diagnosis (accuracy), on images it did not learn from; 'best' needs at least "
        f"{report.min_evidence} items (setting min_evidence). The same numbers: `skinflow sources --json`."
    )
    rows = [
        {"measure": measure, "source": entry.source, "score": entry.measures[measure].mean, "n": entry.measures[measure].n}
        for entry in report.sources
        for measure in MEASURES
    ]
    frame = pd.DataFrame(rows)
    st.altair_chart(
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("source:N", title=None),
            y=alt.Y("measure:N", sort=list(MEASURES), title=None),
            color=alt.Color("score:Q", scale=alt.Scale(domain=[0, 1])),
            tooltip=["measure", "source", "score", "n"],
        ),
        width="stretch",
    )
    table = frame.pivot(index="measure", columns="source", values="score").reindex(list(MEASURES))
    table["best"] = [report.chosen[m] or "not enough evidence" for m in MEASURES]
    table["how it was decided"] = [describe_decision(report, m) for m in MEASURES]
    st.dataframe(table, width="stretch")
