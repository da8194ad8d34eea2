"""The monitor through the app, as a user's watches run: the bundled sample watch, the backlog
rule, "also reported by", the persistent outbox (receiver down then up, delivered once) and
email delivery to a real local SMTP server (issue 4)."""

from __future__ import annotations

import asyncio
import email.policy
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller

from feedservice.app import App, target_key
from feedservice.config import Config, SmtpConfig, load_config
from feedservice.errors import ConfigError
from feedservice.model import NotifyTarget, Watch
from feedservice.notify import Notification, notification_key
from tests.clock import Clock

REPO = Path(__file__).resolve().parents[1]

FOLLOW_UPS = {
    "U.S. Forces Japan to become joint force headquarters under Tokyo deal",
    "Hamada: joint headquarters will speed up decisions between Japanese and U.S. forces",
    "Pentagon picks commander for new U.S. joint headquarters in Japan",
}
UNRELATED = {
    "Bank of Japan keeps interest rates unchanged",
    "Tokyo marathon opens registration with record demand",
    "U.S. and South Korea agree to expand joint military drills",
    "Australia and Japan deepen defence ties with new troop access pact",
    "Typhoon brings heavy rain to Okinawa",
}


def bundled_copy(tmp_path: Path) -> Config:
    """The bundled default config, run from a copy so the repository stays clean."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "stories", tmp_path / "stories")
    return load_config(tmp_path / "config" / "feedservice.yaml")


def watch_items(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    feed = json.loads((tmp_path / "feeds" / f"{name}.json").read_text())
    items: list[dict[str, Any]] = feed["items"]
    return items


async def test_sample_watch_flags_follow_ups_not_unrelated(tmp_path: Path) -> None:
    config = bundled_copy(tmp_path)
    async with App(config, clock=Clock()) as app:
        report = await app.run_once()
    assert not report.errors
    items = watch_items(tmp_path, "japan-us-hq")
    titles = {i["title"] for i in items}
    assert titles == FOLLOW_UPS, f"flagged {titles}"
    assert not titles & UNRELATED
    for item in items:
        extra = item["_feedservice"]
        assert extra["story"] == "Japan and U.S. to establish joint military headquarters"
        assert extra["score"] >= 0.0 and extra["reasons"]
        assert item["url"].startswith("https://")
        # the reasons name what a person would: the shared people and places
        assert any("Hamada" in r or "Austin" in r for r in extra["reasons"]), extra["reasons"]
    # the agency's copy of the wire story is one match with "also reported by"
    [usfj] = [i for i in items if i["title"].startswith("U.S. Forces Japan")]
    assert len(usfj["_feedservice"]["also"]) == 1


async def test_watch_feeds_validate(tmp_path: Path, shared_dir: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    config = bundled_copy(tmp_path)
    async with App(config, clock=Clock()) as app:
        await app.run_once()
    schema = json.loads((shared_dir / "feed-schemas" / "jsonfeed-schema-v1.1.json").read_text())
    feed = json.loads((tmp_path / "feeds" / "japan-us-hq.json").read_text())
    jsonschema.validate(feed, schema, format_checker=jsonschema.FormatChecker())
    jing = shutil.which("jing")
    if jing is None:
        pytest.skip("jing is not installed (CI installs it: apt-get install jing)")
    run = subprocess.run(
        [
            jing,
            "-c",
            str(shared_dir / "feed-schemas" / "atom.rnc"),
            str(tmp_path / "feeds" / "japan-us-hq.atom"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# --- notifications through the outbox -------------------------------------------------------

STORY = "Japan and U.S. to establish joint military headquarters\n\n" + (
    "Japan and the United States have announced plans to establish a joint headquarters for "
    "U.S. military forces stationed in Japan, after two-plus-two talks in Tokyo between Lloyd "
    "Austin, Antony Blinken, Yoshimasa Hayashi and Yasukazu Hamada.\n\nThe headquarters will be "
    "operational early next year and coordinate Japanese and American forces.\n"
)


def wire(items: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f"<item><guid isPermaLink='false'>{guid}</guid><title>{title}</title>"
        f"<link>https://wire.example/{guid}</link><pubDate>Tue, 24 Nov 2026 06:00:00 GMT</pubDate>"
        f"<description>{text}</description></item>"
        for guid, title, text in items
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>W</title>"
        f"<link>https://wire.example/</link><description>d</description>{body}</channel></rss>"
    )


UNRELATED_ITEM = (
    "boj",
    "Bank of Japan keeps interest rates unchanged",
    "The Bank of Japan left its short-term interest rate unchanged, citing wages.",
)
FOLLOW_UP_ITEM = (
    "hq2",
    "Hamada: joint headquarters will speed up decisions with U.S. forces",
    "Defense Minister Yasukazu Hamada said the joint headquarters agreed with Lloyd Austin and "
    "Antony Blinken in Tokyo will let Japanese and U.S. forces decide faster; it should be "
    "operational early next year.",
)


def watch_config(tmp_path: Path, targets: tuple[NotifyTarget, ...], **smtp: Any) -> Config:
    (tmp_path / "stories").mkdir()
    (tmp_path / "watch").mkdir()
    (tmp_path / "watch" / "story.txt").write_text(STORY)
    (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM]))
    (tmp_path / "config.yaml").write_text(
        "service:\n  feeds_dir: feeds\n  data_dir: var\n"
        "sources:\n  - name: wire\n    url: wire.xml\n    interval: 1m\n"
        "watches:\n  - name: hq\n    story: watch/story.txt\n"
    )
    config = load_config(tmp_path / "config.yaml")
    watch: Watch = replace(config.watches[0], notify=targets)
    return replace(config, watches=(watch,), smtp=SmtpConfig(**smtp) if smtp else config.smtp)


class Receiver:
    """A webhook receiver on loopback that can be down (503) and dedupes by Idempotency-Key."""

    def __init__(self) -> None:
        self.up = False
        self.attempts: list[str] = []
        self.delivered: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        self.attempts.append(key)
        if not self.up:
            return web.Response(status=503)
        self.delivered.setdefault(key, await request.json())
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield r, f"http://127.0.0.1:{server.port}/hook"
    await server.close()


async def test_backlog_is_not_notified_new_matches_are_delivered_once(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.up = True
    config = watch_config(tmp_path, (NotifyTarget("webhook", url),))
    clock = Clock()
    # the first run finds a follow-up among already-stored items: published, not notified
    (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM]))
    async with App(config, clock=clock) as app:
        report = await app.run_once()
        assert report.matches == 1
        assert [i["title"] for i in watch_items(tmp_path, "hq")] == [FOLLOW_UP_ITEM[1]]
        assert rec.attempts == []
        # a new follow-up on the next poll is notified
        third = (
            "hq3",
            "Pentagon names commander for the new joint headquarters in Japan",
            "The Pentagon named a general to lead the joint headquarters for U.S. forces in "
            "Japan that Lloyd Austin and Yasukazu Hamada agreed on in Tokyo.",
        )
        (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM, third]))
        clock.advance(120)
        report = await app.run_once()
        assert report.matches == 1 and report.notified == 1
        [payload] = rec.delivered.values()
        assert payload["title"] == third[1] and payload["watch"] == "hq"
        assert payload["reasons"]
        clock.advance(3600)
        await app.run_once(force=True)
    assert len(rec.attempts) == 1


async def test_receiver_down_for_an_hour_then_up_gets_it_once(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    config = watch_config(tmp_path, (NotifyTarget("webhook", url),))
    clock = Clock()
    async with App(config, clock=clock) as app:
        await app.run_once()  # the watch's first pass: nothing related yet
        (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM]))
        clock.advance(120)
        report = await app.run_once()
        assert report.matches == 1 and report.notified == 0
        for _ in range(60):  # an hour of the receiver being down
            clock.advance(60)
            await app.run_once()
        failed_attempts = len(rec.attempts)
        assert 3 <= failed_attempts <= 20  # retried with backoff, not every minute
        assert rec.delivered == {}
        assert app.store.outbox_counts()["pending"] == 1
    # the daemon restarts meanwhile: the outbox survives
    rec.up = True
    async with App(config, clock=clock) as app:
        for _ in range(15):
            clock.advance(60)
            await app.run_once()
        assert app.store.outbox_counts() == {"pending": 0, "delivered": 1, "failed": 0}
    assert len(rec.delivered) == 1
    assert len(rec.attempts) == failed_attempts + 1


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


class _Port0Controller(Controller):
    """aiosmtpd's Controller on port 0: its start-up probe must dial the port actually bound."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Mailbox, int]]:
    box = _Mailbox()
    controller = _Port0Controller(box, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


async def test_email_notification_through_a_local_smtp_server(
    tmp_path: Path, smtp_server: tuple[_Mailbox, int]
) -> None:
    box, port = smtp_server
    config = watch_config(
        tmp_path,
        (NotifyTarget("email", "desk@example.org"),),
        host="127.0.0.1",
        port=port,
        sender="feedservice@example.org",
    )
    clock = Clock()
    async with App(config, clock=clock) as app:
        await app.run_once()
        (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM]))
        clock.advance(120)
        report = await app.run_once()
        assert report.notified == 1
    [(rcpts, raw)] = box.messages
    assert rcpts == ["desk@example.org"]
    msg = message_from_bytes(raw, policy=email.policy.default)
    assert FOLLOW_UP_ITEM[1] in str(msg["Subject"])
    body = msg.get_body(("plain",))
    assert body is not None and "https://wire.example/hq2" in body.get_content()


