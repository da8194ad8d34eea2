"""The monitor: new entries x watches -> :class:`~feedservice.model.Match` (issue 4 items 1-3).

Pure and in memory: the app persists what must survive a restart (the corpus statistics via
:meth:`CorpusStats.to_json`, reported matches and near-duplicate signatures in the store) and
calls :meth:`Monitor.observe` then :meth:`Monitor.match` after every poll.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from feedservice.model import Entry, Match, Watch
from feedservice.monitor.dedup import group_near_duplicates, signature
from feedservice.monitor.index import WatchIndex
from feedservice.monitor.query import Query, QueryDoc, parse_query
from feedservice.monitor.score import (
    DEFAULT_THRESHOLD,
    W_ENTITIES,
    W_MARKS,
    W_TERMS,
    YEAR_CONFLICT_PENALTY,
    CorpusStats,
    Vectors,
    calibrate,
    centroid,
    explain,
    raw_similarity,
    uncalibrate,
    vectorise,
)
from feedservice.monitor.text import Features, analyse_entry

# TDT-style adaptive filtering (opt-in, ``adaptive=True``): an item matched with a score at
# least this far above the watch's threshold is folded into the watch profile, so later
# follow-ups that share vocabulary with earlier ones (but less with the story) are found; items
# fold in arrival order. Off by default: on ECB+ dev it drifted into the same-topic other event
# (F1 0.842 -> 0.811, hard-negative FP 0.19 -> 0.30 at margin 0.15; 0.840 at margin 0.35).
FOLD_MARGIN = 0.15
MAX_FOLDED = 20
_FEATURE_CACHE = 4096  # entries observed but not yet matched keep their features here
_REFRESH_GROWTH = 0.05  # re-vectorise a story when the corpus grew by 5%


@dataclass(frozen=True, slots=True)
class WatchInput:
    """A configured watch and, when it has one, its story as a normalised entry."""

    watch: Watch
    story: Entry | None = None


@dataclass(slots=True)
class _WatchState:
    watch: Watch
    threshold: float
    query: Query | None
    story: Entry | None
    story_features: Features | None
    story_vectors: Vectors | None = None
    profile: Vectors | None = None
    folded: list[Vectors] = field(default_factory=list)
    raw_threshold: float = 0.0
    reported: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Item:
    entry: Entry
    features: Features
    vectors: Vectors
    qdoc: QueryDoc | None = None


def _family_weight(vec: Vectors, key: str) -> tuple[float, int]:
    """(blended weight of ``key`` in ``vec``, family: 0 words, 1 names, 2 dates/numbers)."""
    if key in vec.terms:
        return W_TERMS * vec.terms[key], 0
    if key in vec.entities:
        return W_ENTITIES * vec.entities[key], 1
    return W_MARKS * vec.marks[key], 2


class Monitor:
    """Matches new entries against watches.

    ``use_index=False`` checks every watch for every item (the baseline of
    ``bench/monitor_speed.py``); results are the same.

    Raises :class:`~feedservice.errors.QueryError` at construction when a watch's query does not
    parse (naming the watch and the column), and ValueError for a watch with neither a story
    nor a query.
    """

    def __init__(
        self,
        watches: Sequence[WatchInput],
        *,
        stats: CorpusStats | None = None,
        adaptive: bool = False,
        use_index: bool = True,
    ) -> None:
        self.stats = stats if stats is not None else CorpusStats()
        self.adaptive = adaptive
        self.use_index = use_index
        self._states: list[_WatchState] = []
        for wi in watches:
            w = wi.watch
            if wi.story is None and not w.query:
                raise ValueError(f"watch {w.name!r} has neither a story nor a query")
            query = parse_query(w.query, watch=w.name) if w.query else None
            self._states.append(
                _WatchState(
                    watch=w,
                    threshold=w.threshold if w.threshold is not None else DEFAULT_THRESHOLD,
                    query=query,
                    story=wi.story,
                    story_features=analyse_entry(wi.story) if wi.story is not None else None,
                )
            )
        self._features: OrderedDict[str, Features] = OrderedDict()
        self._index = WatchIndex()
        self._indexed_at = -1
        self._min_raw_threshold = 1.0

    # --- corpus ------------------------------------------------------------------------------

    def observe(self, entries: Sequence[Entry]) -> None:
        """Count new entries into the corpus statistics (call once per new entry)."""
        for entry in entries:
            features = analyse_entry(entry)
            self.stats.add(features.keys)
            self._features[entry.id] = features
            self._features.move_to_end(entry.id)
            while len(self._features) > _FEATURE_CACHE:
                self._features.popitem(last=False)

    def _features_of(self, entry: Entry) -> Features:
        cached = self._features.pop(entry.id, None)
        return cached if cached is not None else analyse_entry(entry)

    # --- profiles and index ------------------------------------------------------------------

    def _refresh(self) -> None:
        n = self.stats.n_docs
        if self._indexed_at >= 0 and n <= self._indexed_at * (1.0 + _REFRESH_GROWTH):
            return
        self._index = WatchIndex()
        for slot, st in enumerate(self._states):
            if st.story_features is not None:
                st.story_vectors = vectorise(st.story_features, self.stats)
                st.profile = (
                    centroid([st.story_vectors, *st.folded]) if st.folded else st.story_vectors
                )
                self._index.add_profile(slot, st.story_vectors)
                if st.folded:
                    self._index.add_profile(slot, st.profile)
                    self._index.widen(slot)
                st.raw_threshold = uncalibrate(st.threshold)
            elif st.query is not None:
                anchors = st.query.anchors()
                self._index.add_query(slot, None if anchors is None else list(anchors))
        self._indexed_at = n
        self._min_raw_threshold = min(
            (st.raw_threshold for st in self._states if st.story_vectors is not None),
            default=1.0,
        )

    # --- matching ----------------------------------------------------------------------------

    def relatedness(self, story: Entry, entry: Entry) -> float:
        """The calibrated score of ``entry`` against ``story`` with the current statistics."""
        a = vectorise(analyse_entry(story), self.stats)
        b = vectorise(analyse_entry(entry), self.stats)
        return calibrate(raw_similarity(a, b))

    def match(self, entries: Sequence[Entry]) -> list[Match]:
        """Every (watch, entry) pair that passes, grouped by near-duplicates, in entry order.

        A story watch passes at score >= threshold (and its query, when it has one); a query-only
        watch passes when the query matches, with score 1.0. An entry is never reported twice
        for a watch by this instance; the watch story itself is never reported.
        """
        self._refresh()
        items = [self._item(e) for e in entries]
        hits: dict[int, list[tuple[int, float, tuple[str, ...]]]] = {}
        index = self._index
        for pos, item in enumerate(items):
            if self.use_index:
                slots = self._candidates(item)
            else:
                slots = dict.fromkeys(range(len(self._states)))
            for slot in sorted(slots):
                st = self._states[slot]
                n_folded = len(st.folded)
                result = self._judge(st, item, slots[slot])
                if result is not None:
                    hits.setdefault(slot, []).append((pos, *result))
                if len(st.folded) > n_folded:  # adaptive: later items may reach it by new keys
                    index.add_profile(slot, item.vectors, 16)
                    index.widen(slot)
        return self._group(items, hits)

    def _item(self, entry: Entry) -> _Item:
        features = self._features_of(entry)
        return _Item(entry, features, vectorise(features, self.stats))

    def _candidates(self, item: _Item) -> dict[int, float | None]:
        """Watches that could match ``item`` -> the exact raw score when the index knows it.

        See :mod:`.index`: the walked postings give most of the dot product; the few common
        words skipped there are added exactly for the watches still in the running.
        """
        index = self._index
        states = self._states
        out: dict[int, float | None] = {}
        vec = item.vectors
        # Watches sharing no distinctive (short-posting) word or name with the item are not
        # considered: a score built from common words and dates alone is not a follow-up.
        acc, slack, skipped = index.accumulate(vec)
        skipped_w = [(key, *_family_weight(vec, key)) for key in skipped]
        tails = index.tail
        need = self._min_raw_threshold - slack - index.max_tail
        for slot, partial in [kv for kv in acc.items() if kv[1] >= need]:
            st = states[slot]
            story = st.story_vectors
            tail = tails.get(slot, 1.0)
            if story is None or partial + slack + tail < st.raw_threshold:
                continue
            if st.folded or tail > 0.0:
                out[slot] = None  # the index does not hold the whole profile: score in full
                continue
            raw = partial
            parts = (story.terms, story.entities, story.marks)
            for key, w, family in skipped_w:
                raw += w * parts[family].get(key, 0.0)
            if story.years and vec.years and not (story.years & vec.years):
                raw *= 1.0 - YEAR_CONFLICT_PENALTY
            if raw >= st.raw_threshold:
                out[slot] = raw
        if index.has_queries:
            if item.qdoc is None:
                item.qdoc = QueryDoc.from_entry(item.entry)
            for slot in index.query_candidates(item.qdoc.body_set):
                out.setdefault(slot, None)
        return out

    def _judge(
        self, st: _WatchState, item: _Item, raw: float | None = None
    ) -> tuple[float, tuple[str, ...]] | None:
        entry = item.entry
        w = st.watch
        if entry.id in st.reported:
            return None
        if st.story is not None and entry.id == st.story.id:
            return None
        if w.sources is not None and entry.source not in w.sources:
            return None
        query_terms: tuple[str, ...] = ()
        if st.query is not None:
            if item.qdoc is None:
                item.qdoc = QueryDoc.from_entry(entry)
            if not st.query.matches(item.qdoc):
                return None
            query_terms = st.query.matched_terms(item.qdoc)
        if st.profile is None or st.story_vectors is None or st.story_features is None:
            return 1.0, (f"matches query: {', '.join(query_terms)}",)
        if raw is None:
            raw = raw_similarity(st.story_vectors, item.vectors)
        if st.folded:
            raw = max(raw, raw_similarity(st.profile, item.vectors))
        value = calibrate(raw)
        if value < st.threshold:
            return None
        if self.adaptive and value >= st.threshold + FOLD_MARGIN and len(st.folded) < MAX_FOLDED:
            st.folded.append(item.vectors)
            st.profile = centroid([st.story_vectors, *st.folded])
        reasons = explain(
            st.story_features,
            st.story_vectors,
            item.features,
            item.vectors,
            idf=self.stats.idf,
            score_value=value,
            threshold=st.threshold,
        )
        if query_terms:
            reasons = (f"matches query: {', '.join(query_terms)}", *reasons)
        return value, reasons

    def _group(
        self, items: list[_Item], hits: dict[int, list[tuple[int, float, tuple[str, ...]]]]
    ) -> list[Match]:
        """One Match per near-duplicate group per watch (``also`` = the other entries' ids)."""
        sigs: dict[int, tuple[int, ...]] = {}
        out: list[tuple[int, int, Match]] = []
        for slot, found in hits.items():
            st = self._states[slot]
            if len(found) > 1:
                for pos, _, _ in found:
                    if pos not in sigs:
                        sigs[pos] = signature(items[pos].entry)
                groups = group_near_duplicates([sigs[pos] for pos, _, _ in found])
            else:
                groups = [[0]]
            for group in groups:
                members = [found[i] for i in group]
                first_pos, _, reasons = members[0]
                best = max(m[1] for m in members)
                ids = [items[m[0]].entry.id for m in members]
                st.reported.update(ids)
                match = Match(
                    watch=st.watch.name,
                    entry_id=ids[0],
                    score=round(best, 4),
                    reasons=reasons,
                    also=tuple(ids[1:]),
                )
                out.append((first_pos, slot, match))
        out.sort(key=lambda x: (x[0], x[1]))
        return [m for _, _, m in out]
