"""The probe's heads (trainer/probe.py): one linear layer over the encoder's features, read in parts (per
multi-value field a logistic output per term, per ordinal field a "present" and cumulative logits, the diagnosis
softmax); their fitting (full-batch Adam with an L2 penalty), decoding to captions, and the K-fold
cross-validation that chooses each head's penalty and each field's threshold."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from schema.compare import ordinal_score, set_f1
from schema.fields import MULTI_FIELDS, ORDINAL_VALUES
from trainer.config import TrainConfig
from trainer.data import ExportData

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


@dataclass(frozen=True)
class Layout:
    """Which output column of the linear layer means what."""

    terms: dict[str, list[str]]  # multi-value field -> the terms seen in training
    labels: list[str]  # taxonomy keys, sorted

    def heads(self) -> list[tuple[str, int]]:
        """(head name, width) in column order: "multi:<field>", "present:<field>", "cumulative:<field>",
        "diagnosis"."""
        # schema order, not the dict's: probe.json is written with sorted keys
        out = [(f"multi:{field}", len(self.terms[field])) for field in MULTI_FIELDS]
        for field, levels in ORDINAL_VALUES.items():
            out += [(f"present:{field}", 1), (f"cumulative:{field}", len(levels) - 1)]
        return out + [("diagnosis", len(self.labels))]

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, width in self.heads():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def width(self) -> int:
        return sum(width for _, width in self.heads())


@dataclass
class Targets:
    """What the heads learn, one row per training image; rows without a caption (or diagnosis) are masked."""

    multi: dict[str, torch.Tensor]  # field -> (N, terms) 0/1
    level: dict[str, torch.Tensor]  # ordinal field -> (N,) level index, -1 for "none"
    has_caption: torch.Tensor  # (N,) bool
    label: torch.Tensor  # (N,) label index, -1 without a verified diagnosis

    def subset(self, index: torch.Tensor) -> Targets:
        return Targets(
            {k: v[index] for k, v in self.multi.items()},
            {k: v[index] for k, v in self.level.items()},
            self.has_caption[index],
            self.label[index],
        )


def training_records(data: ExportData, split: str = "train") -> list[dict[str, Any]]:
    """One record per image of a split: its path, verified caption (or None) and diagnosis key (or None)."""
    records: dict[Any, dict[str, Any]] = {}
    for stage, key, column in ((1, "caption", "caption"), (2, "diagnosis", "diagnosis_key")):
        for row in data.rows(stage, split):
            empty = {"id": row["id"], "path": data.image_path(row), "caption": None, "diagnosis": None}
            records.setdefault(row["id"], empty)[key] = row[column]
    return list(records.values())


def make_layout(records: list[dict[str, Any]], labels: Iterable[str]) -> Layout:
    terms = {field: sorted({t for r in records if r["caption"] for t in r["caption"].get(field) or ()}) for field in MULTI_FIELDS}
    return Layout(terms, sorted(labels))


def make_targets(records: list[dict[str, Any]], layout: Layout) -> Targets:
    n = len(records)
    multi = {field: torch.zeros(n, len(terms)) for field, terms in layout.terms.items()}
    level = {field: torch.full((n,), -1, dtype=torch.long) for field in ORDINAL_VALUES}
    has_caption = torch.zeros(n, dtype=torch.bool)
    label = torch.full((n,), -1, dtype=torch.long)
    index = {field: {t: i for i, t in enumerate(terms)} for field, terms in layout.terms.items()}
    label_index = {key: i for i, key in enumerate(layout.labels)}
    for row, record in enumerate(records):
        caption = record["caption"]
        if caption:
            has_caption[row] = True
            for field in layout.terms:
                for term in caption.get(field) or ():
                    multi[field][row, index[field][term]] = 1.0
            for field, levels in ORDINAL_VALUES.items():
                if caption.get(field) in levels:
                    level[field][row] = levels.index(caption[field])
        if record["diagnosis"] in label_index:
            label[row] = label_index[record["diagnosis"]]
    return Targets(multi, level, has_caption, label)


class Objective:
    """The heads' loss as a handful of tensor operations per step (the fits are many and small, so Python overhead
    per operation is what costs): the sum over heads of each head's mean loss over the rows it learns from."""

    def __init__(self, targets: Targets, layout: Layout):
        cut = layout.slices()
        self.captioned = targets.has_caption.nonzero()[:, 0]
        n = max(len(self.captioned), 1)
        multi = [(cut[f"multi:{field}"], targets.multi[field][self.captioned]) for field in layout.terms]
        self.multi_cols = torch.cat([torch.arange(c.start, c.stop) for c, _ in multi])
        self.multi_y = torch.cat([y for _, y in multi], 1)
        # each field's mean over its (rows x terms): weight 1 / (rows * terms) per cell of that field
        self.multi_w = torch.cat([torch.full((c.stop - c.start,), 1.0 / (n * max(c.stop - c.start, 1))) for c, _ in multi])
        levels = {field: targets.level[field][self.captioned] for field in ORDINAL_VALUES}
        self.present_cols = torch.tensor([cut[f"present:{field}"].start for field in ORDINAL_VALUES])
        self.present_y = torch.stack([(levels[field] >= 0).float() for field in ORDINAL_VALUES], 1)
        cum_cols, cum_y, cum_w = [], [], []
        for field, values in ORDINAL_VALUES.items():
            c, level = cut[f"cumulative:{field}"], levels[field]
            steps = torch.arange(1, len(values))
            shown = (level >= 0).float()
            cum_cols.append(torch.arange(c.start, c.stop))
            cum_y.append((level[:, None] >= steps[None, :]).float())
            # mean over the rows where the field has a value (and its K-1 thresholds); none: no loss
            cum_w.append(shown[:, None].expand(-1, len(steps)) / max(float(shown.sum()) * len(steps), 1.0))
        self.cum_cols, self.cum_y, self.cum_w = torch.cat(cum_cols), torch.cat(cum_y, 1), torch.cat(cum_w, 1)
        self.labelled = (targets.label >= 0).nonzero()[:, 0]
        self.label_y = targets.label[self.labelled]
        self.diagnosis = cut["diagnosis"]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        loss = logits.sum() * 0
        if len(self.captioned):
            rows = logits[self.captioned]
            bce = F.binary_cross_entropy_with_logits
            loss = loss + bce(rows[:, self.multi_cols], self.multi_y, weight=self.multi_w, reduction="sum")
            loss = loss + bce(rows[:, self.present_cols], self.present_y, reduction="sum") / len(self.captioned)
            loss = loss + bce(rows[:, self.cum_cols], self.cum_y, weight=self.cum_w, reduction="sum")
        if len(self.labelled):
            loss = loss + F.cross_entropy(logits[self.labelled, self.diagnosis], self.label_y)
        return loss


