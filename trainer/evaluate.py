"""Clinically grounded evaluation of a prediction file against an export split (`skinflow eval`).

A functional core: every metric is a plain function of per-item arrays, so the golden tests can check each
one by hand, and the bootstrap reuses them on resampled items.

Diagnosis, per item (truth key, ranked predicted keys, top-1 score, Fitzpatrick type):
- top-k exact accuracy (k = 1, 3, 6); accuracy at the nine-group and three-group level (top-1);
- clinical score: the relevance of the top-1 answer, 1 exact, 0.5 same nine-partition group, 0.25 same
  three-partition group, 0 unrelated or no answer (SkinFlow's "hierarchical relevance"; the weights are
  settings, CLINICAL_WEIGHTS);
- malignant-miss rate: malignant truth, top-1 not malignant; false-alarm rate: benign or non-neoplastic
  truth, top-1 malignant;
- per Fitzpatrick type top-1 accuracy and the largest gap between types (fairness);
- calibration: expected calibration error over 15 equal-width bins of the top-1 score, reliability diagram;
- per label: top-1 accuracy against the label's count in the training split (long tail);
- seen vs unseen labels (not in the training split: the zero-shot split of --holdout-labels).
Captions: mean field score s_i per field and the weighted caption reward with the export's weights.
Every headline number gets a 95% bootstrap interval (items resampled, 1,000 times, seed 0). Two prediction
files on the same items: paired differences with bootstrap intervals and McNemar's exact test on top-1.

One module on purpose: the metrics, their intervals and the report that prints them are read
together when a number looks wrong.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from schema.files import read_jsonl
from schema.run_files import Prediction
from schema.taxonomy import Relevance, Taxonomy
from trainer.data import ExportData
from trainer.errors import TrainerError
from trainer.rewards import caption_reward

CLINICAL_WEIGHTS = {Relevance.EXACT: 1.0, Relevance.SAME_GROUP9: 0.5, Relevance.SAME_GROUP3: 0.25, Relevance.UNRELATED: 0.0}
ECE_BINS = 15
BOOTSTRAP = 1000


# -- per-item arrays -----------------------------------------------------------------------------------
def diagnosis_items(predictions: dict[int, Prediction], rows: list[dict[str, Any]], taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    """Per-item columns for the rows that have a prediction."""
    truth, ranked, confidence, skin = [], [], [], []
    for row in rows:
        p = predictions.get(row["id"])
        if p is None:
            continue
        keys = [d.key for d in p.diagnoses]
        truth.append(row["diagnosis_key"])
        ranked.append([k if k in taxonomy.labels else None for k in keys])
        confidence.append(p.top.score if p.top else 0.0)
        # the type, or the band where the source knows only that (DDI): reported as its own row, never as unknown
        band = row.get("fitzpatrick_band")
        skin.append(str(row["fitzpatrick"]) if row.get("fitzpatrick") is not None else f"band {band}" if band else None)
    n = len(truth)
    top = [r[0] if r else None for r in ranked]
    relevance = [taxonomy.relevance(t, truth_key) if t else Relevance.UNRELATED for t, truth_key in zip(top, truth, strict=True)]
    malignant_truth = np.array([taxonomy.is_malignant(t) for t in truth], dtype=bool)
    malignant_answer = np.array([t is not None and taxonomy.is_malignant(t) for t in top], dtype=bool)
    return {
        "truth": np.array(truth, dtype=object),
        "top1_key": np.array(top, dtype=object),
        "hit1": np.array([r[:1] == [t] for r, t in zip(ranked, truth, strict=True)], dtype=bool),
        "hit3": np.array([t in r[:3] for r, t in zip(ranked, truth, strict=True)], dtype=bool),
        "hit6": np.array([t in r[:6] for r, t in zip(ranked, truth, strict=True)], dtype=bool),
        "group9": np.array([rel in (Relevance.EXACT, Relevance.SAME_GROUP9) for rel in relevance], dtype=bool),
        "group3": np.array([rel != Relevance.UNRELATED for rel in relevance], dtype=bool),
        "clinical": np.array([CLINICAL_WEIGHTS[rel] for rel in relevance], dtype=float),
        "malignant_truth": malignant_truth,
        "malignant_answer": malignant_answer,
        "confidence": np.array(confidence, dtype=float),
        "fitzpatrick": np.array(skin, dtype=object),
        "n": np.array(n),
    }


# -- metrics on those arrays -----------------------------------------------------------------------------
def rate(mask: np.ndarray, where: np.ndarray | None = None) -> float | None:
    """Share of True in mask (over `where`); None when there is nothing to count."""
    values = mask if where is None else mask[where]
    return float(values.mean()) if values.size else None


def malignant_miss_rate(items: dict[str, np.ndarray]) -> float | None:
    return rate(~items["malignant_answer"], items["malignant_truth"])


def false_alarm_rate(items: dict[str, np.ndarray]) -> float | None:
    return rate(items["malignant_answer"], ~items["malignant_truth"])


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> tuple[float | None, list[dict]]:
    """ECE over equal-width bins of confidence (a score of exactly 1 falls in the last bin), and the bins."""
    if confidence.size == 0:
        return None, []
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    table, total = [], 0.0
    for b in range(bins):
        inside = index == b
        if not inside.any():
            continue
        accuracy, mean_confidence = float(correct[inside].mean()), float(confidence[inside].mean())
        total += inside.sum() / confidence.size * abs(accuracy - mean_confidence)
        table.append(
            {
                "bin": b,
                "low": b / bins,
                "high": (b + 1) / bins,
                "n": int(inside.sum()),
                "accuracy": accuracy,
                "confidence": mean_confidence,
            }
        )
    return float(total), table


def per_fitzpatrick(items: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Top-1 accuracy per skin type ("1".."6", or "band V-VI" where only the band is known; unknown left out) and
    the largest gap between two of them."""
    out = {}
    for skin_type in sorted({t for t in items["fitzpatrick"] if t is not None}):
        inside = items["fitzpatrick"] == skin_type
        out[skin_type] = {"n": int(inside.sum()), "top1": rate(items["hit1"], inside)}
    accuracies = [v["top1"] for v in out.values()]
    return out, (max(accuracies) - min(accuracies)) if len(accuracies) >= 2 else None


