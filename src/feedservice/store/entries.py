"""Entries by (source, id) and the story files they were read from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, cast, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Row

from feedservice.model import Entry
from feedservice.store._base import StoreBase, _chunks, _translated
from feedservice.store.schema import ENTRY_SEQ_KEY, entries, meta, story_files

# What an Entry is read from: every column but the monitor's saved analysis (about 1.4 KB a
# row, read only by iter_analyses), so reading entries costs what it did before v4
ENTRY_COLUMNS = tuple(c for c in entries.c if c.name not in ("analysis", "analysis_tag"))


@dataclass(frozen=True, slots=True)
class SavedAnalysis:
    """A stored entry's key and title, and the monitor's analysis of it when one was saved
    under the tag asked for (else None: the caller analyses the entry again)."""

    source: str
    id: str
    title: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    new: tuple[Entry, ...]
    changed: tuple[Entry, ...]
    unchanged: int


class EntriesMixin(StoreBase):
    """Entries by (source, id) and the story files they came from."""

    # --- entries --------------------------------------------------------------------------

    @_translated
    def upsert_entries(
        self,
        source: str,
        batch: Sequence[Entry],
        *,
        now: datetime,
        raw_hashes: Mapping[str, str] | None = None,
    ) -> UpsertResult:
        """Insert new entries and update changed ones, by (source, id).

        ``updated`` moves only when ``content_hash`` changes; an undated entry keeps the
        time it was first seen as ``published`` (stable across restarts). ``raw_hashes``
        (entry id -> hash of the item as parsed) is stored beside the entries for
        :meth:`raw_hashes`. Each new and each changed entry gets the next change sequence
        (:meth:`last_entry_seq`), the new ones first, in the order of the result."""
        if not batch:
            return UpsertResult((), (), 0)
        hashes: Mapping[str, str] = raw_hashes or {}
        new: list[Entry] = []
        changed: list[Entry] = []
        unchanged = 0
        with self._tx() as conn:
            existing: dict[str, Any] = {}
            ids = [e.id for e in batch]
            for chunk in _chunks(ids):
                for found in conn.execute(_EXISTING, {"b_source": source, "b_ids": list(chunk)}):
                    existing[found.id] = found
            inserts: list[dict[str, Any]] = []
            updates: list[tuple[str, dict[str, Any]]] = []
            rehash: list[dict[str, Any]] = []
            for entry in batch:
                raw_hash = hashes.get(entry.id)
                row = existing.get(entry.id)
                if row is None:
                    values = _entry_values(entry, first_seen=now)
                    values["raw_hash"] = raw_hash
                    inserts.append(values)
                    new.append(entry)
                    continue
                if row.content_hash == entry.content_hash:
                    unchanged += 1
                    if raw_hash is not None and row.raw_hash != raw_hash:
                        rehash.append({"b_id": entry.id, "b_raw_hash": raw_hash})
                    continue
                published = entry.published if entry.dated else row.published
                updated = entry.updated if entry.dated and entry.updated > row.updated else now
                stored = replace(entry, published=published, updated=max(updated, published))
                values = _entry_values(stored, first_seen=None)
                values["raw_hash"] = raw_hash
                # the analysis was of the old content
                values["analysis"] = values["analysis_tag"] = None
                updates.append((entry.id, values))
                changed.append(stored)
            if inserts or updates:
                # numbered as the result lists them (new, then changed): the order a pass
                # hands them to the monitor, and so the order a catch-up replays them in
                seq = self._take_seqs(conn, len(inserts) + len(updates))
                for values in inserts:
                    seq += 1
                    values["seq"] = seq
                for entry_id, values in updates:
                    seq += 1
                    values["seq"] = seq
                    conn.execute(
                        update(entries)
                        .where(and_(entries.c.source == source, entries.c.id == entry_id))
                        .values(**values)
                    )
            if inserts:
                conn.execute(_INSERT, inserts)
            if rehash:
                for row in rehash:
                    row["b_source"] = source
                conn.execute(_REHASH, rehash)
        return UpsertResult(tuple(new), tuple(changed), unchanged)

    @_translated
    def raw_hashes(self, source: str) -> dict[str, str | None]:
        """Entry id -> the stored hash of the item as parsed (None when unknown) for every
        entry of ``source``: an item whose hash is unchanged need not be normalised again."""
        with self._connect() as conn:
            rows = conn.execute(_RAW_HASHES, {"b_source": source})
            return {row.id: row.raw_hash for row in rows}

    @_translated
    def delete_entries(self, source: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        removed = 0
        with self._tx() as conn:
            for chunk in _chunks(ids):
                done = conn.execute(
                    delete(entries).where(and_(entries.c.source == source, entries.c.id.in_(chunk)))
                )
                removed += int(done.rowcount or 0)
        # the monitor's mark needs no care here: SQLite gives a new row the largest pk + 1,
        # so with the newest entries gone the next one reuses a pk at or below the mark, but
        # its change sequence is new (:meth:`last_entry_seq`), above the mark
        return removed

    @_translated
    def latest_entries(self, source_names: Sequence[str], limit: int) -> list[Entry]:
        """Newest first by published, then id, so the order is deterministic."""
        order = (entries.c.published.desc(), entries.c.id)
        # the newest rows are picked by their keys in the covering index first, then only
        # they are read: sorting every candidate row whole (about 2 KB of HTML each) made a
        # 500-source feed cost tens of milliseconds per rendering (issue 3, mixed pass)
        newest = (
            select(entries.c.pk)
            .where(entries.c.source.in_(list(source_names)))
            .order_by(*order)
            .limit(limit)
        )
        q = select(*ENTRY_COLUMNS).where(entries.c.pk.in_(newest)).order_by(*order)
        with self._connect() as conn:
            return [_row_entry(r) for r in conn.execute(q)]

    @_translated
    def entry_by_link(self, link: str) -> Entry | None:
        with self._connect() as conn:
            q = select(*ENTRY_COLUMNS).where(entries.c.link == link).limit(1)
            row = conn.execute(q).first()
        return None if row is None else _row_entry(row)

    @_translated
    def get_entries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Entry]:
        """(source, id) -> Entry for the keys that exist."""
        found: dict[tuple[str, str], Entry] = {}
        by_source: dict[str, list[str]] = {}
        for source, entry_id in keys:
            by_source.setdefault(source, []).append(entry_id)
        with self._connect() as conn:
            # by source, so SQLite looks each one up in the (source, id) index: a row-value
            # IN ((source, id), ...) scanned the whole table (SQLite 3.40), once per watch feed
            for source, ids in by_source.items():
                for chunk in _chunks(ids):
                    q = select(*ENTRY_COLUMNS).where(
                        and_(entries.c.source == source, entries.c.id.in_(chunk))
                    )
                    for row in conn.execute(q):
                        found[(row.source, row.id)] = _row_entry(row)
        return found

    @_translated
    def iter_entries(
        self,
        *,
        batch: int = 1000,
        newest: int | None = None,
        upto: int | None = None,
    ) -> Iterator[list[Entry]]:
        """Every stored entry (or only the ``newest`` N), oldest first, in batches: the
        monitor's backlog pass and its pool of recent items after a restart. ``upto``: only
        entries stored, and last changed, up to the sequence :meth:`last_entry_seq` returned
        then (the ones changed since come from :meth:`iter_entries_since`)."""
        last = 0 if newest is None else self._newest_after(newest, upto)
        return self._entry_pages("pk", last, upto, batch)

    @_translated
    def iter_entries_since(
        self, after: int, *, upto: int | None = None, batch: int = 1000
    ) -> Iterator[list[Entry]]:
        """The entries stored or changed after the sequence ``after`` (and up to ``upto``),
        in batches, in the order they were stored: the monitor's catch-up on what it may
        never have matched (:meth:`monitored_upto`). An entry changed since appears once,
        as it is now."""
        return self._entry_pages("seq", after, upto, batch)

    def _entry_pages(
        self, key: str, last: int, upto: int | None, batch: int
    ) -> Iterator[list[Entry]]:
        """Entries in ``batch``-sized pages by the column ``key`` (pk or seq), after ``last``,
        of those up to the sequence ``upto``."""
        column = entries.c[key]
        while True:
            q = select(*ENTRY_COLUMNS).where(column > last)
            if upto is not None:
                q = q.where(entries.c.seq <= upto)
            with self._connect() as conn:
                rows = conn.execute(q.order_by(column).limit(batch)).all()
            if not rows:
                return
            last = getattr(rows[-1], key)
            yield [_row_entry(r) for r in rows]

    @_translated
    def save_analyses(self, rows: Sequence[tuple[str, str, bytes | None]], *, tag: str) -> None:
        """Store the monitor's analysis of each (source, id, analysis) entry under ``tag``
        (None clears it); entries that are not stored are skipped."""
        params = [
            {
                "b_source": source,
                "b_id": entry_id,
                "b_data": data,
                "b_tag": None if data is None else tag,
            }
            for source, entry_id, data in rows
        ]
        if not params:
            return
        with self._tx() as conn:
            conn.execute(_SAVE_ANALYSIS, params)

    @_translated
    def iter_analyses(
        self, *, newest: int, tag: str, batch: int = 1000, upto: int | None = None
    ) -> Iterator[list[SavedAnalysis]]:
        """The ``newest`` stored entries (of those up to ``upto``, as in :meth:`iter_entries`),
        oldest first, in batches: their key, title and the analysis saved under ``tag``
        (None when there is none, or one under another tag). Reads neither the content nor
        the other columns: a restart's pool of recent items."""
        last = self._newest_after(newest, upto)
        hi = _MAX_SEQ if upto is None else upto
        while True:
            with self._connect() as conn:
                rows = conn.execute(_ANALYSES, {"b_last": last, "b_hi": hi, "b_batch": batch}).all()
            if not rows:
                return
            last = rows[-1].pk
            yield [
                SavedAnalysis(
                    r.source,
                    r.id,
                    r.title,
                    None if r.analysis is None or r.analysis_tag != tag else bytes(r.analysis),
                )
                for r in rows
            ]

    @_translated
    def prune_analyses(self, *, keep: int) -> int:
        """Clear the saved analyses of all but the ``keep`` newest entries: only those are
        restored after a restart, so the others are not worth their bytes (about 1.4 KB an
        entry). Walks only the entries stored since the last call. Returns how many."""
        with self._tx() as conn:
            row = conn.execute(
                select(entries.c.pk).order_by(entries.c.pk.desc()).offset(keep).limit(1)
            ).first()
            if row is None:
                return 0
            cutoff = int(row[0])
            done = conn.execute(select(meta.c.value).where(meta.c.key == _PRUNED_KEY)).first()
            mark = 0 if done is None else int(done[0])
            if cutoff <= mark:
                return 0
            cleared = conn.execute(
                update(entries)
                .where(
                    and_(
                        entries.c.pk > mark,
                        entries.c.pk <= cutoff,
                        entries.c.analysis.is_not(None),
                    )
                )
                .values(analysis=None, analysis_tag=None)
            )
            self._set_meta(conn, _PRUNED_KEY, str(cutoff))
            return int(cleared.rowcount or 0)

    def _newest_after(self, newest: int, upto: int | None) -> int:
        """The pk after which the ``newest`` entries (of those up to the sequence ``upto``)
        begin; 0 for all."""
        q = select(entries.c.pk)
        if upto is not None:
            # seq + 0, not seq: on the seq index SQLite picked every entry up to the mark and
            # sorted them all by pk (at 100,000 entries about twice the CPU time, and growing
            # with the table); this walks back by pk over only the newest, as before v5
            q = q.where(entries.c.seq + 0 <= upto)
        with self._connect() as conn:
            row = conn.execute(q.order_by(entries.c.pk.desc()).offset(newest).limit(1)).first()
        return 0 if row is None else int(row[0])

    @_translated
    def last_entry_seq(self) -> int:
        """The last change sequence given to an entry (0 before the first): a mark for
        ``upto`` (:meth:`iter_entries`) and ``after`` (:meth:`iter_entries_since`) that
        stands for every entry stored, and every change to one, until now."""
        with self._connect() as conn:
            return int(conn.execute(_LAST_SEQ).scalar_one())

    @_translated
    def monitored_upto(self) -> tuple[int | None, int]:
        """(the mark :meth:`set_monitored_upto` left, or None if it never ran; the
        :meth:`last_entry_seq`), in one read: the entries stored or changed after the mark
        (:meth:`iter_entries_since`) were perhaps never matched by the monitor (the process
        died in between)."""
        q = select(
            select(meta.c.value).where(meta.c.key == _MONITORED_KEY).scalar_subquery(),
            _LAST_SEQ.scalar_subquery(),
        )
        with self._connect() as conn:
            mark, last = conn.execute(q).one()
        return (None if mark is None else int(mark)), int(last)

    @_translated
    def set_monitored_upto(self, seq: int | None = None) -> None:
        """Remember that the monitor has matched every entry, as it was, stored or changed up
        to the sequence ``seq`` (None: up to the last now, :meth:`last_entry_seq`). Call it
        only after the matches and notifications of those entries are stored: a crash in
        between then matches them again (matches and the outbox are idempotent), never skips
        them."""
        with self._tx() as conn:
            if seq is None:
                seq = int(conn.execute(_LAST_SEQ).scalar_one())
            self._set_meta(conn, _MONITORED_KEY, str(seq))

    @_translated
    def count_entries(self, *, upto: int | None = None) -> int:
        """How many entries are stored (of those up to the sequence ``upto``)."""
        q = select(func.count()).select_from(entries)
        if upto is not None:
            q = q.where(entries.c.seq <= upto)
        with self._connect() as conn:
            return int(conn.execute(q).scalar_one())

    def _take_seqs(self, conn: Connection, n: int) -> int:
        """Reserve the next ``n`` change sequences in the caller's transaction; returns the
        one before the first. The counter lives in meta, not in max(seq) + 1: that would give
        a removed newest entry's number again, at or below the monitor's mark."""
        last = int(conn.execute(_LAST_SEQ).scalar_one())
        # a statement built once, not _set_meta's: this runs for every changed feed
        if conn.execute(_SET_SEQ, {"b_value": str(last + n)}).rowcount == 0:
            conn.execute(insert(meta).values(key=ENTRY_SEQ_KEY, value=str(last + n)))
        return last

    # --- story files ----------------------------------------------------------------------

    @_translated
    def story_files(self, source: str) -> dict[str, tuple[int, int, str | None, str | None]]:
        """path -> (mtime_ns, size, entry_id or None, the parse error or None)."""
        with self._connect() as conn:
            rows = conn.execute(select(story_files).where(story_files.c.source == source))
            return {r.path: (r.mtime_ns, r.size, r.entry_id, r.error) for r in rows}

    @_translated
    def save_story_files(
        self,
        source: str,
        seen: Sequence[tuple[str, int, int, str | None, str | None]],
        removed: Sequence[str],
    ) -> None:
        """Record (path, mtime_ns, size, entry_id, error) for files read this poll."""
        with self._tx() as conn:
            paths = [s[0] for s in seen] + list(removed)
            for chunk in _chunks(paths):
                conn.execute(
                    delete(story_files).where(
                        and_(story_files.c.source == source, story_files.c.path.in_(chunk))
                    )
                )
            if seen:
                conn.execute(
                    insert(story_files),
                    [
                        {
                            "source": source,
                            "path": p,
                            "mtime_ns": m,
                            "size": s,
                            "entry_id": e,
                            "error": err,
                        }
                        for p, m, s, e, err in seen
                    ],
                )


