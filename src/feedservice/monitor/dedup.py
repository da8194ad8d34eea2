"""Near-duplicate detection: MinHash over word shingles (issue 4 item 3, "one story, many outlets").

Signatures are stable across processes and restarts (BLAKE2b of each shingle, never Python's
salted ``hash()``), so the app may persist them. The estimated
Jaccard similarity of two signatures is the fraction of equal slots (Broder 1997).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence

from feedservice.model import Entry
from feedservice.monitor.text import entry_text

NUM_HASHES = 64
SHINGLE = 3
NEAR_DUPLICATE_JACCARD = 0.5
_BANDS = 16  # LSH: 16 bands of 4 rows find pairs with Jaccard 0.5 with probability ~0.65+
_ROWS = NUM_HASHES // _BANDS
_EMPTY = (1 << 58) - 1
_WORD_RE = re.compile(r"\w+")


def shingles(text: str, k: int = SHINGLE) -> set[int]:
    """A 64-bit hash (BLAKE2b) of every run of ``k`` lower-cased words (all of a shorter text)."""
    words = _WORD_RE.findall(text.lower())
    if len(words) < k:
        runs = [" ".join(words)] if words else []
    else:
        runs = [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]
    return {
        int.from_bytes(hashlib.blake2b(r.encode("utf-8"), digest_size=8).digest(), "big")
        for r in runs
    }


def signature_of_text(text: str) -> tuple[int, ...]:
    """The MinHash signature of a text (one-permutation hashing with rotation densification).

    One hash per shingle: its low 6 bits pick one of 64 bins, the bin keeps the smallest of the
    remaining bits (Li, Owen & Zhang 2012); an empty bin borrows from the next non-empty bin to
    its right (Shrivastava & Li 2014), so short texts still compare fairly. An empty text gets
    all-empty slots and matches nothing.
    """
    bins = [_EMPTY] * NUM_HASHES
    for h in shingles(text):
        b = h & (NUM_HASHES - 1)
        v = h >> 6
        if v < bins[b]:
            bins[b] = v
    if all(v == _EMPTY for v in bins):
        return tuple(bins)
    out = list(bins)
    for i in range(NUM_HASHES):
        if out[i] == _EMPTY:
            j, hops = i, 0
            while bins[j] == _EMPTY:
                j = (j + 1) % NUM_HASHES
                hops += 1
            out[i] = bins[j] + hops * 7919  # offset keeps borrowed values distinct per distance
    return tuple(out)


def signature(entry: Entry) -> tuple[int, ...]:
    """The MinHash signature of an entry's title and text."""
    title, paragraphs = entry_text(entry)
    return signature_of_text(title + "\n" + "\n".join(paragraphs))


def similarity(sig_a: Sequence[int], sig_b: Sequence[int]) -> float:
    """Estimated Jaccard similarity of the two shingle sets."""
    if len(sig_a) != len(sig_b) or not sig_a:
        return 0.0
    if sig_a[0] == _EMPTY and all(x == _EMPTY for x in sig_a):
        return 0.0
    return sum(1 for x, y in zip(sig_a, sig_b, strict=True) if x == y) / len(sig_a)


def near_duplicate(sig_a: Sequence[int], sig_b: Sequence[int]) -> bool:
    """True when two signatures are the same story republished (estimated Jaccard >= 0.5)."""
    return similarity(sig_a, sig_b) >= NEAR_DUPLICATE_JACCARD


def group_near_duplicates(sigs: Sequence[Sequence[int]]) -> list[list[int]]:
    """Group indexes of near-duplicate signatures (single link), each group in input order.

    LSH banding proposes candidate pairs, :func:`near_duplicate` confirms them, so the cost
    stays near-linear in the batch size.
    """
    parent = list(range(len(sigs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    for i, sig in enumerate(sigs):
        if len(sig) != NUM_HASHES:
            continue
        for band in range(_BANDS):
            buckets[(band, tuple(sig[band * _ROWS : (band + 1) * _ROWS]))].append(i)
    for members in buckets.values():
        if len(members) < 2:
            continue
        for pos, i in enumerate(members[1:], start=1):
            # A bucket of many is the same boilerplate everywhere: compare with a few only.
            for j in members[max(0, pos - 8) : pos]:
                ri, rj = find(i), find(j)
                if ri != rj and near_duplicate(sigs[i], sigs[j]):
                    parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(sigs)):
        groups[find(i)].append(i)
    return list(groups.values())