def headline(items: dict[str, np.ndarray]) -> dict[str, float | None]:
    ece, _ = expected_calibration_error(items["confidence"], items["hit1"])
    return {
        "top1": rate(items["hit1"]),
        "top3": rate(items["hit3"]),
        "top6": rate(items["hit6"]),
        "group9_accuracy": rate(items["group9"]),
        "group3_accuracy": rate(items["group3"]),
        "clinical_score": float(items["clinical"].mean()) if items["clinical"].size else None,
        "malignant_miss_rate": malignant_miss_rate(items),
        "false_alarm_rate": false_alarm_rate(items),
        "ece": ece,
    }


def subset(items: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (v[index] if k != "n" else np.array(len(index))) for k, v in items.items()}


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float | None], n: int, *, resamples: int = BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of statistic(index) over item resamples with replacement."""
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    values = np.array([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired right/wrong: b = A right and B wrong, c = A wrong and B right;
    two-sided p = 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    b = int(np.sum(a_correct & ~b_correct))
    c = int(np.sum(~a_correct & b_correct))
    m = b + c
    if m == 0:
        return {"b": 0, "c": 0, "p_value": 1.0}
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return {"b": b, "c": c, "p_value": min(1.0, 2 * tail)}


# -- the report -------------------------------------------------------------------------------------------
def read_predictions(path: str | Path) -> dict[int, Prediction]:
    """A prediction file by export record id; TrainerError names the first row that is not a prediction."""
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"prediction file {path} does not exist; make one with `skinflow predict`")
    rows = read_jsonl(
        path,
        check=lambda row: isinstance(row.get("id"), int),
        error=TrainerError,
        problem="has no integer 'id' (the export record id); predict from the export's grpo/*.jsonl",
    )
    predictions = {}
    for number, row in enumerate(rows, 1):
        try:
            predictions[row["id"]] = Prediction.from_json(row)
        except ValueError as e:
            raise TrainerError(f"{path} row {number}: {e}; is this a `skinflow predict` file?") from None
    return predictions


def evaluate(predictions: dict[int, Prediction], data: ExportData, *, split: str = "test") -> dict[str, Any]:
    """The full report as a dict (JSON-ready)."""
    rows2, rows1 = data.rows(2, split), data.rows(1, split)
    if not rows2 and not rows1:
        raise TrainerError(f"the export has no {split!r} rows; pick --split train, val or test")
    items = diagnosis_items(predictions, rows2, data.taxonomy)
    n = int(items["n"])
    if n == 0:
        raise TrainerError(
            f"no prediction matches a {split!r} record of the export (ids differ?): predict on {data.folder}/grpo/stage2.jsonl"
        )
    numbers = headline(items)
    intervals = {key: bootstrap_ci(lambda idx, key=key: headline(subset(items, idx))[key], n) for key in numbers}
    fitz, gap = per_fitzpatrick(items)
    ece, bins = expected_calibration_error(items["confidence"], items["hit1"])
    train_counts = Counter(r["diagnosis_key"] for r in data.rows(2, "train"))
    per_label = []
    for label in sorted(set(items["truth"])):
        inside = items["truth"] == label
        per_label.append(
            {
                "label": label,
                "train_count": train_counts.get(label, 0),
                "n": int(inside.sum()),
                "top1": rate(items["hit1"], inside),
            }
        )
    seen = np.array([train_counts.get(t, 0) > 0 for t in items["truth"]], dtype=bool)
    captions = caption_report(predictions, rows1, data.weights)
    return {
        "split": split,
        "n_diagnosis": n,
        "n_caption": captions["n"],
        "headline": numbers,
        "ci95": intervals,
        "fitzpatrick": {"per_type": fitz, "largest_gap": gap},
        "calibration": {"ece": ece, "bins": bins},
        "per_label": per_label,
        "seen_vs_unseen": {
            "seen": {"n": int(seen.sum()), "top1": rate(items["hit1"], seen), "top6": rate(items["hit6"], seen)},
            "unseen": {"n": int((~seen).sum()), "top1": rate(items["hit1"], ~seen), "top6": rate(items["hit6"], ~seen)},
        },
        "captions": captions,
    }


def caption_report(predictions: dict[int, Prediction], rows: list[dict[str, Any]], weights: dict[str, float]) -> dict[str, Any]:
    from schema.caption import parse, validate_caption
    from schema.compare import caption_scores
    from schema.errors import CaptionError
    from schema.fields import FIELD_KEYS

    pairs = [(predictions[r["id"]].caption_text, r["caption"]) for r in rows if r["id"] in predictions]
    if not pairs:
        return {"n": 0, "reward": None, "fields": {}}
    rewards = np.array(caption_reward([p for p, _ in pairs], [t for _, t in pairs], weights=weights))
    fields = {key: [] for key in FIELD_KEYS}
    for text, truth in pairs:
        try:
            scores = caption_scores(parse(text), validate_caption(truth))
        except CaptionError:
            scores = {key: 0.0 for key in FIELD_KEYS}
        for key, value in scores.items():
            fields[key].append(value)
    return {
        "n": len(pairs),
        "reward": float(rewards.mean()),
        "reward_ci95": bootstrap_ci(lambda idx: float(rewards[idx].mean()), len(rewards)),
        "fields": {key: float(np.mean(v)) for key, v in fields.items()},
    }


def compare(a: dict[int, Prediction], b: dict[int, Prediction], data: ExportData, *, split: str = "test") -> dict[str, Any]:
    """Paired comparison of two prediction files on the items both cover."""
    rows = [r for r in data.rows(2, split) if r["id"] in a and r["id"] in b]
    if not rows:
        raise TrainerError("the two prediction files share no record of this split")
    return compare_items(diagnosis_items(a, rows, data.taxonomy), diagnosis_items(b, rows, data.taxonomy))


def pool_items(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-item columns of several evaluations as one (e.g. the same split scored for each seed)."""
    pooled = {key: np.concatenate([part[key] for part in parts]) for key in parts[0] if key != "n"}
    pooled["n"] = np.array(sum(int(part["n"]) for part in parts))
    return pooled


