"""Ablations of the SkinFlow recipe on a team's own export (`skinflow ablate`).

The paper claims both the dynamic vision encoder (FDLinear) and stage I (caption GRPO) are needed. This
runs the same recipe with one part removed at a time, with everything else equal (export, split, steps per
stage, seeds, preset), and evaluates every run on the same split with `trainer.evaluate`:

    full          FDLinear + stage I + stage II (+ the preset's SFT warm start, stage 0, in every variant)
    no-fdlinear   plain linears in the vision tower, same stages
    no-stage1     FDLinear, stage I left out
    baseline      neither

Each (variant, seed) is a normal run folder, <out>/<variant>/seed-<n>/, with result.json once trained,
predicted and evaluated: a rerun of the same command skips finished runs and resumes an unfinished one from
its last checkpoint. The report (report.md, report.json, ablation.png) has per variant the mean and spread over
seeds, wall time and parameter count, and paired differences against `full` (items of all seeds pooled,
bootstrap intervals over the pairs, McNemar on top-1).

Equal budget means equal steps per stage: leaving stage I out also leaves out its steps (as in the paper's
ablation), so no-stage1 and baseline train for fewer steps in all; wall time is in the table for that reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schema.files import write_json_atomic
from schema.run_files import RunProgress, write_progress
from trainer.config import ABLATION_VARIANTS, TrainConfig
from trainer.data import ExportData, load_export
from trainer.errors import TrainerError
from trainer.evaluate import compare_items, diagnosis_items, evaluate, pool_items, read_predictions
from trainer.train import train

REFERENCE = "full"
METRICS = ("top1", "top6", "group9_accuracy", "group3_accuracy", "clinical_score", "malignant_miss_rate", "caption_reward")
PAIRED = ("top1", "top6", "clinical_score", "malignant_miss_rate")


@dataclass
class AblationConfig:
    export: str
    out: str
    preset: str = "tiny"
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = tuple(ABLATION_VARIANTS)
    split: str = "test"
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig settings for every run (steps, batch...)

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in ABLATION_VARIANTS]
        if unknown:
            raise TrainerError(f"unknown variant(s) {unknown}; use: {', '.join(ABLATION_VARIANTS)}")
        # one order everywhere (reference first), whatever order they were given in
        self.seeds, self.variants = tuple(int(s) for s in self.seeds), tuple(v for v in ABLATION_VARIANTS if v in self.variants)
        if not self.seeds:
            raise TrainerError("give at least one seed")
        if len(self.variants) < 2:
            raise TrainerError("an ablation compares at least two variants")
        if self.preset == "probe":
            raise TrainerError("the probe preset has no FDLinear layers or GRPO stages to ablate; ablate tiny or qwen2.5-vl-7b")
        clash = sorted({"export", "seed", "fdlinear", "stages", "output_dir", "run_id", "preset"} & set(self.overrides))
        if clash:
            raise TrainerError(f"{clash} are set by the ablation itself; leave them out of the overrides")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seeds": list(self.seeds), "variants": list(self.variants)}


def variant_config(config: AblationConfig, variant: str, seed: int) -> TrainConfig:
    """The TrainConfig of one run: the preset and overrides, then the variant's one change."""
    base = TrainConfig.for_preset(config.preset, export=config.export, seed=seed, **config.overrides)
    stages = base.stages
    if variant in ("no-stage1", "baseline"):
        stages = tuple(s for s in stages if s != 1)
        if 2 not in stages:
            raise TrainerError("the preset's stages have no stage II to keep")
    if 1 not in base.stages and variant in ("full", "no-fdlinear"):
        raise TrainerError(f"the preset's stages {base.stages} have no stage I to ablate; include stage 1")
    return dataclasses.replace(
        base,
        stages=stages,
        fdlinear=variant in ("full", "no-stage1"),
        output_dir=str(Path(config.out) / variant),
        run_id=f"seed-{seed}",
        held_out_predictions=False,  # each variant is evaluated on the ablation's split instead
    )


