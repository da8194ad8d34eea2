"""Notifications: tell people about a watch's matches (issue 4, item 5).

One module per channel (``webhook``, ``email``, ``command``), all behind the :class:`Notifier`
protocol; :func:`build_notifier` turns a configured :class:`~feedservice.model.NotifyTarget`
into one. A notifier delivers once and never retries by itself: the persistent outbox in the
store retries failed sends, waiting :func:`retry_delay` (or longer when the error carries a
``retry_after``), and gives up only on ``NotifyError.permanent``. Delivery is therefore at
least once; the idempotency key (:func:`notification_key`) travels with every channel
(``Idempotency-Key`` header, Message-ID, ``{key}`` placeholder) so receivers can dedupe.
Webhooks with a secret are signed (Standard Webhooks, ``webhook-id`` = the key); email can
use implicit TLS or STARTTLS, verified against the system's CAs or ``smtp.ca_file``.
"""

from __future__ import annotations

import aiohttp

from feedservice.config import SmtpConfig
from feedservice.errors import ConfigError
from feedservice.model import NotifyTarget
from feedservice.notify._base import (
    Notification,
    Notifier,
    notification_key,
    redact_url,
    retry_delay,
)
from feedservice.notify.command import CommandNotifier
from feedservice.notify.email import EmailNotifier
from feedservice.notify.webhook import WebhookNotifier

__all__ = [
    "CommandNotifier",
    "EmailNotifier",
    "Notification",
    "Notifier",
    "WebhookNotifier",
    "build_notifier",
    "notification_key",
    "redact_url",
    "retry_delay",
]


def build_notifier(
    target: NotifyTarget, *, session: aiohttp.ClientSession, smtp: SmtpConfig
) -> Notifier:
    """The notifier for ``target``: ``webhook`` -> :class:`WebhookNotifier` on ``session``
    (signed when ``target.secret`` is set), ``email`` -> :class:`EmailNotifier` via ``smtp``,
    ``command`` -> :class:`CommandNotifier`.

    Raises ConfigError for an unknown kind or a target the channel cannot use (a non-http(s)
    URL, an unusable secret, a malformed address, an unreadable ``smtp.ca_file``, an empty
    argv or an unknown ``{placeholder}``). Call it at start-up so such mistakes stop the
    daemon before the first match, not after.
    """
    if target.secret is not None and target.kind != "webhook":
        raise ConfigError(f"{target.kind}: a secret only signs webhook requests")
    if target.kind == "webhook":
        return WebhookNotifier(target.target, session, secret=target.secret)
    if target.kind == "email":
        return EmailNotifier(target.target, smtp)
    if target.kind == "command":
        return CommandNotifier(target.argv)
    raise ConfigError(f"unknown notify kind {target.kind!r}; expected webhook, email or command")
