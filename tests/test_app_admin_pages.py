"""The curation and model pages through streamlit's AppTest, on a real workbench with the demo data: the dataset
table, admin settings and users, exports, suggestions, drafting, weights, the reader study and evaluations."""

from __future__ import annotations

import re

import pytest
import streamlit as st
from sqlalchemy import select

from curation.labelling.annotate import submit_annotation
from curation.store.auth import get_actor
from curation.store.models import Annotation, Image
from tests.app_pages import by_label, give_lesions, login, page


def test_dataset_filters_and_history(demo_home):
    at = page(demo_home, "dataset", "reviewer")
    at.multiselect[0].set_value(["verified"]).run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert set(frame["status"]) == {"verified"} and frame["thumbnail"].str.startswith("data:image/jpeg;base64,").all()
    history = at.dataframe[1].value
    assert "review: verified" in set(history["what"])


def test_admin_settings_and_users(demo_home):
    at = page(demo_home, "admin", "admin")
    form_inputs = at.number_input
    form_inputs[0].set_value(2)
    [b for b in at.button if b.label == "Save settings"][0].click().run()
    from curation.store.workflow import get_workflow_settings

    assert get_workflow_settings(demo_home).overlap == 2
    at.text_input[0].input("drjones")
    [b for b in at.button if b.label == "Add user"][0].click().run()
    assert any("Created drjones" in m.value for m in at.success)
    assert get_actor(demo_home, "drjones").role == "annotator"
    users = lambda: dict(zip(at.dataframe[0].value["username"], at.dataframe[0].value["role"], strict=True))  # noqa: E731
    assert users()["drjones"] == "annotator"  # the table of the same run shows the new user
    at.text_input(key="role_user").input("drjones")
    at.selectbox(key="role_role").select("reviewer")
    [b for b in at.button if b.label == "Set role"][0].click().run()
    assert users()["drjones"] == "reviewer"  # and the new role, not the old one

    from curation.store import auth

    for n in range(auth.MAX_FAILED_LOGINS):  # locked by failed logins: the Admin page unlocks it
        with pytest.raises(auth.InvalidCredentials):
            auth.authenticate(demo_home, "drjones", f"guess-{n}")
    at.text_input(key="role_user").input("drjones")
    [b for b in at.button if b.label == "Unlock"][0].click().run()
    assert any(f"Unlocked drjones ({auth.MAX_FAILED_LOGINS} failed" in m.value for m in at.success)
    with pytest.raises(auth.InvalidCredentials, match="wrong username or password"):  # checked again, not locked
        auth.authenticate(demo_home, "drjones", "guess-again")


def test_admin_export_offers_a_download(demo_home, tmp_path):
    at = page(demo_home, "admin", "admin")
    export_input = [t for t in at.text_input if t.label.startswith("Export folder")][0]
    export_input.input(str(tmp_path / "ui-export"))
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert any("Exported" in m.value for m in at.success)
    assert (tmp_path / "ui-export" / "manifest.json").exists()
    assert any(b.label == "Download the export (zip)" for b in at.get("download_button"))


def test_the_admin_page_does_not_build_the_export_zip_on_every_rerun(demo_home, tmp_path, monkeypatch):
    import io
    import zipfile

    from app.ui.screens import admin

    built = []
    real = admin._zip_folder
    monkeypatch.setattr(admin, "_zip_folder", lambda folder: built.append(folder) or real(folder))
    at = page(demo_home, "admin", "admin")
    [t for t in at.text_input if t.label.startswith("Export folder")][0].input(str(tmp_path / "v1"))
    [b for b in at.button if b.label == "Export"][0].click().run()
    for _ in range(3):
        at.run()  # any interaction on the page
    assert built == []  # only a click on the download button builds it
    names = zipfile.ZipFile(io.BytesIO(real(tmp_path / "v1"))).namelist()
    assert "v1/manifest.json" in names and "v1/records.jsonl" in names


def test_admin_export_takes_formats_and_filters(demo_home, tmp_path):
    import json

    at = page(demo_home, "admin", "admin")
    [t for t in at.text_input if t.label.startswith("Export folder")][0].input(str(tmp_path / "ui-filtered"))
    by_label(at.multiselect, "Extra formats (JSONL + Parquet are always written)").set_value(["grpo", "csv"])
    by_label(at.multiselect, "Only these Fitzpatrick types (empty: all)").set_value([5, 6])
    by_label(at.checkbox, "Include annotated but unverified records").check()
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert not at.exception and any("Exported" in m.value for m in at.success), [e.value for e in at.error]
    folder = tmp_path / "ui-filtered"
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert records and {r["fitzpatrick"] for r in records} <= {5, 6}
    assert (folder / "grpo" / "stage1.jsonl").exists() and (folder / "records.csv").exists()


