"""Vocabulary review: new caption terms are listed, accepted (with synonyms) into the workbench's vocabulary, or
rejected; from the library, the CLI and the Review page."""

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app as cli
from curation.errors import ConflictError, NotFound, PermissionDenied
from curation.labelling.annotate import submit_annotation
from curation.labelling.vocabulary import decide_term, pending_terms
from curation.store.db import open_workbench
from curation.store.models import Annotation, AuditEvent, Image, VocabularyTerm
from schema import Caption
from schema.vocabulary import default_vocabulary, use_local_terms


@pytest.fixture(autouse=True)
def packaged_vocabulary_after():
    yield
    use_local_terms({})  # the vocabulary is process-wide: leave the packaged one for the next test


def _images(wb, n):
    with wb.session() as s:
        images = [Image(source="test", status="pending", sha256=f"{i:064x}", file_path=f"aa/{i}.jpg") for i in range(n)]
        s.add_all(images)
        s.flush()
        return [i.id for i in images]


@pytest.fixture
def with_new_terms(wb, annotator, reviewer):
    first, second, third = _images(wb, 3)
    submit_annotation(
        wb, annotator, first, {"color": ["salmon-pink glow", "red"]}, diagnosis="Melanoma", diagnosis_status="corrected"
    )
    submit_annotation(wb, reviewer, first, {"color": ["salmon-pink glow"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    submit_annotation(
        wb,
        annotator,
        second,
        {"color": ["Salmon-pink glow"], "texture": ["velvety sheen"]},
        diagnosis="Melanoma",
        diagnosis_status="corrected",
    )
    old = submit_annotation(wb, annotator, third, {"shape": ["bean-like"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    # an edit removed the term: only current versions count
    submit_annotation(
        wb, annotator, third, {"shape": ["round"]}, diagnosis="Melanoma", diagnosis_status="corrected", supersedes_id=old
    )
    return first, second


def test_new_terms_in_current_annotations_are_listed_most_used_first(wb, reviewer, annotator, with_new_terms):
    first, second = with_new_terms
    terms = pending_terms(wb, reviewer)
    assert [(t.field, t.term, t.annotations) for t in terms] == [
        ("color", "salmon-pink glow", 3),
        ("texture", "velvety sheen", 1),
    ]
    assert terms[0].image_ids == [first, second]
    with pytest.raises(PermissionDenied):
        pending_terms(wb, annotator)


def test_accepting_a_term_with_synonyms_extends_the_vocabulary(wb, reviewer, annotator, with_new_terms, tmp_path):
    row = decide_term(wb, reviewer, "color", "salmon-pink glow", accept=True, synonyms=("salmon glow", " Salmon Glow "))
    assert row.synonyms == ["salmon glow"]
    assert [t.term for t in pending_terms(wb, reviewer)] == ["velvety sheen"]
    # the term is a vocabulary term now, and its synonym is stored as the term
    assert "salmon-pink glow" in default_vocabulary().terms["color"]
    assert Caption.model_validate({"color": ["salmon glow"]}).color == ("salmon-pink glow",)
    assert Caption.model_validate({"color": ["salmon glow"]}).new_terms() == {}
    assert default_vocabulary().version.endswith("+1-local")
    with wb.session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "vocabulary.accepted")).one()
        assert event.username == reviewer.username and event.payload["term"] == "salmon-pink glow"
    # another process (the app, the CLI) opening the workbench gets the accepted term too
    use_local_terms({})
    assert "salmon-pink glow" not in default_vocabulary().terms["color"]
    reopened = open_workbench(wb.settings)
    assert "salmon-pink glow" in default_vocabulary().terms["color"]
    reopened.close()


def test_rejecting_takes_the_term_off_the_list_and_changes_no_annotation(wb, reviewer, with_new_terms):
    with wb.session() as s:
        before = [a.caption for a in s.scalars(select(Annotation).order_by(Annotation.id))]
    decide_term(wb, reviewer, "texture", "velvety sheen", accept=False)
    assert [t.term for t in pending_terms(wb, reviewer)] == ["salmon-pink glow"]
    assert "velvety sheen" not in default_vocabulary().terms["texture"]
    with wb.session() as s:
        assert [a.caption for a in s.scalars(select(Annotation).order_by(Annotation.id))] == before
    # a later decision replaces the earlier one
    decide_term(wb, reviewer, "texture", "velvety sheen", accept=True)
    with wb.session() as s:
        assert s.scalars(select(VocabularyTerm.decision)).all() == ["accepted"]


def test_bad_decisions_are_refused_and_nothing_is_stored(wb, reviewer, annotator, with_new_terms):
    with pytest.raises(ConflictError, match="already in the color vocabulary as 'erythematous'"):
        decide_term(wb, reviewer, "color", "red", accept=True)
    with pytest.raises(ConflictError, match="synonym 'pink' is already in the color vocabulary"):
        decide_term(wb, reviewer, "color", "salmon-pink glow", accept=True, synonyms=("pink",))
    with pytest.raises(NotFound, match="use one of"):
        decide_term(wb, reviewer, "diagnosis", "foo", accept=True)
    with pytest.raises(ConflictError, match="takes no synonyms"):
        decide_term(wb, reviewer, "color", "salmon-pink glow", accept=False, synonyms=("x",))
    with pytest.raises(PermissionDenied):
        decide_term(wb, annotator, "color", "salmon-pink glow", accept=True)
    decide_term(wb, reviewer, "texture", "velvety sheen", accept=True, synonyms=("velvet",))
    with pytest.raises(ConflictError, match="synonym 'velvet' is already in the texture vocabulary as 'velvety sheen'"):
        decide_term(wb, reviewer, "texture", "plush", accept=True, synonyms=("velvet",))
    with wb.session() as s:
        assert s.scalars(select(VocabularyTerm.term)).all() == ["velvety sheen"]


def test_the_cli_lists_accepts_and_rejects(wb, reviewer, with_new_terms, monkeypatch):
    monkeypatch.setenv("SKINFLOW_HOME", str(wb.settings.home))
    runner = CliRunner()
    listed = runner.invoke(cli, ["--user", "rev", "vocabulary", "--pending", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(t["field"], t["term"]) for t in json.loads(listed.output)] == [
        ("color", "salmon-pink glow"),
        ("texture", "velvety sheen"),
    ]
    accepted = runner.invoke(
        cli, ["--user", "rev", "vocabulary", "--accept", "color:salmon-pink glow", "--synonym", "salmon glow"]
    )
    assert accepted.exit_code == 0, accepted.output
    assert "accepted color: salmon-pink glow with synonyms salmon glow" in " ".join(accepted.output.split())
    rejected = runner.invoke(cli, ["--user", "rev", "vocabulary", "--reject", "texture:velvety sheen"])
    assert rejected.exit_code == 0, rejected.output
    assert "no new terms wait for review" in runner.invoke(cli, ["--user", "rev", "vocabulary", "--pending"]).output
    bad = runner.invoke(cli, ["--user", "rev", "vocabulary", "--accept", "salmon"])
    assert bad.exit_code != 0 and "FIELD:TERM" in bad.output
    with wb.session() as s:
        assert sorted(s.execute(select(VocabularyTerm.term, VocabularyTerm.decision)).all()) == [
            ("salmon-pink glow", "accepted"),
            ("velvety sheen", "rejected"),
        ]


def test_the_review_page_lists_new_terms_and_accepts_one(tmp_path, monkeypatch):
    import streamlit as st

    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor
    from curation.store.settings import Settings
    from tests.test_app_pages import page

    monkeypatch.setenv("SKINFLOW_HOME", str(tmp_path / "wb"))
    monkeypatch.delenv("SKINFLOW_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    wb = open_workbench(Settings.load())
    try:
        build_demo(wb, None, n=6, seed=0, verified_fraction=0.0, annotated_fraction=0.0)
        annotator = get_actor(wb, "annotator")
        with wb.session() as s:
            image_id = s.scalars(select(Image.id).where(Image.status == "pending").order_by(Image.id)).first()
        submit_annotation(
            wb, annotator, image_id, {"color": ["salmon-pink glow"]}, diagnosis="Melanoma", diagnosis_status="corrected"
        )
        at = page(wb, "review", "reviewer")
        section = [e for e in at.expander if e.label.startswith("New vocabulary terms")]
        assert section and section[0].label == "New vocabulary terms (1)"
        assert at.selectbox(key="vocab_term").value.term == "salmon-pink glow"
        at.text_input(key="vocab_synonyms").input("salmon glow, peachy")
        at.button(key="vocab_accept").click().run()
        assert not at.exception and "Accepted 'salmon-pink glow' (Color)." in at.success[0].value
        assert [e.label for e in at.expander if e.label.startswith("New vocabulary terms")] == ["New vocabulary terms (0)"]
        with wb.session() as s:
            row = s.scalars(select(VocabularyTerm)).one()
            assert (row.decision, row.synonyms) == ("accepted", ["salmon glow", "peachy"])
        # the annotate page now offers the accepted term among the Color choices
        at = page(wb, "annotate", "annotator")
        color = [m for m in at.multiselect if m.label.startswith("Color")][0]
        assert "salmon-pink glow (salmon glow)" in color.options  # shown with its first synonym, as packaged terms are
    finally:
        st.cache_resource.clear()
        wb.close()
