"""publish.py: Atom / RSS / JSON Feed rendering and atomic, change-only writes (issue 2 item 6).

The schema checks use the grammars in the ``shared`` folder beside the repository (Atom RELAX NG
through Debian's ``jing``, the JSON Feed 1.1 JSON Schema with format checks, the RSS 2.0 XSD)
and skip with a reason when that folder or ``jing`` is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from lxml import etree

from feedservice.errors import PublishError
from feedservice.model import Entry
from feedservice.publish import (
    EMPTY_FEED_UPDATED,
    EntryExtra,
    FeedView,
    publish_feed,
    render_feed,
    story_url,
    write_feed_files,
    write_if_changed,
)
from tests.conftest import SHARED

SCHEMAS = SHARED / "feed-schemas"
BASE = "http://feeds.example.net/"
ATOM = "{http://www.w3.org/2005/Atom}"
DC = "{http://purl.org/dc/elements/1.1/}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
URN_ID = "urn:uuid:3f0e6b1c-1b5a-5f6e-9c1d-2a8c8c5e0a11"
HQ_LINK = "https://news.example.org/2024/03/01/japan-us-joint-hq"


def make_entries() -> list[Entry]:
    """Realistic entries, deliberately not in feed order: unicode, HTML, a local story with no
    link of its own (gets a permalink), a urn:uuid id, tags, entries without author."""
    return [
        Entry(
            id="urn:uuid:0b7e1a52-5d0c-5a4e-8f7e-3c1d9e2b4f60",
            source="wire",
            title="Typhoon season: ports in Kyūshū close «for now»",
            link="https://news.example.org/2024/02/27/typhoon?ref=feed&lang=en",
            published=T0 - timedelta(days=3),
            updated=T0 - timedelta(days=3),
            summary="Ports close <today> & ferries stop.",
            content_html=(
                "<p>Ports close &amp; ferries stop. "
                '<img src="https://img.example.org/a.jpg" alt="map"></p>'
            ),
            content_hash="h-typhoon",
            tags=("Japan", "Weather & climate"),
        ),
        Entry(
            id=HQ_LINK,
            source="wire",
            title="Japan and U.S. to establish joint military headquarters",
            link=HQ_LINK,
            published=T0,
            updated=T0 + timedelta(hours=2),
            summary="Japan and the United States will set up a joint headquarters.",
            content_html=(
                "<p>TOKYO — Japan and the U.S. agreed on Thursday to set up a joint "
                "headquarters, <em>officials</em> said.</p>"
                "<blockquote><p>“A historic step.”</p></blockquote>"
            ),
            content_hash="h-hq",
            author="Mari Yamaguchi",
            tags=("Japan", "United States", "Defense"),
        ),
        Entry(
            id=URN_ID,
            source="newsroom",
            title="東京の記者会見: Minister says “no comment” & leaves",
            link=None,
            story_path="2024/tokyo press conference.md",
            published=T0 - timedelta(days=1),
            updated=T0 - timedelta(hours=20),
            summary="Der Minister äußerte sich nicht. 日本語の要約。",
            content_html="<p>日本語の本文 with <code>&lt;tags&gt;</code> and a ☃.</p>",
            content_hash="h-tokyo",
            dated=False,
        ),
        Entry(
            id="tag:news.example.org,2024:blank-summary",
            source="wire",
            title="Short wire note",
            link="https://news.example.org/2024/02/29/メモ note",  # an IRI: published as a URI
            published=T0 - timedelta(days=1),  # same instant as the Tokyo story: tie on id
            updated=T0 - timedelta(days=1, minutes=-5),
            summary="",
            content_html="<p>Brief.</p>",
            content_hash="h-note",
        ),
    ]


EXPECTED_ORDER = [
    HQ_LINK,
    "tag:news.example.org,2024:blank-summary",  # tie on published: "tag:" < "urn:"
    URN_ID,
    "urn:uuid:0b7e1a52-5d0c-5a4e-8f7e-3c1d9e2b4f60",
]


def make_extras() -> dict[str, EntryExtra]:
    return {
        HQ_LINK: EntryExtra(
            score=0.87125,
            reasons=("shared entities: Japan, U.S., joint headquarters", "<missing>: Lloyd Austin"),
            story="Japan and U.S. to establish joint military headquarters",
            also=(("Wire B", "https://b.example.org/hq"), ("Kyodo", "https://k.example.jp/1")),
        ),
        URN_ID: EntryExtra(score=0.41, reasons=("shared terms: Tokyo",), story=None),
    }


def view(name: str = "newsroom", **kw: Any) -> FeedView:
    return FeedView(name=name, title="Newsroom — 新聞", self_base=BASE, **kw)


FEEDS: dict[str, Callable[[], tuple[FeedView, list[Entry], dict[str, EntryExtra] | None]]] = {
    "plain": lambda: (
        view(description="Stories from the newsroom", language="en"),
        make_entries(),
        None,
    ),
    "watch": lambda: (
        view("japan-us-hq", entry_id_scope="watch:japan-us-hq"),
        make_entries(),
        make_extras(),
    ),
    "empty": lambda: (view("empty"), [], None),
}


def render(kind: str, fmt: str) -> bytes:
    spec, entries, extras = FEEDS[kind]()
    return render_feed(spec, entries, fmt, extras=extras)


def xml(data: bytes) -> Any:
    return etree.fromstring(data)


# --- determinism and order ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
@pytest.mark.parametrize("kind", sorted(FEEDS))
def test_render_is_deterministic(kind: str, fmt: str) -> None:
    first = render(kind, fmt)
    again = render(kind, fmt)  # new objects, same values
    spec, entries, extras = FEEDS[kind]()
    shuffled = render_feed(spec, list(reversed(entries)), fmt, extras=extras)
    # The same instants given in another time zone are the same feed.
    jst = timezone(timedelta(hours=9))
    moved = [replace(e, published=e.published.astimezone(jst)) for e in entries]
    in_jst = render_feed(spec, moved, fmt, extras=extras)
    assert first == again == shuffled == in_jst
    assert first.startswith(b"{" if fmt == "json" else b"<?xml")


def test_changed_entry_changes_bytes() -> None:
    spec, entries, _ = FEEDS["plain"]()
    before = {fmt: render_feed(spec, entries, fmt) for fmt in ("atom", "rss", "json")}
    entries[0] = replace(entries[0], title="Typhoon season: ports reopen", updated=T0)
    for fmt, data in before.items():
        assert render_feed(spec, entries, fmt) != data


def atom_ids(data: bytes) -> list[str]:
    return [e.findtext(f"{ATOM}id") for e in xml(data).iter(f"{ATOM}entry")]


def rss_guids(data: bytes) -> list[str]:
    return [i.findtext("guid") for i in xml(data).iter("item")]


def json_ids(data: bytes) -> list[str]:
    return [i["id"] for i in json.loads(data)["items"]]


def test_newest_first_in_every_format() -> None:
    assert atom_ids(render("plain", "atom")) == EXPECTED_ORDER
    assert rss_guids(render("plain", "rss")) == EXPECTED_ORDER
    assert json_ids(render("plain", "json")) == EXPECTED_ORDER


def test_duplicate_ids_published_once_latest_update_wins() -> None:
    spec, entries, _ = FEEDS["plain"]()
    newer = replace(entries[1], title="Updated headline", updated=T0 + timedelta(hours=5))
    data = render_feed(spec, [*entries, newer], "json")
    items = json.loads(data)["items"]
    assert [i["id"] for i in items] == EXPECTED_ORDER
    assert items[0]["title"] == "Updated headline"


# --- Atom ----------------------------------------------------------------------------------------


def test_atom_structure() -> None:
    root = xml(render("plain", "atom"))
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") == f"{BASE}newsroom.atom"
    links = {ln.get("rel"): ln for ln in root.findall(f"{ATOM}link")}
    assert links["self"].get("href") == f"{BASE}newsroom.atom"
    assert links["self"].get("type") == "application/atom+xml"
    assert links["alternate"].get("href") == BASE
    # Feed updated = the newest entry update, never "now".
    assert root.findtext(f"{ATOM}updated") == "2024-03-01T11:30:00+00:00"
    assert root.findtext(f"{ATOM}author/{ATOM}name") == "Newsroom — 新聞"
    assert root.findtext(f"{ATOM}subtitle") == "Stories from the newsroom"
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"

    entries = {e.findtext(f"{ATOM}id"): e for e in root.iter(f"{ATOM}entry")}
    hq = entries[HQ_LINK]
    link = hq.find(f"{ATOM}link")
    assert (link.get("rel"), link.get("href"), link.get("type")) == (
        "alternate",
        HQ_LINK,
        "text/html",
    )
    assert hq.findtext(f"{ATOM}published") == "2024-03-01T09:30:00+00:00"
    assert hq.findtext(f"{ATOM}updated") == "2024-03-01T11:30:00+00:00"
    assert hq.findtext(f"{ATOM}author/{ATOM}name") == "Mari Yamaguchi"
    assert [c.get("term") for c in hq.findall(f"{ATOM}category")] == [
        "Japan",
        "United States",
        "Defense",
    ]
    content = hq.find(f"{ATOM}content")
    assert content.get("type") == "html"
    assert content.text.startswith("<p>TOKYO — Japan")  # escaped HTML, read back as text
    summary = hq.find(f"{ATOM}summary")
    assert summary.get("type") in (None, "text")
    assert summary.text == "Japan and the United States will set up a joint headquarters."

    story = entries[URN_ID]
    assert story.find(f"{ATOM}link").get("href") == story_url(
        BASE, "newsroom", "2024/tokyo press conference.md"
    )
    assert story.find(f"{ATOM}author") is None  # covered by the feed-level author
    assert story.findtext(f"{ATOM}title") == "東京の記者会見: Minister says “no comment” & leaves"
    assert entries["tag:news.example.org,2024:blank-summary"].find(f"{ATOM}summary") is None
    typhoon = entries["urn:uuid:0b7e1a52-5d0c-5a4e-8f7e-3c1d9e2b4f60"]
    assert typhoon.findtext(f"{ATOM}summary") == "Ports close <today> & ferries stop."


def test_story_permalink_is_absolute_and_escaped() -> None:
    url = story_url(BASE, "newsroom", "2024/tokyo press conference.md")
    assert re.fullmatch(
        re.escape(f"{BASE}stories/newsroom/2024/tokyo-press-conference-") + r"[0-9a-f]{8}\.html",
        url,
    )
    assert story_url(BASE, "news room", "a.txt") == f"{BASE}stories/news%20room/a.html"


def test_empty_feed_has_fixed_updated() -> None:
    root = xml(render("empty", "atom"))
    assert root.findtext(f"{ATOM}updated") == EMPTY_FEED_UPDATED.isoformat()
    assert root.find(f"{ATOM}entry") is None
    channel = xml(render("empty", "rss")).find("channel")
    assert parsedate_to_datetime(channel.findtext("lastBuildDate")) == EMPTY_FEED_UPDATED
    assert json.loads(render("empty", "json"))["items"] == []


# --- RSS -----------------------------------------------------------------------------------------


def test_rss_structure() -> None:
    channel = xml(render("plain", "rss")).find("channel")
    assert channel.findtext("title") == "Newsroom — 新聞"
    assert channel.findtext("link") == BASE
    assert channel.findtext("description") == "Stories from the newsroom"
    assert channel.findtext("language") == "en"
    selfs = channel.findall(f"{ATOM}link")
    assert len(selfs) == 1
    assert selfs[0].get("rel") == "self"
    assert selfs[0].get("href") == f"{BASE}newsroom.rss"
    assert selfs[0].get("type") == "application/rss+xml"
    assert parsedate_to_datetime(channel.findtext("lastBuildDate")) == T0 + timedelta(hours=2)

    items = {i.findtext("guid"): i for i in channel.iter("item")}
    for guid, item in items.items():
        g = item.find("guid")
        # isPermaLink="true" only when the guid is the entry's link (RSS 2.0 <guid>).
        assert g.get("isPermaLink") == ("true" if guid == item.findtext("link") else "false")
        link = item.findtext("link")
        parts = urlsplit(link)
        assert parts.scheme in ("http", "https") and parts.netloc, link
        # RFC 822 dates (with 4-digit years, RSS 2.0) that round-trip to the entry's instant.
        assert parsedate_to_datetime(item.findtext("pubDate")).tzinfo is not None
    assert items[URN_ID].find("guid").get("isPermaLink") == "false"
    assert items[HQ_LINK].find("guid").get("isPermaLink") == "true"
    assert parsedate_to_datetime(items[HQ_LINK].findtext("pubDate")) == T0
    assert items[HQ_LINK].findtext(f"{DC}creator") == "Mari Yamaguchi"
    assert items[HQ_LINK].find("author") is None  # RSS <author> must be an e-mail address
    assert [c.text for c in items[HQ_LINK].findall("category")] == [
        "Japan",
        "United States",
        "Defense",
    ]
    assert items[HQ_LINK].findtext("description").startswith("Japan and the United States")
    # The plain-text summary is HTML-escaped for RSS <description>, which readers treat as HTML.
    typhoon = items["urn:uuid:0b7e1a52-5d0c-5a4e-8f7e-3c1d9e2b4f60"]
    assert typhoon.findtext("description") == "Ports close &lt;today&gt; &amp; ferries stop."
    assert items[HQ_LINK].findtext(f"{CONTENT}encoded").startswith("<p>TOKYO")
    # No summary: the HTML content is the description.
    note = items["tag:news.example.org,2024:blank-summary"]
    assert note.findtext("description") == "<p>Brief.</p>"


def test_rss_description_defaults_to_title() -> None:
    channel = xml(render("empty", "rss")).find("channel")
    assert channel.findtext("description") == "Newsroom — 新聞"


# --- JSON Feed -----------------------------------------------------------------------------------


def test_json_feed_structure() -> None:
    feed = json.loads(render("plain", "json"))
    assert list(feed)[:5] == ["version", "title", "home_page_url", "feed_url", "description"]
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == f"{BASE}newsroom.json"
    assert feed["home_page_url"] == BASE
    assert feed["language"] == "en"
    hq = feed["items"][0]
    assert hq["id"] == HQ_LINK and hq["url"] == HQ_LINK
    assert hq["date_published"] == "2024-03-01T09:30:00Z"
    assert hq["date_modified"] == "2024-03-01T11:30:00Z"
    assert hq["authors"] == [{"name": "Mari Yamaguchi"}]
    assert hq["tags"] == ["Japan", "United States", "Defense"]
    assert "<blockquote>" in hq["content_html"]
    assert "_feedservice" not in hq
    story = feed["items"][2]
    assert story["url"] == story_url(BASE, "newsroom", "2024/tokyo press conference.md")
    assert "authors" not in story and "tags" not in story
    # ensure_ascii=False: readable UTF-8 on disk.
    assert "東京の記者会見".encode() in render("plain", "json")


# --- watch feeds (issue 4 item 4) ----------------------------------------------------------------


def test_watch_feed_shows_score_and_reasons_everywhere() -> None:
    spec, _, _ = FEEDS["watch"]()
    hq_id = spec.entry_id(HQ_LINK)
    feed = json.loads(render("watch", "json"))
    hq = next(i for i in feed["items"] if i["id"] == hq_id)
    assert hq["url"] == HQ_LINK  # links to the original item
    assert hq["_feedservice"]["score"] == pytest.approx(0.8712, abs=1e-4)
    assert hq["_feedservice"]["reasons"] == [
        "shared entities: Japan, U.S., joint headquarters",
        "<missing>: Lloyd Austin",
    ]
    assert hq["_feedservice"]["story"] == "Japan and U.S. to establish joint military headquarters"
    html = hq["content_html"]
    assert html.index("Score 0.87") < html.index("<p>TOKYO")  # prepended to the content
    assert "&lt;missing&gt;: Lloyd Austin" in html  # reasons are escaped
    assert '<a href="https://b.example.org/hq">Wire B</a>' in html
    no_extra = next(i for i in feed["items"] if "_feedservice" not in i)
    assert "Score" not in no_extra["content_html"]

    atom = xml(render("watch", "atom"))
    entry = next(e for e in atom.iter(f"{ATOM}entry") if e.findtext(f"{ATOM}id") == hq_id)
    assert entry.find(f"{ATOM}link").get("href") == HQ_LINK
    assert "Score 0.87" in entry.findtext(f"{ATOM}content")
    rss = xml(render("watch", "rss"))
    item = next(i for i in rss.iter("item") if i.findtext("guid") == hq_id)
    assert item.findtext("link") == HQ_LINK
    assert item.find("guid").get("isPermaLink") == "false"
    assert "Lloyd Austin" in item.findtext(f"{CONTENT}encoded")


def test_entry_id_scope_gives_stable_distinct_ids() -> None:
    spec, _, _ = FEEDS["watch"]()
    scoped = spec.entry_id(HQ_LINK)
    assert scoped == uuid.uuid5(uuid.NAMESPACE_URL, f"watch:japan-us-hq\n{HQ_LINK}").urn
    assert scoped != HQ_LINK
    assert view().entry_id(HQ_LINK) == HQ_LINK
    assert len(set(json_ids(render("watch", "json")))) == len(EXPECTED_ORDER)


@pytest.mark.parametrize(
    ("entry_id", "published"),
    [
        ("12345", uuid.uuid5(uuid.NAMESPACE_URL, "12345").urn),
        ("https://e.org/a b", uuid.uuid5(uuid.NAMESPACE_URL, "https://e.org/a b").urn),
        ("tag:example.org,2024:1", "tag:example.org,2024:1"),
        # RFC 4287 allows IRIs, the W3C validator does not ("IRI found where URL expected").
        ("https://例え.jp/記事/1", uuid.uuid5(uuid.NAMESPACE_URL, "https://例え.jp/記事/1").urn),
        (URN_ID, URN_ID),
    ],
)
def test_ids_that_are_not_uris_are_published_as_uuid_urns(entry_id: str, published: str) -> None:
    spec, entries, _ = FEEDS["plain"]()
    entry = replace(entries[0], id=entry_id)
    assert spec.entry_id(entry_id) == published
    assert atom_ids(render_feed(spec, [entry], "atom")) == [published]
    assert rss_guids(render_feed(spec, [entry], "rss")) == [published]
    assert json_ids(render_feed(spec, [entry], "json")) == [published]


IRI = "https://例え.jp/記事/1?q=東京 駅#frag"
IRI_AS_URI = "https://xn--r8jz45g.jp/%E8%A8%98%E4%BA%8B/1?q=%E6%9D%B1%E4%BA%AC%20%E9%A7%85#frag"


def test_iri_links_are_published_as_uris() -> None:
    spec, entries, _ = FEEDS["plain"]()
    entry = replace(entries[0], link=IRI)
    extras = {entry.id: EntryExtra(score=0.5, also=(("Elsewhere", IRI),))}
    atom = xml(render_feed(spec, [entry], "atom", extras=extras))
    assert atom.find(f"{ATOM}entry/{ATOM}link").get("href") == IRI_AS_URI
    rss = xml(render_feed(spec, [entry], "rss"))
    assert rss.findtext("channel/item/link") == IRI_AS_URI
    item = json.loads(render_feed(spec, [entry], "json", extras=extras))["items"][0]
    assert item["url"] == IRI_AS_URI
    assert item["_feedservice"]["also"] == [{"title": "Elsewhere", "url": IRI_AS_URI}]
    assert f'href="{IRI_AS_URI}"' in item["content_html"]
    # Links that already are URIs are left exactly as they are.
    plain = json.loads(render_feed(spec, entries, "json"))["items"]
    assert plain[-1]["url"] == "https://news.example.org/2024/02/27/typhoon?ref=feed&lang=en"


# --- errors --------------------------------------------------------------------------------------


def test_naive_datetime_is_refused() -> None:
    spec, entries, _ = FEEDS["plain"]()
    entries[0] = replace(entries[0], updated=datetime(2024, 3, 1, 9, 30))
    for fmt in ("atom", "rss", "json"):
        with pytest.raises(PublishError, match="naive datetime"):
            render_feed(spec, entries, fmt)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(PublishError, match="unknown format 'html'"):
        render_feed(view(), make_entries(), "html")


def test_control_characters_become_publish_error() -> None:
    spec, entries, _ = FEEDS["plain"]()
    entries[0] = replace(entries[0], title="bad \x00 title")
    with pytest.raises(PublishError, match="newsroom"):
        render_feed(spec, entries, "atom")


# --- schemas -------------------------------------------------------------------------------------


def need_schemas() -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"feed schemas not found at {SCHEMAS} (the shared folder beside the repo)")


def jing(tmp_path: Path, data: bytes) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "feed.atom"
    path.write_bytes(data)
    return subprocess.run(
        ["jing", "-c", str(SCHEMAS / "atom.rnc"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def jing_ready() -> None:
    need_schemas()
    if shutil.which("jing") is None:
        pytest.skip("jing is not on PATH (Debian package 'jing'); Atom RELAX NG check skipped")


@pytest.mark.parametrize("kind", sorted(FEEDS))
def test_atom_validates_against_relax_ng(kind: str, tmp_path: Path, jing_ready: None) -> None:
    result = jing(tmp_path, render(kind, "atom"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_relax_ng_check_can_fail(tmp_path: Path, jing_ready: None) -> None:
    # Negative control: an entry without <id> must be rejected, or the check proves nothing.
    data = render("plain", "atom")
    broken = data.replace(f"<id>{URN_ID}</id>".encode(), b"", 1)
    assert broken != data
    result = jing(tmp_path, broken)
    assert result.returncode != 0


@pytest.fixture
def jsonfeed_validator() -> Any:
    need_schemas()
    import jsonschema

    schema = json.loads((SCHEMAS / "jsonfeed-schema-v1.1.json").read_text(encoding="utf-8"))
    checker = jsonschema.FormatChecker()
    # Without rfc3339-validator / rfc3987 (jsonschema[format]) these formats pass silently.
    missing = {"date-time", "uri"} - set(checker.checkers)
    assert not missing, f"jsonschema format checkers missing: {missing}"
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=checker)


@pytest.mark.parametrize("kind", sorted(FEEDS))
def test_json_feed_validates_against_schema(kind: str, jsonfeed_validator: Any) -> None:
    doc = json.loads(render(kind, "json"))
    errors = [e.message for e in jsonfeed_validator.iter_errors(doc)]
    assert errors == []


def test_json_schema_check_can_fail(jsonfeed_validator: Any) -> None:
    doc = json.loads(render("plain", "json"))
    doc["items"][0]["date_published"] = "2024-03-01 09:30"
    doc["items"][1]["url"] = "not a url"
    messages = [e.message for e in jsonfeed_validator.iter_errors(doc)]
    assert any("date-time" in m for m in messages)
    assert any("uri" in m for m in messages)


@pytest.fixture
def rss_schema() -> Any:
    need_schemas()
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "rss-2_0.xsd")))


@pytest.mark.parametrize("kind", ["plain", "watch"])
def test_rss_validates_against_xsd(kind: str, rss_schema: Any) -> None:
    doc = xml(render(kind, "rss"))
    assert rss_schema.validate(doc), [str(e) for e in rss_schema.error_log]


def test_rss_xsd_demands_an_item(rss_schema: Any) -> None:
    # The XSD (unlike RSS 2.0 and the W3C validator) wants at least one <item>: the empty
    # feed is checked structurally above; this pins down that it is the only complaint.
    assert not rss_schema.validate(xml(render("empty", "rss")))
    errors = [e.message for e in rss_schema.error_log]
    assert len(errors) == 1 and "Missing child element" in errors[0]


# --- writing -------------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_if_changed_writes_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.atom"
    assert write_if_changed(path, b"one") is True
    assert path.read_bytes() == b"one"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    before = path.stat()
    assert write_if_changed(path, b"one") is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert write_if_changed(path, b"two") is True
    assert path.read_bytes() == b"two"
    assert path.stat().st_ino != before.st_ino  # replaced, not rewritten in place
    assert leftovers(tmp_path) == []


def test_write_error_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    with pytest.raises(PublishError, match="not-a-dir"):
        write_if_changed(blocker / "f.atom", b"x")
    with pytest.raises(PublishError, match="not-a-dir"):
        write_feed_files(blocker / "feeds", "newsroom", {"atom": b"x"})


def test_failed_replace_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.rss"
    path.write_bytes(b"old")

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(PublishError, match=r"f\.rss: cannot write: No space left"):
        write_if_changed(path, b"new")
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from feedservice.publish import write_if_changed
    path = Path(sys.argv[1])
    blobs = [b"A" * 400_000, b"B" * 400_000 + b"tail"]
    print("ready", flush=True)
    i = 0
    while True:
        write_if_changed(path, blobs[i % 2])
        i += 1
    """
)


