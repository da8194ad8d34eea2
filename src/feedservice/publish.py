"""Entries -> Atom 1.0, RSS 2.0 (feedgen) and JSON Feed 1.1 bytes; atomic, change-only writes.

:func:`render_feed` turns a :class:`FeedView` and its entries into the bytes of one format;
:func:`write_if_changed` / :func:`write_feed_files` put those bytes on disk atomically and only
when they differ from what is there; :func:`publish_feed` does both for every format of a feed.

Rendering is deterministic (issue 2 item 6): the same entries give the same bytes across runs
and restarts, so a feed that did not change keeps its ETag. Nothing here reads the clock: the
feed's own date is the newest entry date, or :data:`EMPTY_FEED_UPDATED` for an empty feed.

feedgen's camelCase API is confined to this module (ARCHITECTURE.md, style 4).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from feedgen.feed import FeedGenerator
from lxml import etree  # type: ignore[import-untyped,unused-ignore]

from feedservice.errors import PublishError
from feedservice.model import FEED_FORMATS, Entry
from feedservice.normalise import story_slug

__all__ = [
    "EMPTY_FEED_UPDATED",
    "FEED_EXTENSIONS",
    "GENERATOR_NAME",
    "MEDIA_TYPES",
    "EntryExtra",
    "FeedView",
    "feed_url",
    "publish_feed",
    "render_feed",
    "story_url",
    "write_feed_files",
    "write_if_changed",
]

#: File extension per format: ``feeds_dir/<name>.<ext>`` and ``<base_url><name>.<ext>``.
FEED_EXTENSIONS: Final[Mapping[str, str]] = {"atom": "atom", "rss": "rss", "json": "json"}

#: Content-Type to serve each format with (RFC 4287, the RSS Advisory Board, JSON Feed 1.1).
MEDIA_TYPES: Final[Mapping[str, str]] = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
}

#: The feed date of a feed with no entries. Atom requires ``<updated>`` (RFC 4287 4.1.1) and
#: we never use "now" (the bytes must not change while nothing changes). 1990 or later, since
#: the W3C validator calls earlier dates implausible.
EMPTY_FEED_UPDATED: Final[datetime] = datetime(2000, 1, 1, tzinfo=UTC)

#: Named in Atom ``<generator>`` / RSS ``<generator>``. No version: an upgrade alone must not
#: change the bytes of an unchanged feed.
GENERATOR_NAME: Final[str] = "feedservice"

_JSONFEED_VERSION: Final[str] = "https://jsonfeed.org/version/1.1"
# scheme ":" then only printable ASCII that RFC 3986 allows (no space, <>"{}|\^`). The W3C
# validator wants URIs, not IRIs ("IRI found where URL expected").
_ABSOLUTE_URI: Final[re.Pattern[str]] = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[!#-;=?-\[\]_a-z~]+")
# RFC 3986 reserved and unreserved characters plus "%": quote() leaves these (and any existing
# escapes) alone and percent-encodes the rest as UTF-8 (the RFC 3987 IRI-to-URI mapping).
_URI_SAFE: Final[str] = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True, slots=True)
class FeedView:
    """What a published feed looks like from outside.

    ``self_base`` is the service's ``base_url`` (ends with ``/``); the feed is served at
    ``f"{self_base}{name}.{ext}"``. The Atom self URL is also the feed's permanent id.
    ``home_url`` is the HTML page the feed belongs to (default: ``self_base``, the index).
    ``entry_id_scope``, when set (e.g. for watch feeds), gives each entry an id of its own in
    this feed: ``urn:uuid:`` uuid5 of the scope and the entry id. Readers such as newsboat key
    items by id across every subscription, so an entry published with the same id in a source
    feed and in a watch feed would show up in only one of them. ``language`` is an RFC 5646
    tag such as ``en`` (Atom ``xml:lang``, RSS ``<language>``, JSON Feed ``language``).
    """

    name: str
    title: str
    self_base: str
    description: str | None = None
    home_url: str | None = None
    entry_id_scope: str | None = None
    language: str | None = None

    def url(self, fmt: str) -> str:
        """The URL this feed is served at in format ``fmt``."""
        return feed_url(self.self_base, self.name, fmt)

    @property
    def feed_id(self) -> str:
        return self.url("atom")

    @property
    def home(self) -> str:
        return self.home_url or self.self_base

    def entry_id(self, entry_id: str) -> str:
        """The id ``entry_id`` is published under in this feed (stable across runs).

        An id that is not an absolute ASCII URI (a bare RSS guid such as ``12345``, one with
        spaces or non-ASCII characters) is published as the ``urn:uuid:`` uuid5 of itself:
        Atom ids must be IRIs (RFC 4287 4.2.6) and the W3C validator accepts only URIs.
        """
        if self.entry_id_scope is not None:
            return uuid.uuid5(uuid.NAMESPACE_URL, f"{self.entry_id_scope}\n{entry_id}").urn
        if _ABSOLUTE_URI.fullmatch(entry_id):
            return entry_id
        return uuid.uuid5(uuid.NAMESPACE_URL, entry_id).urn


@dataclass(frozen=True, slots=True)
class EntryExtra:
    """Per-entry extras of a watch feed (issue 4 item 4).

    ``also`` holds ``(source or title, link)`` pairs of the same story reported elsewhere;
    ``story`` names what the watch follows (a title or path), if it has a story.
    """

    score: float
    reasons: tuple[str, ...] = ()
    story: str | None = None
    also: tuple[tuple[str, str], ...] = ()


def feed_url(base_url: str, name: str, fmt: str) -> str:
    """``<base_url><name>.<ext>``; raises PublishError for an unknown format."""
    try:
        ext = FEED_EXTENSIONS[fmt]
    except KeyError:
        raise PublishError(
            f"feed {name!r}: unknown format {fmt!r}; expected one of {', '.join(FEED_FORMATS)}"
        ) from None
    return f"{base_url}{quote(name, safe='')}.{ext}"


def story_url(base_url: str, source: str, story_path: str) -> str:
    """The permalink of a local story: ``<base_url>stories/<source>/<slug>.html``, the slug
    being :func:`story_slug` of its path, as the normaliser links stories.

    The server serves the story's HTML page there (issue 2 item 6); entries of local stories
    that have no link of their own link to it.
    """
    return f"{base_url}stories/{quote(source, safe='')}/{story_slug(story_path)}.html"


# --- rendering ---------------------------------------------------------------------------------


def render_feed(
    spec: FeedView,
    entries: Sequence[Entry],
    fmt: str,
    *,
    extras: Mapping[str, EntryExtra] | None = None,
) -> bytes:
    """Render ``entries`` as one feed document in ``fmt`` (``atom``, ``rss`` or ``json``).

    Entries come out newest first (``published`` descending, then ``id``), one per id (the
    most recently updated wins: readers drop duplicate ids). The caller has applied the
    feed's ``limit``. ``extras`` (watch feeds) maps entry ids to a score and reasons shown
    at the top of the entry's content and, in JSON Feed, under ``_feedservice``.

    Raises PublishError (naming the feed and entry) for a naive datetime, an unknown
    format, or anything feedgen/lxml refuses (such as control characters in text).
    """
    ordered = _order(spec, entries)
    extras = extras or {}
    try:
        if fmt == "json":
            return _render_json(spec, ordered, extras)
        if fmt in ("atom", "rss"):
            return _render_xml(spec, ordered, extras, fmt)
    except PublishError:
        raise
    except (ValueError, TypeError) as exc:  # feedgen and lxml raise ValueError on bad input
        raise PublishError(f"feed {spec.name!r}: cannot render {fmt}: {exc}") from exc
    raise PublishError(
        f"feed {spec.name!r}: unknown format {fmt!r}; expected one of {', '.join(FEED_FORMATS)}"
    )


def _utc(dt: datetime, spec: FeedView, entry_id: str) -> datetime:
    # Whole seconds in UTC: RSS dates (RFC 822) cannot carry more, and one instant must read
    # the same in every format.
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise PublishError(f"feed {spec.name!r}: entry {entry_id!r}: naive datetime {dt!r}")
    return dt.astimezone(UTC).replace(microsecond=0)


def _order(spec: FeedView, entries: Sequence[Entry]) -> list[Entry]:
    for e in entries:
        _utc(e.published, spec, e.id)
        _utc(e.updated, spec, e.id)
    by_id: dict[str, Entry] = {}
    for e in entries:
        seen = by_id.get(e.id)
        if seen is None or (e.updated, e.content_hash) > (seen.updated, seen.content_hash):
            by_id[e.id] = e
    # Newest first: published descending; id ascending breaks ties so the order is total.
    return sorted(by_id.values(), key=lambda e: (-e.published.timestamp(), e.id))


def _feed_updated(spec: FeedView, entries: Sequence[Entry]) -> datetime:
    if not entries:
        return EMPTY_FEED_UPDATED
    return max(_utc(e.updated, spec, e.id) for e in entries)


def _to_uri(link: str) -> str:
    """An IRI (or a URL with stray spaces) as a URI: IDNA host, UTF-8 percent-encoding.

    Links that already are URIs come back unchanged, so the mapping is stable.
    """
    if _ABSOLUTE_URI.fullmatch(link):
        return link
    parts = urlsplit(link.strip())
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = quote(host, safe="")
        netloc = quote(userinfo, safe=_URI_SAFE) + at + host + colon + port
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            quote(parts.path, safe=_URI_SAFE),
            quote(parts.query, safe=_URI_SAFE),
            quote(parts.fragment, safe=_URI_SAFE),
        )
    )


def _entry_link(spec: FeedView, entry: Entry) -> str | None:
    if entry.link:
        return _to_uri(entry.link)
    if entry.story_path:
        return story_url(spec.self_base, entry.source, entry.story_path)
    return None


def _rfc3339(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _extra_html(extra: EntryExtra) -> str:
    """The match explanation shown above a watch entry's content (issue 4 item 4)."""
    esc = html.escape
    parts = [f'<div class="feedservice-match"><p><strong>Score {extra.score:.2f}</strong>']
    if extra.story:
        parts.append(f" &#8212; related to: {esc(extra.story)}")
    parts.append("</p>")
    if extra.reasons:
        items = "".join(f"<li>{esc(r)}</li>" for r in extra.reasons)
        parts.append(f"<ul>{items}</ul>")
    if extra.also:
        links = ", ".join(
            f'<a href="{esc(_to_uri(link), quote=True)}">{esc(label)}</a>'
            for label, link in extra.also
        )
        parts.append(f"<p>Also reported by: {links}</p>")
    parts.append("</div>")
    return "".join(parts)


