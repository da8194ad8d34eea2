"""The floor: what minimal Python pollers reach on this machine, next to feedservice and reader.

Run: ``.venv/bin/python bench/floor.py [--feeds 2000] [--repeat 3] [--reader-feeds N]``

Issue 3 asks for ratios to ``reader`` (cold >= 30x, warm >= 10x, mixed >= 20x). This script
asks what ANY Python poller can reach here: against bench/poll.py's origin (the same process,
feeds and passes: cold all 200, warm all 304, mixed 10% changed), in the same run, it measures
clients that do less than a feed service must, each a few lines of plain code:

* ``(a)`` GET only: aiohttp, the body read and thrown away; validators kept in a dict, so warm
  and mixed send If-None-Match / If-Modified-Since and get 304s.
* ``(b)`` (a) + one lxml parse of each 200 body (the hardened parser options feedservice uses)
  and, per item, its title, link, guid, description and pubDate (parsed to a datetime).
* ``(c)`` (b) + nh3 sanitising of each new or changed item's HTML (``nh3.clean``, its
  default rules) + one SQLite INSERT per such item (an upsert on (feed, guid)) and the feed's
  validators, in one transaction per feed (WAL, synchronous=NORMAL, as feedservice's store).
  An item whose fields hash as when it was stored is skipped (an in-memory dict; feedservice
  keeps such hashes in its store). No ids, no dedup, no normalising, no entities, no
  publishing, nothing recorded for a 304.

Each runs with feedservice's fetch concurrency (64 connections; the bench's per-host limit is
the same 64, one loopback host), in one process, and split over two processes (32 connections
each, half of the feeds each) to see what both cores give. The origin is started first and
every feed is fetched once before anything is measured, so no client pays for the origin
building its bodies. feedservice (through the app, as bench/poll.py measures it) and reader
(``update_feeds``, one worker) are measured in the same run; the rounds alternate (one
repetition of each client, reader included, per round) so that other load on the machine
falls on all of them.

Per pass it prints median feeds/s, CPU seconds of the client (all its processes), CPU seconds
of the origin during the pass (it shares the 2 cores), the ratio to reader's feeds/s, and a
2-core bound: feeds / (client CPU + origin CPU) * 2, the rate the two cores would allow if
both were busy all the time with nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import poll  # bench/poll.py: the same origin, feedservice and reader runners

LEVELS = {
    "a": "(a) GET only",
    "b": "(b) GET + lxml parse",
    "c": "(c) GET + parse + nh3 + SQLite",
}
TARGETS = {"cold": 30, "warm": 10, "mixed": 20}


# --- a minimal client (its own process) -------------------------------------------------------


def _floor_worker(
    port: int, feeds: list[int], level: str, concurrency: int, db_path: str, cmd: Any, out: Any
) -> None:
    """Polls ``feeds`` once per command from ``cmd``; puts (start, end, cpu, counts) on ``out``."""
    import sqlite3
    from email.utils import parsedate_to_datetime

    import aiohttp
    import nh3
    from lxml import etree

    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE feeds (feed INTEGER PRIMARY KEY, etag TEXT, modified TEXT)")
    db.execute(
        "CREATE TABLE entries (feed INTEGER, guid TEXT, title TEXT, link TEXT, "
        "published TEXT, html TEXT, PRIMARY KEY (feed, guid))"
    )
    upsert = (
        "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (feed, guid) DO UPDATE SET "
        "title = excluded.title, link = excluded.link, published = excluded.published, "
        "html = excluded.html"
    )
    urls = {i: f"http://127.0.0.1:{port}/feed/{i}.xml" for i in feeds}
    validators: dict[int, dict[str, str]] = {}
    # (c) skips an item it has stored unchanged (the hash of its fields as parsed), as
    # feedservice skips items by their stored raw hash: a changed feed has one new item
    seen: dict[tuple[int, str | None], int] = {}

    def handle(i: int, body: bytes, etag: str, modified: str) -> int:
        """The items parsed ((b)) or stored ((c)) from one 200 body."""
        if level == "a":
            return 0
        rows = []
        for item in etree.fromstring(body, parser).iter("item"):
            # one walk over the item's children: a findtext per field costs half again
            f = {child.tag: child.text for child in item}
            pub, html = f.get("pubDate"), f.get("description") or ""
            guid, title, link = f.get("guid") or f.get("link"), f.get("title"), f.get("link")
            if level == "c":
                key, digest = (i, guid), hash((title, link, pub, html))
                if seen.get(key) == digest:
                    continue
                seen[key] = digest
                html = nh3.clean(html)
            published = parsedate_to_datetime(pub).isoformat() if pub else None
            rows.append((i, guid, title, link, published, html))
        if level == "c":
            db.execute("BEGIN")
            db.executemany(upsert, rows)
            db.execute("INSERT OR REPLACE INTO feeds VALUES (?, ?, ?)", (i, etag, modified))
            db.execute("COMMIT")
        return len(rows)

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:

            async def one(i: int, counts: dict[str, int]) -> None:
                async with session.get(urls[i], headers=validators.get(i)) as resp:
                    body = await resp.read()
                    status = str(resp.status)
                    counts[status] = counts.get(status, 0) + 1
                    if resp.status == 200:
                        etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
                        if items := handle(i, body, etag, modified):
                            counts["items"] = counts.get("items", 0) + items
                        # saved only after the entries are stored, as feedservice does
                        validators[i] = {"If-None-Match": etag, "If-Modified-Since": modified}

            out.put("ready")
            while (name := await asyncio.to_thread(cmd.get)) is not None:
                counts: dict[str, int] = {}
                todo = iter(feeds)

                async def worker(counts: dict[str, int] = counts, todo: Any = todo) -> None:
                    for i in todo:
                        await one(i, counts)

                c0, t0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                t1, c1 = time.perf_counter(), time.process_time()
                out.put((name, t0, t1, c1 - c0, counts))

    asyncio.run(run())
    db.close()


@dataclass
class FloorRun:
    """The worker processes of one client at one level, alive across the three passes."""

    procs: list[Any]
    cmds: list[Any]
    out: Any

    def run_pass(self, name: str, origin_pid: int) -> tuple[float, float, float, dict[str, int]]:
        """(wall, client CPU, origin CPU, counts of statuses and items) of one pass."""
        import psutil

        origin = psutil.Process(origin_pid)
        o0 = sum(origin.cpu_times()[:2])
        for c in self.cmds:
            c.put(name)
        got = [poll._get(self.out, self.procs[0]) for _ in self.procs]
        o1 = sum(origin.cpu_times()[:2])
        counts: dict[str, int] = {}
        for _name, _t0, _t1, _cpu, c in got:
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
        wall = max(g[2] for g in got) - min(g[1] for g in got)
        return wall, sum(g[3] for g in got), o1 - o0, counts

    def close(self) -> None:
        for c in self.cmds:
            c.put(None)
        for p in self.procs:
            p.join(30)


def start_floor(
    ctx: Any, port: int, n: int, level: str, nprocs: int, concurrency: int, root: str
) -> FloorRun:
    out = ctx.Queue()
    procs, cmds = [], []
    for k in range(nprocs):
        cmd = ctx.Queue()
        feeds = list(range(k, n, nprocs))
        db = str(Path(root) / f"floor-{level}-{k}.sqlite")
        p = ctx.Process(
            target=_floor_worker,
            args=(port, feeds, level, concurrency // nprocs, db, cmd, out),
            daemon=True,
        )
        p.start()
        procs.append(p)
        cmds.append(cmd)
    for _ in procs:
        if poll._get(out, procs[0]) != "ready":
            raise SystemExit("floor worker: unexpected first message")
    return FloorRun(procs, cmds, out)


@dataclass
class Row:
    client: str
    procs: int
    name: str
    feeds: int
    wall: float
    cpu: float
    origin_cpu: float | None

    @property
    def rate(self) -> float:
        return self.feeds / self.wall


def floor_round(
    ctx: Any, origin: poll.OriginHandle, n: int, level: str, nprocs: int, concurrency: int
) -> list[Row]:
    """One repetition (cold, warm, mixed) of one minimal client, with a fresh database."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as root:
        run = start_floor(ctx, origin.port, n, level, nprocs, concurrency, root)
        try:
            for name in ("cold", "warm", "mixed"):
                # (b) parses every item of a 200; (c) stores only the new one of a changed feed
                per_feed = {"a": 0, "b": poll.ITEMS_PER_FEED, "c": poll.ITEMS_PER_FEED}[level]
                expect = {"200": n, "items": n * per_feed} if name == "cold" else {"304": n}
                if name == "mixed":
                    changed = origin.bump(offset=int(time.time()) % 10)
                    per_changed = 1 if level == "c" else per_feed
                    expect = {"200": changed, "304": n - changed, "items": changed * per_changed}
                expect = {k: v for k, v in expect.items() if v}
                wall, cpu, ocpu, counts = run.run_pass(name, origin.process.pid)
                if counts != expect:
                    raise SystemExit(f"{LEVELS[level]} {name}: expected {expect}, got {counts}")
                rows.append(Row(LEVELS[level], nprocs, name, n, wall, cpu, ocpu))
        finally:
            run.close()
    return rows


