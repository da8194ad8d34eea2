"""Notification channels against real receivers on loopback.

Webhooks go to a real aiohttp server on 127.0.0.1 port 0, email to a real aiosmtpd SMTP server,
commands run a real Python child process. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from feedservice.config import SmtpConfig
from feedservice.errors import ConfigError, NotifyError
from feedservice.model import Entry, Match, NotifyTarget, Watch
from feedservice.notify import (
    CommandNotifier,
    EmailNotifier,
    Notification,
    WebhookNotifier,
    build_notifier,
    notification_key,
    redact_url,
    retry_delay,
)
from feedservice.notify.command import PLACEHOLDERS, render_argv
from feedservice.notify.email import build_message

PUBLISHED = datetime(2024, 7, 28, 9, 30, tzinfo=UTC)


def make_notification(
    *, watch: str = "japan-us-hq", entry_id: str = "urn:uuid:1", **kw: Any
) -> Notification:
    fields: dict[str, Any] = {
        "watch": watch,
        "watch_title": "Follow-ups: Japan-U.S. joint headquarters",
        "entry_id": entry_id,
        "title": "Japan sets up joint operations command",
        "link": "https://news.example.org/a/1?x=1&y=2",
        "source": "wire",
        "score": 0.8734,
        "reasons": ("shared entities: Japan, Lloyd Austin", "shared terms: headquarters"),
        "published": PUBLISHED,
        "key": notification_key(watch, entry_id),
    }
    fields.update(kw)
    return Notification(**fields)


def free_closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- the record, the key, the retry timing ---------------------------------------------------


def test_notification_key_is_sha256_of_watch_nul_entry() -> None:
    expected = hashlib.sha256(b"w\0e").hexdigest()
    assert notification_key("w", "e") == expected
    assert notification_key("w", "e") == notification_key("w", "e")
    # The separator keeps differently split pairs apart.
    assert notification_key("ab", "c") != notification_key("a", "bc")
    assert notification_key("w", "e2") != expected


def test_notification_rejects_naive_and_normalises_to_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_notification(published=datetime(2024, 1, 1, 12, 0))
    tokyo = timezone(timedelta(hours=9))
    n = make_notification(published=datetime(2024, 1, 1, 21, 0, tzinfo=tokyo))
    assert n.published == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert n.published.utcoffset() == timedelta(0)


def test_to_json_is_plain_json_and_round_trips() -> None:
    n = make_notification(link=None)
    data = n.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["published"] == "2024-07-28T09:30:00Z"
    assert data["reasons"] == list(n.reasons)
    assert data["key"] == n.key and data["link"] is None
    assert Notification.from_json(json.loads(json.dumps(data))) == n
    with pytest.raises(ValueError, match="not a notification payload"):
        Notification.from_json({k: v for k, v in data.items() if k != "title"})


def test_from_match_takes_fields_from_watch_match_and_entry() -> None:
    watch = Watch(name="w1", title="Watch one")
    entry = Entry(
        id="e1",
        source="wire",
        title="T",
        link="https://x.example/1",
        published=PUBLISHED,
        updated=PUBLISHED,
        summary="",
        content_html="",
        content_hash="h",
    )
    match = Match(watch="w1", entry_id="e1", score=0.5, reasons=("r1",))
    n = Notification.from_match(watch, match, entry)
    assert (n.watch, n.watch_title, n.entry_id, n.title, n.link, n.source) == (
        "w1",
        "Watch one",
        "e1",
        "T",
        "https://x.example/1",
        "wire",
    )
    assert (n.score, n.reasons, n.key) == (0.5, ("r1",), notification_key("w1", "e1"))


def test_retry_delay_grows_exponentially_within_jitter_bounds_and_caps() -> None:
    rng = random.Random(7)
    for attempt in range(1, 15):
        ceiling = min(3600.0, 30.0 * 2 ** (attempt - 1))
        for _ in range(50):
            d = retry_delay(attempt, rng)
            assert ceiling / 2 <= d <= ceiling, (attempt, d)
    # Far past the cap it stays capped and does not overflow.
    assert 1800.0 <= retry_delay(10_000, rng) <= 3600.0
    assert 5.0 <= retry_delay(1, rng, base=10.0, cap=20.0) <= 10.0


def test_retry_delay_is_jittered_and_reproducible() -> None:
    a = [retry_delay(3, random.Random(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # same seed, same delay
    rng = random.Random(2)
    spread = {round(retry_delay(3, rng), 6) for _ in range(100)}
    assert len(spread) > 90  # many notifications failing together do not retry together


@pytest.mark.parametrize("attempt", [0, -1])
def test_retry_delay_rejects_attempts_below_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        retry_delay(attempt, random.Random(0))


def test_redact_url_keeps_only_scheme_host_port() -> None:
    assert redact_url("https://user:pw@hooks.example.org/T0/B1/secret?tok=1") == (
        "https://hooks.example.org"
    )
    assert redact_url("http://127.0.0.1:8081/x") == "http://127.0.0.1:8081"
    assert redact_url("http://[::1]:9/x") == "http://[::1]:9"


# --- webhook -------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A real HTTP receiver; ``plan`` maps a path to (status, headers) answers."""

    base: str
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    signing_key: bytes = b""  # what /signed verifies against


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The receiver's own computation, written from the specification, not from our code."""
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, "sha256")
    return "v1," + base64.b64encode(mac.digest()).decode()