def _content_html(entry: Entry, extra: EntryExtra | None) -> str:
    return (_extra_html(extra) if extra else "") + entry.content_html


def _render_xml(
    spec: FeedView, entries: Sequence[Entry], extras: Mapping[str, EntryExtra], fmt: str
) -> bytes:
    fg = FeedGenerator()
    if fmt == "rss":
        # dc:creator carries a plain author name; RSS <author> must be an e-mail address.
        fg.load_extension("dc", atom=False, rss=True)
    fg.id(spec.feed_id)
    fg.title(spec.title)
    fg.updated(_feed_updated(spec, entries))  # also RSS lastBuildDate: not "now"
    # Atom requires an author on every entry or on the feed (RFC 4287 4.1.1): the feed's.
    fg.author({"name": spec.title})
    fg.generator(GENERATOR_NAME)
    if spec.language:
        fg.language(spec.language)
    fg.description(spec.description or spec.title)  # RSS requires one; also Atom <subtitle>
    # The self link first and the home link last: feedgen takes RSS <link> from the last link.
    fg.link(href=spec.url(fmt), rel="self", type=MEDIA_TYPES[fmt])
    fg.link(href=spec.home, rel="alternate", type="text/html")
    for entry in entries:
        _add_entry(fg, spec, entry, extras.get(entry.id), fmt)
    return _serialise(fg, fmt)


