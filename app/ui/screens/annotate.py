"""Annotate: the page dermatologists live on. One image at a time from the queue."""

from __future__ import annotations

import time

import streamlit as st
from pydantic import ValidationError

from app.ui import state
from app.ui.keyboard import show_shortcuts
from app.ui.widgets import caption_form, diagnosis_widget, image_panel, metadata_table, versions_table
from curation.errors import ConflictError
from curation.labelling.annotate import QUALITY_FLAGS, current_annotation, save_work, submit_annotation
from curation.labelling.queue import next_item, open_image, prefetch_next, remaining, skip
from curation.labelling.views import field_disagreements, image_detail, prefill_sources
from schema.errors import SkinflowError

# At 1366x768 the picture scrolled away while the diagnosis was chosen, and Submit sat below the fold: the picture
# stays in view (sticky in its column) while the form scrolls beside it, and the actions with the key list stay at
# the bottom of the window (sticky in the form column). The keyed blocks sit in wrappers of their own height, so
# the wrappers are what sticks. Less space above the title. A browser test measures both.
LAYOUT_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; }
[data-testid="stLayoutWrapper"]:has(> .st-key-annotate-picture) { position: sticky; top: 0.5rem; z-index: 1; }
[data-testid="stLayoutWrapper"]:has(> .st-key-annotate-actions) { position: sticky; bottom: 0; z-index: 5;
  background-color: rgb(255, 255, 255); padding: 0.5rem 0 0.25rem; border-top: 1px solid rgba(49, 51, 63, 0.2); }
