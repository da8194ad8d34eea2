"""Retrieve a feed's bytes over HTTP(S) (aiohttp) or from a local file: politely and safely.

One shared :class:`aiohttp.ClientSession` (:func:`make_session`) carries the global and
per-host connection limits, no cookies, content decoding and the default headers.
:func:`fetch_feed` does one retrieval and returns a :class:`~feedservice.model.FetchResult`
(``ok`` | ``not_modified`` | ``gone``); every failure -- HTTP status, timeout, connection,
size cap, refused redirect -- is a :class:`~feedservice.errors.FetchError`. Foreign
exceptions (aiohttp, OS, asyncio timeouts) are translated here and go no further.

This module takes plain arguments, never ``Config`` (see the architecture notes).

Why it looks the way it does (issue 3):

* conditional GET (RFC 9110 section 13) whenever validators are known, plus a body hash
  for servers that send none; the caller saves the new validators only after the
  entries are stored, so a crash between fetch and store never loses entries;
* redirects are followed by hand so that only an all-permanent chain (301/308) moves the
  stored URL, and so that no redirect can lead to a non-http(s) scheme;
* the body cap counts *decoded* bytes while streaming (aiohttp decodes in bounded pieces
  under flow control), so neither a huge body nor a decompression bomb is ever held;
* the whole retrieval (queueing for a connection, redirects, body) runs under one total
  deadline, so a server that drips a byte a second cannot hold a worker for long.
"""

from __future__ import annotations

import asyncio
import hashlib
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from feedservice import __version__
from feedservice.errors import FetchError
from feedservice.model import FetchResult, FetchStatus, Validators
from feedservice.politeness import parse_cache_max_age, parse_http_date, parse_retry_after

__all__ = [
    "ACCEPT",
    "PROJECT_URL",
    "FetchOptions",
    "default_user_agent",
    "fetch_feed",
    "make_session",
]

PROJECT_URL = "https://github.com/feedservice/feedservice"

#: Feed types first; generic XML/JSON a little lower; anything as a last resort (some
#: servers answer 406 to an Accept without a wildcard).
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, "
    "application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})


def _accept_encoding() -> str:
    """Advertise only the codings aiohttp can decode here (brotli when it is installed)."""
    codings = ["gzip", "deflate"]
    try:
        from aiohttp.compression_utils import HAS_BROTLI
    except ImportError:  # pragma: no cover - older aiohttp layouts
        HAS_BROTLI = False
    if HAS_BROTLI:
        codings.append("br")
    return ", ".join(codings)


ACCEPT_ENCODING = _accept_encoding()


def default_user_agent() -> str:
    """``feedservice/<version> (+<project URL>)``: names us and where to complain."""
    return f"feedservice/{__version__} (+{PROJECT_URL})"


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Per-fetch limits. Times are seconds; ``max_body_bytes`` counts decoded bytes.

    ``connect_timeout`` bounds the TCP/TLS connect, ``read_timeout`` the silence between
    two reads, ``total_timeout`` the whole retrieval including redirects and waiting for a
    free connection slot.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    user_agent: str = field(default_factory=default_user_agent)

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects}")


@lru_cache(maxsize=64)
def _client_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    # sock_connect, not connect: aiohttp's ``connect`` also counts waiting for a pool slot,
    # which under a per-host limit is queueing, not a slow server. The total deadline is
    # enforced around the whole retrieval by asyncio.timeout instead (see fetch_feed).
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


@lru_cache(maxsize=16384)
def _parsed_url(url: str) -> URL:
    # aiohttp parses a str URL on every request; a source asks at the same URL poll after
    # poll, and parsing it is a measurable share of a 304 (issue 3, warm pass)
    return URL(url)


