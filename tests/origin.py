"""A loopback feed origin for tests: an aiohttp server on 127.0.0.1, port 0.

Every route is a small function of the request, so a test can script each odd case
(validators, redirects, 410, Retry-After, ...) and read back what the client sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rss(title: str, items: list[tuple[str, str]], *, ttl: int | None = None) -> bytes:
    """An RSS 2.0 document with (guid, title) items, dated one hour apart."""
    base = datetime(2026, 11, 20, tzinfo=UTC)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>',
        f"<title>{title}</title><link>https://origin.example/</link><description>d</description>",
    ]
    if ttl is not None:
        parts.append(f"<ttl>{ttl}</ttl>")
    for i, (guid, item_title) in enumerate(items):
        date = format_datetime(base + timedelta(hours=i), usegmt=True)
        parts.append(
            f"<item><guid isPermaLink='false'>{guid}</guid><title>{item_title}</title>"
            f"<link>https://origin.example/{guid}</link><pubDate>{date}</pubDate>"
            f"<description>Body of {item_title}.</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class Origin:
    """Routes by path; ``seen`` records every request in order."""

    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    server: TestServer | None = None

    async def start(self) -> Origin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def serve_feed(self, path: str, body: bytes) -> None:
        """A well-behaved origin: ETag and Last-Modified, 304 when they match."""
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        modified = "Wed, 25 Nov 2026 10:00:00 GMT"

        async def handler(request: web.Request) -> web.StreamResponse:
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(
                body=body,
                headers={
                    "ETag": etag,
                    "Last-Modified": modified,
                    "Content-Type": "application/rss+xml",
                },
            )

        self.routes[path] = handler

    def serve_status(self, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers=headers or {})

        self.routes[path] = handler
