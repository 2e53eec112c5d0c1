import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from curation.errors import SkinflowError
from curation.labelling.annotate import submit_annotation
from curation.labelling.queue import next_item, remaining, skip
from curation.store.auth import add_user
from curation.store.models import AuditEvent, Image, Lease, utcnow
from curation.store.workflow import get_workflow_settings, update_workflow_settings

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.fixture
def images(wb):
    with wb.session() as s:
        rows = [Image(source="test", status="pending", sha256=f"{i:064x}", file_path=f"{i}.jpg") for i in range(1, 7)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def _submit(wb, actor, image_id):
    return submit_annotation(wb, actor, image_id, {"color": "red"}, diagnosis="psoriasis", diagnosis_status="confirmed")


def test_sequential_queue_leases_so_two_people_get_different_images(wb, admin, annotator, reviewer, images):
    update_workflow_settings(wb, admin, gold_rate=0.0)
    first = next_item(wb, annotator)
    second = next_item(wb, reviewer)
    assert first.image_id == images[0] and second.image_id == images[1]
    assert next_item(wb, annotator).image_id == images[0]  # a reload keeps the same image
    assert remaining(wb, annotator) == len(images) - 1  # the one leased to the reviewer is not counted
    _submit(wb, annotator, images[0])
    with wb.session() as s:
        assert s.get(Lease, images[0]) is None  # submitting releases the lease
    assert next_item(wb, annotator).image_id == images[2]


def test_expired_leases_are_served_again(wb, admin, annotator, reviewer, images):
    update_workflow_settings(wb, admin, gold_rate=0.0, lease_minutes=5)
    now = utcnow()
    assert next_item(wb, annotator, now=now).image_id == images[0]
    assert next_item(wb, reviewer, now=now + timedelta(minutes=1)).image_id == images[1]
    late = add_user(wb, admin, "late", "annotator")[0]
    assert next_item(wb, late, now=now + timedelta(minutes=6)).image_id == images[0]


def test_skip_serves_others_first_and_comes_back_when_nothing_else_is_left(wb, admin, annotator, images):
    update_workflow_settings(wb, admin, gold_rate=0.0)
    skip(wb, annotator, next_item(wb, annotator).image_id)
    for image_id in images[1:]:
        assert next_item(wb, annotator).image_id == image_id
        _submit(wb, annotator, image_id)
    assert next_item(wb, annotator).image_id == images[0]
    _submit(wb, annotator, images[0])
    assert next_item(wb, annotator) is None and remaining(wb, annotator) == 0
    with wb.session() as s:
        assert s.scalar(select(AuditEvent.action).where(AuditEvent.action == "queue.skip")) == "queue.skip"


def test_overlap_serves_each_image_to_n_different_people(wb, admin, annotator, reviewer, images):
    update_workflow_settings(wb, admin, gold_rate=0.0, overlap=2)
    for image_id in images:
        assert next_item(wb, annotator).image_id == image_id
        _submit(wb, annotator, image_id)
    assert next_item(wb, annotator) is None
    assert remaining(wb, reviewer) == len(images)
    assert next_item(wb, reviewer).image_id == images[0]


def test_random_strategy_is_a_permutation_and_differs_from_sequential(wb, admin, annotator, images):
    update_workflow_settings(wb, admin, gold_rate=0.0, queue_strategy="random")
    rng = random.Random(3)
    order = []
    while (item := next_item(wb, annotator, rng=rng)) is not None:
        order.append(item.image_id)
        _submit(wb, annotator, item.image_id)
    assert sorted(order) == images and order != images


def test_gold_items_are_verified_images_served_unannounced_once(wb, admin, annotator, reviewer, images):
    from curation.labelling.annotate import review_annotation

    other = add_user(wb, admin, "other", "annotator")[0]
    review_annotation(wb, reviewer, _submit(wb, other, images[0]), "verified")
    update_workflow_settings(wb, admin, gold_rate=0.5)
    served = []
    rng = random.Random(0)
    while (item := next_item(wb, annotator, rng=rng)) is not None:
        served.append(item)
        _submit(wb, annotator, item.image_id)
    gold = [i.image_id for i in served if i.gold]
    assert gold == [images[0]]
    with wb.session() as s:
        assert s.get(Image, images[0]).status == "verified"  # a gold annotation does not unverify


def test_settings_validate_and_are_admin_only(wb, admin, reviewer):
    with pytest.raises(SkinflowError, match="overlap"):
        update_workflow_settings(wb, admin, overlap=0)
    with pytest.raises(SkinflowError, match="unknown settings"):
        update_workflow_settings(wb, admin, colour="blue")
    with pytest.raises(SkinflowError, match="admin"):
        update_workflow_settings(wb, reviewer, overlap=2)
    assert get_workflow_settings(wb).overlap == 1
    with pytest.raises(SkinflowError, match="unknown queue strategy"):
        next_item(wb, admin, strategy="alphabetical")


def _suggest(wb, admin, tmp_path, rows):
    """Import model suggestions the way `skinflow suggest` does (rows: image id, top-1 score, caption)."""
    import json

    from curation.assist.drafts import add_draft
    from curation.assist.suggestions import import_predictions

    for image_id, _, _ in rows:  # the LLM draft each suggestion is compared with
        add_draft(wb, admin, image_id, kind="llm", producer="gpt", version="1", caption={"color": ["red"], "number": "few"})
    path = tmp_path / "predictions.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": image_id,
                    "image": f"{image_id}.jpg",
                    "model_version": "run-1:stage2",
                    "caption": caption,
                    "diagnoses": [{"key": "psoriasis", "score": top}, {"key": "eczema", "score": (1 - top) / 2}],
                }
            )
            + "\n"
            for image_id, top, caption in rows
        )
    )
    assert import_predictions(wb, admin, path).added == len(rows)


