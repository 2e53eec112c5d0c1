"""Label Studio round trip against a REAL server (marked integration; .ci/run installs and starts one).
Needs LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY and LABEL_STUDIO_DOCUMENT_ROOT (the server's
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, where this test puts its workbench)."""

from __future__ import annotations

import os
import urllib.request
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from curation.errors import NotFound
from curation.export.labelstudio import LabelStudioError, pull, push
from curation.ops.demo import build_demo
from curation.store.auth import add_user, get_actor
from curation.store.db import open_workbench
from curation.store.models import Annotation, User
from curation.store.settings import Settings

pytestmark = pytest.mark.integration
URL, TOKEN, ROOT = (os.environ.get(k) for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_DOCUMENT_ROOT"))


@pytest.fixture
def setup():
    if not (URL and TOKEN and ROOT):
        pytest.fail("integration tests need LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY and LABEL_STUDIO_DOCUMENT_ROOT (see .ci/run)")
    home = Path(ROOT)
    wb = open_workbench(Settings.load(environ={}, home=home))
    if not wb.engine.connect().exec_driver_sql("SELECT count(*) FROM images").scalar():
        build_demo(wb, None, n=6, seed=0)
    yield wb, get_actor(wb, "admin"), f"SkinFlow {uuid.uuid4().hex[:8]}"
    wb.close()


def test_push_twice_annotate_in_label_studio_pull_twice(setup):
    from label_studio_sdk import LabelStudio

    wb, admin, project = setup
    # a local account that happens to share the Label Studio user's name must not be merged with it
    add_user(wb, admin, "reviewer-local", "reviewer", "reviewer-pw-1")
    first = push(wb, admin, URL, TOKEN, project=project)
    assert first.created >= 6 and first.already_there == 0
    again = push(wb, admin, URL, TOKEN, project=project)
    assert again.created == 0 and again.already_there == first.created  # idempotent

    client = LabelStudio(base_url=URL, api_key=TOKEN)
    tasks = list(client.tasks.list(project=first.project_id))
    assert len(tasks) == first.created
    task = next(t for t in tasks if t.data["skinflow_id"] == 1)
    image = urllib.request.urlopen(urllib.request.Request(URL + task.data["image"], headers={"Authorization": f"Token {TOKEN}"}))
    assert image.read()[:2] == b"\xff\xd8"  # Label Studio serves the stored JPEG
    client.annotations.create(
        id=task.id,
        result=[
            {"from_name": "color", "to_name": "image", "type": "choices", "value": {"choices": ["violaceous", "brown"]}},
            {"from_name": "number", "to_name": "image", "type": "choices", "value": {"choices": ["few"]}},
            {"from_name": "other", "to_name": "image", "type": "textarea", "value": {"text": ["central crust"]}},
            {
                "from_name": "diagnosis",
                "to_name": "image",
                "type": "taxonomy",
                "value": {"taxonomy": [["malignant", "malignant dermal", "kaposi sarcoma"]]},
            },
        ],
    )
    pulled = pull(wb, admin, URL, TOKEN, project=project)
    assert pulled.imported == 1 and not pulled.skipped
    assert pull(wb, admin, URL, TOKEN, project=project).already_imported == 1  # idempotent
    me = client.users.whoami()
    with wb.session() as s:
        row = s.scalar(select(Annotation).where(Annotation.origin.like(f"labelstudio:{URL}/projects/{first.project_id}/%")))
        assert row.image_id == 1 and row.caption["color"] == ["violaceous", "brown"] and row.caption["number"] == "few"
        assert row.caption["other"] == "central crust"
        assert (row.diagnosis_key, row.diagnosis_status) == ("kaposi sarcoma", "corrected")
        owner = s.get(User, row.user_id)
        assert owner.display_name == me.email and owner.username != "admin"  # mapped by email, never merged by name


def test_unknown_project_and_bad_token_are_clear(setup):
    wb, admin, project = setup
    with pytest.raises(NotFound, match="push first"):
        pull(wb, admin, URL, TOKEN, project=project)
    with pytest.raises(LabelStudioError, match="401"):
        push(wb, admin, URL, "0" * 40, project=project)


def test_an_export_in_label_studio_format_loads_with_the_curated_labels_as_annotations(setup, tmp_path):
    import json

    from label_studio_sdk import LabelStudio

    from curation.export.dataset import export_dataset

    wb, admin, project = setup
    export = export_dataset(wb, admin, tmp_path / "ls-export", formats=("labelstudio",))
    records = {r["id"]: r for r in map(json.loads, (export.path / "records.jsonl").read_text().splitlines())}
    tasks = json.loads((export.path / "labelstudio" / "tasks.json").read_text())
    client = LabelStudio(base_url=URL, api_key=TOKEN)
    created = client.projects.create(
        title=project + " export", label_config=(export.path / "labelstudio" / "label_config.xml").read_text()
    )
    client.projects.import_tasks(id=created.id, request=tasks)  # as a person uploads tasks.json in the UI
    loaded = list(client.tasks.list(project=created.id))
    assert len(loaded) == len(records)
    for task in loaded:
        [annotation] = client.annotations.list(id=task.id)
        record = records[task.data["skinflow_id"]]
        diagnosis = [r["value"]["taxonomy"][0][-1] for r in annotation.result if r["type"] == "taxonomy"]
        assert diagnosis == ([record["diagnosis_key"]] if record["diagnosis_key"] else [])
        colors = [r["value"]["choices"] for r in annotation.result if r["from_name"] == "color"]
        assert colors == ([record["caption"]["color"]] if record["caption"]["color"] else [])
        assert annotation.ground_truth is True


def test_pictures_in_a_bucket_reach_label_studio_as_presigned_links_renewed_by_each_push(tmp_path):
    from label_studio_sdk import LabelStudio

    bucket_url = os.environ.get("SKINFLOW_TEST_S3")
    if not (URL and TOKEN and bucket_url):
        pytest.fail("needs Label Studio and an S3-compatible server: make test-integration starts both")
    wb = open_workbench(Settings.load(environ={}, home=tmp_path / "wb", image_store=f"{bucket_url}/{uuid.uuid4().hex[:12]}"))
    build_demo(wb, None, n=3, seed=1)
    admin, project = get_actor(wb, "admin"), f"SkinFlow bucket {uuid.uuid4().hex[:8]}"
    first = push(wb, admin, URL, TOKEN, project=project)  # auto: presigned, the store being a bucket
    assert first.created >= 3 and first.refreshed == 0
    client = LabelStudio(base_url=URL, api_key=TOKEN)
    [before] = [t for t in client.tasks.list(project=first.project_id) if t.data["skinflow_id"] == 1]
    with urllib.request.urlopen(before.data["image"]) as reply:  # the annotator's browser: no credentials, no proxy
        assert reply.read()[:2] == b"\xff\xd8"
    again = push(wb, admin, URL, TOKEN, project=project)
    assert again.created == 0 and again.refreshed == first.created
    [after] = [t for t in client.tasks.list(project=first.project_id) if t.data["skinflow_id"] == 1]
    assert after.data["image"] != before.data["image"] and after.data["sha256"] == before.data["sha256"]
    wb.close()
