"""HTTP: the published feeds with ETag / Last-Modified / 304 / gzip, the index page,
story permalink pages and /healthz. Calls only ``app``.

Feeds are served from the files in ``feeds_dir`` (the same bytes nginx would serve),
so ETags are content hashes and stay stable across restarts.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from feedservice import __version__
from feedservice.app import App
from feedservice.errors import FeedServiceError
from feedservice.model import Entry

CONTENT_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
FORMAT_LABELS = {"atom": "Atom", "rss": "RSS", "json": "JSON Feed"}
_FEED_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
APP_KEY = web.AppKey("feedservice_app", App)


class _MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's report of a request it could not parse (an ERROR with a traceback for
    every port scanner or broken client) into one WARNING line naming the client and what was
    wrong; errors in our own handlers keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            what = record.getMessage()
            record.msg = "%s: %s %s"
            record.args = (what, exc.code, " ".join(exc.message.split())[:200])
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def request_logger() -> logging.Logger:
    """The logger to give aiohttp's request handler (``AppRunner(..., logger=...)``)."""
    logger = logging.getLogger("feedservice.server")
    if not any(isinstance(f, _MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(_MalformedRequestFilter())
    return logger


@dataclass(frozen=True, slots=True)
class _Cached:
    mtime_ns: int
    size: int
    body: bytes
    etag: str
    last_modified: datetime
    gzipped: bytes | None = None


class FeedFiles:
    """Reads published files, caching bytes and ETag by (mtime, size)."""

    def __init__(self, feeds_dir: Path) -> None:
        self.feeds_dir = feeds_dir
        self._cache: dict[str, _Cached] = {}

    def get(self, filename: str, *, want_gzip: bool) -> _Cached | None:
        path = self.feeds_dir / filename
        try:
            st = path.stat()
        except OSError:
            return None
        cached = self._cache.get(filename)
        if cached is None or (cached.mtime_ns, cached.size) != (st.st_mtime_ns, st.st_size):
            try:
                body = path.read_bytes()
            except OSError:
                return None
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            modified = datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, UTC)
            cached = _Cached(st.st_mtime_ns, st.st_size, body, etag, modified)
            self._cache[filename] = cached
        if want_gzip and cached.gzipped is None:
            # mtime=0: the same bytes compress to the same bytes
            cached = _Cached(
                cached.mtime_ns,
                cached.size,
                cached.body,
                cached.etag,
                cached.last_modified,
                gzip.compress(cached.body, mtime=0),
            )
            self._cache[filename] = cached
        return cached


def _not_modified(request: web.Request, etag: str, modified: datetime) -> bool:
    """RFC 9110 13.1: If-None-Match wins over If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return modified <= since
    return False


def build_web_app(app: App) -> web.Application:
    """The aiohttp application serving ``app``'s feeds and pages."""
    files = FeedFiles(app.config.service.feeds_dir)
    web_app = web.Application()
    web_app[APP_KEY] = app

    async def feed(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        fmt = request.match_info["fmt"]
        if fmt not in CONTENT_TYPES or not _FEED_NAME.match(name):
            raise web.HTTPNotFound(text="no such feed\n")
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        cached = files.get(f"{name}.{fmt}", want_gzip=accepts_gzip)
        if cached is None:
            raise web.HTTPNotFound(text="no such feed (not published yet?)\n")
        headers = {
            "ETag": cached.etag,
            "Last-Modified": format_datetime(cached.last_modified, usegmt=True),
            "Cache-Control": "public, max-age=60",
            "Vary": "Accept-Encoding",
        }
        if _not_modified(request, cached.etag, cached.last_modified):
            return web.Response(status=304, headers=headers)
        body = cached.body
        if accepts_gzip and cached.gzipped is not None:
            body = cached.gzipped
            headers["Content-Encoding"] = "gzip"
        resp = web.Response(body=body, headers=headers)
        resp.headers["Content-Type"] = CONTENT_TYPES[fmt]
        return resp

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=render_index(app), content_type="text/html", charset="utf-8")

    async def story(request: web.Request) -> web.Response:
        try:
            entry = app.story_entry(request.match_info["source"], request.match_info["slug"])
        except FeedServiceError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from exc
        if entry is None:
            raise web.HTTPNotFound(text="no such story\n")
        return web.Response(
            text=render_story(app, entry), content_type="text/html", charset="utf-8"
        )

    async def healthz(request: web.Request) -> web.Response:
        try:
            states = app.source_states()
        except FeedServiceError as exc:
            return web.json_response({"status": "error", "error": str(exc)}, status=503)
        failing = [
            {
                "name": s.name,
                "failures": s.failures,
                "gone": s.gone,
                "last_status": s.last_status,
                "last_error": s.last_error,
                "next_check_at": s.next_check_at.isoformat(),
            }
            for s in states
            if s.failures or s.gone or s.last_error
        ]
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "sources": len(states),
                "failing": failing,
            },
            dumps=lambda o: json.dumps(o, indent=2),
        )

    web_app.router.add_get("/", index)
    web_app.router.add_get("/healthz", healthz)
    # a story's slug keeps its folders (normalise.story_slug)
    web_app.router.add_get("/stories/{source}/{slug:[a-z0-9_/-]+}.html", story)
    web_app.router.add_get("/{name}.{fmt}", feed)
    return web_app


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{head}<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .2rem .6rem; text-align: left; }}
.bad {{ color: #a00; }} code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def render_index(app: App) -> str:
    """The HTML index: every feed with subscribe links and autodiscovery, failing sources."""
    base = app.config.service.base_url
    esc = html.escape
    head: list[str] = []

    def listing(feeds: list[tuple[str, str, tuple[str, ...]]]) -> str:
        items: list[str] = []
        for name, title, formats in feeds:
            links = []
            for fmt in formats:
                url = f"{base}{name}.{fmt}"
                mime = CONTENT_TYPES[fmt].split(";")[0]
                head.append(
                    f'<link rel="alternate" type="{mime}" '
                    f'title="{esc(title)} ({FORMAT_LABELS[fmt]})" href="{esc(url)}">\n'
                )
                links.append(f'<a href="{esc(url)}">{FORMAT_LABELS[fmt]}</a>')
            items.append(f"<li><strong>{esc(title)}</strong> — {' · '.join(links)}</li>")
        return "<ul>" + "\n".join(items) + "</ul>"

    body = [
        "<h1>feedservice</h1>",
        "<p>Subscribe by pasting a feed link into your feed reader.</p>",
        "<h2>Feeds</h2>",
        listing(app.published_feeds()),
    ]
    watches = app.published_watches()
    if watches:
        body += [
            "<h2>Watches</h2>",
            "<p>Items from every source related to a story or a query, with why each matched.</p>",
            listing(watches),
        ]
    try:
        failing = app.failing_sources()
    except FeedServiceError as exc:
        body.append(f'<p class="bad">The store is unavailable: {esc(str(exc))}</p>')
        failing = []
    if failing:
        rows = "\n".join(
            f"<tr><td>{esc(s.name)}</td><td>{'gone' if s.gone else s.failures}</td>"
            f"<td>{esc(s.last_error or '')}</td>"
            f"<td>{esc(s.next_check_at.strftime('%Y-%m-%d %H:%M UTC'))}</td></tr>"
            for s in failing
        )
        body.append(
            '<h2 class="bad">Failing sources</h2><table><tr><th>source</th><th>failures</th>'
            f"<th>last error</th><th>next try</th></tr>{rows}</table>"
        )
    return _PAGE.format(title="feedservice", head="".join(head), body="\n".join(body))


def render_story(app: App, e: Entry) -> str:
    """A local story's permalink page (its content was sanitised when normalised)."""
    esc = html.escape
    date = e.published.strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"<article><h1>{esc(e.title)}</h1>"
        f'<p><time datetime="{e.published.isoformat()}">{date}</time>'
        + (f" · {esc(e.author)}" if e.author else "")
        + f"</p>\n{e.content_html}\n</article>"
        f'<p><a href="{esc(app.config.service.base_url)}">All feeds</a></p>'
    )
    return _PAGE.format(title=esc(e.title), head="", body=body)
