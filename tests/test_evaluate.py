"""Golden values for the evaluation metrics, computed by hand on a five-item test split."""

import json

import numpy as np
import pytest

from schema.caption import Caption, render
from schema.fields import FIELD_KEYS
from schema.run_files import Prediction, RankedDiagnosis
from schema.taxonomy import default_taxonomy
from trainer.data import ExportData
from trainer.errors import TrainerError
from trainer.evaluate import (
    bootstrap_ci,
    compare,
    evaluate,
    expected_calibration_error,
    mcnemar,
    read_predictions,
    write_report,
)

pytestmark = pytest.mark.database  # run again on PostgreSQL by `make test-postgres`

TRUTH_CAPTION = Caption(color=["erythematous"], lesion_type=["plaque"], texture=["scaly"]).to_json()


def stage2(i, key, fitz, split="test"):
    return {"id": i, "image": f"images/{i}.jpg", "split": split, "diagnosis_key": key, "fitzpatrick": fitz}


@pytest.fixture
def data(tmp_path):
    rows2 = [
        stage2(1, "psoriasis", 1),
        stage2(2, "melanoma", 1),
        stage2(3, "melanoma", 2),
        stage2(4, "psoriasis", 2),
        stage2(5, "dermatofibroma", 3),
        stage2(11, "psoriasis", 1, "train"),
        stage2(12, "psoriasis", 4, "train"),
        stage2(13, "melanoma", 5, "train"),
    ]
    rows1 = [{"id": i, "image": f"images/{i}.jpg", "split": "test", "caption": TRUTH_CAPTION, "fitzpatrick": 1} for i in (1, 2)]
    return ExportData(
        tmp_path, rows1, rows2, {k: 1 / 11 for k in FIELD_KEYS}, "uniform", default_taxonomy(), {"caption": "c", "diagnosis": "d"}
    )


def pred(i, keys, score, caption_text=""):
    return Prediction(
        image=f"images/{i}.jpg",
        model_version="m",
        id=i,
        diagnoses=[RankedDiagnosis(k, score if n == 0 else 0.01) for n, k in enumerate(keys)],
        caption_text=caption_text,
    )


PREDICTIONS = {
    1: pred(1, ["psoriasis", "eczema"], 0.9, render(Caption.model_validate(TRUTH_CAPTION))),  # right
    2: pred(2, ["dermatofibroma", "vitiligo", "melanoma"], 0.8, "no caption here"),  # rank 3; benign first: a miss
    3: pred(3, ["basal cell carcinoma"], 0.6),  # same three-group (malignant) only
    4: pred(4, ["acne", "melanoma", "vitiligo", "urticaria", "scabies", "rosacea", "psoriasis"], 0.4),  # same nine-group; rank 7
    5: pred(5, ["melanoma"], 0.7),  # benign truth, malignant answer: false alarm
}


def test_headline_metrics_golden(data):
    report = evaluate(PREDICTIONS, data)
    h = report["headline"]
    assert report["n_diagnosis"] == 5
    assert h["top1"] == pytest.approx(0.2) and h["top3"] == pytest.approx(0.4) and h["top6"] == pytest.approx(0.4)
    assert h["group9_accuracy"] == pytest.approx(0.4) and h["group3_accuracy"] == pytest.approx(0.6)
    assert h["clinical_score"] == pytest.approx((1 + 0 + 0.25 + 0.5 + 0) / 5)
    assert h["malignant_miss_rate"] == pytest.approx(0.5) and h["false_alarm_rate"] == pytest.approx(1 / 3)
    # one item per bin: |1 - .9| + |0 - .8| + |0 - .6| + |0 - .4| + |0 - .7| over 5
    assert h["ece"] == pytest.approx(2.6 / 5)
    for key, value in h.items():
        low, high = report["ci95"][key]
        assert low <= value + 1e-9 and value - 1e-9 <= high, key


def test_fairness_long_tail_and_zero_shot_golden(data):
    report = evaluate(PREDICTIONS, data)
    per_type = report["fitzpatrick"]["per_type"]
    assert {t: v["top1"] for t, v in per_type.items()} == {"1": 0.5, "2": 0.0, "3": 0.0}
    assert report["fitzpatrick"]["largest_gap"] == pytest.approx(0.5)
    by_label = {r["label"]: r for r in report["per_label"]}
    assert by_label["psoriasis"]["train_count"] == 2 and by_label["psoriasis"]["top1"] == pytest.approx(0.5)
    assert by_label["dermatofibroma"]["train_count"] == 0
    assert report["seen_vs_unseen"]["seen"] == {"n": 4, "top1": 0.25, "top6": 0.5}
    assert report["seen_vs_unseen"]["unseen"] == {"n": 1, "top1": 0.0, "top6": 0.0}


def test_caption_quality_golden(data):
    captions = evaluate(PREDICTIONS, data)["captions"]
    assert captions["n"] == 2 and captions["reward"] == pytest.approx(0.5)  # one perfect, one unreadable
    assert captions["fields"]["color"] == pytest.approx(0.5)


