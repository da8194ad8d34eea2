"""Matches of watches, keyed by (watch, source, entry id), with their near-duplicates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from feedservice.model import Entry, Match
from feedservice.store._base import StoreBase, _translated
from feedservice.store.entries import ENTRY_COLUMNS, _row_entry
from feedservice.store.schema import entries, matches

RECENT_SIGNATURES = 2000  # matches a new match of a watch is compared with (near duplicates)


@dataclass(frozen=True, slots=True)
class MatchRow:
    """A match to store: the entry's source, its MinHash signature, the (source, id) of
    near-duplicates from other outlets ("also reported by") and the notification to queue
    if the match is new: (idempotency key, targets, payload)."""

    match: Match
    source: str
    signature: list[int] | None = None
    also: tuple[tuple[str, str], ...] = ()
    notify: tuple[str, tuple[str, ...], dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class StoredMatch:
    match: Match
    source: str
    matched_at: datetime
    entry: Entry
    also: tuple[tuple[str, str], ...] = ()  # (source, id) of near-duplicates


class MatchesMixin(StoreBase):
    """Matches by (watch, source, entry id), their MinHash signatures and near-duplicates."""

    @_translated
    def add_matches(self, found: Sequence[MatchRow], *, now: datetime) -> list[MatchRow]:
        """Store matches; returns only the ones that are new, so a watch never reports the
        same entry twice, across restarts. A new match's notification (``notify``) is queued
        in the same transaction: a crash cannot keep the match and lose its notification
        (matching the entry again would find the match not new, and queue nothing)."""
        fresh: list[MatchRow] = []
        with self._tx() as conn:
            for row in found:
                m = row.match
                if self._match_exists(conn, m.watch, row.source, m.entry_id):
                    continue
                conn.execute(
                    insert(matches).values(
                        watch=m.watch,
                        source=row.source,
                        entry_id=m.entry_id,
                        score=m.score,
                        reasons=json.dumps(list(m.reasons)),
                        also=json.dumps([list(pair) for pair in row.also]),
                        signature=None if row.signature is None else json.dumps(row.signature),
                        matched_at=now,
                    )
                )
                if row.notify is not None:
                    key, targets, payload = row.notify
                    self._enqueue_in(conn, key, targets, payload, now=now)
                fresh.append(row)
        return fresh

    @staticmethod
    def _match_exists(conn: Connection, watch: str, source: str, entry_id: str) -> bool:
        return (
            conn.execute(
                select(matches.c.entry_id).where(
                    and_(
                        matches.c.watch == watch,
                        matches.c.source == source,
                        matches.c.entry_id == entry_id,
                    )
                )
            ).first()
            is not None
        )

    @_translated
    def add_also(self, watch: str, source: str, entry_id: str, also: tuple[str, str]) -> bool:
        """Attach a near-duplicate (another outlet's copy, as (source, id)) to an existing
        match. Returns False when it was attached already."""
        where = and_(
            matches.c.watch == watch, matches.c.source == source, matches.c.entry_id == entry_id
        )
        with self._tx() as conn:
            row = conn.execute(select(matches.c.also).where(where)).first()
            if row is None:
                return False
            pairs = [tuple(p) for p in json.loads(row[0])]
            if also in pairs:
                return False
            pairs.append(also)
            conn.execute(
                update(matches).where(where).values(also=json.dumps([list(p) for p in pairs]))
            )
        return True

    @_translated
    def match_signatures(
        self, watch: str, limit: int = RECENT_SIGNATURES
    ) -> list[tuple[str, str, list[int]]]:
        """(source, entry_id, signature) of the watch's ``limit`` latest matches, for
        near-duplicate grouping: outlets republish a wire story within days, so the newest
        matches are the ones a copy can join, and the work per new match stays bounded as a
        watch's history grows."""
        with self._connect() as conn:
            rows = conn.execute(
                select(matches.c.source, matches.c.entry_id, matches.c.signature)
                .where(and_(matches.c.watch == watch, matches.c.signature.is_not(None)))
                .order_by(matches.c.matched_at.desc())
                .limit(limit)
            ).all()
        return [(r.source, r.entry_id, json.loads(r.signature)) for r in rows]

    @_translated
    def is_matched(self, watch: str, source: str, entry_id: str) -> bool:
        with self._connect() as conn:
            return self._match_exists(conn, watch, source, entry_id)

    @_translated
    def strongest_matches(
        self, watch: str, *, min_score: float, limit: int
    ) -> list[tuple[str, float]]:
        """(entry id, score) of the watch's ``limit`` highest-scoring matches at or above
        ``min_score``, best first (the monitor's anchors after a restart)."""
        q = (
            select(matches.c.entry_id, matches.c.score)
            .where(and_(matches.c.watch == watch, matches.c.score >= min_score))
            .order_by(matches.c.score.desc(), matches.c.entry_id)
            .limit(limit)
        )
        with self._connect() as conn:
            return [(str(row.entry_id), float(row.score)) for row in conn.execute(q)]

    @_translated
    def watch_matches(self, watch: str, limit: int) -> list[StoredMatch]:
        """The watch's matches with their entries, newest entry first."""
        q = (
            select(matches, *ENTRY_COLUMNS)
            .join(
                entries,
                and_(entries.c.source == matches.c.source, entries.c.id == matches.c.entry_id),
            )
            .where(matches.c.watch == watch)
            .order_by(entries.c.published.desc(), entries.c.id)
            .limit(limit)
        )
        out: list[StoredMatch] = []
        with self._connect() as conn:
            for row in conn.execute(q):
                also = tuple((str(a), str(b)) for a, b in json.loads(row.also))
                m = Match(
                    watch=row.watch,
                    entry_id=row.entry_id,
                    score=float(row.score),
                    reasons=tuple(json.loads(row.reasons)),
                    also=tuple(entry_id for _, entry_id in also),
                )
                out.append(StoredMatch(m, row.source, row.matched_at, _row_entry(row), also))
        return out
