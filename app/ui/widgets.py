"""Form pieces shared by the Annotate and Review pages."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from app.ui.viewer import ZOOM_HINT, zoomable_image
from curation.labelling.browse import thumbnail
from curation.labelling.views import related_images
from schema.caption import Caption
from schema.fields import FIELDS, ORDINAL_VALUES, is_filled
from schema.taxonomy import Taxonomy
from schema.vocabulary import default_vocabulary

NOT_APPLICABLE = "not applicable"
DIAGNOSIS_CHOICES = ("Confirm", "Correct", "Uncertain")


def term_label(field: str):
    """How a vocabulary term is shown in its field's picker: the term and its first synonym, which makes it findable
    by either."""
    synonyms = default_vocabulary().synonyms[field]

    def label(term: str) -> str:
        extra = synonyms.get(term, ())[:1]  # one synonym: searchable, and the chips stay short
        return f"{term} ({', '.join(extra)})" if extra else term  # typing a synonym finds the term

    return label


# Streamlit's multiselect keeps its chosen terms on one scrolling line, so "brown (hyperpigmented)" showed as
# "brow": let the chips wrap onto more lines, and a long term wrap inside its chip, so every prefilled term
# reads at a glance (a browser test measures that none is cut).
READABLE_CHIPS_CSS = """<style>
[data-testid="stMultiSelect"] .react-aria-ComboBox > [role="group"] { height: auto; max-height: none; }
[data-testid="stMultiSelectTagsContainer"] { flex-wrap: wrap; overflow: visible; height: auto; padding: 2px 0; }
[data-testid="stMultiSelect"] [data-tag] { max-width: 100%; height: auto; }
[data-testid="stMultiSelect"] [data-tag] span[title] { white-space: normal; overflow: visible; text-overflow: clip; }
</style>"""


def readable_chips() -> None:
    st.html(READABLE_CHIPS_CSS)


def caption_form(
    prefix: str,
    initial: dict[str, Any] | None,
    disagreements: list[str] = (),
    origins: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The 11 fields, prefilled from `initial`. Accepting a prefilled value costs no click. `origins` says where
    each prefilled value came from (a routed draft: field -> source), `notes` what salvage changed or dropped in the
    draft (field -> text; "" for keys that are not fields), each shown under its field.
    Returns the raw values; schema.validate_caption normalises and checks them."""
    caption = Caption.model_validate(initial) if initial else Caption()
    notes = notes or {}
    if notes.get(""):
        st.caption(f"⚠ {plain(notes[''])}")
    vocab = default_vocabulary()
    values: dict[str, Any] = {}
    left, right = st.columns(2)
    for index, field in enumerate(FIELDS):
        column = left if index % 2 == 0 else right
        mark = "  ⚠ drafts disagree" if field.key in disagreements else ""
        with column:
            current = getattr(caption, field.key)
            if field.kind == "multi":
                options = list(vocab.terms[field.key]) + [t for t in current if t not in vocab.terms[field.key]]
                values[field.key] = st.multiselect(
                    field.label + mark,
                    options,
                    default=list(current),
                    format_func=term_label(field.key),
                    accept_new_options=True,
                    key=f"{prefix}{field.key}",
                    help="Type to search terms and synonyms; press Enter to add a new term "
                    "(it is flagged for vocabulary review).",
                )
            elif field.kind == "ordinal":
                options = [NOT_APPLICABLE, *ORDINAL_VALUES[field.key]]
                values[field.key] = st.radio(
                    field.label + mark,
                    options,
                    index=options.index(current) if current else 0,
                    horizontal=True,
                    key=f"{prefix}{field.key}",
                )
                if values[field.key] == NOT_APPLICABLE:
                    values[field.key] = None
                if field.key == "size":
                    values["size_mm"] = (
                        st.number_input(
                            "Measured size (mm, optional)",
                            min_value=0.0,
                            max_value=1000.0,
                            value=caption.size_mm,
                            step=0.5,
                            key=f"{prefix}size_mm",
                        )
                        or None
                    )
            else:
                values[field.key] = st.text_area(field.label + mark, value=current, key=f"{prefix}{field.key}", height=80)
            if origins and origins.get(field.key) and is_filled(current):  # an empty box is nobody's
                st.caption(f"from {plain(source_name(origins[field.key]))}")
            if notes.get(field.key):
                st.caption(f"⚠ {plain(notes[field.key])}")
    return values


