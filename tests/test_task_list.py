"""The task list (Dataset page): filter by disagreement, open image #N past the queue's order."""

import pytest
from sqlalchemy import select

from curation.errors import NotFound, PermissionDenied
from curation.labelling.annotate import submit_annotation
from curation.labelling.browse import list_images
from curation.labelling.queue import next_item, open_image
from curation.labelling.review import images_in_disagreement
from curation.store.auth import add_user
from curation.store.models import AuditEvent, Image, Lease
from schema.errors import SkinflowError


def _images(wb, n, status="pending"):
    with wb.session() as s:
        images = [Image(source="test", status=status, sha256=f"{i:064x}", file_path=f"aa/{i}.jpg") for i in range(n)]
        s.add_all(images)
        s.flush()
        return [i.id for i in images]


def test_the_disagreement_filter_lists_what_review_calls_disagreement(wb, admin, annotator, reviewer):
    agree, differ_label, differ_field, single = _images(wb, 4)
    second = add_user(wb, admin, "ann2", "annotator", "annotator2-password")[0]
    for person in (annotator, second):
        submit_annotation(wb, person, agree, {"color": ["red"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    submit_annotation(wb, annotator, differ_label, {"color": ["red"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    submit_annotation(wb, second, differ_label, {"color": ["red"]}, diagnosis="Psoriasis", diagnosis_status="corrected")
    submit_annotation(wb, annotator, differ_field, {"color": ["red"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    submit_annotation(wb, second, differ_field, {"color": ["yellow"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    submit_annotation(wb, annotator, single, {"color": ["red"]}, diagnosis="Psoriasis", diagnosis_status="corrected")
    rows, total = list_images(wb, reviewer, disagreement=True)
    assert [r["id"] for r in rows] == [differ_label, differ_field] and total == 2
    rows, total = list_images(wb, reviewer, disagreement=True, image_id=differ_field)
    assert [r["id"] for r in rows] == [differ_field]
    assert list_images(wb, reviewer, image_id=agree)[1] == 1


def test_opening_an_image_leases_it_past_the_queue(wb, admin, annotator, reviewer):
    first, second, third = _images(wb, 3)
    assert open_image(wb, reviewer, third).image_id == third
    with wb.session() as s:
        assert s.get(Lease, third).user_id == reviewer.id
        assert s.scalars(select(AuditEvent.action).where(AuditEvent.entity == "image", AuditEvent.entity_id == third)).all() == [
            "queue.open"
        ]
    # nobody else is served it meanwhile, and the reviewer's next queue item is the one they opened
    done = next_item(wb, annotator).image_id
    submit_annotation(wb, annotator, done, {"color": ["red"]}, diagnosis="Melanoma", diagnosis_status="corrected")
    held = next_item(wb, annotator).image_id
    assert {done, held} == {first, second}
    assert next_item(wb, reviewer).image_id == third
    # an image another person holds stays theirs
    open_image(wb, reviewer, held)
    with wb.session() as s:
        assert s.get(Lease, held).user_id == annotator.id


def test_opening_is_for_reviewers_and_real_images(wb, annotator, reviewer):
    (missing,) = _images(wb, 1, status="image_missing")
    with pytest.raises(PermissionDenied):
        open_image(wb, annotator, missing)
    with pytest.raises(NotFound, match="no image #999"):
        open_image(wb, reviewer, 999)
    with pytest.raises(SkinflowError, match="fetch it first"):
        open_image(wb, reviewer, missing)


def test_the_dataset_page_opens_image_n_in_annotate(demo_home):
    """The full app, as a reviewer clicks it: Dataset > Open image #N > Annotate shows image #N."""
    from tests.test_app_pages import login

    at = login("reviewer")
    pages = {info["url_pathname"]: page_hash for page_hash, info in at._registered_pages.items()}
    at._page_hash = pages["dataset"]
    at.run()
    [t for t in at.toggle if t.label == "Annotators disagree"][0].set_value(True).run()
    assert not at.exception
    assert sorted(at.dataframe[0].value.get("id", [])) == sorted(images_in_disagreement(demo_home))
    with demo_home.session() as s:
        wanted = max(s.scalars(select(Image.id).where(Image.status == "pending")))
    [n for n in at.number_input if n.label == "Image id"][0].set_value(wanted).run()
    [b for b in at.button if b.label == f"Open image #{wanted} in Annotate"][0].click().run()
    assert not at.exception and [t.value for t in at.title] == ["Annotate"]
    assert at.session_state["annotate_item"]["image_id"] == wanted
    assert any(f"Image #{wanted}, opened from the Dataset page" in c.value for c in at.caption)
