"""A bounded pool of recent items and their nearest neighbours (the neighbourhood score).

Why: in news, the few texts most similar to a text are nearly always about the same event (on
ECB+ dev the three nearest documents of a document belong to its event 97% of the time), while a
same-topic story about another event is close to the story on the topic words only. So the
monitor compares a story's *neighbourhood* (the story and its up to :data:`K` nearest items)
with an item's neighbourhood, see :func:`feedservice.monitor.score.neighbourhood_score`.

The pool keeps the last ``capacity`` items observed (FIFO), each as a compact vector (its
heaviest keys only, so memory stays bounded), and an inverted index from each item's most
distinctive keys to the items holding them; finding a text's neighbours walks the short
postings of its own most distinctive keys, never the whole pool. Pure, in memory, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter

from feedservice.monitor.score import (
    NEIGHBOUR_FLOOR,
    W_ENTITIES,
    W_TERMS,
    Sparse,
    Vectors,
    raw_similarity,
)

K = 3  # neighbours per text (story or item); K=3 cross-validated best of 2..5 on ECB+ dev
PROFILE = 4  # pooled items on a story's side of the comparison (see story_profile)
RESTART = 0.3  # story_profile's restart probability: mass spreads about 2 hops from the story
PROFILE_ROUNDS = 20  # power iterations (the walk's graph is at most 1 + K + K*K nodes)
POOL_CAPACITY = 20_000
KEEP_TERMS = 128  # a pooled item keeps its heaviest word keys...
KEEP_ENTITIES = 64  # ...name keys...
KEEP_MARKS = 16  # ...and date/number keys (the dropped tail is light: low tf x idf)
POSTED_KEYS = 24  # an item is findable by its most distinctive keys
PROBE_KEYS = 8  # a text looks for neighbours by its most distinctive keys...
# ...all of its posted keys while the pool is small: walking them costs little there, and a
# young corpus's idf is too flat to say which few keys are the distinctive ones
SMALL_POOL = 2_000
MAX_POSTING = 300  # ...skipping keys that this many pooled items hold (common words)
SHORTLIST = 12  # candidates scored exactly, best partial overlap first...
# ...if their distinctive keys overlap at least this much (the walked part of the dot product,
# in blended weights squared): on ECB+ dev 99.8% of the neighbours pass, 68% of the rest do not.
MIN_OVERLAP = 0.015


# Sorting by weight, heaviest first: reverse=True keeps equal weights in their order, as a
# sort on the negated weight does.
_weight = itemgetter(1)


@dataclass(slots=True, eq=False)
class PoolItem:
    """A pooled item: its entry id, title (for reasons), compact vectors and the distinctive
    keys it is posted under (with their blended weights, heaviest first).

    ``borrowed``: the item names no year and its ``vectors.years`` are those of its nearest
    item (:meth:`RecentItems.borrow_years`); the one field that changes after pooling.
    """

    id: str
    title: str
    vectors: Vectors
    keys: tuple[tuple[str, float], ...]
    borrowed: bool = False


def _top(part: Sparse, k: int) -> Sparse:
    if len(part) <= k:
        return part
    return dict(sorted(part.items(), key=_weight, reverse=True)[:k])


Neighbours = list[tuple[float, PoolItem]]


def story_profile(
    nearest: Neighbours,
    neighbours_of: Callable[[PoolItem], Neighbours],
    *,
    story_id: str | None = None,
    copies: frozenset[str] | set[str] = frozenset(),
    size: int = PROFILE,
    restart: float = RESTART,
    rounds: int = PROFILE_ROUNDS,
) -> Neighbours:
    """The ``size`` pooled items a random walk from the story visits most (personalised
    PageRank over the K-nearest-neighbour graph, cut 2 hops from the story), with their visit
    mass, most visited first. ``nearest``: the story's own nearest items (raw similarity,
    most similar first); ``neighbours_of(item)``: a pooled item's nearest items.

    Why: the items directly nearest to a story are not always the core of its event. A story
    with few close items (a blog post about a quake, naming landmarks its coverage does not)
    gets the items its neighbours agree on, reached through chains of strongly similar items,
    and an item close to the story on topic words only but to nothing else of the event loses
    its place to an item many of the event's reports point to. Each step moves to a neighbour
    with probability proportional to the similarity and jumps back to the story with
    probability ``restart`` (or when the walk reaches an item 2 hops out, whose neighbours are
    not looked up: 1 + K neighbour searches per story). The story's own copy among the items
    (``story_id``, or one of ``copies``: the story file's text also published by a source,
    under another id) is the story: a step to it is a step back to the story, and it is never
    part of the profile. On ECB+ dev,
    threshold fitted on the training topics, F1 rises in string order (odd/even 0.904 ->
    0.929, leave-one-topic-out 0.897 -> 0.921) and holds in numeric order (0.904 -> 0.918,
    0.910 -> 0.911); see docs/benchmarks.md.
    """
    nodes: dict[str, PoolItem] = {}
    edges: dict[str, list[tuple[str | None, float]]] = {}

    def out_edges(pairs: Neighbours) -> list[tuple[str | None, float]]:
        total = sum(sim for sim, _ in pairs)
        if total <= 0.0:
            return []
        for _, item in pairs:
            nodes.setdefault(item.id, item)
        return [
            (None if item.id == story_id or item.id in copies else item.id, sim / total)
            for sim, item in pairs
        ]

    first = out_edges(nearest)
    if not first:
        return []
    for item_id, _ in first:
        if item_id is not None and item_id not in edges:
            edges[item_id] = out_edges(neighbours_of(nodes[item_id]))
    mass: dict[str | None, float] = {None: 1.0}  # None: the story
    for _ in range(rounds):
        step: dict[str | None, float] = {None: restart}
        for node, m in mass.items():
            out = first if node is None else edges.get(node, [])
            if not out:  # 2 hops out (not expanded) or no neighbours: back to the story
                step[None] += (1.0 - restart) * m
                continue
            for target, share in out:
                step[target] = step.get(target, 0.0) + (1.0 - restart) * m * share
        mass = step
    ranked = sorted(
        ((m, nodes[node]) for node, m in mass.items() if node is not None),
        key=lambda x: -x[0],
    )
    return ranked[:size]


def compact(vectors: Vectors) -> Vectors:
    """The heaviest keys of each family (not renormalised: a slight under-estimate)."""
    return Vectors(
        terms=_top(vectors.terms, KEEP_TERMS),
        entities=_top(vectors.entities, KEEP_ENTITIES),
        marks=_top(vectors.marks, KEEP_MARKS),
        years=vectors.years,
    )


def distinctive_keys(vectors: Vectors, k: int) -> list[tuple[str, float]]:
    """The ``k`` word and name keys with the largest blended weight."""
    keyed = [(key, W_TERMS * w) for key, w in vectors.terms.items()]
    keyed += [(key, W_ENTITIES * w) for key, w in vectors.entities.items()]
    keyed.sort(key=_weight, reverse=True)
    return keyed[:k]


class RecentItems:
    """The last ``capacity`` items observed, with an inverted index over distinctive keys."""

    def __init__(self, capacity: int = POOL_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError(f"RecentItems capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, PoolItem] = OrderedDict()
        self._postings: dict[str, deque[tuple[PoolItem, float]]] = {}
        self.version = 0  # bumped on every change: cached neighbour lists know they are stale

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._items

    def get(self, entry_id: str) -> PoolItem | None:
        return self._items.get(entry_id)

    def add(self, entry_id: str, title: str, vectors: Vectors) -> PoolItem:
        """Pool an item (a changed entry replaces its earlier version); evict the oldest."""
        small = compact(vectors)
        item = PoolItem(entry_id, title, small, tuple(distinctive_keys(small, POSTED_KEYS)))
        self.restore(item)
        return item

    def restore(self, item: PoolItem) -> None:
        """Pool an item exactly as it was pooled before (e.g. saved before a restart, see
        :mod:`.saved`): its vectors are already compact, its keys and years final."""
        entry_id = item.id
        self._items.pop(entry_id, None)
        self._items[entry_id] = item
        postings = self._postings
        for key, w in item.keys:
            posting = postings.get(key)  # no new deque per key (a restart pools 20,000)
            if posting is None:
                posting = postings[key] = deque()
            posting.append((item, w))
        while len(self._items) > self.capacity:
            _, old = self._items.popitem(last=False)
            self._evict(old)
        self.version += 1

    def borrow_years(self, entry_ids: Sequence[str]) -> None:
        """Give each listed pooled item that names no year the years of its nearest pooled
        item that names its own (at raw similarity >= the neighbour floor).

        Why: the year-conflict penalty needs both texts to name a year, and many reports do not
        ("a quake hit the island on Sunday"); the closest coverage of the same event usually
        does. On ECB+ dev this lifts F1 from 0.871 to 0.905 (string order) and from 0.900 to
        0.904 (numeric order) in held-out topic folds, and lowers the hard-negative FP rate
        (bench/related.py, docs/benchmarks.md). Every listed item is looked up first and
        updated after, so the result does not depend on the order of ``entry_ids``.
        """
        found: list[tuple[PoolItem, frozenset[str]]] = []
        for entry_id in entry_ids:
            item = self._items.get(entry_id)
            if item is None or item.vectors.years:
                continue
            years = self.years_near(item.vectors, exclude=entry_id, keys=item.keys)
            if years:
                found.append((item, years))
        for item, years in found:
            item.vectors = replace(item.vectors, years=years)
            item.borrowed = True

    def years_near(
        self,
        vectors: Vectors,
        *,
        exclude: str | None = None,
        keys: Sequence[tuple[str, float]] | None = None,
    ) -> frozenset[str]:
        """The years named by the pooled item nearest to ``vectors`` (raw similarity >= the
        neighbour floor) if it names them itself; else none."""
        top = self.nearest(vectors, exclude=exclude, keys=keys, k=1)
        if top and not top[0][1].borrowed:
            return top[0][1].vectors.years
        return frozenset()

    def _evict(self, old: PoolItem) -> None:
        # FIFO: the evicted item (and any replaced earlier version) sits at the postings' heads.
        items = self._items
        for key, _ in old.keys:
            posting = self._postings.get(key)
            if posting is None:
                continue
            while posting and items.get(posting[0][0].id) is not posting[0][0]:
                posting.popleft()
            if not posting:
                del self._postings[key]

    def nearest(
        self,
        vectors: Vectors,
        *,
        exclude: str | None = None,
        keys: Sequence[tuple[str, float]] | None = None,
        k: int = K,
        floor: float = NEIGHBOUR_FLOOR,
    ) -> list[tuple[float, PoolItem]]:
        """Up to ``k`` pooled items most similar to ``vectors`` with raw similarity >= ``floor``,
        most similar first (never the item ``exclude``). ``keys``: the text's distinctive keys
        when already known (:attr:`PoolItem.keys`)."""
        acc: dict[int, float] = {}
        found: dict[int, PoolItem] = {}
        items = self._items
        postings = self._postings
        n_probe = POSTED_KEYS if len(self._items) <= SMALL_POOL else PROBE_KEYS
        probe = keys[:n_probe] if keys is not None else distinctive_keys(vectors, n_probe)
        for key, w in probe:
            posting = postings.get(key)
            if posting is None or len(posting) > MAX_POSTING:
                continue
            for item, pw in posting:
                ident = id(item)
                if ident in acc:
                    acc[ident] += w * pw
                else:
                    acc[ident] = w * pw
                    found[ident] = item
        if not acc:
            return []
        ranked = sorted(
            [kv for kv in acc.items() if kv[1] >= MIN_OVERLAP], key=_weight, reverse=True
        )
        out: list[tuple[float, PoolItem]] = []
        for ident, _ in ranked[: SHORTLIST + 1]:
            item = found[ident]
            if item.id == exclude or items.get(item.id) is not item:
                continue
            sim = raw_similarity(vectors, item.vectors)
            if sim >= floor:
                out.append((sim, item))
        out.sort(key=lambda x: -x[0])
        return out[:k]
