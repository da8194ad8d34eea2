"""The composition root: builds the pipeline from a Config.

``scheduler``, ``server`` and ``cli`` call only this module. One pass
(:meth:`App.run_pass`) polls the due sources concurrently, publishes the feeds
whose entries changed, runs the monitor over the new entries and delivers
notifications from the outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import aiohttp

from feedservice.config import Config
from feedservice.datalock import DataLock
from feedservice.errors import (
    ConfigError,
    FeedServiceError,
    NotifyError,
    ParseError,
    PublishError,
    QueryError,
    StorageError,
)
from feedservice.fetch import FetchOptions, make_session
from feedservice.model import Entry, FeedSpec, Match, NotifyTarget, Watch
from feedservice.monitor import (
    ANALYSIS_TAG,
    ANCHOR_KEEP,
    ANCHOR_SCORE,
    CorpusStats,
    Monitor,
    PoolItem,
    WatchInput,
    decode_item,
    encode_item,
    near_duplicate,
    parse_query,
    signature,
)
from feedservice.normalise import normalise_item
from feedservice.notify import Notification, Notifier, build_notifier, retry_delay
from feedservice.parse import parse_story
from feedservice.publish import EntryExtra, FeedView, render_feed, write_if_changed
from feedservice.store import (
    MatchRow,
    OutboxItem,
    PollState,
    SavedAnalysis,
    SourceState,
    Store,
    host_of,
    open_store,
)
from feedservice.update import PollPolicy, PollReport, poll_source, record_crash

log = logging.getLogger(__name__)

OUTBOX_LEASE = timedelta(
    minutes=5
)  # a claimed notification is retried after this if unacknowledged
RETRY_BASE = 30.0  # seconds; notification retries back off exponentially from here...
RETRY_CAP = 600.0  # ...to at most 10 minutes, so a receiver back after an hour hears soon
FLUSH_ENTRIES = 2000  # hand new entries to the monitor in batches of about this many...
FLUSH_SECONDS = 10.0  # ...or this often, republishing the feeds they touched
STATS_KEY = "monitor.corpus_stats"
WATCH_READY_KEY = "monitor.watch_ready.{}"  # set after a watch's first (backlog) pass

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass did, for ``feedservice once`` and the logs."""

    polled: tuple[PollReport, ...] = ()  # slim: without the entries themselves
    written: tuple[Path, ...] = ()
    new: int = 0
    changed: int = 0
    matches: int = 0
    notified: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[PollReport, ...]:
        return tuple(r for r in self.polled if r.outcome == "error")


@dataclass(slots=True)
class _PassState:
    """What one pass has gathered and not yet handed to the monitor or published."""

    pending_watches: set[str] = field(default_factory=set)  # in their first (backlog) pass
    backlog_watches: set[str] = field(default_factory=set)  # backlog matches to publish
    entries: list[Entry] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    unpublished_watches: set[str] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    matched: int = 0
    flushed_at: float = 0.0
    caught_up: bool = True  # every entry stored before ``entries`` was matched

    def add(self, report: PollReport) -> None:
        self.entries += report.new
        self.entries += report.changed
        self.new += len(report.new)
        self.changed += len(report.changed)
        if report.touched:
            self.touched.add(report.source)


