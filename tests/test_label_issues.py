"""Label-issue detection with cleanlab, and sending suspicious labels back to reviewers."""

import numpy as np
import pytest

from curation.assist.drafts import NewDraft, add_drafts
from curation.labelling.annotate import review_annotation, submit_annotation
from curation.labelling.label_issues import pred_probs_matrix, send_back_for_review, suspicious_labels
from curation.labelling.review import review_items
from curation.store.models import Image

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

LABELS = ("psoriasis", "melanoma", "vitiligo")


@pytest.fixture
def noisy_set(wb, admin):
    """60 images with source labels, 6 of them deliberately flipped, and a model that knows the truth
    (with noise): its suggestion gives the true class 0.55-0.95."""
    rng = np.random.default_rng(0)
    flipped = set(rng.choice(60, 6, replace=False).tolist())
    with wb.session() as s:
        rows = []
        for i in range(60):
            truth = LABELS[i % 3]
            given = LABELS[(i + 1) % 3] if i in flipped else truth
            rows.append(
                Image(
                    source="fitzpatrick17k", status="pending", sha256=f"{i + 1:064x}", file_path=f"{i}.jpg", diagnosis_key=given
                )
            )
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
    drafts = []
    for i, image_id in enumerate(ids):
        truth = LABELS[i % 3]
        top = float(rng.uniform(0.55, 0.95))
        others = [k for k in LABELS if k != truth]
        share = float(rng.uniform(0.3, 0.7))
        drafts.append(
            NewDraft(
                image_id=image_id,
                kind="model",
                producer="skinflow",
                version="run-1:stage2",
                caption=None,
                diagnoses=[
                    {"key": truth, "score": top},
                    {"key": others[0], "score": (1 - top) * share},
                    {"key": others[1], "score": (1 - top) * (1 - share)},
                ],
            )
        )
    add_drafts(wb, admin, drafts)
    return ids, {ids[i] for i in flipped}


def test_flipped_labels_rank_near_the_top(wb, reviewer, noisy_set):
    _, flipped = noisy_set
    issues = suspicious_labels(wb, reviewer)
    top = {i.image_id for i in issues[:8]}
    assert len(top & flipped) >= 5, (top, flipped)
    first = issues[0]
    assert first.image_id in flipped and first.label_source == "source" and first.suggested != first.label
    assert all(a.label_quality <= b.label_quality for a, b in zip(issues, issues[1:], strict=False))


def test_pred_probs_spread_the_unlisted_mass():
    probs = pred_probs_matrix([{"a": 0.6, "zz": 0.2}, {}], ["a", "b", "c"])
    assert np.allclose(probs.sum(1), 1) and np.allclose(probs[0], [0.6, 0.2, 0.2]) and np.allclose(probs[1], 1 / 3)


def test_a_verified_label_sent_back_is_reviewed_again(wb, admin, annotator, reviewer, noisy_set):
    ids, _ = noisy_set
    image_id = ids[0]
    annotation = submit_annotation(
        wb, annotator, image_id, {"color": ["red"]}, diagnosis="psoriasis", diagnosis_status="confirmed"
    )
    review_annotation(wb, reviewer, annotation, "verified")
    assert send_back_for_review(wb, reviewer, [image_id], note={"suggested": "melanoma"}) == 1
    with wb.session() as s:
        image = s.get(Image, image_id)
        assert image.status == "annotated" and image.verified_annotation_id is None
        assert image.meta["label_issue"]["suggested"] == "melanoma"
    assert [i.reason for i in review_items(wb, reviewer) if i.image_id == image_id] == ["suspicious label"]
    review_annotation(wb, reviewer, annotation, "verified")
    with wb.session() as s:
        image = s.get(Image, image_id)
        assert image.status == "verified" and "label_issue" not in image.meta


def test_annotators_cannot_see_or_send_label_issues(wb, annotator, noisy_set):
    from curation.errors import SkinflowError

    with pytest.raises(SkinflowError):
        suspicious_labels(wb, annotator)
    with pytest.raises(SkinflowError):
        send_back_for_review(wb, annotator, [noisy_set[0][0]])


def test_label_issues_are_found_without_forking_worker_processes(wb, reviewer, noisy_set, monkeypatch):
    """Forked inside the app server, cleanlab's default process pool deadlocked and Review never loaded."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("suspicious_labels started a multiprocessing pool")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    _, flipped = noisy_set
    issues = suspicious_labels(wb, reviewer)
    assert {i.image_id for i in issues[:8]} & flipped