def verifies(key: bytes, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification: any of the space-separated signatures may match."""
    expected = standard_webhooks_signature(
        key, headers["webhook-id"], headers["webhook-timestamp"], body
    )
    return any(
        hmac.compare_digest(sig, expected) for sig in headers["webhook-signature"].split(" ")
    )


def test_receiver_verification_matches_the_specification_example() -> None:
    # The example from the Standard Webhooks reference libraries' tests.
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verifies(key, headers, b'{"test": 2432232314}')
    assert not verifies(key, headers, b'{"test": 2432232315}')


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(base="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec.requests.append((request.path, dict(request.headers), body))
        path = request.path
        if path == "/ok":
            return web.Response(status=204)
        if path == "/signed":
            headers = {k.lower(): v for k, v in request.headers.items()}
            signed = all(f"webhook-{h}" in headers for h in ("id", "timestamp", "signature"))
            if signed and verifies(rec.signing_key, headers, body):
                return web.Response(status=204)
            return web.Response(status=401, text="bad signature")
        if path == "/slow":
            await rec.release.wait()
            return web.Response(status=200)
        if path == "/redirect":
            raise web.HTTPFound("/ok")
        if path == "/retry-after-seconds":
            return web.Response(status=429, headers={"Retry-After": "120"})
        if path == "/retry-after-date":
            return web.Response(
                status=503,
                headers={
                    "Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT",
                    "Date": "Wed, 21 Oct 2015 07:26:30 GMT",
                },
            )
        status = int(path.strip("/"))
        return web.Response(status=status, text=f"status {status} from receiver")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.base = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_webhook_posts_json_with_idempotency_key(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    notifier = WebhookNotifier(f"{receiver.base}/ok", session)
    n = make_notification()
    await notifier.send(n)
    await notifier.send(n)  # a redelivery carries the same key
    assert len(receiver.requests) == 2
    for path, headers, body in receiver.requests:
        assert path == "/ok"
        assert headers["Content-Type"] == "application/json"
        assert headers["Idempotency-Key"] == n.key == notification_key("japan-us-hq", "urn:uuid:1")
        assert headers["User-Agent"].startswith("feedservice/")
        assert json.loads(body) == n.to_json()
    other = make_notification(entry_id="urn:uuid:2")
    await notifier.send(other)
    assert receiver.requests[-1][1]["Idempotency-Key"] == other.key != n.key


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (502, False), (503, False), (408, False), (429, False), (400, True),
     (401, True), (404, True), (410, True), (422, True)],
)  # fmt: skip
async def test_webhook_status_policy(
    receiver: Receiver, session: aiohttp.ClientSession, status: int, permanent: bool
) -> None:
    notifier = WebhookNotifier(f"{receiver.base}/{status}", session)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    err = info.value
    assert err.channel == "webhook"
    assert err.permanent is permanent
    assert f"HTTP {status}" in str(err)
    assert f"status {status} from receiver" in str(err)  # the receiver's own words
    assert err.retry_after is None


async def test_webhook_honours_retry_after_seconds_and_date(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(NotifyError) as info:
        await WebhookNotifier(f"{receiver.base}/retry-after-seconds", session).send(
            make_notification()
        )
    assert (info.value.permanent, info.value.retry_after) == (False, 120.0)
    with pytest.raises(NotifyError) as info:
        await WebhookNotifier(f"{receiver.base}/retry-after-date", session).send(
            make_notification()
        )
    # The HTTP-date is measured against the response's Date header: 90 s later.
    assert (info.value.permanent, info.value.retry_after) == (False, 90.0)


async def test_webhook_does_not_follow_redirects(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(NotifyError) as info:
        await WebhookNotifier(f"{receiver.base}/redirect", session).send(make_notification())
    assert info.value.permanent
    assert "/ok" in str(info.value)
    assert [r[0] for r in receiver.requests] == ["/redirect"]  # the target was never hit


async def test_webhook_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    notifier = WebhookNotifier(f"http://127.0.0.1:{free_closed_port()}/hook", session)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert info.value.channel == "webhook"


async def test_webhook_timeout_is_transient(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    notifier = WebhookNotifier(f"{receiver.base}/slow", session, timeout=0.3)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert "0.3 s" in str(info.value)


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.org/x", "hooks.example.org/x", "https:///path", ""]
)
async def test_webhook_rejects_unusable_urls_at_build(
    session: aiohttp.ClientSession, url: str
) -> None:
    with pytest.raises(ConfigError, match="http"):
        WebhookNotifier(url, session)


SIGNING_NOW = datetime(2024, 7, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("whsec_" + base64.b64encode(b"\x00\xffkey bytes" * 3).decode(), b"\x00\xffkey bytes" * 3),
        ("plain words, not base64 ü", "plain words, not base64 ü".encode()),
    ],
    ids=["whsec-base64", "utf8"],
)
async def test_webhook_signature_verifies_at_the_receiver(
    receiver: Receiver, session: aiohttp.ClientSession, secret: str, key: bytes
) -> None:
    receiver.signing_key = key
    notifier = WebhookNotifier(
        f"{receiver.base}/signed", session, secret=secret, clock=lambda: SIGNING_NOW
    )
    n = make_notification()
    await notifier.send(n)  # 204 only when the receiver's own check passes
    _, headers, body = receiver.requests[-1]
    assert headers["webhook-id"] == headers["Idempotency-Key"] == n.key
    assert headers["webhook-timestamp"] == "1722160800"  # the injected clock, unix seconds
    assert headers["webhook-signature"].startswith("v1,")
    assert json.loads(body) == n.to_json()


async def test_webhook_signature_timestamp_is_per_attempt(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    receiver.signing_key = b"k"
    times = iter([SIGNING_NOW, SIGNING_NOW + timedelta(hours=1)])
    notifier = WebhookNotifier(
        f"{receiver.base}/signed", session, secret="k", clock=lambda: next(times)
    )
    n = make_notification()
    await notifier.send(n)
    await notifier.send(n)  # a redelivery: same id, new timestamp, new signature
    first, second = (headers for _, headers, _ in receiver.requests)
    assert first["webhook-id"] == second["webhook-id"] == n.key
    assert int(second["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 3600
    assert first["webhook-signature"] != second["webhook-signature"]


async def test_webhook_wrong_secret_fails_verification(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    receiver.signing_key = b"the receiver's secret"
    notifier = WebhookNotifier(f"{receiver.base}/signed", session, secret="another secret")
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is True  # 401: retrying with the same secret cannot help
    assert "bad signature" in str(info.value)
    _, headers, body = receiver.requests[-1]
    assert verifies(b"another secret", headers, body)  # signed, just with the wrong key
    assert not verifies(b"the receiver's secret", headers, body)


async def test_webhook_without_secret_sends_no_signature_headers(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    await WebhookNotifier(f"{receiver.base}/ok", session).send(make_notification())
    names = {name.lower() for name in receiver.requests[-1][1]}
    assert "idempotency-key" in names
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & names
    with pytest.raises(NotifyError) as info:  # and a verifying receiver refuses it
        await WebhookNotifier(f"{receiver.base}/signed", session).send(make_notification())
    assert "HTTP 401" in str(info.value)


@pytest.mark.parametrize(
    ("secret", "needle"),
    [("whsec_not*base64!", "not base64"), ("whsec_", "empty"), ("", "empty")],
)
async def test_webhook_rejects_unusable_secrets_without_showing_them(
    session: aiohttp.ClientSession, secret: str, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        WebhookNotifier("https://hooks.example.org/x", session, secret=secret)
    assert "*base64!" not in str(info.value)


async def test_webhook_secret_never_appears_in_reprs_labels_or_errors(
    session: aiohttp.ClientSession,
) -> None:
    secret = "whsec_" + base64.b64encode(b"top secret key").decode()
    target = NotifyTarget(
        "webhook", target=f"http://127.0.0.1:{free_closed_port()}/h", secret=secret
    )
    assert target.secret == secret
    assert secret not in repr(target) and "secret" not in repr(target)
    notifier = build_notifier(target, session=session, smtp=SmtpConfig())
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    for text in (repr(notifier), notifier.label, str(info.value)):
        assert secret not in text and "top secret" not in text


async def test_webhook_label_and_errors_hide_url_secrets(session: aiohttp.ClientSession) -> None:
    port = free_closed_port()
    notifier = WebhookNotifier(f"http://127.0.0.1:{port}/T000/B000/s3cret", session)
    assert notifier.label == f"webhook http://127.0.0.1:{port}"
    assert "s3cret" not in repr(notifier)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert "s3cret" not in str(info.value)


@dataclass
class RawReceiver:
    """A loopback HTTP server that answers every request with ``reply``, byte for byte (odd
    headers that aiohttp's own server would refuse to send)."""

    url: str
    reply: bytes = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    requests: int = 0


@pytest.fixture
async def raw_receiver() -> AsyncIterator[RawReceiver]:
    rec = RawReceiver(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        rec.requests += 1
        writer.write(rec.reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    rec.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    try:
        yield rec
    finally:
        server.close()
        await server.wait_closed()


WEEK = 7 * 24 * 3600.0
SERVER_DATE = b"Thu, 26 Nov 2026 12:00:00 GMT"


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        (b"Retry-After: " + b"9" * 400, WEEK),  # float("9" * 400) is inf
        (b"Retry-After: 99999999999", WEEK),  # past year 9999 from now
        (b"Retry-After: 999999999999999", WEEK),
        (b"Retry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\nDate: " + SERVER_DATE, WEEK),
        (b"Retry-After: Thu, 26 Nov 2026 12:02:00 GMT", 120.0),  # no Date: the clock
        ("Retry-After: \u00b2".encode(), None),  # "²".isdigit() is True, float("²") fails
        (b"Retry-After: \xff", None),
        (b"Retry-After: -1", None),
    ],
)
async def test_webhook_retry_after_is_bounded_and_odd_values_are_ignored(
    raw_receiver: RawReceiver,
    session: aiohttp.ClientSession,
    headers: bytes,
    retry_after: float | None,
) -> None:
    # Found by fuzzing: an unbounded value overflowed the outbox's next-attempt time and
    # crashed the pass; "²" raised ValueError and dropped the notification as permanent.
    raw_receiver.reply = b"HTTP/1.1 503 Busy\r\n" + headers + b"\r\nContent-Length: 0\r\n\r\n"
    clock = lambda: datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # noqa: E731
    notifier = WebhookNotifier(raw_receiver.url, session, clock=clock)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert info.value.retry_after == retry_after


async def test_webhook_errors_about_malformed_answers_hide_url_secrets(
    raw_receiver: RawReceiver, session: aiohttp.ClientSession
) -> None:
    # Found by fuzzing: aiohttp's ClientResponseError (a bad status line, a bare CR, too
    # many headers) ends its text with the full URL, token and all.
    raw_receiver.reply = b"HTTP/1.1 200 \r\r\nContent-Length: 0\r\n\r\n"
    notifier = WebhookNotifier(f"{raw_receiver.url}/T000/s3cret?token=s3cret", session)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert "ClientResponseError: 400" in str(info.value)
    assert "s3cret" not in str(info.value)


async def test_webhook_url_aiohttp_rejects_is_permanent_and_not_shown(
    session: aiohttp.ClientSession,
) -> None:
    notifier = WebhookNotifier("http://127.0.0.1:99999/T000/s3cret", session)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is True
    assert "s3cret" not in str(info.value)


# --- email ---------------------------------------------------------------------------------------


class _Port0Controller(Controller):
    """aiosmtpd's Controller on port 0: its start-up probe must dial the port actually bound."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd is untyped


@dataclass
class Mailbox:
    """What the SMTP server received, plus knobs for refusing recipients."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    tls_versions: list[str | None] = field(default_factory=list)  # per message; None = clear

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("busy@"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        tls = server.transport.get_extra_info("ssl_object")
        self.tls_versions.append(tls.version() if tls is not None else None)
        return "250 Message accepted for delivery"


def _authenticate(mailbox: Mailbox) -> Any:
    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        mailbox.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.password == b"right"
        # handled=False: let aiosmtpd answer 235 / 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticator


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = _Port0Controller(
        mailbox,
        hostname="127.0.0.1",
        port=0,
        authenticator=_authenticate(mailbox),
        # Loopback test server without TLS; our client only logs in when configured to.
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


@dataclass(frozen=True)
class SelfSigned:
    cert: Path  # also the CA file that trusts it
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    """A certificate for 127.0.0.1, made now with the openssl command line."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    pair = SelfSigned(cert=folder / "cert.pem", key=folder / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(pair.key), "-out", str(pair.cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return pair


@pytest.fixture
def smtps_server(self_signed: SelfSigned) -> Iterator[tuple[Mailbox, int]]:
    """SMTP over implicit TLS (RFC 8314): the listening socket speaks TLS from the start."""
    mailbox = Mailbox()
    controller = _Port0Controller(
        mailbox, hostname="127.0.0.1", port=0, ssl_context=self_signed.server_context()
    )
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def starttls_server(self_signed: SelfSigned) -> Iterator[tuple[Mailbox, int]]:
    """SMTP that refuses mail until the client has upgraded with STARTTLS."""
    mailbox = Mailbox()
    controller = _Port0Controller(
        mailbox,
        hostname="127.0.0.1",
        port=0,
        tls_context=self_signed.server_context(),
        require_starttls=True,
        authenticator=_authenticate(mailbox),
    )
    controller.start()
    try:
        yield mailbox, controller.port
    finally:
        controller.stop()


def smtp_config(port: int, **kw: Any) -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1", port=port, sender="Feeds <feeds@example.org>", timeout=5.0, **kw
    )


FIXED_NOW = datetime(2024, 7, 28, 10, 0, tzinfo=UTC)


async def test_email_is_delivered_with_subject_body_and_stable_message_id(
    smtp_server: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp_server
    notifier = EmailNotifier("desk@example.org", smtp_config(port), clock=lambda: FIXED_NOW)
    n = make_notification()
    await notifier.send(n)
    await notifier.send(n)  # redelivery
    await notifier.send(make_notification(entry_id="urn:uuid:2"))
    assert len(mailbox.messages) == 3
    mail_from, rcpt_tos, msg = mailbox.messages[0]
    assert mail_from == "feeds@example.org"
    assert rcpt_tos == ["desk@example.org"]
    assert msg["To"] == "desk@example.org"
    assert msg["From"] == "Feeds <feeds@example.org>"
    assert msg["Subject"] == (
        "[feedservice] Follow-ups: Japan-U.S. joint headquarters: "
        "Japan sets up joint operations command"
    )
    assert msg["Date"] == "Sun, 28 Jul 2024 10:00:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content()
    assert "https://news.example.org/a/1?x=1&y=2" in body
    assert "0.873" in body
    assert "shared entities: Japan, Lloyd Austin" in body
    assert "shared terms: headquarters" in body
    # Same key -> same Message-ID (receivers dedupe a redelivery); other key -> another.
    ids = [m["Message-ID"] for _, _, m in mailbox.messages]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0] == f"<feedservice.{n.key}@example.org>"


def test_email_subject_cannot_be_split_by_newlines_in_titles() -> None:
    n = make_notification(title="Evil\r\nBcc: everyone@example.org\n title")
    msg = build_message(n, sender="f@example.org", recipient="d@example.org", date=FIXED_NOW)
    assert msg["Subject"].endswith(": Evil Bcc: everyone@example.org title")
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"]


@pytest.mark.parametrize(("recipient", "permanent"), [("gone@x.org", True), ("busy@x.org", False)])
async def test_email_refused_recipient(
    smtp_server: tuple[Mailbox, int], recipient: str, permanent: bool
) -> None:
    mailbox, port = smtp_server
    notifier = EmailNotifier(recipient, smtp_config(port))
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.channel == "email"
    assert info.value.permanent is permanent
    assert ("550" if permanent else "450") in str(info.value)
    assert mailbox.messages == []


async def test_email_logs_in_when_configured(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    good = EmailNotifier("desk@example.org", smtp_config(port, username="u", password="right"))
    await good.send(make_notification())
    assert mailbox.logins == [(b"u", b"right")]
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0][1] == ["desk@example.org"]
    bad = EmailNotifier("desk@example.org", smtp_config(port, username="u", password="wrong"))
    with pytest.raises(NotifyError) as info:
        await bad.send(make_notification())
    assert info.value.permanent is True  # 535: retrying the same credentials cannot help
    assert "535" in str(info.value)
    assert mailbox.logins[0] == (b"u", b"right")
    assert mailbox.logins[1:] and all(p == b"wrong" for _, p in mailbox.logins[1:])
    assert len(mailbox.messages) == 1


async def test_email_starttls_required_but_not_offered_is_permanent(
    smtp_server: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp_server
    notifier = EmailNotifier("desk@example.org", smtp_config(port, starttls=True))
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is True
    assert "STARTTLS" in str(info.value)
    assert mailbox.messages == []  # never sent in clear text


async def test_email_over_implicit_tls_with_a_private_ca(
    smtps_server: tuple[Mailbox, int], self_signed: SelfSigned
) -> None:
    mailbox, port = smtps_server
    notifier = EmailNotifier(
        "desk@example.org", smtp_config(port, tls=True, ca_file=self_signed.cert)
    )
    n = make_notification()
    await notifier.send(n)
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0][2]["Message-ID"] == f"<feedservice.{n.key}@example.org>"
    version = mailbox.tls_versions[0]
    assert version is not None and version.startswith("TLSv1.")


async def test_email_untrusted_certificate_is_transient_and_sends_nothing(
    smtps_server: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtps_server
    # The system's CAs do not know the self-signed certificate.
    notifier = EmailNotifier("desk@example.org", smtp_config(port, tls=True))
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    # Transient: once the certificate is fixed or ca_file set, the outbox still has the match.
    assert info.value.permanent is False
    assert "certificate not trusted" in str(info.value)
    assert "smtp.ca_file" in str(info.value)
    assert mailbox.messages == []


async def test_email_implicit_tls_against_a_plain_server_fails_transiently(
    smtp_server: tuple[Mailbox, int], self_signed: SelfSigned
) -> None:
    mailbox, port = smtp_server
    notifier = EmailNotifier(
        "desk@example.org", smtp_config(port, tls=True, ca_file=self_signed.cert)
    )
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert mailbox.messages == []


async def test_email_starttls_upgrades_verifies_and_logs_in(
    starttls_server: tuple[Mailbox, int], self_signed: SelfSigned
) -> None:
    mailbox, port = starttls_server
    config = smtp_config(
        port, starttls=True, ca_file=self_signed.cert, username="u", password="right"
    )
    await EmailNotifier("desk@example.org", config).send(make_notification())
    assert mailbox.logins == [(b"u", b"right")]
    assert len(mailbox.messages) == 1
    version = mailbox.tls_versions[0]
    assert version is not None and version.startswith("TLSv1.")
    untrusted = EmailNotifier("desk@example.org", smtp_config(port, starttls=True))
    with pytest.raises(NotifyError) as info:
        await untrusted.send(make_notification())
    assert info.value.permanent is False
    assert "certificate not trusted" in str(info.value)
    assert len(mailbox.messages) == 1


def test_email_tls_settings_are_checked_at_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tls .* starttls"):
        EmailNotifier("desk@example.org", SmtpConfig(tls=True, starttls=True))
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for ca_file in (not_pem, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match="ca_file"):
            EmailNotifier("desk@example.org", SmtpConfig(tls=True, ca_file=ca_file))


class ScriptedSmtp:
    """A loopback SMTP server answering from a script; ``slow_greeting`` sends the greeting
    one byte per 50 ms (a tarpit), ``quit_reply`` is the answer to QUIT."""

    def __init__(self, *, slow_greeting: bool = False, quit_reply: bytes = b"221 bye") -> None:
        self.slow_greeting = slow_greeting
        self.quit_reply = quit_reply
        self.accepted: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            greeting = b"220 " + b"slow " * 60 + b"\r\n" if self.slow_greeting else b"220 hi\r\n"
            step = 1 if self.slow_greeting else len(greeting)
            for i in range(0, len(greeting), step):
                writer.write(greeting[i : i + step])
                await writer.drain()
                if self.slow_greeting:
                    await asyncio.sleep(0.05)
            message: list[bytes] = []
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    while (body := await reader.readline()) not in (b".\r\n", b""):
                        message.append(body)
                    self.accepted.append(b"".join(message))
                    writer.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(self.quit_reply + b"\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted_smtp(script: ScriptedSmtp) -> AsyncIterator[ScriptedSmtp]:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    script.port = server.sockets[0].getsockname()[1]
    try:
        yield script
    finally:
        server.close()
        await server.wait_closed()


async def test_email_a_tarpit_server_is_given_up_at_the_timeout() -> None:
    # Found by fuzzing: smtplib's timeout bounds each read, so a greeting trickled byte by
    # byte held the send (the pass, a graceful shutdown) for as long as the server liked.
    async with scripted_smtp(ScriptedSmtp(slow_greeting=True)) as server:
        notifier = EmailNotifier("desk@example.org", replace(smtp_config(server.port), timeout=1))
        with pytest.raises(NotifyError) as info:
            await notifier.send(make_notification())
    assert info.value.permanent is False
    assert "not done within 1 s" in str(info.value)
    assert server.accepted == []


@pytest.mark.parametrize("quit_reply", [b"500 what", b"421 closing", b"garbage"])
async def test_email_taken_by_the_server_is_delivered_whatever_it_answers_to_quit(
    quit_reply: bytes,
) -> None:
    # Found by fuzzing: a 5xx answer to QUIT after "250 queued" dropped the notification as a
    # permanent failure, a 4xx one sent it again.
    async with scripted_smtp(ScriptedSmtp(quit_reply=quit_reply)) as server:
        notifier = EmailNotifier("desk@example.org", smtp_config(server.port))
        await notifier.send(make_notification())
    assert len(server.accepted) == 1


async def test_email_server_down_is_transient() -> None:
    notifier = EmailNotifier("desk@example.org", smtp_config(free_closed_port()))
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert info.value.channel == "email"


@pytest.mark.parametrize("address", ["nope", "a@", "@b.org", "a b@c.org", "x@y.org\nBcc: z@w.org"])
def test_email_rejects_bad_addresses_at_build(address: str) -> None:
    with pytest.raises(ConfigError, match="not an email address"):
        EmailNotifier(address, SmtpConfig())
    with pytest.raises(ConfigError, match="smtp sender"):
        EmailNotifier("desk@example.org", SmtpConfig(sender=address))


# --- command -------------------------------------------------------------------------------------

# Writes its arguments after the first (an output path) to that path as JSON. No braces in it:
# every argv element is a template.
DUMP_ARGV = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"


def _literal(path: Path) -> str:
    return str(path).replace("{", "{{").replace("}", "}}")


async def test_command_substitutes_placeholders_per_argument(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    argv = (
        sys.executable,
        "-c",
        DUMP_ARGV,
        _literal(out),
        "{title}",
        "--link={link}",
        "{score:.2f}",
        "{reasons}",
        "{watch}/{watch_title}",
        "{source}",
        "{entry_id}",
        "{published}",
        "{key}",
        "{{title}}",
    )
    n = make_notification()
    await CommandNotifier(argv).send(n)
    assert json.loads(out.read_text()) == [
        "Japan sets up joint operations command",
        "--link=https://news.example.org/a/1?x=1&y=2",
        "0.87",
        "shared entities: Japan, Lloyd Austin; shared terms: headquarters",
        "japan-us-hq/Follow-ups: Japan-U.S. joint headquarters",
        "wire",
        "urn:uuid:1",
        "2024-07-28T09:30:00Z",
        n.key,
        "{title}",
    ]


async def test_command_passes_hostile_titles_literally_without_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a shell would have created the files
    out = tmp_path / "argv.json"
    title = "x; touch pwned1 && rm -rf y $(touch pwned2) `touch pwned3` | tee pwned4 {link} *"
    argv = (sys.executable, "-c", DUMP_ARGV, _literal(out), "{title}", "{link}")
    n = make_notification(title=title, link="$HOME'\"\\")
    await CommandNotifier(argv).send(n)
    assert json.loads(out.read_text()) == [title, "$HOME'\"\\"]  # "{link}" in a value stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["argv.json"]


def test_render_argv_strips_nul_which_execve_cannot_carry() -> None:
    n = make_notification(title="a\0b")
    assert render_argv(("x", "{title}"), n) == ("x", "ab")


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{nope}", "unknown placeholder {nope}"),
        ("{}", "unknown placeholder {}"),
        ("{0}", "unknown placeholder {0}"),
        ("{title.__class__}", "unknown placeholder {title.__class__}"),
        ("{title[0]}", "unknown placeholder {title[0]}"),
        ("{title", "literal braces"),
        ("title}", "literal braces"),
        ("{title:.2f}", "argv[1]"),
    ],
)
def test_command_rejects_bad_templates_at_build(template: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        CommandNotifier(("notify-send", template))
    assert needle in str(info.value)


def test_command_error_lists_known_placeholders() -> None:
    with pytest.raises(ConfigError) as info:
        CommandNotifier(("notify-send", "{titel}"))
    for name in PLACEHOLDERS:
        assert f"{{{name}}}" in str(info.value)


def test_command_rejects_empty_argv() -> None:
    with pytest.raises(ConfigError, match="non-empty argv"):
        CommandNotifier(())
    with pytest.raises(ConfigError, match="non-empty argv"):
        CommandNotifier(("",))


async def test_command_nonzero_exit_is_transient_with_stderr() -> None:
    argv = (sys.executable, "-c", "import sys; sys.stderr.write('boom\\n' * 5000); sys.exit(3)")
    with pytest.raises(NotifyError) as info:
        await CommandNotifier(argv).send(make_notification())
    assert info.value.channel == "command"
    assert info.value.permanent is False
    assert "exit status 3" in str(info.value)
    assert "boom" in str(info.value)
    assert len(str(info.value)) < 3000  # only the tail of stderr


async def test_command_missing_executable_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(NotifyError) as info:
        await CommandNotifier((str(tmp_path / "no-such-program"), "{title}")).send(
            make_notification()
        )
    assert info.value.permanent is True
    assert "no-such-program" in str(info.value)


async def test_command_arguments_too_long_for_the_os_are_permanent() -> None:
    # Found by fuzzing: a 200,000-character title made execve fail with E2BIG, taken as
    # transient, so the same doomed command was retried every ten minutes for ever.
    n = make_notification(title="x" * 200_000)
    with pytest.raises(NotifyError) as info:
        await CommandNotifier((shutil.which("true") or "true", "{title}")).send(n)
    assert info.value.permanent is True
    assert "arguments too long" in str(info.value)


async def test_command_not_executable_is_permanent(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    if os.access(script, os.X_OK):  # pragma: no cover - root may execute anything
        pytest.skip("running with privileges that ignore the execute bit")
    with pytest.raises(NotifyError) as info:
        await CommandNotifier((str(script),)).send(make_notification())
    assert info.value.permanent is True


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def _wait_dead(pid: int) -> bool:
    for _ in range(200):  # up to ~10 s: SIGKILL delivery and reaping are asynchronous
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


# Starts a grandchild, writes both pids, then hangs.
HANG = (
    "import os, subprocess, sys, time; "
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "open(sys.argv[1], 'w').write(str(os.getpid()) + ' ' + str(c.pid)); "
    "time.sleep(60)"
)


# Starts a background grandchild that keeps the inherited stderr open, writes its pid, exits 0
# (as xdg-open does when it starts a browser).
DETACH = (
    "import subprocess, sys; "
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "open(sys.argv[1], 'w').write(str(c.pid))"
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see processes")
async def test_command_success_does_not_wait_for_background_processes(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A hang until the timeout would raise NotifyError and fail this test.
    notifier = CommandNotifier((sys.executable, "-c", DETACH, _literal(pids)), timeout=20.0)
    try:
        await notifier.send(make_notification())
        grandchild = int(pids.read_text())
        assert _alive(grandchild)  # left alone after a successful run
    finally:
        if pids.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pids.read_text()), signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see processes")
async def test_command_timeout_kills_the_process_group_and_is_transient(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    notifier = CommandNotifier((sys.executable, "-c", HANG, _literal(pids)), timeout=2.0)
    with pytest.raises(NotifyError) as info:
        await notifier.send(make_notification())
    assert info.value.permanent is False
    assert "killed" in str(info.value)
    child, grandchild = (int(p) for p in pids.read_text().split())
    assert await _wait_dead(child)
    assert await _wait_dead(grandchild)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see processes")
async def test_command_cancelled_send_kills_the_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    notifier = CommandNotifier((sys.executable, "-c", HANG, _literal(pids)), timeout=60.0)
    task = asyncio.create_task(notifier.send(make_notification()))
    for _ in range(200):
        if pids.exists() and pids.read_text():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    child, grandchild = (int(p) for p in pids.read_text().split())
    assert await _wait_dead(child)
    assert await _wait_dead(grandchild)


# --- the factory ---------------------------------------------------------------------------------


async def test_build_notifier_picks_the_channel(session: aiohttp.ClientSession) -> None:
    smtp = SmtpConfig(sender="feeds@example.org")
    webhook = build_notifier(
        NotifyTarget(kind="webhook", target="https://hooks.example.org/x"),
        session=session,
        smtp=smtp,
    )
    mail = build_notifier(
        NotifyTarget(kind="email", target="d@example.org"), session=session, smtp=smtp
    )
    command = build_notifier(
        NotifyTarget(kind="command", argv=("notify-send", "{title}")), session=session, smtp=smtp
    )
    assert isinstance(webhook, WebhookNotifier) and webhook.channel == "webhook"
    assert webhook.label == "webhook https://hooks.example.org"
    assert isinstance(mail, EmailNotifier) and mail.channel == "email"
    assert mail.label == "email d@example.org"
    assert isinstance(command, CommandNotifier) and command.channel == "command"
    assert command.argv == ("notify-send", "{title}")


async def test_build_notifier_rejects_unknown_kinds_and_bad_targets(
    session: aiohttp.ClientSession,
) -> None:
    smtp = SmtpConfig()
    with pytest.raises(ConfigError, match="unknown notify kind 'pager'"):
        build_notifier(NotifyTarget(kind="pager", target="x"), session=session, smtp=smtp)
    with pytest.raises(ConfigError):
        build_notifier(
            NotifyTarget(kind="command", argv=("x", "{bogus}")), session=session, smtp=smtp
        )
    with pytest.raises(ConfigError):
        build_notifier(
            NotifyTarget(kind="webhook", target="file:///etc/passwd"), session=session, smtp=smtp
        )
