import io
from random import Random

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from curation.ingest.demo_cases import ARCHETYPES, SKIN_RGB, generate_cases, noisy_draft
from curation.ops.demo import build_demo
from curation.store.models import Annotation, Draft, Review, User
from curation.store.models import Image as ImageRow
from schema import Caption, caption_scores, default_taxonomy

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def test_cases_are_deterministic_by_seed_and_independent_of_n():
    a, b = generate_cases(6, seed=3), generate_cases(3, seed=3)
    assert [c.image_bytes for c in a[:3]] == [c.image_bytes for c in b]
    assert generate_cases(3, seed=4)[0].image_bytes != a[0].image_bytes


def test_archetype_labels_are_real_taxonomy_keys_spanning_all_three_groups():
    tax = default_taxonomy()
    assert {tax.label(a.label).group3 for a in ARCHETYPES} == {"benign", "malignant", "non-neoplastic"}


def _skin_and_lesion_fraction(case):
    pixels = np.asarray(Image.open(io.BytesIO(case.image_bytes)).convert("RGB"), dtype=np.float32)
    skin = np.array(SKIN_RGB[case.fitzpatrick], dtype=np.float32)
    differs = np.abs(pixels - skin).sum(axis=2) > 60
    return pixels, differs.mean()


def test_images_show_what_the_caption_says():
    cases = generate_cases(120, seed=0)
    # skin tone follows the Fitzpatrick type: corners of type I images are lighter than of type VI
    corner = {c.fitzpatrick: [] for c in cases}
    for c in cases:
        pixels, _ = _skin_and_lesion_fraction(c)
        corner[c.fitzpatrick].append(pixels[:12, :12].mean())
    assert np.mean(corner[1]) > np.mean(corner[3]) > np.mean(corner[6])
    # lesion area grows with the size band and the number of lesions
    area = {}
    for c in cases:
        area.setdefault((c.caption.number, c.caption.size), []).append(_skin_and_lesion_fraction(c)[1])
    assert np.mean(area[("single", "<5 mm")]) < np.mean(area[("single", "1-2 cm")])
    # black appears only where the caption says black
    for c in cases:
        pixels, _ = _skin_and_lesion_fraction(c)
        dark_pixels = int((pixels.max(axis=2) < 60).sum())
        if "black" in c.caption.color:
            assert dark_pixels >= 20, c.index
        elif c.fitzpatrick < 6:
            assert dark_pixels < 20, c.index


def test_noisy_drafts_differ_from_the_truth_in_a_controlled_way():
    cases = generate_cases(60, seed=1)
    scores = [np.mean(list(caption_scores(noisy_draft(Random(i), c.caption), c.caption).values())) for i, c in enumerate(cases)]
    assert 0.6 < np.mean(scores) < 0.95  # wrong somewhere, mostly right
    assert noisy_draft(Random(5), cases[0].caption) == noisy_draft(Random(5), cases[0].caption)
    assert noisy_draft(Random(5), cases[0].caption, rate=0.0) == cases[0].caption


def test_build_demo_creates_accounts_images_drafts_and_verified_records_once(wb):
    report = build_demo(wb, None, n=30, seed=0, verified_fraction=0.5, annotated_fraction=0.1)
    assert set(report.accounts) == {"admin", "reviewer", "annotator"}
    assert report.import_report.imported == 30 and report.drafts == 30
    assert 5 <= report.verified <= 25 and report.annotated >= report.verified
    with wb.session() as s:
        assert s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.source != "synthetic")) == 0
        assert s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.status == "verified")) == report.verified
        assert s.scalar(select(func.count()).select_from(Draft).where(Draft.kind == "synthetic")) == 30
        truth = s.scalar(select(ImageRow).where(ImageRow.status == "verified").limit(1))
        annotation = s.get(Annotation, truth.verified_annotation_id)
        assert Caption.model_validate(annotation.caption) == Caption.model_validate(truth.meta["true_caption"])
    from curation.store.auth import get_actor

    # the seeded work is the seed accounts', not the accounts people log in as
    with wb.session() as s:
        authors = set(s.scalars(select(User.username).join(Annotation, Annotation.user_id == User.id)))
        reviewers = set(s.scalars(select(User.username).join(Review, Review.reviewer_id == User.id)))
    assert authors == {"demo-annotator"} and reviewers == {"demo-reviewer"}

    again = build_demo(wb, get_actor(wb, "admin"), n=30, seed=0)
    assert again.accounts == {} and again.import_report.imported == 0 and again.import_report.already_present == 30