def _serialise(fg: Any, fmt: str) -> bytes:
    # feedgen 1.0 drops rel/type from entry links (atom_entry() shadows its loop variable), so
    # build the tree, mark our entry links as the alternate HTML page, then serialise; this is
    # atom_str()/rss_str() with that one fix, and never feedgen's write-in-place *_file().
    if fmt == "atom":
        _root, doc = fg._create_atom()
        # feedgen writes xmlns as a plain attribute: in the tree its elements have no namespace.
        for link in doc.iterfind("entry/link"):
            if "rel" not in link.attrib:
                link.set("rel", "alternate")
                link.set("type", "text/html")
    else:
        _root, doc = fg._create_rss()
    out: bytes = etree.tostring(doc, pretty_print=True, encoding="UTF-8", xml_declaration=True)
    return out


def _add_entry(fg: Any, spec: FeedView, entry: Entry, extra: EntryExtra | None, fmt: str) -> None:
    fe = fg.add_entry(order="append")  # the default prepends and reverses the order
    link = _entry_link(spec, entry)
    # RSS 2.0: isPermaLink="true" only when the guid is a URL a browser can open, i.e. the link.
    published_id = spec.entry_id(entry.id)
    fe.guid(published_id, permalink=link is not None and published_id == link)
    fe.title(entry.title)
    fe.updated(_utc(entry.updated, spec, entry.id))
    fe.published(_utc(entry.published, spec, entry.id))
    if link:
        fe.link(href=link, rel="alternate", type="text/html")
    if entry.author:
        if fmt == "rss":
            fe.dc.dc_creator(entry.author)
        else:
            fe.author({"name": entry.author})
    for tag in entry.tags:
        fe.category(term=tag)
    content = _content_html(entry, extra)
    if entry.summary:
        # Atom <summary> is type="text"; RSS <description> is read as HTML by convention, so
        # the plain-text summary is escaped for it ("a <b> c" must not become a tag).
        fe.summary(html.escape(entry.summary, quote=False) if fmt == "rss" else entry.summary)
    if content:
        fe.content(content, type="html")  # Atom <content type="html">, RSS content:encoded
    elif not entry.summary:
        fe.summary(entry.title)  # an entry needs some text in RSS
    if not content and not link:
        # An Atom entry with neither content nor an alternate link is invalid (RFC 4287 4.1.1)
        # and feedgen refuses it, which failed the whole feed: give it its text as content.
        fe.content(html.escape(entry.summary or entry.title, quote=False), type="html")


