"""The only place with SQL: sources' poll state, entries, story files, matches, the outbox.

SQLAlchemy Core over SQLite (WAL) by default; any SQLAlchemy URL (PostgreSQL when
scaling out) works. Every public method raises :class:`StorageError` when the
database cannot be read or written; SQLAlchemy's exceptions never leave this package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import (
    Boolean,
    Engine,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from feedservice.errors import StorageError
from feedservice.model import Entry, Match, Source, Validators
from feedservice.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    UTCDateTime,
    entries,
    hosts,
    matches,
    meta,
    outbox,
    sources,
    story_files,
)

__all__ = [
    "SCHEMA_VERSION",
    "MatchRow",
    "OutboxItem",
    "SourceState",
    "Store",
    "StoredMatch",
    "UpsertResult",
    "open_store",
]

P = ParamSpec("P")
T = TypeVar("T")

# SQLite caps bound parameters per statement; stay well below it.
_CHUNK = 500
RECENT_SIGNATURES = 2000  # matches a new match of a watch is compared with (near duplicates)


@dataclass(frozen=True, slots=True)
class SourceState:
    """A source's poll state, as ``feedservice status`` shows it."""

    name: str
    url: str | None
    next_check_at: datetime
    next_check_reason: str
    last_checked_at: datetime | None
    last_success_at: datetime | None
    last_status: int | None
    last_error: str | None
    failures: int
    gone: bool
    validators: Validators
    title: str | None
    link: str | None
    entries: int = 0


@dataclass(frozen=True, slots=True)
class UpsertResult:
    new: tuple[Entry, ...]
    changed: tuple[Entry, ...]
    unchanged: int


@dataclass(frozen=True, slots=True)
class MatchRow:
    """A match to store: the entry's source, its MinHash signature and the (source, id) of
    near-duplicates from other outlets ("also reported by")."""

    match: Match
    source: str
    signature: list[int] | None = None
    also: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredMatch:
    match: Match
    source: str
    matched_at: datetime
    entry: Entry
    also: tuple[tuple[str, str], ...] = ()  # (source, id) of near-duplicates


@dataclass(frozen=True, slots=True)
class OutboxItem:
    pk: int
    key: str
    target: str
    payload: dict[str, Any]
    attempts: int


