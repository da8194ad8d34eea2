"""Normalisation cost per entry: feedservice's normalise_item vs feedparser's sanitiser.

Run: ``.venv/bin/python bench/normalise.py [--runs 5] [--corpus DIR] [--poll-items N]``

Items come from every XML feed of ``data/feeds-realworld`` in the ``shared`` folder beside the
repository (read once with feedparser, its own sanitising off). Each run times, in this
process and on the same items:

* baseline: feedparser's HTML sanitiser plus its relative-URI pass on each item's HTML (the
  part of feedparser's work that normalise replaces);
* ``normalise_item(..., analyse=False)``: ids, dates, nh3 sanitising, URL resolution,
  repeated-paragraph removal, summary, content hash;
* ``normalise_item(...)``: the same plus entities and keywords for the monitor.

It prints the median microseconds per item (CPU time) and each one's ratio to the baseline,
first for the real-world items, then for ``--poll-items`` items (default 400) exactly like
those ``bench/poll.py`` serves (about 2 KB of news-like HTML, six paragraphs), read with
feedservice's own parser: the per-item cost that bounds the cold polling pass.
"""

from __future__ import annotations

import argparse
import calendar
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import feedparser.sanitizer
import feedparser.urls

from feedservice.model import RawItem
from feedservice.normalise import normalise_item

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / ".." / "shared" / "data" / "feeds-realworld"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _date(entry: Any, key: str) -> datetime | None:
    value = entry.get(key + "_parsed")
    return datetime.fromtimestamp(calendar.timegm(value), UTC) if value else None


def load_items(corpus: Path) -> list[RawItem]:
    items: list[RawItem] = []
    for path in sorted(corpus.rglob("*")):
        if path.suffix not in (".xml", ".rss", ".atom", ".rdf") or not path.is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = feedparser.parse(
                io.BytesIO(path.read_bytes()), sanitize_html=False, resolve_relative_uris=False
            )
        base = parsed.feed.get("link")
        for e in parsed.entries:
            content = e["content"][0].get("value") if e.get("content") else None
            items.append(
                RawItem(
                    id=e.get("id"),
                    title=e.get("title"),
                    link=e.get("link"),
                    published=_date(e, "published"),
                    updated=_date(e, "updated"),
                    author=e.get("author"),
                    summary_html=e.get("summary"),
                    content_html=content,
                    tags=tuple(t.get("term") or "" for t in e.get("tags", [])),
                    base=base,
                )
            )
    return items


def poll_items(n: int) -> list[RawItem]:
    """``n`` items as bench/poll.py's origin serves them (20 per feed), parsed by feedservice."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import poll  # bench/poll.py: the same generator, so both benchmarks see the same items

    from feedservice.parse import parse_feed

    items: list[RawItem] = []
    for feed in range((n + poll.ITEMS_PER_FEED - 1) // poll.ITEMS_PER_FEED):
        body = "".join(poll._item_xml(feed, k) for k in range(poll.ITEMS_PER_FEED))
        doc = (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            f"<link>http://origin.test/</link>{body}</channel></rss>"
        )
        parsed = parse_feed(
            doc.encode(),
            url=f"http://origin.test/{feed}.xml",
            content_type="application/rss+xml",
            max_items=poll.ITEMS_PER_FEED,
        )
        items.extend(parsed.items)
    return items[:n]


def feedparser_baseline(item: RawItem) -> None:
    raw = item.content_html or item.summary_html or ""
    if raw:
        clean = feedparser.sanitizer._sanitize_html(raw, "utf-8", "text/html")
        feedparser.urls.resolve_relative_uris(clean, item.base or "", "utf-8", "text/html")


def time_per_item(fn: Callable[[RawItem], object], items: list[RawItem], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.process_time()
        for item in items:
            fn(item)
        samples.append((time.process_time() - start) / len(items))
    return statistics.median(samples) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--poll-items", type=int, default=400, help="0: real-world items only")
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"corpus not found: {args.corpus}")
    items = [i for i in load_items(args.corpus) if i.content_html or i.summary_html]
    report("real-world feeds", items, args.runs)
    if args.poll_items:
        report("bench/poll.py items", poll_items(args.poll_items), args.runs)


def report(label: str, items: list[RawItem], runs: int) -> None:
    sizes = sorted(len(i.content_html or i.summary_html or "") for i in items)
    print(f"{label}: {len(items)} items with HTML; median {sizes[len(sizes) // 2]} chars")

    def lean(i: RawItem) -> object:
        return normalise_item(i, source="bench", now=NOW, analyse=False)

    def full(i: RawItem) -> object:
        return normalise_item(i, source="bench", now=NOW)

    base = time_per_item(feedparser_baseline, items, runs)
    rows = [
        ("feedparser sanitiser + relative URIs (baseline)", base),
        ("normalise_item(analyse=False)", time_per_item(lean, items, runs)),
        ("normalise_item (with entities, keywords)", time_per_item(full, items, runs)),
    ]
    for name, us in rows:
        print(f"  {name:50s} {us:9.1f} us/item   x{base / us:5.2f} vs baseline")


if __name__ == "__main__":
    main()