def _render_json(
    spec: FeedView, entries: Sequence[Entry], extras: Mapping[str, EntryExtra]
) -> bytes:
    # Keys in a fixed, readable order (JSON Feed 1.1 section order); absent values are omitted.
    feed: dict[str, Any] = {
        "version": _JSONFEED_VERSION,
        "title": spec.title,
        "home_page_url": spec.home,
        "feed_url": spec.url("json"),
    }
    if spec.description:
        feed["description"] = spec.description
    if spec.language:
        feed["language"] = spec.language
    feed["authors"] = [{"name": spec.title}]
    feed["items"] = [_json_item(spec, e, extras.get(e.id)) for e in entries]
    text = json.dumps(feed, ensure_ascii=False, indent=2, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _json_item(spec: FeedView, entry: Entry, extra: EntryExtra | None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": spec.entry_id(entry.id)}
    link = _entry_link(spec, entry)
    if link:
        item["url"] = link
    item["title"] = entry.title
    # JSON Feed 1.1 requires content_html or content_text.
    item["content_html"] = _content_html(entry, extra) or html.escape(entry.summary or entry.title)
    if entry.summary:
        item["summary"] = entry.summary
    item["date_published"] = _rfc3339(_utc(entry.published, spec, entry.id))
    item["date_modified"] = _rfc3339(_utc(entry.updated, spec, entry.id))
    if entry.author:
        item["authors"] = [{"name": entry.author}]
    if entry.tags:
        item["tags"] = list(entry.tags)
    if extra is not None:
        item["_feedservice"] = {
            "score": round(float(extra.score), 4),
            "reasons": list(extra.reasons),
            "story": extra.story,
            "also": [{"title": label, "url": _to_uri(link)} for label, link in extra.also],
        }
    return item


# --- writing -----------------------------------------------------------------------------------


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data`` atomically, only when its bytes differ; True if written.

    The bytes go to a hidden temporary file in the same folder, are fsynced, then
    ``os.replace``-d over ``path`` (atomic on POSIX), so a reader or a crash never sees a
    partial file; an unchanged file keeps its mtime and so its Last-Modified.
    Raises PublishError naming the path when the file cannot be read or written.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PublishError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; the server and readers need to read it
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise PublishError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return True


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse fsync on a directory.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_feed_files(feeds_dir: Path, name: str, rendered: Mapping[str, bytes]) -> list[Path]:
    """Write ``feeds_dir/<name>.<ext>`` for every format in ``rendered``; return those written.

    Files whose bytes are unchanged are left alone. Raises PublishError naming the path
    when ``feeds_dir`` cannot be created or a file cannot be written, or for an unknown format.
    """
    try:
        feeds_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"{feeds_dir}: cannot create folder: {exc.strerror or exc}") from exc
    written: list[Path] = []
    for fmt, data in rendered.items():
        ext = FEED_EXTENSIONS.get(fmt)
        if ext is None:
            raise PublishError(f"feed {name!r}: unknown format {fmt!r}")
        path = feeds_dir / f"{name}.{ext}"
        if write_if_changed(path, data):
            written.append(path)
    return written


def publish_feed(
    feeds_dir: Path,
    spec: FeedView,
    entries: Sequence[Entry],
    formats: Sequence[str] = FEED_FORMATS,
    *,
    extras: Mapping[str, EntryExtra] | None = None,
) -> list[Path]:
    """Render ``entries`` in every format of ``formats`` and write the files that changed.

    Everything is rendered before anything is written, so a render error leaves all the
    feed's files as they were. Returns the paths written. Raises PublishError.
    """
    rendered = {fmt: render_feed(spec, entries, fmt, extras=extras) for fmt in formats}
    return write_feed_files(feeds_dir, spec.name, rendered)