def open_store(url_or_path: str | Path) -> Store:
    """Open (creating and migrating as needed) the database at a path or SQLAlchemy URL.

    Raises StorageError when it cannot be opened or its schema is newer than this code.
    """
    url = str(url_or_path)
    if "://" not in url:
        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{path.parent}: cannot create the data directory: {exc}") from exc
        url = f"sqlite:///{path}"
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ValueError) as exc:
        raise StorageError(f"{url}: cannot open database: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    store = Store(engine)
    store.migrate()
    return store


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (the server) never block the writer (the poller), and a crash mid-write
    # leaves the previous state intact.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _translated(fn: Callable[P, T]) -> Callable[P, T]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise StorageError(f"{fn.__name__}: {exc.__class__.__name__}: {exc}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def host_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    return (urlsplit(url).hostname or "").lower() or None


class Store:
    """All persistence. Methods are synchronous and short; callers batch their writes."""

    #: Buffered successful polls are written in one batch once this many are waiting.
    POLL_BATCH = 512
    #: How long prefetched poll states (``source_state(count=False)``) may be handed out.
    STATE_CACHE_SECONDS = 30.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Successful polls (record_poll) wait here and are written in one executemany:
        # a pass of thousands of 304s then costs one transaction, not thousands (issue 3,
        # warm pass). Every other method writes them first, so no reader ever sees stale
        # state. A crash loses at most the buffered records: those sources are polled
        # again (a re-fetch, never a lost entry: entries are committed before).
        self._pending_polls: list[dict[str, Any]] = []
        self._pending_names: set[str] = set()
        self._poll_update = _poll_update_statement()
        # The poller asks for one source's state per poll: one query for every source
        # answers a whole pass (thousands of single-row queries cost more than the 304s
        # they prepare). Each cached state is handed out once and the cache is dropped on
        # any other write to the sources and after STATE_CACHE_SECONDS.
        self._state_cache: dict[str, SourceState] = {}
        self._state_cache_at = 0.0

    def _flush_polls(self) -> None:
        if not self._pending_polls:
            return
        pending, self._pending_polls = self._pending_polls, []
        self._pending_names.clear()
        try:
            with self.engine.begin() as conn:
                conn.execute(self._poll_update, pending)
        except SQLAlchemyError:
            # keep them for the next try (a busy database), unless newer records came in
            self._pending_polls[:0] = pending
            self._pending_names.update(p["b_name"] for p in pending)
            raise

    @contextmanager
    def _tx(self, *, flush: bool = False) -> Iterator[Connection]:
        """A transaction; ``flush``: write the buffered polls first (for anything that
        reads or writes the sources' poll state)."""
        if flush:
            self._flush_polls()
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self, *, flush: bool = False) -> Iterator[Connection]:
        if flush:
            self._flush_polls()
        with self.engine.connect() as conn:
            yield conn

    @_translated
    def flush(self) -> None:
        """Write the buffered successful polls now (close() does it too)."""
        self._flush_polls()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.engine.dispose()

    # --- schema ---------------------------------------------------------------------------

    @_translated
    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; refuse a newer database. Returns the version."""
        with self._tx() as conn:
            meta.create(conn, checkfirst=True)
            row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"database schema v{version} is newer than this feedservice "
                    f"(v{SCHEMA_VERSION}); upgrade feedservice"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
            self._set_meta(conn, "schema_version", str(version))
        return version

    @_translated
    def get_meta(self, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
        return None if row is None else str(row[0])

    @_translated
    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as conn:
            self._set_meta(conn, key, value)

    @staticmethod
    def _set_meta(conn: Connection, key: str, value: str) -> None:
        done = conn.execute(update(meta).where(meta.c.key == key).values(value=value))
        if done.rowcount == 0:
            conn.execute(insert(meta).values(key=key, value=value))

    # --- sources --------------------------------------------------------------------------

    @_translated
    def sync_sources(self, configured: Sequence[Source], *, now: datetime) -> None:
        """Make the sources table match the config: new sources are due now; a changed
        URL resets the poll state; sources no longer configured are dropped (their
        entries stay, unpublished)."""
        self._state_cache.clear()
        with self._tx(flush=True) as conn:
            rows = {r.name: r for r in conn.execute(select(sources))}
            for src in configured:
                location = src.url if src.url is not None else str(src.directory)
                row = rows.pop(src.name, None)
                if row is None:
                    conn.execute(
                        insert(sources).values(
                            name=src.name,
                            url=location,
                            configured_url=location,
                            host=host_of(src.url),
                            next_check_at=now,
                            next_check_reason="new",
                            failures=0,
                            gone=False,
                        )
                    )
                elif row.configured_url != location:
                    conn.execute(
                        update(sources)
                        .where(sources.c.name == src.name)
                        .values(
                            url=location,
                            configured_url=location,
                            host=host_of(src.url),
                            etag=None,
                            last_modified=None,
                            body_hash=None,
                            next_check_at=now,
                            next_check_reason="config changed",
                            failures=0,
                            gone=False,
                        )
                    )
            if rows:
                conn.execute(delete(sources).where(sources.c.name.in_(list(rows))))

    @_translated
    def due_sources(
        self, now: datetime, *, force: bool = False, limit: int | None = None
    ) -> list[str]:
        """Names of the sources to poll now, oldest due first. ``force`` takes every source
        except those that are gone or under a server's Retry-After."""
        q = select(sources.c.name).where(sources.c.gone.is_(False))
        if force:
            q = q.where(
                or_(
                    sources.c.next_check_reason != "retry-after",
                    sources.c.next_check_at <= now,
                )
            )
        else:
            q = q.where(sources.c.next_check_at <= now)
        q = q.order_by(sources.c.next_check_at, sources.c.name)
        if limit is not None:
            q = q.limit(limit)
        with self._connect(flush=True) as conn:
            return [r[0] for r in conn.execute(q)]

    @_translated
    def source_state(self, name: str, *, count: bool = True) -> SourceState | None:
        """The source's poll state; ``count=False`` skips counting its entries (``entries``
        is then 0) and may answer from a state prefetched for the whole pass: the poller
        needs only the URL, validators and failures."""
        if not count:
            cached = self._state_cache.pop(name, None)
            if (
                cached is not None
                and time.monotonic() - self._state_cache_at < self.STATE_CACHE_SECONDS
            ):
                return cached
            if name not in self._pending_names:
                with self._connect(flush=True) as conn:
                    self._state_cache = {
                        r.name: _source_state(r, 0) for r in conn.execute(select(sources))
                    }
                self._state_cache_at = time.monotonic()
                return self._state_cache.pop(name, None)
        with self._connect(flush=name in self._pending_names) as conn:
            row = conn.execute(_SOURCE_BY_NAME, {"b_name": name}).first()
            if row is None:
                return None
            n = 0
            if count:
                n = conn.execute(
                    select(func.count()).select_from(entries).where(entries.c.source == name)
                ).scalar_one()
        return _source_state(row, n)

    @_translated
    def source_states(self) -> list[SourceState]:
        with self._connect(flush=True) as conn:
            counts: dict[str, int] = {
                str(source): int(n)
                for source, n in conn.execute(
                    select(entries.c.source, func.count()).group_by(entries.c.source)
                )
            }
            rows = conn.execute(select(sources).order_by(sources.c.name)).all()
        return [_source_state(r, int(counts.get(r.name, 0))) for r in rows]

    @_translated
    def record_poll(
        self,
        name: str,
        *,
        now: datetime,
        next_check_at: datetime,
        reason: str,
        status: int | None = None,
        validators: Validators | None = None,
        url: str | None = None,
        title: str | None = None,
        link: str | None = None,
        warning: str | None = None,
    ) -> None:
        """A successful poll (200 or 304): failures reset, validators saved; ``warning``
        (e.g. a story file that did not parse) stays visible as the last error.

        Called only after the entries are stored, so a crash in between re-fetches
        instead of losing entries (issue 3: validators are saved after the entries)."""
        self._pending_polls.append(
            {
                "b_name": name,
                "b_now": now,
                "b_status": status,
                "b_warning": warning,
                "b_next": next_check_at,
                "b_reason": reason,
                "b_has_v": validators is not None,
                "b_etag": validators.etag if validators else None,
                "b_last_modified": validators.last_modified if validators else None,
                "b_body_hash": validators.body_hash if validators else None,
                "b_url": url,
                "b_host": host_of(url) if url is not None else None,
                "b_title": title,
                "b_link": link,
            }
        )
        self._pending_names.add(name)
        if len(self._pending_polls) >= self.POLL_BATCH:
            self._flush_polls()

    @_translated
    def record_failure(
        self,
        name: str,
        *,
        now: datetime,
        error: str,
        next_check_at: datetime,
        reason: str,
        status: int | None = None,
        gone: bool = False,
    ) -> int:
        """A failed poll: the error is kept for ``status``; returns the failure count."""
        values: dict[str, Any] = {
            "last_checked_at": now,
            "last_status": status,
            "last_error": error,
            "failures": sources.c.failures + 1,
            "next_check_at": next_check_at,
            "next_check_reason": reason,
            "gone": gone,
        }
        self._state_cache.pop(name, None)
        with self._tx(flush=True) as conn:
            self._respect_host_hold(conn, name, values)
            conn.execute(update(sources).where(sources.c.name == name).values(**values))
            count = conn.execute(select(sources.c.failures).where(sources.c.name == name)).scalar()
        return int(count or 0)

    @staticmethod
    def _respect_host_hold(conn: Connection, name: str, values: dict[str, Any]) -> None:
        """A poll that finishes after its host said Retry-After waits for the host too
        (concurrent polls of one host otherwise race past the hold)."""
        hold = conn.execute(
            select(hosts.c.retry_after_until)
            .select_from(hosts.join(sources, sources.c.host == hosts.c.host))
            .where(sources.c.name == name)
        ).scalar()
        if hold is not None and hold > values["next_check_at"] and not values.get("gone"):
            values["next_check_at"] = hold
            values["next_check_reason"] = "retry-after"

    @_translated
    def defer_host(self, host: str, until: datetime) -> int:
        """Retry-After from one host holds for every source on it (issue 3, item 3)."""
        self._state_cache.clear()
        with self._tx(flush=True) as conn:
            done = conn.execute(
                update(hosts).where(hosts.c.host == host).values(retry_after_until=until)
            )
            if done.rowcount == 0:
                conn.execute(insert(hosts).values(host=host, retry_after_until=until))
            done = conn.execute(
                update(sources)
                .where(and_(sources.c.host == host, sources.c.next_check_at < until))
                .values(next_check_at=until, next_check_reason="retry-after")
            )
        return int(done.rowcount or 0)

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
        :meth:`raw_hashes`."""
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
                for found in conn.execute(
                    select(
                        entries.c.id,
                        entries.c.content_hash,
                        entries.c.published,
                        entries.c.updated,
                        entries.c.raw_hash,
                    ).where(and_(entries.c.source == source, entries.c.id.in_(chunk)))
                ):
                    existing[found.id] = found
            inserts: list[dict[str, Any]] = []
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
                conn.execute(
                    update(entries)
                    .where(and_(entries.c.source == source, entries.c.id == entry.id))
                    .values(**values)
                )
                changed.append(stored)
            if inserts:
                conn.execute(insert(entries), inserts)
            if rehash:
                conn.execute(
                    update(entries)
                    .where(and_(entries.c.source == source, entries.c.id == bindparam("b_id")))
                    .values(raw_hash=bindparam("b_raw_hash")),
                    rehash,
                )
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
        return removed

    @_translated
    def latest_entries(self, source_names: Sequence[str], limit: int) -> list[Entry]:
        """Newest first by published, then id, so the order is deterministic."""
        q = (
            select(entries)
            .where(entries.c.source.in_(list(source_names)))
            .order_by(entries.c.published.desc(), entries.c.id)
            .limit(limit)
        )
        with self._connect() as conn:
            return [_row_entry(r) for r in conn.execute(q)]

    @_translated
    def entry_by_link(self, link: str) -> Entry | None:
        with self._connect() as conn:
            row = conn.execute(select(entries).where(entries.c.link == link).limit(1)).first()
        return None if row is None else _row_entry(row)

    @_translated
    def get_entries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Entry]:
        """(source, id) -> Entry for the keys that exist."""
        found: dict[tuple[str, str], Entry] = {}
        with self._connect() as conn:
            for chunk in _chunks(list(keys)):
                q = select(entries).where(tuple_(entries.c.source, entries.c.id).in_(chunk))
                for row in conn.execute(q):
                    found[(row.source, row.id)] = _row_entry(row)
        return found

    @_translated
    def iter_entries(
        self, *, batch: int = 1000, newest: int | None = None
    ) -> Iterator[list[Entry]]:
        """Every stored entry (or only the ``newest`` N), oldest first, in batches: the
        monitor's backlog pass and its pool of recent items after a restart."""
        last = 0
        if newest is not None:
            with self._connect() as conn:
                row = conn.execute(
                    select(entries.c.pk).order_by(entries.c.pk.desc()).offset(newest).limit(1)
                ).first()
            last = 0 if row is None else int(row[0])
        while True:
            with self._connect() as conn:
                rows = conn.execute(
                    select(entries).where(entries.c.pk > last).order_by(entries.c.pk).limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1].pk
            yield [_row_entry(r) for r in rows]

    @_translated
    def count_entries(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())

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

    # --- matches --------------------------------------------------------------------------

    @_translated
    def add_matches(self, found: Sequence[MatchRow], *, now: datetime) -> list[MatchRow]:
        """Store matches; returns only the ones that are new, so a watch never reports the
        same entry twice, across restarts."""
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
    def watch_matches(self, watch: str, limit: int) -> list[StoredMatch]:
        """The watch's matches with their entries, newest entry first."""
        q = (
            select(matches, entries)
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

    # --- outbox ---------------------------------------------------------------------------

    @_translated
    def enqueue(
        self, key: str, targets: Sequence[str], payload: dict[str, Any], *, now: datetime
    ) -> int:
        """Queue one notification per target; a (key, target) already queued is left alone,
        so a delivered match is never sent again. Returns how many were queued."""
        queued = 0
        body = json.dumps(payload, sort_keys=True)
        with self._tx() as conn:
            for target in targets:
                exists = conn.execute(
                    select(outbox.c.pk).where(and_(outbox.c.key == key, outbox.c.target == target))
                ).first()
                if exists:
                    continue
                conn.execute(
                    insert(outbox).values(
                        key=key,
                        target=target,
                        payload=body,
                        attempts=0,
                        next_attempt_at=now,
                        failed=False,
                        created_at=now,
                    )
                )
                queued += 1
        return queued

    @_translated
    def claim_due(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxItem]:
        """Due, undelivered items, leased until ``lease_until`` so a second worker skips them.

        A crash mid-delivery leaves the lease to expire: the item is tried again (at least
        once delivery; receivers dedupe by the idempotency key)."""
        with self._tx() as conn:
            rows = conn.execute(
                select(outbox)
                .where(
                    and_(
                        outbox.c.delivered_at.is_(None),
                        outbox.c.failed.is_(False),
                        outbox.c.next_attempt_at <= now,
                        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now),
                    )
                )
                .order_by(outbox.c.next_attempt_at, outbox.c.pk)
                .limit(limit)
            ).all()
            if rows:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.pk.in_([r.pk for r in rows]))
                    .values(claimed_until=lease_until)
                )
        return [OutboxItem(r.pk, r.key, r.target, json.loads(r.payload), r.attempts) for r in rows]

    @_translated
    def release_claims(self) -> int:
        """Void every lease: called at start-up, when no delivery of ours can be in flight,
        so items a killed process had claimed are retried at once."""
        with self._tx() as conn:
            done = conn.execute(
                update(outbox)
                .where(and_(outbox.c.claimed_until.is_not(None), outbox.c.delivered_at.is_(None)))
                .values(claimed_until=None)
            )
        return int(done.rowcount or 0)

    @_translated
    def mark_delivered(self, pk: int, *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.pk == pk)
                .values(
                    delivered_at=now,
                    attempts=outbox.c.attempts + 1,
                    claimed_until=None,
                    last_error=None,
                )
            )

    @_translated
    def mark_attempt_failed(
        self, pk: int, *, error: str, next_attempt_at: datetime, permanent: bool
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.pk == pk)
                .values(
                    attempts=outbox.c.attempts + 1,
                    last_error=error,
                    next_attempt_at=next_attempt_at,
                    claimed_until=None,
                    failed=permanent,
                )
            )

    @_translated
    def outbox_counts(self) -> dict[str, int]:
        """pending / delivered / failed counts, for status and tests."""
        with self._connect() as conn:
            pending = conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(and_(outbox.c.delivered_at.is_(None), outbox.c.failed.is_(False)))
            ).scalar_one()
            delivered = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_not(None))
            ).scalar_one()
            failed = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.failed.is_(True))
            ).scalar_one()
        return {"pending": int(pending), "delivered": int(delivered), "failed": int(failed)}


