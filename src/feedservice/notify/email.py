"""Email channel: one plain-text message per notification, sent over SMTP.

smtplib blocks, so each send runs in a worker thread (``asyncio.to_thread``) and never stalls
the event loop that serves feeds. The Message-ID is derived from the idempotency key, so a
redelivered notification carries the same Message-ID and mail clients and list servers that
dedupe on it show it once (RFC 5322 section 3.6.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from feedservice.config import SmtpConfig
from feedservice.errors import ConfigError, NotifyError
from feedservice.notify._base import Notification, utc_now

__all__ = ["EmailNotifier", "build_message"]


def _one_line(text: str) -> str:
    """Collapse whitespace: a title with a newline must not break (or inject) a header."""
    return " ".join(text.split())


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _domain_of(address: str) -> str:
    _, _, domain = address.rpartition("@")
    domain = domain.strip().strip(">")
    return domain or "feedservice.invalid"


def _check_addr_spec(what: str, value: str) -> None:
    """Raise ConfigError unless ``value`` is a bare ``local@domain`` with no CR/LF."""
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError, TypeError, HeaderParseError) as exc:
        raise ConfigError(f"email: {what} {value!r} is not an email address: {exc}") from exc
    if not parsed.username or not parsed.domain:
        raise ConfigError(f"email: {what} {value!r} is not an email address")


def build_message(n: Notification, *, sender: str, recipient: str, date: datetime) -> EmailMessage:
    """The email for ``n``: subject ``[feedservice] <watch title>: <entry title>``, a text body
    with the link, score and reasons, and a Message-ID derived from ``n.key``.

    ``date`` (timezone-aware) becomes the Date header. Raises ValueError when an address
    cannot be used in a header.
    """
    msg = EmailMessage()
    msg["Subject"] = f"[feedservice] {_one_line(n.watch_title)}: {_one_line(n.title)}"
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(date.astimezone(UTC))
    # Same key -> same Message-ID on every redelivery; the sender's domain keeps it globally
    # unique across installations (RFC 5322 section 3.6.4: id-left "@" id-right).
    msg["Message-ID"] = f"<feedservice.{n.key}@{_domain_of(parseaddr(sender)[1])}>"
    # RFC 3834: mark the mail as machine-generated so autoresponders do not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Feedservice-Watch"] = n.watch
    msg["X-Feedservice-Key"] = n.key

    lines = [_one_line(n.title) or "(untitled)"]
    if n.link:
        lines.append(n.link)
    lines += [
        "",
        f"Watch:     {n.watch_title} ({n.watch})",
        f"Source:    {n.source}",
        f"Published: {n.published.isoformat().replace('+00:00', 'Z')}",
        f"Score:     {n.score:.3f}",
    ]
    if n.reasons:
        lines += ["", "Why it matched:"]
        lines += [f"  - {reason}" for reason in n.reasons]
    lines += ["", "-- ", f"feedservice; entry id {n.entry_id}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailNotifier:
    """Send each notification to ``address`` through the SMTP server in ``smtp``.

    Connects per message (notifications are rare; a held connection would time out between
    them), speaks TLS from the first byte when ``smtp.tls`` (RFC 8314 implicit TLS, port 465)
    or upgrades with STARTTLS when ``smtp.starttls``, logs in when ``smtp.username`` is set.
    Either way the server's certificate and host name are verified against the system's CAs,
    or only against ``smtp.ca_file`` when set. ``clock`` gives the Date header (injected for
    tests).

    Raises ConfigError at construction when ``address`` or the sender is not an addr-spec,
    when ``smtp.tls`` and ``smtp.starttls`` are both set, or when ``smtp.ca_file`` cannot be
    loaded.
    """

    channel = "email"

    def __init__(
        self,
        address: str,
        smtp: SmtpConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        _check_addr_spec("address", address)
        # The sender may carry a display name ("Feeds <feeds@example.org>"); the envelope
        # (MAIL FROM) and the Message-ID domain use the bare address.
        if "\r" in smtp.sender or "\n" in smtp.sender:
            raise ConfigError(f"email: smtp sender {smtp.sender!r} is not an email address")
        _, sender_addr = parseaddr(smtp.sender)
        _check_addr_spec("smtp sender", sender_addr or smtp.sender)
        if smtp.tls and smtp.starttls:
            raise ConfigError("email: smtp tls (implicit TLS) and starttls exclude each other")
        self._tls_context: ssl.SSLContext | None = None
        if smtp.tls or smtp.starttls:
            # Built once, at start-up: an unreadable CA file is a config mistake to report
            # before the first match, not a delivery failure hours later.
            try:
                self._tls_context = ssl.create_default_context(
                    cafile=str(smtp.ca_file) if smtp.ca_file is not None else None
                )
            except OSError as exc:  # ssl.SSLError (not PEM) is an OSError too
                raise ConfigError(f"email: cannot load smtp ca_file {smtp.ca_file}: {exc}") from exc
        self._sender_addr = sender_addr
        self.address = address
        self.label = f"email {address}"
        self._smtp = smtp
        self._clock = clock

    def __repr__(self) -> str:
        return f"EmailNotifier({self.address!r}, host={self._smtp.host!r})"

    async def send(self, n: Notification) -> None:
        """Send ``n`` once.

        Raises NotifyError: permanent when the server answers 5xx (RFC 5321 section 4.2.1:
        "permanent negative completion", e.g. recipient refused, authentication rejected) or
        lacks STARTTLS that we were told to use; transient for 4xx answers, connection
        failures, timeouts (``smtp.timeout`` bounds each read and the whole conversation),
        disconnects and TLS failures, including a certificate we do not trust (often an
        expired certificate about to be renewed or a missing ``ca_file``: fixable without
        losing the queued notifications, which a permanent error would drop). Once the
        server has accepted the message, the answer to QUIT no longer matters.
        """
        msg = build_message(n, sender=self._smtp.sender, recipient=self.address, date=self._clock())
        cfg = self._smtp
        # Not connected yet (no I/O here): connect() reads the greeting, and the watchdog
        # must be watching by then.
        client = (
            smtplib.SMTP_SSL(timeout=cfg.timeout, context=self._tls_context)
            if cfg.tls
            else smtplib.SMTP(timeout=cfg.timeout)
        )
        # smtplib's timeout bounds each read, not the conversation: a server that trickles a
        # byte a second (a tarpit) would hold this thread, the pass and a graceful shutdown
        # for as long as it liked. The watchdog shuts the socket down at the deadline.
        watchdog = _Watchdog(client, cfg.timeout)
        try:
            await asyncio.to_thread(self._deliver, client, watchdog, msg)
        except asyncio.CancelledError:
            # The daemon is stopping: end the conversation now, or the interpreter waits
            # for this thread at exit until the deadline, past the promised 10 s.
            watchdog.fire()
            raise

    def _deliver(self, client: smtplib.SMTP, watchdog: _Watchdog, msg: EmailMessage) -> None:
        cfg = self._smtp
        where = f"SMTP {cfg.host}:{cfg.port} to {self.address}"
        try:
            self._converse(client, msg, where)
        except NotifyError as exc:
            if watchdog.fired:
                raise NotifyError(
                    f"{where}: not done within {cfg.timeout:g} s", channel=self.channel
                ) from exc.__cause__
            raise
        finally:
            watchdog.cancel()
            client.close()

    def _converse(self, client: smtplib.SMTP, msg: EmailMessage, where: str) -> None:
        cfg = self._smtp
        # What SMTP(host) would have remembered: TLS verifies the certificate against it.
        client._host = cfg.host  # type: ignore[attr-defined]  # not in typeshed
        try:
            client.connect(cfg.host, cfg.port)
            client.ehlo_or_helo_if_needed()
            if cfg.starttls:
                client.starttls(context=self._tls_context)
                client.ehlo()
            if cfg.username:
                client.login(cfg.username, cfg.password or "")
            # One recipient: a refusal raises SMTPRecipientsRefused, never a partial dict.
            client.send_message(msg, from_addr=self._sender_addr, to_addrs=[self.address])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = "; ".join(f"{code} {_text(reply)}" for code, reply in exc.recipients.values())
            raise NotifyError(
                f"{where}: recipient refused: {text}",
                channel=self.channel,
                permanent=bool(codes) and all(code >= 500 for code in codes),
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise NotifyError(f"{where}: {exc}", channel=self.channel, permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            # Sender refused, data refused, authentication failed, connect refused with a code.
            raise NotifyError(
                f"{where}: {exc.smtp_code} {_text(exc.smtp_error)}".rstrip(),
                channel=self.channel,
                permanent=exc.smtp_code >= 500,
            ) from exc
        except smtplib.SMTPException as exc:
            # SMTPServerDisconnected and friends: the server went away mid-conversation.
            raise NotifyError(
                f"{where}: {type(exc).__name__}: {exc}", channel=self.channel
            ) from exc
        except TimeoutError as exc:
            raise NotifyError(
                f"{where}: no answer within {cfg.timeout:g} s", channel=self.channel
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            hint = "" if cfg.ca_file else " (set smtp.ca_file for a private CA)"
            raise NotifyError(
                f"{where}: certificate not trusted: {exc.verify_message}{hint}",
                channel=self.channel,
            ) from exc
        except OSError as exc:  # refused, unreachable, other TLS failures (ssl.SSLError)
            raise NotifyError(
                f"{where}: {type(exc).__name__}: {exc}", channel=self.channel
            ) from exc
        # The server has taken the message: an odd answer to QUIT must not turn it into a
        # failure, which would send it again (or drop it as permanent on a 5xx).
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()


class _Watchdog:
    """Shut ``client``'s socket down ``seconds`` from now, or at :meth:`fire`, unless
    cancelled first.

    A read blocked on a socket that another thread shuts down returns at once, so the
    conversation ends with an error; ``fired`` tells the caller that the deadline did it.
    """

    def __init__(self, client: smtplib.SMTP, seconds: float) -> None:
        self.fired = False
        self._client = client
        self._wake = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._watch, args=(seconds,), daemon=True).start()

    def _watch(self, seconds: float) -> None:
        self._wake.wait(seconds)
        if self._done.is_set():
            return
        self.fired = True
        # Until connect() has made the socket, look again; connect's own timeout bounds
        # that wait (and the conversation may never start when cancelled early).
        for _ in range(int(seconds / 0.05) + 1):
            sock = getattr(self._client, "sock", None)
            if sock is not None:
                # socket.socket's shutdown, not SSLSocket's, which also drops the TLS state
                # under the reading thread's feet.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return
            if self._done.wait(0.05):
                return

    def fire(self) -> None:
        self._wake.set()

    def cancel(self) -> None:
        self._done.set()
        self._wake.set()
