"""Sources' poll state: syncing with the config, what is due, successful and failed polls
(successful ones buffered and written in batches), and per-host Retry-After holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from feedservice.model import Source, Validators
from feedservice.store._base import StoreBase, _translated
from feedservice.store.schema import UTCDateTime, entries, hosts, sources


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
class PollState:
    """What polling a source needs from the store: where to ask, its validators and how
    many times in a row it failed (for the backoff)."""

    name: str
    url: str | None
    validators: Validators
    failures: int


def host_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    return (urlsplit(url).hostname or "").lower() or None


class SourcesMixin(StoreBase):
    """Sources, their poll state (successful polls buffered) and per-host holds."""

    #: Buffered successful polls are written in one batch once this many are waiting.
    POLL_BATCH = 512

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Successful polls (record_poll) wait here and are written in one executemany:
        # a pass of thousands of 304s then costs one transaction, not thousands (issue 3,
        # warm pass). Every other method writes them first, so no reader ever sees stale
        # state. A crash loses at most the buffered records: those sources are polled
        # again (a re-fetch, never a lost entry: entries are committed before).
        self._pending_polls: list[dict[str, Any]] = []
        self._pending_names: set[str] = set()
        # one UPDATE per shape of record (which optional values it sets), built once
        self._poll_updates: dict[tuple[str, ...], Any] = {}

    def _flush_polls(self) -> None:
        """Write the buffered successful polls (StoreBase's hook): one transaction, one
        executemany per shape of record.

        A poll that finishes after its host said Retry-After waits for the host too
        (concurrent polls of one host otherwise race past the hold): the holds are read in
        the same transaction, one query for the whole batch (usually no row), instead of a
        subquery per updated row."""
        if not self._pending_polls:
            return
        pending, self._pending_polls = self._pending_polls, []
        self._pending_names.clear()
        try:
            with self.engine.begin() as conn:
                earliest = min(p["b_next"] for p in pending)
                held: dict[str, datetime] = {
                    name: until for name, until in conn.execute(_HELD_SOURCES, {"b_at": earliest})
                }
                shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for p in pending:
                    until = held.get(p["b_name"])
                    if until is not None and until > p["b_next"]:
                        p["b_next"] = until
                        p["b_reason"] = "retry-after"
                    shapes.setdefault(tuple(p), []).append(p)
                for shape, rows in shapes.items():
                    stmt = self._poll_updates.get(shape)
                    if stmt is None:
                        stmt = self._poll_updates[shape] = _poll_update_statement(shape)
                    conn.execute(stmt, rows)
        except SQLAlchemyError:
            # keep them for the next try (a busy database), unless newer records came in
            self._pending_polls[:0] = pending
            self._pending_names.update(p["b_name"] for p in pending)
            raise

    # --- sources --------------------------------------------------------------------------

    @_translated
    def sync_sources(self, configured: Sequence[Source], *, now: datetime) -> None:
        """Make the sources table match the config: new sources are due now; a changed
        URL resets the poll state; sources no longer configured are dropped (their
        entries stay, unpublished)."""
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
        return [p.name for p in self.due_polls(now, force=force, limit=limit)]

    @_translated
    def due_polls(
        self, now: datetime, *, force: bool = False, limit: int | None = None
    ) -> list[PollState]:
        """What :meth:`due_sources` names, with what polling each needs (URL, validators,
        failures): one query for a whole pass, not one per source (issue 3, warm pass).
        A pass is the only writer of its sources' poll state, so what is read here stays
        true until each source's own poll."""
        q = _POLL_STATE.where(sources.c.gone.is_(False))
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
            return [_poll_state(row) for row in conn.execute(q)]

    @_translated
    def poll_state(self, name: str) -> PollState | None:
        """One source's :class:`PollState` (a poll outside a pass, a failure's count)."""
        with self._connect(flush=name in self._pending_names) as conn:
            row = conn.execute(_POLL_STATE_BY_NAME, {"b_name": name}).first()
        return _poll_state(row) if row is not None else None

    @_translated
    def source_state(self, name: str) -> SourceState | None:
        """The source's health and poll state, with its number of stored entries."""
        with self._connect(flush=name in self._pending_names) as conn:
            row = conn.execute(_SOURCE_BY_NAME, {"b_name": name}).first()
            if row is None:
                return None
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
        (e.g. a story file that did not parse) stays visible as the last error. Optional
        values not given (validators, URL, title, link) keep the stored ones.

        Called only after the entries are stored, so a crash in between re-fetches
        instead of losing entries (issue 3: validators are saved after the entries)."""
        record: dict[str, Any] = {
            "b_name": name,
            "b_now": now,
            "b_status": status,
            "b_warning": _storable(warning),
            "b_next": next_check_at,
            "b_reason": reason,
        }
        # only the values given are bound: the record's keys pick its UPDATE (_flush_polls)
        if validators is not None:
            record["b_etag"] = _storable(validators.etag)
            record["b_last_modified"] = _storable(validators.last_modified)
            record["b_body_hash"] = validators.body_hash
        if url is not None:
            record["b_url"] = _storable(url)
            record["b_host"] = _storable(host_of(url))
        if title is not None:
            record["b_title"] = _storable(title)
        if link is not None:
            record["b_link"] = _storable(link)
        self._pending_polls.append(record)
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
            "last_error": _storable(error),
            "failures": sources.c.failures + 1,
            "next_check_at": next_check_at,
            "next_check_reason": reason,
            "gone": gone,
        }
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


_SOURCE_BY_NAME = select(sources).where(sources.c.name == bindparam("b_name"))


def _storable(text: str | None) -> str | None:
    """``text`` as UTF-8 can carry it. A lone surrogate (bytes decoded with
    ``surrogateescape`` upstream) becomes "?": SQLite refuses it, and in a batched flush one
    such value would fail every buffered poll record of the pass, not just its own."""
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


# what a poll needs of its source (PollState), for a pass (due_polls) or one source
_POLL_STATE = select(
    sources.c.name,
    sources.c.url,
    sources.c.etag,
    sources.c.last_modified,
    sources.c.body_hash,
    sources.c.failures,
)
_POLL_STATE_BY_NAME = _POLL_STATE.where(sources.c.name == bindparam("b_name"))


def _poll_state(row: Row[*tuple[Any, ...]]) -> PollState:
    return PollState(
        row.name,
        row.url,
        Validators(row.etag, row.last_modified, row.body_hash),
        int(row.failures),
    )


# sources whose host holds them back (Retry-After) past a time: usually none
_HELD_SOURCES = (
    select(sources.c.name, hosts.c.retry_after_until)
    .select_from(sources.join(hosts, hosts.c.host == sources.c.host))
    .where(hosts.c.retry_after_until > bindparam("b_at", type_=UTCDateTime))
)

# record key -> the column it sets; b_name, b_now and b_next are set apart
_POLL_COLUMNS = {
    "b_status": "last_status",
    "b_warning": "last_error",
    "b_reason": "next_check_reason",
    "b_etag": "etag",
    "b_last_modified": "last_modified",
    "b_body_hash": "body_hash",
    "b_url": "url",
    "b_host": "host",
    "b_title": "title",
    "b_link": "link",
}


def _poll_update_statement(shape: tuple[str, ...]) -> Any:
    """The UPDATE behind :meth:`Store.record_poll` for records with the keys ``shape``,
    for executemany over buffered polls: it sets only what the records carry, so a pass
    of 304s binds a few plain values per source (no CASE, no subquery per row)."""
    values: dict[str, Any] = {
        "last_checked_at": bindparam("b_now", type_=UTCDateTime),
        "last_success_at": bindparam("b_now", type_=UTCDateTime),
        "failures": 0,
        "next_check_at": bindparam("b_next", type_=UTCDateTime),
    }
    for key in shape:
        column = _POLL_COLUMNS.get(key)
        if column is not None:
            values[column] = bindparam(key, type_=sources.c[column].type)
    return update(sources).where(sources.c.name == bindparam("b_name")).values(**values)


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