_RAW_HASHES = select(entries.c.id, entries.c.raw_hash).where(
    entries.c.source == bindparam("b_source")
)
_SOURCE_BY_NAME = select(sources).where(sources.c.name == bindparam("b_name"))


def _poll_update_statement() -> Any:
    """The UPDATE behind :meth:`Store.record_poll`, for executemany over buffered polls.

    A poll that finishes after its host said Retry-After waits for the host too
    (concurrent polls of one host otherwise race past the hold): the hold is read in the
    same statement. Optional values (validators, URL, title, link) keep the stored ones
    when not given."""
    hold = select(hosts.c.retry_after_until).where(hosts.c.host == sources.c.host).scalar_subquery()
    nxt = bindparam("b_next", type_=UTCDateTime)
    held = and_(hold.is_not(None), hold > nxt)
    has_v = bindparam("b_has_v", type_=Boolean)
    url = bindparam("b_url", type_=sources.c.url.type)
    return (
        update(sources)
        .where(sources.c.name == bindparam("b_name"))
        .values(
            last_checked_at=bindparam("b_now", type_=UTCDateTime),
            last_success_at=bindparam("b_now", type_=UTCDateTime),
            last_status=bindparam("b_status", type_=sources.c.last_status.type),
            last_error=bindparam("b_warning", type_=sources.c.last_error.type),
            failures=0,
            next_check_at=case((held, hold), else_=nxt),
            next_check_reason=case(
                (held, "retry-after"),
                else_=bindparam("b_reason", type_=sources.c.next_check_reason.type),
            ),
            etag=case(
                (has_v == true(), bindparam("b_etag", type_=sources.c.etag.type)),
                else_=sources.c.etag,
            ),
            last_modified=case(
                (has_v == true(), bindparam("b_last_modified", type_=sources.c.last_modified.type)),
                else_=sources.c.last_modified,
            ),
            body_hash=case(
                (has_v == true(), bindparam("b_body_hash", type_=sources.c.body_hash.type)),
                else_=sources.c.body_hash,
            ),
            url=func.coalesce(url, sources.c.url),
            host=case(
                (url.is_not(None), bindparam("b_host", type_=sources.c.host.type)),
                else_=sources.c.host,
            ),
            title=func.coalesce(bindparam("b_title", type_=sources.c.title.type), sources.c.title),
            link=func.coalesce(bindparam("b_link", type_=sources.c.link.type), sources.c.link),
        )
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


def _source_state(row: Row[Any], count: int) -> SourceState:
    return SourceState(
        name=row.name,
        url=row.url,
        next_check_at=row.next_check_at,
        next_check_reason=row.next_check_reason,
        last_checked_at=row.last_checked_at,
        last_success_at=row.last_success_at,
        last_status=row.last_status,
        last_error=row.last_error,
        failures=int(row.failures),
        gone=bool(row.gone),
        validators=Validators(row.etag, row.last_modified, row.body_hash),
        title=row.title,
        link=row.link,
        entries=count,
    )
