"""Normalisation cost per entry: feedservice's normalise_item vs feedparser's sanitiser.

Run: ``.venv/bin/python bench/normalise.py [--runs 5] [--corpus DIR]``

Items come from every XML feed of ``data/feeds-realworld`` in the ``shared`` folder beside the
repository (read once with feedparser, its own sanitising off). Each run times, in this
process and on the same items:

* baseline: feedparser's HTML sanitiser plus its relative-URI pass on each item's HTML (the
  part of feedparser's work that normalise replaces);
* ``normalise_item(..., analyse=False)``: ids, dates, nh3 sanitising, URL resolution,
  repeated-paragraph removal, summary, content hash;
* ``normalise_item(...)``: the same plus entities and keywords for the monitor.

It prints the median microseconds per item (CPU time) and each one's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import calendar
import io
import statistics
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
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"corpus not found: {args.corpus}")
    items = [i for i in load_items(args.corpus) if i.content_html or i.summary_html]
    sizes = sorted(len(i.content_html or i.summary_html or "") for i in items)
    print(f"{len(items)} items with HTML; median {sizes[len(sizes) // 2]} chars")

    def lean(i: RawItem) -> object:
        return normalise_item(i, source="bench", now=NOW, analyse=False)

    def full(i: RawItem) -> object:
        return normalise_item(i, source="bench", now=NOW)

    base = time_per_item(feedparser_baseline, items, args.runs)
    rows = [
        ("feedparser sanitiser + relative URIs (baseline)", base),
        ("normalise_item(analyse=False)", time_per_item(lean, items, args.runs)),
        ("normalise_item (with entities, keywords)", time_per_item(full, items, args.runs)),
    ]
    for name, us in rows:
        print(f"{name:50s} {us:9.1f} us/item   x{base / us:5.2f} vs baseline")


if __name__ == "__main__":
    main()