def _order(wb, people, strategy):
    return [next_item(wb, person, strategy=strategy).image_id for person in people]


def test_uncertainty_serves_the_least_sure_suggestion_first(wb, admin, images, tmp_path):
    update_workflow_settings(wb, admin, gold_rate=0.0)
    same = {"color": ["red"], "number": "few"}
    _suggest(wb, admin, tmp_path, [(images[1], 0.9, same), (images[3], 0.2, same), (images[4], 0.5, same)])
    people = [add_user(wb, admin, f"u{i}", "annotator")[0] for i in range(5)]
    # scored images by rising top-1 score, then the unscored ones in sequential order
    assert _order(wb, people, "uncertainty") == [images[3], images[4], images[1], images[0], images[2]]


def test_disagreement_serves_the_largest_draft_suggestion_distance_first(wb, admin, images, tmp_path):
    update_workflow_settings(wb, admin, gold_rate=0.0)
    _suggest(
        wb,
        admin,
        tmp_path,
        [
            (images[0], 0.5, {"color": ["red"], "number": "few"}),  # agrees
            (images[2], 0.5, {"color": ["brown"], "number": "numerous"}),  # two fields differ
            (images[5], 0.5, {"color": ["brown"], "number": "few"}),
        ],
    )  # one field differs
    people = [add_user(wb, admin, f"u{i}", "annotator")[0] for i in range(4)]
    assert _order(wb, people, "disagreement") == [images[2], images[5], images[0], images[1]]


def test_fitzpatrick_balance_serves_the_least_represented_skin_type_first(wb, admin, annotator, images):
    update_workflow_settings(wb, admin, gold_rate=0.0)
    with wb.session() as s:
        for image_id, skin_type in zip(images, (1, 1, 2, 5, 6, None), strict=True):
            s.get(Image, image_id).fitzpatrick = skin_type
        extra = [
            Image(source="test", status="annotated", sha256=f"{100 + i:064x}", file_path=f"x{i}.jpg", fitzpatrick=t)
            for i, t in enumerate((1, 1, 2, 3, 4, 6))
        ]  # already labelled: type 1 twice, 2, 3, 4, 6 once; 5 never
        s.add_all(extra)
    people = [add_user(wb, admin, f"u{i}", "annotator")[0] for i in range(6)]
    # need: 5 (0 done) first, then 2 and 6 (1 done, lower type first), then 1 (2 done), then unknown type
    assert _order(wb, people, "fitzpatrick_balance") == [images[3], images[2], images[4], images[0], images[1], images[5]]