def test_model_suggestions_are_one_click_choices(demo_home):
    from curation.assist.drafts import add_draft

    admin = get_actor(demo_home, "admin")
    for image_id in range(1, 13):
        add_draft(
            demo_home,
            admin,
            image_id,
            kind="model",
            producer="skinflow-tiny",
            version="run-1",
            caption={"color": ["brown"]},
            diagnoses=[{"key": "seborrheic keratosis", "score": 0.7}, {"key": "melanoma", "score": 0.2}],
        )
    at = login("annotator")
    image_id = at.session_state["annotate_item"]["image_id"]
    source = at.selectbox(key=f"src-{image_id}")
    # the routed draft prefills the form; without evidence yet, each field from the first source in the old order
    # that filled it: Color from the model suggestion (all it wrote), the others from the synthetic draft
    assert source.format_func(source.value) == "best source per field"
    assert by_label(at.multiselect, "Color").value == ["brown"]
    assert {c.value for c in at.caption if c.value.startswith("from ")} == {"from model run\\-1", "from synthetic draft"}
    pills = by_label(at.button_group, "Suggested diagnoses")
    shown = list(pills.options)  # as shown: its key, the label, its probability
    assert re.fullmatch(r"1 · Seborrheic keratosis — .+ · \d+%", shown[0]) and re.fullmatch(r"2 · .+ · \d+%", shown[1])
    pills.set_value("melanoma").run()
    assert by_label(at.radio, "Diagnosis").value == "Confirm"  # the choice stays on screen with a suggestion picked
    by_label(at.button, "Submit").click().run()
    annotator = get_actor(demo_home, "annotator")
    with demo_home.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.image_id == image_id, Annotation.user_id == annotator.id))
        expected = "confirmed" if s.get(Image, image_id).diagnosis_key == "melanoma" else "corrected"
        assert (row.diagnosis_key, row.diagnosis_status) == ("melanoma", expected) and row.caption["color"] == ["brown"]
    image_id = at.session_state["annotate_item"]["image_id"]  # the next image: a suggestion, but uncertain
    by_label(at.button_group, "Suggested diagnoses").set_value("melanoma").run()
    by_label(at.radio, "Diagnosis").set_value("Uncertain").run()
    by_label(at.button, "Submit").click().run()
    with demo_home.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.image_id == image_id, Annotation.user_id == annotator.id))
        assert (row.diagnosis_key, row.diagnosis_status) == ("melanoma", "uncertain")


def test_drafting_page_tests_the_connection_and_drafts(demo_home, monkeypatch):
    from tests.fake_llm import FakeLLM

    with FakeLLM(modes={}) as server:
        monkeypatch.setenv("SKINFLOW_LLM_BASE_URL", server.url)
        monkeypatch.setenv("SKINFLOW_LLM_MODEL", "fake-vlm")
        st.cache_resource.clear()  # the app's cached workbench holds the settings it was opened with
        at = page(demo_home, "drafting", "admin")
        assert not at.exception and [t.value for t in at.title] == ["LLM drafting"]
        by_label(at.button, "Test connection").click().run()
        assert any("The server answered" in m.value for m in at.success)
        by_label(at.button, "Start drafting").click().run()
        assert any(m.value.startswith("Drafted 12 of 12 images") for m in at.success), [m.value for m in at.success]
    with demo_home.session() as s:
        from curation.store.models import Draft

        assert len(s.scalars(select(Draft).where(Draft.kind == "llm", Draft.error.is_(None))).all()) == 12


def test_weights_page_computes_shows_evidence_and_activates(demo_home):
    from curation.assist.weights import list_weight_sets

    annotator = get_actor(demo_home, "annotator")
    with demo_home.session() as s:
        pending = s.scalars(select(Image.id).where(Image.status == "pending")).all()
    submit_annotation(
        demo_home,
        annotator,
        pending[0],
        {"color": "red"},
        diagnosis="psoriasis",
        diagnosis_status="confirmed",
        rationale="Red plaques with silvery scale on the elbows.",
    )
    at = page(demo_home, "weights", "admin")
    # one rationale (plus the demo's): the page says how few and asks before a set that would become active
    few = [w.value for w in at.warning if w.value.startswith("Only ")]
    assert few and "reasoning" in few[0] and by_label(at.button, "Compute").disabled
    assert list_weight_sets(demo_home) == []
    by_label(at.checkbox, "Compute from only").check().run()
    by_label(at.button, "Compute").click().run()
    assert any("Created weights-v1 from 1 reasoning (active)" in m.value for m in at.success)
    shown = re.sub(r"\\(.)", r"\1", " ".join(m.value for m in at.markdown))  # what markdown displays: escapes removed
    assert "Red plaques with silvery scale on the elbows." in shown
    by_label(at.button, "Compute").click().run()  # a second set is not active until asked
    at.selectbox[-1].set_value(list_weight_sets(demo_home)[0].id).run()
    by_label(at.button, "Make weights-v2 active").click().run()
    assert [w.active for w in list_weight_sets(demo_home)] == [True, False]
    denied = page(demo_home, "weights", "annotator")
    assert denied.error and "needs the reviewer role" in denied.error[0].value
    denied = page(demo_home, "drafting", "reviewer")
    assert denied.error and "needs the admin role" in denied.error[0].value


