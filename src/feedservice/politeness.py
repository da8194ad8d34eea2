"""When to ask a server again: backoff, Retry-After, cache lifetimes and the next poll time.

Pure functions: no I/O, no clock, no global random state. The caller injects ``now``
(a timezone-aware UTC datetime) and a :class:`random.Random`, so every decision is
reproducible in tests and two sources never share a random stream by accident.

The policy (issue 3, "status policy" and "when to poll next"):

* failures back off exponentially with jitter and never stop for good
  (:func:`backoff_delay`);
* Retry-After (RFC 9110 section 10.2.3) and the cache lifetime (RFC 9111 section 4.2)
  are parsed here (:func:`parse_retry_after`, :func:`parse_cache_max_age`);
* :func:`next_check` combines the configured interval with the feed's and server's hints;
* :func:`adaptive_interval` learns a feed's own rhythm from its entry dates.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import pairwise
from statistics import median
from typing import Final, Literal
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

#: A Retry-After longer than this is taken as this: a buggy or hostile server must not be
#: able to park a source for years (issue 3: "never stopping for good").
MAX_RETRY_AFTER: Final = 7 * 24 * 3600.0

#: How many of the most recent entries :func:`adaptive_interval` looks at.
ADAPTIVE_WINDOW: Final = 20

NextCheckReason = Literal["interval", "ttl", "cache", "retry-after", "backoff"]


def backoff_delay(failures: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``).

    The ceiling grows as ``base * 2**(failures - 1)`` up to ``cap``; the delay is drawn
    uniformly from ``[floor, ceiling]`` where ``floor = min(base / 2, ceiling)``.

    Why not AWS's plain "full jitter" ``uniform(0, ceiling)``: it spreads retries just
    as well, but it can draw ~0 s, i.e. hammer a failing server immediately, and for
    the first failure half of all sources would retry within ``base / 2``. The floor
    keeps every retry at least ``base / 2`` away, while the draw still covers (almost)
    the whole window, so sources that failed together (one outage) spread over it and
    never resynchronise. There is no "give up": at the cap the source is still retried
    (issue 3: "never stopping for good").

    Raises:
        ValueError: ``failures < 1``, or ``base``/``cap`` not positive.
    """
    if failures < 1:
        raise ValueError(f"failures must be >= 1, got {failures}")
    if base <= 0 or cap <= 0:
        raise ValueError(f"base and cap must be positive, got base={base}, cap={cap}")
    # 2**62 is far past any cap; limiting the exponent avoids float overflow for a
    # source that has failed for years.
    ceiling = min(cap, base * float(2 ** min(failures - 1, 62)))
    floor = min(base / 2.0, ceiling)
    return rng.uniform(floor, ceiling)


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime; RFC 9110 section 5.6.7) as UTC.

    ``None`` when ``value`` is not a date.
    """
    try:
        parsed = parsedate_to_datetime(value.strip())
        if parsed.tzinfo is None:
            # asctime has no zone; HTTP-dates are always GMT (RFC 9110 section 5.6.7).
            return parsed.replace(tzinfo=UTC)
        # inside the try: "Fri, 31 Dec 9999 23:59:59 -1400" is past year 9999 in UTC
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_retry_after(value: str, *, now: datetime, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds to wait from a Retry-After value (RFC 9110 section 10.2.3).

    ``value`` is delta-seconds (``"120"``) or an HTTP-date, taken relative to ``now``
    (pass the response's Date header when there is one, so clock skew between us and
    the server does not matter). A date in the past gives ``0.0``; the result is capped at
    ``cap``. Returns ``None`` when the value is neither form.
    """
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    when = parse_http_date(value)
    if when is None:
        return None
    return min(max(0.0, (when - now).total_seconds()), cap)


def host_key(url: str) -> str | None:
    """The key a host-wide Retry-After applies to: ``scheme://host[:port]``, lower-cased.

    Issue 3: a 429/503 with Retry-After holds back every source on that host, not only
    the one that got it. ``None`` for local paths and URLs without a host.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host or parts.scheme.lower() not in ("http", "https"):
        return None
    scheme = parts.scheme.lower()
    if ":" in host:  # IPv6 literal: keep the brackets so the port stays unambiguous
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts and CIMultiDicts."""
    value = headers.get(name)
    if value is not None or isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return value
    lname = name.lower()
    for key, val in headers.items():
        if key.lower() == lname:
            return val
    return None


