"""Polling throughput, end to end through the app, against the ``reader`` library.

Run: ``.venv/bin/python bench/poll.py [--feeds 2000] [--repeat 3] [--reader-feeds N]``
     ``.venv/bin/python bench/poll.py --sources 10000``   (the memory / failing-source mode)

What it does (issue 3, item 8):

* starts a loopback ORIGIN in a separate process (aiohttp on 127.0.0.1, port 0): ``--feeds``
  RSS 2.0 feeds of 20 items with about 2 KB of HTML each, honouring ETag / If-None-Match
  (304) and Last-Modified; a control endpoint moves 10% of the feeds to a new generation (one
  new item each) for the mixed pass; ``/slow`` drips one byte a second and never finishes.
* measures feedservice THROUGH THE APP (``feedservice.app.App`` built from a ``Config`` made
  here: a temporary folder, a real SQLite file, a few published feeds over the sources) in a
  child process of its own, in three passes, each ``run_once(force=True)``: cold (all 200,
  a fresh database each repetition), warm (all 304) and mixed (10% changed). The per-host
  connection limit is set to ``max_concurrency`` because every feed lives on one loopback
  host; the default per-host limit (8) exists for politeness to real hosts.
* measures ``reader`` (lemon24/reader, in its own child process and its own SQLite file)
  updating the same feeds in the same three passes (``update_feeds(scheduled=False)``, so every
  feed is updated again at once; reader's default of one worker). ``--reader-feeds M`` measures
  reader on the first M feeds only and compares feeds/s (stated in the output).
* prints, per pass, the median feeds/s, CPU seconds (the measuring process and its children,
  i.e. feedservice's parse workers with ``--parse-workers N``; the origin is another process)
  and the peak RSS of the measuring process during the pass, and the ratio
  feedservice/reader.

``--sources 10000``: 10,000 sources configured plus one that drips (times out). A first
process primes the database (a cold pass); a second one, the measured ``feedservice once``
pass, opens it with 10% of the feeds changed and the rest answering 304, and prints its peak
RSS and when the last good source finished compared with the failing one.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ITEMS_PER_FEED = 20
# A few hundred words and a share of function words, so that paragraphs overlap as little
# as real prose does (a tiny vocabulary makes every paragraph look like a near repeat).
STOP = "the of and to in a that for on with as by at from is was were has have said".split()  # noqa: SIM905
WORDS = """
government minister talks agreement defence security economy market shares report percent
growth council city police court election vote parliament budget energy climate water health
hospital school students research university data company workers union strike prices
inflation bank interest rates trade exports imports factory farmers harvest drought flood
storm earthquake rescue volunteers officials spokesperson statement announcement plan
project bridge railway airport port highway tunnel station tickets passengers airline
flights delays weather forecast temperature record summer winter autumn spring festival
museum exhibition artist painting concert orchestra theatre film director actor award
prize novel author library publisher newspaper journalist interview editor broadcast
network software internet startup investors funding merger acquisition profits losses
quarter revenue earnings forecast analysts stocks bonds currency dollar euro yen oil gas
coal solar wind nuclear reactor emissions carbon targets treaty summit delegation embassy
ambassador president prime senator mayor governor committee hearing investigation
evidence witness trial verdict judge lawyer appeal sentence prison crime arrest suspect
victims families community residents neighbours housing rents mortgage construction
developers planning permission zoning transport buses trains cyclists pedestrians roads
traffic accident injuries ambulance doctors nurses patients vaccine virus outbreak cases
tests laboratory scientists study results findings journal experiment telescope planet
satellite launch rocket mission astronauts ocean coast island mountain forest wildlife
species conservation park rangers tourists visitors hotels restaurants chefs menu food
prices shoppers retailers sales online delivery warehouse logistics shipping containers
""".split()  # noqa: SIM905
NAMES = (  # noqa: SIM905
    "Lloyd Austin|Fumio Kishida|Tokyo|Washington|European Commission|Bank of Japan|"
    "Olaf Scholz|Berlin|United Nations|Paris|Emmanuel Macron|World Health Organization|"
    "Jakarta|Reuters|Kyodo News|Seoul|Yoon Suk Yeol|Canberra|Anthony Albanese|Ottawa"
).split("|")


# --- the origin (its own process) ------------------------------------------------------------


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(STOP) if rng.random() < 0.35 else rng.choice(WORDS) for _ in range(11)]
    words.insert(rng.randrange(1, len(words)), rng.choice(NAMES))
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def _paragraph(rng: random.Random) -> str:
    text = " ".join(_sentence(rng) for _ in range(4))
    return f"<p>{text} It was {rng.randint(2, 90)} million on {rng.randint(1, 28)} March.</p>"


def _item_xml(feed: int, k: int) -> str:
    rng = random.Random(feed * 100_003 + k)
    paras = [_paragraph(rng) for _ in range(5)]
    paras.insert(2, f'<p>Read <a href="/story/{feed}/{k}">more</a>.</p>')
    body = "".join(paras)
    date = format_datetime(
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=k, minutes=feed % 60), usegmt=True
    )
    title = f"{rng.choice(NAMES)} {rng.choice(WORDS)} {rng.choice(WORDS)} ({feed}/{k})"
    return (
        f"<item><title>{title}</title><link>http://origin.test/{feed}/{k}</link>"
        f'<guid isPermaLink="false">feed-{feed}-item-{k}</guid><pubDate>{date}</pubDate>'
        f"<description><![CDATA[{body}]]></description></item>"
    )


def _origin_main(n_feeds: int, port_queue: Any, items_per_feed: int = ITEMS_PER_FEED) -> None:
    from aiohttp import web

    generation = [0] * n_feeds
    cache: dict[tuple[int, int], bytes] = {}

    item_cache: dict[tuple[int, int], str] = {}

    def item_of(i: int, k: int) -> str:
        # a new generation shares 19 of its 20 items with the previous one: building only
        # the new item keeps the origin cheap (it shares the 2 cores with the poller)
        key = (i, k)
        got = item_cache.get(key)
        if got is None:
            got = _item_xml(i, k)
            if n_feeds <= 5000:
                item_cache[key] = got
        return got

    def body_of(i: int, gen: int) -> bytes:
        key = (i, gen)
        got = cache.get(key)
        if got is None:
            # generation g holds items g .. g+19, newest first: one new item per change
            items = "".join(item_of(i, k) for k in range(gen + items_per_feed - 1, gen - 1, -1))
            got = (
                '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
                f"<title>Feed {i}</title><link>http://origin.test/{i}/</link>"
                f"<description>Bench feed {i}</description>{items}</channel></rss>"
            ).encode()
            if n_feeds <= 5000:  # the memory mode has 10,000: build those on demand
                cache[key] = got
        return got

    async def feed(request: web.Request) -> web.StreamResponse:
        i = int(request.match_info["i"])
        if not 0 <= i < n_feeds:
            return web.Response(status=404)
        gen = generation[i]
        etag = f'"{i}-{gen}"'
        modified = format_datetime(
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=gen), usegmt=True
        )
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag, "Last-Modified": modified})
        return web.Response(
            body=body_of(i, gen),
            headers={
                "ETag": etag,
                "Last-Modified": modified,
                "Content-Type": "application/rss+xml; charset=utf-8",
            },
        )

    async def bump(request: web.Request) -> web.StreamResponse:
        # feeds with i % every == offset move to their next generation (one new item)
        every = int(request.query.get("every", "10"))
        offset = int(request.query.get("offset", "0"))
        changed = 0
        for i in range(offset, n_feeds, every):
            generation[i] += 1
            changed += 1
        return web.Response(text=str(changed))

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await resp.prepare(request)
        await resp.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
        try:
            while True:  # a slow-drip server: a byte a second, forever
                await asyncio.sleep(1.0)
                await resp.write(b" ")
        except ConnectionError:  # the client gave up (its timeout): as it should
            return resp

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/feed/{i}.xml", feed)
        app.router.add_post("/_control/bump", bump)
        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(serve())


@dataclass
class OriginHandle:
    process: Any
    port: int

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/feed/{i}.xml"

    def bump(self, offset: int, every: int = 10) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_control/bump?every={every}&offset={offset}",
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


def _get(q: Any, proc: Any) -> Any:
    """The child's result, or SystemExit if it died without one."""
    import queue

    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if not proc.is_alive():
                raise SystemExit(f"{proc.name} died (exit code {proc.exitcode})") from None