def test_reader_study_page_creates_rates_and_reports(demo_home):
    from curation.assist.drafts import add_draft

    admin = get_actor(demo_home, "admin")
    with demo_home.session() as s:
        verified = [i.id for i in s.scalars(select(Image).where(Image.status == "verified"))]
    for image_id in verified:
        add_draft(demo_home, admin, image_id, kind="llm", producer="gpt-x", version="p1", caption={"color": ["red"]})
    at = page(demo_home, "reader_study", "admin")
    assert not at.exception
    by_label(at.text_input, "Study name").input("pilot")
    from curation.labelling.reader_study import available_sources

    by_label(at.multiselect, "Sources").set_value([s["key"] for s in available_sources(demo_home)][:2])
    [b for b in at.button if b.label == "Create study"][0].click().run()
    assert not at.exception and any("created" in m.value for m in at.success), [e.value for e in at.error]
    at = page(demo_home, "reader_study", "reviewer")
    sliders = [s for s in at.select_slider if s.label.startswith("Output 1: correctness")]
    assert sliders
    sliders[0].set_value(5)
    [b for b in at.button if b.label == "Submit ratings"][0].click().run()
    assert not at.exception
    from curation.labelling.reader_study import list_studies

    assert list_studies(demo_home, get_actor(demo_home, "reviewer"))[0]["ratings"] == 2
    assert any(b.label == "Submit ratings" for b in at.button) or any("rated every item" in m.value for m in at.success)
    means = at.dataframe[0].value  # the Results tab: per-source means
    assert set(means["scale"]) == {"correctness", "usefulness", "trust"} and means["mean"].notna().all()
    assert any(b.label == "Download ratings (CSV)" for b in at.get("download_button"))


def test_evaluation_page_shows_reports_side_by_side(demo_home, tmp_path):
    from schema.fields import FIELD_KEYS
    from schema.taxonomy import default_taxonomy
    from tests.test_evaluate import PREDICTIONS
    from trainer.data import ExportData
    from trainer.evaluate import evaluate, write_report

    rows2 = [
        {"id": i, "image": f"{i}.jpg", "split": "test", "diagnosis_key": k, "fitzpatrick": 1}
        for i, k in ((1, "psoriasis"), (2, "melanoma"), (3, "melanoma"), (4, "psoriasis"), (5, "dermatofibroma"))
    ]
    data = ExportData(
        tmp_path, [], rows2, {k: 1 / 11 for k in FIELD_KEYS}, "u", default_taxonomy(), {"caption": "", "diagnosis": ""}
    )
    for name in ("run-a", "run-b"):
        write_report(evaluate(PREDICTIONS, data), demo_home.settings.home / "reports" / name, title=name)
    at = page(demo_home, "evaluation", "reviewer")
    assert not at.exception and [t.value for t in at.title] == ["Evaluation"]
    assert any("top1" in m.value for m in at.markdown)
    assert at.dataframe and set(at.dataframe[-1].value.columns) == {"run-a", "run-b"}


def test_admin_export_keeps_lesions_in_one_split_by_default(demo_home, tmp_path):
    import json

    give_lesions(demo_home, lambda image_id: f"L-{image_id % 3}")  # three lesions of four images
    at = page(demo_home, "admin", "admin")
    assert by_label(at.multiselect, "Keep images sharing these metadata columns").value == ["lesion_id"]
    [t for t in at.text_input if t.label.startswith("Export folder")][0].input(str(tmp_path / "lesions"))
    by_label(at.checkbox, "Include annotated but unverified records").check()
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert not at.exception and any("Exported" in m.value for m in at.success), [e.value for e in at.error]
    manifest = json.loads((tmp_path / "lesions" / "manifest.json").read_text())
    assert manifest["split"]["group_by"] == ["lesion_id"]
    splits: dict[str, set[str]] = {}
    for line in (tmp_path / "lesions" / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        splits.setdefault(record["group_keys"]["lesion_id"], set()).add(record["split"])
    assert splits and all(len(s) == 1 for s in splits.values())


def test_admin_export_warns_when_everything_lands_in_train_and_offers_to_replace_the_folder(demo_home, tmp_path):
    give_lesions(demo_home, lambda image_id: "one-patient")  # every image shares the column: one group
    at = page(demo_home, "admin", "admin")
    [t for t in at.text_input if t.label.startswith("Export folder")][0].input(str(tmp_path / "all-train"))
    by_label(at.checkbox, "Include annotated but unverified records").check()
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert not at.exception and any("Exported" in m.value for m in at.success), [e.value for e in at.error]
    said = " ".join(w.value for w in at.warning)
    assert "every record is in train" in said and "lesion" in said
    # the same folder again: refused, and the page names its own way out
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert at.error and "Replace the folder if it exists" in at.error[0].value
    by_label(at.checkbox, "Replace the folder if it exists").check()
    [b for b in at.button if b.label == "Export"][0].click().run()
    assert not at.error and any("Exported" in m.value for m in at.success)