</style>"""
KEY = "annotate_item"  # {"image_id", "loaded_at", "base_id"}: the image on screen and the version it edits
OPEN_IMAGE = "annotate_open"  # an image id the Dataset page asks this page to open


def _load_item(wb, actor) -> dict | None:
    opened = st.session_state.pop(OPEN_IMAGE, None)
    if opened is not None:  # the Dataset page's "Open image #N": this image, past the queue's order
        open_image(wb, actor, opened)
        mine = current_annotation(wb, actor, opened)
        item = {"image_id": opened, "loaded_at": time.time(), "base_id": mine["id"] if mine else None, "opened": True}
        st.session_state[KEY] = item
        return item
    item = st.session_state.get(KEY)
    if item is None:
        queued = next_item(wb, actor)
        if queued is None:
            return None
        mine = current_annotation(wb, actor, queued.image_id)
        item = {"image_id": queued.image_id, "loaded_at": time.time(), "base_id": mine["id"] if mine else None}
        st.session_state[KEY] = item
    return item


def _finish(message: str) -> None:
    st.session_state.pop(KEY, None)
    st.session_state.pop("annotate_conflict", None)
    st.session_state["annotate_notice"] = message
    st.rerun()


def _conflict(wb, actor, item, mine: dict) -> None:
    theirs = current_annotation(wb, actor, item["image_id"])
    st.warning("This annotation changed since you opened it. Nothing was overwritten: choose which version to keep.")
    current = f"Current version {theirs['version']} by {theirs['user']}"
    st.dataframe(versions_table(wb.taxonomy, {current: theirs, "Your version": mine}), width="stretch")
    try:
        differing = field_disagreements(theirs["caption"], mine["caption"])
    except ValidationError:  # an invalid form simply has no comparison
        differing = []
    st.caption("Fields that differ: " + (", ".join(differing) or "none"))
    keep_mine, keep_theirs = st.columns(2)
    if keep_mine.button("Submit mine on top of the current version", type="primary"):
        try:
            submit_annotation(
                wb,
                actor,
                item["image_id"],
                mine["caption"],
                diagnosis=mine["diagnosis"],
                diagnosis_status=mine["diagnosis_status"],
                supersedes_id=theirs["id"],
                quality_flags=mine["quality_flags"],
                rationale=mine["rationale"],
                seconds_spent=mine["seconds"],
                based_on_draft_id=mine["draft_id"],
            )
        except SkinflowError as e:
            state.show_error(e)
        else:
            _finish("Submitted your version.")
    if keep_theirs.button("Keep the current version"):
        _finish("Kept the current version.")


def _autosave(wb, actor, image_id: int, token: str, form: dict) -> None:
    """Every change to the form is kept as the user's saved draft, so a reload (or a crash) restores it: "Prefill
    from" offers "your saved draft" first. Streamlit reruns once per committed change (a term picked, a radio
    set, a text box left), never per keystroke, so this writes once per change. The untouched prefill is not
    saved: the first render of an image (per prefill source) is the baseline."""
    work = {key: value for key, value in form.items() if key != "seconds"}
    last = st.session_state.setdefault("annotate_autosaved", {})
    if (image_id, token) not in last:
        last[(image_id, token)] = work
    elif work != last[(image_id, token)]:
        try:
            save_work(wb, actor, image_id, {**work, "seconds": form["seconds"]})
        except SkinflowError as e:
            state.show_error(e)
        else:
            last[(image_id, token)] = work


def _open_detail(wb, actor, image_id: int):
    """The image to work on, its picture in hand; one whose picture is missing is skipped with a note."""
    try:
        detail = image_detail(wb, actor, image_id)
        if detail.missing:  # deleted behind the workbench's back: nobody can label what nobody can see
            skip(wb, actor, detail.id, reason="picture missing from the image store")
            _finish(
                f"Image #{detail.id} skipped: its picture is missing from the image store (an admin can list such "
                "images with `skinflow images verify`)."
            )
        prefetch_next(wb, actor, detail.id)  # the next picture downloads while this one is worked on
    except SkinflowError as e:
        state.show_error(e)
        return None
    return detail


def _picture(wb, actor, detail) -> None:
    if detail.path is not None:
        caption = f"image #{detail.id}, {detail.width}x{detail.height}"
        image_panel(wb, actor, detail.id, detail.path, caption, key=f"a{detail.id}", width=detail.width)
    st.markdown(f"**Source:** {detail.source} · **Fitzpatrick type:** {detail.fitzpatrick or 'unknown'}")
    if detail.meta:
        with st.expander("Metadata"):
            st.dataframe(metadata_table(detail.meta), hide_index=True, width="stretch")


def render() -> None:
    actor = state.require_role("annotator", "Annotating")
    wb = state.workbench()
    st.title("Annotate")
    # what the last action did goes in the status line under the title, which is always there: a success banner
    # above the form pushed the picture and the form down, then back on the next rerun
    notice = st.session_state.pop("annotate_notice", None)
    done = f":green[✓ {notice}] · " if notice else ""
    try:
        item = _load_item(wb, actor)
        left_count = remaining(wb, actor)
    except SkinflowError as e:
        state.show_error(e)
        return
    if item is None:
        if notice:
            st.success(notice)
        st.info("Nothing left in your queue. Thank you!")
        return
    opened = f"Image #{item['image_id']}, opened from the Dataset page · " if item.get("opened") else ""
    st.caption(f"{done}{opened}{left_count} images left in your queue")
    conflict = st.session_state.get("annotate_conflict")
    if conflict is not None:
        _conflict(wb, actor, item, conflict)
        return

    detail = _open_detail(wb, actor, item["image_id"])
    if detail is None:
        return
    st.html(LAYOUT_CSS)
    image_column, form_column = st.columns([2, 3])
    with image_column, st.container(key="annotate-picture"):
        _picture(wb, actor, detail)

    with form_column:
        sources = {source.token: source for source in prefill_sources(detail)}
        token = st.selectbox("Prefill from", list(sources), format_func=lambda t: sources[t].label, key=f"src-{detail.id}")
        # the remembered source may be gone (e.g. the saved draft was submitted): take the best one
        source = sources.get(token) or next(iter(sources.values()))
        token, caption, draft_id, form = source.token, source.caption, source.draft_id, source.form
        prefix = f"a-{detail.id}-{token}-"
        with st.container(key="kbd-fields"):  # what j / k move through (app/ui/keyboard.py)
            values = caption_form(
                prefix, caption, detail.disagreements if form is None else [], origins=source.fields, notes=source.notes
            )
            diagnosis, status = diagnosis_widget(
                prefix,
                wb.taxonomy,
                detail.diagnosis_key,
                detail.source_label,
                detail.suggested_diagnoses,
                form,
                source_group=detail.source_group,
            )
            flags = st.multiselect(
                "Quality flags",
                QUALITY_FLAGS,
                default=(form or {}).get("quality_flags", []),
                format_func=lambda f: f.replace("_", " "),
                key=f"{prefix}flags",
            )
            rationale = st.text_area(
                "Why this diagnosis? (optional)",
                value=(form or {}).get("rationale") or "",
                key=f"{prefix}why",
                help="Your reasoning: it feeds the attribute weights used in training.",
            )
        mine = {
            "caption": values,
            "diagnosis": diagnosis,
            "diagnosis_status": status,
            "quality_flags": flags,
            "rationale": rationale or None,
            "draft_id": draft_id,
            "seconds": round(time.time() - item["loaded_at"], 1),
        }
        _autosave(wb, actor, detail.id, token, mine)
        actions = st.container(key="annotate-actions")
        submit_col, save_col, skip_col = actions.columns(3)
        # stable container keys: the keyboard shortcuts (app/ui/keyboard.py) find the buttons by them
        if submit_col.container(key="kbd-submit").button("Submit", type="primary", key=f"{prefix}submit"):
            try:
                submit_annotation(
                    wb,
                    actor,
                    detail.id,
                    values,
                    diagnosis=diagnosis,
                    diagnosis_status=status,
                    supersedes_id=item["base_id"],
                    quality_flags=flags,
                    rationale=rationale or None,
                    seconds_spent=mine["seconds"],
                    based_on_draft_id=draft_id,
                )
            except ConflictError:
                st.session_state["annotate_conflict"] = mine
                st.rerun()
            except SkinflowError as e:
                state.show_error(e)
            else:
                _finish(f"Saved annotation of image #{detail.id}.")
        if save_col.container(key="kbd-save").button("Save draft", key=f"{prefix}save"):
            try:
                save_work(wb, actor, detail.id, {**mine, "caption": values})
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.success("Draft saved: it will be here when you come back to this image.")
        if skip_col.container(key="kbd-skip").button("Skip", key=f"{prefix}skip"):
            skip(wb, actor, detail.id)
            _finish(f"Skipped image #{detail.id}.")
        with actions:
            show_shortcuts()