def parse_cache_max_age(headers: Mapping[str, str], *, now: datetime) -> float | None:
    """The freshness lifetime left, in seconds, from response headers (RFC 9111 4.2.1).

    ``Cache-Control: max-age`` wins over ``Expires`` (minus ``Date``, or ``now`` when the
    response has no Date). ``s-maxage`` is ignored: it is for shared caches and we are a
    private client. The ``Age`` header is subtracted (RFC 9111 4.2.3): an intermediary may
    already have held the response. ``no-store`` / ``no-cache`` give ``None`` (no hint: the
    configured interval decides). An invalid Expires means "already expired" (RFC 9111
    5.3), i.e. ``0.0``. ``None`` when the response says nothing about freshness.
    """
    cache_control = _header(headers, "Cache-Control")
    max_age: float | None = None
    if cache_control:
        for directive in cache_control.split(","):
            name, _, arg = directive.strip().partition("=")
            name = name.strip().lower()
            if name in ("no-store", "no-cache"):
                return None
            if name == "max-age":
                arg = arg.strip().strip('"')
                # RFC 9111 4.2.1: an invalid max-age makes the response stale.
                max_age = float(arg) if arg.isascii() and arg.isdigit() else 0.0
    if max_age is None:
        expires = _header(headers, "Expires")
        if expires is None:
            return None
        expires_at = parse_http_date(expires)
        if expires_at is None:
            return 0.0
        date_value = _header(headers, "Date")
        date = parse_http_date(date_value) if date_value else None
        max_age = (expires_at - (date or now)).total_seconds()
    age_value = _header(headers, "Age")
    if age_value:
        age_value = age_value.strip()
        if age_value.isascii() and age_value.isdigit():
            max_age -= float(age_value)
    return max(0.0, max_age)


def next_check(
    now: datetime,
    *,
    interval: float,
    ttl: float | None = None,
    max_age: float | None = None,
    retry_after: float | None = None,
    backoff: float | None = None,
    min_interval: float,
    max_interval: float,
    jitter: float,
    rng: random.Random,
) -> tuple[datetime, NextCheckReason]:
    """When to poll a source next, and why.

    The delay is the largest of the configured ``interval``, the feed's ``ttl`` (RSS ttl /
    sy:updatePeriod) and the cache lifetime ``max_age``, clamped to
    ``[min_interval, max_interval]`` -- feed and cache hints may slow us down, but never
    past ``max_interval``, so a ``ttl`` of a year cannot silence a source.

    ``retry_after`` and ``backoff`` (after a failure) are then applied *after* the clamp:
    Retry-After is an explicit request from the server (RFC 9110 10.2.3) and is honoured
    even when longer than ``max_interval`` (it is capped on parsing, see
    :data:`MAX_RETRY_AFTER`); the backoff has its own cap (:func:`backoff_delay`). Both
    are still at least ``min_interval``.

    Jitter adds ``uniform(0, jitter * delay)``: only ever later, never earlier than due,
    so Retry-After is respected and sources configured alike drift apart.

    Returns ``(when, reason)`` where ``reason`` names the term that decided the delay:
    ``"interval" | "ttl" | "cache" | "retry-after" | "backoff"``.

    Raises:
        ValueError: ``now`` is naive, or the bounds are inconsistent.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if min_interval < 0 or max_interval < min_interval:
        raise ValueError(f"bad bounds: min_interval={min_interval}, max_interval={max_interval}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    delay = interval
    reason: NextCheckReason = "interval"
    if ttl is not None and ttl > delay:
        delay, reason = ttl, "ttl"
    if max_age is not None and max_age > delay:
        delay, reason = max_age, "cache"
    delay = min(max(delay, min_interval), max_interval)
    if backoff is not None and backoff > delay:
        delay, reason = backoff, "backoff"
    if retry_after is not None and retry_after > delay:
        delay, reason = retry_after, "retry-after"
    delay = max(delay, min_interval)
    if jitter:
        delay += rng.uniform(0.0, jitter * delay)
    return now + timedelta(seconds=delay), reason


def adaptive_interval(
    entry_dates: Sequence[datetime],
    *,
    interval: float,
    min_interval: float,
    max_interval: float,
) -> float:
    """A poll interval learnt from when the feed publishes (``adaptive: true``).

    Half the median gap between the :data:`ADAPTIVE_WINDOW` most recent distinct entry
    dates: polling twice per typical gap sees most new entries within about half a gap
    (Nyquist-style), and the median ignores one burst or one long holiday. With fewer
    than three distinct dates there is no rhythm to learn and ``interval`` is used.
    The result is clamped to ``[min_interval, max_interval]``.
    """
    recent = sorted(set(entry_dates), reverse=True)[:ADAPTIVE_WINDOW]
    if len(recent) < 3:
        learnt = interval
    else:
        gaps = [(a - b).total_seconds() for a, b in pairwise(recent)]
        learnt = median(gaps) / 2.0
    return min(max(learnt, min_interval), max_interval)
