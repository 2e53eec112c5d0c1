"""Admin: users and roles, import (folder or zip upload), a source's own labels accepted in bulk, export with
download, workflow settings."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app.ui import state
from app.ui.widgets import plain
from curation.export.dataset import export_dataset
from curation.export.formats import EXTRA_FORMATS
from curation.export.neardup import DEFAULT_MAX_DISTANCE, MAX_SUPPORTED_DISTANCE
from curation.export.records import ExportFilter, export_choices
from curation.ingest.archive import import_zip
from curation.ingest.folder import import_folder
from curation.labelling.source_labels import LABEL_KINDS, verify_source_labels
from curation.store.auth import add_user, list_users, set_password, set_role, unlock
from curation.store.models import ROLES
from curation.store.workflow import QUEUE_STRATEGIES, get_workflow_settings, update_workflow_settings
from schema.errors import SkinflowError
from schema.files import TEMP_PREFIX, temp_owner_tag


def _report(report) -> None:
    st.success(
        f"imported {report.imported}, already present {report.already_present}, "
        f"duplicates {len(report.duplicates)}, failed {len(report.failed)}"
    )
    if report.failed:
        st.dataframe(pd.DataFrame(report.failed, columns=["item", "reason"]), hide_index=True, width="stretch")


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as bundle:  # images are compressed already
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return buffer.getvalue()


def _users(wb, actor) -> None:
    table = st.empty()  # filled last: after this run's action, so a new user or a new role shows at once
    with st.form("add_user", clear_on_submit=True):
        name = st.text_input("New username")
        role = st.selectbox("Role", ROLES)
        if st.form_submit_button("Add user"):
            try:
                _, password = add_user(wb, actor, name, role)
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.success(f"Created {name}. Password (shown once): {password}")
    with st.form("set_role"):
        name = st.text_input("Username", key="role_user")
        role = st.selectbox("New role", ROLES, key="role_role")
        c1, c2, c3 = st.columns(3)
        change_role = c1.form_submit_button("Set role")
        reset = c2.form_submit_button("Reset password")
        release = c3.form_submit_button("Unlock", help="Forget the account's failed logins: it may log in at once")
    if change_role or reset or release:
        try:
            if change_role:
                set_role(wb, actor, name, role)
                st.success(f"{name} is now {role}.")
            elif release:
                failures = unlock(wb, actor, name)
                st.success(f"Unlocked {name} ({failures} failed login(s) forgotten).")
            else:
                st.success(f"New password for {name} (shown once): {set_password(wb, actor, name)}")
        except SkinflowError as e:
            state.show_error(e)
    table.dataframe(pd.DataFrame(list_users(wb, actor)), hide_index=True, width="stretch")


def _import(wb, actor) -> None:
    folder = st.text_input("Folder on the server (recursive)")
    label_from_folder = st.checkbox("Use each image's folder name as its label")
    if st.button("Import folder") and folder:
        try:
            _report(import_folder(wb, actor, Path(folder).expanduser(), label_from_folder=label_from_folder))
        except SkinflowError as e:
            state.show_error(e)
    upload = st.file_uploader("Or upload a zip of images", type=["zip"])
    if upload is not None and st.button("Import zip"):
        # inside the workbench (owner-only, and swept by `doctor --fix` if the app is killed mid-import), not in the
        # system temp folder, where another account could read the patients' pictures and nothing cleans up
        with tempfile.NamedTemporaryFile(
            prefix=f"{TEMP_PREFIX}{temp_owner_tag()}upload", suffix=".zip", dir=wb.settings.home
        ) as handle:
            handle.write(upload.getvalue())
            handle.flush()
            try:
                _report(import_zip(wb, actor, Path(handle.name), label_from_folder=label_from_folder))
            except SkinflowError as e:
                state.show_error(e)


def _source_labels(wb, actor, sources: list[str]) -> None:
    """The bulk path from a public dataset to an export: accept the rows' own labels, chosen by provenance."""
    st.subheader("Accept a source's own labels")
    st.caption(
        "For a public dataset whose labels you trust as they are (e.g. HAM10000 rows with dx_type histo): they export "
        "with 'Labels: source' or 'both', marked as source labels with their provenance. Captions are still annotated "
        "per image. Undo takes them back; both are in the audit trail."
    )
    with st.form("source-labels"):
        source = st.selectbox("Source", sources)
        where = st.text_input("Only rows where (COLUMN=VALUE, several values as V1|V2; empty: every row)", "dx_type=histo")
        accept, undo = st.columns(2)
        accepted = accept.form_submit_button("Accept these labels")
        undone = undo.form_submit_button("Undo: stop accepting them")
    if (accepted or undone) and source:
        try:
            result = verify_source_labels(wb, actor, source, [w for w in where.split(",") if w.strip()], undo=undone)
        except SkinflowError as e:
            state.show_error(e)
        else:
            done = "no longer accepted" if undone else "accepted"
            st.success(f"{plain(source)}: {result.matched} rows match, {result.changed} source labels {done} now.")
            if result.without_label:
                st.warning(f"{result.without_label} matching rows have a label outside the taxonomy: annotate them.")


