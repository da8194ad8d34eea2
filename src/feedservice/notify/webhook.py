"""Webhook channel: one JSON POST per notification, with an Idempotency-Key header.

Delivery is at least once (the outbox retries), so the same notification may arrive twice;
the ``Idempotency-Key`` header (and the ``key`` field of the body) is the same on every
attempt and lets the receiver drop the repeat.

With a secret, each request is signed as the Standard Webhooks specification describes
(https://www.standardwebhooks.com/): ``webhook-id`` (the idempotency key again),
``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature: v1,<base64>``,
an HMAC-SHA256 over ``{id}.{timestamp}.{body}``. Receivers built on the specification's
libraries verify it as they are, and reject replays older than their tolerance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp

from feedservice import __version__
from feedservice.errors import ConfigError, NotifyError
from feedservice.notify._base import Notification, redact_url, utc_now
from feedservice.politeness import parse_http_date, parse_retry_after

__all__ = ["DEFAULT_USER_AGENT", "WebhookNotifier", "signing_key"]

DEFAULT_USER_AGENT = f"feedservice/{__version__} (webhook notifier)"

# 408 Request Timeout and 429 Too Many Requests are the 4xx answers that say "try again"
# (RFC 9110 section 15.5.9, RFC 6585 section 4); every other 4xx means the request itself is
# wrong and sending it again cannot help.
_RETRYABLE_4XX = frozenset({408, 429})
_SNIPPET_BYTES = 200
_SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a webhook ``secret``: ``whsec_<base64>`` is base64-decoded (the form
    Standard Webhooks providers hand out), anything else is taken as its UTF-8 bytes.

    Raises ConfigError for an empty key or a ``whsec_`` secret whose rest is not base64;
    the message never contains the secret.
    """
    if secret.startswith(_SECRET_PREFIX):
        try:
            key = base64.b64decode(secret.removeprefix(_SECRET_PREFIX), validate=True)
        except binascii.Error:
            raise ConfigError(
                "webhook: secret starts with 'whsec_' but the rest is not base64"
            ) from None
    else:
        key = secret.encode()
    if not key:
        raise ConfigError("webhook: secret is empty")
    return key


class WebhookNotifier:
    """POST :meth:`Notification.to_json` to ``url``; any 2xx answer means delivered.

    ``session`` is the caller's shared aiohttp session (no cookies needed, none sent by us);
    ``timeout`` bounds the whole request in seconds. Redirects are not followed: aiohttp
    would turn a redirected POST into a body-less GET on 301/302/303, so a 3xx is reported
    (permanent) with its Location for the user to fix the URL.

    With ``secret``, each request carries the Standard Webhooks signature headers (see the
    module docstring); ``clock`` gives their timestamp (injected for tests). The secret is
    kept only as its HMAC key and never appears in ``repr``, labels or errors.

    Raises ConfigError at construction when ``url`` is not an absolute http(s) URL or the
    secret is unusable (see :func:`signing_key`).
    """

    channel = "webhook"

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 10.0,
        user_agent: str = DEFAULT_USER_AGENT,
        secret: str | None = None,
        clock: Callable[[], datetime] = utc_now,
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
        self._key = signing_key(secret) if secret is not None else None
        self._clock = clock

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
        if self._key is not None:
            # A fresh timestamp per attempt: receivers reject old ones to stop replays, and
            # a retry an hour later is a new attempt, not a replay.
            timestamp = str(int(self._clock().timestamp()))
            signed = f"{n.key}.{timestamp}.".encode() + body
            digest = hmac.new(self._key, signed, hashlib.sha256).digest()
            headers["webhook-id"] = n.key
            headers["webhook-timestamp"] = timestamp
            headers["webhook-signature"] = "v1," + base64.b64encode(digest).decode("ascii")
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
                    resp.headers.get("Retry-After"), resp.headers.get("Date"), self._clock()
                )
        except aiohttp.InvalidURL as exc:
            # Not the URL itself (it is all that str(exc) holds): its path may be a token.
            raise NotifyError(
                f"POST {where}: aiohttp rejects the URL", channel=self.channel, permanent=True
            ) from exc
        except TimeoutError as exc:  # aiohttp's timeouts subclass TimeoutError (3.11+)
            raise NotifyError(
                f"POST {where}: no answer within {self._timeout.total:g} s",
                channel=self.channel,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Connection refused/reset, DNS failure, TLS failure, a malformed answer: the
            # receiver may be down or restarting, so let the outbox try again later.
            # A ClientResponseError's text ends with the full URL; its path or query may be
            # the receiver's token, so only the status and the parser's complaint are kept.
            text = (
                f"{exc.status}, {exc.message}"
                if isinstance(exc, aiohttp.ClientResponseError)
                else str(exc)
            )
            raise NotifyError(
                f"POST {where}: {type(exc).__name__}: {text}", channel=self.channel
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


def _parse_retry_after(value: str | None, date: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date.

    An HTTP-date is measured against the response's own Date header when it has a usable
    one (so clock skew cancels out), else against ``now``. The shared parser caps the
    result at a week and ignores what is neither form: a receiver answering
    ``Retry-After: 99999999999`` or a date in year 9999 must neither park the notification
    for centuries nor overflow the outbox's next-attempt time, and a non-ASCII digit such
    as ``²`` is not a number.
    """
    if not value:
        return None
    sent = parse_http_date(date) if date else None
    return parse_retry_after(value, now=sent or now)