def start_origin(ctx: Any, n_feeds: int, items_per_feed: int = ITEMS_PER_FEED) -> OriginHandle:
    q = ctx.Queue()
    proc = ctx.Process(target=_origin_main, args=(n_feeds, q, items_per_feed), daemon=True)
    proc.start()
    return OriginHandle(proc, int(q.get(timeout=60)))


# --- measuring --------------------------------------------------------------------------------


class PeakRSS:
    """Samples this process's RSS every 10 ms in a thread: the peak during one pass."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


@dataclass
class PassResult:
    name: str
    feeds: int
    wall: float
    cpu: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.feeds / self.wall


def _cpu_seconds() -> float:
    """CPU seconds of this process and its live children: feedservice's parse workers
    (``--parse-workers``) do their share of the work in processes of their own."""
    import psutil

    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # exited meanwhile
            continue
        total += times.user + times.system
    return total


def _timed(name: str, feeds: int, fn: Callable[[], Any]) -> tuple[PassResult, Any]:
    with PeakRSS() as rss:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return PassResult(name, feeds, wall, cpu, rss.peak / 2**20), out


# --- feedservice (its own process) ------------------------------------------------------------


def _feedservice_config(root: Path, urls: list[str], *, groups: int, **fetch: Any) -> Any:
    from feedservice.config import Config, FetchConfig, ServiceConfig
    from feedservice.model import FeedSpec, Source

    sources = tuple(Source(f"s{i:05d}", 900.0, url=u) for i, u in enumerate(urls))
    size = -(-len(sources) // groups)
    feeds = tuple(
        FeedSpec(
            f"group{g}", f"Group {g}", tuple(s.name for s in sources[g * size : (g + 1) * size])
        )
        for g in range(groups)
        if sources[g * size : (g + 1) * size]
    )
    concurrency = fetch.pop("max_concurrency", 64)
    return Config(
        path=root / "feedservice.yaml",
        service=ServiceConfig(
            base_url="http://127.0.0.1:8080/", feeds_dir=root / "feeds", data_dir=root / "var"
        ),
        # one loopback host serves every feed: per_host = max_concurrency (see the docstring)
        fetch=FetchConfig(max_concurrency=concurrency, per_host=concurrency, **fetch),
        sources=sources,
        feeds=feeds,
    )


def _feedservice_main(
    port: int, n: int, repeat: int, concurrency: int, workers: int, out: Any
) -> None:
    from feedservice.app import App

    origin = OriginHandle(None, port)
    urls = [origin.url(i) for i in range(n)]
    results: list[PassResult] = []

    def one_pass(app: App, name: str, changed: int) -> PassResult:
        res, report = _timed(name, n, lambda: loop.run_until_complete(app.run_once(force=True)))
        outcomes: dict[str, int] = {}
        for r in report.polled:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        if name == "cold" and outcomes.get("updated", 0) != n:
            raise SystemExit(f"feedservice cold pass: expected {n} updated, got {outcomes}")
        if name == "warm" and outcomes.get("not_modified", 0) != n:
            raise SystemExit(f"feedservice warm pass: expected {n} not modified, got {outcomes}")
        if name == "mixed" and outcomes.get("updated", 0) != changed:
            raise SystemExit(f"feedservice mixed pass: expected {changed} updated, got {outcomes}")
        return res

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bump = 0
    for _rep in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-poll-fs-") as tmp:
            config = _feedservice_config(
                Path(tmp), urls, groups=4, max_concurrency=concurrency, parse_workers=workers
            )
            app = App(config)
            loop.run_until_complete(app.open())
            try:
                results.append(one_pass(app, "cold", n))
                results.append(one_pass(app, "warm", 0))
                bump += 1
                changed = origin.bump(offset=bump % 10)
                results.append(one_pass(app, "mixed", changed))
            finally:
                loop.run_until_complete(app.close())
    loop.close()
    out.put(("feedservice", results, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


# --- reader (its own process) -----------------------------------------------------------------


def _reader_main(port: int, n: int, repeat: int, bump_from: int, out: Any) -> None:
    import logging

    from reader import make_reader

    logging.getLogger("reader").setLevel(logging.CRITICAL)
    origin = OriginHandle(None, port)
    results: list[PassResult] = []
    bump = bump_from
    for _rep in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-poll-reader-") as tmp:
            reader = make_reader(str(Path(tmp) / "reader.sqlite"))
            for i in range(n):
                reader.add_feed(origin.url(i))
            for name in ("cold", "warm", "mixed"):
                if name == "mixed":
                    bump += 1
                    origin.bump(offset=bump % 10)
                res, _ = _timed(name, n, functools.partial(reader.update_feeds, scheduled=False))
                results.append(res)
            if results[-3].name == "cold":
                stats = reader.get_entry_counts()
                if stats.total < n * ITEMS_PER_FEED:
                    raise SystemExit(f"reader stored only {stats.total} entries")
            reader.close()
    out.put(("reader", results, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


# --- the memory mode --------------------------------------------------------------------------


def _memory_main(
    port: int, n: int, root: str, measured: bool, slow: bool, timeout: float, out: Any
) -> None:
    from feedservice.app import App

    origin = OriginHandle(None, port)
    urls = [origin.url(i) for i in range(n)]
    if slow:
        urls.append(f"http://127.0.0.1:{port}/slow")
    config = _feedservice_config(
        Path(root),
        urls,
        groups=20,
        max_concurrency=64,
        read_timeout=timeout,
        total_timeout=timeout,
    )
    finished: list[float] = []
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        finished.append(time.perf_counter() - t0)

    async def run() -> Any:
        async with App(config, progress=progress) as app:
            return await app.run_once(force=True)

    with PeakRSS() as rss:
        c0 = time.process_time()
        t0 = time.perf_counter()
        report = asyncio.run(run())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    outcomes: dict[str, int] = {}
    slow_name = f"s{n:05d}"
    slow_error = ""
    for r in report.polled:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        if r.source == slow_name:
            slow_error = "; ".join(r.errors)
    # App.poll_many records reports in the order the polls finished, calling progress
    # after each: report i finished at finished[i]
    slow_at = [i for i, r in enumerate(report.polled) if r.source == slow_name]
    others = [t for i, t in enumerate(finished) if i not in slow_at]
    others_done = max(others) if others else 0.0
    slow_done = finished[slow_at[0]] if slow_at else 0.0
    out.put(
        {
            "measured": measured,
            "sources": len(urls),
            "wall": wall,
            "cpu": cpu,
            "peak_rss_mb": rss.peak / 2**20,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "outcomes": outcomes,
            "others_done": others_done,
            "slow_done": slow_done,
            "slow_error": slow_error,
        }
    )


def memory_mode(ctx: Any, n: int, timeout: float, items_per_feed: int) -> None:
    origin = start_origin(ctx, n, items_per_feed)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-poll-mem-") as root:
            q = ctx.Queue()
            runs = []
            # 1: prime the database (cold: everything 200), 2: the measured `once` pass with
            # 10% changed, the rest 304, and the slow-drip source; 3: the same without it.
            for label, measured, slow, bump in (
                ("prime (cold, all 200)", False, True, None),
                ("once: 10% changed, 90% 304, one slow-drip source", True, True, 1),
                ("once: 10% changed, 90% 304, no slow source (control)", True, False, 2),
            ):
                if bump is not None:
                    origin.bump(offset=bump)
                p = ctx.Process(
                    target=_memory_main, args=(origin.port, n, root, measured, slow, timeout, q)
                )
                p.start()
                res = _get(q, p)
                p.join()
                runs.append((label, res))
    finally:
        origin.close()
    print(
        f"\n{n} sources configured (+1 slow-drip source where said), {items_per_feed} items "
        f"per feed; total timeout {timeout:g}s"
    )
    print(f"{'pass':55} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>12}  outcomes")
    for label, r in runs:
        print(
            f"{label:55} {r['wall']:7.2f} {r['cpu']:7.2f} {r['peak_rss_mb']:12.0f}  {r['outcomes']}"
        )
    for label, r in runs:
        if r["sources"] > n:
            print(
                f"{label}: the {n} good sources were all done at {r['others_done']:.2f}s; the "
                f"slow one failed at {r['slow_done']:.2f}s ({r['slow_error']})"
            )
    print("target: peak RSS < 300 MB with 10,000 sources configured")


# --- main -------------------------------------------------------------------------------------


def _table(fs: list[PassResult], rd: list[PassResult], reader_n: int, n: int, workers: int) -> None:
    print(
        f"\nfeedservice: {n} feeds, per_host = max_concurrency (one loopback host; the default "
        f"per-host limit is for real hosts' sake), parse_workers = {workers}"
    )
    note = (
        ""
        if reader_n == n
        else f" (reader measured on {reader_n} of the {n} feeds; feeds/s compared)"
    )
    print(f"reader {_reader_version()}: update_feeds(scheduled=False), 1 worker{note}")
    print(
        "ratio = feeds/s over reader's; cpu ratio = CPU seconds per feed, reader's over ours "
        "(steadier when other work shares the 2 cores)"
    )
    print(
        f"{'pass':6} | {'feedservice feeds/s':>19} {'CPU s':>7} {'peak MB':>8} | "
        f"{'reader feeds/s':>14} {'CPU s':>7} {'peak MB':>8} | {'ratio':>6} {'cpu ratio':>9} "
        "| target"
    )
    targets = {"cold": 30, "warm": 10, "mixed": 20}
    for name in ("cold", "warm", "mixed"):
        a = [r for r in fs if r.name == name]
        b = [r for r in rd if r.name == name]
        fa = statistics.median(r.rate for r in a)
        fb = statistics.median(r.rate for r in b)
        ca = statistics.median(r.cpu / r.feeds for r in a)
        cb = statistics.median(r.cpu / r.feeds for r in b)
        ratio = fa / fb
        ok = "met" if ratio >= targets[name] else "NOT met"
        print(
            f"{name:6} | {fa:19.0f} {statistics.median(r.cpu for r in a):7.2f} "
            f"{max(r.peak_rss_mb for r in a):8.0f} | {fb:14.1f} "
            f"{statistics.median(r.cpu for r in b):7.2f} {max(r.peak_rss_mb for r in b):8.0f} | "
            f"{ratio:5.1f}x {cb / ca:8.1f}x | >= {targets[name]}x {ok}"
        )
    print(f"(medians of {len(fs) // 3} feedservice and {len(rd) // 3} reader repetitions)")


def _line(who: str, r: PassResult) -> str:
    return (
        f"  {who:11} {r.name:5} {r.rate:8.1f} feeds/s  {r.wall:6.2f}s  CPU {r.cpu:5.2f}s  "
        f"{r.peak_rss_mb:4.0f} MB"
    )


def _reader_version() -> str:
    try:
        from importlib.metadata import version

        return version("reader")
    except Exception:  # only for the label
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3, help="feedservice repetitions")
    ap.add_argument("--reader-repeat", type=int, default=1)
    ap.add_argument("--reader-feeds", type=int, default=None, help="measure reader on a subset")
    ap.add_argument("--no-reader", action="store_true", help="feedservice only (no ratios)")
    ap.add_argument("--concurrency", type=int, default=64, help="fetch max_concurrency")
    ap.add_argument(
        "--parse-workers",
        type=int,
        default=0,
        help="feedservice's fetch.parse_workers (0: parse and normalise in the app's process)",
    )
    ap.add_argument("--sources", type=int, default=None, help="the memory mode: N sources")
    ap.add_argument("--items", type=int, default=ITEMS_PER_FEED, help="memory mode: items per feed")
    ap.add_argument("--timeout", type=float, default=5.0, help="memory mode: total timeout (s)")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    if args.sources:
        memory_mode(ctx, args.sources, args.timeout, args.items)
        return 0
    n = args.feeds
    reader_n = min(args.reader_feeds or n, n)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; origin in its own process")
    origin = start_origin(ctx, n)
    try:
        q = ctx.Queue()
        p = ctx.Process(
            target=_feedservice_main,
            args=(origin.port, n, args.repeat, args.concurrency, args.parse_workers, q),
        )
        p.start()
        _, fs, _ = _get(q, p)
        p.join()
        for r in fs:
            print(_line("feedservice", r))
        if args.no_reader:
            return 0
        p = ctx.Process(target=_reader_main, args=(origin.port, reader_n, args.reader_repeat, 5, q))
        p.start()
        _, rd, _ = _get(q, p)
        p.join()
        for r in rd:
            print(_line("reader", r))
    finally:
        origin.close()
    _table(fs, rd, reader_n, n, args.parse_workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