def _export(wb, actor) -> None:
    taxonomy = wb.taxonomy
    names = {label.display: key for key, label in sorted(taxonomy.labels.items(), key=lambda kv: kv[1].display)}
    choices = export_choices(wb)
    with st.form("export"):
        out = st.text_input("Export folder (a new one per version)", value=str(wb.settings.home / "exports" / "v1"))
        formats = st.multiselect(
            "Extra formats (JSONL + Parquet are always written)",
            EXTRA_FORMATS,
            help="grpo is what `skinflow train` reads; hf: datasets.load_from_disk; labelstudio: tasks + config",
        )
        label_kinds = st.radio(
            "Labels",
            LABEL_KINDS,
            horizontal=True,
            help="verified: annotations verified in review; source: source labels accepted above (no curated caption); "
            "both: an image's verified annotation wins",
        )
        include_unverified = st.checkbox("Include annotated but unverified records")
        labels = st.multiselect("Only these labels (empty: all)", list(names))
        groups = st.multiselect("Only these groups (empty: all)", taxonomy.groups3() + taxonomy.groups9())
        fitzpatrick = st.multiselect("Only these Fitzpatrick types (empty: all)", [1, 2, 3, 4, 5, 6])
        sources = st.multiselect("Only these sources (empty: all)", choices.sources)
        holdout = st.multiselect("Held-out labels: whole classes only in test (zero-shot split)", list(names))
        dedup = st.checkbox("Keep near-duplicate images in one split", value=True)
        distance = st.slider("Near-duplicate distance (perceptual hash bits)", 0, MAX_SUPPORTED_DISTANCE, DEFAULT_MAX_DISTANCE)
        group_by = st.multiselect(
            "Keep images sharing these metadata columns in one split (a lesion, a patient)",
            choices.metadata_columns,
            default=choices.default_group_by,
        )
        metadata_columns = st.multiselect(
            "Imported metadata columns to export with each record (age, sex, site, skin tone, license ...)",
            choices.metadata_columns,
        )
        raw_ids = st.checkbox(
            "Write those ids as imported (they may identify patients)",
            help="By default each record's group_keys holds pseudonyms (a keyed hash with this workbench's key); "
            "the data card says which",
        )
        overwrite = st.checkbox(
            "Replace the folder if it exists", help="Exports are versioned: replace one only if nothing used it yet"
        )
        submitted = st.form_submit_button("Export")
    if submitted:
        selection = ExportFilter(
            include_unverified=include_unverified,
            labels=tuple(names[n] for n in labels),
            groups=tuple(groups),
            fitzpatrick=tuple(fitzpatrick),
            sources=tuple(sources),
            holdout_labels=tuple(names[n] for n in holdout),
            max_hash_distance=distance if dedup else None,
            group_by=tuple(group_by),
            raw_group_keys=raw_ids,
            label_kinds=label_kinds,
            metadata_columns=tuple(metadata_columns),
        )
        try:
            result = export_dataset(wb, actor, out.strip(), selection=selection, formats=tuple(formats), overwrite=overwrite)
        except SkinflowError as e:
            state.show_error(e)
        else:
            st.session_state["last_export"] = str(result.path)
            splits = ", ".join(f"{name} {count}" for name, count in result.by_split.items())
            st.success(f"Exported {result.n_records} records to {plain(result.path)} ({splits}).")
            if result.split_warning():
                st.warning(plain(result.split_warning()))
    last = st.session_state.get("last_export")
    if last and Path(last).exists():
        # a callable: the zip is built when the button is clicked, not in memory on every rerun of this page
        st.download_button(
            "Download the export (zip)",
            lambda: _zip_folder(Path(last)),
            file_name=f"{Path(last).name}.zip",
            mime="application/zip",
        )


def _settings(wb, actor) -> None:
    current = get_workflow_settings(wb)
    with st.form("settings"):
        overlap = st.number_input("Annotators per image", 1, 10, current.overlap)
        lease = st.number_input("Lease (minutes an image stays reserved)", 1, 1440, current.lease_minutes)
        strategy = st.selectbox("Queue order", QUEUE_STRATEGIES, index=QUEUE_STRATEGIES.index(current.queue_strategy))
        gold = st.slider("Gold item rate", 0.0, 0.5, current.gold_rate, 0.01)
        threshold = st.slider("Disagreement threshold (field score)", 0.0, 1.0, current.disagreement_threshold, 0.05)
        session = st.number_input("Session length (minutes)", 5, 7 * 24 * 60, current.session_minutes)
        if st.form_submit_button("Save settings"):
            try:
                update_workflow_settings(
                    wb,
                    actor,
                    overlap=int(overlap),
                    lease_minutes=int(lease),
                    queue_strategy=strategy,
                    gold_rate=float(gold),
                    disagreement_threshold=float(threshold),
                    session_minutes=int(session),
                )
            except SkinflowError as e:
                state.show_error(e)
            else:
                st.success("Settings saved.")


def render() -> None:
    actor = state.require_role("admin", "The admin page")
    wb = state.workbench()
    st.title("Admin")
    users, imports, exports, settings = st.tabs(["Users", "Import", "Export", "Settings"])
    with users:
        _users(wb, actor)
    with imports:
        _import(wb, actor)
    with exports:
        _source_labels(wb, actor, export_choices(wb).sources)
        _export(wb, actor)
    with settings:
        _settings(wb, actor)