def source_name(source: str) -> str:
    """A draft source ("kind:producer:version") as people say it: "LLM vision-model", "model run-3:stage2"."""
    kind, _, rest = source.partition(":")
    producer, _, version = rest.partition(":")
    names = {"llm": f"LLM {producer}", "model": f"model {version}", "synthetic": "synthetic draft"}
    return names.get(kind, source)


# ':' too: GFM turns a bare "http://2130706433:18777/" into a link (no dot needed); "http\://" is inert.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:&])")


def plain(text: object) -> str:
    """Untrusted text made inert inside markdown: every markdown and HTML character escaped, so it cannot add
    links, images (a request to any server), markup or autolinked URLs.

    The rule for every page: text that a user, a CSV, an archive, a Label Studio pull, an LLM, a prediction
    file or a log wrote is shown either as data (st.text, st.code, st.json, a dataframe, a widget's value or
    options) or through plain() inside st.markdown / st.caption / st.info / st.success / st.warning /
    st.error / labels. Literal text of our own needs neither. tests/test_app_pages.py visits every page with
    hostile text in every source."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


# what makes markdown reach out or mark up: links and images ([ ] ( ) !), HTML and autolinks (< > : and the dots of
# www.x.example), emphasis (* _ ~)
_MARKDOWN_ACTIVE = re.compile(r"([\\\[\]()!<>:.*_~&])")


def report_markdown(text: str) -> str:
    """A report file's markdown made inert but still laid out: its tables and headings stay, while nothing in it
    (labels a partner's export put into the tables) can become a link, an image, HTML or an autolinked address.
    For whole documents of our own layout around untrusted cells; single untrusted texts go through plain()."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", text)


def taxonomy_label(taxonomy: Taxonomy, key: str) -> str:
    label = taxonomy.labels.get(key)
    return f"{label.display} — {label.group9} / {label.group3}" if label else key


def _shown(value: Any) -> str:
    """A stored value as a table cell: a list comma-joined, nothing as a dash."""
    return ", ".join(map(str, value)) if isinstance(value, list) else ("—" if value in (None, "") else str(value))


