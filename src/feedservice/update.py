"""poll_source(): fetch -> parse -> normalise -> store for one source, and when to poll next.

One source's failure is recorded on that source (last error, consecutive failures,
next retry) and returned in the report; it never raises past this module, so the
other sources go on (issue 2, "never stops the other sources").
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import random
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp

from feedservice import __version__
from feedservice.errors import FeedServiceError, FetchError, ParseError, StorageError
from feedservice.fetch import FetchOptions, fetch_feed
from feedservice.model import Entry, FetchStatus, RawItem, Source
from feedservice.normalise import normalise_items, stable_id, story_slug
from feedservice.parse import is_story_file, parse_feed, parse_story
from feedservice.politeness import adaptive_interval, backoff_delay, next_check
from feedservice.store import PollState, Store, host_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Plain values from the config that shape polling (update never reads Config)."""

    min_interval: float = 60.0
    max_interval: float = 86400.0
    max_backoff: float = 86400.0
    jitter: float = 0.1
    max_entries: int = 500
    permalink_base: str | None = None  # base_url + "stories/"; a story's page lives below it


@dataclass(frozen=True, slots=True)
class PollReport:
    source: str
    outcome: str  # "updated" | "not_modified" | "gone" | "error"
    next_check_at: datetime
    reason: str
    new: tuple[Entry, ...] = ()
    changed: tuple[Entry, ...] = ()
    removed: int = 0
    errors: tuple[str, ...] = ()
    status: int | None = None

    @property
    def touched(self) -> bool:
        """Whether published feeds may need rewriting."""
        return bool(self.new or self.changed or self.removed)


async def poll_source(
    source: Source,
    *,
    store: Store,
    session: aiohttp.ClientSession,
    fetch_options: FetchOptions,
    policy: PollPolicy,
    now: datetime,
    rng: random.Random,
    executor: Executor | None = None,
    state: PollState | None = None,
) -> PollReport:
    """Poll one source and record the outcome on it.

    ``executor`` (a process pool, owned by the caller) runs parsing and normalising, the
    CPU-bound steps, off the event loop; without one they run inline. ``state``: the
    source's poll state as the pass read it (:meth:`Store.due_polls`); without it, it is
    read from the store.

    Raises StorageError only when the store itself fails (then nothing was recorded);
    every source-level problem is recorded and reported instead.
    """
    if source.directory is not None:
        return _poll_directory(
            source, source.directory, store=store, policy=policy, now=now, rng=rng
        )
    return await _poll_url(
        source,
        store=store,
        session=session,
        fetch_options=fetch_options,
        policy=policy,
        now=now,
        rng=rng,
        executor=executor,
        state=state,
    )


def _permalink_base(policy: PollPolicy, source: str) -> str | None:
    return None if policy.permalink_base is None else f"{policy.permalink_base}{source}/"


def _schedule(
    source: Source,
    policy: PollPolicy,
    now: datetime,
    rng: random.Random,
    *,
    ttl: float | None = None,
    max_age: float | None = None,
    interval: float | None = None,
) -> tuple[datetime, str]:
    return next_check(
        now,
        interval=source.interval if interval is None else interval,
        ttl=ttl,
        max_age=max_age,
        retry_after=None,
        min_interval=min(policy.min_interval, source.interval),
        max_interval=policy.max_interval,
        jitter=policy.jitter,
        rng=rng,
    )


