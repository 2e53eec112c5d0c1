"""Near-duplicate groups from perceptual hashes (storage.dhash): images whose 64-bit hashes differ in
at most `max_distance` bits belong together, transitively. Fitzpatrick17k is known to contain such
duplicates; keeping a group in one split keeps the test set honest.

Candidate pairs come from the pigeonhole principle: split each hash into 8 bytes; two hashes within
7 bits of each other agree on at least one byte, so only images sharing a byte value at the same
position are compared. Union-find joins the pairs.
"""

from __future__ import annotations

from collections import defaultdict

MAX_SUPPORTED_DISTANCE = 7  # the 8-way pigeonhole split guarantees every pair within 7 bits is found
DEFAULT_MAX_DISTANCE = 6


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def near_duplicate_groups(hashes: dict[str, str | None], max_distance: int = DEFAULT_MAX_DISTANCE) -> dict[str, str]:
    """{item: group id}; the group id is the smallest item of its group. Items without a hash are alone."""
    if not 0 <= max_distance <= MAX_SUPPORTED_DISTANCE:
        raise ValueError(f"max_distance must be between 0 and {MAX_SUPPORTED_DISTANCE}")
    parent = {item: item for item in hashes}

    def find(item: str) -> str:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    buckets: dict[tuple[int, str], list[str]] = defaultdict(list)
    for item, value in hashes.items():
        if value:
            for position in range(8):
                buckets[(position, value[2 * position : 2 * position + 2])].append(item)
    checked: set[tuple[str, str]] = set()
    for members in buckets.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pair = (a, b) if a < b else (b, a)
                if pair in checked:
                    continue
                checked.add(pair)
                if hamming(hashes[a], hashes[b]) <= max_distance:
                    ra, rb = find(a), find(b)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    return {item: find(item) for item in hashes}