def count_parameters(model_dir: Path) -> dict[str, int]:
    """Parameters of a saved model, read from its safetensors headers (no weights are loaded)."""
    from safetensors import safe_open

    total = vision = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise TrainerError(f"no safetensors weights in {model_dir}")
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                n = math.prod(handle.get_slice(name).get_shape())
                total += n
                vision += n if "visual" in name else 0
    return {"total": total, "vision": vision}


def run_one(config: AblationConfig, data: ExportData, variant: str, seed: int, cancel_file: Path) -> dict[str, Any] | None:
    """Train, predict and evaluate one (variant, seed); its result, or None when cancelled. A finished run
    (result.json) is read back, not rerun."""
    from trainer.predict import predict_split

    train_config = variant_config(config, variant, seed)
    folder = Path(train_config.output_dir) / train_config.run_id
    if (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    train(train_config, resume=folder.exists(), cancel_file=cancel_file)
    if cancel_file.exists():
        return None
    trained_s = time.perf_counter() - start
    predictions = predict_split(folder / "model", data, config.split, folder)
    report = evaluate(read_predictions(predictions), data, split=config.split)
    write_json_atomic(folder / "eval.json", report)
    result = {
        "variant": variant,
        "seed": seed,
        "train_s": round(trained_s, 1),
        "stages": list(train_config.stages),
        "fdlinear": train_config.fdlinear,
        "parameters": count_parameters((folder / "model").resolve()),
        "metrics": {**report["headline"], "caption_reward": report["captions"]["reward"]},
    }
    write_json_atomic(folder / "result.json", result)
    return result


def _progress(out: Path, status: str, done: int, total: int, current: str | None = None) -> None:
    write_progress(out, RunProgress(status=status, done=done, total=total, current=current, pid=os.getpid(), updated=time.time()))


def run_ablation(config: AblationConfig, *, on_progress: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Every (variant, seed), then the report; returns it (None when cancelled through <out>/cancel)."""
    data = load_export(config.export)
    if not data.rows(2, config.split):
        raise TrainerError(
            f"the export has no {config.split!r} rows with a diagnosis to evaluate on; pick another --split "
            "or export more verified data"
        )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / "ablation.json"
    if plan_file.exists():
        earlier = json.loads(plan_file.read_text(encoding="utf-8"))
        if earlier != json.loads(json.dumps(config.to_dict())):
            changed = sorted(k for k in earlier if earlier.get(k) != json.loads(json.dumps(config.to_dict())).get(k))
            raise TrainerError(
                f"{out} holds an ablation with other settings ({', '.join(changed)} differ); "
                "rerun with the same settings to resume it, or choose another --out"
            )
    else:
        write_json_atomic(plan_file, config.to_dict())
    cancel_file = out / "cancel"
    plan = [(variant, seed) for variant in config.variants for seed in config.seeds]
    results = []
    for index, (variant, seed) in enumerate(plan):
        if cancel_file.exists():
            _progress(out, "cancelled", index, len(plan))
            return None
        _progress(out, "running", index, len(plan), current=f"{variant} seed {seed}")
        if on_progress:
            on_progress(f"[{index + 1}/{len(plan)}] {variant}, seed {seed}")
        result = run_one(config, data, variant, seed, cancel_file)
        if result is None:
            _progress(out, "cancelled", index, len(plan))
            return None
        results.append(result)
    report = summarise(config, data, results)
    write_ablation_report(report, out)
    _progress(out, "done", len(plan), len(plan))
    return report


def _mean_spread(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(present)), "std": float(np.std(present, ddof=1)) if len(present) > 1 else 0.0}


def summarise(config: AblationConfig, data: ExportData, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread per variant; paired differences of each variant against the reference."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_variant.setdefault(result["variant"], []).append(result)
    rows = data.rows(2, config.split)
    items: dict[str, dict[str, np.ndarray]] = {}
    for variant, runs in by_variant.items():
        folders = [Path(config.out) / variant / f"seed-{r['seed']}" for r in sorted(runs, key=lambda r: r["seed"])]
        items[variant] = pool_items(
            [diagnosis_items(read_predictions(f / "predictions.jsonl"), rows, data.taxonomy) for f in folders]
        )
    reference = REFERENCE if REFERENCE in by_variant else config.variants[0]
    variants = {}
    for variant in config.variants:
        runs = by_variant.get(variant, [])
        variants[variant] = {
            "description": ABLATION_VARIANTS[variant],
            "seeds": [r["seed"] for r in runs],
            "metrics": {m: _mean_spread([r["metrics"].get(m) for r in runs]) for m in METRICS},
            "train_s": _mean_spread([r["train_s"] for r in runs]),
            "parameters": runs[0]["parameters"] if runs else None,
            "stages": runs[0]["stages"] if runs else None,
        }
        if variant != reference and variant in items:
            comparison = compare_items(items[reference], items[variant])
            variants[variant]["vs_reference"] = {k: comparison[k] for k in (*PAIRED, "mcnemar_top1", "n")}
    # "order": report.json is written with sorted keys, which would put "baseline" before "full"
    return {
        "export": config.export,
        "preset": config.preset,
        "split": config.split,
        "seeds": list(config.seeds),
        "order": list(config.variants),
        "overrides": config.overrides,
        "reference": reference,
        "n_items": len(rows),
        "variants": variants,
    }


def _cell(stat: dict[str, float | None], digits: int = 3) -> str:
    return "n/a" if stat["mean"] is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _difference(entry: dict[str, Any]) -> str:
    if entry["difference"] is None:
        return "n/a"
    ci = entry["difference_ci95"]
    return f"{entry['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{entry['difference']:+.3f}"


def write_ablation_report(report: dict[str, Any], out: str | Path) -> Path:
    """report.md, report.json and ablation.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    write_json_atomic(out / "report.json", report)
    variants = report["variants"]
    names = report["order"]
    lines = [
        f"# Ablation: {report['preset']} preset, {len(report['seeds'])} seed(s), {report['n_items']} {report['split']} items",
        "",
        f"Export: `{report['export']}`. Settings for every run: {report['overrides'] or 'the preset defaults'}. "
        "Mean ± standard deviation over seeds.",
        "",
        "| variant | top-1 | top-6 | group-9 acc | group-3 acc | malignant miss | caption reward | train s | parameters "
        "(vision) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        v = variants[name]
        params = v["parameters"] or {}
        lines.append(
            f"| {name} ({v['description']}) | {_cell(v['metrics']['top1'])} | {_cell(v['metrics']['top6'])} | "
            f"{_cell(v['metrics']['group9_accuracy'])} | {_cell(v['metrics']['group3_accuracy'])} | "
            f"{_cell(v['metrics']['malignant_miss_rate'])} | {_cell(v['metrics']['caption_reward'])} | "
            f"{_cell(v['train_s'], 0)} | {params.get('total', 0):,} ({params.get('vision', 0):,}) |"
        )
    lines += [
        "",
        f"Paired differences against `{report['reference']}` (variant - {report['reference']}; items of all seeds "
        "pooled; 95% bootstrap intervals over the pairs; McNemar's exact test on top-1):",
        "",
        "| variant | pairs | top-1 | top-6 | clinical score | malignant miss | McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        vs = variants[name].get("vs_reference")
        if vs:
            lines.append(
                f"| {name} | {vs['n']} | {_difference(vs['top1'])} | {_difference(vs['top6'])} | "
                f"{_difference(vs['clinical_score'])} | {_difference(vs['malignant_miss_rate'])} | "
                f"{vs['mcnemar_top1']['p_value']:.3g} |"
            )
    lines += ["", "![ablation](ablation.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")

    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    width = 0.38
    for offset, metric in ((-width / 2, "top1"), (width / 2, "top6")):
        means = [variants[n]["metrics"][metric]["mean"] or 0.0 for n in names]
        spread = [variants[n]["metrics"][metric]["std"] or 0.0 for n in names]
        axis.bar(np.arange(len(names)) + offset, means, width, yerr=spread, capsize=3, label=metric.replace("top", "top-"))
    axis.set_xticks(np.arange(len(names)), names)
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"accuracy ({report['split']})")
    axis.legend()
    axis.set_title(f"Ablation, {len(report['seeds'])} seed(s): mean and spread")
    figure.tight_layout()
    figure.savefig(out / "ablation.png", dpi=110)
    plt.close(figure)
    return out