# --- main -------------------------------------------------------------------------------------


def _table(rows: list[Row], reader_note: str) -> None:
    print(
        "\nmedians per pass; CPU s = the client's processes; origin = the origin's CPU s in the "
        "pass; x reader = feeds/s over reader's;\n2-core bound = feeds / (client + origin CPU) "
        "* 2 (both cores busy with nothing else), and its ratio to reader's feeds/s and to "
        "reader's CPU-bound rate\n(1 / its CPU s per feed: what reader reaches with a core of "
        "its own, as on a quiet machine, where its rates are higher than in a loaded run). "
        f"{reader_note}"
    )
    print(
        f"{'pass':6} {'client':32} {'procs':>5} | {'feeds/s':>8} {'CPU s':>7} {'ms/feed':>7} "
        f"{'origin':>6} | {'x reader':>8} | {'2-core bound':>12} {'x reader':>8} {'x r-CPU':>7} "
        "| target"
    )
    clients: list[tuple[str, int]] = []
    for r in rows:
        if (r.client, r.procs) not in clients:
            clients.append((r.client, r.procs))
    for name in ("cold", "warm", "mixed"):
        ref = [r.rate for r in rows if r.client == "reader" and r.name == name]
        base = statistics.median(ref) if ref else None
        ref_cpf = [r.cpu / r.feeds for r in rows if r.client == "reader" and r.name == name]
        cpf = statistics.median(ref_cpf) if ref_cpf else None
        for client, procs in clients:
            mine = [r for r in rows if (r.client, r.procs, r.name) == (client, procs, name)]
            if not mine:
                continue
            rate = statistics.median(r.rate for r in mine)
            cpu = statistics.median(r.cpu for r in mine)
            feeds = mine[0].feeds
            origins = [r.origin_cpu for r in mine if r.origin_cpu is not None]
            ocpu = statistics.median(origins) if origins else None
            bound = 2 * feeds / (cpu + ocpu) if ocpu is not None else None
            ratio = f"{rate / base:7.1f}x" if base else f"{'':8}"
            bratio = f"{bound / base:7.1f}x" if bound and base else f"{'':8}"
            cratio = f"{bound * cpf:6.1f}x" if bound and cpf else f"{'':7}"
            target = ""
            if base and client != "reader":
                target = f">= {TARGETS[name]}x " + (
                    "met" if rate / base >= TARGETS[name] else "NOT met"
                )
            print(
                f"{name:6} {client:32} {procs:5} | {rate:8.1f} {cpu:7.2f} "
                f"{1000 * cpu / feeds:7.3f} "
                + (f"{ocpu:6.2f}" if ocpu is not None else f"{'-':>6}")
                + f" | {ratio} | "
                + (f"{bound:12.0f}" if bound else f"{'-':>12}")
                + f" {bratio} {cratio} | {target}"
            )
        print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (one repetition of each client)")
    ap.add_argument("--concurrency", type=int, default=64, help="connections, as feedservice's")
    ap.add_argument("--levels", default="abc", help="which minimal clients (default: abc)")
    ap.add_argument("--procs", default="1,2", help="process counts for the minimal clients")
    ap.add_argument("--reader-feeds", type=int, default=None, help="measure reader on a subset")
    ap.add_argument("--no-reader", action="store_true")
    ap.add_argument("--no-feedservice", action="store_true")
    args = ap.parse_args(argv)
    n = args.feeds
    reader_n = min(args.reader_feeds or n, n)
    nprocs = [int(x) for x in args.procs.split(",")]
    ctx = mp.get_context("spawn")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; origin in its own process")
    origin = poll.start_origin(ctx, n)
    rows: list[Row] = []

    def show(r: Row) -> None:
        extra = f"  origin CPU {r.origin_cpu:5.2f}s" if r.origin_cpu is not None else ""
        print(
            f"  {r.client:32} x{r.procs} {r.name:5} {r.rate:8.1f} feeds/s  {r.wall:6.2f}s  "
            f"CPU {r.cpu:5.2f}s{extra}",
            flush=True,
        )

    try:
        # every body built once before anything is timed (the origin caches them)
        floor_round(ctx, origin, n, "a", 1, args.concurrency)
        q = ctx.Queue()
        for _round in range(args.repeat):
            if not args.no_feedservice:
                p = ctx.Process(
                    target=poll._feedservice_main,
                    args=(origin.port, n, 1, args.concurrency, 0, q),
                )
                p.start()
                _, fs, _ = poll._get(q, p)
                p.join()
                for pr in fs:
                    rows.append(Row("feedservice", 1, pr.name, n, pr.wall, pr.cpu, None))
                    show(rows[-1])
            for level in args.levels:
                for k in nprocs:
                    for r in floor_round(ctx, origin, n, level, k, args.concurrency):
                        rows.append(r)
                        show(r)
            if not args.no_reader:
                p = ctx.Process(target=poll._reader_main, args=(origin.port, reader_n, 1, 7, q))
                p.start()
                _, rd, _ = poll._get(q, p)
                p.join()
                for pr in rd:
                    rows.append(Row("reader", 1, pr.name, reader_n, pr.wall, pr.cpu, None))
                    show(rows[-1])
    finally:
        origin.close()
    note = (
        ""
        if reader_n == n
        else f"reader measured on {reader_n} of the {n} feeds (feeds/s compared)."
    )
    _table(rows, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