# Statements built once: building and cache-keying a new one per call cost more than
# running it, for the one or two rows a changed feed brings (issue 3, mixed pass).
_RAW_HASHES = select(entries.c.id, entries.c.raw_hash).where(
    entries.c.source == bindparam("b_source")
)
_EXISTING = select(
    entries.c.id,
    entries.c.content_hash,
    entries.c.published,
    entries.c.updated,
    entries.c.raw_hash,
).where(
    and_(
        entries.c.source == bindparam("b_source"),
        entries.c.id.in_(bindparam("b_ids", expanding=True)),
    )
)
_INSERT = insert(entries)
_MAX_SEQ = 2**63 - 1
_PRUNED_KEY = "store.analyses_pruned_upto"  # entries up to this pk hold no saved analysis
# the monitor matched every entry stored or changed up to this sequence (entries.seq; a pk
# before schema v5, when every entry's seq became its pk)
_MONITORED_KEY = "monitor.matched_upto"
# the last sequence given; the largest stored one in a database whose counter was lost
_LAST_SEQ = select(
    func.coalesce(
        select(cast(meta.c.value, Integer)).where(meta.c.key == ENTRY_SEQ_KEY).scalar_subquery(),
        select(func.max(entries.c.seq)).scalar_subquery(),
        0,
    )
)
_SET_SEQ = update(meta).where(meta.c.key == ENTRY_SEQ_KEY).values(value=bindparam("b_value"))
_SAVE_ANALYSIS = (
    update(entries)
    .where(and_(entries.c.source == bindparam("b_source"), entries.c.id == bindparam("b_id")))
    .values(analysis=bindparam("b_data"), analysis_tag=bindparam("b_tag"))
)
_ANALYSES = (
    select(
        entries.c.pk,
        entries.c.source,
        entries.c.id,
        entries.c.title,
        entries.c.analysis,
        entries.c.analysis_tag,
    )
    .where(and_(entries.c.pk > bindparam("b_last"), entries.c.seq <= bindparam("b_hi")))
    .order_by(entries.c.pk)
    .limit(bindparam("b_batch"))
)
_REHASH = (
    update(entries)
    .where(and_(entries.c.source == bindparam("b_source"), entries.c.id == bindparam("b_id")))
    .values(raw_hash=bindparam("b_raw_hash"))
)


def _entry_values(entry: Entry, *, first_seen: datetime | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "source": entry.source,
        "id": entry.id,
        "title": entry.title,
        "link": entry.link,
        "published": entry.published,
        "updated": entry.updated,
        "dated": entry.dated,
        "author": entry.author,
        "summary": entry.summary,
        "content_html": entry.content_html,
        "content_hash": entry.content_hash,
        "tags": json.dumps(list(entry.tags)),
        "entities": json.dumps(list(entry.entities)),
        "keywords": json.dumps(list(entry.keywords)),
        "story_path": entry.story_path,
    }
    if first_seen is not None:
        values["first_seen"] = first_seen
    return values


def _row_entry(row: Row[Any]) -> Entry:
    return Entry(
        id=row.id,
        source=row.source,
        title=row.title,
        link=row.link,
        published=row.published,
        updated=row.updated,
        summary=row.summary,
        content_html=row.content_html,
        content_hash=row.content_hash,
        dated=bool(row.dated),
        author=row.author,
        tags=tuple(json.loads(row.tags)),
        entities=tuple(json.loads(row.entities)),
        keywords=tuple(json.loads(row.keywords)),
        story_path=row.story_path,
    )
