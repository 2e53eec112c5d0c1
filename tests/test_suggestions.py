"""Prediction files come back as model suggestions (drafts), matched to the right pictures."""

import json

import pytest
from sqlalchemy import func, select

from curation.assist.drafts import latest_model_drafts
from curation.assist.suggestions import import_predictions
from curation.export.dataset import export_dataset
from curation.ops.demo import build_demo
from curation.store.models import Draft
from schema.errors import SkinflowError

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`


@pytest.fixture
def exported(wb, admin, tmp_path):
    build_demo(wb, admin, n=8, seed=0, verified_fraction=0.5, annotated_fraction=0.0)
    export_dataset(wb, admin, tmp_path / "export", include_unverified=False)
    return [json.loads(line) for line in (tmp_path / "export" / "records.jsonl").read_text().splitlines()]


def prediction(record, **changes):
    row = {
        "id": record["id"],
        "image": record["image"],
        "model_version": "run-1:stage2",
        "caption": {"color": ["brown"], "number": "single"},
        "caption_text": "Color: brown\nNumber: single",
        "caption_error": None,
        "answer": "Melanoma",
        "diagnoses": [{"key": "melanoma", "display": "Melanoma", "score": 0.6}, {"key": "not-a-label", "score": 0.3}],
    }
    return {**row, **changes}


def count_model_drafts(wb):
    with wb.session() as s:
        return s.scalar(select(func.count()).select_from(Draft).where(Draft.kind == "model"))


def test_predictions_become_model_drafts_once(wb, admin, exported, tmp_path):
    a, b, c = exported[:3]
    rows = [
        prediction(a),
        prediction(b, caption={"number": "lots and lots"}),
        prediction(c, id=None),  # matched by the file name (sha256)
        prediction(a, id=b["id"]),  # id and picture disagree: refused
        prediction(a, id=999_999, image="images/x/y.jpg"),
    ]  # unknown image
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = import_predictions(wb, admin, path)
    assert report.added == 3 and [line for line, _ in report.skipped] == [4, 5]
    assert "different picture" in report.skipped[0][1]
    with wb.session() as s:
        drafts = latest_model_drafts(s, [a["id"], b["id"], c["id"]])
        broken = s.scalar(select(Draft).where(Draft.image_id == b["id"], Draft.kind == "model"))
        assert broken.caption is None and broken.error  # an invalid caption is kept as an error, not stored as a caption
    model = [d for d in drafts[a["id"]] if d.kind == "model"][0]
    assert model.version == "run-1:stage2" and model.caption["color"] == ["brown"]
    assert model.diagnoses == [{"key": "melanoma", "score": 0.6}]  # unknown labels dropped
    assert [d for d in drafts[c["id"]] if d.kind == "model"]
    again = import_predictions(wb, admin, path)
    assert again.added == 0 and again.already_there == 3 and count_model_drafts(wb) == 3


def test_a_prediction_written_loosely_keeps_its_good_fields_with_notes(wb, admin, exported, tmp_path):
    [record] = exported[:1]
    path = tmp_path / "loose.jsonl"
    loose = {"color": ["brown"], "number": "2", "size": "3-4 mm", "score": 0.7}
    path.write_text(json.dumps(prediction(record, caption=loose)) + "\n")
    assert import_predictions(wb, admin, path).added == 1
    with wb.session() as s:
        draft = s.scalar(select(Draft).where(Draft.image_id == record["id"], Draft.kind == "model"))
    assert (draft.caption["number"], draft.caption["size"], draft.caption["size_mm"]) == ("few", "<5 mm", 3.5)
    assert {(n["field"], n["action"]) for n in draft.meta["salvage"]} == {
        ("number", "changed"),
        ("size", "changed"),
        ("score", "ignored"),
    }


def test_a_malformed_prediction_file_imports_nothing(wb, admin, exported, tmp_path, annotator):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(prediction(exported[0])) + "\n{broken\n")
    with pytest.raises(SkinflowError, match="line 2 is not valid JSON"):
        import_predictions(wb, admin, path)
    path.write_text(json.dumps({"id": exported[0]["id"]}) + "\n")
    with pytest.raises(SkinflowError, match="no model_version"):
        import_predictions(wb, admin, path)
    with pytest.raises(SkinflowError, match="cannot read"):
        import_predictions(wb, admin, tmp_path / "missing.jsonl")
    with pytest.raises(SkinflowError):
        import_predictions(wb, annotator, path)  # admins only
    assert count_model_drafts(wb) == 0


def test_suggest_with_model_predicts_what_needs_work_imports_it_and_removes_its_folder(wb, admin, annotator, exported):
    from curation.assist.suggestions import suggest_with_model
    from curation.store.models import NEEDS_WORK_STATUSES, Image

    seen = {}

    def predict(manifest, out_file):  # what the trainer's predict_to_file does, minus the model
        items = [json.loads(line) for line in manifest.read_text().splitlines()]
        seen["folder"], seen["ids"] = manifest.parent, [item["id"] for item in items]
        out_file.write_text(
            "".join(
                json.dumps(
                    {
                        "id": item["id"],
                        "image": item["image"],
                        "model_version": "m:1",
                        "caption": {"color": ["brown"]},
                        "diagnoses": [],
                    }
                )
                + "\n"
                for item in items
            )
        )
        return len(items)

    with pytest.raises(SkinflowError, match="admin"):
        suggest_with_model(wb, annotator, predict)
    made = suggest_with_model(wb, admin, predict)
    with wb.session() as s:
        needing = s.scalars(select(Image.id).where(Image.status.in_(NEEDS_WORK_STATUSES)).order_by(Image.id)).all()
    assert seen["ids"] == needing and made.predicted == len(needing) == made.report.added
    assert not seen["folder"].exists() and seen["folder"].parent == wb.settings.home
    assert suggest_with_model(wb, admin, predict, limit=2).report.already_there == 2


def test_a_prediction_line_nested_100000_deep_is_refused_as_bad_input(wb, admin, exported, tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_text(json.dumps(prediction(exported[0])) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(SkinflowError, match="line 2 is not valid JSON .*nested deeper than 64 levels.*nothing was imported"):
        import_predictions(wb, admin, path)
    assert count_model_drafts(wb) == 0


def test_hostile_prediction_lines_are_skipped_one_by_one_and_the_rest_import(wb, admin, exported, tmp_path):
    """Each of these crashed `suggest --predictions` whole: an unhashable version, a 30-digit id, diagnoses as a
    number, a score of 1e999 or text, a caption that is a list, texts that are objects."""
    rows = [
        prediction(exported[0], model_version=["run-1"]),
        prediction(exported[1], id=10**30),
        prediction(exported[2], diagnoses=5),
        prediction(exported[3], diagnoses=[{"key": "melanoma", "score": 10**400}, {"key": "psoriasis", "score": "high"}]),
        prediction(exported[4], caption=["brown"], caption_text={"x": 1}, answer=[1], caption_error={"y": 2}),
        prediction(exported[5]),
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = import_predictions(wb, admin, path)
    assert [line for line, _ in report.skipped] == [1, 2] and "model_version" in report.skipped[0][1]
    assert report.added == 4
    with wb.session() as s:
        drafts = {d.image_id: d for d in s.scalars(select(Draft).where(Draft.kind == "model"))}
    assert drafts[exported[2]["id"]].diagnoses == []
    assert drafts[exported[3]["id"]].diagnoses == [{"key": "melanoma", "score": 0.0}, {"key": "psoriasis", "score": 0.0}]
    odd = drafts[exported[4]["id"]]
    assert odd.caption is None and "must be an object" in odd.error and odd.raw_reply is None
    assert drafts[exported[5]["id"]].caption["color"] == ["brown"]
