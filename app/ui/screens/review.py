"""Review: items that need a decision; side-by-side annotations; verify or adjudicate."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.keyboard import REVIEW_SHORTCUTS, show_shortcuts
from app.ui.widgets import caption_form, diagnosis_widget, image_panel, plain, taxonomy_label, versions_table
from curation.labelling.annotate import adjudicate, review_annotation
from curation.labelling.label_issues import send_back_for_review, suspicious_labels
from curation.labelling.review import review_items
from curation.labelling.views import image_detail
from curation.labelling.vocabulary import decide_term, pending_terms
from schema.errors import SkinflowError
from schema.fields import FIELDS

FIELD_LABELS = {f.key: f.label for f in FIELDS}
DIFFERS = "background-color: #fff3cd; font-weight: 600"
ITEM = "review_item"  # the position of the item on screen in the list


def _suspicious(wb, actor) -> None:
    """Likely label errors (cleanlab over the model's suggestions); chosen ones go back for review."""
    issues = suspicious_labels(wb, actor)
    with st.expander(f"Suspicious labels ({len(issues)})", expanded=False):
        if not issues:
            st.caption("None found. This needs model suggestions (Train page: activate a run) and at least two labels.")
            return
        st.caption(
            "Ranked by cleanlab from the active model's diagnosis scores: the model gives these labels the least "
            "probability. Source labels of web-scraped sets are the usual suspects."
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "image": i.image_id,
                        "label": taxonomy_label(wb.taxonomy, i.label),
                        "from": i.label_source,
                        "model suggests": taxonomy_label(wb.taxonomy, i.suggested),
                        "model's probability of the label": round(i.label_quality, 3),
                        "status": i.status,
                    }
                    for i in issues
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        chosen = st.multiselect("Send back for review", [i.image_id for i in issues], format_func=lambda i: f"image #{i}")
        if chosen and st.button("Send back"):
            by_id = {i.image_id: i for i in issues}
            for image_id in chosen:
                send_back_for_review(
                    wb,
                    actor,
                    [image_id],
                    note={"suggested": by_id[image_id].suggested, "label_quality": round(by_id[image_id].label_quality, 4)},
                )
            st.session_state["review_notice"] = f"Sent {len(chosen)} image(s) back for review."
            st.rerun()


def _new_terms(wb, actor) -> None:
    """Terms annotators added that the vocabulary lacks: accept them (with synonyms) or reject them."""
    terms = pending_terms(wb, actor)
    with st.expander(f"New vocabulary terms ({len(terms)})", expanded=False):
        if not terms:
            st.caption("None waiting. Terms an annotator adds to a caption field appear here.")
            return
        st.caption(
            "Accepted terms join this workbench's vocabulary (with their synonyms); rejected ones leave this list "
            "and stay in the annotations that use them."
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "field": FIELD_LABELS[t.field],
                        "term": t.term,
                        "annotations": t.annotations,
                        "images": ", ".join(f"#{i}" for i in t.image_ids),
                    }
                    for t in terms
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        chosen = st.selectbox("Term", terms, format_func=lambda t: f"{FIELD_LABELS[t.field]}: {t.term}", key="vocab_term")
        synonyms = st.text_input("Synonyms (comma-separated, optional)", key="vocab_synonyms")
        accept, reject = st.columns(2)
        decision = None
        if accept.button("Accept into the vocabulary", key="vocab_accept"):
            decision = True
        if reject.button("Reject", key="vocab_reject"):
            decision = False
        if decision is not None:
            names = tuple(n.strip() for n in synonyms.split(",") if n.strip())
            try:
                decide_term(wb, actor, chosen.field, chosen.term, accept=decision, synonyms=names if decision else ())
            except SkinflowError as e:
                st.error(str(e))
                return
            verb = "Accepted" if decision else "Rejected"
            st.session_state["review_notice"] = f"{verb} {chosen.term!r} ({FIELD_LABELS[chosen.field]})."
            st.rerun()


def _after(image_id: int | None, listed: list[int]) -> int:
    """The item after `image_id` in the list, wrapping round; the most urgent one when it is not listed."""
    if image_id not in listed:
        return listed[0]
    return listed[(listed.index(image_id) + 1) % len(listed)]


def _next_item(listed: list[int]) -> None:
    st.session_state[ITEM] = _after(st.session_state.get(ITEM), listed)


def _source_label(wb, detail) -> str:
    if detail.diagnosis_key:
        return taxonomy_label(wb.taxonomy, detail.diagnosis_key)
    if detail.source_group:
        return f"{plain(detail.source_label)} — group {plain(detail.source_group)}"
    return plain(detail.source_label or "none")


def render() -> None:
    actor = state.require_role("reviewer", "Reviewing")
    wb = state.workbench()
    st.title("Review")
    notice = st.session_state.pop("review_notice", None)
    if notice:
        st.success(notice)
    _suspicious(wb, actor)
    _new_terms(wb, actor)
    items = review_items(wb, actor)
    if not items:
        st.info("Nothing waiting for review.")
        return
    counts = pd.Series([i.reason for i in items]).value_counts()
    st.caption(" · ".join(f"{reason}: {n}" for reason, n in counts.items()))
    # the choice is the image, not a position: a position kept its old label on screen when the list changed
    by_id = {i.image_id: i for i in items}
    if st.session_state.get(ITEM) not in by_id:  # decided (it left the list), or the first visit: the most urgent
        st.session_state[ITEM] = next(iter(by_id))
    image_id = st.selectbox("Item", list(by_id), format_func=lambda i: f"image #{i} — {by_id[i].reason}", key=ITEM)
    item = by_id[image_id]
    detail = image_detail(wb, actor, item.image_id)
    heads = item.heads
    image_column, table_column = st.columns([2, 3])
    with image_column:
        if detail.path is not None:
            image_panel(wb, actor, detail.id, detail.path, f"image #{detail.id}", key=f"r{detail.id}", width=detail.width)
        st.markdown(f"**Source label:** {_source_label(wb, detail)}")
    with table_column:
        table = versions_table(wb.taxonomy, {f"{h['user']} v{h['version']}": h for h in heads})
        differing = {FIELD_LABELS[k] for pair in item.pairs for k, v in pair.scores.items() if v < 1}
        if any(not pair.same_label for pair in item.pairs):
            differing.add("Diagnosis")
        # the annotations side by side, the rows where they differ highlighted
        st.dataframe(
            table.style.apply(lambda row: [DIFFERS if row.name in differing else ""] * len(row), axis=1),
            width="stretch",
        )
        if len(heads) > 1:
            st.caption(
                "Differ (highlighted): "
                + (", ".join(label for label in [*FIELD_LABELS.values(), "Diagnosis"] if label in differing) or "nothing")
            )
        verifiable = [h for h in heads if h["user"] != actor.username or actor.role == "admin"]
        for number, head in enumerate(verifiable, start=1):
            # `v` presses the button when it is the only one (app/ui/keyboard.py)
            if st.container(key=f"kbd-verify-{number}").button(
                f"Verify {head['user']}'s version as it is", key=f"verify-{head['id']}"
            ):
                try:
                    review_annotation(wb, actor, head["id"], "verified")
                except SkinflowError as e:
                    state.show_error(e)
                else:
                    st.session_state["review_notice"] = f"Verified image #{item.image_id}."
                    st.rerun()
    st.subheader("Adjudicate")
    st.caption("Write the final record: it is stored as your annotation and verified.")
    start = st.selectbox(
        "Start from",
        range(len(heads)),
        format_func=lambda i: f"{heads[i]['user']} v{heads[i]['version']}",
        key=f"adj-start-{item.image_id}",
    )
    base = heads[start]
    prefix = f"adj-{item.image_id}-{start}-"
    with st.container(key="kbd-fields"):  # the Annotate keys work here too (app/ui/keyboard.py)
        values = caption_form(prefix, base["caption"])
        diagnosis, status = diagnosis_widget(
            prefix, wb.taxonomy, detail.diagnosis_key, detail.source_label, {}, base, source_group=detail.source_group
        )
    go, later = st.columns(2)
    later.container(key="kbd-skip").button(
        "Next item", key="review-next", on_click=_next_item, args=(list(by_id),), help="Leaves this one in the list"
    )
    show_shortcuts(REVIEW_SHORTCUTS)
    if go.container(key="kbd-submit").button("Adjudicate and verify", type="primary", key=f"{prefix}go"):
        try:
            adjudicate(
                wb,
                actor,
                item.image_id,
                values,
                diagnosis=diagnosis,
                diagnosis_status=status,  # "uncertain" is stored as uncertain, never as confirmed
            )
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.session_state["review_notice"] = f"Adjudicated image #{item.image_id}."
            st.rerun()