def _poll_directory(
    source: Source,
    directory: Path,
    *,
    store: Store,
    policy: PollPolicy,
    now: datetime,
    rng: random.Random,
) -> PollReport:
    """Read new and changed story files; removed files take their entries with them.

    A malformed file is reported with its path and skipped; an entry it produced
    earlier is kept (nothing is lost because someone saved a half-written file)."""
    known = store.story_files(source.name)
    errors: list[str] = []
    current: dict[str, tuple[int, int]] = {}
    try:
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if not is_story_file(filename):
                    continue
                full = Path(dirpath) / filename
                try:
                    st = full.stat()
                except OSError:
                    continue  # vanished between listing and stat
                rel = full.relative_to(directory).as_posix()
                if not _is_utf8_name(rel):
                    # its path holds surrogate escapes that SQLite and the ids cannot encode:
                    # one such file failed the whole folder on every poll
                    shown = os.fsencode(full).decode("utf-8", "replace")
                    errors.append(f"{shown}: skipped: the file name is not valid UTF-8")
                    continue
                current[rel] = (st.st_mtime_ns, st.st_size)
    except OSError as exc:
        errors.append(f"{directory}: cannot list the story folder: {exc}")
    if not current and errors:
        return _record_failure(
            source, store=store, policy=policy, now=now, rng=rng, error=errors[0], status=None
        )

    items: list[RawItem] = []
    item_paths: list[str] = []
    seen: list[tuple[str, int, int, str | None, str | None]] = []
    clashes = _slug_clashes(current, known)
    for rel, (mtime_ns, size) in current.items():
        previous = known.get(rel)
        if rel in clashes:
            message = (
                f"{directory / rel}: has the same permalink as {directory / clashes[rel]}; "
                "expected one story per name, rename one of them"
            )
            errors.append(message)
            seen.append((rel, mtime_ns, size, previous[2] if previous else None, message))
            continue
        if previous is not None and previous[0] == mtime_ns and previous[1] == size:
            if previous[3]:
                errors.append(previous[3])  # still malformed: keep saying so
            continue
        full = directory / rel
        try:
            item = parse_story(full.read_bytes(), path=rel)
        except ParseError as exc:
            where = f"{full}:{exc.line}" if exc.line else str(full)
            message = f"{where}: {exc.detail}"
            log.warning("source %s: skipped story file %s", source.name, message)
            errors.append(message)
            seen.append((rel, mtime_ns, size, previous[2] if previous else None, message))
            continue
        except OSError as exc:
            errors.append(f"{full}: cannot read: {exc}")
            continue
        items.append(item)
        item_paths.append(rel)

    entries = _stagger_undated(
        normalise_items(
            items, source=source.name, now=now, permalink_base=_permalink_base(policy, source.name)
        )
    )
    by_path = {e.story_path: e for e in entries}
    for rel in item_paths:
        mtime_ns, size = current[rel]
        entry = by_path.get(rel)
        seen.append((rel, mtime_ns, size, entry.id if entry else None, None))

    result = store.upsert_entries(source.name, entries, now=now)
    removed_paths = [p for p in known if p not in current]
    # an entry whose file is gone leaves the feeds, unless another file still yields its id
    live_ids = {e.id for e in entries} | {
        known[p][2] for p in known if p in current and known[p][2] is not None
    }
    gone_ids = [
        eid for p in removed_paths if (eid := known[p][2]) is not None and eid not in live_ids
    ]
    removed = store.delete_entries(source.name, gone_ids) if gone_ids else 0
    store.save_story_files(source.name, seen, removed_paths)

    next_at, reason = _schedule(source, policy, now, rng)
    # the poll succeeded, but the user must see which files were skipped
    warning = None
    if errors:
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        warning = "; ".join(errors[:5]) + more
    store.record_poll(source.name, now=now, next_check_at=next_at, reason=reason, warning=warning)
    return PollReport(
        source=source.name,
        outcome="updated" if (result.new or result.changed or removed) else "not_modified",
        next_check_at=next_at,
        reason=reason,
        new=result.new,
        changed=result.changed,
        removed=removed,
        errors=tuple(errors),
    )


