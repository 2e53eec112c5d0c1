"""Draft sources for the suggestions benchmark with the error structure of real vision-language models, so the
benchmark does not test that routing copies a draft made from the answer.

The earlier "LLM-style draft" was the truth with each field corrupted at p = 0.3 and the true diagnosis always
in its three-item list, at rank 1 or 3 with fixed scores: it won 10 of 11 fields by construction. A simulated VLM
here differs in the ways real ones do (SkinCLIP-VL and SkinFlow report these failure modes):

- difficulty: each image has one difficulty in [0, 1], shared by every source (darker skin types and a random
  share: the same images are hard for every model), and each field is right with probability
  `field_accuracy - 0.5 * (difficulty - 0.5)`, clipped to [0.05, 0.98];
- field errors like a VLM's: a term swapped for another term of the field, a term left out, a plausible extra
  term added, an ordinal one step off, free text left empty; a profile may be better on some fields than others
  (`strengths`: per-field offsets);
- diagnoses: six ranked labels; the truth is among them with probability `truth_in_list` (lowered by difficulty
  the same way), at rank 1 with probability `top1_given_listed`, else lower; the other labels are clinically
  near confusions (the same nine-group as the truth with probability 0.6, the same three-way class with 0.25,
  any label otherwise);
- scores: `calibrated` profiles give the first label the probability that it is right for an image of this
  difficulty and share the rest; overconfident ones give it 0.85 to 0.95 whatever happens.

The truth is read only to decide, with those probabilities, what the source gets right; nothing else of it leaks
(no fixed rank, no fixed score, no guarantee it is listed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from random import Random
from typing import Any

from schema.fields import FIELD_KEYS, MULTI_FIELDS, ORDINAL_VALUES
from schema.taxonomy import Taxonomy
from schema.vocabulary import default_vocabulary


@dataclass(frozen=True)
class VLMProfile:
    name: str
    field_accuracy: float  # mean chance that a field is exactly right, on an image of average difficulty
    truth_in_list: float  # chance that the true diagnosis is among the six listed
    top1_given_listed: float = 0.6
    calibrated: bool = True
    strengths: dict[str, float] = field(default_factory=dict)  # per-field offsets to field_accuracy


def image_difficulty(image_id: int, fitzpatrick: int | None, seed: int) -> float:
    """One difficulty per image, the same for every source: 40% skin type (V-VI hardest), 60% chance."""
    chance = Random(f"difficulty:{seed}:{image_id}").random()
    tone = ((fitzpatrick or 3) - 1) / 5
    return 0.4 * tone + 0.6 * chance


def _clip(p: float, low: float = 0.05, high: float = 0.98) -> float:
    return min(max(p, low), high)


def _wrong_field(rng: Random, key: str, value: Any, terms: list[str]) -> Any:
    if key in ORDINAL_VALUES:
        scale = ORDINAL_VALUES[key]
        at = scale.index(value) if value in scale else rng.randrange(len(scale))
        return scale[min(max(at + rng.choice((-1, 1)), 0), len(scale) - 1)]
    if key not in MULTI_FIELDS:
        return ""  # free text: a VLM asked for "other" findings often says nothing
    value = list(value or [])
    others = [t for t in terms if t not in value]
    roll = rng.random()
    if value and others and roll < 0.5:  # a near term instead of the right one
        value[rng.randrange(len(value))] = rng.choice(others)
    elif len(value) > 1 and roll < 0.75:  # one left out
        value.pop(rng.randrange(len(value)))
    elif others:  # a plausible extra
        value.append(rng.choice(others))
    return value


def simulate(
    profile: VLMProfile,
    true_caption: dict[str, Any],
    true_key: str,
    difficulty: float,
    taxonomy: Taxonomy,
    rng: Random,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(caption, ranked diagnoses) this source drafts for one image; see the module docstring."""
    vocab = default_vocabulary()
    shift = 0.5 * (difficulty - 0.5)
    caption: dict[str, Any] = {}
    for key in FIELD_KEYS:
        value = true_caption.get(key)
        right = rng.random() < _clip(profile.field_accuracy + profile.strengths.get(key, 0.0) - shift)
        caption[key] = value if right else _wrong_field(rng, key, value, vocab.terms.get(key, []))
    labels = taxonomy.labels
    truth = labels[true_key]
    listed = rng.random() < _clip(profile.truth_in_list - shift)
    near = [k for k, v in labels.items() if k != true_key and v.group9 == truth.group9]
    same_class = [k for k, v in labels.items() if k != true_key and v.group3 == truth.group3 and k not in near]
    anywhere = [k for k in labels if k != true_key]
    ranked: list[str] = []
    while len(ranked) < (5 if listed else 6):
        roll = rng.random()
        pool = near if roll < 0.6 and near else same_class if roll < 0.85 and same_class else anywhere
        pick = rng.choice(pool)
        if pick not in ranked:
            ranked.append(pick)
    if listed:
        rank = 0 if rng.random() < profile.top1_given_listed else min(int(rng.expovariate(0.7)) + 1, 5)
        ranked.insert(rank, true_key)
    if profile.calibrated:  # the chance that the first label is right, for an image this hard
        first = _clip(profile.truth_in_list - shift) * profile.top1_given_listed
    else:
        first = rng.uniform(0.85, 0.95)
    rest = [math.exp(-0.7 * i) for i in range(len(ranked) - 1)]
    scores = [first, *((1 - first) * r / sum(rest) for r in rest)]
    return caption, [{"key": k, "score": round(s, 4)} for k, s in zip(ranked, scores, strict=True)]