class App:
    """Everything a running feedservice needs, built from one Config.

    Use as ``async with App(config) as app:``. ``clock`` and ``rng`` are injected so
    tests control time and jitter.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        progress: Callable[[int, int], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.config = config
        # read_only (`feedservice status`): open the store to read it, beside a running daemon;
        # no data-folder lock, no source sync, no lease release, no HTTP, no monitor
        self.read_only = read_only
        self._data_lock = DataLock(config.service.data_dir)
        self.clock = clock
        self.rng = rng or random.Random()
        self.progress = progress
        self._store: Store | None = None
        self._session: aiohttp.ClientSession | None = None
        self._notifiers: dict[str, Notifier] = {}
        self._executor: ProcessPoolExecutor | None = None
        self._monitor: Monitor | None = None  # built when a pass first needs it
        self._watch_inputs: list[WatchInput] = []
        # the store's change sequence before this pass (Store.last_entry_seq): a monitor built
        # during the pass pools the entries stored up to it, as one built before would have
        self._entries_mark: int | None = None
        # False: entries may be stored that the monitor never matched (this process is new,
        # or a pass failed); the next pass reads the store's mark and catches up first
        self._caught_up = False
        self._stories: dict[str, Entry | None] = {}
        # feed file -> (fingerprint of what it was rendered from, its size, its mtime_ns)
        self._published: dict[Path, tuple[int, int, int]] = {}
        self._stats_dirty = False
        self.watches = {w.name: w for w in config.watches}
        self._lock = asyncio.Lock()
        self._published_since_open = False
        self.sources = {s.name: s for s in config.sources}
        # the host each source's per-host limit counts against (its configured URL)
        self._hosts = {s.name: host_of(s.url) for s in config.sources}
        svc = config.service
        self.policy = PollPolicy(
            min_interval=config.fetch.min_interval,
            max_interval=config.fetch.max_interval,
            max_backoff=config.fetch.max_backoff,
            jitter=svc.jitter,
            max_entries=config.fetch.max_entries_per_feed,
            permalink_base=f"{svc.base_url}stories/",
        )
        self.fetch_options = FetchOptions(
            connect_timeout=config.fetch.connect_timeout,
            read_timeout=config.fetch.read_timeout,
            total_timeout=config.fetch.total_timeout,
            max_body_bytes=config.fetch.max_body_bytes,
        )

    # --- life cycle -----------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise FeedServiceError("App is not open; use 'async with App(config)'")
        return self._store

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise FeedServiceError("App is not open; use 'async with App(config)'")
        return self._session

    def database_location(self) -> str:
        svc = self.config.service
        return svc.database_url or str(svc.data_dir / "feedservice.sqlite3")

    async def open(self) -> None:
        """Take the data folder's lock, open the store (migrating it), register the configured
        sources, start HTTP.

        Raises StorageError when another process holds the data folder (see
        :mod:`feedservice.datalock`) or the database cannot be opened."""
        if self.read_only:
            self._store = open_store(self.database_location())
            return
        self._data_lock.acquire()
        feeds_dir = self.config.service.feeds_dir
        try:
            feeds_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"{feeds_dir}: cannot create the feeds folder: {exc}") from exc
        self._store = open_store(self.database_location())
        self._store.sync_sources(self.config.sources, now=self.clock())
        self._store.release_claims()
        self._session = make_session(
            max_concurrency=self.config.fetch.max_concurrency, per_host=self.config.fetch.per_host
        )
        self._build_notifiers()
        self._build_monitor()
        if self.config.fetch.parse_workers > 0:
            # spawn, not fork: this process already runs an event loop, aiohttp and SQLite
            self._executor = ProcessPoolExecutor(
                max_workers=self.config.fetch.parse_workers,
                mp_context=multiprocessing.get_context("spawn"),
            )

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self._data_lock.release()

    async def __aenter__(self) -> App:
        try:
            await self.open()
        except BaseException:
            await self.close()  # what did open (the session, the store) is closed again
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def drain(self, timeout: float) -> bool:
        """Wait for the pass in flight to finish (graceful shutdown). False on timeout."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout)
        except TimeoutError:
            return False
        self._lock.release()
        return True

    # --- passes ---------------------------------------------------------------------------

    async def run_once(self, *, force: bool = False) -> PassReport:
        """Poll every due source (``force``: every source not gone or under Retry-After),
        publish, monitor, notify. For ``feedservice once`` and cron."""
        return await self.run_pass(force=force, publish_all=True)

    async def dispatch_due(self) -> PassReport:
        """The scheduler's one job: poll what is due; skip if a pass is still running.

        Never raises: a failing store or an unexpected bug is logged, and the next tick
        tries again (the daemon must not die on bad input)."""
        if self._lock.locked():
            return PassReport()
        try:
            report = await self.run_pass(force=False, publish_all=False)
        except Exception:
            log.exception("pass failed; trying again at the next tick")
            return PassReport()
        if report.new or report.changed or report.failed or report.matches or report.notified:
            log.info(
                "polled %d sources: %d new, %d changed, %d failed; %d files written; "
                "%d matches, %d notifications sent",
                len(report.polled),
                report.new,
                report.changed,
                len(report.failed),
                len(report.written),
                report.matches,
                report.notified,
            )
        return report

    async def run_pass(self, *, force: bool, publish_all: bool) -> PassReport:
        async with self._lock:
            now = self.clock()
            due = [p for p in self.store.due_polls(now, force=force) if p.name in self.sources]
            # the first pass after start-up republishes everything (the config may have
            # changed a feed); identical bytes are not rewritten
            if not self._published_since_open:
                publish_all = True
                self._published_since_open = True
            catch_up, last = self._check_monitored()
            if self._watch_inputs and self._monitor is None:
                # a monitor built now pools what it matched before; the rest it catches up on
                if catch_up is not None:
                    self._entries_mark = catch_up[0]
                else:
                    self._entries_mark = last if last is not None else self.store.last_entry_seq()
            pending = {w.name for w in self.config.watches if not self._watch_ready(w)}
            state = _PassState(pending_watches=pending)
            if catch_up is not None:
                self._catch_up(state, *catch_up)
            # until this pass ends well (it may fail with entries stored and not matched),
            # the next pass checks the store's mark again
            self._caught_up = False
            state.backlog_watches = self._begin_monitor_pass(pending)
            try:
                reports = await self.poll_many(due, state)
            except asyncio.CancelledError:
                # Shutting down mid-pass: the entries the finished polls stored must still
                # reach the monitor and the feeds. After a restart they are no longer new,
                # so they would never be matched. This is all synchronous: it completes.
                self._finish_polling(state, publish_all=publish_all)
                raise
            self._finish_polling(state, publish_all=publish_all)
            self._caught_up = state.caught_up
            notified = await self.deliver_notifications()
            return PassReport(
                polled=tuple(reports),
                written=tuple(state.written),
                new=state.new,
                changed=state.changed,
                matches=state.matched,
                notified=notified,
                errors=tuple(state.errors),
            )

    def _finish_polling(self, state: _PassState, *, publish_all: bool) -> None:
        self._flush(state, final=True, publish_all=publish_all)
        self._end_monitor_pass(state)
        # poll records are buffered for speed; a pass ends with them on disk, where
        # `feedservice status` in another process reads them
        self.store.flush()

    async def poll_many(
        self, due: Sequence[str | PollState], state: _PassState | None = None
    ) -> list[PollReport]:
        """Poll the sources (by name, or with the state :meth:`Store.due_polls` read)
        concurrently, oldest due first; one source's failure never stops the others.

        ``max_concurrency`` workers take the sources in turn (one task per worker, not per
        source: a pass of thousands of 304s is mostly per-poll overhead). A worker leaves a
        source whose host already has ``per_host`` polls in flight to the worker that
        finishes one of them, and takes the next: many sources on one slow host then
        neither time out unsent nor hold back the other hosts.

        New entries go to the monitor and touched feeds are republished in batches while
        the pass runs, so memory stays bounded on a cold start of thousands of sources and
        a source that hangs until its timeout does not hold back the others' entries."""
        # outside a pass, its batches move the monitor's mark only if nothing is left behind it
        state = state if state is not None else _PassState(caught_up=self._caught_up)
        loop = asyncio.get_running_loop()
        state.flushed_at = loop.time()
        reports: list[PollReport] = []
        total = len(due)
        todo: deque[str | PollState] = deque(due)
        per_host = max(1, self.config.fetch.per_host)
        busy: dict[str, int] = {}  # host -> polls in flight
        parked: dict[str, deque[str | PollState]] = {}  # host -> sources waiting for a slot

        def host_of_item(item: str | PollState) -> str | None:
            return self._hosts.get(item if isinstance(item, str) else item.name)

        async def poll(item: str | PollState) -> None:
            if isinstance(item, str):
                report = await self.poll_source(item)
            else:
                report = await self.poll_source(item.name, item)
            # keep a slim report: the entries themselves go to the monitor, then away
            reports.append(replace(report, new=(), changed=()) if report.touched else report)
            state.add(report)
            if (
                len(state.entries) >= FLUSH_ENTRIES
                or loop.time() - state.flushed_at >= FLUSH_SECONDS
            ):
                self._flush(state, final=False, publish_all=False)
                state.flushed_at = loop.time()
            if self.progress is not None:
                self.progress(len(reports), total)

        async def worker() -> None:
            while todo:
                item = todo.popleft()
                host = host_of_item(item)
                if host is None:
                    await poll(item)
                    continue
                if busy.get(host, 0) >= per_host:
                    parked.setdefault(host, deque()).append(item)
                    continue
                busy[host] = busy.get(host, 0) + 1
                try:
                    await poll(item)
                    # the slot this poll held goes to the host's next waiting source, so a
                    # parked source always has a worker that will take it
                    waiting = parked.get(host)
                    while waiting:
                        # let what is already runnable go first, as a semaphore's hand-over
                        # would (completions of other polls, their responses)
                        await asyncio.sleep(0)
                        if waiting:
                            await poll(waiting.popleft())
                finally:
                    busy[host] -= 1

        workers = min(max(1, self.config.fetch.max_concurrency), max(1, total))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return reports

    def _flush(self, state: _PassState, *, final: bool, publish_all: bool) -> None:
        """Monitor the entries gathered so far and republish what they touched."""
        fresh_watches: set[str] = set(state.backlog_watches)
        state.backlog_watches.clear()
        if state.entries:
            try:
                changed, matched = self.monitor_entries(
                    state.entries, pending=state.pending_watches
                )
                fresh_watches |= changed
                state.matched += matched
            except StorageError:
                raise
            except Exception as exc:  # the monitor must never stop polling and publishing
                log.exception("monitor failed")
                state.errors.append(f"monitor: {exc}")
                state.caught_up = False  # the next pass tries these once more
            # Every entry stored so far is matched now: a poll's entries reach the pass
            # state with no await after they are stored. Recorded after the matches and
            # their notifications, so a crash in between matches again, never skips.
            if state.caught_up:
                self.store.set_monitored_upto()
            state.entries = []
        state.unpublished_watches |= fresh_watches
        if not (final or state.touched or state.unpublished_watches):
            return
        specs = (
            self.config.feeds
            if publish_all
            else tuple(f for f in self.config.feeds if state.touched & set(f.sources))
        )
        written, errors = self.publish(specs, touched=state.touched if publish_all else None)
        watch_specs = (
            self.config.watches
            if publish_all
            else tuple(w for w in self.config.watches if w.name in state.unpublished_watches)
        )
        watch_written, watch_errors = self.publish_watches(watch_specs)
        state.written += written + watch_written
        state.errors += errors + watch_errors
        state.touched.clear()
        state.unpublished_watches.clear()

    async def poll_source(self, name: str, state: PollState | None = None) -> PollReport:
        """Poll one source now; any failure is recorded on the source. ``state``: its poll
        state as the pass read it (else it is read from the store)."""
        source = self.sources[name]
        now = self.clock()
        try:
            return await poll_source(
                source,
                store=self.store,
                session=self.session,
                fetch_options=self.fetch_options,
                policy=self.policy,
                now=now,
                rng=self.rng,
                executor=self._executor,
                state=state,
            )
        except StorageError:
            raise
        except Exception as exc:  # a bug in one source's path must not stop the daemon
            log.exception("source %s: poll crashed", name)
            return record_crash(
                source, store=self.store, policy=self.policy, now=now, rng=self.rng, error=exc
            )

    # --- publishing -----------------------------------------------------------------------

    def feed_view(self, spec: FeedSpec) -> FeedView:
        base = self.config.service.base_url
        return FeedView(
            name=spec.name, title=spec.title, self_base=base, description=spec.description
        )

    def publish(
        self, specs: Iterable[FeedSpec], *, touched: AbstractSet[str] | None = None
    ) -> tuple[list[Path], list[str]]:
        """Render and write each feed in its formats; only changed files are replaced.

        ``touched``: the sources whose entries may have changed since this app last published.
        A feed over none of them whose files are still as this app wrote them is up to date
        and skipped without reading the store (a warm pass of ``feedservice once`` over
        thousands of 304s). None: every feed's entries are read and compared.
        """
        written: list[Path] = []
        errors: list[str] = []
        feeds_dir = self.config.service.feeds_dir
        for spec in specs:
            paths = [feeds_dir / f"{spec.name}.{fmt}" for fmt in spec.formats]
            as_written = [self._as_written(path) for path in paths]
            if touched is not None and touched.isdisjoint(spec.sources) and None not in as_written:
                continue
            try:
                entries = tuple(self.store.latest_entries(spec.sources, spec.limit))
                view = self.feed_view(spec)
                # rendering is a pure function of the view and the entries (every field)
                fingerprint = hash((view, entries))
                for fmt, path, last in zip(spec.formats, paths, as_written, strict=True):
                    if last == fingerprint:
                        continue
                    # forgotten first: a failed write leaves the file to be redone next time
                    self._published.pop(path, None)
                    if write_if_changed(path, render_feed(view, entries, fmt)):
                        written.append(path)
                    self._remember(path, fingerprint)
            except FeedServiceError as exc:
                log.error("feed %s: %s", spec.name, exc)
                errors.append(f"feed {spec.name}: {exc}")
        return written, errors

    def _as_written(self, path: Path) -> int | None:
        """The fingerprint of what this app last rendered into ``path``, if the file is still
        the one it wrote (same size and mtime); else None. Most passes (every source 304, new
        entries below a feed's limit) leave most feeds as they were, and rendering is the
        costly part. Only the fingerprint and the file's stat are kept, so memory does not
        grow with the feeds."""
        last = self._published.get(path)
        if last is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None  # gone (or unreadable): render and write it again
        return last[0] if (st.st_size, st.st_mtime_ns) == last[1:] else None

    def _remember(self, path: Path, fingerprint: int) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        self._published[path] = (fingerprint, st.st_size, st.st_mtime_ns)

    # --- the monitor ----------------------------------------------------------------------

    def _watch_story(self, index: int, watch: Watch) -> Entry | None:
        """The watch's story as an entry. A story file inside a story folder gets the id
        that folder gives it, so the story is never reported as its own follow-up.

        Raises ConfigError naming the config field when the file cannot be read or parsed."""
        if watch.story is None:
            return None
        path = watch.story
        field_path = f"watches[{index}].story"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the story file {path}: {exc.strerror}",
                path=str(self.config.path),
                field=field_path,
            ) from exc
        source, rel = f"watch:{watch.name}", path.name
        for src in self.config.sources:
            if src.directory is None:
                continue
            try:
                rel = path.resolve().relative_to(src.directory.resolve()).as_posix()
            except ValueError:
                continue
            source = src.name
            break
        try:
            raw = parse_story(data, path=rel)
        except ParseError as exc:
            raise ConfigError(
                f"the story file {path} is not a story: {exc.detail}",
                path=str(self.config.path),
                field=field_path,
            ) from exc
        return normalise_item(
            raw, source=source, now=self.clock(), permalink_base=self._story_base(source)
        )

    def _story_base(self, source: str) -> str | None:
        return (
            None if self.policy.permalink_base is None else f"{self.policy.permalink_base}{source}/"
        )

    def _build_monitor(self) -> None:
        """Read the watches' stories and check their queries, so a bad watch stops start-up
        (ConfigError); the monitor itself is built when a pass first has entries for it
        (:meth:`_monitor_for_pass`)."""
        self._watch_inputs = []
        for i, watch in enumerate(self.config.watches):
            story = self._watch_story(i, watch)
            self._stories[watch.name] = story
            if story is None and not watch.query:  # as the Monitor would refuse it, at start
                raise ConfigError(
                    "expected a 'story', a 'query' or both",
                    path=str(self.config.path),
                    field=f"watches[{i}]",
                )
            if watch.query:
                try:
                    parse_query(watch.query, watch=watch.name)
                except QueryError as exc:
                    raise ConfigError(
                        str(exc), path=str(self.config.path), field=f"watches[{i}].query"
                    ) from exc
            self._watch_inputs.append(WatchInput(watch, story))

    def _monitor_for_pass(self) -> Monitor | None:
        """The monitor (None without watches), built on first use: the corpus statistics
        from the store and the pool of recent items from the newest stored entries.

        Why on first use: a pass with nothing new to match (cron's ``feedservice once`` over
        unchanged feeds) needs neither, and filling the pool is most of a start's work. Each
        pooled entry is restored from the analysis saved when it was observed
        (:meth:`_save_analyses`); one without a usable analysis (none, another analyser's,
        unreadable) is analysed again, and that analysis saved."""
        if self._monitor is not None or not self._watch_inputs:
            return self._monitor
        stats: CorpusStats | None = None
        saved = self.store.get_meta(STATS_KEY)
        if saved:
            try:
                stats = CorpusStats.from_json(saved)
            except ValueError:
                log.warning("monitor: stored corpus statistics unreadable; rebuilding them")
        monitor = Monitor(self._watch_inputs, stats=stats)
        mark = self._entries_mark
        if stats is None:
            # only the newest entries reach the pool: older ones are counted, not saved
            skip = self.store.count_entries(upto=mark) - monitor.pool.capacity
            for batch in self.store.iter_entries(upto=mark):
                monitor.observe(batch)
                if skip < len(batch):
                    self._save_analyses(monitor, batch[max(0, skip) :])
                skip -= len(batch)
            self._stats_dirty = True
        else:
            # after a restart: the newest items are the neighbours new ones are judged with
            for rows in self.store.iter_analyses(
                newest=monitor.pool.capacity, tag=ANALYSIS_TAG, upto=mark
            ):
                self._restore(monitor, rows)
        self._restore_anchors(monitor, [wi.watch.name for wi in self._watch_inputs])
        self._monitor = monitor
        return monitor

    def _restore_anchors(self, monitor: Monitor, names: Iterable[str]) -> None:
        """Give the monitor each watch's strongest stored matches (its anchors, see
        :meth:`Monitor.add_anchors`), so a restarted or rebuilt monitor judges as one that
        kept running."""
        for name in names:
            if self._stories.get(name) is not None:
                monitor.add_anchors(
                    name,
                    self.store.strongest_matches(name, min_score=ANCHOR_SCORE, limit=ANCHOR_KEEP),
                )

    def _restore(self, monitor: Monitor, rows: Sequence[SavedAnalysis]) -> None:
        """Pool stored entries (oldest first) from their saved analyses, re-analysing those
        whose analysis is missing, of another analyser or unreadable."""
        items: list[PoolItem | None] = []
        missing: list[tuple[str, str]] = []
        for row in rows:
            item = None
            if row.data is not None:
                try:
                    item = decode_item(row.id, row.title, row.data)
                except ValueError:
                    log.debug("monitor: saved analysis of %s unreadable", row.id)
            if item is None:
                missing.append((row.source, row.id))
            items.append(item)
        if not missing:
            monitor.remember(cast(list[PoolItem], items))
            return
        found = self.store.get_entries(missing)
        batch: list[Entry | PoolItem] = []
        for row, item in zip(rows, items, strict=True):
            if item is not None:
                batch.append(item)
            elif (entry := found.get((row.source, row.id))) is not None:
                batch.append(entry)
        monitor.remember(batch)
        self._save_analyses(monitor, [e for e in batch if isinstance(e, Entry)])

    def _save_analyses(self, monitor: Monitor, entries: Sequence[Entry]) -> None:
        """Save each observed entry's pooled analysis, for the next start (see
        :meth:`_monitor_for_pass`)."""
        rows: list[tuple[str, str, bytes | None]] = []
        seen: set[str] = set()
        # the pool knows an entry by id: of two entries with one id (in two sources, or a
        # changed entry seen twice) the last observed is the pooled one
        for entry in reversed(entries):
            if entry.id in seen:
                continue
            seen.add(entry.id)
            item = monitor.pooled(entry.id)
            rows.append((entry.source, entry.id, None if item is None else encode_item(item)))
        self.store.save_analyses(rows, tag=ANALYSIS_TAG)

    def _check_monitored(self) -> tuple[tuple[int, int] | None, int | None]:
        """Whether entries were stored that the monitor never matched: a process killed
        (SIGKILL, a crash, a power cut) between storing a poll's entries and matching them,
        or a pass that failed. After a restart those entries are not new any more, so only
        the store's mark (:meth:`Store.set_monitored_upto`) tells. It counts change
        sequences, not pks, so an entry changed in place (its pk kept) is caught up too.
        Read once after start-up and after a failed pass, not in every pass.

        Returns the sequences to catch up on (after, up to) or None, and the store's last
        sequence (:meth:`Store.last_entry_seq`) when it was read."""
        if self._caught_up:
            return None, None
        mark, last = self.store.monitored_upto()
        if mark is None or mark > last:
            # No mark: a database from before the mark existed (or a new one). Its entries
            # were matched when they were new (or predate every watch): not new again.
            # Above the last sequence (the counter lost, the mark written by hand): it says
            # nothing; from now on.
            self.store.set_monitored_upto(last)
            return None, last
        return ((mark, last) if mark < last else None), last

    def _catch_up(self, state: _PassState, after: int, upto: int) -> None:
        """Match the entries stored or changed after the sequence ``after`` up to ``upto`` as
        new ones (published, and notified unless their watch is in its backlog pass), then
        move the mark to ``upto``. One matched already (the process died after matching,
        before the mark) is harmless: matches and notifications are stored once per watch
        and entry."""
        if self._watch_inputs:
            count = 0
            try:
                for batch in self.store.iter_entries_since(after, upto=upto):
                    changed, matched = self.monitor_entries(batch, pending=state.pending_watches)
                    state.unpublished_watches |= changed
                    state.matched += matched
                    count += len(batch)
            except StorageError:
                raise
            except Exception as exc:  # as in a pass: logged, and these are not tried again
                log.exception("monitor failed catching up")
                state.errors.append(f"monitor: {exc}")
            if count:
                log.info("monitor: matched %d entries stored but not matched before", count)
            if self._monitor is None:
                self._entries_mark = upto
        self.store.set_monitored_upto(upto)

    def _begin_monitor_pass(self, pending: set[str]) -> set[str]:
        """Watches in their first pass (``pending``): match everything already stored (their
        backlog). Their matches during this pass are published but not notified unless
        ``notify_backlog``. Returns the names of those with matches."""
        changed: set[str] = set()
        monitor = self._monitor_for_pass() if pending else None
        if monitor is None:
            return changed
        backlog = Monitor(
            self._watch_inputs, stats=monitor.stats, pool=monitor.pool, report=pending
        )
        for batch in self.store.iter_entries():
            changed |= self._record_matches(backlog.match(batch), batch, pending=pending)[1]
        self._restore_anchors(monitor, pending)  # the backlog's strongest matches
        return changed

    def _end_monitor_pass(self, state: _PassState) -> None:
        for name in state.pending_watches:
            self.store.set_meta(WATCH_READY_KEY.format(name), self.clock().isoformat())
        if self._monitor is not None and self._stats_dirty:
            self.store.set_meta(STATS_KEY, self._monitor.stats.to_json())
            self._stats_dirty = False

    def monitor_entries(
        self, entries: Sequence[Entry], *, pending: set[str] | frozenset[str] = frozenset()
    ) -> tuple[set[str], int]:
        """Match new entries against every watch; store the matches and queue their
        notifications (not for the ``pending`` watches, which are in their backlog pass).

        Returns the names of the watches with new matches and how many matches were new."""
        monitor = self._monitor_for_pass() if entries else None
        if monitor is None:
            return set(), 0
        monitor.observe(entries)
        self._stats_dirty = True
        self._save_analyses(monitor, entries)
        self.store.prune_analyses(keep=monitor.pool.capacity)
        new, changed = self._record_matches(monitor.match(entries), entries, pending=pending)
        return changed, new

    def _watch_ready(self, watch: Watch) -> bool:
        return self.store.get_meta(WATCH_READY_KEY.format(watch.name)) is not None

    def _record_matches(
        self, found: Sequence[Match], batch: Sequence[Entry], *, pending: AbstractSet[str]
    ) -> tuple[int, set[str]]:
        """Store matches; another outlet's copy of an already matched story joins that match
        ("also reported by") instead of being reported again."""
        if not found:
            return 0, set()
        by_id = {e.id: e for e in batch}
        now = self.clock()
        known: dict[str, list[tuple[str, str, list[int]]]] = {}
        rows: list[MatchRow] = []
        in_pass: dict[tuple[str, str, str], int] = {}  # (watch, source, id) -> index in rows
        changed: set[str] = set()
        for m in found:
            entry = by_id[m.entry_id]
            watch = self.watches[m.watch]
            sig = list(signature(entry))
            if m.watch not in known:
                known[m.watch] = self.store.match_signatures(m.watch)
            twin = next(
                (
                    (src, eid)
                    for src, eid, other in known[m.watch]
                    if (src, eid) != (entry.source, entry.id) and near_duplicate(sig, other)
                ),
                None,
            )
            if twin is not None:
                row_at = in_pass.get((m.watch, *twin))
                if row_at is not None:
                    # the twin is matched in this pass and not stored yet: the copy joins its
                    # row (asking the store would find no row, and the copy would be lost)
                    row = rows[row_at]
                    rows[row_at] = replace(row, also=(*row.also, (entry.source, entry.id)))
                elif self.store.add_also(m.watch, twin[0], twin[1], (entry.source, entry.id)):
                    changed.add(m.watch)
                continue
            also = tuple((by_id[a].source, a) for a in m.also if a in by_id)
            notify = None
            if watch.notify and (watch.name not in pending or watch.notify_backlog):
                # queued with the match, if it is new (store.add_matches)
                payload = Notification.from_match(watch, m, entry).to_json()
                notify = (payload["key"], tuple(target_key(t) for t in watch.notify), payload)
            in_pass[(m.watch, entry.source, entry.id)] = len(rows)
            rows.append(MatchRow(m, entry.source, sig, also, notify))
            known[m.watch].append((entry.source, entry.id, sig))
        fresh = self.store.add_matches(rows, now=now)
        changed.update(row.match.watch for row in fresh)
        return len(fresh), changed

    def publish_watches(self, watches: Iterable[Watch]) -> tuple[list[Path], list[str]]:
        """Each watch is a feed: its matches, newest first, with score and reasons."""
        written: list[Path] = []
        errors: list[str] = []
        feeds_dir = self.config.service.feeds_dir
        for watch in watches:
            try:
                stored = self.store.watch_matches(watch.name, watch.limit)
                others = self.store.get_entries([pair for sm in stored for pair in sm.also])
                story = self._stories.get(watch.name)
                extras = {
                    sm.entry.id: EntryExtra(
                        score=sm.match.score,
                        reasons=sm.match.reasons,
                        story=story.title if story is not None else watch.query,
                        also=tuple(
                            (pair[0], link)
                            for pair in sm.also
                            if (link := getattr(others.get(pair), "link", None))
                        ),
                    )
                    for sm in stored
                }
                view = FeedView(
                    name=watch.name,
                    title=watch.title,
                    self_base=self.config.service.base_url,
                    description=_watch_description(watch, story),
                    entry_id_scope=f"watch:{watch.name}",
                )
                entries = [sm.entry for sm in stored]
                for fmt in ("atom", "rss", "json"):
                    path = feeds_dir / f"{watch.name}.{fmt}"
                    data = render_feed(view, entries, fmt, extras=extras)
                    if write_if_changed(path, data):
                        written.append(path)
            except FeedServiceError as exc:
                log.error("watch feed %s: %s", watch.name, exc)
                errors.append(f"watch {watch.name}: {exc}")
        return written, errors

    # --- notifications --------------------------------------------------------------------

    def _build_notifiers(self) -> None:
        """One notifier per distinct target; a bad target stops start-up (ConfigError)."""
        self._notifiers = {}
        for watch in self.config.watches:
            for target in watch.notify:
                key = target_key(target)
                if key not in self._notifiers:
                    self._notifiers[key] = build_notifier(
                        target, session=self.session, smtp=self.config.smtp
                    )

    async def deliver_notifications(self) -> int:
        """Send what is due in the outbox; failures are retried later with backoff.

        At least once: an item is marked delivered only after its channel accepted it;
        a crash in between sends it again after restart with the same idempotency key."""
        now = self.clock()
        items = self.store.claim_due(now=now, lease_until=now + OUTBOX_LEASE)
        if not items:
            return 0
        limit = asyncio.Semaphore(8)
        # Targets that failed transiently in this pass: their other items wait for the next
        # retry instead of each waiting for the timeout again. A receiver that hangs would
        # otherwise hold the pass (and so all polling) for 100 items / 8 at a time x 10 s.
        down: dict[str, str] = {}

        async def one(item: OutboxItem) -> bool:
            notifier = self._notifiers.get(item.target)
            if notifier is None:
                self.store.mark_attempt_failed(
                    item.pk,
                    error="this notify target is no longer configured",
                    next_attempt_at=now,
                    permanent=True,
                )
                return False
            async with limit:
                if item.target in down:
                    delay = retry_delay(item.attempts + 1, self.rng, base=RETRY_BASE, cap=RETRY_CAP)
                    self.store.mark_attempt_failed(
                        item.pk,
                        error=f"not tried: {down[item.target]}",
                        next_attempt_at=self.clock() + timedelta(seconds=delay),
                        permanent=False,
                    )
                    return False
                try:
                    await notifier.send(Notification.from_json(item.payload))
                except Exception as caught:  # one notification's failure is its own
                    exc: NotifyError | ValueError
                    if isinstance(caught, (NotifyError, ValueError)):
                        exc = caught
                    else:
                        # a bug, not a refusal: logged with its traceback and retried with
                        # backoff, so one poisoned row never holds up the rest of the outbox
                        log.error("notify %s: unexpected error", notifier.channel, exc_info=caught)
                        exc = NotifyError(f"unexpected error: {caught!r}")
                    permanent = isinstance(exc, ValueError) or exc.permanent
                    delay = retry_delay(item.attempts + 1, self.rng, base=RETRY_BASE, cap=RETRY_CAP)
                    if isinstance(exc, NotifyError) and exc.retry_after:
                        delay = max(delay, exc.retry_after)
                    log.warning(
                        "notify %s: %s%s",
                        getattr(notifier, "label", notifier.channel),
                        exc,
                        " (giving up)" if permanent else f" (retry in {delay:.0f}s)",
                    )
                    self.store.mark_attempt_failed(
                        item.pk,
                        error=str(exc),
                        next_attempt_at=self.clock() + timedelta(seconds=delay),
                        permanent=permanent,
                    )
                    if not permanent:
                        down.setdefault(item.target, str(exc))
                    return False
            self.store.mark_delivered(item.pk, now=self.clock())
            return True

        results = await asyncio.gather(*(one(i) for i in items))
        return sum(results)

    # --- queries for the server and the CLI ----------------------------------------------

    def story_entry(self, source: str, slug: str) -> Entry | None:
        link = f"{self.policy.permalink_base}{source}/{slug}.html"
        return self.store.entry_by_link(link)

    def source_states(self) -> list[SourceState]:
        return self.store.source_states()

    def failing_sources(self) -> list[SourceState]:
        return [s for s in self.store.source_states() if s.failures or s.gone or s.last_error]

    def published_feeds(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, title, formats) of every published feed, for the index page."""
        return [(f.name, f.title, f.formats) for f in self.config.feeds]

    def published_watches(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, title, formats) of every watch feed, for the index page."""
        return [(w.name, w.title, ("atom", "rss", "json")) for w in self.config.watches]


def _watch_description(watch: Watch, story: Entry | None) -> str:
    parts = []
    if story is not None:
        parts.append(f"Items related to the story \u201c{story.title}\u201d")
    if watch.query:
        parts.append(f"matching the query {watch.query}")
    return ", ".join(parts) or watch.title


def target_key(target: NotifyTarget) -> str:
    """How a notify target is named in the outbox (stable across restarts)."""
    return json.dumps(
        {"kind": target.kind, "target": target.target, "argv": list(target.argv)}, sort_keys=True
    )
