"""Two app servers, one workbench: two `skinflow app` processes on two ports, each with its own home folder, against
one PostgreSQL database and one bucket (a throwaway SeaweedFS), a real browser on each. Marked integration:
`make test-integration` starts PostgreSQL, SeaweedFS and Label Studio around the suite (.ci/postgres, .ci/seaweedfs).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.ingest.folder import import_folder
from curation.labelling.annotate import review_annotation
from curation.ops.demo import build_demo
from curation.store.auth import add_user, get_actor, set_password
from curation.store.db import open_workbench
from curation.store.models import Annotation, Image, LoginSession
from curation.store.settings import Settings
from curation.store.workflow import update_workflow_settings
from tests.browser_app import (
    CHROMIUM,
    chromium,
    correct_to_psoriasis_and_submit,
    form_ready,
    free_port,
    image_on_screen,
    log_in,
    serve,
)
from tests.helpers import jpeg_bytes, photo, write

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium (apt-get install chromium)"),
]


def _submit_what_is_on_screen(page) -> int:
    """Keep the prefilled caption and correct the diagnosis to psoriasis; the image's id."""
    form_ready(page)
    image_id = image_on_screen(page)
    correct_to_psoriasis_and_submit(page, image_id, timeout_ms=60_000)
    return image_id


def test_two_servers_share_annotations_pictures_and_logins(tmp_path, database_url):
    bucket = os.environ.get("SKINFLOW_TEST_S3")
    if not (database_url and bucket):
        pytest.fail("needs PostgreSQL and an S3-compatible server: make test-integration starts both")
    store = f"{bucket}/{uuid.uuid4().hex[:12]}"
    one, two = tmp_path / "one", tmp_path / "two"  # nothing shared on disk: each server has its own home and cache
    first = open_workbench(Settings.load(environ={}, home=one, database_url=database_url, image_store=store))
    build_demo(first, None, n=6, seed=0, verified_fraction=0.0, annotated_fraction=0.0)
    admin = get_actor(first, "admin")
    set_password(first, admin, "annotator", "browser-pass-1")
    add_user(first, admin, "second", "annotator", "browser-pass-2")
    update_workflow_settings(first, admin, gold_rate=0.0)
    second = open_workbench(Settings.load(environ={}, home=two, database_url=database_url, image_store=store))
    for i in range(2):  # an import through the other server's settings: its pictures land in the same bucket
        write(tmp_path / "in" / f"{i}.jpg", jpeg_bytes(photo(900 + i, (160, 120)), quality=90))
    assert import_folder(second, get_actor(second, "admin"), tmp_path / "in").imported == 2

    env = {"SKINFLOW_DATABASE_URL": database_url, "SKINFLOW_IMAGE_STORE": store}
    with serve(one, free_port(), env=env) as url_one, serve(two, free_port(), env=env) as url_two, chromium() as browser:
        on_one = browser.new_context(viewport={"width": 1500, "height": 1300})
        on_two = browser.new_context(viewport={"width": 1500, "height": 1300})
        page_one, page_two = on_one.new_page(), on_two.new_page()
        log_in(page_one, url_one, "annotator", "browser-pass-1")
        log_in(page_two, url_two, "second", "browser-pass-2")
        done_one = _submit_what_is_on_screen(page_one)
        done_two = _submit_what_is_on_screen(page_two)
        # the login made on server one opens server two: the session is in the database, the cookie names it
        elsewhere = on_one.new_page()
        elsewhere.goto(url_two, wait_until="networkidle")
        elsewhere.get_by_role("heading", name="Annotate").wait_for(timeout=60_000)
        assert elsewhere.get_by_role("button", name="Log in").count() == 0
        form_ready(elsewhere)
        assert image_on_screen(elsewhere) not in (done_one, done_two)  # served by server two from the shared queue

    with first.session() as s:
        stored = {(a.user.username, a.image_id, a.diagnosis_key) for a in s.scalars(select(Annotation))}
        assert stored == {("annotator", done_one, "psoriasis"), ("second", done_two, "psoriasis")}
        assert done_one != done_two  # leases in the shared database: one image, one annotator
        assert s.scalar(select(func.count()).select_from(Image)) == 8
        assert s.scalar(select(func.count()).select_from(LoginSession)) == 2
    reviewer = get_actor(second, "reviewer")  # a review through the other server's settings, of both servers' work
    with second.session() as s:
        annotation_ids = s.scalars(select(Annotation.id)).all()
    for annotation_id in annotation_ids:
        review_annotation(second, reviewer, annotation_id, "verified")
    with first.session() as s:
        assert {i.status for i in s.scalars(select(Image).where(Image.id.in_([done_one, done_two])))} == {"verified"}
    for home in (one, two):  # each server downloaded what it showed into its own cache; the bucket holds them all
        assert any((home / "cache" / "images").rglob("*.*"))
    assert not any(any((home / "images").rglob("*.jpg")) for home in (one, two))  # and nothing else
    first.close()
    second.close()
