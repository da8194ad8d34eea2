"""The monitor: new entries x watches -> :class:`~feedservice.model.Match` (issue 4 items 1-3).

Pure and in memory: the app persists what must survive a restart (the corpus statistics via
:meth:`CorpusStats.to_json`, each observed entry's pooled item via :mod:`.saved`, reported
matches and near-duplicate signatures in the store) and calls :meth:`Monitor.observe` then
:meth:`Monitor.match` after every poll.

Scoring is the neighbourhood score of :mod:`.score`: each watch story keeps its up to three
nearest items (updated as items arrive, recomputed when the corpus statistics move on) and the
up to four items a walk from the story over nearest-item links visits most (its profile,
:func:`.neighbours.story_profile`, recomputed when its nearest items change), each new item
gets its nearest items from the pool of recent items (:mod:`.neighbours`), and the story with
its profile is compared with the item with its nearest items. An item closer to another
watch's story is not one of a story's nearest items (:meth:`Monitor._elsewhere`). A story or
item that names no year takes the years of its nearest item for the year-conflict penalty
(:meth:`.neighbours.RecentItems.borrow_years`). An item just below a watch's threshold that is
as related to one of the watch's strongest matches (its anchors) as an item must be to the
story matches too (a follow-up of a follow-up; see :meth:`Monitor._anchored`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

from feedservice.model import Entry, Match, Watch
from feedservice.monitor.dedup import group_near_duplicates, signature
from feedservice.monitor.index import WatchIndex
from feedservice.monitor.neighbours import K, Neighbours, PoolItem, RecentItems, story_profile
from feedservice.monitor.query import Query, QueryDoc, parse_query
from feedservice.monitor.score import (
    DEFAULT_THRESHOLD,
    NEIGHBOUR_FLOOR,
    W_ENTITIES,
    W_MARKS,
    W_TERMS,
    YEAR_CONFLICT_PENALTY,
    CorpusStats,
    Vectors,
    calibrate,
    explain,
    neighbourhood_score,
    raw_similarity,
    uncalibrate,
    vectorise,
)
from feedservice.monitor.text import Features, analyse_entry

_FEATURE_CACHE = 4096  # entries observed but not yet matched keep their features here
# A watch's anchors: its strongest matches (calibrated score >= ANCHOR_SCORE), the ANCHORS best
# of them still pooled; an item related to one of them as an item must be related to the story
# matches too (see Monitor.match). ANCHOR_KEEP candidates are remembered so an evicted anchor
# has a successor. On ECB+ dev through the app at the default threshold (docs/benchmarks.md):
# string order F1 0.905 -> 0.924, numeric 0.930 -> 0.938, hard-negative FP unchanged (0.074,
# 0.069). 0.65 and 4 anchors were chosen among 0.60-0.70 and 4, 8 or all strong matches,
# at the default threshold and with the threshold fitted on held-out topic folds.
ANCHOR_SCORE = 0.65
ANCHORS = 4
ANCHOR_KEEP = 16
# An item matched through an anchor reports at most this score: second-hand evidence never
# ranks with the story's own strong matches, and never becomes an anchor itself (no drift).
ANCHORED_SCORE_CAP = 0.6499
_NEAR_MISS = calibrate(NEIGHBOUR_FLOOR)
# A pooled item with the story's title at this raw similarity or more is the story republished
# (a source publishing the story file too): not one of its neighbours, never an anchor. With
# every ECB+ document as an item (bench/related.py --candidates all), where each story's copy is
# in the feed, F1 0.899 -> 0.905 (string order) and 0.916 -> 0.936 (numeric).
COPY_SIMILARITY = 0.8
_REFRESH_GROWTH = 0.05  # re-vectorise stories (and re-find their neighbours) at 5% growth


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
    raw_threshold: float = 0.0
    neighbours: Neighbours = field(default_factory=list)  # the story's K nearest items
    profile: Neighbours = field(default_factory=list)  # its side of the comparison
    reported: set[str] = field(default_factory=set)
    anchors: list[tuple[float, str]] = field(default_factory=list)  # (score, id), best first
    copies: set[str] = field(default_factory=set)  # pooled items that are the story republished
    twins: frozenset[int] = frozenset()  # watches whose story is this one's (raw sim >= 0.8)


@dataclass(slots=True)
class _Item:
    entry: Entry
    features: Features
    vectors: Vectors
    qdoc: QueryDoc | None = None
    neighbours: Neighbours = field(default_factory=list)
    direct: dict[int, float] = field(default_factory=dict)


def _family_weight(vec: Vectors, key: str) -> tuple[float, int]:
    """(blended weight of ``key`` in ``vec``, family: 0 words, 1 names, 2 dates/numbers)."""
    if key in vec.terms:
        return W_TERMS * vec.terms[key], 0
    if key in vec.entities:
        return W_ENTITIES * vec.entities[key], 1
    return W_MARKS * vec.marks[key], 2


class Monitor:
    """Matches new entries against watches.

    ``pool``: the recent items neighbours are drawn from (default: a new
    :class:`~.neighbours.RecentItems`; pass one to share it, e.g. with a backlog monitor).
    ``use_index=False`` checks every watch for every item (the baseline of
    ``bench/monitor_speed.py``). ``report``: the names of the watches to match (default: all);
    the others' stories still set their items apart (see :meth:`_elsewhere`), so a new watch's
    backlog pass sees the neighbourhoods a monitor holding every watch sees.

    Raises :class:`~feedservice.errors.QueryError` at construction when a watch's query does not
    parse (naming the watch and the column), and ValueError for a watch with neither a story
    nor a query.
    """

    def __init__(
        self,
        watches: Sequence[WatchInput],
        *,
        stats: CorpusStats | None = None,
        pool: RecentItems | None = None,
        use_index: bool = True,
        report: Collection[str] | None = None,
    ) -> None:
        self.stats = stats if stats is not None else CorpusStats()
        self.pool = pool if pool is not None else RecentItems()
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
        self._slot_of = {st.watch.name: slot for slot, st in enumerate(self._states)}
        self._reported_slots = (
            None
            if report is None
            else {slot for slot, st in enumerate(self._states) if st.watch.name in report}
        )
        self._anchor_slots: dict[str, set[int]] = {}  # anchor id -> watches it anchors
        self._features: OrderedDict[str, tuple[Features, Vectors]] = OrderedDict()
        self._index = WatchIndex()
        self._indexed_at = -1
        self._floor = NEIGHBOUR_FLOOR
        self._story_slots: list[int] = []
        self._nb_slots: dict[str, set[int]] = {}  # pooled item id -> watches it neighbours
        self._base_cache: dict[tuple[str, str], float] = {}  # per match() call
        # pooled item id -> its stories at >= the floor, as found when it was matched (valid
        # until the next refresh): a neighbour's watches cost nothing to look up again
        self._direct_memo: OrderedDict[str, dict[int, float]] = OrderedDict()

    # --- corpus ------------------------------------------------------------------------------

    def observe(self, entries: Sequence[Entry]) -> None:
        """Count new entries into the corpus statistics and the pool of recent items (call
        once per new entry, before :meth:`match`). The batch is counted first, then
        vectorised, so every entry of a batch sees the same statistics."""
        analysed = []
        for entry in entries:
            features = analyse_entry(entry)
            self.stats.add(features.keys)
            analysed.append((entry, features))
        for entry, features in analysed:
            vectors = vectorise(features, self.stats)
            self.pool.add(entry.id, entry.title, vectors)
            self._features[entry.id] = (features, vectors)
            self._features.move_to_end(entry.id)
            while len(self._features) > _FEATURE_CACHE:
                self._features.popitem(last=False)
        self.pool.borrow_years([entry.id for entry, _ in analysed])

    def remember(self, entries: Sequence[Entry | PoolItem]) -> None:
        """Pool entries already counted in the statistics (e.g. the stored entries after a
        restart, oldest first), so new items find their neighbours among them.

        A :class:`~.neighbours.PoolItem` (as :meth:`pooled` gave it when the entry was
        observed, saved and restored with :mod:`.saved`) is pooled as it was, not analysed
        again; an entry is analysed with the statistics of now and may borrow years."""
        added = []
        pool = self.pool
        for entry in entries:
            if entry.id in pool:
                continue
            if isinstance(entry, PoolItem):
                pool.restore(entry)
            else:
                pool.add(entry.id, entry.title, vectorise(analyse_entry(entry), self.stats))
                added.append(entry.id)
        pool.borrow_years(added)

    def pooled(self, entry_id: str) -> PoolItem | None:
        """The pooled item of an observed entry, final once :meth:`observe` returned (to be
        saved for a restart with :func:`~.saved.encode_item`); None if not pooled."""
        return self.pool.get(entry_id)

    # --- profiles, index and story neighbourhoods -----------------------------------------------

    def _refresh(self) -> None:
        n = self.stats.n_docs
        if self._indexed_at >= 0 and n <= self._indexed_at * (1.0 + _REFRESH_GROWTH):
            return
        self._index = WatchIndex()
        self._nb_slots = {}
        self._story_slots = []
        for slot, st in enumerate(self._states):
            if st.story_features is not None and st.story is not None:
                st.story_vectors = self._with_years(
                    vectorise(st.story_features, self.stats), st.story.id
                )
                st.raw_threshold = uncalibrate(st.threshold)
                self._index.add_profile(slot, st.story_vectors)
                self._story_slots.append(slot)
            elif st.query is not None:
                anchors = st.query.anchors()
                self._index.add_query(slot, None if anchors is None else list(anchors))
        self._index.pack()
        self._indexed_at = n
        self._floor = min(
            [NEIGHBOUR_FLOOR]
            + [st.raw_threshold for st in self._states if st.story_vectors is not None]
        )
        # Stories are indexed now: each finds the watches telling the same story (_elsewhere
        # needs them), then its nearest items and its profile.
        for slot in self._story_slots:
            st = self._states[slot]
            assert st.story_vectors is not None
            st.twins = frozenset(
                other
                for other, sim in self._direct(st.story_vectors).items()
                if other != slot and sim >= COPY_SIMILARITY
            )
        memo: dict[str, Neighbours] = {}
        direct: dict[str, dict[int, float]] = {}  # pooled item id -> its stories, as of now
        for slot in self._story_slots:
            st = self._states[slot]
            assert st.story is not None and st.story_vectors is not None
            st.neighbours = []
            for sim, p in self.pool.nearest(st.story_vectors, exclude=st.story.id, k=K + 2):
                if self._is_copy(st, sim, p):
                    continue
                if p.id not in direct:
                    direct[p.id] = self._direct(p.vectors)
                if not self._elsewhere(slot, sim, direct[p.id]):
                    st.neighbours.append((sim, p))
            del st.neighbours[K:]
            st.profile = []
            for _, p in st.neighbours:
                self._nb_slots.setdefault(p.id, set()).add(slot)
            self._set_profile(slot, memo)

    def _with_years(self, vectors: Vectors, own_id: str) -> Vectors:
        """``vectors``, with the years of the nearest pooled item if it names none."""
        if vectors.years:
            return vectors
        years = self.pool.years_near(vectors, exclude=own_id)
        return replace(vectors, years=years) if years else vectors

    def _is_copy(self, st: _WatchState, sim: float, item: PoolItem) -> bool:
        """``item`` (at raw similarity ``sim`` to the story) is the story republished: its
        title and nearly all of its text. Remembered, so the walk treats it as the story."""
        if item.id in st.copies:
            return True
        if st.story is None or sim < COPY_SIMILARITY:
            return False
        if " ".join(item.title.split()).casefold() != " ".join(st.story.title.split()).casefold():
            return False
        st.copies.add(item.id)
        return True

    def _elsewhere(self, slot: int, sim: float, direct: dict[int, float]) -> bool:
        """An item at raw similarity ``sim`` to the story of ``slot`` and ``direct`` to the
        stories it is close to (:meth:`_direct`) is closer to another watch's story, one not
        telling the same story (:attr:`_WatchState.twins`): it describes that story, so it is
        not one of this story's nearest items.

        Why: each watch's story is a subject its user set apart. When two watches follow
        two events of one topic (a rule and its reversal, two quakes on one island), the
        items nearest to one story are often the other's coverage, and a profile built from
        them follows the other event. On ECB+ dev through the app at the default threshold
        (docs/benchmarks.md), string order F1 0.924 -> 0.937 and hard-negative FP 0.074 ->
        0.066; with every document as an item 0.905 -> 0.937 and 0.090 -> 0.061; numeric
        order unchanged (0.938). Two watches on one event with different story texts each
        lose a little recall (about 0.02 F1 with a second watch per ECB+ event)."""
        twins = self._states[slot].twins
        return any(
            other_sim > sim and other != slot and other not in twins
            for other, other_sim in direct.items()
        )

    def _forget_earlier_version(self, pooled: PoolItem) -> list[int]:
        """Drop an earlier version of ``pooled`` (an edited entry, pooled anew) from the
        stories' nearest items; returns the watches whose nearest items or profile held it (their
        profiles are recomputed; the new version is offered to the stories again as any item)."""
        slots = self._nb_slots.get(pooled.id)
        if not slots:
            return []
        out = []
        for slot in sorted(slots):
            st = self._states[slot]
            stale = any(p.id == pooled.id and p is not pooled for _, p in st.neighbours)
            if stale:
                st.neighbours = [(sim, p) for sim, p in st.neighbours if p.id != pooled.id]
            if stale or any(p.id == pooled.id and p is not pooled for _, p in st.profile):
                out.append(slot)
        return out

    def _offer(self, slot: int, sim: float, item: PoolItem, direct: dict[int, float]) -> bool:
        """``item`` is related to the story of ``slot`` (``direct``: its stories, see
        :meth:`_direct`): keep it if among the K nearest.
        Returns whether the story's nearest items changed."""
        st = self._states[slot]
        if (st.story is not None and item.id == st.story.id) or self._is_copy(st, sim, item):
            return False
        if self._elsewhere(slot, sim, direct):
            return False
        before = [p for _, p in st.neighbours]
        nbs = [(s, p) for s, p in st.neighbours if p.id != item.id]
        if len(nbs) == K and sim <= nbs[-1][0]:
            return False
        nbs.append((sim, item))
        nbs.sort(key=lambda x: -x[0])
        profile_ids = {p.id for _, p in st.profile}
        for _, p in nbs[K:]:
            slots = self._nb_slots.get(p.id)
            if slots is not None and p.id not in profile_ids:
                slots.discard(slot)
        nbs = nbs[:K]
        st.neighbours = nbs
        for _, p in nbs:
            self._nb_slots.setdefault(p.id, set()).add(slot)
        return [p for _, p in nbs] != before

    def _set_profile(self, slot: int, memo: dict[str, Neighbours]) -> None:
        """Recompute the story's profile from its nearest items (``memo``: pooled item id ->
        its nearest items, shared within one pass) and index it for candidate lookup."""
        st = self._states[slot]
        pool = self.pool

        def neighbours_of(p: PoolItem) -> Neighbours:
            found = memo.get(p.id)
            if found is None or any(pool.get(q.id) is not q for _, q in found):
                found = pool.nearest(p.vectors, exclude=p.id, keys=p.keys)
                memo[p.id] = found
            return found

        keep = {p.id for _, p in st.neighbours}
        for _, p in st.profile:
            slots = self._nb_slots.get(p.id)
            if slots is not None and p.id not in keep:
                slots.discard(slot)
        st.profile = story_profile(
            st.neighbours,
            neighbours_of,
            story_id=st.story.id if st.story else None,
            copies=st.copies,
        )
        for _, p in st.profile:
            self._nb_slots.setdefault(p.id, set()).add(slot)

    # --- matching ----------------------------------------------------------------------------

    def _neighbourhood(
        self, st: _WatchState, item_id: str, item: Vectors, nbs: Neighbours
    ) -> float:
        assert st.story is not None and st.story_vectors is not None
        story_side = [
            (st.story.id, st.story_vectors),
            *((p.id, p.vectors) for _, p in st.profile),
        ]
        item_side = [(item_id, item), *((p.id, p.vectors) for _, p in nbs)]
        return neighbourhood_score(story_side, item_side, self._base)

    def _base(self, a_id: str, a: Vectors, b_id: str, b: Vectors) -> float:
        key = (a_id, b_id)
        value = self._base_cache.get(key)
        if value is None:
            value = raw_similarity(a, b)
            self._base_cache[key] = value
        return value

    def relatedness(self, story: Entry, entry: Entry) -> float:
        """The calibrated neighbourhood score of ``entry`` against ``story`` now."""
        if story.id == entry.id:
            return 1.0
        a = self._with_years(vectorise(analyse_entry(story), self.stats), story.id)
        b = self._with_years(vectorise(analyse_entry(entry), self.stats), entry.id)
        pool = self.pool
        profile = story_profile(
            pool.nearest(a, exclude=story.id),
            lambda p: pool.nearest(p.vectors, exclude=p.id, keys=p.keys),
            story_id=story.id,
        )
        story_side = [(story.id, a), *((p.id, p.vectors) for _, p in profile)]
        item_side = [
            (entry.id, b),
            *((p.id, p.vectors) for _, p in self.pool.nearest(b, exclude=entry.id)),
        ]
        return calibrate(neighbourhood_score(story_side, item_side))

    def match(self, entries: Sequence[Entry]) -> list[Match]:
        """Every (watch, entry) pair that passes, grouped by near-duplicates, in entry order.

        A story watch passes at score >= threshold (and its query, when it has one), or just
        below it when the item is that close to one of the watch's anchors (its matches scoring
        >= ``ANCHOR_SCORE``, this batch's included); a query-only watch passes when the query
        matches, with score 1.0. An entry is never reported twice
        for a watch by this instance; the watch story itself is never reported. Entries not
        observed before are pooled now (they are held from here on).
        """
        self._refresh()
        self._base_cache = {}
        items = [self._item(e) for e in entries]
        pool = self.pool
        fresh = []
        for item in items:
            if item.entry.id not in pool:
                pool.add(item.entry.id, item.entry.title, item.vectors)
                fresh.append(item.entry.id)
        pool.borrow_years(fresh)
        # Pass 1: every item's neighbours, its direct similarity to the stories, and the
        # stories' neighbourhoods updated with the batch (a batch is judged as a whole).
        memo: dict[str, Neighbours] = {}
        changed: set[int] = set()
        for item in items:
            pooled = pool.get(item.entry.id)
            if pooled is None:  # a batch larger than the pool evicted it again
                pooled = pool.add(item.entry.id, item.entry.title, item.vectors)
            if pooled.borrowed and not item.vectors.years:
                item.vectors = replace(item.vectors, years=pooled.vectors.years)
            item.neighbours = pool.nearest(item.vectors, exclude=item.entry.id, keys=pooled.keys)
            memo[item.entry.id] = item.neighbours
            item.direct = self._direct(item.vectors)
            self._memo(item.entry.id, item.direct)
            changed.update(self._forget_earlier_version(pooled))
            for slot, sim in item.direct.items():
                if sim >= NEIGHBOUR_FLOOR and self._offer(slot, sim, pooled, item.direct):
                    changed.add(slot)
        # Profiles follow their stories' nearest items (a profile also moves when an item
        # enters a neighbour's own nearest items; that waits for the next refresh).
        for slot in sorted(changed):
            self._set_profile(slot, memo)
        # Pass 2: judge the candidate watches of every item.
        hits: dict[int, list[tuple[int, float, tuple[str, ...]]]] = {}
        near_misses: dict[int, list[int]] = {}  # below the threshold, at the neighbour floor
        for pos, item in enumerate(items):
            for slot in sorted(self._candidates(item)):
                st = self._states[slot]
                result = self._judge(st, item)
                if result is None:
                    continue
                if result[0] >= st.threshold:
                    hits.setdefault(slot, []).append((pos, *result))
                elif result[0] >= _NEAR_MISS:
                    near_misses.setdefault(slot, []).append(pos)
        found = self._group(items, hits)
        for m in found:
            if (
                m.score >= ANCHOR_SCORE
                and m.entry_id not in self._states[self._slot_of[m.watch]].copies
            ):
                self._add_anchor(self._slot_of[m.watch], m.score, m.entry_id)
        # Pass 3: near misses related to one of the watch's anchors (its strongest matches,
        # this batch's included) as an item must be related to the story.
        anchored = self._anchored(items, near_misses, memo)
        if anchored:
            at = {item.entry.id: pos for pos, item in enumerate(items)}
            found = sorted(
                found + self._group(items, anchored),
                key=lambda m: (at[m.entry_id], self._slot_of[m.watch]),
            )
        return found

    # --- anchors -----------------------------------------------------------------------------

    def add_anchors(self, watch: str, matches: Iterable[tuple[str, float]]) -> None:
        """Make earlier matches of ``watch`` ((entry id, score), e.g. read from the store after
        a restart) candidates for its anchors; only scores >= ``ANCHOR_SCORE`` count."""
        slot = self._slot_of.get(watch)
        if slot is None:
            return
        for entry_id, score_value in matches:
            if score_value >= ANCHOR_SCORE:
                self._add_anchor(slot, score_value, entry_id)

    def anchors(self, watch: str) -> list[tuple[str, float]]:
        """The watch's anchor candidates, (entry id, score), best first."""
        slot = self._slot_of.get(watch)
        if slot is None:
            return []
        return [(entry_id, score_value) for score_value, entry_id in self._states[slot].anchors]

    def _add_anchor(self, slot: int, score_value: float, entry_id: str) -> None:
        st = self._states[slot]
        if st.story is None:
            return
        anchors = [a for a in st.anchors if a[1] != entry_id]
        anchors.append((score_value, entry_id))
        anchors.sort(key=lambda a: (-a[0], a[1]))
        for _, dropped in anchors[ANCHOR_KEEP:]:
            slots = self._anchor_slots.get(dropped)
            if slots is not None:
                slots.discard(slot)
                if not slots:  # a long-running monitor sees many anchors come and go
                    del self._anchor_slots[dropped]
        st.anchors = anchors[:ANCHOR_KEEP]
        if any(kept == entry_id for _, kept in st.anchors):
            self._anchor_slots.setdefault(entry_id, set()).add(slot)

    def _active_anchors(self, st: _WatchState) -> list[PoolItem]:
        out = []
        for _, entry_id in st.anchors:
            item = self.pool.get(entry_id)
            if item is not None:
                out.append(item)
                if len(out) == ANCHORS:
                    break
        return out

    def _anchored(
        self, items: list[_Item], near_misses: dict[int, list[int]], memo: dict[str, Neighbours]
    ) -> dict[int, list[tuple[int, float, tuple[str, ...]]]]:
        """Pass 3 of :meth:`match`: each near miss of a watch (an item whose neighbourhood
        score with the story is below the threshold, at or above the neighbour floor) that is
        similar to one of the watch's anchors (at the floor) and whose neighbourhood score with
        that anchor (the anchor and its nearest items against the item and its nearest items)
        passes the watch's threshold. It reports at most ``ANCHORED_SCORE_CAP``.

        Why: a story's strongest matches are its event's core coverage, and a follow-up of a
        follow-up often shares more with them than with the story's own wording ("Lohan skips
        Morningside rehab" next to "Lohan checks into Betty Ford"). Only the story's own
        strong matches are anchors, so matches never chain further; only items already close
        to the story (at the floor) are reconsidered."""
        out: dict[int, list[tuple[int, float, tuple[str, ...]]]] = {}
        pool = self.pool

        def side(anchor: PoolItem) -> list[tuple[str, Vectors]]:
            nbs = memo.get(anchor.id)
            if nbs is None or any(pool.get(q.id) is not q for _, q in nbs):
                nbs = memo[anchor.id] = pool.nearest(
                    anchor.vectors, exclude=anchor.id, keys=anchor.keys
                )
            return [(anchor.id, anchor.vectors), *((q.id, q.vectors) for _, q in nbs)]

        for slot in sorted(near_misses):
            st = self._states[slot]
            if st.threshold >= ANCHOR_SCORE:
                continue
            anchors = self._active_anchors(st)
            if not anchors:
                continue
            for pos in near_misses[slot]:
                item = items[pos]
                item_id = item.entry.id
                item_side = [
                    (item_id, item.vectors),
                    *((q.id, q.vectors) for _, q in item.neighbours),
                ]
                best, via = -1.0, ""
                for anchor in anchors:
                    if anchor.id == item_id:
                        continue
                    if (
                        self._base(anchor.id, anchor.vectors, item_id, item.vectors)
                        < NEIGHBOUR_FLOOR
                    ):
                        continue
                    raw = neighbourhood_score(side(anchor), item_side, self._base)
                    if raw > best:
                        best, via = raw, anchor.title
                value = calibrate(best) if best > 0.0 else 0.0
                if value < st.threshold:
                    continue
                value = min(value, ANCHORED_SCORE_CAP)
                out.setdefault(slot, []).append((pos, value, self._reasons(st, item, value, [via])))
        return out

    def _item(self, entry: Entry) -> _Item:
        cached = self._features.pop(entry.id, None)
        if cached is not None:
            return _Item(entry, cached[0], cached[1])
        features = analyse_entry(entry)
        return _Item(entry, features, vectorise(features, self.stats))

    def _direct(self, vec: Vectors) -> dict[int, float]:
        """Story watches whose story has raw similarity >= the floor with ``vec`` -> that
        similarity, exact.

        See :mod:`.index`: the walked postings give most of the dot product; the few common
        words skipped there are added exactly for the watches still in the running. Stories
        sharing no distinctive (short-posting) word or name with the text are not considered.
        """
        states = self._states
        out: dict[int, float] = {}
        if not self.use_index:
            for slot in self._story_slots:
                story = states[slot].story_vectors
                assert story is not None
                sim = raw_similarity(story, vec)
                if sim >= self._floor:
                    out[slot] = sim
            return out
        index = self._index
        floor = self._floor
        acc, slack, skipped = index.accumulate(vec, floor)
        if not acc:
            return out
        skipped_w = [(key, *_family_weight(vec, key)) for key in skipped]
        tails = index.tail
        need = floor - slack - index.max_tail
        for slot, partial in acc.items():
            if partial < need:
                continue
            st = states[slot]
            story = st.story_vectors
            tail = tails.get(slot, 1.0)
            if story is None or partial + slack + tail < floor:
                continue
            if tail > 0.0:  # the index does not hold the whole story: score in full
                raw = raw_similarity(story, vec)
            else:
                raw = partial
                parts = (story.terms, story.entities, story.marks)
                for key, w, family in skipped_w:
                    raw += w * parts[family].get(key, 0.0)
                if story.years and vec.years and not (story.years & vec.years):
                    raw *= 1.0 - YEAR_CONFLICT_PENALTY
                raw = max(0.0, min(1.0, raw))
            if raw >= floor:
                out[slot] = raw
        return out

    def _memo(self, entry_id: str, direct: dict[int, float]) -> None:
        memo = self._direct_memo
        memo[entry_id] = direct
        memo.move_to_end(entry_id)
        while len(memo) > self.pool.capacity:
            memo.popitem(last=False)

    def _candidates(self, item: _Item) -> Iterable[int]:
        """Watches that could match ``item``: a story close to the item or to one of its
        neighbours, or a story whose neighbourhood holds the item or one of its neighbours;
        plus the query-only watches the item's words could satisfy."""
        if not self.use_index:
            out = set(self._story_slots)
        else:
            out = {s for s, sim in item.direct.items() if sim >= self._floor}
            nb_slots = self._nb_slots
            out.update(nb_slots.get(item.entry.id, ()))
            anchor_slots = self._anchor_slots
            for _, p in item.neighbours:
                out.update(nb_slots.get(p.id, ()))
                out.update(anchor_slots.get(p.id, ()))
                # the stories close to a neighbour, as found when it was matched (a pooled
                # item this monitor never matched, e.g. observed at start-up, has none)
                direct = self._direct_memo.get(p.id, {})
                out.update(s for s, sim in direct.items() if sim >= self._floor)
        index = self._index
        if index.has_queries:
            if item.qdoc is None:
                item.qdoc = QueryDoc.from_entry(item.entry)
            out.update(index.query_candidates(item.qdoc.body_set))
        if self._reported_slots is not None:
            out &= self._reported_slots
        return out

    def _eligible(self, st: _WatchState, item: _Item) -> bool:
        """The watch may report the item at all: not the story itself, from one of the watch's
        sources, and matching its query when it has one."""
        entry = item.entry
        if st.story is not None and entry.id == st.story.id:
            return False
        if st.watch.sources is not None and entry.source not in st.watch.sources:
            return False
        if st.query is not None:
            if item.qdoc is None:
                item.qdoc = QueryDoc.from_entry(entry)
            if not st.query.matches(item.qdoc):
                return False
        return True

    def _judge(self, st: _WatchState, item: _Item) -> tuple[float, tuple[str, ...]] | None:
        entry = item.entry
        if entry.id in st.reported or not self._eligible(st, item):
            return None
        if st.story_vectors is None or st.story_features is None or st.story is None:
            assert st.query is not None and item.qdoc is not None
            terms = st.query.matched_terms(item.qdoc)
            return 1.0, (f"matches query: {', '.join(terms)}",)
        raw = self._neighbourhood(st, entry.id, item.vectors, item.neighbours)
        value = calibrate(raw)
        if value < st.threshold:
            return value, ()  # no reasons: not reported (see match's pass 3)
        story_vectors = st.story_vectors
        via: list[str] = []  # titles; another outlet's copy of this item is not news
        for _, p in item.neighbours:
            if p.id == st.story.id or p.title in via or p.title == entry.title:
                continue
            if self._base(st.story.id, story_vectors, p.id, p.vectors) >= st.raw_threshold:
                via.append(p.title)
        return value, self._reasons(st, item, value, via)

    def _reasons(
        self, st: _WatchState, item: _Item, value: float, via: list[str]
    ) -> tuple[str, ...]:
        assert st.story_features is not None and st.story_vectors is not None
        reasons = explain(
            st.story_features,
            st.story_vectors,
            item.features,
            item.vectors,
            idf=self.stats.idf,
            score_value=value,
            threshold=st.threshold,
            via=via,
        )
        if st.query is not None and item.qdoc is not None:
            terms = st.query.matched_terms(item.qdoc)
            if terms:
                reasons = (f"matches query: {', '.join(terms)}", *reasons)
        return reasons

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
