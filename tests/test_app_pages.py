"""Every page through streamlit's AppTest, on a real SQLite workbench with the demo data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from curation.labelling.annotate import submit_annotation
from curation.ops.demo import build_demo
from curation.store.auth import get_actor, set_password
from curation.store.db import open_workbench
from curation.store.models import Annotation, Draft, Image
from curation.store.settings import Settings
from curation.store.workflow import update_workflow_settings
from tests.conftest import PASSWORDS

APP = str(Path(__file__).resolve().parents[1] / "app" / "ui" / "main.py")


def by_label(elements, label: str):
    """The widget whose label starts with `label` (how a person finds it)."""
    matches = [e for e in elements if e.label.startswith(label)]
    assert len(matches) == 1, [e.label for e in elements]
    return matches[0]


def login(username: str, password: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(username)
    at.text_input[1].input(password or PASSWORDS[username])
    at.button[0].click().run()
    return at


def test_login_good_and_bad_password(demo_home):
    bad = login("annotator", "wrong-password")
    assert bad.error and "wrong username or password" in bad.error[0].value
    assert "actor" not in bad.session_state
    good = login("annotator")
    assert good.session_state["actor"].username == "annotator"
    assert [t.value for t in good.title] == ["Annotate"]


def test_annotate_submit_writes_an_annotation_with_user_and_draft(demo_home):
    at = login("annotator")
    assert not at.exception
    image_id = at.session_state["annotate_item"]["image_id"]
    by_label(at.multiselect, "Color").set_value(["brown", "black"])
    by_label(at.radio, "Number").set_value("few")
    by_label(at.button, "Submit").click().run()
    assert not at.exception and not at.success  # no banner pushing the page down: the status line says it
    assert any(f"✓ Saved annotation of image #{image_id}." in c.value for c in at.caption)
    with demo_home.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id.desc()).limit(1))
        assert row.user.username == "annotator"
        assert row.caption["color"] == ["brown", "black"] and row.caption["number"] == "few"
        assert row.based_on_draft_id is not None  # prefilled from the synthetic draft
        assert row.seconds_spent is not None
    assert at.session_state["annotate_item"]["image_id"] != image_id  # the next image is loaded


def test_skip_moves_on_and_save_draft_restores(demo_home):
    at = login("annotator")
    first = at.session_state["annotate_item"]["image_id"]
    by_label(at.text_area, "Other").input("check the border again")
    by_label(at.button, "Save draft").click().run()
    assert at.success and "Draft saved" in at.success[0].value
    by_label(at.button, "Skip").click().run()
    assert at.session_state["annotate_item"]["image_id"] != first
    with demo_home.session() as s:
        assert s.get(Image, first).status == "pending"


def test_conflict_shows_both_versions_and_overwrites_nothing(demo_home):
    at = login("annotator")
    image_id = at.session_state["annotate_item"]["image_id"]
    by_label(at.button, "Submit").click().run()  # version 1
    # reopen the same image for editing, then a reviewer edits it meanwhile
    annotator, reviewer = get_actor(demo_home, "annotator"), get_actor(demo_home, "reviewer")
    with demo_home.session() as s:
        v1 = s.scalar(select(Annotation.id).where(Annotation.image_id == image_id, Annotation.user_id == annotator.id))
    at.session_state["annotate_item"] = {"image_id": image_id, "loaded_at": 0.0, "base_id": v1}
    at.run()
    submit_annotation(
        demo_home,
        reviewer,
        image_id,
        {"color": ["violaceous"]},
        diagnosis="melanoma",
        diagnosis_status="corrected",
        supersedes_id=v1,
    )
    assert at.selectbox(key=f"src-{image_id}").value == "current"  # editing starts from the submitted version
    by_label(at.multiselect, "Color").set_value(["yellow"])
    by_label(at.button, "Submit").click().run()
    assert at.warning and "changed since you opened it" in at.warning[0].value
    with demo_home.session() as s:
        versions = s.scalars(select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id)).all()
        assert [a.caption["color"] for a in versions] != [] and versions[-1].caption["color"] == ["violaceous"]
        count = len(versions)
    at.button[[b.label for b in at.button].index("Submit mine on top of the current version")].click().run()
    assert not at.error, at.error[0].value
    with demo_home.session() as s:
        versions = s.scalars(select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id)).all()
        assert len(versions) == count + 1 and versions[-1].caption["color"] == ["yellow"] and versions[-1].version == 3


def _page(name):
    import importlib

    importlib.import_module(f"app.ui.screens.{name}").render()


def page(wb, name: str, username: str) -> AppTest:
    """One page rendered for a logged-in user (what st.navigation shows at that page's url)."""
    import time

    at = AppTest.from_function(_page, args=(name,), default_timeout=30)
    at.session_state["actor"] = get_actor(wb, username)
    at.session_state["login_at"] = time.time()
    return at.run()


def test_review_adjudication_verifies(demo_home):
    at = page(demo_home, "review", "reviewer")
    assert not at.exception and [t.value for t in at.title] == ["Review"]
    image_id = int(at.selectbox[0].options[at.selectbox[0].index].split("#")[1].split()[0])
    at.button(key=f"adj-{image_id}-0-go").click().run()
    assert not at.exception and at.success and f"Adjudicated image #{image_id}" in at.success[0].value
    reviewer = get_actor(demo_home, "reviewer")
    with demo_home.session() as s:
        image = s.get(Image, image_id)
        assert image.status == "verified" and s.get(Annotation, image.verified_annotation_id).user_id == reviewer.id


def test_review_verify_as_is(demo_home):
    at = page(demo_home, "review", "reviewer")
    image_id = int(at.selectbox[0].options[at.selectbox[0].index].split("#")[1].split()[0])
    verify = [b for b in at.button if b.label.startswith("Verify demo-annotator")][0]
    verify.click().run()
    assert at.success and f"Verified image #{image_id}" in at.success[0].value
    with demo_home.session() as s:
        assert s.get(Image, image_id).status == "verified"


def test_review_says_in_words_which_fields_two_annotations_differ_in(demo_home):
    from curation.store.auth import add_user

    admin = get_actor(demo_home, "admin")
    with demo_home.session() as s:
        image_id = s.scalar(select(Image.id).where(Image.status == "pending").order_by(Image.id))
    for name, colour in (("dr_a", "brown"), ("dr_b", "black")):
        add_user(demo_home, admin, name, "annotator")
        submit_annotation(
            demo_home,
            get_actor(demo_home, name),
            image_id,
            {"color": [colour], "shape": ["round"]},
            diagnosis="melanoma",
            diagnosis_status="corrected",
        )
    at = page(demo_home, "review", "reviewer")
    at.selectbox(key="review_item").set_value(image_id).run()  # the item is chosen by its image
    assert not at.exception
    said = [c.value for c in at.caption if c.value.startswith("Differ")]
    assert said == ["Differ (highlighted): Color"]  # in words; it printed the score dicts
    assert not [c.value for c in at.caption if "{" in c.value]


def test_insights_shows_who_to_trust_for_what(demo_home):
    at = page(demo_home, "insights", "reviewer")
    assert not at.exception and "Who to trust for what" in [h.value for h in at.subheader]
    table = at.dataframe[-1].value
    assert "synthetic:skinflow-demo:1" in table.columns and list(table.index)[:2] == ["color", "location"]
    assert table.loc["color", "best"] == "not enough evidence"  # 3 verified demo images: under min_evidence (20)


@pytest.mark.parametrize("name,title", [("dataset", "Dataset"), ("insights", "Insights"), ("admin", "Admin")])
def test_pages_render_for_their_role(demo_home, name, title):
    at = page(demo_home, name, "admin")
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == [title]


@pytest.mark.parametrize(
    "name,username",
    [("review", "annotator"), ("dataset", "annotator"), ("insights", "annotator"), ("admin", "annotator"), ("admin", "reviewer")],
)
def test_role_denied_for_each_page(demo_home, name, username):
    at = page(demo_home, name, username)
    assert at.error and "needs the" in at.error[0].value and not at.title


def test_navigation_shows_only_pages_the_role_may_use(demo_home):
    for username, expected in (("annotator", "Annotate"), ("admin", "Annotate")):
        at = login(username)
        assert [t.value for t in at.title] == [expected]
    # logging out returns to the login form
    at = login("annotator")
    at.sidebar.button[0].click().run()
    assert "actor" not in at.session_state and at.info and "logged out" in at.info[0].value


def test_pages_are_registered_by_url_path_per_role_and_open_there(demo_home):
    """The sidebar's pages are each screen's render(), told apart by url_path alone (no wrapper functions)."""

    def registered(at):  # AppTest's registry of the pages st.navigation declared in this run
        return {info["url_pathname"]: page_hash for page_hash, info in at._registered_pages.items()}

    assert set(registered(login("annotator"))) == {""}  # Annotate is the default page: it lives at the root
    assert set(registered(login("reviewer"))) == {"", "review", "reader-study", "dataset", "insights", "weights", "evaluation"}
    admin = login("admin")
    pages = registered(admin)
    assert set(pages) == {
        "",
        "review",
        "reader-study",
        "dataset",
        "insights",
        "weights",
        "drafting",
        "evaluation",
        "train",
        "admin",
    }
    for url_path, title in (("train", "Train"), ("reader-study", "Reader study"), ("admin", "Admin")):
        admin._page_hash = pages[url_path]  # what the browser does when it opens /<url_path>
        admin.run()
        assert not admin.exception and [t.value for t in admin.title][:1] == [title]


def test_session_expires(demo_home):
    from datetime import timedelta

    from curation.store.models import LoginSession, utcnow

    update_workflow_settings(demo_home, get_actor(demo_home, "admin"), session_minutes=5)
    at = login("annotator")
    with demo_home.session() as s:
        [session] = s.scalars(select(LoginSession)).all()
        created, expires = session.created_at, session.expires_at
        assert abs((expires - created) - timedelta(minutes=5)) < timedelta(seconds=1)  # session_minutes
        session.expires_at = utcnow() - timedelta(seconds=1)  # five minutes later
    at.run()
    assert "actor" not in at.session_state and at.info and "expired" in at.info[0].value


def test_a_role_or_password_change_reaches_open_sessions(demo_home):
    from curation.store.auth import set_password, set_role

    admin = get_actor(demo_home, "admin")
    demoted = login("reviewer")
    other_tab = login("annotator")
    assert demoted.session_state["actor"].role == "reviewer"
    set_role(demo_home, admin, "reviewer", "annotator")
    demoted.run()  # the next interaction sees the account as it is now
    assert "actor" not in demoted.session_state and "account changed" in demoted.info[0].value
    again = login("reviewer")  # logging in again gives the new role
    assert again.session_state["actor"].role == "annotator"
    set_password(demo_home, admin, "annotator", "a-new-password-1")
    other_tab.run()
    assert "actor" not in other_tab.session_state and "account changed" in other_tab.info[0].value


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


def test_review_lists_suspicious_labels_and_sends_them_back(demo_home):
    from curation.assist.drafts import NewDraft, add_drafts
    from curation.store.models import Image as ImageRow

    admin = get_actor(demo_home, "admin")
    with demo_home.session() as s:
        labelled = [(i.id, i.diagnosis_key) for i in s.scalars(select(ImageRow).order_by(ImageRow.id)) if i.diagnosis_key]
    keys = sorted({k for _, k in labelled})
    assert len(keys) >= 2
    wrong = labelled[0][0]
    drafts = []
    for image_id, key in labelled:  # the model agrees with every label but the first image's
        other = next(k for k in keys if k != key)
        best, second = (other, key) if image_id == wrong else (key, other)
        drafts.append(
            NewDraft(
                image_id=image_id,
                kind="model",
                producer="skinflow",
                version="run-9:stage2",
                caption=None,
                diagnoses=[{"key": best, "score": 0.97}, {"key": second, "score": 0.02}],
            )
        )
    add_drafts(demo_home, admin, drafts)
    at = page(demo_home, "review", "reviewer")
    assert not at.exception
    send = by_label(at.multiselect, "Send back for review")
    assert wrong in send.options or f"image #{wrong}" in send.options
    send.set_value([wrong]).run()
    by_label(at.button, "Send back").click().run()
    assert not at.exception
    with demo_home.session() as s:
        assert s.get(ImageRow, wrong).meta.get("label_issue", {}).get("suggested")


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


def test_hostile_text_from_a_csv_or_an_llm_reply_is_shown_as_text(demo_home):
    """A source label or reply with markdown or HTML cannot add markup, links or remote images to a page."""
    from curation.assist.drafts import add_draft

    hostile = "![pixel](http://127.0.0.1:9/track.png) <img src=x onerror=alert(1)> **bold**"
    admin = get_actor(demo_home, "admin")
    with demo_home.session() as s:
        for image in s.scalars(select(Image).where(Image.status == "pending")):
            image.diagnosis_key, image.source_label = None, hostile
            add_draft(demo_home, admin, image.id, kind="llm", producer="evil", version="1", caption={"other": hostile})
    at = login("annotator")
    assert not at.exception
    rendered = " ".join(m.value for m in at.markdown)
    import re

    assert "Source label:" in rendered
    assert not re.search(r"(?<!\\)<img", rendered) and not re.search(r"(?<!\\)!(?<!\\)\[pixel", rendered)  # nothing unescaped
    assert "\\!\\[pixel\\]" in rendered  # shown, escaped
    other = [t for t in at.text_area if t.label.startswith("Other")] + [t for t in at.text_input if t.label.startswith("Other")]
    assert other and other[0].value == hostile  # an editable plain-text field, the reply as it was


def _shown_as_markdown(at) -> list[str]:
    """Every text the page renders as markdown (what a browser would turn into links, images and markup)."""
    kinds = ("markdown", "caption", "info", "success", "warning", "error", "title", "header", "subheader")
    values = [str(element.value) for kind in kinds for element in getattr(at, kind)]
    return values + [str(getattr(element, "label", "")) for element in at.expander]


def _assert_inert(values: list[str], where: str) -> int:
    """The hostile fragment, wherever it is shown as markdown, has every special character escaped."""
    import re

    seen = 0
    for value in values:
        for fragment in re.findall(r"PWNED(.*?)ENDPWNED", value, flags=re.S):
            seen += 1
            assert not re.search(r"(?<!\\)[\[\]()<>!:*]", fragment), (where, fragment)
    return seen


def test_untrusted_text_is_inert_on_every_page_that_shows_it(demo_home, monkeypatch, tmp_path):
    """CSV labels, annotator rationales, LLM reasonings and replies, a run's log and error messages quoting a
    file name: shown, but never as links, images or markup (one rule: app/ui/widgets.plain)."""
    import zipfile

    from curation.assist.weights import create_weight_set
    from curation.labelling.annotate import review_annotation
    from curation.store.models import TrainingRun
    from tests.fake_llm import HOSTILE_TEXT, FakeLLM

    admin, annotator, reviewer = (get_actor(demo_home, n) for n in ("admin", "annotator", "reviewer"))
    with demo_home.session() as s:
        for image in s.scalars(select(Image)):
            image.diagnosis_key, image.source_label = None, HOSTILE_TEXT
        rated = s.scalar(select(Image.id).where(Image.status == "pending").order_by(Image.id))
        s.add(TrainingRun(preset="tiny", status="failed", config={}, error="error: " + HOSTILE_TEXT, created_by=admin.id))
    annotation_id = submit_annotation(
        demo_home,
        annotator,
        rated,
        {"color": ["erythematous"]},
        diagnosis="psoriasis",
        diagnosis_status="corrected",
        rationale="The erythematous color decides it. " + HOSTILE_TEXT,
    )
    review_annotation(demo_home, reviewer, annotation_id, "verified")
    create_weight_set(demo_home, admin, source="annotator", activate=True)

    shown = 0
    annotate = login("annotator")
    shown += _assert_inert(_shown_as_markdown(annotate), "annotate")
    for name, user in (("review", "reviewer"), ("weights", "reviewer"), ("train", "admin"), ("dataset", "reviewer")):
        at = page(demo_home, name, user)
        assert not at.exception, (name, at.exception)
        shown += _assert_inert(_shown_as_markdown(at), name)
    # an error message that quotes a hostile archive entry name (Admin page, zip upload)
    bundle = tmp_path / "hostile.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("../PWNED ![p](http://127.0.0.1:9/p.png) ENDPWNED.jpg", b"x")
    at = page(demo_home, "admin", "admin")
    at.get("file_uploader")[0].set_value(("hostile.zip", bundle.read_bytes(), "application/zip"))
    at.run()
    next(b for b in at.button if b.label == "Import zip").click().run()
    assert at.error and "nothing was imported" in at.error[0].value
    shown += _assert_inert(_shown_as_markdown(at), "admin")
    # the drafting page's connection test shows what the server answered
    with FakeLLM(modes={None: "hostile_text"}) as server:
        monkeypatch.setenv("SKINFLOW_LLM_BASE_URL", server.url)
        monkeypatch.setenv("SKINFLOW_LLM_MODEL", "fake-vlm")
        st.cache_resource.clear()  # the app's cached workbench holds the settings it was opened with
        at = page(demo_home, "drafting", "admin")
        next(b for b in at.button if b.label == "Test connection").click().run()
        assert at.success and "PWNED" in at.success[0].value
        shown += _assert_inert(_shown_as_markdown(at), "drafting")
    # an evaluation report whose labels came from a partner's export (Evaluation renders the report file)
    report = demo_home.settings.home / "reports" / "partner"
    report.mkdir(parents=True)
    (report / "report.json").write_text('{"headline": {"top1": 0.5}}')
    (report / "report.md").write_text(
        "# Report\n\n| label | train count | n | top-1 |\n|---|---|---|---|\n| " + HOSTILE_TEXT + " | 3 | 2 | 0.500 |\n"
    )
    at = page(demo_home, "evaluation", "reviewer")
    assert not at.exception and at.markdown
    shown += _assert_inert(_shown_as_markdown(at), "evaluation")
    assert any("\\| 3 \\|" not in m.value and "| 3 |" in m.value for m in at.markdown)  # still a table
    assert shown >= 7  # it was really on the pages: annotate, review, weights, train, admin, drafting, evaluation

    # a username that is an address (usernames allow dots): text in the sidebar, never a link
    from curation.store.auth import add_user

    add_user(demo_home, admin, "www.attacker.example", "annotator", "attacker-pass-1")
    at = login("www.attacker.example", "attacker-pass-1")
    captions = [c.value for c in at.sidebar.caption if "Logged in as" in c.value]
    assert captions and "www\\.attacker\\.example" in captions[0], captions


@pytest.fixture
def routed_home(tmp_path, monkeypatch):
    """30 demo images, 24 verified. On the verified ones an LLM gets every field right but shape and a model every
    field right but color; the images still to annotate get an LLM and a model draft that differ in both."""
    from curation.assist.drafts import add_draft
    from curation.assist.evidence import source_evidence

    home = tmp_path / "wb"
    monkeypatch.setenv("SKINFLOW_HOME", str(home))
    monkeypatch.delenv("SKINFLOW_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    wb = open_workbench(Settings.load())
    build_demo(wb, None, n=30, seed=0, verified_fraction=0.8, annotated_fraction=0.0)
    admin = get_actor(wb, "admin")
    for name, password in PASSWORDS.items():
        set_password(wb, admin, name, password)
    update_workflow_settings(wb, admin, gold_rate=0.0)
    with wb.session() as s:
        rows = [
            (i.id, s.get(Annotation, i.verified_annotation_id).caption if i.verified_annotation_id else None)
            for i in s.scalars(select(Image))
        ]
    for image_id, truth in rows:
        if truth:
            llm, model = {**truth, "shape": ["linear"]}, {**truth, "color": ["yellow"]}
        else:
            llm, model = {"color": ["brown"], "shape": ["oval"]}, {"color": ["erythematous"], "shape": ["round"]}
        add_draft(wb, admin, image_id, kind="llm", producer="vision-model", version="v1", caption=llm)
        add_draft(wb, admin, image_id, kind="model", producer="skinflow", version="run-9:stage2", caption=model)
    report = source_evidence(wb, get_actor(wb, "reviewer"))
    assert (report.chosen["color"], report.chosen["shape"]) == ("llm:vision-model:v1", "model:skinflow:run-9:stage2")
    yield wb
    st.cache_resource.clear()


def test_the_annotate_form_takes_each_field_from_its_best_source_and_says_which(routed_home):
    at = login("annotator")
    assert not at.exception
    prefill = at.selectbox[0]
    assert prefill.options[prefill.index] == "best source per field"  # the default
    fields = {m.label.split("  ")[0]: m.value for m in at.multiselect}
    assert fields["Color"] == ["brown"]  # from the LLM, which wins color on held-out images
    assert fields["Shape"] == ["round"]  # from the model, which wins shape
    origins = [c.value for c in at.caption if c.value.startswith("from ")]
    assert "from LLM vision\\-model" in origins and "from model run\\-9\\:stage2" in origins
    with routed_home.session() as s:
        routed = s.scalars(select(Draft).where(Draft.kind == "routed")).all()
        assert len(routed) == 1 and routed[0].meta["fields"]["shape"] == "model:skinflow:run-9:stage2"
    # each single source is still offered
    assert {"llm: vision-model v1", "model: skinflow run-9:stage2"} <= set(prefill.options)
    # a newer evidence snapshot re-routes the image; the open form keeps what the annotator changed
    from curation.assist.drafts import add_draft
    from curation.assist.evidence import refresh_evidence

    color = next(m for m in at.multiselect if m.label.startswith("Color"))
    color.set_value(["black"]).run()
    with routed_home.session() as s:
        verified = s.scalar(select(Image.id).where(Image.status == "verified"))
    add_draft(
        routed_home,
        get_actor(routed_home, "admin"),
        verified,
        kind="synthetic",
        producer="other",
        version="2",
        caption={"color": ["black"]},
    )
    refresh_evidence(routed_home)
    at.run()
    assert next(m for m in at.multiselect if m.label.startswith("Color")).value == ["black"]
    with routed_home.session() as s:
        assert len(s.scalars(select(Draft).where(Draft.kind == "routed")).all()) == 2  # routed again, new snapshot


def test_the_annotate_form_says_what_salvage_changed_or_dropped_in_the_draft(demo_home):
    from curation.assist.drafts import add_draft
    from curation.assist.salvage import salvage_caption

    admin = get_actor(demo_home, "admin")
    caption, notes = salvage_caption({"color": ["red"], "number": "2", "size_mm": 0, "confidence": 0.9})
    with demo_home.session() as s:
        needing = [i.id for i in s.scalars(select(Image).where(Image.status.in_(("pending", "annotated"))))]
    for image_id in needing:
        meta = {"salvage": [n.to_json() for n in notes]}
        add_draft(demo_home, admin, image_id, kind="llm", producer="gpt-x", version="p1", caption=caption, meta=meta)
    at = page(demo_home, "annotate", "annotator")
    assert not at.exception
    shown = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("⚠")]  # as read, unescaped
    assert any("number changed (was 2)" in c and "few" in c for c in shown), shown  # under Number
    assert any("confidence ignored" in c for c in shown), shown  # not a field: above the form
    fields = {m.label.split("  ")[0]: m.value for m in at.multiselect}
    assert fields["Color"] == ["erythematous"]  # the salvaged caption prefills the form
    # Size is routed from the synthetic draft (the LLM's was dropped); the LLM's draft alone shows its size note
    image_id = at.session_state["annotate_item"]["image_id"]
    with demo_home.session() as s:
        draft_id = s.scalar(select(Draft.id).where(Draft.image_id == image_id, Draft.kind == "llm"))
    at.selectbox(key=f"src-{image_id}").set_value(f"d{draft_id}").run()
    shown = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("⚠")]
    assert any("size_mm dropped (was 0)" in c for c in shown), shown  # the measurement's note goes with Size


def _give_lesions(wb, lesion_of) -> None:
    """Lesion ids on the demo images, as a HAM10000 or PAD-UFES-20 import brings them."""
    with wb.session() as s:
        for image in s.scalars(select(Image)):
            image.meta = {**(image.meta or {}), "lesion_id": lesion_of(image.id)}


def test_annotate_and_review_show_the_other_images_of_the_same_lesion(demo_home):
    _give_lesions(demo_home, lambda image_id: "L-1")
    at = page(demo_home, "annotate", "annotator")
    assert not at.exception
    assert any(m.value.startswith("**Other images of the same lesion or patient** (11;") for m in at.markdown)
    shown = [c.value.replace("\\", "") for c in at.caption if "same lesion_id" in c.value.replace("\\", "")]
    assert len(shown) == 11 and all("same lesion_id L-1" in c for c in shown), shown
    review = page(demo_home, "review", "reviewer")
    assert not review.exception and any(m.value.startswith("**Other images of the same lesion") for m in review.markdown)


def test_admin_export_keeps_lesions_in_one_split_by_default(demo_home, tmp_path):
    import json

    _give_lesions(demo_home, lambda image_id: f"L-{image_id % 3}")  # three lesions of four images
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
    _give_lesions(demo_home, lambda image_id: "one-patient")  # every image shares the column: one group
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
