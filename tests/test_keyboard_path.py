"""The annotator's path in a real browser: what a person types, and what the database then holds.

Each step replays a way the keyboard path used to store what the annotator did not mean (issue: "the annotator's
path never stores what the annotator did not mean"), then reads the stored annotation back. Debian chromium and
Playwright against `skinflow app`, as tests/test_browser.py; skipped without /usr/bin/chromium."""

from __future__ import annotations

import contextlib
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from curation.labelling.annotate import submit_annotation
from curation.store.auth import get_actor, set_password
from curation.store.models import Annotation, Image, Lease, SavedWork, utcnow
from tests.browser_app import (
    CHROMIUM,
    chips,
    chromium,
    demo_workbench,
    form_ready,
    free_port,
    image_on_screen,
    log_in,
    serve,
    settled,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium (apt-get install chromium)")


def stored(wb, image_id: int) -> Annotation | None:
    with wb.session() as s:
        return s.scalar(select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id.desc()))


def wait_until(condition, timeout: float = 30.0):
    """Poll a condition (the page's rerun, the database write) instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met within the time allowed")


def at_rest(page) -> None:
    """Focus on the page itself, as after a click on an empty part of it."""
    page.evaluate("document.activeElement && document.activeElement.blur()")


def focused_field(page) -> str:
    return page.evaluate("document.activeElement.className")


def notice(page, saying: str) -> str:
    """The refusal the page shows (not a stored annotation), once it says `saying`."""
    box = page.locator("#skinflow-key-notice")
    box.wait_for(state="visible", timeout=10_000)
    return wait_until(lambda: saying in box.inner_text() and box.inner_text())


def options_open(page, name: str) -> None:
    page.get_by_role("option", name=re.compile(name)).first.wait_for(timeout=10_000)


@contextlib.contextmanager
def trace_on_failure(page):
    """A failing step prints what the page's key listener did (timing problems show there)."""
    try:
        yield
    except BaseException:
        print("key listener trace:", *page.evaluate("window.__skinflowKeyTrace || []"), sep="\n  ")
        raise


def test_the_keyboard_path_stores_what_the_annotator_meant(running_app, tmp_path):
    wb, url = running_app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        with trace_on_failure(page):
            keyboard_scenario(wb, url, page, tmp_path)