async def test_bundled_sample_article_entry(tmp_path: Path) -> None:
    """Issue 2: the sample article's entry has its title, 7 paragraphs (the repeated one
    removed), a summary from the lead paragraph and a permalink the daemon serves."""
    config = bundled_copy(tmp_path)
    async with App(config, clock=Clock()) as app:
        await app.run_once()
        feed = json.loads((tmp_path / "feeds" / "newsroom.json").read_text())
        [item] = [
            i
            for i in feed["items"]
            if i["title"] == "Japan and U.S. to establish joint military headquarters"
        ]
        assert item["content_html"].count("<p>") == 7
        assert item["content_html"].count("The talks were attended by") == 0
        assert item["content_html"].count("will serve as a central command centre") == 1
        assert item["content_html"].count("will act as a central command hub") == 1
        assert item["summary"].startswith("U.S. Secretary of Defense Lloyd Austin")
        assert len(item["summary"]) <= 300
        base = config.service.base_url
        assert item["url"].startswith(f"{base}stories/newsroom/")
        source, slug = item["url"].removeprefix(f"{base}stories/").removesuffix(".html").split("/")
        entry = app.story_entry(source, slug)
        assert entry is not None and entry.title == item["title"]


@pytest.mark.parametrize(
    "query",
    ['"joint headquarters AND', "(" * 1000 + "joint" + ")" * 1000],  # deep: was RecursionError
)
async def test_a_bad_watch_query_stops_start_up_cleanly(tmp_path: Path, query: str) -> None:
    config = watch_config(tmp_path, ())
    bad = replace(config.watches[0], query=query)
    with pytest.raises(ConfigError, match=r"watches\[0\]\.query"):
        async with App(replace(config, watches=(bad,)), clock=Clock()):
            pass


