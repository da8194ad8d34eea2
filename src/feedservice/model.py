"""The records that travel between pipeline stages: frozen dataclasses, no I/O.

Third-party shapes (FeedParserDict, aiohttp responses, pydantic models) are
converted into these at the module that meets them and never travel further.
Every datetime here is timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

FEED_FORMATS: tuple[str, ...] = ("atom", "rss", "json")


# --- configuration records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One configured source: exactly one of ``url`` or ``directory`` is set.

    ``url`` is an http(s) URL or a local feed file path (absolute, resolved by config).
    ``interval`` is the configured poll interval in seconds.
    """

    name: str
    interval: float
    url: str | None = None
    directory: Path | None = None
    title: str | None = None
    adaptive: bool = False

    @property
    def is_directory(self) -> bool:
        return self.directory is not None


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One published feed: ``feeds_dir/<name>.atom|.rss|.json`` from the named sources."""

    name: str
    title: str
    sources: tuple[str, ...]
    limit: int = 50
    formats: tuple[str, ...] = FEED_FORMATS
    description: str | None = None


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where a watch sends its matches.

    ``kind`` is ``webhook`` (``target`` = URL), ``email`` (``target`` = address) or
    ``command`` (``argv`` = the command with ``{placeholders}``; run without a shell).
    ``secret`` (webhooks only) signs each request (Standard Webhooks); it is left out of
    ``repr`` so it cannot reach a log line by accident.
    """

    kind: str
    target: str = ""
    argv: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Watch:
    """A monitor watch: items related to ``story`` and/or matching ``query``."""

    name: str
    title: str
    story: Path | None = None
    query: str | None = None
    sources: tuple[str, ...] | None = None  # None = all sources
    threshold: float | None = None  # None = the monitor's calibrated default
    limit: int = 50
    notify: tuple[NotifyTarget, ...] = ()
    notify_backlog: bool = False


# --- fetch ------------------------------------------------------------------------------------


class FetchStatus(StrEnum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Validators:
    """What makes the next request conditional (RFC 9110 section 13)."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None  # sha256 of the last body, for servers with no validators


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one successful retrieval (failures raise :class:`FetchError`).

    ``permanent_url`` is set only when every redirect on the way was permanent (301/308):
    the caller then stores it as the source's new URL. ``max_age`` is the freshness
    lifetime in seconds from Cache-Control max-age or Expires, if any.
    """

    status: FetchStatus
    url: str
    http_status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    final_url: str | None = None
    permanent_url: str | None = None
    validators: Validators = field(default_factory=Validators)
    max_age: float | None = None
    retry_after: float | None = None


# --- parse ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawItem:
    """One item as a parser read it, before normalisation.

    HTML fields are unsanitised. ``path`` is set for story files (relative to the
    source directory, POSIX separators); ``base`` is the URL relative links resolve against.
    """

    id: str | None = None
    title: str | None = None
    link: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    author: str | None = None
    summary_html: str | None = None
    content_html: str | None = None
    content_text: str | None = None
    tags: tuple[str, ...] = ()
    path: str | None = None
    base: str | None = None


@dataclass(frozen=True, slots=True)
class RawFeed:
    """A parsed feed document. ``ttl`` (seconds) comes from RSS ``ttl`` or ``sy:updatePeriod``."""

    items: tuple[RawItem, ...]
    title: str | None = None
    link: str | None = None
    subtitle: str | None = None
    ttl: float | None = None
    parser: str = ""  # which parser produced it ("fast", "feedparser", "story")


# --- normalised entries -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A clean feed entry, as stored and published.

    ``dated`` is False when the item carried no date and ``published`` is the time the
    entry was first seen (the store keeps that stable across restarts).
    ``content_hash`` covers what a reader sees; ``updated`` moves only when it changes.
    ``story_path`` is the file path (relative to the source directory) of a local story.
    """

    id: str
    source: str
    title: str
    link: str | None
    published: datetime
    updated: datetime
    summary: str
    content_html: str
    content_hash: str
    dated: bool = True
    author: str | None = None
    tags: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    story_path: str | None = None


# --- monitor ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """An entry the monitor found related to a watch, with the score and why."""

    watch: str
    entry_id: str
    score: float
    reasons: tuple[str, ...]
    also: tuple[str, ...] = ()  # ids of near-duplicate entries from other sources
