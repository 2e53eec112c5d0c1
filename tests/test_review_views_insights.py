import pytest
from sqlalchemy import select

from curation.errors import PermissionDenied
from curation.labelling.annotate import adjudicate, current_annotation, load_work, save_work, submit_annotation
from curation.labelling.browse import image_history, list_images, thumbnail
from curation.labelling.insights import cohen_kappa, field_alpha, insights
from curation.labelling.queue import next_item
from curation.labelling.review import review_items
from curation.labelling.views import image_detail
from curation.ops.demo import build_demo
from curation.store.auth import add_user
from curation.store.models import Annotation, Image, Review
from curation.store.workflow import update_workflow_settings

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.fixture
def image_ids(wb):
    with wb.session() as s:
        rows = [
            Image(source="test", status="pending", sha256=f"{i:064x}", file_path=f"{i}.jpg", diagnosis_key="psoriasis")
            for i in range(4)
        ]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def _annotate(wb, actor, image_id, caption, diagnosis="psoriasis", status="confirmed", flags=()):
    return submit_annotation(wb, actor, image_id, caption, diagnosis=diagnosis, diagnosis_status=status, quality_flags=flags)


def test_review_items_are_ranked_by_reason(wb, admin, annotator, reviewer, image_ids):
    other = add_user(wb, admin, "ann2", "annotator")[0]
    _annotate(wb, annotator, image_ids[0], {"color": "red", "number": "few"})
    _annotate(wb, other, image_ids[0], {"color": "red", "number": "few"}, diagnosis="eczema")  # label differs
    _annotate(wb, annotator, image_ids[1], {"color": "red"}, status="uncertain")
    _annotate(wb, annotator, image_ids[2], {"color": "red"}, flags=["poor_quality"])
    _annotate(wb, annotator, image_ids[3], {"color": "red"})
    items = review_items(wb, reviewer)
    assert [(i.image_id, i.reason) for i in items] == [
        (image_ids[0], "disagreement"),
        (image_ids[1], "uncertain"),
        (image_ids[2], "flagged"),
        (image_ids[3], "awaiting verification"),
    ]
    assert items[0].pairs[0].same_label is False
    with pytest.raises(PermissionDenied):
        review_items(wb, annotator)


def test_field_disagreement_below_threshold_is_a_disagreement(wb, admin, annotator, reviewer, image_ids):
    other = add_user(wb, admin, "ann2", "annotator")[0]
    _annotate(wb, annotator, image_ids[0], {"color": ["red", "brown"]})
    _annotate(wb, other, image_ids[0], {"color": ["red"]})  # color F1 = 0.67
    update_workflow_settings(wb, admin, disagreement_threshold=0.5)
    assert review_items(wb, reviewer)[0].reason == "awaiting verification"
    update_workflow_settings(wb, admin, disagreement_threshold=0.8)
    assert review_items(wb, reviewer)[0].reason == "disagreement"


def test_adjudication_is_a_verified_annotation_by_the_reviewer(wb, annotator, reviewer, image_ids):
    _annotate(wb, annotator, image_ids[0], {"color": "red"}, status="uncertain")
    aid = adjudicate(wb, reviewer, image_ids[0], {"color": "brown"}, diagnosis="BCC", diagnosis_status="corrected")
    with wb.session() as s:
        image = s.get(Image, image_ids[0])
        annotation = s.get(Annotation, aid)
        assert (image.status, image.verified_annotation_id) == ("verified", aid)
        assert (annotation.user_id, annotation.diagnosis_key) == (reviewer.id, "basal cell carcinoma")
        assert s.scalar(select(Review.decision).where(Review.annotation_id == aid)) == "verified"
    assert review_items(wb, reviewer) == []
    with pytest.raises(PermissionDenied):
        adjudicate(wb, annotator, image_ids[0], {}, diagnosis=None)


def test_saved_work_round_trips_and_is_cleared_by_submit(wb, annotator, image_ids):
    form = {"caption": {"color": ["brown"]}, "diagnosis": "melanoma"}
    save_work(wb, annotator, image_ids[0], form)
    assert load_work(wb, annotator, image_ids[0]) == form
    assert image_detail(wb, annotator, image_ids[0]).saved_work == form
    _annotate(wb, annotator, image_ids[0], {"color": "brown"})
    assert load_work(wb, annotator, image_ids[0]) is None
    assert current_annotation(wb, annotator, image_ids[0])["caption"]["color"] == ["brown"]


def test_image_detail_ranks_drafts_marks_disagreements_and_hides_ground_truth(wb):
    build_demo(wb, None, n=3, seed=0)
    from curation.assist.drafts import add_draft
    from curation.store.auth import get_actor

    admin, annotator = get_actor(wb, "admin"), get_actor(wb, "annotator")
    add_draft(wb, admin, 1, kind="llm", producer="gpt", version="p1", caption={"color": ["yellow"], "number": "single"})
    add_draft(wb, admin, 1, kind="llm", producer="broken", version="p1", caption=None, error="timeout")
    detail = image_detail(wb, annotator, 1)
    assert [d["kind"] for d in detail.drafts] == ["llm", "synthetic"]  # model > llm > synthetic; failed ones left out
    assert "color" in detail.disagreements
    assert "true_caption" not in detail.meta and detail.meta["generator"] == "skinflow-demo"
    assert detail.path.exists() and thumbnail(wb, 1, size=64)[:2] == b"\xff\xd8"


