"""Bytes -> :class:`RawFeed` / :class:`RawItem`: feed documents and local story files.

Feeds (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.0/1.1) take one of three paths:

* JSON Feed: :mod:`json`, mapped field by field (https://www.jsonfeed.org/version/1.1/).
* XML, fast path: our own reader over one strict, hardened lxml parse (libxml2's push
  parser). Measured here (``bench/parse.py``, docs/benchmarks.md) it reads real-world
  feeds at about 50-55x feedparser's throughput, about two thirds of fastfeedparser's
  speed (lxml's own parse is half of the time), and agrees with feedparser on >= 99% of
  items (id, title, link, date) where fastfeedparser did not: it invents ids from links,
  takes a guid with isPermaLink="false" as the link and drops XHTML titles, and it parses
  with ``huge_tree=True``. Like fastfeedparser it neither sanitises nor resolves links: the
  normalise step does both for every entry, whatever parser produced it (issue 3, item 5).
  Two common slips are repaired first (HTML entities such as ``&nbsp;``, undeclared
  namespace prefixes), and a document cut off before its end (open elements or an open
  CDATA section, nothing else wrong) is read up to the cut by libxml2's recover mode when
  every item start tag in it became an item; anything else not well-formed goes to the
  fallback.
* XML, fallback: feedparser, for documents the fast path rejects. Its ``parse()`` never
  raises, so the bozo policy (after lemon24/reader's ``_parser/feedparser.py``) decides:
  bozo with entries is accepted; no entries plus a real XML or encoding error, or no
  recognisable feed at all, is a :class:`ParseError`. A document with no rss, feed, RDF,
  channel, item or entry element is rejected before feedparser sees it.

Both XML paths map fields alike (feedparser's conventions: ``dc:date`` is ``updated``,
a guid is the link unless isPermaLink="false"), so an item's id never depends on the path.
An item's date is ``published or updated``.

Hostile input (issue 3, item 6): lxml runs with ``resolve_entities=False``,
``load_dtd=False``, ``no_network=True`` and ``huge_tree=False``, strict or recovering a
cut-off document; feedparser's SAX reader has external entities off and expat's
amplification limits. Entity bombs stay unexpanded
(libxml2 refuses them; feedparser leaves ``&name;`` as text) and an external ``SYSTEM``
entity never reads a local file. Nothing here does network I/O.

Before the fast path the body is transcoded to UTF-8 when it is not UTF-8 already, so a
wrong charset label cannot garble it: a byte-order mark wins, then valid UTF-8, then the
HTTP charset, then the XML declaration, then windows-1252 (which, as in the WHATWG Encoding
Standard, also stands in for ISO-8859-1 and US-ASCII labels).

Story files (``.txt``, ``.md``/``.markdown``, ``.json``) are read by :func:`parse_story`.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import codecs
import dataclasses
import difflib
import functools
import html
import io
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone
from email.utils import parsedate_tz
from html.entities import name2codepoint
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urljoin

import feedparser
import yaml
from lxml import etree  # type: ignore[import-untyped]  # no stubs in the venv
from markdown_it import MarkdownIt

from feedservice.errors import ParseError
from feedservice.model import RawFeed, RawItem
from feedservice.xmlchars import xml_safe

__all__ = [
    "STORY_SUFFIXES",
    "is_story_file",
    "parse_date",
    "parse_feed",
    "parse_story",
]

STORY_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".markdown", ".json")

_JSONFEED_PREFIX = "https://jsonfeed.org/version/"

# --- public entry points -----------------------------------------------------------------------


def parse_feed(
    body: bytes, *, url: str, content_type: str | None = None, max_items: int = 500
) -> RawFeed:
    """Parse one feed document into a :class:`RawFeed` (unsanitised HTML, UTC dates).

    ``url`` is where the body came from (an http(s) URL or a file path): it names the feed
    in errors and is the last-resort base for relative links. ``content_type`` is the HTTP
    Content-Type, whose charset is a hint for the encoding. At most ``max_items`` items are
    kept, the first ones in document order, after dropping repeats of an id seen earlier.

    Raises:
        ParseError: the body is empty, an HTML page, binary garbage, JSON that is not a
            JSON Feed, or XML that neither parser reads as a feed.
    """
    if not body or body.isspace():
        raise ParseError("empty body: expected an RSS, Atom or JSON Feed document", url=url)
    charset = _http_charset(content_type)
    # Most feeds open with an XML declaration: no byte-order mark, neither JSON nor HTML.
    text_start = "<?xml" if body.startswith(b"<?xml") else _sniff_start(body)
    if text_start.startswith(("{", "[")):
        feed = _parse_json_feed(body, url=url)
    else:
        if _looks_like_html(text_start):
            raise ParseError(
                "an HTML page, not a feed: expected an RSS, Atom or JSON Feed document", url=url
            )
        # Whitespace before the XML declaration is a fatal error in XML but common in feeds.
        utf8 = _to_utf8(body, charset, check=False).lstrip()
        fast = _parse_fast(utf8, url=url, max_items=max_items)
        if fast is not None and (fast.items or _ITEM_START_RE.search(utf8) is None):
            return fast  # (no items, yet an item tag somewhere: let feedparser look too)
        checked = _to_utf8(body, charset).lstrip()
        if checked != utf8:  # it was not UTF-8 after all: try again, transcoded
            utf8 = checked
            fast = _parse_fast(utf8, url=url, max_items=max_items)
            if fast is not None and (fast.items or _ITEM_START_RE.search(utf8) is None):
                return fast
        if _FEED_ELEMENT_RE.search(utf8) is None:
            # feedparser makes entries only from these elements: without one, nothing to gain.
            raise ParseError(
                "not a feed: no rss, feed, RDF, channel, item or entry element", url=url
            )
        # feedparser gets the transcoded bytes too, and no HTTP charset to contradict them.
        feed = _parse_feedparser(
            _defuse_entities(utf8), url=url, content_type=_without_charset(content_type)
        )
        ttl = _find_ttl(utf8)
        if ttl is not None:
            feed = dataclasses.replace(feed, ttl=ttl)
    # libxml2 lets no character XML cannot carry through (fast path, returned above: the
    # scrub cost it a third more CPU); JSON and feedparser's loose reading do
    return _xml_safe_feed(dataclasses.replace(feed, items=_cap_items(feed.items, max_items)))


def is_story_file(name: str) -> bool:
    """True when ``name`` (a file name or POSIX path) is a story: a known suffix, not hidden."""
    base = name.rsplit("/", 1)[-1]
    if not base or base.startswith((".", "~", "#")):
        return False
    return base.lower().endswith(STORY_SUFFIXES)


def parse_story(data: bytes, *, path: str) -> RawItem:
    """Parse one story file; ``path`` is relative to the source directory (POSIX).

    The suffix of ``path`` chooses the format: ``.txt`` (title line, then paragraphs),
    ``.md``/``.markdown`` (optional YAML front matter, Markdown body) or ``.json``.

    Raises:
        ParseError: with ``path`` and, when known, ``line``: an empty file, malformed
            front matter or JSON, a missing title, or a field of the wrong type.
    """
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in STORY_SUFFIXES:
        raise ParseError(
            f"not a story file: expected one of {', '.join(STORY_SUFFIXES)}", path=path
        )
    text = _decode_text(data)
    if not text.strip():
        raise ParseError("empty file: expected a title and a body", path=path)
    if suffix == ".txt":
        item = _parse_txt(text, path=path)
    elif suffix == ".json":
        item = _parse_story_json(text, path=path)
    else:
        item = _parse_markdown(text, path=path)
    return _xml_safe_item(item)


def _xml_safe_item(item: RawItem) -> RawItem:
    """``item`` with every character XML cannot carry dropped (controls) or replaced (U+FFFD)."""
    changes: dict[str, Any] = {}
    for name in _ITEM_TEXT_FIELDS:
        value = getattr(item, name)
        if value is not None and (safe := xml_safe(value)) is not value:
            changes[name] = safe
    tags = tuple(xml_safe(t) for t in item.tags)
    if any(a is not b for a, b in zip(tags, item.tags, strict=True)):
        changes["tags"] = tags
    return dataclasses.replace(item, **changes) if changes else item


def _xml_safe_feed(feed: RawFeed) -> RawFeed:
    """:func:`_xml_safe_item` over a feed, its title, link and subtitle included."""
    return dataclasses.replace(
        feed,
        items=tuple(_xml_safe_item(i) for i in feed.items),
        title=feed.title and xml_safe(feed.title),
        link=feed.link and xml_safe(feed.link),
        subtitle=feed.subtitle and xml_safe(feed.subtitle),
    )


# Not "path": it names the story's file (update skips a file whose name is not UTF-8).
_ITEM_TEXT_FIELDS = (
    "id", "title", "link", "author", "summary_html", "content_html", "content_text", "base"
)  # fmt: skip


def parse_date(value: object) -> datetime | None:
    """A timezone-aware UTC datetime from a feed or front-matter date, or None if unreadable.

    Reads RFC 3339 / ISO 8601 (``Z``, ``+0000``, a space for ``T``, date only), RFC 822 /
    RFC 2822 and its common breakage (no or wrong weekday, full month names, two-digit
    years, named zones such as CET or JST, ``GMT+2``), ``datetime``/``date`` objects, and as
    a last resort feedparser's date handlers. A value without a zone is taken as UTC; a
    date alone is midnight UTC.
    """
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if not isinstance(value, str):
        return None
    return _parse_date_text(value.strip())


# A pure function of its text, memoised: a feed repeats its items' dates on every poll.
@functools.lru_cache(maxsize=8192)
def _parse_date_text(text: str) -> datetime | None:
    if not text or len(text) > 100:
        return None
    if len(text) >= 20 and text[4] == "-" and text[10] == "T":
        try:  # the common RFC 3339 shape, parsed in C
            return _as_utc(datetime.fromisoformat(text))
        except ValueError:
            pass
    elif len(text) == 10 and text[4] == "-" and text[7] == "-" and text.isascii():
        try:  # a date alone: midnight UTC, as _parse_iso reads it
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            pass
    found = _rfc822_usual(text)
    if found is not None:
        return found
    m = _RFC822_COMMON_RE.fullmatch(text)
    if m is not None:  # the common RFC 822 shape; anything unusual takes the long way
        found = _rfc822_common(m)
        if found is not None:
            return found
    return _parse_iso(text) or _parse_rfc822(text) or _parse_date_feedparser(text)


# --- dates ------------------------------------------------------------------------------------

_ISO_RE = re.compile(
    r"(\d{4})-?(\d{2})-?(\d{2})"
    r"(?:[T ]+(\d{1,2}):?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?",
    re.IGNORECASE,
)

_TZ_OFFSETS: dict[str, int] = {  # minutes east of UTC; RFC 822 names plus common extras
    "UT": 0,
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "WET": 0,
    "WEST": 60,
    "BST": 60,
    "CET": 60,
    "MET": 60,
    "CEST": 120,
    "MEST": 120,
    "EET": 120,
    "EEST": 180,
    "MSK": 180,
    "IST": 330,
    "SGT": 480,
    "HKT": 480,
    "AWST": 480,
    "JST": 540,
    "KST": 540,
    "ACST": 570,
    "ACDT": 630,
    "AEST": 600,
    "AEDT": 660,
    "NZST": 720,
    "NZDT": 780,
    "EST": -300,
    "EDT": -240,
    "CST": -360,
    "CDT": -300,
    "MST": -420,
    "MDT": -360,
    "PST": -480,
    "PDT": -420,
    "AKST": -540,
    "AKDT": -480,
    "HST": -600,
}

_MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("jan", "january", "janv", "jän"),
            ("feb", "february", "febr", "févr"),
            ("mar", "march", "mär", "mars"),
            ("apr", "april", "avr"),
            ("may", "mai"),
            ("jun", "june", "juin"),
            ("jul", "july", "juil"),
            ("aug", "august", "aoû"),
            ("sep", "sept", "september"),
            ("oct", "october", "okt"),
            ("nov", "november"),
            ("dec", "december", "dez", "déc"),
        ),
        start=1,
    )
    for name in names
}

_RFC822_RE = re.compile(
    r"^(?:[^\W\d]+\.?,?\s*)?"  # weekday, often wrong or misspelled: ignored
    r"(\d{1,2})[\s-]+([^\W\d]+)\.?[\s-]+(\d{2,4})"  # 2 Nov 2011 / 02-Nov-11
    r"(?:[\sT,]+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?"  # 17:25[:27]
    r"\s*(?:([A-Za-z]{1,5})?\s*([+-]\d{1,2}(?::?\d{2})?)?)?"  # GMT / +0000 / GMT+2
    r"\s*(?:\([^)]*\))?\s*$",
)

_RFC822_MONTH_FIRST_RE = re.compile(  # "Nov 2, 2011 17:25 +0000" and "Wed Nov 02 2011 ..."
    r"^(?:[^\W\d]+,?\s+)?([^\W\d]+)\.?\s+(\d{1,2}),?\s+(\d{4})"
    r"(?:[\sT,]+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?"
    r"\s*(?:([A-Za-z]{1,5})?\s*([+-]\d{1,2}(?::?\d{2})?)?)?\s*(?:\([^)]*\))?\s*$",
)


# "Tue, 17 Oct 2017 12:17:00 +0000" or "... GMT": most RSS dates, read without _build's
# timezone object; _parse_rfc822 reads the same text to the same instant.
_RFC822_COMMON_RE = re.compile(
    r"(?:[A-Za-z]{3}, )?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2})"
    r" (?:GMT|UTC|UT|Z|([+-])(\d{2})(\d{2}))"
)


_MONTH_DIGITS = {
    name: f"{i:02d}"
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_UTC_NAMES = frozenset(("GMT", "UTC", "UT", "Z"))


def _rfc822_usual(text: str) -> datetime | None:
    """The usual RSS date, ``Tue, 17 Oct 2017 12:17:00 +0000`` or ``... GMT``, or None.

    Accepts a subset of what _RFC822_COMMON_RE matches (ASCII, a title-case month) and
    rewrites it as ISO 8601 for ``datetime.fromisoformat``, which parses it in C and checks
    every field; whatever it declines takes the regex path as before, so no date reads
    differently. Twice as fast as the regex path (about 1.2 against 2.3 us a date).
    """
    if not text.isascii():
        return None
    parts = text.split(" ")
    if len(parts) == 6:
        weekday, day, mon, year, hms, zone = parts
        if len(weekday) != 4 or weekday[3] != "," or not weekday[:3].isalpha():
            return None
    elif len(parts) == 5:
        day, mon, year, hms, zone = parts
    else:
        return None
    month = _MONTH_DIGITS.get(mon)
    if (
        month is None
        or not 0 < len(day) <= 2
        or not day.isdigit()
        or len(year) != 4
        or not year.isdigit()
        or len(hms) != 8
        or hms[2] != ":"
        or hms[5] != ":"
    ):
        return None
    if zone in _UTC_NAMES:
        zone = "Z"
    elif len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit() or zone[3] > "5":
        return None  # (fromisoformat would take minutes over 59; the regex path does not)
    try:  # the digits of hms and their ranges are fromisoformat's to check
        return datetime.fromisoformat(f"{year}-{month}-{day:0>2}T{hms}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _rfc822_common(m: re.Match[str]) -> datetime | None:
    day, mon, year, hour, minute, second, sign, off_hours, off_minutes = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None or int(hour) > 23 or int(second) > 59:
        return None
    try:
        value = datetime(
            int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError:
        return None
    if sign is None:
        return value
    hours, minutes = int(off_hours), int(off_minutes)
    if hours > 23 or minutes > 59:
        return None
    if not hours and not minutes:
        return value
    offset = timedelta(hours=hours, minutes=minutes)
    try:
        return value - offset if sign == "+" else value + offset
    except OverflowError:
        return None


def _as_utc(value: datetime) -> datetime | None:
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _offset_minutes(sign_part: str) -> int | None:
    sign = -1 if sign_part[0] == "-" else 1
    digits = sign_part[1:].replace(":", "")
    if len(digits) <= 2:
        hours, minutes = int(digits), 0
    else:
        hours, minutes = int(digits[:-2]), int(digits[-2:])
    if hours > 23 or minutes > 59:
        return None
    return sign * (hours * 60 + minutes)


def _build(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    micro: int,
    offset: int,
) -> datetime | None:
    try:
        extra = timedelta(0)
        if hour == 24:  # "24:00" is midnight of the next day
            hour, extra = 0, timedelta(days=1)
        if second == 60:  # a leap second: the instant after 59
            second, extra = 59, extra + timedelta(seconds=1)
        local = datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            micro,
            tzinfo=timezone(timedelta(minutes=offset)),
        )
        return (local + extra).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _parse_iso(text: str) -> datetime | None:
    m = _ISO_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    offset = 0
    if zone and zone[0] in "+-":
        found = _offset_minutes(zone)
        if found is None:
            return None
        offset = found
    micro = int((frac or "0")[:6].ljust(6, "0"))
    return _build(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        micro,
        offset,
    )


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:  # RFC 822 two-digit years; RFC 2822 section 4.3
        year += 2000 if year < 50 else 1900
    return year


def _zone(name: str | None, numeric: str | None) -> int | None:
    offset = 0
    if name:
        known = _TZ_OFFSETS.get(name.upper())
        if known is None:
            if numeric is None:
                return None
        else:
            offset = known
    if numeric:
        found = _offset_minutes(numeric)
        if found is None:
            return None
        offset += found
    return offset


def _parse_rfc822(text: str) -> datetime | None:
    m = _RFC822_RE.match(text)
    if m is not None:
        day, mon, year, hour, minute, second, zname, znum = m.groups()
    else:
        m = _RFC822_MONTH_FIRST_RE.match(text)
        if m is None:
            return _parse_email_date(text)
        mon, day, year, hour, minute, second, zname, znum = m.groups()
    month = _MONTHS.get(mon.lower())
    offset = _zone(zname, znum)
    if month is None or offset is None:
        return _parse_email_date(text)
    return _build(
        _year(year),
        month,
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        0,
        offset,
    )


def _parse_email_date(text: str) -> datetime | None:
    try:
        parts = parsedate_tz(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parts is None:
        return None
    try:
        stamp = calendar.timegm(parts[:9]) - (parts[9] or 0)
        return datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _parse_date_feedparser(text: str) -> datetime | None:
    try:
        parsed = feedparser.datetimes._parse_date(text)
    except Exception:  # feedparser's handlers raise assorted errors on junk
        return None
    if parsed is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (OverflowError, ValueError, OSError):
        return None


# --- encodings --------------------------------------------------------------------------------

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL_RE = re.compile(rb"^\s*<\?xml[^>]*?\?>")
_XML_ENCODING_RE = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_CHARSET_RE = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
# WHATWG Encoding Standard: these labels all mean windows-1252 on the web.
_AS_CP1252 = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "us-ascii", "ascii", "cp819"}


def _http_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    m = _CHARSET_RE.search(content_type)
    return m.group(1) if m else None


def _without_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip() or None


# A pure function of a label seen on every poll; codecs.lookup costs a few microseconds.
@functools.lru_cache(maxsize=256)
def _codec(label: str | None) -> str | None:
    if not label:
        return None
    lowered = label.strip().lower()
    if lowered in _AS_CP1252:
        return "cp1252"
    try:
        return codecs.lookup(lowered).name
    except LookupError:
        return None


def _bom_encoding(body: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, len(bom)
    # UTF-16 without a BOM still starts with "<" as one 16-bit unit (XML 1.0 appendix F).
    if body[:2] == b"<\x00" and body[3:4] == b"\x00":
        return "utf-16-le", 0
    if body[:2] == b"\x00<" and body[2:3] == b"\x00":
        return "utf-16-be", 0
    return None


def _sniff_start(body: bytes) -> str:
    """The first few characters of the document, decoded just well enough to sniff its kind."""
    head = body[:2048]
    found = _bom_encoding(head)
    if found is not None:
        name, skip = found
        return head[skip:].decode(name, errors="ignore").lstrip()
    return head.decode("latin-1").lstrip()


def _looks_like_html(start: str) -> bool:
    lowered = start[:1024].lower()
    while lowered.startswith("<!--"):  # skip leading comments
        end = lowered.find("-->")
        if end < 0:
            break
        lowered = lowered[end + 3 :].lstrip()
    return lowered.startswith(("<!doctype html", "<html", "<head", "<body"))


def _with_utf8_declaration(text: str) -> bytes:
    data = text.encode("utf-8")
    m = _XML_DECL_RE.match(data)
    if m is None:
        return data
    decl = _XML_ENCODING_RE.sub(b'encoding="utf-8"', m.group(0), count=1)
    return decl + data[m.end() :]


def _to_utf8(body: bytes, http_charset: str | None, *, check: bool = True) -> bytes:
    """The body as UTF-8 bytes with a matching XML declaration (see the module docstring).

    With ``check=False`` a body that every label calls UTF-8 is returned unread: lxml
    validates UTF-8 as it parses, and the caller calls again with ``check=True`` if it fails.
    """
    found = None if body.startswith(b"<?xml") else _bom_encoding(body)
    if found is not None:
        name, skip = found
        return _with_utf8_declaration(body[skip:].decode(name, errors="replace"))
    decl = _XML_DECL_RE.match(body[:512])
    declared = None
    if decl is not None:
        m = _XML_ENCODING_RE.search(decl.group(0))
        declared = m.group(1).decode("ascii") if m else None
    declared_codec = _codec(declared)
    if not check and declared_codec in (None, "utf-8") and _codec(http_charset) in (None, "utf-8"):
        return body  # (first: isascii() reads all of an ASCII body)
    if body.isascii() and not (declared_codec or "").startswith(("utf-16", "utf-32")):
        return body  # the same bytes in every ASCII-compatible encoding
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
        for candidate in (_codec(http_charset), declared_codec, "cp1252"):
            if candidate is None or candidate == "utf-8":
                continue
            try:
                text = body.decode(candidate)
                break
            except (UnicodeDecodeError, LookupError):
                continue
        else:
            text = body.decode("cp1252", errors="replace")
        return _with_utf8_declaration(text)
    # Valid UTF-8: trust it over any label (latin-1 text is almost never valid UTF-8 by
    # chance); pass the bytes through untouched unless the declaration says otherwise.
    if declared_codec in (None, "utf-8"):
        return body
    return _with_utf8_declaration(text)


def _decode_text(data: bytes) -> str:
    """A story file's text: UTF-8 (BOM or not), UTF-16 with a BOM, else windows-1252."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
        return text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- ttl --------------------------------------------------------------------------------------

