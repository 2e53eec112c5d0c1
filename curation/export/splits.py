"""Leakage-safe train/val/test splits: whole groups (near-duplicate pictures) land in one split, stratified by
label, deterministic by seed; held-out labels go to test whole (a zero-shot split).

How many groups each split gets is decided over the whole dataset, then shared out over the labels by largest
remainder: val gets round(G * f_val) groups and test round(G * f_test) of the G groups, and at least one each
(unless its fraction is 0) when there are three groups or more, so a small workbench (16 records over 7 labels)
still has something to validate and test on. A label's share of val is its groups x f_val, floors first, the
leftover groups to the labels with the largest remainders (ties broken by a hash of seed and label); test likewise
from what val left. Within a label the groups are ordered by sha256(seed:group).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

SPLITS = ("train", "val", "test")
TINY_SPLIT = 10  # records; the data card says so below this
# Metadata columns that name one lesion or one person in public dermatology sets (HAM10000, ISIC, PAD-UFES-20):
# an export keeps each value's images in one split unless told otherwise (`--group-by`).


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def join_groups(groups: dict[str, str], keys: dict[str, list[str]]) -> dict[str, str]:
    """{item: group} where items already grouped together, or sharing any key (a lesion id, a patient id), are
    one group, transitively. The group id is the smallest group id it absorbed, so without keys nothing changes."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    owner: dict[str, str] = {}  # key -> the first group seen with it
    for item, item_keys in keys.items():
        for key in item_keys:
            a, b = find(groups[item]), find(owner.setdefault(key, groups[item]))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {item: find(group) for item, group in groups.items()}


def _largest_remainder(quotas: dict[str, float], total: int, capacity: dict[str, int], seed: int) -> dict[str, int]:
    """Integers summing to `total` (as far as capacity allows), each near its quota: floors, then one more to the
    largest remainders."""
    shares = {key: min(math.floor(q), capacity[key]) for key, q in quotas.items()}
    ranked = sorted(quotas, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), _order(seed, k)))
    left = total - sum(shares.values())
    while left > 0 and any(shares[k] < capacity[k] for k in ranked):
        for key in ranked:
            if left > 0 and shares[key] < capacity[key]:
                shares[key] += 1
                left -= 1
    return shares


def assign_splits(
    items: list[tuple[str, str, str]], seed: int, fractions: tuple[float, float, float], holdout: frozenset[str] = frozenset()
) -> dict[str, str]:
    """{item: split} for (item, stratum, group) triples. Whole groups (near-duplicates, a lesion, a patient) go to
    one split; see the module docstring for how many of each label's groups go where. Strata in `holdout` go
    entirely to test (a zero-shot split)."""
    group_stratum: dict[str, str] = {}
    members: dict[str, list[str]] = defaultdict(list)
    held_out_groups: set[str] = set()
    for item, stratum, group in items:
        group_stratum.setdefault(group, stratum)
        members[group].append(item)
        if stratum in holdout:  # a group touching a held-out class goes to test whole: the class stays unseen
            held_out_groups.add(group)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, stratum in group_stratum.items():
        if group not in held_out_groups:
            by_stratum[stratum].append(group)
    total = sum(len(groups) for groups in by_stratum.values())
    want_val, want_test = round(total * fractions[1]), round(total * fractions[2])
    if total >= 3:  # something to validate and to test on (where asked for), and still something to train on
        want_val = max(want_val, 1 if fractions[1] > 0 else 0)
        want_test = max(want_test, 1 if fractions[2] > 0 and not held_out_groups else 0)
        while want_val + want_test > total - 1:
            want_test, want_val = (want_test - 1, want_val) if want_test >= want_val else (want_test, want_val - 1)
    sizes = {stratum: len(groups) for stratum, groups in by_stratum.items()}
    val = _largest_remainder({s: n * fractions[1] for s, n in sizes.items()}, want_val, sizes, seed)
    room = {s: sizes[s] - val[s] for s in sizes}
    test = _largest_remainder({s: n * fractions[2] for s, n in sizes.items()}, want_test, room, seed + 1)
    out = {item: "test" for group in held_out_groups for item in members[group]}
    for stratum, groups in by_stratum.items():
        ordered = sorted(groups, key=lambda g: _order(seed, g))
        n_train = sizes[stratum] - val[stratum] - test[stratum]
        for rank, group in enumerate(ordered):
            split = "train" if rank < n_train else "val" if rank < n_train + val[stratum] else "test"
            for item in members[group]:
                out[item] = split
    return out
