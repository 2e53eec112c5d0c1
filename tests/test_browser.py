"""One real-browser end-to-end test: Debian chromium driven by Playwright against `skinflow app`.

.ci/run installs chromium (apt). Without /usr/bin/chromium this test is skipped with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from curation.store.auth import get_actor
from curation.store.models import Annotation, Draft, Image
from tests.browser_app import (
    CHROMIUM,
    chromium,
    correct_to_psoriasis_and_submit,
    demo_workbench,
    form_ready,
    free_port,
    image_on_screen,
    log_in,
    serve,
    settled,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium (apt-get install chromium)")


def test_annotator_logs_in_changes_two_fields_and_the_diagnosis_and_submits(running_app, tmp_path):
    wb, url = running_app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        log_in(page, url, "annotator", "browser-pass-1")
        image_id = int(page.get_by_text("image #").first.inner_text().split("#")[1].split(",")[0])

        page.get_by_test_id("stRadio").filter(has_text="Number").get_by_text("numerous", exact=True).click()
        texture = page.get_by_test_id("stMultiSelect").filter(has_text="Texture")
        texture.locator("input").fill("crusted")
        page.get_by_role("option", name="crusted", exact=False).first.click()
        page.keyboard.press("Escape")
        correct_to_psoriasis_and_submit(page, image_id)
        page.screenshot(path=str(tmp_path / "after-submit.png"), full_page=True)

    with wb.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.image_id == image_id))
        assert row.user.username == "annotator"
        assert row.caption["number"] == "numerous" and "crusted" in row.caption["texture"]
        assert (row.diagnosis_key, row.diagnosis_status) == ("psoriasis", "corrected")
        assert row.based_on_draft_id is not None
    assert (tmp_path / "after-submit.png").stat().st_size > 10_000


def test_an_admin_demoted_from_the_cli_loses_the_admin_page_in_the_open_tab(running_app):
    from curation.store.auth import add_user

    wb, url = running_app
    add_user(wb, get_actor(wb, "admin"), "chief", "admin", "chief-pass-123")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        log_in(page, url, "chief", "chief-pass-123")
        admin_link = page.get_by_test_id("stSidebarNav").get_by_role("link", name="Admin")
        admin_link.wait_for(timeout=15_000)

        skinflow = str(Path(sys.executable).with_name("skinflow"))
        env = {**os.environ, "SKINFLOW_HOME": str(wb.settings.home)}
        subprocess.run([skinflow, "--user", "admin", "users", "set-role", "chief", "annotator"], env=env, check=True, timeout=60)

        admin_link.click()  # the next interaction in the same tab
        page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
        assert page.get_by_text("Your account changed").count() == 1
        assert page.get_by_test_id("stSidebarNav").count() == 0


def _session_cookie(context) -> dict:
    [cookie] = [c for c in context.cookies() if c["name"].startswith("skinflow_session_")]
    return cookie


def test_a_login_survives_a_reload_until_logout_and_a_bad_cookie_is_refused(running_app):
    from datetime import timedelta

    from curation.store.models import LoginSession, utcnow

    wb, url = running_app
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        log_in(page, url, "annotator", "browser-pass-1")
        image = page.get_by_text("image #").first.inner_text().split(",")[0]
        # the server sets the cookie for the ticket the page posts: wait for it, not for a time
        deadline = time.monotonic() + 30
        while not [c for c in context.cookies() if c["name"].startswith("skinflow_session_")]:
            assert time.monotonic() < deadline, "no session cookie"
            time.sleep(0.1)
        cookie = _session_cookie(context)
        assert cookie["sameSite"] == "Strict" and cookie["path"] == "/" and cookie["expires"] > time.time() + 3600
        assert cookie["httpOnly"] and "skinflow_session_" not in page.evaluate("document.cookie")  # no script reads it

        page.reload(wait_until="networkidle")  # F5: still logged in, on the same image
        page.get_by_role("heading", name="Annotate").wait_for(timeout=30_000)
        assert page.get_by_text("image #").first.inner_text().split(",")[0] == image
        assert page.get_by_role("button", name="Log in").count() == 0

        for bad in ("not-a-token", cookie["value"][:-2] + "xx"):  # forged or tampered: the login page
            other = browser.new_context()
            other.add_cookies([{**cookie, "value": bad}])
            forged = other.new_page()
            forged.goto(url, wait_until="networkidle")
            forged.get_by_role("button", name="Log in").wait_for(timeout=30_000)
            other.close()

        with wb.session() as s:  # the same cookie, once its session has expired
            row = s.scalars(select(LoginSession)).one()
            row.expires_at, kept = utcnow() - timedelta(seconds=1), row.expires_at
        expired = browser.new_context()
        expired.add_cookies([cookie])
        late = expired.new_page()
        late.goto(url, wait_until="networkidle")
        late.get_by_role("button", name="Log in").wait_for(timeout=30_000)
        expired.close()
        with wb.session() as s:
            s.scalars(select(LoginSession)).one().expires_at = kept

        stolen = browser.new_context()  # a copy of the cookie in another browser: it works, until the logout
        stolen.add_cookies([cookie])
        copy = stolen.new_page()
        copy.goto(url, wait_until="networkidle")
        copy.get_by_role("heading", name="Annotate").wait_for(timeout=30_000)
        page.get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
        page.reload(wait_until="networkidle")
        page.get_by_role("button", name="Log in").wait_for(timeout=30_000)  # asked to log in again
        assert not [c for c in context.cookies() if c["name"].startswith("skinflow_session_")]  # and forgotten
        copy.reload(wait_until="networkidle")
        copy.get_by_role("button", name="Log in").wait_for(timeout=30_000)  # revoked
        assert copy.get_by_role("heading", name="Annotate").count() == 0


def test_single_sign_on_maps_the_identity_to_the_local_account_by_email(tmp_path):
    from curation.store.auth import set_email
    from tests.fake_oidc import FakeIdentityProvider

    wb = demo_workbench(tmp_path / "wb")
    set_email(wb, get_actor(wb, "admin"), "annotator", "Alice@Hospital.example")
    port = free_port()
    with FakeIdentityProvider() as idp:
        (tmp_path / "run" / ".streamlit").mkdir(parents=True)
        (tmp_path / "run" / ".streamlit" / "secrets.toml").write_text(idp.secrets_toml(f"http://127.0.0.1:{port}"))
        with serve(tmp_path / "wb", port, cwd=tmp_path / "run") as url, chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="networkidle")
            page.get_by_role("button", name="Log in with Hospital login").click()  # to the provider and back
            page.get_by_role("heading", name="Annotate").wait_for(timeout=30_000)
            assert page.get_by_text("Logged in as annotator").count() == 1  # the local account and its role
            page.reload(wait_until="networkidle")
            page.get_by_role("heading", name="Annotate").wait_for(timeout=30_000)
            page.get_by_role("button", name="Log out").click()  # ends the provider's login in this app too
            page.get_by_role("button", name="Log in with Hospital login").wait_for(timeout=30_000)
            assert page.get_by_role("heading", name="Annotate").count() == 0

            idp.next_email = "mallory@elsewhere.example"  # a real identity, but no account here
            page.get_by_role("button", name="Log in with Hospital login").click()
            page.get_by_text("no active account has the email mallory@elsewhere.example").wait_for(timeout=30_000)
            assert page.get_by_role("heading", name="Annotate").count() == 0
            page.get_by_role("button", name="Use another account").click()
            idp.next_email, idp.email_verified = "alice@hospital.example", False  # the provider has not verified it
            page.get_by_role("button", name="Log in with Hospital login").click()
            page.get_by_text("has not said it verified alice@hospital.example").wait_for(timeout=30_000)
    wb.close()


def test_an_image_is_annotated_with_the_keyboard_alone_and_a_good_prefill_costs_one_keystroke(running_app, tmp_path):
    wb, url = running_app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        log_in(page, url, "annotator", "browser-pass-1")
        page.get_by_text("Keys:").first.wait_for(timeout=15_000)  # the shortcuts are on the page
        form_ready(page)
        first = image_on_screen(page)

        page.keyboard.press("j")  # the field cursor on the first field (Color)
        page.keyboard.press("Enter")  # edit it
        page.keyboard.type("violaceous")
        page.keyboard.press("Enter")  # take the highlighted term
        page.get_by_test_id("stMultiSelect").filter(has_text="Color").get_by_text("violaceous").first.wait_for()
        settled(page)  # the term is on screen, as a person sees it before moving on (a loaded CI box redraws slowly)
        page.keyboard.press("Escape")  # leave the field
        page.keyboard.press("u")  # diagnosis: uncertain
        page.wait_for_function(
            "(document.querySelector(\"[class*='dx_choice'] input:checked\") || {}).value === '2'"
        )  # none while a rerun redraws it
        page.keyboard.press("Control+Enter")
        page.get_by_text(f"Saved annotation of image #{first}").wait_for(timeout=30_000)

        form_ready(page)
        second = image_on_screen(page)
        assert second != first
        page.keyboard.press("Control+Enter")  # accept the prefill and the source's diagnosis: one keystroke
        page.get_by_text(f"Saved annotation of image #{second}").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "keyboard.png"), full_page=True)

    with wb.session() as s:
        edited = s.scalar(select(Annotation).where(Annotation.image_id == first))
        accepted = s.scalar(select(Annotation).where(Annotation.image_id == second))
        image = s.get(Image, second)
        draft = s.get(Draft, accepted.based_on_draft_id)
    assert "violaceous" in edited.caption["color"] and edited.diagnosis_status == "uncertain"
    assert accepted.diagnosis_status == "confirmed" and accepted.diagnosis_key == image.diagnosis_key
    assert accepted.caption == draft.caption  # the prefill, unchanged


CUT_CHIPS = """() => Array.from(document.querySelectorAll("[data-testid='stMultiSelect'] [data-tag]")).filter((chip) => {
  const text = chip.querySelector("span[title]"), box = chip.closest("[data-testid='stMultiSelect']").getBoundingClientRect();
  const r = chip.getBoundingClientRect();
  return text.scrollWidth > text.clientWidth + 1 || r.right > box.right + 1 || r.bottom > box.bottom + 1;
}).map((chip) => chip.querySelector("span[title]").title)"""


def test_every_prefilled_term_reads_whole_without_opening_the_field(running_app):
    wb, url = running_app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 1200})
        log_in(page, url, "annotator", "browser-pass-1")
        seen = 0
        for _ in range(3):  # a few images: several carry five colours or long terms
            form_ready(page)
            seen += page.locator("[data-testid='stMultiSelect'] [data-tag]").count()
            assert page.evaluate(CUT_CHIPS) == []
            shown = image_on_screen(page)
            page.get_by_role("button", name="Skip").click()
            page.wait_for_function(f"!document.querySelector('.st-key-zoom-a{shown}')")  # the next image is on screen
        assert seen >= 10


def test_the_picture_zooms_and_pans_in_place_and_a_same_lesion_picture_opens_beside_it(running_app, tmp_path):
    from datetime import timedelta

    from curation.ingest.folder import import_folder
    from curation.store.models import Lease, utcnow
    from tests.helpers import jpeg_bytes, photo, write

    wb, url = running_app
    write(tmp_path / "big" / "dermoscopy.jpg", jpeg_bytes(photo(7, (1600, 1200))))  # larger than its column
    [big] = import_folder(wb, get_actor(wb, "admin"), tmp_path / "big").image_ids
    annotator = get_actor(wb, "annotator")
    with wb.session() as s:  # all pictures of one lesion of one source, as a HAM10000 import brings them
        for image in s.scalars(select(Image)):
            image.meta = {**(image.meta or {}), "lesion_id": "HAM_0000001"}
            image.source = "ham10000"  # (lesion ids are looked up within a source)
        s.add(Lease(image_id=big, user_id=annotator.id, expires_at=utcnow() + timedelta(minutes=30)))  # served first
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        log_in(page, url, "annotator", "browser-pass-1")
        form_ready(page)
        image_id = image_on_screen(page)
        assert image_id == big
        picture = page.locator(f".st-key-zoom-a{image_id} img")
        zoom = lambda: float(picture.get_attribute("data-zoom") or 1)  # noqa: E731
        box = picture.bounding_box()
        assert picture.evaluate("img => img.naturalWidth") == 1460  # Streamlit's size, until asked
        page.get_by_text("Full resolution (1600 px wide)").click()
        page.wait_for_function(f"document.querySelector('.st-key-zoom-a{image_id} img').naturalWidth === 1600")
        natural, box = 1600, picture.bounding_box()  # the stored file, whole

        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        page.mouse.wheel(0, -400)  # zoom in around the pointer
        page.wait_for_function(f"Number(document.querySelector('.st-key-zoom-a{image_id} img').dataset.zoom || 1) > 2")
        before = picture.evaluate("img => img.style.transform")
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=5)  # drag: pan
        page.mouse.up()
        assert picture.evaluate("img => img.style.transform") != before
        page.keyboard.press("0")  # fit again
        assert zoom() == 1
        page.keyboard.press("+")
        page.keyboard.press("+")
        assert zoom() > 1.5
        page.keyboard.press("0")
        page.mouse.dblclick(box["x"] + 20, box["y"] + 20)  # actual pixels: one image pixel per screen pixel
        page.wait_for_function(f"Number(document.querySelector('.st-key-zoom-a{image_id} img').dataset.zoom || 1) > 2")
        assert natural / box["width"] > 2 and abs(zoom() - natural / box["width"]) < 0.01
        assert page.url.endswith("/") or "annotate" in page.url  # nothing navigated, nothing reloaded

        compare = page.get_by_test_id("stSelectbox").filter(has_text="Compare with")
        compare.click()
        page.get_by_role("option").filter(has_text="same lesion_id HAM_0000001").first.click()
        page.locator(f".st-key-zoom-a{image_id}-compare img").wait_for(timeout=15_000)
        assert page.locator("[class*='st-key-zoom-'] img").count() == 2  # both on screen
        width = page.locator(f".st-key-zoom-a{image_id}-compare").bounding_box()["width"]
        assert width > 250, width  # the column's width: side by side they were 169 px


def test_a_page_on_another_port_can_neither_read_the_session_cookie_nor_frame_the_app(running_app):
    """Cookies are per host, not per port: a page served on another port of 127.0.0.1 read the script-written cookie
    and replayed it into the Admin page, and could frame a logged-in /admin."""
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    wb, url = running_app
    app_page = url + "/admin"

    class Other(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = f'<html><body><iframe id="f" src="{app_page}"></iframe></body></html>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with chromium() as browser:
            context = browser.new_context()
            page = context.new_page()
            log_in(page, url, "annotator", "browser-pass-1")
            deadline = time.monotonic() + 30
            while not [c for c in context.cookies() if c["name"].startswith("skinflow_session_")]:
                assert time.monotonic() < deadline, "no session cookie"
                time.sleep(0.1)
            attacker = context.new_page()  # the same browser, another port of the same host
            attacker.goto(f"http://127.0.0.1:{other.server_address[1]}/", wait_until="load")
            assert "skinflow_session_" not in attacker.evaluate("document.cookie")
        headers = urllib.request.urlopen(url, timeout=10).headers  # and the app may be framed by itself only
        assert headers["X-Frame-Options"] == "SAMEORIGIN"
        assert "frame-ancestors 'self'" in headers["Content-Security-Policy"]
    finally:
        other.shutdown()
        other.server_close()
