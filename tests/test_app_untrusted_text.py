"""Text the workbench did not write (a CSV cell, an LLM reply, a model's answer) is shown as text on every page that
shows it: markup stays inert."""

from __future__ import annotations

import re

import streamlit as st
from sqlalchemy import select

from curation.labelling.annotate import submit_annotation
from curation.store.auth import get_actor
from curation.store.models import Image
from tests.app_pages import login, page


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
