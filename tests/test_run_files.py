"""The files the trainer and the workbench exchange read back as what was written, and a hostile row is one
skipped row with its reason."""

import json
import math

import pytest

from schema.run_files import (
    Prediction,
    RankedDiagnosis,
    RunProgress,
    read_progress,
    write_image_manifest,
    write_predictions,
    write_progress,
)
from trainer.evaluate import read_predictions
from trainer.predict import read_manifest


def _prediction(image_id: int) -> Prediction:
    return Prediction(
        image=f"images/{image_id:064x}.jpg",
        model_version="run-3:step-40",
        id=image_id,
        caption={"color": ["erythematous"], "number": "few"},
        caption_text="Color: erythematous. Number: few.",
        diagnoses=[RankedDiagnosis("psoriasis", 0.7, "Psoriasis"), RankedDiagnosis("eczema", 0.2, "Eczema")],
        answer="Psoriasis",
    )


def test_a_prediction_file_reads_back_as_written_on_both_sides(tmp_path):
    written = [_prediction(1), _prediction(2), Prediction(image="x.jpg", model_version="llm:m:v", id=3, caption_error="timeout")]
    path = tmp_path / "predictions.jsonl"
    assert write_predictions(path, written) == 3
    assert [Prediction.from_json(json.loads(line)) for line in path.read_text().splitlines()] == written
    assert read_predictions(path) == {p.id: p for p in written}  # the evaluation's reader
    assert read_predictions(path)[1].top == RankedDiagnosis("psoriasis", 0.7, "Psoriasis")


def test_a_hostile_prediction_row_is_refused_with_its_reason_or_cleaned():
    good = _prediction(1).to_json()
    with pytest.raises(ValueError, match="model_version"):
        Prediction.from_json({**good, "model_version": "v" * 201})
    with pytest.raises(ValueError, match="not an image number"):
        Prediction.from_json({**good, "id": 10**30})
    with pytest.raises(ValueError, match="file name"):
        Prediction.from_json({**good, "image": ["a"]})
    odd = Prediction.from_json(
        {**good, "caption": "red, few", "diagnoses": [{"key": "psoriasis", "score": True}, "eczema", {"key": 7, "score": 1e400}]}
    )
    assert odd.caption is None and odd.caption_error == "a caption must be an object with the 11 fields, got str"
    assert odd.diagnoses == [RankedDiagnosis("psoriasis", 0.0), RankedDiagnosis(None, 0.0)]  # scores that are no probability: 0


def test_progress_reads_back_for_a_training_run_and_an_ablation(tmp_path):
    training = RunProgress(
        status="running", stage=1, stage_name="GRPO stage I", stages=[1, 2], stage_index=1, step=5, max_steps=10, pid=42
    )
    write_progress(tmp_path, training)
    assert read_progress(tmp_path) == training
    assert training.fraction() == pytest.approx((1 + 0.5) / 2)
    assert training.describe() == "GRPO stage I: step 5 of 10"
    ablation = RunProgress(status="running", done=3, total=12, current="no-fdlinear seed 1")
    write_progress(tmp_path, ablation)
    assert read_progress(tmp_path) == ablation
    assert ablation.fraction(ablation=True) == 0.25
    assert ablation.describe(ablation=True) == "ablation: 3 of 12 runs done; now no-fdlinear seed 1"


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"status": 3}', '{"status": "running", "step": "five"}', '{"status": "running", "pid": []}']
)
def test_a_progress_file_that_is_not_one_reads_as_none_not_an_error(tmp_path, text):
    (tmp_path / "progress.json").write_text(text)
    progress = read_progress(tmp_path)
    assert progress is None or progress.pid is None


def test_a_progress_file_being_written_by_another_version_keeps_what_it_knows(tmp_path):
    (tmp_path / "progress.json").write_text(json.dumps({"status": "done", "updated": math.inf, "gpu": "H100"}))
    assert read_progress(tmp_path) == RunProgress(status="done")


def test_the_image_manifest_is_what_the_predictors_read(tmp_path):
    items = [{"id": 4, "path": tmp_path / "a.jpg"}, {"id": 9, "path": tmp_path / "b.jpg"}]
    for item in items:
        item["path"].write_bytes(b"a picture")
    write_image_manifest(tmp_path / "images.jsonl", items)
    assert [(i["id"], i["path"]) for i in read_manifest(tmp_path / "images.jsonl")] == [
        (4, items[0]["path"]),
        (9, items[1]["path"]),
    ]
