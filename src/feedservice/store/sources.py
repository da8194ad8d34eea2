"""Sources' poll state: syncing with the config, what is due, successful and failed polls
(successful ones buffered and written in batches), and per-host Retry-After holds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import (
    Boolean,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    true,
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


def host_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    return (urlsplit(url).hostname or "").lower() or None


class SourcesMixin(StoreBase):
    """Sources, their poll state (successful polls buffered) and per-host holds."""

    #: Buffered successful polls are written in one batch once this many are waiting.
    POLL_BATCH = 512
    #: How long prefetched poll states (``source_state(count=False)``) may be handed out.
    STATE_CACHE_SECONDS = 30.0

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
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
        """Write the buffered successful polls in one executemany (StoreBase's hook)."""
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
