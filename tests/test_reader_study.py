"""Blinded reader study: frozen items, blinded order, ratings, and statistics with golden values."""

import pytest

from curation.assist.drafts import add_draft
from curation.errors import ConflictError
from curation.labelling.reader_study import (
    available_sources,
    create_study,
    next_item,
    rate_item,
    ratings_csv,
    study_results,
    summarise,
)
from curation.ops.demo import build_demo
from curation.store.models import Image
from schema.errors import SkinflowError

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


def rows(scale_values: dict[str, dict[str, list[list[int]]]]):
    """ratings from {scale: {source: [[rater0 items...], [rater1 items...]]}}."""
    out = {}
    for scale, by_source in scale_values.items():
        for source, by_rater in by_source.items():
            for rater, values in enumerate(by_rater):
                for item, value in enumerate(values):
                    out.setdefault(
                        (item, f"r{rater}", source), {"item_id": item, "rater": f"r{rater}", "source": source, "comment": ""}
                    )[scale] = value
    return list(out.values())


def test_statistics_golden():
    ratings = rows(
        {
            "correctness": {"A": [[2, 2, 3, 3, 1]] * 2, "B": [[4, 4, 5, 5, 3]] * 2},
            "usefulness": {"A": [[3] * 5] * 2, "B": [[3] * 5] * 2},
            "trust": {"A": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], "B": [[5, 4, 3, 2, 1], [5, 4, 3, 2, 2]]},
        }
    )
    result = summarise(ratings, ["A", "B"])
    assert result["items"] == 5 and result["raters"] == ["r0", "r1"]
    assert result["means"]["correctness"]["A"]["mean"] == pytest.approx(2.2)
    assert result["means"]["correctness"]["B"]["mean"] == pytest.approx(4.2)
    low, high = result["means"]["correctness"]["A"]["ci95"]
    assert 1.4 <= low <= 2.2 <= high <= 2.8
    assert result["krippendorff_alpha"]["correctness"] == pytest.approx(1.0)  # the two raters agree exactly
    assert result["krippendorff_alpha"]["usefulness"] is None  # no variation: undefined
    tests = {t["scale"]: t for t in result["wilcoxon"]}
    # five paired differences, all +2: exact two-sided p = 2 / 2^5
    assert tests["correctness"]["p_value"] == pytest.approx(0.0625) and tests["correctness"]["mean_difference"] == pytest.approx(
        2.0
    )
    assert tests["usefulness"]["p_value"] == 1.0
    assert 0 < result["krippendorff_alpha"]["trust"] < 1


@pytest.fixture
def study_wb(wb, admin):
    build_demo(wb, admin, n=12, seed=0, verified_fraction=0.75, annotated_fraction=0.0)
    with wb.session() as s:
        verified = [i.id for i in s.query(Image).filter(Image.status == "verified")]
    for image_id in verified:
        add_draft(
            wb,
            admin,
            image_id,
            kind="llm",
            producer="gpt-x",
            version="p1",
            caption={"color": ["red"]},
            diagnoses=[{"key": "psoriasis", "score": 0.5}],
        )
    return wb, verified


def test_create_rate_and_report(study_wb, admin, reviewer):
    wb, verified = study_wb
    keys = [s["key"] for s in available_sources(wb)]
    assert "llm:gpt-x:p1" in keys and any(k.startswith("synthetic:") for k in keys)
    chosen = ["llm:gpt-x:p1", next(k for k in keys if k.startswith("synthetic:"))]
    with pytest.raises(SkinflowError, match="at least two"):
        create_study(wb, admin, "x", chosen[:1], 5)
    with pytest.raises(SkinflowError):
        create_study(wb, reviewer, "x", chosen, 5)  # admins create studies
    study = create_study(wb, admin, "pilot", chosen, 4)
    with pytest.raises(ConflictError):
        create_study(wb, admin, "pilot", chosen, 4)
    add_draft(wb, admin, verified[0], kind="llm", producer="gpt-x", version="p1", caption={"color": ["white"]})  # later: ignored
    orders = []
    for rater in (admin, reviewer):
        for _ in range(4):
            item = next_item(wb, rater, study)
            assert [name for name, _, _ in item.outputs] == ["Output 1", "Output 2"]
            assert next_item(wb, rater, study).outputs == item.outputs  # stable across reloads
            orders.append(tuple(key for _, key, _ in item.outputs))
            assert all(out["caption"]["color"] != ["white"] for _, _, out in item.outputs)
            rate_item(
                wb,
                rater,
                item.item_id,
                {
                    key: {"correctness": 4 if key.startswith("llm") else 2, "usefulness": 3, "trust": 3, "comment": "=SUM(A1)"}
                    for _, key, _ in item.outputs
                },
            )
        assert next_item(wb, rater, study) is None
    assert len(set(orders)) == 2  # both orders occur: the names say nothing about the source
    with pytest.raises(ConflictError):
        rate_item(
            wb, reviewer, item.item_id, {key: {"correctness": 1, "usefulness": 1, "trust": 1} for _, key, _ in item.outputs}
        )
    with pytest.raises(SkinflowError, match="1 to 5"):
        rate_item(wb, admin, item.item_id, {key: {"correctness": 9, "usefulness": 1, "trust": 1} for _, key, _ in item.outputs})
    results = study_results(wb, reviewer, study)
    assert results["means"]["correctness"]["llm:gpt-x:p1"]["mean"] == 4.0
    assert results["means"]["correctness"][chosen[1]]["mean"] == 2.0
    csv_text = ratings_csv(wb, reviewer, study)
    assert csv_text.count("\n") == 1 + 2 * 4 * 2 and "'=SUM(A1)" in csv_text
