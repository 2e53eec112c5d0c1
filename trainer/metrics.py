"""Quick held-out scores of a prediction file against an export split: the numbers a training run is
judged by (caption reward, per-field exact rate, top-1 / top-K diagnosis accuracy). The full clinical
evaluation (groups, safety, calibration, fairness, confidence intervals) builds on these."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from schema.caption import validate_caption
from schema.compare import caption_scores
from schema.fields import FIELD_KEYS
from schema.run_files import Prediction
from trainer.data import ExportData
from trainer.rewards import caption_reward


def score(predictions: Iterable[Prediction], data: ExportData, splits: tuple[str, ...] = ("val", "test")) -> dict[str, Any]:
    by_id = {p.id: p for p in predictions}
    captions = [r for r in data.stage1 if r["split"] in splits and r["id"] in by_id]
    diagnoses = [r for r in data.stage2 if r["split"] in splits and r["id"] in by_id]
    rewards = caption_reward(
        [by_id[r["id"]].caption_text for r in captions], [r["caption"] for r in captions], weights=data.weights
    )
    exact = {key: 0 for key in FIELD_KEYS}
    for r in captions:
        predicted = by_id[r["id"]].caption
        if predicted is None:
            continue
        for key, value in caption_scores(validate_caption(predicted), validate_caption(r["caption"])).items():
            exact[key] += value == 1.0
    ranks = [[d.key for d in by_id[r["id"]].diagnoses] for r in diagnoses]
    n_c, n_d = max(len(captions), 1), max(len(diagnoses), 1)
    return {
        "n_captions": len(captions),
        "n_diagnoses": len(diagnoses),
        "caption_reward": sum(rewards) / n_c,
        "caption_parse_rate": sum(by_id[r["id"]].caption is not None for r in captions) / n_c,
        "field_accuracy": {key: exact[key] / n_c for key in FIELD_KEYS},
        "top1": sum(keys[:1] == [r["diagnosis_key"]] for keys, r in zip(ranks, diagnoses, strict=True)) / n_d,
        "top6": sum(r["diagnosis_key"] in keys[:6] for keys, r in zip(ranks, diagnoses, strict=True)) / n_d,
    }


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=1, sort_keys=True)
