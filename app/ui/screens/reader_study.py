"""Reader study (reviewer, admin): blinded ratings of several sources' outputs, and the results."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.widgets import taxonomy_label
from curation.labelling.reader_study import (
    SCALES,
    available_sources,
    create_study,
    list_studies,
    next_item,
    rate_item,
    ratings_csv,
    study_results,
)
from curation.labelling.views import image_detail
from schema.caption import Caption
from schema.caption import render as caption_text
from schema.errors import SkinflowError

LIKERT = {1: "1 poor", 2: "2", 3: "3", 4: "4", 5: "5 excellent"}


def _create(wb, actor) -> None:
    sources = available_sources(wb)
    with st.expander("New reader study", expanded=False):
        if len(sources) < 2:
            st.caption("A study needs two or more sources with outputs on verified images (LLM drafts, model suggestions).")
            return
        with st.form("new-study"):
            name = st.text_input("Study name")
            chosen = st.multiselect(
                "Sources",
                [s["key"] for s in sources],
                format_func=lambda k: next(f"{s['key']} ({s['images']} verified images)" for s in sources if s["key"] == k),
            )
            n = st.number_input("Images", min_value=1, max_value=10_000, value=30)
            if st.form_submit_button("Create study"):
                try:
                    study_id = create_study(wb, actor, name, chosen, int(n))
                except SkinflowError as e:
                    state.show_error(e)
                else:
                    st.success(f"Study #{study_id} created.")


def _rate(wb, actor, study_id: int) -> None:
    item = next_item(wb, actor, study_id)
    if item is None:
        st.success("You have rated every item of this study. Thank you!")
        return
    detail = image_detail(wb, actor, item.image_id)
    st.caption(f"Item {item.position + 1}. The outputs are shown in a random order under neutral names.")
    left, right = st.columns([2, 3])
    if detail.path is not None:
        left.image(str(detail.path), width="stretch")
    with right.form(f"rate-{item.item_id}"):
        answers = {}
        for name, key, output in item.outputs:
            st.markdown(f"**{name}**")
            caption = output.get("caption")
            st.text(caption_text(Caption.model_validate(caption)) if caption else "(no caption)")
            diagnoses = [taxonomy_label(wb.taxonomy, d["key"]) for d in output.get("diagnoses") or [] if d.get("key")]
            st.text("Diagnoses: " + ("; ".join(diagnoses[:6]) if diagnoses else "none"))
            values = {
                scale: st.select_slider(
                    f"{name}: {scale}",
                    options=list(LIKERT),
                    value=3,
                    format_func=LIKERT.get,
                    key=f"{item.item_id}-{name}-{scale}",
                )
                for scale in SCALES
            }
            values["comment"] = st.text_input(f"{name}: comment (optional)", key=f"{item.item_id}-{name}-comment")
            answers[key] = values
        if st.form_submit_button("Submit ratings"):
            try:
                rate_item(wb, actor, item.item_id, answers)
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.rerun()


def _results(wb, actor, study_id: int) -> None:
    results = study_results(wb, actor, study_id)
    st.caption(f"{results['items']} rated items, raters: {', '.join(results['raters']) or 'none yet'}")
    rows = []
    for scale, by_source in results["means"].items():
        for source, value in by_source.items():
            ci = value["ci95"]
            rows.append(
                {
                    "scale": scale,
                    "source": source,
                    "mean": value["mean"],
                    "items": value["n_items"],
                    "95% CI": f"{ci[0]:.2f} - {ci[1]:.2f}" if ci else "",
                }
            )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.markdown("Inter-rater agreement (Krippendorff's alpha, ordinal)")
    st.dataframe(pd.DataFrame([results["krippendorff_alpha"]]), hide_index=True, width="stretch")
    st.markdown("Paired Wilcoxon signed-rank tests (per-item means over raters)")
    st.dataframe(pd.DataFrame(results["wilcoxon"]), hide_index=True, width="stretch")
    st.download_button(
        "Download ratings (CSV)", ratings_csv(wb, actor, study_id), file_name=f"reader-study-{study_id}.csv", mime="text/csv"
    )


def render() -> None:
    actor = state.require_role("reviewer", "The reader study page")
    wb = state.workbench()
    st.title("Reader study")
    if actor.can("admin"):
        _create(wb, actor)
    studies = list_studies(wb, actor)
    if not studies:
        st.info("No reader study yet." + (" Create one above." if actor.can("admin") else " An admin creates them."))
        return
    study_id = st.selectbox(
        "Study",
        [s["id"] for s in studies],
        format_func=lambda i: next(f"{s['name']} ({s['items']} images, {s['ratings']} ratings)" for s in studies if s["id"] == i),
    )
    rate, results = st.tabs(["Rate", "Results"])
    with rate:
        _rate(wb, actor, study_id)
    with results:
        _results(wb, actor, study_id)