_TTL_RE = re.compile(rb"<ttl\s*>\s*(\d{1,9})\s*</ttl\s*>")
_SY_PERIOD_RE = re.compile(rb"<(?:[\w.-]+:)?updatePeriod\s*>\s*([A-Za-z]+)\s*<")
_SY_FREQUENCY_RE = re.compile(rb"<(?:[\w.-]+:)?updateFrequency\s*>\s*(\d{1,9})\s*<")
_SY_PERIODS = {
    b"hourly": 3600.0,
    b"daily": 86400.0,
    b"weekly": 7 * 86400.0,
    b"monthly": 30 * 86400.0,
    b"yearly": 365 * 86400.0,
}
_FEED_ELEMENT_RE = re.compile(
    rb"<(?:[\w.-]+:)?(?:rss|feed|rdf|channel|item|entry)[\s>/]", re.IGNORECASE
)
_ITEM_START_RE = re.compile(rb"<(?:[\w.-]+:)?(?:item|entry)[\s>/]")


def _find_ttl(utf8: bytes) -> float | None:
    """Seconds from RSS ``<ttl>`` (minutes) or RSS 1.0 ``sy:updatePeriod``/``updateFrequency``.

    Looked for in the channel head only (before the first item), so an item's content
    cannot set it. When both are given the longer interval wins: it is the politer one.
    """
    m = _ITEM_START_RE.search(utf8)
    head = utf8[: m.start()] if m else utf8[:65536]
    found: list[float] = []
    ttl = _TTL_RE.search(head)
    if ttl is not None and int(ttl.group(1)) > 0:
        found.append(int(ttl.group(1)) * 60.0)
    period = _SY_PERIOD_RE.search(head)
    frequency = _SY_FREQUENCY_RE.search(head)
    if period is not None or frequency is not None:
        seconds = _SY_PERIODS.get(period.group(1).lower() if period else b"daily")
        times = int(frequency.group(1)) if frequency else 1
        if seconds is not None and times > 0:
            found.append(seconds / times)
    return max(found) if found else None


