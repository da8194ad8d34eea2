"""What every channel shares: the Notification record, the Notifier protocol, retry timing.

Kept apart from ``__init__`` so the channel modules can import it without a cycle; the
public names are re-exported by :mod:`feedservice.notify`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from feedservice.model import Entry, Match, Watch

__all__ = [
    "Notification",
    "Notifier",
    "notification_key",
    "redact_url",
    "retry_delay",
    "utc_now",
]


def utc_now() -> datetime:
    """The channels' default clock (tests inject their own)."""
    return datetime.now(UTC)


def notification_key(watch: str, entry_id: str) -> str:
    """The idempotency key of one (watch, entry) pair: sha256 hex of ``watch NUL entry_id``.

    The NUL separator keeps ``("a", "bc")`` and ``("ab", "c")`` apart. The same pair always
    gives the same key, so receivers can drop a repeat after an at-least-once redelivery
    (issue 4, item 5).
    """
    return hashlib.sha256(f"{watch}\0{entry_id}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Notification:
    """One match to announce: what a channel needs, nothing it must look up.

    ``published`` must be timezone-aware (it is converted to UTC); ``key`` is the
    idempotency key (see :func:`notification_key`). Raises ValueError on a naive datetime.
    """

    watch: str
    watch_title: str
    entry_id: str
    title: str
    link: str | None
    source: str
    score: float
    reasons: tuple[str, ...]
    published: datetime
    key: str

    def __post_init__(self) -> None:
        if self.published.tzinfo is None or self.published.utcoffset() is None:
            raise ValueError(f"Notification.published must be timezone-aware: {self.published!r}")
        if self.published.utcoffset():
            object.__setattr__(self, "published", self.published.astimezone(UTC))
        # Tuples only: a list would make the frozen record unhashable and mutable inside.
        object.__setattr__(self, "reasons", tuple(self.reasons))

    @classmethod
    def from_match(cls, watch: Watch, match: Match, entry: Entry) -> Notification:
        """Build the notification for ``match`` of ``watch`` on ``entry`` (key computed here)."""
        return cls(
            watch=watch.name,
            watch_title=watch.title,
            entry_id=entry.id,
            title=entry.title,
            link=entry.link,
            source=entry.source,
            score=match.score,
            reasons=match.reasons,
            published=entry.published,
            key=notification_key(watch.name, entry.id),
        )

    def to_json(self) -> dict[str, Any]:
        """The webhook body (and a safe outbox payload): plain JSON types, dates in RFC 3339 UTC."""
        return {
            "key": self.key,
            "watch": self.watch,
            "watch_title": self.watch_title,
            "entry_id": self.entry_id,
            "title": self.title,
            "link": self.link,
            "source": self.source,
            "score": self.score,
            "reasons": list(self.reasons),
            "published": self.published.isoformat().replace("+00:00", "Z"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notification:
        """Inverse of :meth:`to_json` (for an outbox that stores the payload).

        Raises ValueError when a field is missing or has the wrong type.
        """
        try:
            published = datetime.fromisoformat(str(data["published"]).replace("Z", "+00:00"))
            link = data["link"]
            return cls(
                watch=str(data["watch"]),
                watch_title=str(data["watch_title"]),
                entry_id=str(data["entry_id"]),
                title=str(data["title"]),
                link=None if link is None else str(link),
                source=str(data["source"]),
                score=float(data["score"]),
                reasons=tuple(str(r) for r in data["reasons"]),
                published=published,
                key=str(data["key"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a notification payload: {exc!r}") from exc


class Notifier(Protocol):
    """One delivery channel to one target.

    ``channel`` is the kind (``webhook``, ``email``, ``command``); ``label`` names the target
    for people and logs, with secrets left out (no URL path or query, no password).
    ``send`` delivers once, with no retries of its own (the outbox retries); it raises
    :class:`~feedservice.errors.NotifyError` with ``permanent=True`` when retrying cannot help,
    else with ``permanent=False``; ``retry_after`` is set when the receiver asked for a pause.
    """

    channel: str
    label: str

    async def send(self, n: Notification) -> None: ...


def retry_delay(
    attempt: int, rng: random.Random, *, base: float = 30.0, cap: float = 3600.0
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the retry after the first failure).

    Exponential (``base * 2**(attempt-1)``, capped at ``cap``) with "equal jitter": the result
    lies in ``[d/2, d]``, so delays always grow with the attempt yet retries of many
    notifications that failed together spread out instead of hitting a recovering receiver at
    the same instant. ``rng`` is injected so tests and the outbox are reproducible.
    Raises ValueError for ``attempt < 1`` or a non-positive ``base``/``cap``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base <= 0 or cap <= 0:
        raise ValueError(f"base and cap must be positive, got base={base}, cap={cap}")
    # Clamp the exponent before computing: 2**10_000 overflows a float.
    exponent = min(attempt - 1, 64)
    ceiling = min(cap, base * 2.0**exponent)
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: webhook paths and queries often carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"
