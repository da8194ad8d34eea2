"""fetch.py against a real aiohttp server on 127.0.0.1 (port 0) serving every odd case."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import os
import random
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from feedservice import __version__
from feedservice.errors import FetchError
from feedservice.fetch import (
    ACCEPT,
    FetchOptions,
    default_user_agent,
    fetch_feed,
    make_session,
)
from feedservice.model import FetchResult, FetchStatus, Validators

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
NO_VALIDATORS = Validators()
SMALL = FetchOptions(connect_timeout=2.0, read_timeout=5.0, total_timeout=10.0)
SERVER_DATE = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Origin:
    """What the test server saw, plus knobs the tests turn."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    plain_body: bytes = FEED
    inflight: int = 0
    max_inflight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def headers_for(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]


def build_app(origin: Origin) -> web.Application:
    routes = web.RouteTableDef()
    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin.requests.append((request.path, dict(request.headers)))
        return await handler(request)

    @routes.get("/etag")
    async def etag(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(
            body=FEED,
            content_type="application/rss+xml",
            headers={"ETag": '"v1"', "Cache-Control": "public, max-age=600"},
        )

    @routes.get("/lm")
    async def last_modified(request: web.Request) -> web.StreamResponse:
        stamp = "Wed, 01 Jan 2025 00:00:00 GMT"
        if request.headers.get("If-Modified-Since") == stamp:
            return web.Response(status=304)
        return web.Response(body=FEED, headers={"Last-Modified": stamp})

    @routes.get("/plain")
    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=origin.plain_body, headers={"Cache-Control": "no-store"})

    @routes.get("/expires")
    async def expires(request: web.Request) -> web.StreamResponse:
        later = SERVER_DATE + timedelta(seconds=900)
        return web.Response(
            body=FEED,
            headers={
                "Date": format_datetime(SERVER_DATE, usegmt=True),
                "Expires": format_datetime(later, usegmt=True),
            },
        )

    @routes.get("/chain/{codes}")
    async def chain(request: web.Request) -> web.StreamResponse:
        # /chain/301-302-308 -> 301 to /chain/302-308 -> 302 to /chain/308 -> 308 to /etag
        first, _, rest = request.match_info["codes"].partition("-")
        location = f"/chain/{rest}" if rest else "/etag"
        return web.Response(status=int(first), headers={"Location": location})

    @routes.get("/absolute-redirect")
    async def absolute_redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": origin.url("/etag")})

    @routes.get("/to/{kind}")
    async def to_scheme(request: web.Request) -> web.StreamResponse:
        target = {
            "file": "file:///etc/passwd",
            "ftp": "ftp://127.0.0.1/feed.xml",
            "js": "javascript:alert(1)",
            "data": "data:text/plain,hello",
        }[request.match_info["kind"]]
        return web.Response(status=302, headers={"Location": target})

    @routes.get("/no-location")
    async def no_location(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301)

    @routes.get("/loop-a")
    async def loop_a(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/loop-b"})

    @routes.get("/loop-b")
    async def loop_b(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": "/loop-a"})

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    @routes.get("/retry/{code}/{how}")
    async def retry(request: web.Request) -> web.StreamResponse:
        how = request.match_info["how"]
        if how == "seconds":
            value = "120"
        elif how == "date":
            # Relative to the response's Date, not our clock: the server's clock is years off.
            value = format_datetime(SERVER_DATE + timedelta(seconds=300), usegmt=True)
        elif how == "huge":
            value = str(10**12)
        else:
            value = "whenever"
        return web.Response(
            status=int(request.match_info["code"]),
            headers={"Retry-After": value, "Date": format_datetime(SERVER_DATE, usegmt=True)},
        )

    @routes.get("/big-length")
    async def big_length(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 5000)

    @routes.get("/big-chunked")
    async def big_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(200):  # up to 12.5 MiB if nobody stops reading
                await resp.write(b"y" * 65536)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            return resp
        await resp.write_eof()
        return resp

    @routes.get("/bomb")
    async def bomb(request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip_bomb(), headers={"Content-Encoding": "gzip"})

    @routes.get("/encoded/{coding}")
    async def encoded(request: web.Request) -> web.StreamResponse:
        coding = request.match_info["coding"]
        body = {
            "gzip": gzip.compress(FEED),
            "deflate": zlib.compress(FEED),
            "br": brotli.compress(FEED),
        }[coding]
        return web.Response(body=body, headers={"Content-Encoding": coding})

    @routes.get("/drip")
    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        resp.content_length = 10_000
        await resp.prepare(request)
        try:
            for _ in range(200):  # one byte every 50 ms: never silent long enough for sock_read
                await resp.write(b"<")
                await asyncio.sleep(0.05)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        return resp

    @routes.get("/stall")
    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 100
        await resp.prepare(request)
        await resp.write(b"<rss")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(origin.release.wait(), 10)
        return resp

    @routes.get("/garbage")
    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(body=GARBAGE, content_type="application/rss+xml")

    @routes.get("/set-cookie")
    async def set_cookie(request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=FEED)
        resp.set_cookie("session", "tracking-value", path="/")
        return resp

    @routes.get("/echo")
    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(body=FEED)

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.StreamResponse:
        origin.inflight += 1
        origin.max_inflight = max(origin.max_inflight, origin.inflight)
        try:
            await asyncio.sleep(0.05)
        finally:
            origin.inflight -= 1
        return web.Response(body=FEED)

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    return app


@functools.cache
def gzip_bomb(decoded: int = 64 << 20) -> bytes:
    """64 MiB of zeros in ~64 KB of gzip (built once, on first use)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    zeros = bytes(1 << 20)
    parts = [comp.compress(zeros) for _ in range(decoded >> 20)]
    parts.append(comp.flush())
    return b"".join(parts)


GARBAGE = bytes(random.Random(3).randrange(256) for _ in range(4096))


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    state = Origin()
    server = TestServer(build_app(state), host="127.0.0.1", port=None, shutdown_timeout=1.0)
    await server.start_server()
    state.server = server
    try:
        yield state
    finally:
        state.release.set()
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    validators: Validators = NO_VALIDATORS,
    options: FetchOptions = SMALL,
) -> FetchResult:
    return await fetch_feed(session, url, validators=validators, options=options, source="src")


# --- conditional GET -------------------------------------------------------------------------


async def test_etag_then_304(origin: Origin, session: aiohttp.ClientSession) -> None:
    url = origin.url("/etag")
    first = await fetch_feed(session, url, validators=NO_VALIDATORS, options=SMALL)
    assert first.status is FetchStatus.OK
    assert first.http_status == 200
    assert first.body == FEED
    assert first.content_type == "application/rss+xml"
    assert first.validators.etag == '"v1"'
    assert first.validators.body_hash == hashlib.sha256(FEED).hexdigest()
    assert first.max_age == 600
    assert first.permanent_url is None
    assert "If-None-Match" not in origin.headers_for("/etag")[0]

    second = await fetch_feed(session, url, validators=first.validators, options=SMALL)
    assert origin.headers_for("/etag")[1]["If-None-Match"] == '"v1"'
    assert second.status is FetchStatus.NOT_MODIFIED
    assert second.http_status == 304
    assert second.body is None
    assert second.validators == first.validators


async def test_last_modified_then_304(origin: Origin, session: aiohttp.ClientSession) -> None:
    url = origin.url("/lm")
    first = await fetch_feed(session, url, validators=NO_VALIDATORS, options=SMALL)
    assert first.status is FetchStatus.OK
    assert first.validators.last_modified == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert first.validators.etag is None
    second = await fetch_feed(session, url, validators=first.validators, options=SMALL)
    sent = origin.headers_for("/lm")[1]
    assert sent["If-Modified-Since"] == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert "If-None-Match" not in sent
    assert second.status is FetchStatus.NOT_MODIFIED
    assert second.validators.last_modified == first.validators.last_modified
    assert second.validators.body_hash == first.validators.body_hash


async def test_same_body_without_validators_is_not_modified(
    origin: Origin, session: aiohttp.ClientSession
) -> None:
    url = origin.url("/plain")
    first = await fetch_feed(session, url, validators=NO_VALIDATORS, options=SMALL)
    assert first.status is FetchStatus.OK
    assert first.validators.etag is None and first.validators.last_modified is None
    assert first.max_age is None  # no-store: no cache hint
    second = await fetch_feed(session, url, validators=first.validators, options=SMALL)
    assert second.status is FetchStatus.NOT_MODIFIED
    assert second.http_status == 200
    assert second.body is None
    origin.plain_body = FEED.replace(b"<title>t<", b"<title>changed<")
    third = await fetch_feed(session, url, validators=second.validators, options=SMALL)
    assert third.status is FetchStatus.OK
    assert third.body == origin.plain_body
    assert third.validators.body_hash != first.validators.body_hash


async def test_expires_minus_server_date_is_max_age(
    origin: Origin, session: aiohttp.ClientSession
) -> None:
    result = await fetch_feed(
        session, origin.url("/expires"), validators=NO_VALIDATORS, options=SMALL
    )
    assert result.max_age == 900


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "permanent"),
    [
        ("301", True),
        ("308", True),
        ("301-308-301", True),
        ("302", False),
        ("303", False),
        ("307", False),
        ("301-302", False),
        ("307-301", False),
        ("308-303-301", False),
    ],
)
async def test_redirect_chains(
    origin: Origin, session: aiohttp.ClientSession, codes: str, permanent: bool
) -> None:
    url = origin.url(f"/chain/{codes}")
    result = await fetch_feed(session, url, validators=NO_VALIDATORS, options=SMALL)
    assert result.status is FetchStatus.OK
    assert result.body == FEED
    assert result.url == url
    assert result.final_url == origin.url("/etag")
    assert result.permanent_url == (origin.url("/etag") if permanent else None)


async def test_permanent_redirect_to_304_keeps_permanent_url(
    origin: Origin, session: aiohttp.ClientSession
) -> None:
    result = await fetch_feed(
        session,
        origin.url("/absolute-redirect"),
        validators=Validators(etag='"v1"'),
        options=SMALL,
    )
    assert result.status is FetchStatus.NOT_MODIFIED
    assert result.permanent_url == origin.url("/etag")
    # The conditional header travels with every hop.
    assert origin.headers_for("/etag")[0]["If-None-Match"] == '"v1"'


@pytest.mark.parametrize("kind", ["file", "ftp", "js", "data"])
async def test_redirect_to_other_scheme_refused(
    origin: Origin, session: aiohttp.ClientSession, kind: str
) -> None:
    with pytest.raises(FetchError, match="refused redirect") as info:
        await fetch_feed(
            session, origin.url(f"/to/{kind}"), validators=NO_VALIDATORS, options=SMALL
        )
    assert info.value.status == 302
    assert info.value.source is None


async def test_redirect_without_location(origin: Origin, session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError, match="without Location") as info:
        await fetch(session, origin.url("/no-location"))
    assert info.value.status == 301
    assert info.value.source == "src"


async def test_redirect_loop(origin: Origin, session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError, match="redirect loop"):
        await fetch(session, origin.url("/loop-a"))


async def test_too_many_redirects(origin: Origin, session: aiohttp.ClientSession) -> None:
    options = FetchOptions(max_redirects=2)
    with pytest.raises(FetchError, match="too many redirects"):
        await fetch(session, origin.url("/chain/301-301-301"), options=options)
    ok = await fetch_feed(
        session, origin.url("/chain/301-301"), validators=NO_VALIDATORS, options=options
    )
    assert ok.status is FetchStatus.OK


# --- status policy ---------------------------------------------------------------------------


async def test_410_is_gone(origin: Origin, session: aiohttp.ClientSession) -> None:
    kept = Validators(etag='"old"', body_hash="abc")
    result = await fetch_feed(session, origin.url("/status/410"), validators=kept, options=SMALL)
    assert result.status is FetchStatus.GONE
    assert result.http_status == 410
    assert result.body is None
    assert result.validators == kept


@pytest.mark.parametrize("code", [400, 401, 403, 404, 500, 502, 504, 300])
async def test_error_statuses_raise(
    origin: Origin, session: aiohttp.ClientSession, code: int
) -> None:
    url = origin.url(f"/status/{code}")
    with pytest.raises(FetchError) as info:
        await fetch(session, url)
    assert info.value.status == code
    assert info.value.url == url
    assert info.value.source == "src"
    assert info.value.retry_after is None
    assert f"HTTP {code}" in str(info.value)


@pytest.mark.parametrize("code", [429, 503])
@pytest.mark.parametrize(
    ("how", "expected"), [("seconds", 120.0), ("date", 300.0), ("huge", 7 * 86400.0), ("bad", None)]
)
async def test_retry_after(
    origin: Origin, session: aiohttp.ClientSession, code: int, how: str, expected: float | None
) -> None:
    with pytest.raises(FetchError) as info:
        await fetch(session, origin.url(f"/retry/{code}/{how}"))
    assert info.value.status == code
    assert info.value.retry_after == expected


# --- size caps, decoding ---------------------------------------------------------------------


async def test_size_cap_by_content_length(origin: Origin, session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError, match="Content-Length 5000") as info:
        await fetch(session, origin.url("/big-length"), options=FetchOptions(max_body_bytes=4999))
    assert info.value.status == 200
    exact = await fetch_feed(
        session,
        origin.url("/big-length"),
        validators=NO_VALIDATORS,
        options=FetchOptions(max_body_bytes=5000),
    )
    assert exact.body == b"x" * 5000


async def test_size_cap_while_streaming(origin: Origin, session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError, match="aborted while reading"):
        await fetch(
            session, origin.url("/big-chunked"), options=FetchOptions(max_body_bytes=300_000)
        )


async def test_gzip_bomb_is_capped(origin: Origin, session: aiohttp.ClientSession) -> None:
    assert len(gzip_bomb()) < 1 << 20  # small on the wire ...
    with pytest.raises(FetchError, match="aborted while reading"):  # ... huge decoded
        await fetch(session, origin.url("/bomb"), options=FetchOptions(max_body_bytes=1 << 20))


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_content_codings_decoded(
    origin: Origin, session: aiohttp.ClientSession, coding: str
) -> None:
    result = await fetch_feed(
        session, origin.url(f"/encoded/{coding}"), validators=NO_VALIDATORS, options=SMALL
    )
    assert result.body == FEED
    assert result.validators.body_hash == hashlib.sha256(FEED).hexdigest()  # of decoded bytes
    assert coding in origin.headers_for(f"/encoded/{coding}")[0]["Accept-Encoding"]


async def test_binary_garbage_is_returned(origin: Origin, session: aiohttp.ClientSession) -> None:
    result = await fetch_feed(
        session, origin.url("/garbage"), validators=NO_VALIDATORS, options=SMALL
    )
    assert result.status is FetchStatus.OK
    assert result.body == GARBAGE


# --- timeouts and connections ----------------------------------------------------------------


async def test_slow_drip_ends_at_total_timeout(
    origin: Origin, session: aiohttp.ClientSession
) -> None:
    options = FetchOptions(connect_timeout=1.0, read_timeout=5.0, total_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out \(total 1s\)") as info:
        await fetch(session, origin.url("/drip"), options=options)
    elapsed = time.monotonic() - started
    # Bounded: the drip alone would take 10 s; the read timeout never fires.
    assert 0.9 <= elapsed < 5.0
    assert info.value.status is None


async def test_silent_server_hits_read_timeout(
    origin: Origin, session: aiohttp.ClientSession
) -> None:
    options = FetchOptions(connect_timeout=1.0, read_timeout=0.3, total_timeout=8.0)
    with pytest.raises(FetchError, match="timed out") as info:
        await fetch(session, origin.url("/stall"), options=options)
    assert "total" not in str(info.value)


async def test_closed_port_is_fetch_error(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/feed.xml"
    with pytest.raises(FetchError) as info:
        await fetch(session, url)
    assert info.value.status is None
    assert info.value.url == url
    assert isinstance(info.value.__cause__, aiohttp.ClientError | OSError)


async def test_invalid_url_is_fetch_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError):
        await fetch(session, "http://[::1/feed")


@pytest.mark.parametrize("url", ["ftp://example.org/feed", "feed.xml", "javascript:alert(1)"])
async def test_unsupported_urls(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(FetchError, match="only http, https and absolute file paths"):
        await fetch(session, url)


# --- headers and cookies ---------------------------------------------------------------------


async def test_user_agent_accept_and_no_cookies(
    origin: Origin, session: aiohttp.ClientSession
) -> None:
    # By host name: aiohttp's default jar ignores cookies from IP addresses, so 127.0.0.1
    # would pass even with a real jar.
    await fetch(session, origin.url("/set-cookie").replace("127.0.0.1", "localhost"))
    await fetch(session, origin.url("/echo").replace("127.0.0.1", "localhost"))
    sent = origin.headers_for("/echo")[0]
    assert sent["User-Agent"] == default_user_agent()
    assert sent["User-Agent"].startswith(f"feedservice/{__version__} (+http")
    assert sent["Accept"] == ACCEPT
    assert "application/atom+xml" in sent["Accept"]
    assert "Cookie" not in sent


async def test_custom_user_agent_per_fetch(origin: Origin, session: aiohttp.ClientSession) -> None:
    await fetch(session, origin.url("/echo"), options=FetchOptions(user_agent="probe/1"))
    assert origin.headers_for("/echo")[0]["User-Agent"] == "probe/1"


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "per_host", "expected"), [(64, 3, 3), (2, 8, 2)])
async def test_connection_limits(origin: Origin, total: int, per_host: int, expected: int) -> None:
    async with make_session(max_concurrency=total, per_host=per_host) as s:
        results = await asyncio.gather(*(fetch(s, origin.url("/slow")) for _ in range(20)))
    assert len(results) == 20
    assert origin.max_inflight == expected


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        make_session(max_concurrency=0)
    with pytest.raises(ValueError):
        FetchOptions(total_timeout=0)


# --- local files -----------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True])
async def test_local_file(tmp_path: Path, session: aiohttp.ClientSession, as_url: bool) -> None:
    path = tmp_path / "my feed.xml"
    path.write_bytes(FEED)
    url = path.as_uri() if as_url else str(path)
    first = await fetch_feed(session, url, validators=NO_VALIDATORS, options=SMALL)
    assert first.status is FetchStatus.OK
    assert first.body == FEED
    assert first.validators.etag and first.validators.last_modified

    same = await fetch_feed(session, url, validators=first.validators, options=SMALL)
    assert same.status is FetchStatus.NOT_MODIFIED
    assert same.validators == first.validators

    # Touched, same bytes: a new etag but the hash says nothing changed.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = await fetch_feed(session, url, validators=first.validators, options=SMALL)
    assert touched.status is FetchStatus.NOT_MODIFIED
    assert touched.validators.etag != first.validators.etag

    path.write_bytes(FEED + b"\n<!-- changed -->")
    changed = await fetch_feed(session, url, validators=touched.validators, options=SMALL)
    assert changed.status is FetchStatus.OK
    assert changed.body is not None and changed.body.endswith(b"changed -->")


async def test_local_file_errors(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    with pytest.raises(FetchError, match="cannot read file"):
        await fetch(session, str(tmp_path / "missing.xml"))
    with pytest.raises(FetchError, match="not a regular file"):
        await fetch(session, str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FetchError, match="not a regular file"):
        await fetch(session, str(fifo))
    big = tmp_path / "big.xml"
    big.write_bytes(b"z" * 2000)
    with pytest.raises(FetchError, match="larger than 1000"):
        await fetch(session, str(big), options=FetchOptions(max_body_bytes=1000))
    with pytest.raises(FetchError):
        await fetch(session, "file://otherhost/etc/passwd")


# --- broken servers (raw TCP) ----------------------------------------------------------------

RAW_REPLIES = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n<rss>only a bit",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "bad-gzip": (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip!!!!"
    ),
}


BODY_FAULTS = {"truncated", "bad-gzip"}


@pytest.mark.parametrize("kind", sorted(RAW_REPLIES))
async def test_broken_servers_are_fetch_errors(session: aiohttp.ClientSession, kind: str) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RAW_REPLIES[kind])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"http://127.0.0.1:{port}/feed"
        with pytest.raises(FetchError) as info:
            await fetch(session, url)
        assert info.value.url == url
        assert info.value.status is None  # no status the server really sent
        assert isinstance(info.value.__cause__, aiohttp.ClientError)
        expected = "broken response body" if kind in BODY_FAULTS else "invalid HTTP response"
        assert expected in str(info.value)
        assert "\n" not in str(info.value)
    finally:
        server.close()
        await server.wait_closed()
