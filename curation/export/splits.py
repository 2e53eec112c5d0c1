"""Leakage-safe train/val/test splits: whole groups (near-duplicate pictures) land in one split, stratified by
label, deterministic by seed; held-out labels go to test whole (a zero-shot split)."""

from __future__ import annotations

import hashlib
from collections import defaultdict

SPLITS = ("train", "val", "test")


def assign_splits(
    items: list[tuple[str, str, str]], seed: int, fractions: tuple[float, float, float], holdout: frozenset[str] = frozenset()
) -> dict[str, str]:
    """{item: split} for (item, stratum, group) triples. Whole groups (near-duplicates) go to one split;
    groups are stratified by their stratum (label) and ordered by sha256(seed:group), deterministic
    by seed. Strata in `holdout` go entirely to test (a zero-shot split)."""
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
        by_stratum[stratum].append(group)
    out = {}
    train_end, val_end = fractions[0], fractions[0] + fractions[1]
    for groups in by_stratum.values():
        ordered = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        n = len(ordered)
        for rank, group in enumerate(ordered):
            position = (rank + 0.5) / n
            split = (
                "test"
                if group in held_out_groups
                else "train"
                if position < train_end
                else "val"
                if position < val_end
                else "test"
            )
            for item in members[group]:
                out[item] = split
    return out