def make_session(
    *,
    max_concurrency: int = 64,
    per_host: int = 8,
    user_agent: str | None = None,
    dns_cache_seconds: float = 300.0,
) -> aiohttp.ClientSession:
    """The one HTTP session a process shares; call it inside the running event loop.

    ``max_concurrency`` caps open connections overall, ``per_host`` per (host, port,
    scheme): a big host is never hit by more than ``per_host`` requests at once, and
    requests beyond a limit wait for a free slot. No cookies are stored or sent (a
    poller has no business carrying tracking state between sources). Responses are
    decoded (gzip, deflate, and br when brotli is installed). The caller closes the
    session (``await session.close()``, or ``async with``).

    Raises:
        ValueError: a limit is below 1.
    """
    if max_concurrency < 1 or per_host < 1:
        raise ValueError(
            f"limits must be >= 1, got max_concurrency={max_concurrency}, per_host={per_host}"
        )
    connector = aiohttp.TCPConnector(
        limit=max_concurrency,
        limit_per_host=per_host,
        ttl_dns_cache=int(dns_cache_seconds),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        headers={
            "User-Agent": user_agent or default_user_agent(),
            "Accept": ACCEPT,
            "Accept-Encoding": ACCEPT_ENCODING,
        },
        timeout=_client_timeout(10.0, 30.0),
        raise_for_status=False,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _is_http(url: str) -> bool:
    head = url[:8].lower()
    return head.startswith("http://") or head == "https://"


async def fetch_feed(
    session: aiohttp.ClientSession,
    url: str,
    *,
    validators: Validators,
    options: FetchOptions,
    source: str | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> FetchResult:
    """Retrieve ``url`` (http/https, an absolute file path or a ``file://`` URL).

    Sends If-None-Match / If-Modified-Since from ``validators``. Returns a result with
    status ``OK`` (``body`` set; decoded bytes, not parsed -- parsing is not fetch's job),
    ``NOT_MODIFIED`` (304, or a 200 whose body hashes to ``validators.body_hash``, or an
    unchanged local file) or ``GONE`` (410). The result carries the new validators, which
    the caller saves *after* storing the entries, the freshness lifetime (``max_age``)
    and, when every redirect on the way was 301/308, ``permanent_url``.

    ``clock`` gives "now" for HTTP-dates when the response has no Date header.

    Raises:
        FetchError: with ``source``, ``url`` and ``status`` (``None`` when there was no
            response): any other HTTP status (``retry_after`` set from Retry-After, e.g.
            on 429/503), a redirect without Location, to a non-http(s) scheme, in a loop
            or beyond ``options.max_redirects``; a body over ``options.max_body_bytes``
            (decoded); a timeout (connect, read or total); a connection, TLS, DNS or
            decoding error; an unreadable local file; an unsupported URL.
    """
    if _is_http(url):
        deadline = asyncio.timeout(options.total_timeout)
        try:
            async with deadline:
                return await _fetch_http(session, url, validators, options, source, clock)
        except FetchError:
            raise
        except TimeoutError as exc:
            # Covers our total deadline and aiohttp's sock_connect / sock_read timeouts.
            if deadline.expired():
                what = f"total {options.total_timeout:g}s"
            else:
                what = str(exc) or type(exc).__name__
            raise FetchError(f"timed out ({what})", source=source, url=url) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise FetchError(_describe(exc), source=source, url=url) from exc
    path = _local_path(url)
    if path is None:
        scheme = url.partition(":")[0] if ":" in url else ""
        what = f"unsupported URL scheme {scheme!r}" if scheme else "not an http(s) URL"
        raise FetchError(
            f"{what}: only http, https and absolute file paths", source=source, url=url
        )
    return await asyncio.to_thread(_read_file, path, url, validators, options, source)


def _describe(exc: BaseException) -> str:
    """One short line for a foreign error: it ends up in logs and the status table."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        what = f"broken response body: {exc}"
    elif isinstance(exc, aiohttp.ClientResponseError):
        # Raised by aiohttp's parser (bad status line, oversized header ...): its "400" is
        # aiohttp's own verdict, not the server's status, so it is not reported as one.
        what = f"invalid HTTP response: {exc.message}"
    else:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    what = " ".join(what.split())
    return what if len(what) <= 200 else what[:197] + "..."


async def _fetch_http(
    session: aiohttp.ClientSession,
    url: str,
    validators: Validators,
    options: FetchOptions,
    source: str | None,
    clock: Callable[[], datetime],
) -> FetchResult:
    headers: dict[str, str] | None = None
    if validators.etag or validators.last_modified:
        headers = {}
        if validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
    if session.headers.get("User-Agent") != options.user_agent:
        headers = headers or {}
        headers["User-Agent"] = options.user_agent
    timeout = _client_timeout(options.connect_timeout, options.read_timeout)

    target: str | URL
    try:
        target = _parsed_url(url)
    except ValueError:
        target = url  # aiohttp refuses it as it always did (InvalidUrlClientError)
    seen = {url}
    hops = 0
    permanent = True
    while True:
        async with session.get(
            target, headers=headers, allow_redirects=False, timeout=timeout
        ) as resp:
            status = resp.status
            if status not in _REDIRECTS:
                return await _read_response(
                    resp, url, validators, options, source, clock, hops, permanent
                )
            location = resp.headers.get("Location")
            if not location:
                raise FetchError(
                    f"HTTP {status} redirect without Location (from {resp.url})",
                    source=source,
                    url=url,
                    status=status,
                )
            nxt = resp.url.join(URL(location))
            # Issue 3: only http(s); a redirect to file:, ftp:, javascript: ... is refused
            # (a feed server must never make us read local files or other protocols).
            if nxt.scheme not in ("http", "https"):
                raise FetchError(
                    f"refused redirect to a {nxt.scheme or 'relative'!s} URL: {location}",
                    source=source,
                    url=url,
                    status=status,
                )
            hops += 1
            if hops > options.max_redirects:
                raise FetchError(
                    f"too many redirects (more than {options.max_redirects})",
                    source=source,
                    url=url,
                    status=status,
                )
            nxt_str = str(nxt)
            if nxt_str in seen:
                raise FetchError(
                    f"redirect loop at {nxt_str}", source=source, url=url, status=status
                )
            seen.add(nxt_str)
            # RFC 9110 15.4: only 301/308 say "use the new URL from now on"; one
            # temporary hop anywhere in the chain means the old URL stays.
            if status not in _PERMANENT:
                permanent = False
            target = nxt


def _header_text(value: str) -> str:
    """A header value as valid text: aiohttp decodes bytes that are not UTF-8 as surrogate
    escapes, which SQLite cannot store (one such value failed the whole pass's records)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _validator(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """An ETag or Last-Modified to send back, or None when it is not ASCII (it could not be
    stored or sent back as it came; the body hash still tells an unchanged body)."""
    value = headers.get(name)
    return value if value is not None and value.isascii() else None


async def _read_response(
    resp: aiohttp.ClientResponse,
    url: str,
    validators: Validators,
    options: FetchOptions,
    source: str | None,
    clock: Callable[[], datetime],
    hops: int,
    permanent: bool,
) -> FetchResult:
    status = resp.status
    h = resp.headers
    final_url = str(resp.url) if hops else url
    permanent_url = final_url if hops and permanent else None

    if status == 304:
        # RFC 9111 4.3.4: a 304 may carry fresher validators; keep the old ones otherwise.
        kept = Validators(
            etag=_validator(h, "ETag") or validators.etag,
            last_modified=_validator(h, "Last-Modified") or validators.last_modified,
            body_hash=validators.body_hash,
        )
        return FetchResult(
            status=FetchStatus.NOT_MODIFIED,
            url=url,
            http_status=304,
            final_url=final_url,
            permanent_url=permanent_url,
            validators=kept,
            max_age=parse_cache_max_age(h, now=clock()),
        )
    if status == 410:
        return FetchResult(
            status=FetchStatus.GONE,
            url=url,
            http_status=410,
            final_url=final_url,
            permanent_url=permanent_url,
            validators=validators,
        )
    if not 200 <= status < 300:
        retry_after = None
        value = h.get("Retry-After")
        if value is not None:
            retry_after = parse_retry_after(value, now=_server_now(h, clock))
        reason = _header_text(resp.reason or "")
        message = f"HTTP {status} {reason}".rstrip()
        if hops:
            message += f" (at {final_url})"
        if retry_after is not None:
            message += f"; retry after {retry_after:.0f}s"
        raise FetchError(message, source=source, url=url, status=status, retry_after=retry_after)

    cap = options.max_body_bytes
    length = resp.content_length
    if length is not None and length > cap:
        # Content-Length is the encoded size; decoded is at least as large in practice.
        raise FetchError(
            f"body larger than {cap} bytes (Content-Length {length})",
            source=source,
            url=url,
            status=status,
        )
    chunks: list[bytes] = []
    size = 0
    # Decoded bytes, counted as they arrive: abort before holding more than the cap.
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise FetchError(
                f"body larger than {cap} bytes (aborted while reading)",
                source=source,
                url=url,
                status=status,
            )
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    # sha256 runs at ~1-2 GB/s: microseconds per feed, far below parsing, so always hash.
    body_hash = hashlib.sha256(body).hexdigest()
    new_validators = Validators(
        etag=_validator(h, "ETag"),
        last_modified=_validator(h, "Last-Modified"),
        body_hash=body_hash,
    )
    max_age = parse_cache_max_age(h, now=clock())
    if body_hash == validators.body_hash:
        # Issue 3: a server with no validators sent the same bytes: nothing to parse.
        return FetchResult(
            status=FetchStatus.NOT_MODIFIED,
            url=url,
            http_status=status,
            final_url=final_url,
            permanent_url=permanent_url,
            validators=new_validators,
            max_age=max_age,
        )
    return FetchResult(
        status=FetchStatus.OK,
        url=url,
        http_status=status,
        body=body,
        content_type=h.get("Content-Type"),
        final_url=final_url,
        permanent_url=permanent_url,
        validators=new_validators,
        max_age=max_age,
    )


def _server_now(headers: CIMultiDictProxy[str], clock: Callable[[], datetime]) -> datetime:
    """The response's Date (so server clock skew cancels out in Retry-After), else now."""
    value = headers.get("Date")
    date = parse_http_date(value) if value else None
    return date or clock()


# --- local files ----------------------------------------------------------------------------


def _local_path(url: str) -> Path | None:
    """An absolute path from ``/abs/path`` or ``file:///abs/path`` (host empty or localhost)."""
    if url[:7].lower() == "file://":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            return None
        path = Path(unquote(parts.path))
    else:
        path = Path(url)
    return path if path.is_absolute() else None


def _read_file(
    path: Path, url: str, validators: Validators, options: FetchOptions, source: str | None
) -> FetchResult:
    """Read a local feed file (runs in a worker thread).

    The ETag is made of the modification time (ns) and size, so an untouched file is
    NOT_MODIFIED without reading it; a touched file with the same bytes is NOT_MODIFIED
    by its hash. Only regular files are read: a FIFO would block a worker forever and
    a device like /dev/zero never ends.
    """
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise FetchError("not a regular file", source=source, url=url)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        last_modified = formatdate(st.st_mtime, usegmt=True)
        if etag == validators.etag:
            return FetchResult(
                status=FetchStatus.NOT_MODIFIED, url=url, final_url=url, validators=validators
            )
        cap = options.max_body_bytes
        if st.st_size > cap:
            raise FetchError(f"body larger than {cap} bytes ({st.st_size})", source=source, url=url)
        with path.open("rb") as fh:
            body = fh.read(cap + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FetchError(f"cannot read file: {reason}", source=source, url=url) from exc
    if len(body) > cap:  # grew between stat and read
        raise FetchError(f"body larger than {cap} bytes", source=source, url=url)
    body_hash = hashlib.sha256(body).hexdigest()
    new_validators = Validators(etag=etag, last_modified=last_modified, body_hash=body_hash)
    if body_hash == validators.body_hash:
        return FetchResult(
            status=FetchStatus.NOT_MODIFIED, url=url, final_url=url, validators=new_validators
        )
    return FetchResult(
        status=FetchStatus.OK,
        url=url,
        body=body,
        final_url=url,
        validators=new_validators,
    )
