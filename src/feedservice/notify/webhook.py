"""Webhook channel: one JSON POST per notification, with an Idempotency-Key header.

Delivery is at least once (the outbox retries), so the same notification may arrive twice;
the ``Idempotency-Key`` header (and the ``key`` field of the body) is the same on every
attempt and lets the receiver drop the repeat.
"""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from feedservice import __version__
from feedservice.errors import ConfigError, NotifyError
from feedservice.notify._base import Notification, redact_url

__all__ = ["DEFAULT_USER_AGENT", "WebhookNotifier"]

DEFAULT_USER_AGENT = f"feedservice/{__version__} (webhook notifier)"

# 408 Request Timeout and 429 Too Many Requests are the 4xx answers that say "try again"
# (RFC 9110 section 15.5.9, RFC 6585 section 4); every other 4xx means the request itself is
# wrong and sending it again cannot help.
_RETRYABLE_4XX = frozenset({408, 429})
_SNIPPET_BYTES = 200


class WebhookNotifier:
    """POST :meth:`Notification.to_json` to ``url``; any 2xx answer means delivered.

    ``session`` is the caller's shared aiohttp session (no cookies needed, none sent by us);
    ``timeout`` bounds the whole request in seconds. Redirects are not followed: aiohttp
    would turn a redirected POST into a body-less GET on 301/302/303, so a 3xx is reported
    (permanent) with its Location for the user to fix the URL.

    Raises ConfigError at construction when ``url`` is not an absolute http(s) URL.
    """

    channel = "webhook"

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 10.0,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhook: expected an absolute http(s) URL, got {url!r}")
        if timeout <= 0:
            raise ConfigError(f"webhook: timeout must be positive, got {timeout}")
        self.url = url
        self.label = f"webhook {redact_url(url)}"
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._user_agent = user_agent

    def __repr__(self) -> str:
        return f"WebhookNotifier({redact_url(self.url)!r})"

    async def send(self, n: Notification) -> None:
        """POST ``n`` once.

        Raises NotifyError: transient for 5xx, 408, 429 (with ``retry_after`` from the
        Retry-After header when given), timeouts and connection/protocol errors; permanent
        for 3xx, every other 4xx and an URL aiohttp rejects.
        """
        body = json.dumps(n.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": n.key,
            "User-Agent": self._user_agent,
        }
        where = redact_url(self.url)
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return
                snippet = await _read_snippet(resp)
                location = resp.headers.get("Location")
                retry_after = _parse_retry_after(
                    resp.headers.get("Retry-After"), resp.headers.get("Date")
                )
        except aiohttp.InvalidURL as exc:
            raise NotifyError(
                f"POST {where}: invalid URL ({exc})", channel=self.channel, permanent=True
            ) from exc
        except TimeoutError as exc:  # aiohttp's timeouts subclass TimeoutError (3.11+)
            raise NotifyError(
                f"POST {where}: no answer within {self._timeout.total:g} s",
                channel=self.channel,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Connection refused/reset, DNS failure, TLS failure, a malformed answer: the
            # receiver may be down or restarting, so let the outbox try again later.
            raise NotifyError(
                f"POST {where}: {type(exc).__name__}: {exc}", channel=self.channel
            ) from exc

        detail = f"POST {where}: HTTP {status}"
        if 300 <= status < 400:
            raise NotifyError(
                f"{detail} redirect to {location!r}; webhooks are not redirected, "
                "configure the final URL",
                channel=self.channel,
                permanent=True,
            )
        if snippet:
            detail += f": {snippet}"
        permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
        raise NotifyError(
            detail, channel=self.channel, permanent=permanent, retry_after=retry_after
        )


async def _read_snippet(resp: aiohttp.ClientResponse) -> str:
    """The first bytes of an error body, for the message; never fails the report itself."""
    try:
        raw = await resp.content.read(_SNIPPET_BYTES)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return ""
    return " ".join(raw.decode("utf-8", "replace").split())


def _parse_retry_after(value: str | None, date: str | None) -> float | None:
    """Retry-After as seconds (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date.

    An HTTP-date is measured against the response's own Date header, so no local clock is
    read; without a Date header the HTTP-date form is ignored (the outbox backoff applies).
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    if not date:
        return None
    try:
        when: datetime = parsedate_to_datetime(value)
        sent: datetime = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None or sent.tzinfo is None:
        return None
    return max(0.0, (when - sent).total_seconds())