def keyboard_scenario(wb, url, page, tmp_path) -> None:
    log_in(page, url, "annotator", "browser-pass-1")

    # 2. a diagnosis typed but never picked is not stored as "corrected"; nor is a correction to nothing
    form_ready(page)
    first = image_on_screen(page)
    at_rest(page)
    page.keyboard.press("e")  # correct: the focus goes to the diagnosis search
    page.keyboard.type("scab")
    options_open(page, "Scabies")
    page.keyboard.press("Control+Enter")
    assert notice(page, '"scab"').startswith("Not submitted")
    page.keyboard.press("Escape")  # drop the text: the search is empty again
    page.keyboard.press("Control+Enter")
    page.get_by_text("no diagnosis was picked").wait_for(timeout=30_000)  # the server's refusal, on the page
    assert stored(wb, first) is None
    page.keyboard.press("e")
    page.keyboard.type("scabies")  # 3. the `s` is typed into the search, it does not skip
    options_open(page, "Scabies")
    page.keyboard.press("Enter")  # 6. the highlighted term: Scabies, not "Add: scabies"
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"Saved annotation of image #{first}").wait_for(timeout=30_000)
    row = stored(wb, first)
    assert (row.diagnosis_key, row.diagnosis_text, row.diagnosis_status) == ("scabies", None, "corrected")

    # 3. click "Correct" and type at once: the letters reach the search; Submit by mouse waits for the pick
    form_ready(page)
    second = image_on_screen(page)
    assert second != first
    page.get_by_test_id("stRadio").filter(has_text="Diagnosis").get_by_text("Correct", exact=True).click()
    page.keyboard.type("psoriasis")
    options_open(page, "Psoriasis")
    page.locator(".st-key-kbd-submit button").click()  # (the open list hides the rest from role queries)
    assert notice(page, '"psoriasis"').startswith("Not submitted")
    assert stored(wb, second) is None and image_on_screen(page) == second  # not skipped, not stored
    page.keyboard.press("Enter")
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"Saved annotation of image #{second}").wait_for(timeout=30_000)
    row = stored(wb, second)
    assert (row.diagnosis_key, row.diagnosis_status) == ("psoriasis", "corrected")

    # 5. j / k move between fields; 6. Enter after a prefix takes one term; 7. shortcuts work after a click
    form_ready(page)
    third = image_on_screen(page)
    at_rest(page)
    page.keyboard.press("j")
    page.keyboard.press("j")
    wait_until(lambda: "-location" in focused_field(page))  # the second field, nothing typed into the first
    page.keyboard.press("k")
    wait_until(lambda: "-color" in focused_field(page))
    before = chips(page, "Color")
    page.keyboard.press("Enter")  # edit Color
    page.keyboard.type("yell")
    options_open(page, "yellow")
    page.keyboard.press("Enter")
    wait_until(lambda: len(chips(page, "Color")) == len(before) + 1)
    settled(page)
    page.keyboard.press("Escape")
    wait_until(lambda: "-color" in focused_field(page))  # back on the field, not in its search
    location = page.get_by_test_id("stMultiSelect").filter(has_text="Location")
    removed = location.locator("[data-tag]").first.inner_text()
    location.get_by_role("button", name=re.compile("^Remove ")).first.click()  # with the mouse
    wait_until(lambda: removed not in chips(page, "Location"))
    settled(page)
    checked = "(value) => (document.querySelector(\"[class*='dx_choice'] input:checked\") || {}).value === value"
    page.keyboard.press("u")  # not swallowed by the search box the click left focused
    page.wait_for_function(checked, arg="2")  # (none is checked while a rerun redraws it)
    page.keyboard.press("c")  # a change of mind: the radio `u` clicked does not keep the focus (it took the `c`)
    page.wait_for_function(checked, arg="0")
    page.keyboard.press("u")
    page.wait_for_function(checked, arg="2")
    page.keyboard.press("j")  # the cursor is left on a field (Color) when the image is submitted
    wait_until(lambda: "-color" in focused_field(page))
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"Saved annotation of image #{third}").wait_for(timeout=30_000)
    row = stored(wb, third)
    assert "yellow" in row.caption["color"] and "orange" not in row.caption["color"]
    assert removed.split(" (")[0] not in row.caption["location"]
    assert row.diagnosis_status == "uncertain"

    # 13. every change is kept as it is made, and a reload brings it back
    form_ready(page)
    fourth = image_on_screen(page)
    at_rest(page)
    page.keyboard.press("j")  # the next image starts from its first field, not the one after Color
    wait_until(lambda: f"-{fourth}-" in focused_field(page) and "-color" in focused_field(page))
    texture = page.get_by_test_id("stMultiSelect").filter(has_text="Texture")
    texture.locator("input").click()
    page.keyboard.type("crusted")
    options_open(page, "crusted")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    annotator = get_actor(wb, "annotator")

    def saved_form():
        with wb.session() as s:
            row = s.get(SavedWork, (annotator.id, fourth))
            return row.form if row is not None else None

    assert "crusted" in wait_until(saved_form)["caption"]["texture"]
    page.reload(wait_until="networkidle")
    form_ready(page)
    assert image_on_screen(page) == fourth  # the same image, with the change
    assert any(chip.startswith("crusted") for chip in chips(page, "Texture"))
    at_rest(page)
    page.keyboard.press("Control+Enter")
    page.get_by_text(f"Saved annotation of image #{fourth}").wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "keyboard-path.png"))
    row = stored(wb, fourth)
    assert "crusted" in row.caption["texture"] and row.diagnosis_status == "confirmed"
    assert saved_form() is None  # the submit took the saved form's place