def fit_heads(
    features: torch.Tensor,
    targets: Targets,
    layout: Layout,
    l2: dict[str, float],
    *,
    steps: int,
    learning_rate: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> nn.Linear:
    """Full-batch Adam on the sum of the heads' losses plus each head's L2 penalty on its weights."""
    torch.manual_seed(seed)
    linear = nn.Linear(features.shape[1], layout.width)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    penalty = torch.zeros(layout.width)
    for name, cut in layout.slices().items():
        penalty[cut] = l2.get(name, l2["default"])
    optimiser = torch.optim.Adam(linear.parameters(), lr=learning_rate)
    objective = Objective(targets, layout)
    for step in range(steps):
        optimiser.zero_grad()
        loss = objective(linear(features))
        loss = loss + (penalty[:, None] * linear.weight.pow(2)).sum()
        loss.backward()
        optimiser.step()
        if on_step:
            on_step(step + 1, float(loss.detach()))
    return linear.eval()


# -- decoding ---------------------------------------------------------------------------------------
def ordinal_choice(present: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Per row, the level index (or -1 for "none") with the highest expected field score: 1 exact, 0.5 one
    level off, and "none" scores 1 only when the truth is none."""
    above = np.minimum.accumulate(1 / (1 + np.exp(-cumulative)), axis=1)  # P(level >= j), kept monotone
    ones = np.ones((len(above), 1))
    probs = np.concatenate([ones, above], 1) - np.concatenate([above, 0 * ones], 1)  # P(level = j)
    expected = probs.copy()
    expected[:, 1:] += 0.5 * probs[:, :-1]
    expected[:, :-1] += 0.5 * probs[:, 1:]
    p_present = 1 / (1 + np.exp(-present))
    best = expected.argmax(1)
    return np.where(p_present * expected.max(1) > 1 - p_present, best, -1)


def decode_captions(logits: np.ndarray, layout: Layout, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    cut = layout.slices()
    probs = {field: 1 / (1 + np.exp(-logits[:, cut[f"multi:{field}"]])) for field in layout.terms}
    levels = {
        field: ordinal_choice(logits[:, cut[f"present:{field}"]][:, 0], logits[:, cut[f"cumulative:{field}"]])
        for field in ORDINAL_VALUES
    }
    out = []
    for row in range(len(logits)):
        caption: dict[str, Any] = {
            field: [t for t, p in zip(terms, probs[field][row], strict=True) if p >= thresholds.get(field, 0.5)]
            for field, terms in layout.terms.items()
        }
        for field, values in ORDINAL_VALUES.items():
            caption[field] = values[levels[field][row]] if levels[field][row] >= 0 else None
        out.append(caption)
    return out


def _truth(targets: Targets, layout: Layout, row: int) -> dict[str, Any]:
    caption: dict[str, Any] = {
        field: [t for t, on in zip(terms, targets.multi[field][row].tolist(), strict=True) if on]
        for field, terms in layout.terms.items()
    }
    for field, values in ORDINAL_VALUES.items():
        level = int(targets.level[field][row])
        caption[field] = values[level] if level >= 0 else None
    return caption


def _multi_scores(probs: np.ndarray, terms: list[str], truths: list[list[str]], threshold: float) -> float:
    """Mean set F1 of the terms above `threshold` against the true terms (the field score routing uses)."""
    chosen = probs >= threshold
    return float(
        np.mean(
            [
                set_f1([t for t, on in zip(terms, row, strict=True) if on], truth)
                for row, truth in zip(chosen, truths, strict=True)
            ]
        )
    )


def cross_validate(
    features: torch.Tensor, targets: Targets, layout: Layout, config: TrainConfig, on_fit: Callable[[], None]
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Choose each head's L2 penalty and each multi-value field's threshold on out-of-fold predictions (by
    the mean field score; the diagnosis by its log-likelihood). Returns (penalty per head, threshold per
    field, the scores behind the choice)."""
    n, folds = len(features), min(config.probe_folds, len(features))
    if folds < 2 or n < 2 * folds:
        return {"default": config.probe_l2[len(config.probe_l2) // 2]}, {}, {"folds": 0}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    captioned = np.flatnonzero(targets.has_caption.numpy())
    labelled = targets.label >= 0
    truths = [_truth(targets, layout, row) for row in captioned]
    cut = layout.slices()
    # per head: {l2: (score, threshold or None)}
    scores: dict[str, dict[float, tuple[float, float | None]]] = {}
    for l2 in config.probe_l2:
        oof = np.zeros((n, layout.width), dtype=np.float32)
        for fold in range(folds):
            held = fold_of == fold
            linear = fit_heads(
                features[~held],
                targets.subset(~held),
                layout,
                {"default": l2},
                steps=config.probe_steps,
                learning_rate=config.probe_learning_rate,
                seed=config.seed,
            )
            with torch.no_grad():
                oof[held.numpy()] = linear(features[held]).numpy()
            on_fit()
        if len(captioned):
            for field, terms in layout.terms.items():
                probs = 1 / (1 + np.exp(-oof[captioned, cut[f"multi:{field}"]]))
                field_truths = [truth[field] for truth in truths]
                best = max((_multi_scores(probs, terms, field_truths, th), -th) for th in THRESHOLDS)  # ties: higher
                scores.setdefault(f"multi:{field}", {})[l2] = (best[0], -best[1])
            for field, values in ORDINAL_VALUES.items():
                chosen = ordinal_choice(oof[captioned, cut[f"present:{field}"]][:, 0], oof[captioned, cut[f"cumulative:{field}"]])
                answers = [values[c] if c >= 0 else None for c in chosen]
                score = np.mean([ordinal_score(field, a, truth[field]) for a, truth in zip(answers, truths, strict=True)])
                scores.setdefault(f"ordinal:{field}", {})[l2] = (float(score), None)
        if labelled.any():
            log_probs = torch.log_softmax(torch.from_numpy(oof[labelled.numpy(), cut["diagnosis"]]), 1)
            likelihood = log_probs.gather(1, targets.label[labelled][:, None]).mean()
            scores.setdefault("diagnosis", {})[l2] = (float(likelihood), None)
    penalty: dict[str, float] = {"default": config.probe_l2[0]}
    thresholds: dict[str, float] = {}
    for key, by_l2 in scores.items():
        l2 = max(by_l2, key=lambda value: by_l2[value][0])  # ties: the first (smallest) penalty
        kind, _, field = key.partition(":")
        if kind == "multi":
            penalty[key], thresholds[field] = l2, float(by_l2[l2][1])
        elif kind == "ordinal":
            penalty[f"present:{field}"] = penalty[f"cumulative:{field}"] = l2
        else:
            penalty[key] = l2
    report = {"folds": folds, "scores": {key: {str(l2): round(v[0], 4) for l2, v in by.items()} for key, by in scores.items()}}
    return penalty, thresholds, report