def compare_items(items_a: dict[str, np.ndarray], items_b: dict[str, np.ndarray]) -> dict[str, Any]:
    """B - A on paired items (row i of A and of B are the same record): differences with bootstrap intervals
    over the pairs, and McNemar's exact test on top-1."""
    n = int(items_a["n"])
    out: dict[str, Any] = {"n": n, "mcnemar_top1": mcnemar(items_a["hit1"], items_b["hit1"])}
    for key in ("top1", "top6", "clinical_score", "malignant_miss_rate"):

        def difference(idx, key=key):
            x, y = headline(subset(items_b, idx))[key], headline(subset(items_a, idx))[key]
            return None if x is None or y is None else x - y

        out[key] = {
            "a": headline(items_a)[key],
            "b": headline(items_b)[key],
            "difference": difference(np.arange(n)),
            "difference_ci95": bootstrap_ci(difference, n),
        }
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def write_report(report: dict[str, Any], out: str | Path, *, title: str = "Evaluation", comparison: dict | None = None) -> Path:
    """report.json, report.md and PNG charts (reliability diagram, per-Fitzpatrick accuracy) into out/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(
        json.dumps({**report, "comparison": comparison}, indent=1, sort_keys=True, default=str) + "\n"
    )
    bins = report["calibration"]["bins"]
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.plot([0, 1], [0, 1], "--", color="grey")
    axis.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=1 / ECE_BINS, align="edge", alpha=0.7)
    axis.set(
        xlabel="top-1 confidence",
        ylabel="accuracy",
        title=f"reliability (ECE {_fmt(report['calibration']['ece'])})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    figure.tight_layout()
    figure.savefig(out / "reliability.png", dpi=100)
    plt.close(figure)
    per_type = report["fitzpatrick"]["per_type"]
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.bar(list(per_type), [v["top1"] or 0 for v in per_type.values()])
    axis.set(xlabel="Fitzpatrick type", ylabel="top-1 accuracy", ylim=(0, 1), title="accuracy per skin type")
    figure.tight_layout()
    figure.savefig(out / "fitzpatrick.png", dpi=100)
    plt.close(figure)

    h, ci = report["headline"], report["ci95"]
    lines = [
        f"# {title}",
        "",
        f"Split `{report['split']}`: {report['n_diagnosis']} diagnoses, {report['n_caption']} captions. "
        "95% bootstrap intervals (1,000 resamples of the items).",
        "",
        "| measure | value | 95% CI |",
        "|---|---|---|",
    ]
    for key, value in h.items():
        interval = ci.get(key)
        lines.append(f"| {key} | {_fmt(value)} | {'n/a' if not interval else f'{interval[0]:.3f} - {interval[1]:.3f}'} |")
    lines += [
        "",
        f"Largest top-1 gap between Fitzpatrick types: {_fmt(report['fitzpatrick']['largest_gap'])}",
        "",
        "| type | n | top-1 |",
        "|---|---|---|",
    ]
    lines += [f"| {_cell(t)} | {v['n']} | {_fmt(v['top1'])} |" for t, v in per_type.items()]
    sv = report["seen_vs_unseen"]
    lines += [
        "",
        "| labels | n | top-1 | top-6 |",
        "|---|---|---|---|",
        f"| seen in training | {sv['seen']['n']} | {_fmt(sv['seen']['top1'])} | {_fmt(sv['seen']['top6'])} |",
        f"| unseen (zero-shot) | {sv['unseen']['n']} | {_fmt(sv['unseen']['top1'])} | {_fmt(sv['unseen']['top6'])} |",
        "",
        "| label | train count | n | top-1 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {_cell(r['label'])} | {r['train_count']} | {r['n']} | {_fmt(r['top1'])} |" for r in report["per_label"]]
    captions = report["captions"]
    if captions["n"]:
        lines += [
            "",
            f"Caption reward (export weights): {_fmt(captions['reward'])} over {captions['n']} captions.",
            "",
            "| field | mean s_i |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in captions["fields"].items()]
    if comparison:
        m = comparison["mcnemar_top1"]
        lines += [
            "",
            f"## Paired comparison (B - A, {comparison['n']} items)",
            "",
            "| measure | A | B | B - A | 95% CI |",
            "|---|---|---|---|---|",
        ]
        for key in ("top1", "top6", "clinical_score", "malignant_miss_rate"):
            c = comparison[key]
            interval = c["difference_ci95"]
            lines.append(
                f"| {key} | {_fmt(c['a'])} | {_fmt(c['b'])} | {_fmt(c['difference'])} | "
                f"{'n/a' if not interval else f'{interval[0]:.3f} - {interval[1]:.3f}'} |"
            )
        lines += ["", f"McNemar (top-1): A right B wrong {m['b']}, A wrong B right {m['c']}, exact p = {m['p_value']:.4f}."]
    lines += ["", "![reliability](reliability.png) ![fitzpatrick](fitzpatrick.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return out


def _cell(value: Any) -> str:
    """A table cell from the export's data (labels, types): one line, and a `|` in it cannot split the row."""
    return " ".join(str(value).split()).replace("|", "\\|")


def evaluate_files(
    export: str | Path, prediction_file: str | Path, out: str | Path, *, split: str = "test", baseline: str | Path | None = None
) -> dict[str, Any]:
    from trainer.data import load_export

    data = load_export(export)
    predictions = read_predictions(prediction_file)
    report = evaluate(predictions, data, split=split)
    comparison = compare(read_predictions(baseline), predictions, data, split=split) if baseline else None
    write_report(report, out, comparison=comparison)
    return report