def test_ctrl_enter_on_an_empty_form_of_a_fresh_import_stores_nothing(running_app, tmp_path):
    from curation.ingest.folder import import_folder
    from tests.helpers import jpeg_bytes, photo, write

    wb, url = running_app
    write(tmp_path / "new" / "fresh.jpg", jpeg_bytes(photo(3, (300, 200))))
    [fresh] = import_folder(wb, get_actor(wb, "admin"), tmp_path / "new").image_ids  # no drafts, no source label
    with wb.session() as s:
        s.add(Lease(image_id=fresh, user_id=get_actor(wb, "annotator").id, expires_at=utcnow() + timedelta(minutes=30)))
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        log_in(page, url, "annotator", "browser-pass-1")
        form_ready(page)
        assert image_on_screen(page) == fresh
        at_rest(page)
        page.keyboard.press("Control+Enter")
        page.get_by_text("Not saved").first.wait_for(timeout=30_000)
        assert image_on_screen(page) == fresh
    assert stored(wb, fresh) is None


def test_adjudicating_an_uncertain_diagnosis_stores_it_as_uncertain(running_app):
    wb, url = running_app
    admin = get_actor(wb, "admin")
    set_password(wb, admin, "reviewer", "review-pass-1")
    with wb.session() as s:
        image_id = s.scalars(select(Image.id).order_by(Image.id)).first()
    submit_annotation(
        wb, get_actor(wb, "annotator"), image_id, {"color": ["brown"]}, diagnosis="melanoma", diagnosis_status="corrected"
    )
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url, wait_until="networkidle")
        page.get_by_label("Username").fill("reviewer")
        page.get_by_role("textbox", name="Password").fill("review-pass-1")
        page.get_by_role("button", name="Log in").click()
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review").click()
        page.get_by_role("heading", name="Adjudicate").wait_for(timeout=30_000)
        page.get_by_test_id("stRadio").filter(has_text="Diagnosis").last.get_by_text("Uncertain", exact=True).click()
        page.get_by_role("button", name="Adjudicate and verify").click()
        page.get_by_text(f"Adjudicated image #{image_id}").wait_for(timeout=30_000)
    reviewer = get_actor(wb, "reviewer")
    with wb.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.image_id == image_id, Annotation.user_id == reviewer.id))
        assert row.diagnosis_status == "uncertain"  # was stored as "confirmed"
        assert s.get(Image, image_id).verified_annotation_id == row.id


def test_review_by_keyboard_verifies_moves_on_and_adjudicates(running_app):
    """Review's keys: `v` verifies the one version on screen, `s` moves to the next item and leaves this one,
    `e` + typing + Enter + Ctrl+Enter adjudicates with the picked diagnosis."""
    wb, url = running_app
    admin, annotator = get_actor(wb, "admin"), get_actor(wb, "annotator")
    set_password(wb, admin, "reviewer", "review-pass-1")
    with wb.session() as s:
        first, second, third = s.scalars(select(Image.id).order_by(Image.id)).all()[:3]
    for image_id in (first, second, third):
        submit_annotation(wb, annotator, image_id, {"color": ["brown"]}, diagnosis="melanoma", diagnosis_status="corrected")
    reviewer = get_actor(wb, "reviewer")

    def on_screen(page) -> int:
        settled(page)
        shown = page.get_by_test_id("stSelectbox").filter(has_text="Item").first.locator("input").input_value()
        return int(re.search(r"image #(\d+)", shown).group(1))

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        with trace_on_failure(page):
            log_in(page, url, "reviewer", "review-pass-1")
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review").click()
            page.get_by_role("heading", name="Adjudicate").wait_for(timeout=60_000)
            page.locator(".st-key-kbd-fields [data-testid='stMultiSelect'] input").first.wait_for(state="attached")
            assert on_screen(page) == first
            at_rest(page)
            page.keyboard.press("v")
            page.get_by_text(f"Verified image #{first}.").wait_for(timeout=30_000)
            with wb.session() as s:
                assert s.get(Image, first).status == "verified"
            assert wait_until(lambda: on_screen(page) == second)  # the verified one left the list (it kept its label)
            at_rest(page)
            page.keyboard.press("s")
            assert wait_until(lambda: on_screen(page) == third)
            with wb.session() as s:
                assert s.get(Image, second).status == "annotated"  # moved past, not decided
            at_rest(page)
            page.keyboard.press("e")
            page.keyboard.type("psoria")
            options_open(page, "Psoriasis")
            page.keyboard.press("Enter")
            page.keyboard.press("Control+Enter")
            page.get_by_text(f"Adjudicated image #{third}.").wait_for(timeout=30_000)
    with wb.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.image_id == third, Annotation.user_id == reviewer.id))
        assert (row.diagnosis_key, row.diagnosis_status) == ("psoriasis", "corrected")
        assert s.get(Image, third).verified_annotation_id == row.id
        assert s.get(Image, second).status == "annotated"