@pytest.mark.slow
async def test_a_hanging_receiver_holds_the_pass_for_one_timeout_not_one_per_item(
    tmp_path: Path,
) -> None:
    # Found by fuzzing the outbox: 100 queued notifications to a receiver that accepts the
    # connection and never answers held the pass (and so all polling) for 100 / 8 x 10 s;
    # now the first transient failure defers the target's other items to their next retry.
    requests = 0

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        try:
            await reader.read()  # until the client gives up
        finally:
            writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    target = NotifyTarget("webhook", url)
    config = watch_config(tmp_path, (target,))
    clock = Clock()
    try:
        async with App(config, clock=clock) as app:
            for i in range(30):
                n = Notification(
                    watch="hq", watch_title="HQ", entry_id=f"e{i}", title=f"T{i}", link=None,
                    source="wire", score=0.5, reasons=(), published=clock(),
                    key=notification_key("hq", f"e{i}"),
                )  # fmt: skip
                app.store.enqueue(n.key, [target_key(target)], n.to_json(), now=clock())
            assert await app.deliver_notifications() == 0
            assert app.store.outbox_counts() == {"pending": 30, "delivered": 0, "failed": 0}
    finally:
        server.close()
        await server.wait_closed()
    assert requests <= 8  # the ones already in flight together, then no more
