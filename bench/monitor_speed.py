"""Monitor matching speed (issue 4 "Done when": 1,000 watches, 100,000 stored items, new items
matched at >= 1,000 items/s on a 2-core machine).

Usage: python bench/monitor_speed.py [--watches 1000] [--stored 100000] [--batches 20]
                                     [--batch 100] [--corpus CORPUS.jsonl]

Texts are news-like sentences generated from a Zipf-distributed vocabulary of 60,000 words
with capitalised names, numbers and dates; ``--corpus CORPUS.jsonl`` instead recombines the
sentences of a JSONL corpus such as ECB+ (a much denser worst case: 1,000 stories cut from
413 articles share most of their rare words). Stories have 8 sentences, items a title
and 4 sentences. The stored items are observed first (corpus statistics); then batches of new
items are observed and matched, as the app does after a poll. It prints the median items/s of
the batches and, in the same process, the same batches matched by checking every watch (no
index) as the baseline, with the ratio. Every monitor starts from the same pool of recent
items (the last 20,000 stored items), so each new item's neighbours are searched for there.

``--restart``: instead, the cost of a restart's pool of recent items (the app after a
restart, or every ``feedservice once``): the newest 20,000 stored items analysed again (the
baseline: how the app did it before) against restored from the bytes the app saved for them
when they were observed (``monitor.encode_item`` / ``decode_item``), CPU seconds, medians of
``--repeat`` runs alternating; then the batches matched by a monitor that kept running, one
restored from the bytes and one re-analysed, and whether their matches are equal.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from feedservice.model import Entry, Watch
from feedservice.monitor import CorpusStats, Monitor, WatchInput, decode_item, encode_item
from feedservice.monitor.neighbours import RecentItems

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def synthetic_sentences(rng: random.Random, n: int) -> list[str]:
    vocab = [
        "".join(
            rng.choice("bcdfghjklmnprstvwz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))
        )
        for _ in range(60000)
    ]
    names = [w.capitalize() for w in rng.sample(vocab, 8000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    months = ["January", "February", "March", "April", "May", "June", "July", "August"]
    out = []
    for _ in range(n):
        words = rng.choices(vocab, weights, k=rng.randint(12, 28))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(1, len(words))
            words[at : at + 1] = rng.sample(names, rng.randint(1, 2))
        if rng.random() < 0.3:
            words += ["on", rng.choice(months), str(rng.randint(1, 28))]
        if rng.random() < 0.2:
            words += ["in", str(rng.randint(1990, 2030))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def corpus_sentences(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [s for line in fh if line.strip() for s in json.loads(line)["sentences"] if s]


def make_entry(
    rng: random.Random,
    pool: Sequence[str],
    i: int,
    n_sentences: int,
    follow: Entry | None = None,
) -> Entry:
    sentences = rng.sample(pool, n_sentences + 1)
    if follow is not None:  # a follow-up: the story's title and two of its sentences
        story = [follow.title, *follow.content_html.removeprefix("<p>").split("</p><p>")]
        sentences[0] = story[0]
        sentences[1:3] = rng.sample(story[1:], 2)
    return Entry(
        id=f"item-{i}",
        source=rng.choice(("wire", "newsroom", "blog")),
        title=sentences[0],
        link=None,
        published=_EPOCH,
        updated=_EPOCH,
        summary=sentences[1],
        content_html="".join(f"<p>{s}</p>" for s in sentences[1:]),
        content_hash=str(i),
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watches", type=int, default=1000)
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--restart", action="store_true", help="measure a restart's pool instead")
    ap.add_argument("--repeat", type=int, default=5, help="--restart: runs of each way")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    corpus = args.corpus
    pool = corpus_sentences(corpus) if corpus else synthetic_sentences(rng, 50000)
    print(f"text: {'sentences of ' + corpus.name if corpus else 'synthetic sentences'}")

    watches = [
        WatchInput(
            Watch(
                name=f"w{i}",
                title=f"watch {i}",
                query='"joint headquarters"' if i % 50 == 0 else None,
            ),
            make_entry(rng, pool, -1 - i, 8),
        )
        for i in range(args.watches)
    ]
    stats = CorpusStats()
    recent = RecentItems()
    t0 = time.perf_counter()
    observer = Monitor([], stats=stats, pool=recent)
    chunk = 5000
    newest: list[Entry] = []  # the entries a restart pools (--restart)
    for start in range(0, args.stored, chunk):
        stored = [
            make_entry(rng, pool, i, 4) for i in range(start, min(args.stored, start + chunk))
        ]
        observer.observe(stored)
        if args.restart:
            newest = (newest + stored)[-recent.capacity :]
    print(
        f"observed {args.stored} stored items in {time.perf_counter() - t0:.1f} s "
        f"(pool of recent items: {len(recent)})"
    )

    # 5% of new items follow up a watched story, the rest are unrelated news.
    batches = [
        [
            make_entry(
                rng,
                pool,
                args.stored + b * args.batch + i,
                4,
                rng.choice(watches).story if rng.random() < 0.05 else None,
            )
            for i in range(args.batch)
        ]
        for b in range(args.batches)
    ]
    snapshot = stats.to_json()
    if args.restart:
        return restart(watches, snapshot, recent, newest, batches, args.repeat)

    def run(use_index: bool, n_batches: int) -> tuple[float, int]:
        monitor = Monitor(
            watches,
            stats=CorpusStats.from_json(snapshot),
            pool=copy.deepcopy(recent),
            use_index=use_index,
        )
        monitor.match([])  # builds the profiles and the index (startup, not per item)
        rates = []
        n_matches = 0
        for batch in batches[:n_batches]:
            t = time.perf_counter()
            monitor.observe(batch)
            n_matches += len(monitor.match(batch))
            rates.append(len(batch) / (time.perf_counter() - t))
        return statistics.median(rates), n_matches

    t0 = time.perf_counter()
    Monitor(watches, stats=CorpusStats.from_json(snapshot), pool=copy.deepcopy(recent)).match([])
    print(f"startup: {len(watches)} watch profiles and index in {time.perf_counter() - t0:.2f} s")
    rate, n_matches = run(True, args.batches)
    n_base = max(3, args.batches // 4)
    base_rate, _ = run(False, n_base)
    print(
        f"indexed:     {rate:8.0f} items/s (median of {args.batches} batches of {args.batch}; "
        f"{n_matches} matches)"
    )
    print(f"every watch: {base_rate:8.0f} items/s (median of {n_base} batches, same items)")
    verdict = "met" if rate >= 1000 else "NOT met"
    print(f"ratio: {rate / base_rate:.1f}x; target >= 1,000 items/s: {verdict}")
    return 0


def restart(
    watches: list[WatchInput],
    snapshot: str,
    recent: RecentItems,
    newest: list[Entry],
    batches: list[list[Entry]],
    repeat: int,
) -> int:
    """--restart: the pool of a restarted monitor, analysed again vs restored from bytes."""
    # what the app saved when each entry was observed (the cost of saving is timed here too)
    t = time.process_time()
    pooled = [recent.get(e.id) for e in newest]
    saved = [
        (p.id, p.title, data)
        for p in pooled
        if p is not None and (data := encode_item(p)) is not None
    ]
    encode_s = time.process_time() - t
    assert len(saved) == len(newest), "every pooled item can be saved"

    def reanalysed() -> Monitor:
        monitor = Monitor(watches, stats=CorpusStats.from_json(snapshot))
        monitor.remember(newest)
        return monitor

    def restored() -> Monitor:
        monitor = Monitor(watches, stats=CorpusStats.from_json(snapshot))
        monitor.remember([decode_item(i, title, data) for i, title, data in saved])
        return monitor

    def cpu(build: Callable[[], Monitor]) -> float:
        t = time.process_time()
        build()
        return time.process_time() - t

    empty = statistics.median(
        cpu(lambda: Monitor(watches, stats=CorpusStats.from_json(snapshot))) for _ in range(3)
    )  # the watches' stories and the statistics, the same both ways: subtracted
    times: dict[str, list[float]] = {"analysed again": [], "restored": []}
    for _ in range(repeat):
        times["analysed again"].append(cpu(reanalysed) - empty)
        times["restored"].append(cpu(restored) - empty)
    base = statistics.median(times["analysed again"])
    print(f"a restart's pool of {len(newest)} items (CPU s, median of {repeat}, alternating):")
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"  {name:15} {med:6.2f} s  ({med / len(newest) * 1e6:5.0f} us/item; "
            f"min {min(values):.2f}, max {max(values):.2f})  {base / med:5.1f}x"
        )
    print(
        f"  saving them when observed: {encode_s / len(newest) * 1e6:.0f} us/item "
        f"({sum(len(d) for _, _, d in saved) / len(saved):.0f} bytes/item)"
    )

    def matches(monitor: Monitor) -> list[tuple[str, str, float, tuple[str, ...]]]:
        monitor.match([])
        found = []
        for batch in batches:
            monitor.observe(batch)
            found += [(m.watch, m.entry_id, m.score, m.reasons) for m in monitor.match(batch)]
        return found

    kept = matches(
        Monitor(watches, stats=CorpusStats.from_json(snapshot), pool=copy.deepcopy(recent))
    )
    same = matches(restored()) == kept
    again = matches(reanalysed())
    print(
        f"matches of {len(batches)} new batches: kept running {len(kept)}; restored: "
        f"{'equal' if same else 'NOT EQUAL'}; analysed again: "
        f"{'equal' if again == kept else f'{len(set(again) ^ set(kept))} differ'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