@pytest.mark.slow
def test_review_loads_after_a_model_is_activated_in_twenty_fresh_sessions(tmp_path):
    """Activation leaves model suggestions; Review then ranks suspicious labels with cleanlab, whose default process
    pool deadlocked inside the app server in about half of fresh sessions."""
    from curation.assist.drafts import NewDraft, add_drafts

    wb = demo_workbench(tmp_path / "wb")
    admin = get_actor(wb, "admin")
    set_password(wb, admin, "reviewer", "review-pass-1")
    with wb.session() as s:
        images = s.execute(select(Image.id, Image.diagnosis_key)).all()
    keys = sorted({key for _, key in images if key}) + ["psoriasis", "melanoma"]
    add_drafts(
        wb,
        admin,
        [
            NewDraft(
                image_id=image_id,
                kind="model",
                producer="skinflow",
                version="run-1:stage2",
                caption=None,
                diagnoses=[{"key": keys[(i + 1) % len(keys)], "score": 0.7}, {"key": key or keys[0], "score": 0.2}],
            )
            for i, (image_id, key) in enumerate(images)
        ],
    )
    loaded = 0
    try:
        with serve(tmp_path / "wb", free_port()) as url, chromium() as browser:
            for _ in range(20):
                context = browser.new_context(viewport={"width": 1366, "height": 900})
                page = context.new_page()
                page.goto(url, wait_until="networkidle")
                page.get_by_label("Username").fill("reviewer")
                page.get_by_role("textbox", name="Password").fill("review-pass-1")
                page.get_by_role("button", name="Log in").click()
                page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review").click()
                page.get_by_text(re.compile(r"^Suspicious labels \(\d+\)$")).wait_for(timeout=30_000)
                loaded += 1
                context.close()
    finally:
        wb.close()
    assert loaded == 20


def _size(wb, image_id: int) -> str:
    with wb.session() as s:
        image = s.get(Image, image_id)
        return f"{image.width}x{image.height}"


ON_SCREEN = """(selector) => { const r = document.querySelector(selector).getBoundingClientRect();
  return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }"""


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_the_picture_and_submit_stay_on_screen_while_the_form_scrolls(running_app, tmp_path, size):
    wb, url = running_app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        log_in(page, url, "annotator", "browser-pass-1")
        form_ready(page)
        picture, submit = ".st-key-annotate-picture img", ".st-key-kbd-submit button"
        assert page.evaluate(ON_SCREEN, picture) and page.evaluate(ON_SCREEN, submit)  # as the image opens
        image_id = image_on_screen(page)
        assert page.locator(picture).get_attribute("alt") == f"Skin picture, image #{image_id}, {_size(wb, image_id)} (zoomable)"
        page.screenshot(path=str(tmp_path / f"annotate-{size[0]}.png"))
        diagnosis = page.locator("[class*='dx_choice']")
        diagnosis.scroll_into_view_if_needed()  # down to the diagnosis, as a person scrolls to choose it
        assert page.evaluate(ON_SCREEN, "[class*='dx_choice']")
        assert page.evaluate(ON_SCREEN, picture) and page.evaluate(ON_SCREEN, submit)  # neither scrolled away
        page.screenshot(path=str(tmp_path / f"annotate-{size[0]}-diagnosis.png"))
    assert (tmp_path / f"annotate-{size[0]}.png").stat().st_size > 10_000