def metadata_table(meta: dict[str, Any]) -> Any:
    """An image's metadata as a two-column table (readable, unlike raw JSON); nested keys read "a.b"."""
    import pandas as pd

    rows: list[dict[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            rows.append({"field": prefix, "value": _shown(value)})

    walk("", meta)
    return pd.DataFrame(rows, columns=["field", "value"])


def versions_table(taxonomy: Taxonomy, versions: dict[str, dict[str, Any]]) -> Any:
    """Annotations side by side, one column per version (its name), one row per field, then the diagnosis and,
    where the versions have them, its status, flags and rationale (Review and the edit-conflict view)."""
    import pandas as pd

    def diagnosis(v: dict[str, Any]) -> str:
        key = v.get("diagnosis_key") or (v.get("diagnosis") if v.get("diagnosis") in taxonomy.labels else None)
        return taxonomy_label(taxonomy, key) if key else (v.get("diagnosis_text") or v.get("diagnosis") or "—")

    rows = {f.label: [_shown(v["caption"].get(f.key)) for v in versions.values()] for f in FIELDS}
    rows["Diagnosis"] = [diagnosis(v) for v in versions.values()]
    if all("diagnosis_status" in v for v in versions.values()):
        rows["Status"] = [v["diagnosis_status"] for v in versions.values()]
    if all("quality_flags" in v for v in versions.values()):
        rows["Flags"] = [", ".join(v["quality_flags"] or ()) or "—" for v in versions.values()]
    if all("rationale" in v for v in versions.values()):
        rows["Rationale"] = [v["rationale"] or "—" for v in versions.values()]
    return pd.DataFrame(rows, index=list(versions)).T


def diagnosis_widget(
    prefix: str,
    taxonomy: Taxonomy,
    source_key: str | None,
    source_label: str | None,
    suggestions: dict[str, float],
    initial: dict[str, Any] | None = None,
    source_group: str | None = None,
) -> tuple[str | None, str]:
    """Confirm the source label, correct it (search the taxonomy, or free text), or mark it uncertain.
    `source_group`: the group a source label names when it spans several conditions (HAM10000 bkl).
    `suggestions`: key -> probability, best first; each is shown with its probability and its key (1-6), and a
    picked one keeps the Confirm / Correct / Uncertain choice on screen (Uncertain still applies to it).
    Returns (diagnosis key or free text, diagnosis status)."""
    initial = initial or {}
    if source_key:
        st.markdown(f"**Source label:** {taxonomy_label(taxonomy, source_key)}")
    elif source_label and source_group:
        st.markdown(
            f"**Source label:** {plain(source_label)} — group {plain(source_group)} "
            "(the source names a group of conditions: pick the label if you can)"
        )
    elif source_label:
        st.markdown(f"**Source label:** {plain(source_label)} (not in the taxonomy)")
    else:
        st.markdown("**Source label:** none")
    picked = None
    if suggestions:  # one click (or its key) takes a suggestion; clicking it again clears it
        ranked = list(suggestions)
        picked = st.pills(
            "Suggested diagnoses (key 1-6, or click)",
            ranked,
            format_func=lambda k: f"{ranked.index(k) + 1} · {taxonomy_label(taxonomy, k)} · {suggestions[k]:.0%}",
            selection_mode="single",
            key=f"{prefix}dx_pill",
        )
    status_index = {"confirmed": 0, "corrected": 1, "uncertain": 2}.get(initial.get("diagnosis_status"), 0 if source_key else 1)
    choice = st.radio("Diagnosis", DIAGNOSIS_CHOICES, index=status_index, horizontal=True, key=f"{prefix}dx_choice")
    if picked:
        status = "uncertain" if choice == "Uncertain" else ("confirmed" if picked == source_key else "corrected")
        st.caption(f"Diagnosis: {taxonomy_label(taxonomy, picked)} ({status}; the suggestion replaces the search)")
        return picked, status
    if choice == "Confirm":
        return (source_key or source_label), "confirmed"
    keys = list(dict.fromkeys([*suggestions, *sorted(taxonomy.labels, key=lambda k: taxonomy.labels[k].display.lower())]))
    default = initial.get("diagnosis_key") or initial.get("diagnosis_text") or initial.get("diagnosis")
    if default and default not in keys:
        keys.insert(0, default)
    if suggestions:
        st.caption("Suggested: " + "; ".join(taxonomy_label(taxonomy, k) for k in suggestions))
    picked = st.selectbox(
        "Diagnosis (search the taxonomy, or type free text)",
        keys,
        index=keys.index(default) if default in keys else None,
        format_func=lambda k: ("suggested: " if k in suggestions else "") + taxonomy_label(taxonomy, k),
        accept_new_options=True,
        placeholder="Type to search",
        key=f"{prefix}dx_pick",
    )
    if picked and picked not in taxonomy.labels:
        match = taxonomy.normalise(picked)
        st.caption(f"→ {taxonomy_label(taxonomy, match)}" if match else "→ kept as free text (not in the taxonomy)")
    return picked, ("corrected" if choice == "Correct" else "uncertain")


def image_panel(wb, actor, image_id: int, path, caption: str, key: str, width: int | None = None) -> None:
    """The picture, zoomable (app/ui/viewer.py); beside it, on request, another picture of the same lesion or
    patient; below, thumbnails of all of those (they share a split in exports)."""
    related = related_images(wb, actor, image_id)
    by_id = {other.id: other for other in related}
    compare = None
    if related:
        compare = st.selectbox(
            "Compare with",
            [None, *by_id],
            format_func=lambda i: "nothing" if i is None else f"#{i} (same {by_id[i].column} {by_id[i].value})",
            key=f"compare-{key}",
        )
    if compare is None:
        zoomable_image(path, key, caption, width)
    else:  # one above the other, each the column's width: side by side they were 169 px wide at 1366x768
        other = by_id[compare]
        zoomable_image(path, key, caption, width)
        zoomable_image(other.path, f"{key}-compare", f"#{other.id} · same {other.column} · {other.status}")
    st.caption(ZOOM_HINT)
    if not related:
        return
    st.markdown(f"**Other images of the same lesion or patient** ({len(related)}; they share a split in exports)")
    columns = st.columns(2)  # four to a row drew them 24 px wide beside the form
    for index, other in enumerate(related):
        data = thumbnail(wb, other.id, 240)
        with columns[index % 2]:
            if data:
                st.image(data, width="stretch")
            label = f" · source label {plain(other.source_label)}" if other.source_label else ""
            st.caption(f"#{other.id} · same {other.column} {plain(other.value)} · {other.status}{label}")
