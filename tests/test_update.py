"""poll_source through the real pipeline: story folders, and URL sources against a loopback
origin for every status path (issue 2 item 3, issue 3 items 2-4)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from aiohttp import web

from feedservice.app import App
from feedservice.config import Config, FetchConfig, ServiceConfig
from feedservice.model import FeedSpec, Source
from feedservice.update import parse_and_normalise
from tests.clock import Clock
from tests.origin import Origin, rss

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def make_config(tmp_path: Path, sources: list[Source], **fetch: float) -> Config:
    return Config(
        path=tmp_path / "feedservice.yaml",
        service=ServiceConfig(
            base_url="http://127.0.0.1:8080/",
            feeds_dir=tmp_path / "feeds",
            data_dir=tmp_path / "var",
            jitter=0.1,
        ),
        fetch=FetchConfig(**{"min_interval": 60, "total_timeout": 5, **fetch}),  # type: ignore[arg-type]
        sources=tuple(sources),
        feeds=(FeedSpec("all", "All", tuple(s.name for s in sources)),),
    )


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    o = await Origin().start()
    yield o
    await o.close()


def published_titles(tmp_path: Path) -> list[str]:
    return [
        e.title for e in feedparser.parse((tmp_path / "feeds" / "all.atom").read_bytes()).entries
    ]


# --- story folders ---------------------------------------------------------------------------


async def test_story_folder_new_changed_removed_malformed(tmp_path: Path) -> None:
    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "a.txt").write_text("Alpha\n\nFirst paragraph of alpha.\n")
    (stories / "b.txt").write_text("Beta\n\nFirst paragraph of beta.\n")
    (stories / "bad.json").write_text('{"title": "Half written", ')
    clock = Clock()
    config = make_config(tmp_path, [Source("news", 60, directory=stories)])
    async with App(config, clock=clock, rng=random.Random(1)) as app:
        report = await app.run_once()
        assert sorted(published_titles(tmp_path)) == ["Alpha", "Beta"]
        [poll] = report.polled
        assert any("bad.json" in e for e in poll.errors)
        state = app.store.source_state("news")
        assert state is not None and "bad.json" in (state.last_error or "")
        stored = app.store.latest_entries(["news"], 10)
        # undated stories first seen together still get distinct dates (stable order)
        assert len({e.published for e in stored}) == len(stored) == 2
        [alpha] = [e for e in stored if e.title == "Alpha"]

        # changed file: same id, new updated
        clock.advance(120)
        (stories / "a.txt").write_text("Alpha\n\nAn edited first paragraph of alpha.\n")
        await app.run_once()
        [alpha2] = [e for e in app.store.latest_entries(["news"], 10) if e.title == "Alpha"]
        assert alpha2.id == alpha.id
        assert alpha2.updated > alpha.updated
        assert alpha2.published == alpha.published  # undated story: first seen, kept

        # a good file turned malformed keeps its entry; a removed file leaves the feed
        clock.advance(120)
        (stories / "b.txt").write_text("")
        (stories / "a.txt").unlink()
        await app.run_once()
        assert published_titles(tmp_path) == ["Beta"]
        state = app.store.source_state("news")
        assert state is not None and "b.txt" in (state.last_error or "")


async def test_story_files_never_share_a_permalink(tmp_path: Path) -> None:
    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "a b.txt").write_text("Spaced\n\nBody.\n")
    (stories / "a-b.txt").write_text("Hyphened\n\nBody.\n")
    (stories / "note.txt").write_text("Note as text\n\nBody.\n")
    clock = Clock()
    config = make_config(tmp_path, [Source("news", 60, directory=stories)])
    async with App(config, clock=clock) as app:
        await app.run_once()
        links = {e.title: e.link for e in app.store.latest_entries(["news"], 10)}
        assert len(set(links.values())) == len(links) == 3
        assert links["Hyphened"] == "http://127.0.0.1:8080/stories/news/a-b.html"

        # the same name in another format would take the same permalink: refused, named,
        # and the story that already had it keeps its entry
        clock.advance(120)
        (stories / "a-b.md").write_text("# Usurper\n\nBody.\n")
        await app.run_once(force=True)
        titles = {e.title for e in app.store.latest_entries(["news"], 10)}
        assert titles == {"Spaced", "Hyphened", "Note as text"}
        state = app.store.source_state("news")
        assert state is not None
        assert "a-b.md: has the same permalink as" in (state.last_error or "")
        assert "a-b.txt" in (state.last_error or "")


async def test_unchanged_story_folder_rewrites_nothing(tmp_path: Path) -> None:
    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "a.txt").write_text("Alpha\n\nBody.\n")
    clock = Clock()
    config = make_config(tmp_path, [Source("news", 60, directory=stories)])
    async with App(config, clock=clock) as app:
        first = await app.run_once()
        assert len(first.written) == 3
        clock.advance(3600)
        again = await app.run_once()
        assert again.written == ()
    # a restart (new App, same store) changes no byte either
    before = {p: p.read_bytes() for p in (tmp_path / "feeds").iterdir()}
    async with App(config, clock=clock) as app:
        clock.advance(3600)
        assert (await app.run_once(force=True)).written == ()
    assert {p: p.read_bytes() for p in (tmp_path / "feeds").iterdir()} == before


# --- URL sources -----------------------------------------------------------------------------


async def test_conditional_requests_and_nothing_polled_before_due(
    tmp_path: Path, origin: Origin
) -> None:
    origin.serve_feed("/a.xml", rss("A", [("a1", "One"), ("a2", "Two")]))
    origin.serve_feed("/b.xml", rss("B", [("b1", "Three")]))
    clock = Clock()
    sources = [
        Source("a", 600, url=origin.url("/a.xml")),
        Source("b", 1800, url=origin.url("/b.xml")),
    ]
    async with App(make_config(tmp_path, sources), clock=clock) as app:
        await app.run_once()
        assert sorted(published_titles(tmp_path)) == ["One", "Three", "Two"]
        first_round = len(origin.seen)
        assert first_round == 2
        # not due yet: nothing is requested
        for _ in range(5):
            clock.advance(100)
            await app.run_once()
        assert len(origin.seen) == first_round
        # a's interval (600 s + at most 10% jitter) has passed, b's has not
        clock.advance(700 - 500)
        report = await app.run_once()
        assert [r.source for r in report.polled] == ["a"]
        assert report.polled[0].outcome == "not_modified"
        for _ in range(30):
            clock.advance(100)
            await app.run_once()
    after_first = origin.seen[2:]
    assert after_first, "sources were polled again once due"
    assert all("If-None-Match" in s.headers for s in after_first)
    assert all("If-Modified-Since" in s.headers for s in after_first)
    # a is polled about every 600-660 s, b every 1800-1980 s over 3,700 s
    assert 4 <= len(origin.requests_to("/a.xml")) <= 7
    assert 2 <= len(origin.requests_to("/b.xml")) <= 3


async def test_permanent_redirect_updates_url_temporary_does_not(
    tmp_path: Path, origin: Origin
) -> None:
    origin.serve_feed("/new.xml", rss("N", [("n1", "Moved")]))
    origin.serve_feed("/temp-target.xml", rss("T", [("t1", "Temp")]))
    origin.serve_status("/old.xml", 301, {"Location": "/new.xml"})
    origin.serve_status("/temp.xml", 302, {"Location": "/temp-target.xml"})
    clock = Clock()
    sources = [
        Source("moved", 600, url=origin.url("/old.xml")),
        Source("temp", 600, url=origin.url("/temp.xml")),
    ]
    async with App(make_config(tmp_path, sources), clock=clock) as app:
        await app.run_once()
        moved = app.store.source_state("moved")
        temp = app.store.source_state("temp")
        assert moved is not None and moved.url == origin.url("/new.xml")
        assert temp is not None and temp.url == origin.url("/temp.xml")
        clock.advance(3600)
        await app.run_once()
    assert len(origin.requests_to("/old.xml")) == 1
    assert len(origin.requests_to("/temp.xml")) == 2


async def test_gone_stops_polling_and_says_so(tmp_path: Path, origin: Origin) -> None:
    origin.serve_status("/gone.xml", 410)
    clock = Clock()
    async with App(
        make_config(tmp_path, [Source("old", 60, url=origin.url("/gone.xml"))]), clock=clock
    ) as app:
        report = await app.run_once()
        assert report.polled[0].outcome == "gone"
        for _ in range(3):
            clock.advance(86400)
            await app.run_once(force=True)
        state = app.store.source_state("old")
        assert state is not None and state.gone and "Gone" in (state.last_error or "")
        assert [s.name for s in app.failing_sources()] == ["old"]
    assert len(origin.requests_to("/gone.xml")) == 1


async def test_retry_after_holds_for_every_source_on_the_host(
    tmp_path: Path, origin: Origin
) -> None:
    origin.serve_status("/busy.xml", 429, {"Retry-After": "7200"})
    origin.serve_feed("/ok.xml", rss("OK", [("o1", "Fine")]))
    clock = Clock()
    sources = [
        Source("busy", 600, url=origin.url("/busy.xml")),
        Source("ok", 600, url=origin.url("/ok.xml")),
    ]
    async with App(make_config(tmp_path, sources), clock=clock) as app:
        await app.run_once()
        ok_before = len(origin.requests_to("/ok.xml"))
        clock.advance(3600)  # ok's own interval has passed, but the host asked for 2 hours
        await app.run_once()
        await app.run_once(force=True)  # --force respects Retry-After too
        assert len(origin.requests_to("/ok.xml")) == ok_before
        assert len(origin.requests_to("/busy.xml")) == 1
        states = {s.name: s for s in app.source_states()}
        assert states["busy"].next_check_reason == "retry-after"
        assert states["busy"].last_status == 429
        clock.advance(3601)
        await app.run_once()
    assert len(origin.requests_to("/busy.xml")) == 2


async def test_failures_back_off_with_jitter_and_never_stop(tmp_path: Path, origin: Origin) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls <= 4:
            return web.Response(status=500)
        return web.Response(body=rss("F", [("f1", "Back")]), content_type="application/rss+xml")

    origin.routes["/flaky.xml"] = flaky
    origin.serve_feed("/fine.xml", rss("Fine", [("x1", "Steady")]))
    clock = Clock()
    sources = [
        Source("flaky", 600, url=origin.url("/flaky.xml")),
        Source("fine", 600, url=origin.url("/fine.xml")),
    ]
    async with App(make_config(tmp_path, sources), clock=clock) as app:
        report = await app.run_once()
        # one failing source never stops the other
        assert {r.source: r.outcome for r in report.polled} == {
            "flaky": "error",
            "fine": "updated",
        }
        delays = []
        for _ in range(200):
            state = app.store.source_state("flaky")
            assert state is not None
            if state.failures == 0:
                break
            assert state.next_check_reason == "backoff"
            delays.append((state.next_check_at - clock.now).total_seconds())
            clock.now = state.next_check_at
            await app.run_once()
        state = app.store.source_state("flaky")
        assert state is not None and state.failures == 0 and state.last_status == 200
    assert calls == 5
    assert all(d > 0 for d in delays)
    assert "Back" in published_titles(tmp_path)


async def test_broken_feed_is_recorded_and_published_files_survive(
    tmp_path: Path, origin: Origin
) -> None:
    body = rss("Good", [("g1", "Good one")])

    async def feed(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/rss+xml")

    origin.routes["/f.xml"] = feed
    clock = Clock()
    async with App(
        make_config(tmp_path, [Source("f", 600, url=origin.url("/f.xml"))]), clock=clock
    ) as app:
        await app.run_once()
        before = (tmp_path / "feeds" / "all.atom").read_bytes()
        body = b"\x89PNG\r\n\x1a\n garbage \x00\x01"
        clock.advance(3600)
        report = await app.run_once()
        assert report.polled[0].outcome == "error"
        state = app.store.source_state("f")
        assert state is not None and state.failures == 1
        assert (tmp_path / "feeds" / "all.atom").read_bytes() == before


# --- speed paths (issue 3 item 8) ------------------------------------------------------------


async def test_only_new_or_edited_items_are_normalised_again(
    tmp_path: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    import feedservice.update as update

    seen: list[list[str | None]] = []
    real = update.normalise_items

    def counting(items, **kw):  # type: ignore[no-untyped-def]
        items = list(items)
        seen.append([i.id for i in items])
        return real(items, **kw)

    monkeypatch.setattr(update, "normalise_items", counting)
    origin.serve_feed("/a.xml", rss("A", [("a1", "One"), ("a2", "Two")]))
    clock = Clock()
    config = make_config(tmp_path, [Source("a", 600, url=origin.url("/a.xml"))])
    async with App(config, clock=clock) as app:
        await app.run_once()
        # a new item and an edited one: only those two go through normalise
        # (rss() dates items by position: appended, a1 and a2 keep their dates)
        origin.serve_feed("/a.xml", rss("A", [("a1", "One"), ("a2", "Two!"), ("a3", "Three")]))
        clock.advance(700)
        report = await app.run_once()
        assert [p.outcome for p in report.polled] == ["updated"]
        assert (report.new, report.changed) == (1, 1)
        stored = {e.id: e.title for e in app.store.latest_entries(["a"], 10)}
        assert stored == {"a1": "One", "a2": "Two!", "a3": "Three"}
    assert seen == [["a1", "a2"], ["a2", "a3"]]
    assert sorted(published_titles(tmp_path)) == ["One", "Three", "Two!"]


async def test_parse_and_normalise_in_an_executor(tmp_path: Path, origin: Origin) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from feedservice.update import poll_source

    origin.serve_feed("/a.xml", rss("A", [("a1", "One"), ("a2", "Two")]))
    origin.serve_status("/bad.xml", 200)  # an empty body: a parse error, recorded
    clock = Clock()
    sources = [
        Source("a", 600, url=origin.url("/a.xml")),
        Source("bad", 600, url=origin.url("/bad.xml")),
    ]
    config = make_config(tmp_path, sources)
    async with App(config, clock=clock) as app:
        with ThreadPoolExecutor(1) as pool:
            reports = [
                await poll_source(
                    s,
                    store=app.store,
                    session=app.session,
                    fetch_options=app.fetch_options,
                    policy=app.policy,
                    now=clock(),
                    rng=random.Random(1),
                    executor=pool,
                )
                for s in sources
            ]
        assert [r.outcome for r in reports] == ["updated", "error"]
        assert {e.title for e in reports[0].new} == {"One", "Two"}
        assert "empty body" in reports[1].errors[0]


async def test_app_with_a_parse_worker_pool(tmp_path: Path, origin: Origin) -> None:
    origin.serve_feed("/a.xml", rss("A", [("a1", "One"), ("a2", "Two")]))
    config = make_config(tmp_path, [Source("a", 600, url=origin.url("/a.xml"))], parse_workers=1)
    async with App(config, clock=Clock()) as app:
        report = await app.run_once()
    assert report.new == 2
    assert sorted(published_titles(tmp_path)) == ["One", "Two"]


BROKEN_URLS = [
    "http://example.c[o.test/",
    "http://[::1",
    "http://host:99999999/",
    "http://host:port/",
]


@pytest.mark.parametrize("broken", BROKEN_URLS)
async def test_broken_urls_in_a_feed_fail_nothing(
    tmp_path: Path, origin: Origin, broken: str
) -> None:
    # A feed link, an xml:base and an item link that urllib or nh3 refuse: the feed is read,
    # its items are stored, and the broken item simply has no link (one bad item used to fail
    # its whole source with "internal error ValueError").
    body = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        f"<link>{broken}</link><description>d</description>"
        f'<item xml:base="{broken}"><guid isPermaLink="false">b1</guid><title>Broken</title>'
        f'<link>{broken}</link><description>&lt;a href="{broken}"&gt;x&lt;/a&gt;</description>'
        "</item><item><guid>g2</guid><title>Fine</title><link>https://origin.example/g2</link>"
        "<description>ok</description></item></channel></rss>"
    ).encode()
    origin.serve_feed("/f.xml", body)
    config = make_config(tmp_path, [Source("f", 600, url=origin.url("/f.xml"))])
    async with App(config, clock=Clock()) as app:
        report = await app.run_once()
        entries = {e.title: e for e in app.store.latest_entries(["f"], 10)}
    assert [r.outcome for r in report.polled] == ["updated"]
    assert set(entries) == {"Broken", "Fine"}
    assert entries["Broken"].link is None
    assert entries["Fine"].link == "https://origin.example/g2"


# Items that broke a whole source or every feed it is published in (found by fuzzing): each
# JSON Feed holds the odd item and a fine one; both must be stored and every format published.
ODD_ITEMS = {
    # a lone surrogate ("\ud800" in JSON) failed hashing, nh3 and SQLite (UnicodeEncodeError)
    "lone surrogates": {
        "id": "odd\\ud800",
        "title": "Odd \\udfff",
        "content_html": "<p>x\\ud800</p>",
    },
    # control characters, raw or as character references nh3 decodes: lxml refused the feed
    "control characters": {
        "id": "odd",
        "title": "Odd &#x1;\\u000b",
        "content_html": "<p>&#xb;\\u0001</p>",
    },
    # no link and no content: feedgen refused the Atom entry, so the whole feed failed
    "no link, no content": {"id": "odd", "title": "Odd"},
}


@pytest.mark.parametrize("odd", list(ODD_ITEMS.values()), ids=list(ODD_ITEMS))
async def test_odd_items_fail_nothing(tmp_path: Path, origin: Origin, odd: dict[str, str]) -> None:
    items = ", ".join(
        "{" + ", ".join(f'"{k}": "{v}"' for k, v in item.items()) + "}"
        for item in (odd, {"id": "fine", "title": "Fine", "url": "https://origin.example/f"})
    )
    body = f'{{"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": [{items}]}}'
    origin.serve_feed("/f.json", body.encode())
    config = make_config(tmp_path, [Source("f", 600, url=origin.url("/f.json"))])
    async with App(config, clock=Clock()) as app:
        report = await app.run_once()
        stored = app.store.latest_entries(["f"], 10)
    assert [r.outcome for r in report.polled] == ["updated"]
    assert report.errors == ()
    assert len(stored) == 2
    titles = published_titles(tmp_path)
    assert len(titles) == 2 and "Fine" in titles


def test_a_base_url_nh3_refuses_resolves_nothing() -> None:
    # urlsplit accepts "http://%zz/" but nh3 refused it as a base ("invalid international
    # domain name") with a ValueError that failed the whole source
    body = (
        b'{"version": "https://jsonfeed.org/version/1.1", "home_page_url": "http://%zz/",'
        b' "items": [{"id": "a", "content_html": "<a href=\\"/rel\\">r</a>"}]}'
    )
    parsed = parse_and_normalise(
        body, url="http://%zz/f", content_type=None, max_items=10, source="s", now=NOW, known={}
    )
    assert parsed.error is None
    [entry] = parsed.entries
    assert "<a" in entry.content_html and "/rel" not in entry.content_html


ODD_STORIES = {
    # PyYAML raised ValueError (not YAMLError) for an impossible date or a huge integer
    "feb30.md": b"---\ntitle: Feb\ndate: 2024-02-30\n---\nBody.\n",
    "year0.md": b"---\ntitle: Zero\ndate: 0000-01-01\n---\nBody.\n",
    "bigint.md": b"---\ntitle: Big\nid: " + b"9" * 5000 + b"\n---\nBody.\n",
    # and AttributeError for an explicit timestamp tag on something else
    "tagged.md": b"---\ntitle: Tagged\ndate: !!timestamp 2024-xx\n---\nBody.\n",
    # json raised ValueError (not JSONDecodeError) for an integer over 4300 digits
    "bigint.json": b'{"title": "Big", "id": ' + b"9" * 5000 + b"}",
    "deep.json": b'{"title": "Deep", "tags": ' + b"[" * 100000 + b"]" * 100000 + b"}",
}


async def test_odd_story_files_are_skipped_and_the_others_published(tmp_path: Path) -> None:
    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "good.txt").write_text("Good\n\nA fine story.\n")
    for name, data in ODD_STORIES.items():
        (stories / name).write_bytes(data)
    # lone surrogates and control characters in a story are replaced, not fatal
    (stories / "odd.json").write_bytes(b'{"title": "Odd\\ud800 &#x1;", "content_text": "x\\u000b"}')
    # a file name that is not UTF-8 (a surrogate escape in Python) failed the whole folder
    (Path(os.fsdecode(bytes(stories) + b"/latin-\xe9.txt"))).write_bytes(b"Latin\n\nBody.\n")
    config = make_config(tmp_path, [Source("news", 60, directory=stories)])
    async with App(config, clock=Clock()) as app:
        report = await app.run_once()
    [poll] = report.polled
    assert poll.outcome == "updated"
    assert sorted(published_titles(tmp_path)) == ["Good", "Odd\ufffd"]
    skipped = " ".join(poll.errors)
    assert all(name in skipped for name in ODD_STORIES)
    assert "latin-\ufffd.txt" in skipped and "not valid UTF-8" in skipped


# Raw responses aiohttp's server would not send: header bytes that are not UTF-8 reach us as
# surrogate escapes, which SQLite cannot store; each failed the pass's records for every source.
ODD_RESPONSES = {
    "etag": b'HTTP/1.1 200 OK\r\nETag: "\xff\xfe"\r\n',
    "last-modified": b"HTTP/1.1 200 OK\r\nLast-Modified: \xff\r\n",
    "304 etag": b'HTTP/1.1 304 Not Modified\r\nETag: "\xff"\r\n',
    "reason": b"HTTP/1.1 503 \xff\xfe\r\n",
    # past year 9999 in UTC: OverflowError
    "expires": b"HTTP/1.1 200 OK\r\nExpires: Fri, 31 Dec 9999 23:59:59 -1400\r\n",
}


async def test_odd_response_headers_fail_nothing(tmp_path: Path, origin: Origin) -> None:
    body = rss("Odd", [("o1", "One")])
    names = sorted(ODD_RESPONSES)

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        head = ODD_RESPONSES[names[int(request.split(b" ")[1].strip(b"/"))]]
        length = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        writer.write(head + length + (b"" if b" 304 " in head else body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    origin.serve_feed("/fine.xml", rss("Fine", [("f1", "Fine one")]))
    sources = [
        Source(f"odd{i}", 600, url=f"http://127.0.0.1:{port}/{i}") for i in range(len(names))
    ]
    config = make_config(tmp_path, [*sources, Source("fine", 600, url=origin.url("/fine.xml"))])
    try:
        async with App(config, clock=Clock()) as app:
            report = await app.run_once()
            states = {s.name: s for s in app.store.source_states()}
    finally:
        server.close()
        await server.wait_closed()
    outcomes = {r.source: r.outcome for r in report.polled}
    assert outcomes == {
        "fine": "updated",
        **{f"odd{i}": "error" if n == "reason" else ("not_modified" if "304" in n else "updated")
           for i, n in enumerate(names)},
    }  # fmt: skip
    assert "internal error" not in " ".join(str(s.last_error) for s in states.values())
    assert "Fine one" in published_titles(tmp_path)