# --- feed paths -------------------------------------------------------------------------------


def _cap_items(items: Iterable[RawItem], max_items: int) -> tuple[RawItem, ...]:
    """Drop items whose id was seen earlier in the document, then keep the first ``max_items``."""
    kept: list[RawItem] = []
    seen: set[str] = set()
    for item in items:
        if len(kept) >= max_items:
            break
        if item.id is not None:
            if item.id in seen:
                continue
            seen.add(item.id)
        kept.append(item)
    return tuple(kept)


def _str_or_none(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _tags(values: object) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    out: list[str] = []
    for value in values:
        term = value.get("term") if isinstance(value, Mapping) else value
        text = _str_or_none(term)
        if text is not None and text not in out:
            out.append(text)
    return tuple(out)


# Memoised like dates: a feed repeats its xml:base values and links on every poll, and
# urljoin costs microseconds (bench/parse.py clears this too, so each run starts cold).
@functools.lru_cache(maxsize=4096)
def _join(base: str, ref: str) -> str:
    try:
        return urljoin(base, ref)
    except ValueError:  # a broken xml:base or feed link (e.g. "http://[x") is ignored
        return base


def _base(candidate: object, feed_link: str | None, url: str) -> str:
    """The URL relative links in an item resolve against: xml:base, else feed link, else url."""
    root = _join(url, feed_link) if feed_link else url
    if isinstance(candidate, str) and candidate.strip():
        return _join(root, candidate.strip())
    return root


# Hardened once, used for every document (issue 3, item 6): no entity substitution, no DTD
# loading, no network, libxml2's size limits on. An entity bomb stays unexpanded and an
# external entity is never fetched, so no local file is ever read.
def _xml_parser(*, recover: bool = False) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        recover=recover,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


_ATOM10 = "http://www.w3.org/2005/Atom"
_ATOM03 = "http://purl.org/atom/ns#"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_RSS10 = "http://purl.org/rss/1.0/"
_RSS090 = "http://my.netscape.com/rdf/simple/0.9/"
_DC = "http://purl.org/dc/elements/1.1/"
_DCTERMS = "http://purl.org/dc/terms/"
_CONTENT = "http://purl.org/rss/1.0/modules/content/"
_SY = "http://purl.org/rss/1.0/modules/syndication/"
_XHTML = "http://www.w3.org/1999/xhtml"
_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_RDF_ABOUT = f"{{{_RDF}}}about"
_HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")


_ITEM_TAGS = (
    "item",
    f"{{{_RSS10}}}item",
    f"{{{_RSS090}}}item",
    "entry",
    f"{{{_ATOM10}}}entry",
    f"{{{_ATOM03}}}entry",
)

_HTML_ENTITY_RE = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
_XML_ENTITIES = frozenset((b"amp", b"lt", b"gt", b"quot", b"apos"))


_PREFIX_USE_RE = re.compile(rb"</?([A-Za-z_][\w.-]*):[A-Za-z_]")
_PREFIX_DECL_RE = re.compile(rb"xmlns:([A-Za-z_][\w.-]*)\s*=")
_ROOT_TAG_RE = re.compile(rb"<(?![?!])[A-Za-z_][\w.:-]*")
_KNOWN_PREFIXES = {
    b"atom": _ATOM10,
    b"content": _CONTENT,
    b"dc": _DC,
    b"dcterms": _DCTERMS,
    b"rdf": _RDF,
    b"sy": _SY,
    b"itunes": "http://www.itunes.com/dtds/podcast-1.0.dtd",
    b"media": "http://search.yahoo.com/mrss/",
    b"slash": "http://purl.org/rss/1.0/modules/slash/",
    b"wfw": "http://wellformedweb.org/CommentAPI/",
}


def _declare_prefixes(doc: bytes) -> bytes:
    """Declare namespace prefixes a feed uses but forgot to declare, on its root element."""
    declared = set(_PREFIX_DECL_RE.findall(doc))
    missing = {p for p in _PREFIX_USE_RE.findall(doc) if p not in declared and p != b"xml"}
    root = _ROOT_TAG_RE.search(doc)
    if not missing or root is None:
        return doc
    decls = b"".join(
        b' xmlns:%s="%s"' % (p, _KNOWN_PREFIXES.get(p, "urn:x-undeclared:" + p.decode()).encode())
        for p in sorted(missing)
    )
    return doc[: root.end()] + decls + doc[root.end() :]


def _parse_xml(doc: bytes) -> tuple[Any, bool]:
    """(the document's root element, whether it was cut off); None if not read even so.

    Two common slips are repaired and the parse tried again: HTML entities (``&nbsp;``),
    undefined in XML, become numeric references; namespace prefixes used without a
    declaration (``content:encoded``) get one. A document that is well-formed up to an
    early end (a dropped connection, a size cap) is read up to there by
    :func:`_parse_truncated`. Anything else goes to feedparser.
    """
    root = _parse_well_formed(doc)
    if root is not None:
        return root, False
    for _attempt in range(3):
        try:
            return etree.fromstring(doc, _xml_parser()), False
        except etree.XMLSyntaxError as exc:
            message = str(exc)
            if "Entity '" in message and "not defined" in message:
                repaired = _HTML_ENTITY_RE.sub(_numeric_entity, doc)
            elif "Namespace prefix" in message:
                repaired = _declare_prefixes(doc)
            elif exc.code in _TRUNCATION_ERRORS:
                return _parse_truncated(doc), True
            else:
                return None, False
            if repaired == doc:
                return None, False
            doc = repaired
        except ValueError:
            return None, False
    return None, False


def _parse_well_formed(doc: bytes) -> Any:
    """The root of a well-formed document, or None for anything libxml2 reports an error in.

    Through lxml's feed interface (libxml2's push parser) rather than ``fromstring``: the
    same hardened options and the same tree, about a tenth less time on the real-world
    corpus (bench/parse.py). A fresh parser each time: a feed parser holds the document
    it is reading, so it cannot be shared. What fails here takes the path above, whose
    error messages decide the repairs (push mode words some of them differently).
    """
    parser = _xml_parser()
    try:
        parser.feed(doc)
        return parser.close()
    except (etree.LxmlError, ValueError):
        return None


# The errors of a document that stops early: open elements, or a CDATA section, at the end.
_TRUNCATION_ERRORS = frozenset(
    (etree.ErrorTypes.ERR_TAG_NOT_FINISHED, etree.ErrorTypes.ERR_CDATA_NOT_FINISHED)
)


def _parse_truncated(doc: bytes) -> Any:
    """The root of a document cut off before its end, or None if anything else is wrong.

    libxml2's recover mode closes what is open at the end; the document is taken only if
    that was its sole fault (an unfinished CDATA section is one opened after the last
    ``]]>``, not one broken off by a bad character). Hardened as the strict parse is.
    The caller also checks that every item start tag became an item.
    """
    parser = _xml_parser(recover=True)
    try:
        root = etree.fromstring(doc, parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    errors = {e.type for e in parser.error_log if e.level >= etree.ErrorLevels.ERROR}
    if root is None or not errors <= _TRUNCATION_ERRORS:
        return None
    if etree.ErrorTypes.ERR_CDATA_NOT_FINISHED in errors and doc.rfind(b"<![CDATA[") < doc.rfind(
        b"]]>"
    ):
        return None
    return root


def _numeric_entity(m: re.Match[bytes]) -> bytes:
    name = m.group(1)
    if name in _XML_ENTITIES:
        return m.group(0)
    codepoint = name2codepoint.get(name.decode("ascii"))
    return b"&#%d;" % codepoint if codepoint is not None else m.group(0)


def _text(el: Any) -> str | None:
    """An element's text; with child elements (markup that was not escaped), all of it."""
    if len(el):
        return "".join(el.itertext())
    text: str | None = el.text
    return text


def _inner_markup(el: Any) -> str:
    """The markup inside ``el``, its text escaped as in any serialisation.

    One serialisation of ``el``, cut between its own start and end tags: cheaper than one
    per child, and namespace declarations land on the cut-off start tag rather than on
    every child. libxml2 escapes ">" in attribute values, so the first ">" ends the tag.
    """
    if not len(el) and not el.text:
        return ""  # serialised as an empty-element tag, with no end tag to cut at
    whole: str = etree.tostring(el, encoding="unicode", with_tail=False)
    return whole[whole.index(">") + 1 : whole.rindex("</")]


def _parse_fast(utf8: bytes, *, url: str, max_items: int) -> RawFeed | None:
    """The lxml fast path; None means "not a document I can read, try feedparser"."""
    root, truncated = _parse_xml(utf8)
    if root is None or not isinstance(root.tag, str):
        return None
    feed = _read_root(root, url=url, max_items=max_items)
    if truncated and feed is not None:
        # Only when every item start tag in the bytes became an item element: otherwise
        # the cut (or a tag in a comment or CDATA section) hides something, and feedparser,
        # which reads such documents its own way, gets to try.
        found = sum(1 for _ in root.iter(_ITEM_TAGS))
        if not feed.items or found != len(_ITEM_START_RE.findall(utf8)):
            return None
    return feed


def _read_root(root: Any, *, url: str, max_items: int) -> RawFeed | None:
    """Map a parsed document to a :class:`RawFeed`; None for a root that is no feed."""
    xml_base = root.get(_XML_BASE)
    base = _join(url, xml_base) if xml_base else url
    tag = root.tag
    # One pass over the root's children for the first channel and the items beside it,
    # instead of find() and findall() (ElementPath, about 5 us a call).
    if tag == "rss":
        channel = None
        items: list[Any] = []
        for child in root:
            child_tag = child.tag
            if child_tag == "channel":
                channel = child if channel is None else channel
            elif child_tag == "item":
                items.append(child)
        if channel is None:
            return None
        head = _channel_head(channel, "")
        return _rss_feed(head, head.items or items, ns="", url=base, max_items=max_items)
    if tag == _RDF_ROOT:
        channels: dict[str, Any] = {}
        loose: dict[str, list[Any]] = {}
        for child in root:
            child_tag = child.tag
            if child_tag in _CHANNEL_TAGS:
                channels.setdefault(child_tag, child)
            elif child_tag in _LOOSE_ITEM_TAGS:
                loose.setdefault(child_tag, []).append(child)
        for ns in (f"{{{_RSS10}}}", f"{{{_RSS090}}}"):
            channel = channels.get(f"{ns}channel")
            if channel is not None:
                head = _channel_head(channel, ns)
                items = loose.get(f"{ns}item") or head.items
                return _rss_feed(head, items, ns=ns, url=base, max_items=max_items)
        return None
    if tag in _ATOM_FEED_TAGS:
        return _atom_feed(root, ns=tag[: -len("feed")], url=base, max_items=max_items)
    return None


_RDF_ROOT = f"{{{_RDF}}}RDF"
_CHANNEL_TAGS = frozenset((f"{{{_RSS10}}}channel", f"{{{_RSS090}}}channel"))
_LOOSE_ITEM_TAGS = frozenset((f"{{{_RSS10}}}item", f"{{{_RSS090}}}item"))
_ATOM_FEED_TAGS = frozenset((f"{{{_ATOM10}}}feed", f"{{{_ATOM03}}}feed", "feed"))


@dataclasses.dataclass(slots=True)
class _ChannelHead:
    """What an RSS channel says about itself (the first of each element), and its items."""

    title: Any = None  # elements: their text may hold markup
    description: Any = None
    link: str | None = None  # texts, as findtext() gives them
    ttl: str | None = None
    period: str | None = None
    frequency: str | None = None
    items: list[Any] = dataclasses.field(default_factory=list)


_SY_PERIOD_TAG = f"{{{_SY}}}updatePeriod"
_SY_FREQUENCY_TAG = f"{{{_SY}}}updateFrequency"


def _channel_head(channel: Any, ns: str) -> _ChannelHead:
    # One pass over the channel's children instead of a find() per field: each find runs
    # lxml's ElementPath machinery in Python, which costs more than a small feed's items.
    head = _ChannelHead()
    item_tag, title_tag, link_tag, description_tag = (
        f"{ns}item",
        f"{ns}title",
        f"{ns}link",
        f"{ns}description",
    )
    for child in channel:
        tag = child.tag
        if tag == item_tag:
            head.items.append(child)
        elif tag == title_tag:
            if head.title is None:
                head.title = child
        elif tag == link_tag:
            if head.link is None:
                head.link = child.text or ""
        elif tag == description_tag:
            if head.description is None:
                head.description = child
        elif tag == "ttl":
            if head.ttl is None:
                head.ttl = child.text or ""
        elif tag == _SY_PERIOD_TAG:
            if head.period is None:
                head.period = child.text or ""
        elif tag == _SY_FREQUENCY_TAG and head.frequency is None:
            head.frequency = child.text or ""
    return head


# ASCII digits, as _TTL_RE reads them: str.isdigit() also takes "²", which int() refuses, and
# any number of digits, which int() refuses over 4300 (either failed the whole source).
_COUNT_RE = re.compile(r"[0-9]{1,9}")


def _ttl_from(head: _ChannelHead) -> float | None:
    found: list[float] = []
    ttl = (head.ttl or "").strip()
    if _COUNT_RE.fullmatch(ttl) and int(ttl) > 0:
        found.append(int(ttl) * 60.0)
    period = (head.period or "").strip().lower()
    frequency = (head.frequency or "").strip()
    if period or frequency:
        seconds = _SY_PERIODS.get((period or "daily").encode())
        times = int(frequency) if _COUNT_RE.fullmatch(frequency) else 1
        if seconds is not None and times > 0:
            found.append(seconds / times)
    return max(found) if found else None


def _rss_feed(
    head: _ChannelHead, items: list[Any], *, ns: str, url: str, max_items: int
) -> RawFeed:
    feed_link = _str_or_none(head.link)
    root_base = _base(None, feed_link, url)
    tags = _rss_tags(ns)
    out = _collect((_rss_item(item, tags, root_base) for item in items), max_items)
    return RawFeed(
        items=out,
        title=_str_or_none(_text_of(head.title)),
        link=feed_link,
        subtitle=_str_or_none(_text_of(head.description)),
        ttl=_ttl_from(head),
        parser="fast",
    )


def _text_of(el: Any) -> str | None:
    return None if el is None else _text(el)


def _collect(items: Iterable[RawItem], max_items: int) -> tuple[RawItem, ...]:
    return _cap_items(items, max_items)


# Fields of an RSS item or Atom entry, as small ints: the per-item loop below compares
# them and keeps a bit per field already taken (the first element of a kind wins).
(_F_TITLE, _F_LINK, _F_DESCRIPTION, _F_CONTENT, _F_GUID, _F_PUBLISHED, _F_UPDATED) = range(7)
(_F_AUTHOR, _F_CATEGORY, _F_ATOMLINK, _F_ID, _F_SUMMARY, _F_ISSUED, _F_MODIFIED) = range(7, 14)


@functools.cache
def _rss_tags(ns: str) -> dict[str, int]:
    """Element name -> field, for RSS 0.9x/2.0 (no namespace) or RSS 0.90/1.0 (``ns``)."""
    return {
        f"{ns}title": _F_TITLE,
        f"{ns}link": _F_LINK,
        f"{ns}description": _F_DESCRIPTION,
        "guid": _F_GUID,
        "pubDate": _F_PUBLISHED,
        "author": _F_AUTHOR,
        "category": _F_CATEGORY,
        f"{{{_DC}}}creator": _F_AUTHOR,
        f"{{{_DC}}}date": _F_UPDATED,
        f"{{{_DC}}}subject": _F_CATEGORY,
        f"{{{_DC}}}title": _F_TITLE,
        f"{{{_DC}}}description": _F_DESCRIPTION,
        f"{{{_DCTERMS}}}issued": _F_PUBLISHED,
        f"{{{_DCTERMS}}}modified": _F_UPDATED,
        f"{{{_CONTENT}}}encoded": _F_CONTENT,
        f"{{{_ATOM10}}}link": _F_ATOMLINK,
    }


def _clean(value: str | None) -> str | None:
    """Stripped text, None for none or blank (``_str_or_none`` for values known to be str)."""
    return (value.strip() or None) if value else None


def _date(value: str | None) -> datetime | None:
    return _parse_date_text(value.strip()) if value else None


def _rss_item(item: Any, tags: Mapping[str, int], root_base: str) -> RawItem:
    title = link = description = content = guid = published = updated = author = None
    taken = 0  # a bit per field already read
    categories: list[str] = []
    guid_is_link = False
    # One pass over all children: cheaper here than lxml's filter on sixteen tag names.
    # Entity references (left unexpanded) have a non-str tag and miss the dict.
    for child in item:
        field = tags.get(child.tag)
        if field is None:
            continue
        if field == _F_ATOMLINK:
            if not taken & (1 << _F_LINK) and child.get("rel", "alternate") == "alternate":
                link = _clean(child.get("href"))
                taken |= 1 << _F_LINK
            continue
        bit = 1 << field
        if taken & bit and field != _F_CATEGORY:
            continue
        taken |= bit
        # _text inlined, and RSS markup read as it is when it was not escaped: this loop
        # runs for every child of every item.
        value: str | None
        if len(child):
            if field in (_F_DESCRIPTION, _F_CONTENT):
                value = _inner_markup(child)
            else:
                value = "".join(child.itertext())
        else:
            value = child.text
        value = (value.strip() or None) if value else None
        if field == _F_DESCRIPTION:
            description = value
        elif field == _F_TITLE:
            title = value
        elif field == _F_LINK:
            link = value
        elif field == _F_GUID:
            guid = value
            # RSS 2.0: a guid is the item's permalink unless isPermaLink="false".
            guid_is_link = (child.get("isPermaLink") or "true").strip() == "true"
        elif field == _F_PUBLISHED:
            published = value
        elif field == _F_CONTENT:
            content = value
        elif field == _F_CATEGORY:
            if value and value not in categories:
                categories.append(value)
        elif field == _F_UPDATED:
            updated = value
        else:
            author = value
    if link is None and guid is not None and guid_is_link:
        link = guid
    item_base = None
    if item.keys():  # (a quarter the cost of a get() of a namespaced name; most have none)
        if guid is None:  # RSS 1.0 names its item by rdf:about
            guid = _clean(item.get(_RDF_ABOUT))
        item_base = item.get(_XML_BASE)
    return RawItem(
        id=guid,
        title=title,
        link=link,
        published=_parse_date_text(published) if published else None,
        updated=_parse_date_text(updated) if updated else None,
        author=author,
        summary_html=description,
        content_html=content,
        tags=tuple(categories),
        base=_join(root_base, item_base) if item_base else root_base,
    )


def _atom_link(links: Iterable[Any]) -> str | None:
    """feedparser's rule: the last rel=alternate link of an HTML type (the default type)."""
    found = None
    for link in links:
        if link.get("rel", "alternate") != "alternate":
            continue
        kind = (link.get("type") or "text/html").lower()
        if kind in ("text/html", "application/xhtml+xml") and link.get("href"):
            found = link.get("href")
    return _str_or_none(found)


def _atom_content(el: Any) -> tuple[str | None, bool]:
    """(value, is_html) of an Atom text construct or content element (RFC 4287 3.1, 4.1.3)."""
    kind = el.get("type")
    mode = el.get("mode")  # Atom 0.3
    if kind is None and mode is None:  # the common case: plain text
        return _text(el), False
    kind = (kind or "text").lower()
    mode = (mode or "").lower()
    if mode == "base64":
        try:
            decoded = base64.b64decode(_text(el) or "", validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None, False
        return decoded, "html" in kind
    if "xhtml" in kind or mode == "xml":
        inner = el
        children = [c for c in el if isinstance(c.tag, str)]
        if len(children) == 1 and children[0].tag == f"{{{_XHTML}}}div":
            inner = children[0]
        return _inner_markup(inner), True
    if "html" in kind or mode == "escaped":
        return _text(el), True
    return _text(el), False


def _atom_feed(root: Any, *, ns: str, url: str, max_items: int) -> RawFeed:
    # One pass over the feed's children, not a find() per field (see _channel_head).
    entries: list[Any] = []
    links: list[Any] = []
    title_el = subtitle_el = tagline_el = None
    entry_tag, link_tag, title_tag, subtitle_tag, tagline_tag = (
        f"{ns}entry",
        f"{ns}link",
        f"{ns}title",
        f"{ns}subtitle",
        f"{ns}tagline",  # Atom 0.3
    )
    for child in root:
        tag = child.tag
        if tag == entry_tag:
            entries.append(child)
        elif tag == link_tag:
            links.append(child)
        elif tag == title_tag:
            title_el = child if title_el is None else title_el
        elif tag == subtitle_tag:
            subtitle_el = child if subtitle_el is None else subtitle_el
        elif tag == tagline_tag and tagline_el is None:
            tagline_el = child
    if subtitle_el is None:
        subtitle_el = tagline_el
    feed_link = _atom_link(links)
    root_base = _base(None, feed_link, url)
    tags = _atom_tags(ns)
    out = _collect((_atom_entry(e, ns, tags, root_base) for e in entries), max_items)
    return RawFeed(
        items=out,
        title=_str_or_none(_text_of(title_el)),
        link=feed_link,
        subtitle=_str_or_none(_text_of(subtitle_el)),
        parser="fast",
    )


@functools.cache
def _atom_tags(ns: str) -> dict[str, int]:
    """Element name -> field for an Atom 1.0 / 0.3 entry (``ns`` is ``{namespace}``)."""
    return {
        f"{ns}id": _F_ID,
        f"{ns}title": _F_TITLE,
        f"{ns}link": _F_LINK,
        f"{ns}published": _F_PUBLISHED,
        f"{ns}issued": _F_ISSUED,  # Atom 0.3
        f"{ns}updated": _F_UPDATED,
        f"{ns}modified": _F_MODIFIED,  # Atom 0.3
        f"{ns}summary": _F_SUMMARY,
        f"{ns}content": _F_CONTENT,
        f"{ns}author": _F_AUTHOR,
        f"{ns}category": _F_CATEGORY,
    }


def _atom_entry(entry: Any, ns: str, tags: Mapping[str, int], root_base: str) -> RawItem:
    entry_id = title = link = published = issued = updated = modified = author = None
    summary = content = None
    taken = 0  # a bit per field already read
    categories: list[str] = []
    content_base = None
    name_tag = f"{ns}name"
    for child in entry:
        field = tags.get(child.tag)
        if field is None:
            continue
        if field == _F_LINK:
            # feedparser's rule: the last rel=alternate link of an HTML type (the default).
            if child.get("rel", "alternate") == "alternate":
                kind = child.get("type")
                if not kind or kind.lower() in ("text/html", "application/xhtml+xml"):
                    link = child.get("href") or link
            continue
        if field == _F_CATEGORY:
            term = _clean(child.get("term"))
            if term and term not in categories:
                categories.append(term)
            continue
        bit = 1 << field
        if taken & bit:
            continue
        taken |= bit
        if field == _F_TITLE:
            title = _atom_content(child)[0]  # HTML for type html/xhtml; normalise strips
        elif field in (_F_SUMMARY, _F_CONTENT):
            value, is_html = _atom_content(child)
            if field == _F_SUMMARY:
                if value and not is_html:
                    value = html.escape(value, quote=False)
                summary = value
            else:
                content = (value, is_html)
            content_base = content_base or child.get(_XML_BASE)
        elif field == _F_AUTHOR:
            # The first name child's text, as findtext() would give it, without ElementPath.
            author = next((sub.text or "" for sub in child if sub.tag == name_tag), None)
        else:
            value = "".join(child.itertext()) if len(child) else child.text  # _text inlined
            if field == _F_ID:
                entry_id = value
            elif field == _F_UPDATED:
                updated = value
            elif field == _F_PUBLISHED:
                published = value
            elif field == _F_ISSUED:
                issued = value
            else:
                modified = value
    entry_id = _clean(entry_id)
    link = _clean(link)
    if link is None and entry_id and entry_id.startswith(("http://", "https://")):
        link = entry_id  # feedparser reads an id as the permalink when there is no link
    content_html = content_text = None
    if content is not None:
        if content[1]:
            content_html = content[0]
        else:
            content_text = content[0]
    entry_base = entry.get(_XML_BASE) if entry.keys() else None
    base = _join(root_base, entry_base) if entry_base else root_base
    if content_base:
        base = _join(base, content_base)
    return RawItem(
        id=entry_id,
        title=_clean(title),
        link=link,
        published=_date(published or issued),
        updated=_date(updated or modified),
        author=_clean(author),
        summary_html=_clean(summary),
        content_html=_clean(content_html),
        content_text=_clean(content_text),
        tags=tuple(categories),
        base=base,
    )


# An internal DTD subset at the top of a document, and in it an entity whose value refers to
# another entity: the shape of "billion laughs" (issue 3, item 6). libxml2 refuses it at once;
# expat, under feedparser, only stops expanding after megabytes of output, about a CPU second
# that would block the event loop on every poll of such a feed.
_DOCTYPE_SUBSET_RE = re.compile(
    rb"\A((?:[^<]|<\?[^>]*\?>|<!--.*?-->)*<!DOCTYPE[^\[>]*)\[(.*?)\]\s*>", re.S
)
_NESTED_ENTITY_RE = re.compile(rb"<!ENTITY\s[^>]*?(?:\"[^\"]*&[A-Za-z_:]|'[^']*&[A-Za-z_:])")


def _defuse_entities(doc: bytes) -> bytes:
    """``doc`` without its internal DTD subset when an entity there refers to another one.

    The references then stay undefined, which feedparser's loose reading keeps as plain text,
    as it did after expat gave up; any other document is returned unchanged.
    """
    m = _DOCTYPE_SUBSET_RE.match(doc, 0, 65536) if b"<!ENTITY" in doc[:65536] else None
    if m is None or _NESTED_ENTITY_RE.search(m.group(2)) is None:
        return doc
    return m.group(1) + b">" + doc[m.end() :]


# A run of the characters feedparser's e-mail pattern repeats (mixin._sync_author_detail), at a
# run's start only (the lookbehind), so the scan is linear. That pattern is searched in every
# author, dc:creator and publisher, and costs the square of the longest run: one 100,000-letter
# author took 14 s of CPU, and a malformed feed of a few such items blocked a worker for minutes.
_LONG_RUN_RE = re.compile(rb"(?<![A-Za-z0-9_.+\-])[A-Za-z0-9_.+\-]{1024,}")


def _break_long_runs(doc: bytes) -> bytes:
    """``doc`` with a space after every 512 bytes of such a run; no word, URL or base64 data
    has runs that long (a "/" or "=" ends them), so nothing real changes."""

    def cut(m: re.Match[bytes]) -> bytes:
        run = m.group()
        return b" ".join(run[i : i + 512] for i in range(0, len(run), 512))

    return _LONG_RUN_RE.sub(cut, doc)


_CHARREF_RE = re.compile(rb"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")


def _no_surrogate_refs(doc: bytes) -> bytes:
    """``doc`` with character references to a surrogate or past U+10FFFF as U+FFFD:
    feedparser raised UnicodeEncodeError on one ("&#xd800;"), losing every item of the feed."""
    if b"&#" not in doc:
        return doc

    def fix(m: re.Match[bytes]) -> bytes:
        hexa, digits = m.group(1), m.group(2)
        if len((hexa or digits).lstrip(b"0")) > 8:  # far past U+10FFFF (and int() caps digits)
            return b"&#xfffd;"
        code = int(hexa, 16) if hexa else int(digits)
        return b"&#xfffd;" if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else m.group(0)

    return _CHARREF_RE.sub(fix, doc)


def _parse_feedparser(body: bytes, *, url: str, content_type: str | None) -> RawFeed:
    """The fallback; the bozo policy decides what counts as a feed (module docstring)."""
    body = _break_long_runs(_no_surrogate_refs(body))
    headers = {"content-type": content_type} if content_type else {}
    try:
        # Bytes in a BytesIO, never a str (it may be taken as a URL or a path); feedparser's
        # own sanitiser and URI rewriting are off because normalise does both for every path.
        d = feedparser.parse(
            io.BytesIO(body),
            response_headers=headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as exc:  # parse() promises never to raise; translate if it does
        raise ParseError(f"not a readable feed: {exc}", url=url) from exc
    entries = d.get("entries") or []
    if not entries:
        problem = d.get("bozo_exception") if d.get("bozo") else None
        survivable = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
        if problem is not None and not isinstance(problem, survivable):
            raise ParseError(f"not a readable feed: {problem}", url=url)
        if not d.get("version"):
            raise ParseError("not a feed: expected an RSS, Atom or JSON Feed document", url=url)
    meta = d.get("feed") or {}
    feed_link = _str_or_none(meta.get("link"))
    items = tuple(_feedparser_item(e, feed_link=feed_link, url=url) for e in entries)
    return RawFeed(
        items=items,
        title=_str_or_none(meta.get("title")),
        link=feed_link,
        subtitle=_str_or_none(meta.get("subtitle")),
        parser="feedparser",
    )


def _struct_date(parsed: object, raw: object) -> datetime | None:
    if parsed is not None:
        try:
            return datetime.fromtimestamp(calendar.timegm(parsed), UTC)  # type: ignore[arg-type]
        except (OverflowError, ValueError, OSError, TypeError):
            pass
    return parse_date(raw)


def _feedparser_item(entry: dict[str, Any], *, feed_link: str | None, url: str) -> RawItem:
    content_html = content_text = None
    base: object = None
    for content in entry.get("content") or ():
        value = content.get("value")
        if not value:
            continue
        base = base or content.get("base")
        kind = str(content.get("type") or "text/html").lower()
        if "html" in kind and content_html is None:
            content_html = value
        elif "html" not in kind and content_text is None:
            content_text = value
    summary_detail = entry.get("summary_detail") or {}
    base = base or summary_detail.get("base")
    return RawItem(
        id=_str_or_none(entry.get("id")),
        title=_str_or_none(entry.get("title")),
        link=_str_or_none(entry.get("link")),
        # dict.get: FeedParserDict's own get() maps a missing "updated" to "published"
        # with a DeprecationWarning (feedparser issue 310).
        published=_struct_date(dict.get(entry, "published_parsed"), dict.get(entry, "published")),
        updated=_struct_date(dict.get(entry, "updated_parsed"), dict.get(entry, "updated")),
        author=_str_or_none(entry.get("author")),
        summary_html=_str_or_none(entry.get("summary")),
        content_html=content_html,
        content_text=content_text,
        tags=_tags(entry.get("tags")),
        base=_base(base, feed_link, url),
    )


def _parse_json_feed(body: bytes, *, url: str) -> RawFeed:
    """JSON Feed 1.0 / 1.1 (https://www.jsonfeed.org/version/1.1/)."""
    try:
        doc = json.loads(body)  # json detects UTF-8/16/32 from the first bytes (RFC 8259)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}", url=url) from exc
    if not isinstance(doc, dict):
        raise ParseError("not a JSON Feed: expected a JSON object at the top level", url=url)
    version = doc.get("version")
    items = doc.get("items")
    # Version 1 feeds in the wild still say http://jsonfeed.org/version/1.
    versioned = isinstance(version, str) and "jsonfeed.org/version/" in version
    if not isinstance(items, list) or not (versioned or version is None):
        raise ParseError(
            f'not a JSON Feed: expected "version": "{_JSONFEED_PREFIX}1.1" and an "items" list',
            url=url,
        )
    feed_link = _str_or_none(doc.get("home_page_url"))
    feed_author = _json_author(doc)
    out = tuple(
        _json_item(item, feed_link=feed_link, url=url, feed_author=feed_author)
        for item in items
        if isinstance(item, dict)
    )
    return RawFeed(
        items=out,
        title=_str_or_none(doc.get("title")),
        link=feed_link,
        subtitle=_str_or_none(doc.get("description")),
        parser="json",
    )


def _json_author(obj: Mapping[str, Any]) -> str | None:
    authors = obj.get("authors")  # 1.1
    if isinstance(authors, list):
        names = [_str_or_none(a.get("name")) for a in authors if isinstance(a, dict)]
        joined = ", ".join(n for n in names if n)
        if joined:
            return joined
    author = obj.get("author")  # 1.0
    if isinstance(author, dict):
        return _str_or_none(author.get("name"))
    return None


def _json_item(
    item: Mapping[str, Any], *, feed_link: str | None, url: str, feed_author: str | None
) -> RawItem:
    link = _str_or_none(item.get("url")) or _str_or_none(item.get("external_url"))
    summary = _str_or_none(item.get("summary"))
    return RawItem(
        id=_str_or_none(item.get("id")),
        title=_str_or_none(item.get("title")),
        link=link,
        published=parse_date(item.get("date_published")),
        updated=parse_date(item.get("date_modified")),
        author=_json_author(item) or feed_author,
        # JSON Feed's summary is plain text; RawItem.summary_html is HTML.
        summary_html=html.escape(summary, quote=False) if summary else None,
        content_html=_str_or_none(item.get("content_html")),
        content_text=_str_or_none(item.get("content_text")),
        tags=_tags(item.get("tags")),
        base=_base(None, feed_link, url),
    )


# --- story files ------------------------------------------------------------------------------

_STORY_FIELDS = ("id", "title", "date", "updated", "author", "tags", "link", "summary")
_JSON_STORY_FIELDS = (*_STORY_FIELDS, "content_html", "content_text")

# CommonMark with raw HTML left on: a story is the user's own writing, and inline HTML
# (<figure>, <sup>, <abbr>) is part of Markdown; every entry's HTML goes through the nh3
# sanitiser in normalise, so scripts and handlers never reach a reader either way.
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs; with no blank line at all, one paragraph per line."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if not any(not line.strip() for line in lines):
        return [" ".join(line.split()) for line in lines]
    out: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(" ".join(current).split()))
            current = []
    return out


def _parse_txt(text: str, *, path: str) -> RawItem:
    lines = text.split("\n")
    first = next(i for i, line in enumerate(lines) if line.strip())
    title = " ".join(lines[first].split())
    paragraphs = _paragraphs(lines[first + 1 :])
    return RawItem(
        title=title,
        content_html="\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs) or None,
        content_text="\n\n".join(paragraphs) or None,
        path=path,
    )


def _key_line(source: str, key: str, *, first_line: int, json_style: bool = False) -> int | None:
    pattern = rf'^\s*"{re.escape(key)}"\s*:' if json_style else rf"^{re.escape(key)}\s*:"
    rx = re.compile(pattern)
    for i, line in enumerate(source.split("\n")):
        if rx.search(line):
            return first_line + i
    return None


def _story_fields(
    fields: Mapping[str, Any],
    *,
    path: str,
    source: str,
    first_line: int,
    json_style: bool,
) -> dict[str, Any]:
    """Check and convert the shared story fields; errors name the field and its line."""

    def fail(key: str, expected: str) -> ParseError:
        got = fields.get(key)
        shown = repr(got) if not isinstance(got, str | int | float) else repr(got)[:60]
        line = _key_line(source, key, first_line=first_line, json_style=json_style)
        return ParseError(f"{key}: expected {expected}, got {shown}", path=path, line=line)

    out: dict[str, Any] = {}
    for key in ("id", "title", "author", "link", "summary", "content_html", "content_text"):
        if key not in fields or fields[key] is None:
            continue
        value = fields[key]
        if (
            key in ("id", "title")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            value = str(value)
        if not isinstance(value, str):
            raise fail(key, "text")
        if key == "title" and not value.strip():
            raise fail(key, "a non-empty title")
        out[key] = value.strip() if key not in ("content_html", "content_text") else value
    for key in ("date", "updated"):
        if key not in fields or fields[key] is None:
            continue
        value = fields[key]
        parsed = parse_date(value) if isinstance(value, str | date) else None
        if parsed is None:
            raise fail(key, "a date like 2024-05-01 or 2024-05-01T09:30:00Z")
        out[key] = parsed
    if fields.get("tags") is not None:
        tags = fields["tags"]
        if isinstance(tags, str):
            out["tags"] = tuple(t.strip() for t in tags.split(",") if t.strip())
        elif isinstance(tags, list) and all(isinstance(t, str | int) for t in tags):
            out["tags"] = tuple(str(t).strip() for t in tags if str(t).strip())
        else:
            raise fail("tags", "a list of strings or a comma-separated string")
    return out


def _story_item(fields: Mapping[str, Any], *, path: str, content_html: str | None) -> RawItem:
    summary = fields.get("summary")
    return RawItem(
        id=fields.get("id"),
        title=fields.get("title"),
        link=fields.get("link"),
        published=fields.get("date"),
        updated=fields.get("updated"),
        author=fields.get("author"),
        summary_html=html.escape(summary, quote=False) if summary else None,
        content_html=content_html,
        content_text=fields.get("content_text"),
        tags=fields.get("tags", ()),
        path=path,
        base=fields.get("link"),
    )


def _split_front_matter(text: str, *, path: str) -> tuple[dict[str, Any], str, str, int]:
    """(fields, front matter source, body, first line of the front matter's content)."""
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return {}, "", text, 0
    for end in range(1, len(lines)):
        if lines[end].rstrip() in ("---", "..."):
            break
    else:
        raise ParseError(
            "front matter opened with '---' on line 1 is never closed: expected a line '---'",
            path=path,
            line=1,
        )
    source = "\n".join(lines[1:end])
    try:
        loaded = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParseError(
            f"front matter is not valid YAML ({problem}): expected 'key: value' lines",
            path=path,
            line=line,
        ) from exc
    except Exception as exc:
        # PyYAML's constructors raise what datetime(), int() or re give them: ValueError for
        # "date: 2024-02-30" or an integer over 4300 digits, AttributeError for
        # "!!timestamp x"; RecursionError for deep nesting. None of it is a YAMLError.
        raise ParseError(
            f"front matter has a value that cannot be read ({type(exc).__name__}: {exc}): "
            "expected 'key: value' lines",
            path=path,
        ) from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ParseError(
            "front matter: expected a mapping of fields (title: ..., date: ...), "
            f"got {type(loaded).__name__}",
            path=path,
            line=2,
        )
    return loaded, source, "\n".join(lines[end + 1 :]), 2


def _parse_markdown(text: str, *, path: str) -> RawItem:
    loaded, source, body, first_line = _split_front_matter(text, path=path)
    fields = _story_fields(
        {str(k): v for k, v in loaded.items()},
        path=path,
        source=source,
        first_line=first_line,
        json_style=False,
    )
    if "title" not in fields:
        tokens = _MARKDOWN.parse(body)
        for i, token in enumerate(tokens):
            if token.type == "heading_open" and token.tag == "h1" and token.map is not None:
                fields["title"] = " ".join(tokens[i + 1].content.split())
                start, stop = token.map
                body_lines = body.split("\n")
                body = "\n".join(body_lines[:start] + body_lines[stop:])
                break
        if not fields.get("title"):
            fields["title"] = PurePosixPath(path).stem
    content_html = _MARKDOWN.render(body).strip()
    fields.setdefault("content_text", None)
    return _story_item(fields, path=path, content_html=content_html or None)


def _parse_story_json(text: str, *, path: str) -> RawItem:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"invalid JSON ({exc.msg} at column {exc.colno}): expected one JSON object",
            path=path,
            line=exc.lineno,
        ) from exc
    except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; deep nesting
        raise ParseError(f"invalid JSON ({exc}): expected one JSON object", path=path) from exc
    if not isinstance(loaded, dict):
        raise ParseError(
            'expected one JSON object like {"title": ..., "content_text": ...}, '
            f"got a JSON {type(loaded).__name__}",
            path=path,
            line=1,
        )
    for key in loaded:
        if key not in _JSON_STORY_FIELDS:
            close = difflib.get_close_matches(str(key), _JSON_STORY_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParseError(
                f"unknown field {key!r}{hint}: expected one of {', '.join(_JSON_STORY_FIELDS)}",
                path=path,
                line=_key_line(text, str(key), first_line=1, json_style=True),
            )
    fields = _story_fields(loaded, path=path, source=text, first_line=1, json_style=True)
    if "title" not in fields:
        raise ParseError('missing field "title": expected a non-empty title', path=path, line=1)
    content_html = fields.get("content_html")
    if content_html is None and fields.get("content_text"):
        paragraphs = _paragraphs(fields["content_text"].replace("\r\n", "\n").split("\n"))
        content_html = "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)
    return _story_item(fields, path=path, content_html=content_html)
