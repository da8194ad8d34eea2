"""Hostile input never hurts (issue 3, item 6): every odd origin at once, through the app.

Each hostile source ends in a recorded error or a bounded result within the timeouts, and the
good sources beside them are polled, stored and published as usual.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from feedservice.app import App
from feedservice.model import Source
from tests.clock import Clock
from tests.origin import Origin, rss
from tests.test_update import make_config

SECRET = "TOP-SECRET-LOCAL-FILE-CONTENT"


def billion_laughs() -> bytes:
    lol = ['<!ENTITY lol "lol">']
    for i in range(1, 10):
        lol.append(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">')
    return (
        '<?xml version="1.0"?><!DOCTYPE rss [' + "".join(lol) + "]>"
        "<rss version='2.0'><channel><title>&lol9;</title><link>https://x.example/</link>"
        "<description>d</description><item><title>&lol9;</title><guid>b1</guid></item>"
        "</channel></rss>"
    ).encode()


def xxe(secret_path: Path) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret_path}">]>'
        "<rss version='2.0'><channel><title>x</title><link>https://x.example/</link>"
        "<description>d</description><item><title>&xxe;</title><guid>x1</guid>"
        "<description>&xxe;</description></item></channel></rss>"
    ).encode()


def huge_feed(n: int) -> bytes:
    return rss("Huge", [(f"h{i}", f"Item {i}") for i in range(n)])


def duplicate_ids() -> bytes:
    return rss("Dup", [("same", "First"), ("same", "Second"), ("other", "Third")])


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[Origin]:
    origin = await Origin().start()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)

    def static(body: bytes, ctype: str = "application/rss+xml", **headers: str) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, headers={"Content-Type": ctype, **headers})

        return handler  # type: ignore[return-value]

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await resp.prepare(request)
        chunk = b"<item>" + b"x" * 65536 + b"</item>"
        while True:  # ends when the client gives up at the body-size cap
            await resp.write(chunk)

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await resp.prepare(request)
        while True:  # ends when the client gives up at its total timeout
            await resp.write(b"<")
            await asyncio.sleep(0.2)

    bomb = gzip.compress(b"<rss>" + b" " * (64 * 1024 * 1024), compresslevel=9)
    origin.routes.update(
        {
            "/laughs.xml": static(billion_laughs()),
            "/xxe.xml": static(xxe(secret)),
            "/garbage.xml": static(bytes(range(256)) * 64, "application/octet-stream"),
            "/latin1.xml": static(
                "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>L</title>"
                "<link>https://l.example/</link><description>d</description><item>"
                "<title>Caf\xe9 cr\xe8me</title><guid>l1</guid></item></channel></rss>".encode(
                    "latin-1"
                )
            ),
            "/huge.xml": static(huge_feed(10_000)),
            "/dup.xml": static(duplicate_ids()),
            "/endless.xml": endless,
            "/drip.xml": drip,
            "/bomb.xml": static(bomb, "application/rss+xml", **{"Content-Encoding": "gzip"}),
        }
    )
    origin.serve_feed("/good1.xml", rss("Good", [("g1", "Good one"), ("g2", "Good two")]))
    origin.serve_feed("/good2.xml", rss("Fine", [("f1", "Fine one")]))
    yield origin
    await origin.close()


async def test_hostile_origins_never_hurt_the_others(tmp_path: Path, hostile: Origin) -> None:
    names = [p.strip("/").removesuffix(".xml") for p in hostile.routes]
    sources = [Source(n, 600, url=hostile.url(f"/{n}.xml")) for n in names]
    config = make_config(
        tmp_path,
        sources,
        # generous enough that the endless body reaches the size cap first even when a busy
        # machine and this process's own parsing of the other feeds slow the transfer down
        total_timeout=5.0,
        read_timeout=1.0,
        max_body_bytes=2 * 1024 * 1024,
        max_entries_per_feed=500,
    )
    started = time.monotonic()
    async with App(config, clock=Clock()) as app:
        report = await app.run_once()
        states = {s.name: s for s in app.source_states()}
        titles = [e.title for e in app.store.latest_entries(names, 10_000)]
    elapsed = time.monotonic() - started
    outcome = {r.source: r.outcome for r in report.polled}

    # the good sources are stored and published
    assert outcome["good1"] == outcome["good2"] == "updated"
    assert {"Good one", "Good two", "Fine one"} <= set(titles)
    assert (tmp_path / "feeds" / "all.atom").stat().st_size > 0
    # bounded: the endless body and the drip end at the cap and the timeouts
    assert elapsed < 30
    for name in ("endless", "drip", "bomb", "garbage"):
        assert outcome[name] == "error", name
        assert states[name].last_error, name
    assert "larger than" in (states["endless"].last_error or "")
    assert "timed out" in (states["drip"].last_error or "").lower()
    # entity tricks: nothing expanded, no local file read
    assert all(SECRET not in t for t in titles)
    assert all("lollollol" not in t for t in titles)
    assert states["xxe"].entries <= 1 and states["laughs"].entries <= 1
    # a 10,000-item feed is cut to the per-feed cap; duplicate ids keep the first
    assert states["huge"].entries == 500
    assert states["dup"].entries == 2
    assert "First" in titles and "Second" not in titles
    # a wrongly labelled charset still reads
    assert outcome["latin1"] == "updated"
    assert any(t.startswith("Caf") for t in titles)


async def test_a_slow_source_does_not_delay_the_others(tmp_path: Path, hostile: Origin) -> None:
    goods = [Source(f"good{i}", 600, url=hostile.url(f"/good{1 + i % 2}.xml")) for i in range(40)]
    config = make_config(
        tmp_path, [Source("drip", 600, url=hostile.url("/drip.xml")), *goods], total_timeout=3.0
    )
    async with App(config, clock=Clock()) as app:
        task = asyncio.create_task(app.run_once())
        await asyncio.sleep(1.5)
        # well before the slow source times out, every other source is polled and stored
        states = {s.name: s for s in app.source_states()}
        assert all(states[g.name].last_success_at is not None for g in goods)
        assert not task.done()
        report = await task
    assert {r.source for r in report.polled if r.outcome == "error"} == {"drip"}


async def test_many_sources_on_one_slow_host_wait_their_turn_without_timing_out(
    tmp_path: Path,
) -> None:
    origin = await Origin().start()
    in_flight = 0
    most = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.4)
        in_flight -= 1
        return web.Response(body=rss("S", [(request.path, "Item")]), content_type="text/xml")

    try:
        for i in range(12):
            origin.routes[f"/s{i}.xml"] = slow
        sources = [Source(f"s{i}", 600, url=origin.url(f"/s{i}.xml")) for i in range(12)]
        # each answer takes 0.4 s; 12 sources, 2 at a time on the host: 2.4 s in all, while
        # each fetch may take at most 1 s once it is sent
        config = make_config(tmp_path, sources, per_host=2, total_timeout=1.0)
        async with App(config, clock=Clock()) as app:
            report = await app.run_once()
    finally:
        await origin.close()
    assert {r.outcome for r in report.polled} == {"updated"}
    assert most == 2
