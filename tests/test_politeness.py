"""politeness.py: backoff, Retry-After, cache lifetimes, next poll time, adaptive interval."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from feedservice.politeness import (
    MAX_RETRY_AFTER,
    adaptive_interval,
    backoff_delay,
    host_key,
    next_check,
    parse_cache_max_age,
    parse_http_date,
    parse_retry_after,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86400.0


# --- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 10, 20, 100, 10_000])
def test_backoff_within_floor_and_cap(failures: int) -> None:
    rng = random.Random(failures)
    base, cap = 60.0, DAY
    ceiling = min(cap, base * 2 ** min(failures - 1, 20))
    delays = [backoff_delay(failures, base=base, cap=cap, rng=rng) for _ in range(500)]
    assert min(delays) >= base / 2  # never ~0: a failing server is not hammered
    assert max(delays) <= ceiling
    assert max(delays) <= cap
    # Full spread, not a fixed value: the draws cover most of [floor, ceiling].
    if ceiling > base:
        assert max(delays) - min(delays) > 0.8 * (ceiling - base / 2)


def test_backoff_grows_and_never_stops() -> None:
    rng = random.Random(1)
    means = [
        statistics.mean(backoff_delay(n, base=60, cap=DAY, rng=rng) for _ in range(300))
        for n in (1, 3, 5, 7)
    ]
    assert means == sorted(means)
    assert means[-1] > 4 * means[0]
    # After years of failures it still returns a finite delay within the cap.
    assert 30 <= backoff_delay(10**6, base=60, cap=DAY, rng=rng) <= DAY


def test_backoff_desynchronises_an_outage() -> None:
    """1,000 sources failing in the same minute spread their retries over the window."""
    base, cap = 60.0, DAY
    for failures in (1, 4, 8):
        ceiling = min(cap, base * 2 ** (failures - 1))
        delays = [
            backoff_delay(failures, base=base, cap=cap, rng=random.Random(f"source-{i}"))
            for i in range(1000)
        ]
        # Split the window into 10 buckets: each one holds some retries, none holds most.
        lo = base / 2
        width = (ceiling - lo) / 10
        buckets = [0] * 10
        for d in delays:
            buckets[min(9, int((d - lo) / width))] += 1
        assert min(buckets) >= 50, buckets
        assert max(buckets) <= 150, buckets


def test_backoff_rejects_nonsense() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError):
        backoff_delay(0, base=60, cap=DAY, rng=rng)
    with pytest.raises(ValueError):
        backoff_delay(1, base=0, cap=DAY, rng=rng)


# --- Retry-After and dates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  0 ", 0.0),
        ("Sun, 01 Mar 2026 12:05:00 GMT", 300.0),  # IMF-fixdate
        ("Sunday, 01-Mar-26 12:05:00 GMT", 300.0),  # obsolete RFC 850
        ("Sun Mar  1 12:05:00 2026", 300.0),  # obsolete asctime
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: go now
        (str(30 * 86400), MAX_RETRY_AFTER),  # capped
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("٣", None),  # a non-ASCII digit is not delta-seconds
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_http_date_is_utc() -> None:
    parsed = parse_http_date("Sun, 01 Mar 2026 13:00:00 +0100")
    assert parsed == NOW
    assert parsed is not None and parsed.utcoffset() == timedelta(0)
    assert parse_http_date("not a date") is None
    # past year 9999 once in UTC: not a date (it raised OverflowError and failed the source)
    assert parse_http_date("Fri, 31 Dec 9999 23:59:59 -1400") is None


# --- cache lifetime --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Cache-Control": "max-age=600"}, 600.0),
        ({"cache-control": 'public, MAX-AGE="300"'}, 300.0),
        ({"Cache-Control": "s-maxage=900"}, None),  # for shared caches; we are private
        ({"Cache-Control": "s-maxage=900, max-age=60"}, 60.0),
        ({"Cache-Control": "max-age=600, no-cache"}, None),
        ({"Cache-Control": "no-store"}, None),
        ({"Cache-Control": "max-age=abc"}, 0.0),
        ({"Cache-Control": "max-age=600", "Age": "100"}, 500.0),
        ({"Cache-Control": "max-age=60", "Age": "100"}, 0.0),
        ({"Cache-Control": "max-age=600", "Expires": "Sun, 01 Mar 2026 14:00:00 GMT"}, 600.0),
        ({"Expires": "Sun, 01 Mar 2026 14:00:00 GMT"}, 7200.0),  # minus now
        (
            {"Expires": "Sun, 01 Mar 2026 14:00:00 GMT", "Date": "Sun, 01 Mar 2026 13:30:00 GMT"},
            1800.0,  # minus the server's Date: clock skew does not matter
        ),
        ({"Expires": "0"}, 0.0),  # invalid = already expired (RFC 9111 5.3)
        ({"ETag": '"x"'}, None),
        ({}, None),
    ],
)
def test_parse_cache_max_age(headers: dict[str, str], expected: float | None) -> None:
    assert parse_cache_max_age(headers, now=NOW) == expected
    proxy = CIMultiDictProxy(CIMultiDict(headers))
    assert parse_cache_max_age(proxy, now=NOW) == expected


# --- next check ------------------------------------------------------------------------------


def _next(**kw: float | None) -> tuple[float, str]:
    when, reason = next_check(
        NOW,
        interval=kw.pop("interval", 900.0) or 900.0,
        min_interval=60.0,
        max_interval=DAY,
        jitter=0.0,
        rng=random.Random(0),
        **kw,
    )
    return (when - NOW).total_seconds(), reason


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({}, (900.0, "interval")),
        ({"ttl": 3600.0}, (3600.0, "ttl")),
        ({"ttl": 60.0}, (900.0, "interval")),
        ({"max_age": 7200.0, "ttl": 3600.0}, (7200.0, "cache")),
        ({"max_age": 10 * DAY}, (DAY, "cache")),  # a server hint cannot silence a source
        ({"ttl": 365 * DAY}, (DAY, "ttl")),
        ({"interval": 10.0}, (60.0, "interval")),  # min_interval
        ({"retry_after": 1800.0}, (1800.0, "retry-after")),
        ({"retry_after": 3 * DAY}, (3 * DAY, "retry-after")),  # honoured past max_interval
        ({"retry_after": 5.0}, (900.0, "interval")),
        ({"retry_after": 600.0, "max_age": 1200.0}, (1200.0, "cache")),
        ({"backoff": 5000.0}, (5000.0, "backoff")),
        ({"backoff": 100.0}, (900.0, "interval")),
        ({"backoff": 5000.0, "retry_after": 7000.0}, (7000.0, "retry-after")),
    ],
)
def test_next_check_reasons(hints: dict[str, float], expected: tuple[float, str]) -> None:
    assert _next(**hints) == expected


def test_next_check_jitter_only_delays_and_spreads() -> None:
    rng = random.Random(7)
    delays = []
    for _ in range(1000):
        when, reason = next_check(
            NOW,
            interval=900,
            retry_after=1800,
            min_interval=60,
            max_interval=DAY,
            jitter=0.1,
            rng=rng,
        )
        assert reason == "retry-after"
        delays.append((when - NOW).total_seconds())
    assert min(delays) >= 1800  # never earlier than the server asked
    assert max(delays) <= 1980
    assert max(delays) - min(delays) > 150


def test_next_check_rejects_naive_now() -> None:
    with pytest.raises(ValueError):
        next_check(
            datetime(2026, 1, 1),
            interval=60,
            min_interval=1,
            max_interval=10,
            jitter=0,
            rng=random.Random(0),
        )


# --- adaptive --------------------------------------------------------------------------------


def _dates(gaps_hours: Sequence[float]) -> list[datetime]:
    dates = [NOW]
    for gap in gaps_hours:
        dates.append(dates[-1] - timedelta(hours=gap))
    return dates


def test_adaptive_learns_half_the_median_gap() -> None:
    dates = _dates([4, 4, 4, 4, 200, 4, 0.01])  # one holiday and one burst are ignored
    assert adaptive_interval(dates, interval=900, min_interval=60, max_interval=DAY) == 7200.0


def test_adaptive_clamps_and_needs_history() -> None:
    kw = {"interval": 900.0, "min_interval": 300.0, "max_interval": 6 * 3600.0}
    assert adaptive_interval(_dates([0.01] * 10), **kw) == 300.0  # busy feed: floor
    assert adaptive_interval(_dates([72] * 10), **kw) == 6 * 3600.0  # weekly-ish: ceiling
    assert adaptive_interval(_dates([1]), **kw) == 900.0  # two dates: no rhythm yet
    assert adaptive_interval([NOW, NOW, NOW, NOW], **kw) == 900.0  # duplicates are one date
    assert adaptive_interval([], **kw) == 900.0


def test_adaptive_uses_recent_entries_only() -> None:
    old_rhythm = _dates([2] * 20 + [48] * 30)  # newest 20 gaps are 2 h
    assert adaptive_interval(old_rhythm, interval=900, min_interval=60, max_interval=DAY) == 3600.0


# --- host keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Example.ORG/feed.xml", "https://example.org"),
        ("https://example.org:443/a", "https://example.org"),
        ("http://example.org:80/a", "http://example.org"),
        ("http://example.org:8080/a?x=1", "http://example.org:8080"),
        ("HTTP://[::1]:81/", "http://[::1]:81"),
        ("/srv/feeds/local.xml", None),
        ("file:///srv/feed.xml", None),
        ("http://example.org:99999/", None),
    ],
)
def test_host_key(url: str, expected: str | None) -> None:
    assert host_key(url) == expected