def test_expected_calibration_error_golden():
    confidence = np.array([0.05, 0.06, 0.95, 1.0])
    correct = np.array([False, True, True, True])
    ece, bins = expected_calibration_error(confidence, correct)
    # bin 0: acc .5, conf .055 (2 items); bin 14: acc 1, conf .975 (2 items; 1.0 falls in the last bin)
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.055) + 0.5 * abs(1 - 0.975))
    assert [b["n"] for b in bins] == [2, 2]


def test_mcnemar_exact_golden():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 1, 1, 1], dtype=bool)
    # discordant: A-only 1, B-only 3; p = 2 * (C(4,0) + C(4,1)) / 2^4 = 0.625
    assert mcnemar(a, b) == {"b": 1, "c": 3, "p_value": pytest.approx(0.625)}
    assert mcnemar(a, a)["p_value"] == 1.0
    many = np.ones(12, dtype=bool)
    assert mcnemar(~many, many)["p_value"] == pytest.approx(2 / 2**12)


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    values = np.array([0, 1] * 50, dtype=float)
    ci = bootstrap_ci(lambda idx: float(values[idx].mean()), 100)
    assert ci == bootstrap_ci(lambda idx: float(values[idx].mean()), 100)
    assert 0.38 < ci[0] < 0.5 < ci[1] < 0.62
    assert bootstrap_ci(lambda idx: 1.0, 10) == (1.0, 1.0)


def test_paired_comparison_and_report_files(data, tmp_path):
    better = {**PREDICTIONS, 3: pred(3, ["melanoma"], 0.6), 4: pred(4, ["psoriasis"], 0.6)}
    comparison = compare(PREDICTIONS, better, data)
    assert comparison["top1"]["difference"] == pytest.approx(0.4)
    assert comparison["mcnemar_top1"]["b"] == 0 and comparison["mcnemar_top1"]["c"] == 2
    out = write_report(evaluate(better, data), tmp_path / "report", comparison=comparison)
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "reliability.png", "fitzpatrick.png"}
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "| top1 | 0.600 |" in text and "McNemar" in text
    assert json.loads((out / "report.json").read_text())["headline"]["top1"] == pytest.approx(0.6)


def test_bad_inputs_are_clear(data, tmp_path):
    with pytest.raises(TrainerError, match="no prediction matches"):
        evaluate({99: pred(99, ["psoriasis"], 1.0)}, data)
    with pytest.raises(TrainerError, match="no 'nope' rows"):
        evaluate(PREDICTIONS, data, split="nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x.jpg"}\n')
    with pytest.raises(TrainerError, match="no integer 'id'"):
        read_predictions(bad)
    with pytest.raises(TrainerError, match="does not exist"):
        read_predictions(tmp_path / "missing.jsonl")


def test_eval_an_openai_compatible_model_as_a_baseline_through_the_cli(wb, tmp_path):
    """`skinflow eval --llm`: the drafting prompt against a real OpenAI-protocol server on 127.0.0.1 (it always
    answers basal cell carcinoma first), scored like any prediction file; then a paired comparison."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from curation.export.dataset import export_dataset
    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor
    from tests.fake_llm import FakeLLM

    build_demo(wb, None, n=24, seed=1, verified_fraction=1.0, annotated_fraction=0.0)
    export_dataset(wb, get_actor(wb, "admin"), tmp_path / "export", formats=("grpo",))
    rows = [json.loads(line) for line in (tmp_path / "export" / "grpo" / "stage2.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    expected_top1 = sum(r["diagnosis_key"] == "basal cell carcinoma" for r in train) / len(train)
    skinflow = str(Path(sys.executable).with_name("skinflow"))
    with FakeLLM() as server:
        env = {
            **os.environ,
            "SKINFLOW_HOME": str(tmp_path / "elsewhere"),
            "SKINFLOW_LLM_BASE_URL": server.url,
            "SKINFLOW_LLM_MODEL": "fake-vlm",
            "SKINFLOW_LLM_API_KEY": "test-key",
        }
        result = subprocess.run(
            [
                skinflow,
                "eval",
                "--export",
                str(tmp_path / "export"),
                "--llm",
                "fake-vlm",
                "--split",
                "train",
                "--out",
                str(tmp_path / "llm"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "llm" / "report.json").read_text())
    assert report["n_diagnosis"] == len(train)
    assert report["headline"]["top1"] == pytest.approx(expected_top1)
    assert report["captions"]["n"] == len(train) and report["captions"]["reward"] > 0
    predictions = [json.loads(line) for line in (tmp_path / "llm" / "predictions.jsonl").read_text().splitlines()]
    assert all(
        p["model_version"].startswith("llm:fake-vlm:") and p["diagnoses"][0]["key"] == "basal cell carcinoma" for p in predictions
    )
    # the same file against itself: no difference, McNemar p = 1
    result = subprocess.run(
        [
            skinflow,
            "eval",
            "--export",
            str(tmp_path / "export"),
            "--predictions",
            str(tmp_path / "llm" / "predictions.jsonl"),
            "--baseline",
            str(tmp_path / "llm" / "predictions.jsonl"),
            "--split",
            "train",
            "--out",
            str(tmp_path / "same"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    comparison = json.loads((tmp_path / "same" / "report.json").read_text())["comparison"]
    assert comparison["top1"]["difference"] == 0 and comparison["mcnemar_top1"]["p_value"] == 1.0
