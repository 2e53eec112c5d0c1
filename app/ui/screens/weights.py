"""Attribute weights: the active weight set as a chart, evidence sentences, history, activation."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.widgets import plain
from curation.assist.weights import (
    DEFAULT_FLOOR,
    FEW_REASONINGS,
    SOURCES,
    activate_weight_set,
    create_weight_set,
    evidence,
    gather_reasonings,
    list_weight_sets,
)
from schema.errors import SkinflowError
from schema.fields import FIELD_KEYS


def render() -> None:
    actor = state.require_role("reviewer", "The weights page")
    wb = state.workbench()
    st.title("Attribute weights")
    st.caption(
        "Each field's weight is how often diagnostic reasonings mention it (LLM reasonings and annotators' rationales), "
        "normalised to sum 1 with a floor. The active set goes into every export and the stage I reward."
    )
    sets = list_weight_sets(wb)
    if actor.can("admin"):
        with st.expander("Compute a new weight set", expanded=not sets):
            source = st.selectbox("Reasonings", SOURCES, index=SOURCES.index("all"))
            floor = st.number_input("Floor", min_value=0.0, max_value=0.09, value=DEFAULT_FLOOR, step=0.005, format="%.3f")
            available = len(gather_reasonings(wb, source))
            sure = True
            if available < FEW_REASONINGS:
                st.warning(
                    f"Only {available} {'reasoning' if available == 1 else 'reasonings'} from {source!r}: weights from fewer "
                    f"than {FEW_REASONINGS} mostly reflect chance, and a first set becomes the active one (every export "
                    "and the stage I reward use it). Run `skinflow reasonings` for more."
                )
                sure = st.checkbox(f"Compute from only {available} anyway", key="weights-few-ok")
            if st.button("Compute", disabled=not sure or available == 0):
                try:
                    info = create_weight_set(wb, actor, source=source, floor=float(floor))
                except SkinflowError as e:
                    state.show_error(e)
                else:
                    st.success(
                        f"Created {info.name} from {info.n_reasonings} reasoning{'' if info.n_reasonings == 1 else 's'}"
                        + (" (active)." if info.active else ".")
                    )
                    sets = list_weight_sets(wb)
    if not sets:
        st.info("No weight sets yet. Run `skinflow reasonings`, or add rationales when annotating, then compute one.")
        return
    chosen = st.selectbox(
        "Weight set",
        [w.id for w in sets],
        format_func=lambda i: next(
            f"{w.name}{' (active)' if w.active else ''}: {w.n_reasonings} reasonings" for w in sets if w.id == i
        ),
    )
    current = next(w for w in sets if w.id == chosen)
    frame = pd.DataFrame(
        {
            "field": FIELD_KEYS,
            "weight": [current.weights[k] for k in FIELD_KEYS],
            "mentions": [current.counts.get(k, 0) for k in FIELD_KEYS],
        }
    )
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(frame).mark_bar().encode(x="weight:Q", y=alt.Y("field:N", sort=list(FIELD_KEYS))), width="stretch"
    )
    right.altair_chart(
        alt.Chart(frame).mark_bar(color="#999").encode(x="mentions:Q", y=alt.Y("field:N", sort=list(FIELD_KEYS))), width="stretch"
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    st.subheader("Evidence")
    for key in FIELD_KEYS:
        count = current.counts.get(key, 0)
        with st.expander(f"{key}: {count} mention{'' if count == 1 else 's'}"):
            sentences = evidence(wb, key, current.params.get("source", "all"))
            st.markdown("\n".join(f"- {plain(s)}" for s in sentences) if sentences else "No sentence mentions this field.")
    st.subheader("History")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": w.id,
                    "name": w.name,
                    "active": w.active,
                    "reasonings": w.n_reasonings,
                    "floor": w.floor,
                    "source": w.params.get("source"),
                    "created by": w.created_by,
                    "created": w.created_at,
                }
                for w in sets
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    if actor.can("admin") and not current.active and st.button(f"Make {current.name} active"):
        try:
            activate_weight_set(wb, actor, current.id)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.success(f"{current.name} is now active.")
            st.rerun()