def _is_utf8_name(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _slug_clashes(
    current: Mapping[str, object], known: Mapping[str, tuple[int, int, str | None, str | None]]
) -> dict[str, str]:
    """Story files whose permalink slug another file already takes: {path: the other path}.

    Only ``a.txt`` beside ``a.md`` can clash (:func:`story_slug` hashes every folded path).
    The file that already has an entry keeps the slug, else the first by path; the other is
    skipped with an error, and an entry it made earlier is kept."""
    owner: dict[str, str] = {}
    clashes: dict[str, str] = {}
    # a file with a stored entry first, then by path: the choice never moves between polls
    for rel in sorted(current, key=lambda p: (p not in known or known[p][2] is None, p)):
        slug = story_slug(rel)
        if slug in owner:
            clashes[rel] = owner[slug]
        else:
            owner[slug] = rel
    return clashes


async def _poll_url(
    source: Source,
    *,
    store: Store,
    session: aiohttp.ClientSession,
    fetch_options: FetchOptions,
    policy: PollPolicy,
    now: datetime,
    rng: random.Random,
    executor: Executor | None = None,
    state: PollState | None = None,
) -> PollReport:
    if state is None:
        state = store.poll_state(source.name)
    if state is None:
        raise StorageError(f"source {source.name!r} is not in the store; call sync_sources first")
    url = state.url or source.url or ""
    try:
        result = await fetch_feed(
            session, url, validators=state.validators, options=fetch_options, source=source.name
        )
    except FetchError as exc:
        if exc.retry_after is not None:
            until = now + timedelta(seconds=exc.retry_after)
            store.record_failure(
                source.name,
                now=now,
                error=str(exc),
                next_check_at=until,
                reason="retry-after",
                status=exc.status,
            )
            host = host_of(url)
            if host:
                store.defer_host(host, until)
            return PollReport(
                source.name, "error", until, "retry-after", errors=(str(exc),), status=exc.status
            )
        return _record_failure(
            source,
            store=store,
            policy=policy,
            now=now,
            rng=rng,
            error=str(exc),
            status=exc.status,
            failures=state.failures,
        )

    if result.status is FetchStatus.GONE:
        # 410: stop polling for good and say so (issue 3, item 3)
        far = now + timedelta(days=3650)
        store.record_failure(
            source.name,
            now=now,
            error=f"{result.http_status or 410} Gone: the publisher removed this feed; "
            "polling stopped (edit its url in the config to resume)",
            next_check_at=far,
            reason="gone",
            status=result.http_status,
            gone=True,
        )
        return PollReport(source.name, "gone", far, "gone", status=result.http_status)

    if result.status is FetchStatus.NOT_MODIFIED:
        next_at, reason = _schedule(source, policy, now, rng, max_age=result.max_age)
        store.record_poll(
            source.name,
            now=now,
            next_check_at=next_at,
            reason=reason,
            status=result.http_status,
            validators=result.validators,
            url=result.permanent_url,
        )
        return PollReport(source.name, "not_modified", next_at, reason, status=result.http_status)

    # Only new and edited items are normalised: an item whose parsed form hashes as at the
    # last poll is stored as it would normalise now (a changed feed usually adds one item of
    # 20, and normalising is the costliest step; issue 3).
    known = store.raw_hashes(source.name)
    work = functools.partial(
        parse_and_normalise,
        result.body or b"",
        url=result.final_url or url,
        content_type=result.content_type,
        max_items=policy.max_entries,
        source=source.name,
        now=now,
        known=known,
    )
    if executor is None:
        parsed = work()
    else:
        parsed = await asyncio.get_running_loop().run_in_executor(executor, work)
    if parsed.error is not None:
        return _record_failure(
            source,
            store=store,
            policy=policy,
            now=now,
            rng=rng,
            error=parsed.error,
            status=result.http_status,
            failures=state.failures,
        )
    feed = parsed
    entries = list(parsed.entries)
    stored = store.upsert_entries(source.name, entries, now=now, raw_hashes=parsed.hashes)
    interval = source.interval
    if source.adaptive:
        interval = adaptive_interval(
            list(parsed.dates),
            interval=source.interval,
            min_interval=policy.min_interval,
            max_interval=policy.max_interval,
        )
    next_at, reason = _schedule(
        source, policy, now, rng, ttl=feed.ttl, max_age=result.max_age, interval=interval
    )
    # validators are saved only now, after the entries are stored (issue 3, item 2)
    store.record_poll(
        source.name,
        now=now,
        next_check_at=next_at,
        reason=reason,
        status=result.http_status,
        validators=result.validators,
        url=result.permanent_url,
        title=feed.title,
        link=feed.link,
    )
    return PollReport(
        source=source.name,
        outcome="updated" if (stored.new or stored.changed) else "not_modified",
        next_check_at=next_at,
        reason=reason,
        new=stored.new,
        changed=stored.changed,
        status=result.http_status,
    )


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """What :func:`parse_and_normalise` hands back (picklable: it may come from a worker
    process). ``error`` is the ParseError's message when the body is no feed."""

    entries: tuple[Entry, ...] = ()
    hashes: dict[str, str] = field(default_factory=dict)
    dates: tuple[datetime, ...] = ()
    title: str | None = None
    link: str | None = None
    ttl: float | None = None
    error: str | None = None


def parse_and_normalise(
    body: bytes,
    *,
    url: str,
    content_type: str | None,
    max_items: int,
    source: str,
    now: datetime,
    known: Mapping[str, str | None],
) -> ParsedFeed:
    """Parse a feed body and normalise the items that are new or changed since the last
    poll (``known``: entry id -> the stored raw hash). A pure function of its arguments,
    so it can run in a worker process; it never raises on the body's content."""
    try:
        feed = parse_feed(body, url=url, content_type=content_type, max_items=max_items)
    except ParseError as exc:
        return ParsedFeed(error=str(exc))
    firsts: list[tuple[str, RawItem]] = []
    hashes: dict[str, str] = {}
    for item in feed.items:
        entry_id = stable_id(item, source=source)
        if entry_id in hashes:
            continue  # a repeated id: the first one wins, as in normalise_items
        hashes[entry_id] = raw_item_hash(item)
        firsts.append((entry_id, item))
    fresh = [item for entry_id, item in firsts if known.get(entry_id) != hashes[entry_id]]
    entries = normalise_items(fresh, source=source, now=now)
    dates = tuple(d for item in feed.items if (d := item.published or item.updated) is not None)
    return ParsedFeed(
        entries=tuple(entries),
        hashes=hashes,
        dates=dates,
        title=feed.title,
        link=feed.link,
        ttl=feed.ttl,
    )


def raw_item_hash(item: RawItem) -> str:
    """A hash of an item as parsed, salted with the feedservice version so that an upgrade
    (which may normalise differently) normalises every item once more."""
    text = f"{__version__}\n{item!r}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _stagger_undated(entries: list[Entry]) -> list[Entry]:
    """Undated stories first seen in one poll get dates a second apart, in file order, so
    every reader orders them the same way (the W3C validator warns about entries sharing
    one atom:updated). The store keeps these first-seen dates across restarts."""
    out: list[Entry] = []
    step = 0
    for entry in entries:
        if not entry.dated:
            when = entry.published - timedelta(seconds=step)
            entry = replace(entry, published=when, updated=when)
            step += 1
        out.append(entry)
    return out


def _record_failure(
    source: Source,
    *,
    store: Store,
    policy: PollPolicy,
    now: datetime,
    rng: random.Random,
    error: str,
    status: int | None,
    failures: int | None = None,
) -> PollReport:
    """``failures``: the source's count before this one, when the caller has it."""
    if failures is None:
        state = store.poll_state(source.name)
        failures = state.failures if state else 0
    failures += 1
    # full jitter (issue 3): failed sources never retry in the same minute
    delay = backoff_delay(
        failures, base=min(policy.min_interval, source.interval), cap=policy.max_backoff, rng=rng
    )
    next_at = now + timedelta(seconds=delay)
    store.record_failure(
        source.name, now=now, error=error, next_check_at=next_at, reason="backoff", status=status
    )
    log.warning("source %s: %s (retry in %.0fs)", source.name, error, delay)
    return PollReport(source.name, "error", next_at, "backoff", errors=(error,), status=status)


def record_crash(
    source: Source,
    *,
    store: Store,
    policy: PollPolicy,
    now: datetime,
    rng: random.Random,
    error: BaseException,
) -> PollReport:
    """Record an unexpected exception from a poll as the source's failure (a bug must
    not stop the daemon or the other sources)."""
    kind = "" if isinstance(error, FeedServiceError) else f"internal error {type(error).__name__}: "
    return _record_failure(
        source, store=store, policy=policy, now=now, rng=rng, error=f"{kind}{error}", status=None
    )
