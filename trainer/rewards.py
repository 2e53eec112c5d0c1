"""Rewards for the two GRPO stages (docs/fdlinear.md), as trl reward functions:
`f(completions, **columns) -> list[float]`, one float per completion. A completion is a string or trl's
conversational form `[{"role": "assistant", "content": str}]`. Dataset columns arrive by name:
`caption` (the verified caption, a dict) for stage I, `diagnosis_key` for stage II.

Settings (weights, taxonomy, K, credits) are keyword arguments; `bind` fixes them and keeps the name trl
logs the reward under.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from schema.caption import Caption, parse, validate_caption
from schema.compare import caption_scores
from schema.errors import CaptionError
from schema.fields import FIELD_KEYS
from schema.taxonomy import Taxonomy, clean_diagnosis, default_taxonomy

K = 6
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d{1,2}[.):])\s*")


def completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def bind(reward: Callable[..., list[float]], **settings) -> Callable[..., list[float]]:
    """reward with settings fixed, under the same __name__ (trl names its logged columns by it)."""
    bound = functools.partial(reward, **settings)
    functools.update_wrapper(bound, reward)
    return bound


# -- stage I ----------------------------------------------------------------------------------------
def normalised_weights(weights: dict[str, float] | None) -> dict[str, float]:
    """alpha_i summing to 1 over the 11 fields (uniform when none are given)."""
    if not weights:
        return {key: 1 / len(FIELD_KEYS) for key in FIELD_KEYS}
    unknown = set(weights) - set(FIELD_KEYS)
    if unknown:
        raise CaptionError(f"weights name unknown fields {sorted(unknown)}; the fields are {', '.join(FIELD_KEYS)}")
    total = sum(max(0.0, float(weights.get(key, 0.0))) for key in FIELD_KEYS)
    if total <= 0:
        raise CaptionError("the caption weights sum to zero; give at least one field a positive weight")
    return {key: max(0.0, float(weights.get(key, 0.0))) / total for key in FIELD_KEYS}


def _caption_or_none(text: str) -> Caption | None:
    try:
        return parse(text)
    except CaptionError:
        return None


def caption_reward(
    completions: Sequence[Any], caption: Sequence[Any], *, weights: dict[str, float] | None = None, **_
) -> list[float]:
    """sum_i alpha_i * s_i against the verified caption; an unparseable completion scores 0."""
    alpha = normalised_weights(weights)
    rewards = []
    for completion, reference in zip(completions, caption, strict=True):
        predicted = _caption_or_none(completion_text(completion))
        if predicted is None:
            rewards.append(0.0)
            continue
        truth = (
            reference
            if isinstance(reference, Caption)
            else validate_caption(json.loads(reference) if isinstance(reference, str) else reference)
        )
        scores = caption_scores(predicted, truth)
        rewards.append(sum(alpha[key] * scores[key] for key in FIELD_KEYS))
    return rewards


def caption_format_reward(completions: Sequence[Any], **_) -> list[float]:
    """1 when the completion reads as a caption of the schema, else 0."""
    return [1.0 if _caption_or_none(completion_text(c)) is not None else 0.0 for c in completions]


# -- stage II ---------------------------------------------------------------------------------------
def parse_diagnoses(text: str) -> list[str]:
    """The ranked entries of an answer: one per line (bullets and '1.' numbering removed), or a JSON list,
    or a single comma-separated line."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            return [str(item).strip() for item in items if str(item).strip()]
    lines = [_BULLET.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) == 1 and "," in lines[0]:
        lines = [part.strip() for part in lines[0].split(",") if part.strip()]
    return lines


def positional_weight(rank: int, k: int = K) -> float:
    """Rank 1 -> 1.0, linearly down to 1/k at rank k; 0 beyond k."""
    if rank < 1 or rank > k:
        return 0.0
    return 1.0 if k == 1 else 1.0 - (rank - 1) * (1.0 - 1.0 / k) / (k - 1)


def diagnosis_reward(
    completions: Sequence[Any],
    diagnosis_key: Sequence[str],
    *,
    taxonomy: Taxonomy | None = None,
    k: int = K,
    partial_credit: bool = True,
    group_credit: float = 0.5,
    safety_penalty: float = 0.5,
    **_,
) -> list[float]:
    """Best of positional_weight(rank) * credit over the first k entries, credit 1 for the true label and
    (with partial_credit) group_credit for a label of the same nine-partition group; minus safety_penalty
    when the truth is malignant and the first entry names a label that is not (partial_credit only)."""
    taxonomy = taxonomy or default_taxonomy()
    rewards = []
    for completion, truth in zip(completions, diagnosis_key, strict=True):
        truth_label = taxonomy.label(truth)
        keys = [taxonomy.normalise(entry) for entry in parse_diagnoses(completion_text(completion))[:k]]
        best = 0.0
        for rank, key in enumerate(keys, 1):
            if key is None:
                continue
            if key == truth_label.key:
                credit = 1.0
            elif partial_credit and taxonomy.label(key).group9 == truth_label.group9:
                credit = group_credit
            else:
                continue
            best = max(best, positional_weight(rank, k) * credit)
        if (
            partial_credit
            and keys
            and keys[0] is not None
            and taxonomy.is_malignant(truth_label.key)
            and not taxonomy.is_malignant(keys[0])
        ):
            best -= safety_penalty
        rewards.append(best)
    return rewards


def diagnosis_format_reward(completions: Sequence[Any], *, taxonomy: Taxonomy | None = None, k: int = K, **_) -> list[float]:
    """1 for 1..k distinct entries that all name taxonomy labels; minus 0.25 for each unrecognised entry,
    0.5 if any entry repeats, 0.5 if longer than k; 0 when empty. Never below 0."""
    taxonomy = taxonomy or default_taxonomy()
    rewards = []
    for completion in completions:
        entries = parse_diagnoses(completion_text(completion))
        if not entries:
            rewards.append(0.0)
            continue
        keys = [taxonomy.normalise(entry) or clean_diagnosis(entry) for entry in entries]
        score = 1.0 - 0.25 * sum(1 for entry in entries if taxonomy.normalise(entry) is None)
        if len(set(keys)) < len(keys):
            score -= 0.5
        if len(entries) > k:
            score -= 0.5
        rewards.append(max(0.0, score))
    return rewards
