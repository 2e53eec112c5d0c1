"""The ablation runner: each (variant, seed) trains and is evaluated on the same items, the report gives paired
differences with intervals, a rerun skips finished variants, and a cancel stops at the next step."""

import json

import pytest

from tests.helpers import TINY_BUDGET
from trainer.errors import TrainerError


def test_ablation_runs_variants_reports_paired_differences_and_resumes(grpo_export, tmp_path, monkeypatch):
    import trainer.ablate as ablate
    from trainer.ablate import AblationConfig, run_ablation
    from trainer.data import load_export
    from trainer.evaluate import evaluate, read_predictions

    out = tmp_path / "ablation"
    import shutil

    no_test = tmp_path / "no-test"  # the export with its test rows taken out
    shutil.copytree(grpo_export, no_test)
    for name in ("stage1.jsonl", "stage2.jsonl"):
        path = no_test / "grpo" / name
        rows = [line for line in path.read_text().splitlines() if json.loads(line)["split"] != "test"]
        path.write_text("".join(line + "\n" for line in rows))
    with pytest.raises(TrainerError, match="no 'test' rows"):  # refused before any training
        run_ablation(AblationConfig(export=str(no_test), out=str(tmp_path / "x"), seeds=(0,), variants=("full", "baseline")))
    assert not (tmp_path / "x").exists()
    config = AblationConfig(
        export=str(grpo_export), out=str(out), seeds=(0,), variants=("full", "no-fdlinear"), split="train", overrides=TINY_BUDGET
    )
    report = run_ablation(config)
    full, plain = report["variants"]["full"], report["variants"]["no-fdlinear"]
    assert full["stages"] == plain["stages"] == [0, 1, 2]
    assert full["parameters"]["vision"] > plain["parameters"]["vision"]  # FDLinear's bases and gates
    assert (
        full["parameters"]["total"] - full["parameters"]["vision"] == plain["parameters"]["total"] - plain["parameters"]["vision"]
    )
    data = load_export(grpo_export)
    for name, variant in report["variants"].items():  # the table is the evaluation of each run's predictions
        again = evaluate(read_predictions(out / name / "seed-0" / "predictions.jsonl"), data, split="train")
        assert variant["metrics"]["top1"] == {"mean": again["headline"]["top1"], "std": 0.0}
        assert variant["metrics"]["caption_reward"]["mean"] == again["captions"]["reward"]
    paired = plain["vs_reference"]
    assert paired["n"] == len(data.rows(2, "train")) and "vs_reference" not in full
    assert paired["top1"]["difference"] == plain["metrics"]["top1"]["mean"] - full["metrics"]["top1"]["mean"]
    assert "| no-fdlinear |" in (out / "report.md").read_text() and (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "progress.json").read_text())["status"] == "done"

    # a rerun trains nothing: finished runs are read back, the report is written again
    (out / "report.md").unlink()
    monkeypatch.setattr(ablate, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained a finished run")))
    assert run_ablation(config)["variants"]["full"]["metrics"] == full["metrics"]
    assert (out / "report.md").exists()
    with pytest.raises(TrainerError, match="other settings.*seeds"):
        run_ablation(
            AblationConfig(
                export=str(grpo_export),
                out=str(out),
                seeds=(0, 1),
                variants=("full", "no-fdlinear"),
                split="train",
                overrides=TINY_BUDGET,
            )
        )


def test_ablation_variants_and_cancel(grpo_export, tmp_path):
    from trainer.ablate import AblationConfig, run_ablation, variant_config

    config = AblationConfig(export=str(grpo_export), out=str(tmp_path / "a"), seeds=(0, 1), split="train", overrides=TINY_BUDGET)
    made = {v: variant_config(config, v, 1) for v in config.variants}
    assert {v: (c.stages, c.fdlinear, c.seed) for v, c in made.items()} == {
        "full": ((0, 1, 2), True, 1),
        "no-fdlinear": ((0, 1, 2), False, 1),
        "no-stage1": ((0, 2), True, 1),
        "baseline": ((0, 2), False, 1),
    }
    assert made["full"].stage2_steps == 2 and made["baseline"].output_dir == str(tmp_path / "a" / "baseline")
    assert AblationConfig(export="x", out="y", variants=("baseline", "full", "baseline")).variants == ("full", "baseline")
    with pytest.raises(TrainerError, match="unknown variant"):
        AblationConfig(export="x", out="y", variants=("full", "bigger"))
    with pytest.raises(TrainerError, match="set by the ablation"):
        AblationConfig(export="x", out="y", overrides={"fdlinear": False})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cancel").write_text("stop")
    assert run_ablation(config) is None
    assert json.loads((tmp_path / "a" / "progress.json").read_text())["status"] == "cancelled"
    assert not (tmp_path / "a" / "full").exists()