def test_readers_and_a_killed_writer_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    whole = {b"A" * 400_000, b"B" * 400_000 + b"tail"}
    path.write_bytes(b"A" * 400_000)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        seen: set[bytes] = set()
        reads = 0
        deadline = time.monotonic() + 60  # a liveness bound, not a speed goal
        while (len(seen) < 2 or reads < 200) and time.monotonic() < deadline:
            data = path.read_bytes()  # reads interleaved with the writer's replaces
            assert data in whole, f"partial read of {len(data)} bytes"
            seen.add(data)
            reads += 1
        assert seen == whole, "the writer never replaced the file while we read"
        proc.kill()  # SIGKILL mid-loop: possibly mid-write
        proc.wait(timeout=10)
        assert path.read_bytes() in whole
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    # A kill can leave one hidden temp file, never a visible partial feed.
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["f.json"]


def test_publish_feed_writes_changed_files_only(tmp_path: Path) -> None:
    spec, entries, _ = FEEDS["plain"]()
    feeds = tmp_path / "feeds"
    written = publish_feed(feeds, spec, entries)
    assert sorted(p.name for p in written) == ["newsroom.atom", "newsroom.json", "newsroom.rss"]
    for p in written:
        assert p.read_bytes() == render_feed(spec, entries, p.suffix[1:])
    # A "restart": new objects, same values -> nothing rewritten.
    spec2, entries2, _ = FEEDS["plain"]()
    assert publish_feed(feeds, spec2, entries2) == []
    assert publish_feed(feeds, spec2, entries2, ("json",)) == []
    changed = [*entries2[:-1], replace(entries2[-1], title="New title", updated=T0)]
    assert publish_feed(feeds, spec2, changed, ("rss",)) == [feeds / "newsroom.rss"]


def test_publish_feed_render_error_writes_nothing(tmp_path: Path) -> None:
    spec, entries, _ = FEEDS["plain"]()
    publish_feed(tmp_path, spec, entries)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad: Sequence[Entry] = [*entries, replace(entries[0], id="x", published=datetime(2024, 1, 1))]
    with pytest.raises(PublishError):
        publish_feed(tmp_path, spec, bad)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
