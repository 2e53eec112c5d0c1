"""Near-duplicate groups from perceptual hashes (curation/ingest/clean.dhash): images whose 64-bit hashes differ in
at most `max_distance` bits belong together, transitively. Fitzpatrick17k is known to contain such
duplicates; keeping a group in one split keeps the test set honest.

Candidate pairs come from the pigeonhole principle: split each hash into 8 bytes; two hashes within
7 bits of each other agree on at least one byte, so only hashes sharing a byte value at the same
position are compared, with numpy, in blocks (identical hashes are collapsed first). Union-find
joins the pairs.
"""

from __future__ import annotations

import numpy as np

MAX_SUPPORTED_DISTANCE = 7  # the 8-way pigeonhole split guarantees every pair within 7 bits is found
DEFAULT_MAX_DISTANCE = 6
BLOCK = 2048  # rows of a bucket compared at once


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def near_duplicate_groups(hashes: dict[str, str | None], max_distance: int = DEFAULT_MAX_DISTANCE) -> dict[str, str]:
    """{item: group id}; the group id is the smallest item of its group. Items without a hash are alone."""
    if not 0 <= max_distance <= MAX_SUPPORTED_DISTANCE:
        raise ValueError(f"max_distance must be between 0 and {MAX_SUPPORTED_DISTANCE}")
    items = sorted(item for item, value in hashes.items() if value)
    groups = {item: item for item in hashes}
    if not items:
        return groups
    # identical hashes are one value: compare distinct values only
    values, inverse = np.unique(np.array([int(hashes[i], 16) for i in items], dtype=np.uint64), return_inverse=True)
    parent = np.arange(len(values))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for position in range(8):
        chunk = (values >> np.uint64(8 * position)) & np.uint64(0xFF)
        order = np.argsort(chunk, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk[order])) + 1
        for members in np.split(order, bounds):
            if len(members) < 2:
                continue
            bucket = values[members]
            for start in range(0, len(members), BLOCK):  # bounded memory however large a bucket is
                block = bucket[start : start + BLOCK]
                distance = np.bitwise_count(block[:, None] ^ bucket[None, :])
                for a, b in zip(*np.nonzero(distance <= max_distance), strict=True):
                    a, b = int(members[start + a]), int(members[b])
                    if a < b:
                        ra, rb = find(a), find(b)
                        if ra != rb:
                            parent[max(ra, rb)] = min(ra, rb)
    value_root = [find(v) for v in range(len(values))]
    first_item: dict[int, str] = {}
    for index, item in enumerate(items):  # items are sorted: the first seen is the smallest
        first_item.setdefault(value_root[inverse[index]], item)
    for index, item in enumerate(items):
        groups[item] = first_item[value_root[inverse[index]]]
    return groups