def test_dataset_filters_and_history(wb):
    build_demo(wb, None, n=20, seed=0)
    from curation.store.auth import get_actor

    reviewer = get_actor(wb, "reviewer")
    rows, total = list_images(wb, reviewer, status=["verified"], limit=5)
    assert total >= 5 and len(rows) == 5 and all(r["status"] == "verified" for r in rows)
    melanoma, n = list_images(wb, reviewer, group3=["malignant"], limit=100)
    assert n == len(melanoma) and all(r["group3"] == "malignant" for r in melanoma)
    mine, _ = list_images(wb, reviewer, annotator=["demo-annotator"], limit=100)
    assert mine and all(r["annotators"] == ["demo-annotator"] for r in mine)
    by_fitz, _ = list_images(wb, reviewer, sort="fitzpatrick", descending=True, limit=100)
    assert [r["fitzpatrick"] for r in by_fitz] == sorted((r["fitzpatrick"] for r in by_fitz), reverse=True)
    history = image_history(wb, reviewer, rows[0]["id"])
    whats = [e["what"] for e in history]
    assert "draft (synthetic)" in whats and "annotation v1" in whats and "review: verified" in whats
    with pytest.raises(PermissionDenied):
        list_images(wb, get_actor(wb, "annotator"))


def test_agreement_statistics():
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == 0.0
    units = [{"x": "red", "y": "red"}, {"x": "blue", "y": "blue"}, {"x": "red", "y": "red"}]
    assert field_alpha(units, "color") == pytest.approx(1.0)
    units = [{"x": "single", "y": "few"}, {"x": "few", "y": "single"}, {"x": "numerous", "y": "numerous"}]
    assert field_alpha(units, "number") < 1.0


def test_insights_cover_progress_throughput_agreement_and_gold(wb):
    build_demo(wb, None, n=12, seed=0, verified_fraction=0.5)
    from curation.store.auth import get_actor

    admin = get_actor(wb, "admin")
    second = add_user(wb, admin, "second", "annotator")[0]
    update_workflow_settings(wb, admin, gold_rate=0.5)
    import random

    rng = random.Random(1)
    for _ in range(6):
        item = next_item(wb, second, rng=rng)
        if item is None:
            break
        submit_annotation(wb, second, item.image_id, {"color": "red"}, diagnosis="psoriasis", diagnosis_status="confirmed")
    numbers = insights(wb)
    assert numbers["throughput"]["demo-annotator"]["annotations"] >= 6
    assert (
        sum(day["annotations"] for day in numbers["progress_by_day"].values())
        == numbers["throughput"]["demo-annotator"]["annotations"] + numbers["throughput"]["second"]["annotations"]
    )
    assert numbers["agreement"]["items_with_2_or_more_annotators"] >= 1
    assert set(numbers["agreement"]["krippendorff_alpha"]) >= {"color", "number", "other"}
    assert "second" in numbers["gold_accuracy"] and numbers["gold_accuracy"]["second"]["items"] >= 1
    assert 0.0 <= numbers["gold_accuracy"]["second"]["label_accuracy"] <= 1.0
    assert sum(numbers["distributions"]["fitzpatrick"].values()) == 12


def test_edit_rates_per_field_compare_what_annotators_started_from(wb, admin, annotator):
    from curation.assist.drafts import add_draft

    with wb.session() as s:
        rows = [Image(source="test", status="pending", sha256=f"{i:064x}", file_path=f"{i}.jpg") for i in range(1, 5)]
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
    base = {"color": ["red"], "number": "few", "texture": ["scaly"]}
    model = [
        add_draft(
            wb,
            admin,
            i,
            kind="model",
            producer="skinflow",
            version="run-1:stage2",
            caption=base,
            diagnoses=[{"key": "psoriasis", "score": 0.9}],
        )
        for i in ids[:2]
    ]
    llm = [
        add_draft(
            wb, admin, i, kind="llm", producer="gpt", version="1", caption=base, diagnoses=[{"key": "eczema", "score": 0.5}]
        )
        for i in ids[2:]
    ]
    # from the suggestion: one of two annotators changes the colour; both keep psoriasis
    submit_annotation(
        wb,
        annotator,
        ids[0],
        {**base, "color": ["brown"]},
        diagnosis="psoriasis",
        diagnosis_status="confirmed",
        based_on_draft_id=model[0],
    )
    submit_annotation(
        wb, annotator, ids[1], base, diagnosis="psoriasis", diagnosis_status="confirmed", based_on_draft_id=model[1]
    )
    # from the LLM draft: both change colour and number, and the diagnosis
    for image_id, draft in zip(ids[2:], llm, strict=True):
        submit_annotation(
            wb,
            annotator,
            image_id,
            {**base, "color": ["white"], "number": "single"},
            diagnosis="psoriasis",
            diagnosis_status="confirmed",
            based_on_draft_id=draft,
        )
    rates = insights(wb)["edit_rates"]
    assert rates["model"]["annotations"] == 2 and rates["model"]["fields"]["color"] == 0.5
    assert rates["model"]["fields"]["number"] == 0.0 and rates["model"]["diagnosis"] == 0.0
    assert rates["llm"]["fields"]["color"] == 1.0 and rates["llm"]["fields"]["number"] == 1.0 and rates["llm"]["diagnosis"] == 1.0
    assert rates["llm"]["fields"]["texture"] == 0.0 and "synthetic" not in rates
