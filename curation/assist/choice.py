"""How one draft source is compared with another on a measure, and which is chosen: pure functions over per-item
scores (image id -> score), used by curation/assist/evidence.py for the routed prefill and for run verdicts.

The routed prefill must never lose to the best single source (the one a team would use alone: the
highest mean of its smoothed field means, (sum + 1) / (n + 2), among sources with min_evidence items on at least
half of the fields). So each caption field starts from that source (where it has min_evidence items on the
field; else, as for the diagnosis measures, from the source with the most items), and another source replaces
it only when it is better with probability at least CONFIDENCE, 1 - 0.05 / 11 = 0.9955 (one test per caption field:
across the 11, the chance that luck moves any field off the best single source stays near 5%; at 0.95 per field
a benchmark seed lost `shape` to a switch at P 0.950): on the items both have when they share at
least min_evidence (a paired comparison: their differences, plus one pseudo-item won by 1 and one lost by 1),
else each on its own items (the smoothed means and their spreads, one pseudo-item scoring 0 and one scoring 1
added to each); a normal approximation of the mean difference gives the probability. The strongest challenger is
tried first and the rule repeats from the new choice. So luck on a small sample does not move a field: 21 of 21
right does not replace 130 of 141 (P 0.80), while a source better on 40 shared items does (choosing the best raw,
or smoothed, mean per field outright lets such luck make routing lose to its best single source). Run verdicts use
the same comparison against the source the rule chooses among the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from schema.fields import FIELD_KEYS

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_MAX_N = 2000  # above this many items the normal interval is used (the bootstrap would cost seconds)
CONFIDENCE = 1 - 0.05 / len(FIELD_KEYS)  # 0.9955: 5% for the 11 caption fields together (module docstring)


@dataclass(frozen=True, kw_only=True)
class Score:
    mean: float | None
    n: int
    ci95: tuple[float, float] | None


def smoothed(total: float, n: int) -> float:
    """(sum + 1) / (n + 2): the mean of n scores with a pseudo-item scoring 0 and one scoring 1 added, so a small
    sample cannot look perfect (see the module docstring). The one place this formula is written."""
    return (total + 1) / (n + 2)


def smoothed_mean(score: Score) -> float:
    return smoothed((score.mean or 0.0) * score.n, score.n)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Whether `challenger` is better than `incumbent` on one measure (see the module docstring)."""

    challenger: str
    incumbent: str
    paired: bool  # on the items both have (else each on its own items)
    n: int  # shared items when paired, else the challenger's items
    difference: float  # challenger minus incumbent (smoothed)
    p_better: float
    switched: bool = False  # the challenger became the chosen source


Items = dict[int, float]  # image id -> a source's score on one measure


def interval(values: np.ndarray) -> tuple[float, float] | None:
    """95% interval of the mean: percentile bootstrap (seed 0), or the normal interval for large samples."""
    n = len(values)
    if n == 0:
        return None
    if n > BOOTSTRAP_MAX_N:
        half = 1.96 * float(values.std(ddof=1)) / math.sqrt(n)
        return (float(values.mean()) - half, float(values.mean()) + half)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def score_of(values: list[float]) -> Score:
    array = np.asarray(values, dtype=float)
    return Score(mean=float(array.mean()) if len(array) else None, n=len(array), ci95=interval(array))


def compare(challenger: str, a: Items, incumbent: str, b: Items, min_evidence: int) -> Comparison:
    """How likely source `a` is better than source `b` on a measure (module docstring: paired on shared items
    when there are min_evidence of them, else each on its own; pseudo-items keep small samples modest)."""
    shared = a.keys() & b.keys()
    if len(shared) >= max(min_evidence, 1):
        d = np.fromiter((a[i] - b[i] for i in shared), dtype=float, count=len(shared))
        k = len(d) + 2  # with one pseudo-difference of +1 and one of -1
        difference = float(d.sum()) / k
        variance = max((float(np.square(d).sum()) + 2) / k - difference**2, 0.0) / k
        paired, n = True, len(shared)
    else:
        (mean_a, var_a), (mean_b, var_b) = _smoothed_with_variance(a), _smoothed_with_variance(b)
        difference, variance, paired, n = mean_a - mean_b, var_a + var_b, False, len(a)
    spread = math.sqrt(variance)
    p_better = 0.5 * (1 + math.erf(difference / (spread * math.sqrt(2)))) if spread > 0 else 0.5 + 0.5 * np.sign(difference)
    return Comparison(
        challenger=challenger,
        incumbent=incumbent,
        paired=paired,
        n=n,
        difference=round(difference, 6),
        p_better=round(float(p_better), 6),
    )


def _smoothed(items: Items) -> float:
    return smoothed(sum(items.values()), len(items))


def _smoothed_with_variance(items: Items) -> tuple[float, float]:
    """The smoothed mean and the variance of that mean (a pseudo-item scoring 0 and one scoring 1 included)."""
    k = len(items) + 2
    mean = _smoothed(items)
    return mean, max((sum(v * v for v in items.values()) + 1) / k - mean**2, 0.0) / k


def best_single_source(items: dict[str, dict[str, Items]], min_evidence: int) -> str | None:
    """The source a team would use alone: the highest mean over the caption fields of its smoothed means (a field
    it never fills counts as 0.5), among sources with min_evidence items on at least half of the fields; ties go
    to more evidence."""
    scores = {}
    for source, measures in items.items():
        if 2 * sum(len(measures[k]) >= min_evidence for k in FIELD_KEYS) < len(FIELD_KEYS):
            continue
        mean = sum(_smoothed(measures[k]) for k in FIELD_KEYS) / len(FIELD_KEYS)
        scores[source] = (round(mean, 9), sum(len(measures[k]) for k in FIELD_KEYS))
    return max(sorted(scores), key=lambda source: scores[source]) if scores else None


def choose(values: dict[str, Items], min_evidence: int, prefer: str | None = None) -> tuple[str | None, list[Comparison]]:
    """The source chosen for one measure and the comparisons that chose it: `prefer` (the best single source)
    where it has enough items, else the one with the most, replaced only by a challenger better with probability
    >= CONFIDENCE (module docstring). The last comparison listed is the strongest challenger that did not replace
    the choice, if any."""
    eligible = {source: items for source, items in values.items() if len(items) >= min_evidence and items}
    if not eligible:
        return None, []
    current = prefer if prefer in eligible else max(sorted(eligible), key=lambda x: (len(eligible[x]), _smoothed(eligible[x])))
    tried, steps = {current}, []
    while len(tried) < len(eligible):
        trials = [compare(c, eligible[c], current, eligible[current], min_evidence) for c in sorted(eligible) if c not in tried]
        best = max(trials, key=lambda t: t.p_better)
        if best.p_better < CONFIDENCE:
            steps.append(best)
            break
        steps.append(Comparison(**{**asdict(best), "switched": True}))
        current = best.challenger
        tried.add(current)
    return current, steps
