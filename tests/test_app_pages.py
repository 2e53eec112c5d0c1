"""Every page through streamlit's AppTest, on a real SQLite workbench with the demo data."""

from __future__ import annotations

import pytest
import streamlit as st
from sqlalchemy import select

from curation.labelling.annotate import submit_annotation
from curation.ops.demo import build_demo
from curation.store.auth import get_actor, set_password
from curation.store.db import open_workbench
from curation.store.models import Annotation, AuditEvent, Draft, Image
from curation.store.settings import Settings
from curation.store.workflow import update_workflow_settings
from tests.app_pages import by_label, give_lesions, login, page
from tests.conftest import PASSWORDS


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


def test_an_image_whose_picture_is_gone_is_skipped_with_a_note_naming_it(demo_home):
    from curation.labelling.queue import next_item

    annotator = get_actor(demo_home, "annotator")
    first = next_item(demo_home, annotator).image_id  # what the page will serve: gone from the store meanwhile
    with demo_home.session() as s:
        key = s.get(Image, first).file_path
    demo_home.images.delete(key)
    at = login("annotator")
    assert not at.exception and not at.error
    shown = at.session_state["annotate_item"]["image_id"]
    assert shown != first and any(f"Image #{first} skipped: its picture is missing" in c.value for c in at.caption)
    with demo_home.session() as s:
        assert s.get(Image, first).status == "pending"  # skipped for this person only: nothing else changed
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "queue.skip", AuditEvent.entity_id == first))
        assert event is not None and event.payload["reason"] == "picture missing from the image store"


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


def test_annotate_and_review_show_the_other_images_of_the_same_lesion(demo_home):
    give_lesions(demo_home, lambda image_id: "L-1")
    at = page(demo_home, "annotate", "annotator")
    assert not at.exception
    assert any(m.value.startswith("**Other images of the same lesion or patient** (11;") for m in at.markdown)
    shown = [c.value.replace("\\", "") for c in at.caption if "same lesion_id" in c.value.replace("\\", "")]
    assert len(shown) == 11 and all("same lesion_id L-1" in c for c in shown), shown
    review = page(demo_home, "review", "reviewer")
    assert not review.exception and any(m.value.startswith("**Other images of the same lesion") for m in review.markdown)
