"""Relatedness quality on a labelled news corpus, through the app (issue 4 item 6).

Usage: python bench/related.py CORPUS.jsonl [--order string|numeric] [--candidates others|all]
    [--watches-per-event 1|2] [--polls N] [--cv] [--direct]

CORPUS.jsonl holds one document per line with ``doc_id``, ``topic``, ``event_cluster`` and
``sentences`` (the ECB+ conversion in the shared data folder). Protocol: for each event cluster
its first document by ``doc_id`` is the watch's story (``--order string``: plain lexicographic
order, the default, "1_10ecb" < "1_2ecb"; ``--order numeric``: by topic number, then the rest of
the id, then the document number); every other document (not a story) is a candidate item
(``--candidates all``: every document of the file is an item, other clusters' stories too, and
a watch is scored on all of them but its own story, which still arrives as an item, under its
own id, as it would in a user's feed);
positive = same event cluster; hard negative = same topic, other event cluster; hard-negative
FP rate = flagged hard negatives / all hard negatives.

The headline runs the app as a user would: in a temporary folder it writes one story file per
cluster (``.txt``: the first sentence is the title line, then one paragraph per further
sentence), one local JSON Feed holding every candidate (title = first sentence, content = the
other sentences as ``<p>`` paragraphs, id = doc_id, url = https://corpus.example/<doc_id>, in
file order), a YAML config with that feed as the one source and one watch per cluster (default
threshold), runs ``App.run_once`` and reads what was PUBLISHED in each watch's JSON Feed (item
``url`` -> doc_id). Next to it: plain TF-IDF cosine at ITS best threshold on the same pairs, and
items/s. ``--cv`` reports the default threshold per held-out fold (odd/even topics and leave one
topic out; nothing is tuned). ``--direct`` also runs :func:`evaluate` (the Monitor in process,
no app), which is what the unit test uses. ``--watches-per-event 2`` adds a second watch per
event (its story the event's second document) and reports the first and second watches apart:
two watches on one event, told in different texts, as two users of one instance might set up.
``--polls N`` lets the items arrive over N polls of a growing feed instead of all at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feedservice.model import Entry, Watch
from feedservice.monitor import DEFAULT_THRESHOLD, CorpusStats, Monitor, WatchInput
from feedservice.monitor.text import STOPWORDS

Doc = dict[str, Any]
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def load(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def to_entry(doc: Doc, source: str = "wire") -> Entry:
    sentences = [s for s in doc["sentences"] if s.strip()] or [""]
    body = "".join(f"<p>{html.escape(s)}</p>" for s in sentences[1:])
    return Entry(
        id=str(doc["doc_id"]),
        source=source,
        title=sentences[0],
        link=None,
        published=_EPOCH,
        updated=_EPOCH,
        summary=sentences[1] if len(sentences) > 1 else "",
        content_html=body,
        content_hash=str(doc["doc_id"]),
    )


def _numeric_key(doc: Doc) -> tuple[int, str, int]:
    m = re.match(r"(\d+)_(\d+)(\D.*)$", str(doc["doc_id"]))
    return (int(m.group(1)), m.group(3), int(m.group(2))) if m else (0, str(doc["doc_id"]), 0)


def _order_key(order: str) -> Callable[[Doc], Any]:
    return (lambda d: str(d["doc_id"])) if order == "string" else _numeric_key


def stories_of(docs: Sequence[Doc], order: str = "string") -> dict[str, Doc]:
    """event cluster -> its story: the first document by doc_id (``order``: string|numeric)."""
    out: dict[str, Doc] = {}
    for doc in sorted(docs, key=_order_key(order)):
        out.setdefault(str(doc["event_cluster"]), doc)
    return out


SECOND = "#2"  # the key suffix of an event's second watch (--watches-per-event 2)


def watches_of(
    docs: Sequence[Doc], order: str = "string", per_event: int = 1
) -> dict[str, tuple[str, Doc]]:
    """watch key -> (event cluster, story). The key is the cluster; with ``per_event=2`` each
    cluster of 3 or more documents gets a second watch (key cluster + ``SECOND``) whose story
    is its second document by doc_id: two watches on one event, told in different texts."""
    out = {cluster: (cluster, story) for cluster, story in stories_of(docs, order).items()}
    if per_event == 2:
        by_cluster: dict[str, list[Doc]] = {}
        for doc in sorted(docs, key=_order_key(order)):
            by_cluster.setdefault(str(doc["event_cluster"]), []).append(doc)
        for cluster, members in by_cluster.items():
            if len(members) >= 3:
                out[cluster + SECOND] = (cluster, members[1])
    return out


def candidates_of(
    docs: Sequence[Doc], order: str = "string", candidates: str = "others", per_event: int = 1
) -> list[Doc]:
    """The items that arrive, in file order: every document that is not a watch's story
    (``candidates="others"``), or every document (``"all"``)."""
    if candidates == "all":
        return list(docs)
    story_ids = {str(s["doc_id"]) for _, s in watches_of(docs, order, per_event).values()}
    return [d for d in docs if str(d["doc_id"]) not in story_ids]


Pair = tuple[str, str, bool, bool, int]  # watch key, doc_id, positive, hard negative, topic


def pairs_of(
    docs: Sequence[Doc], order: str = "string", candidates: str = "others", per_event: int = 1
) -> list[Pair]:
    """(watch key, doc_id, positive, hard negative, story topic) for every watch and item."""
    out: list[Pair] = []
    items = candidates_of(docs, order, candidates, per_event)
    for watch, (cluster, story) in watches_of(docs, order, per_event).items():
        for doc in items:
            if doc is story:
                continue  # with --candidates all: a watch is not scored on its own story
            positive = doc["event_cluster"] == cluster
            hard = not positive and doc["topic"] == story["topic"]
            out.append((watch, str(doc["doc_id"]), positive, hard, int(story["topic"])))
    return out


def metrics(
    pairs: Sequence[Pair], flagged: Callable[[str, str], bool], topics: Callable[[int], bool]
) -> dict[str, float]:
    tp = fp = fn = hard = hard_fp = 0
    for cluster, doc_id, positive, is_hard, topic in pairs:
        if not topics(topic):
            continue
        flag = flagged(cluster, doc_id)
        if positive:
            tp += flag
            fn += not flag
        else:
            fp += flag
        if is_hard:
            hard += 1
            hard_fp += flag
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "hard_fp_rate": hard_fp / hard if hard else 0.0}


def _all(_: int) -> bool:
    return True


STORY_ID_PREFIX = "story:"


def _as_story(entry: Entry) -> Entry:
    return dataclasses.replace(entry, id=STORY_ID_PREFIX + entry.id)


def run_monitor(
    docs: Sequence[Doc],
    threshold: float | None = None,
    order: str = "string",
    candidates: str = "others",
) -> tuple[set[tuple[str, str]], float, int]:
    """The Monitor in process: flagged (cluster, doc_id) pairs, seconds in observe() and
    match(), items matched."""
    entries = [to_entry(d) for d in candidates_of(docs, order, candidates)]
    watches = [
        WatchInput(
            Watch(name=cluster, title=cluster, threshold=threshold),
            # a story file's entry has an id of its own, not the id of its copy in the feed
            _as_story(to_entry(story, source="story")),
        )
        for cluster, story in stories_of(docs, order).items()
    ]
    monitor = Monitor(watches, stats=CorpusStats())
    t0 = time.perf_counter()
    monitor.observe(entries)
    matches = monitor.match(entries)
    elapsed = time.perf_counter() - t0
    flagged = set()
    for m in matches:
        for entry_id in (m.entry_id, *m.also):
            flagged.add((m.watch, entry_id))
    return flagged, elapsed, len(entries)


def evaluate(
    docs: Sequence[Doc],
    threshold: float | None = None,
    order: str = "string",
    candidates: str = "others",
) -> dict[str, float]:
    """The Monitor's (in process) precision, recall, F1, hard-negative FP rate and items/s."""
    flagged, elapsed, n = run_monitor(docs, threshold, order, candidates)
    result = metrics(pairs_of(docs, order, candidates), lambda c, d: (c, d) in flagged, _all)
    result["items_per_s"] = n / elapsed if elapsed > 0 else math.inf
    result["threshold"] = DEFAULT_THRESHOLD if threshold is None else threshold
    return result


# --- the baseline: plain TF-IDF cosine -----------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def tfidf_scores(docs: Sequence[Doc], order: str = "string") -> dict[tuple[str, str], float]:
    """Cosine of sublinear-tf x idf vectors over lower-cased words minus stopwords."""
    bags = {
        str(d["doc_id"]): Counter(
            w for w in _WORD.findall(" ".join(d["sentences"]).lower()) if w not in STOPWORDS
        )
        for d in docs
    }
    df: Counter[str] = Counter()
    for bag in bags.values():
        df.update(bag.keys())
    n = len(bags)
    vecs: dict[str, dict[str, float]] = {}
    for doc_id, bag in bags.items():
        v = {w: (1 + math.log(c)) * math.log((n + 1) / (df[w] + 0.5)) for w, c in bag.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vecs[doc_id] = {w: x / norm for w, x in v.items()}
    out = {}
    for cluster, story in stories_of(docs, order).items():
        sv = vecs[str(story["doc_id"])]
        for doc_id, v in vecs.items():
            out[(cluster, doc_id)] = sum(x * v.get(w, 0.0) for w, x in sv.items())
    return out


def best_threshold(
    pairs: Sequence[Pair], scores: dict[tuple[str, str], float], topics: Callable[[int], bool]
) -> tuple[float, dict[str, float]]:
    grid = sorted({round(s, 3) for s in scores.values()})
    best: tuple[float, dict[str, float]] = (0.0, {"f1": -1.0})
    for t in grid:
        m = metrics(pairs, _above(scores, t), topics)
        if m["f1"] > best[1]["f1"]:
            best = (t, m)
    return best


def _fmt(m: dict[str, float]) -> str:
    return (
        f"P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  "
        f"hard-neg FP {m['hard_fp_rate']:.3f}"
    )


def _member(flagged: set[tuple[str, str]]) -> Callable[[str, str], bool]:
    return lambda c, d: (c, d) in flagged


def _above(scores: dict[tuple[str, str], float], t: float) -> Callable[[str, str], bool]:
    return lambda c, d: scores[(c, d)] >= t


# --- through the app ------------------------------------------------------------------------

CORPUS_URL = "https://corpus.example/"


def _slug(watch: str) -> str:
    return "w-" + re.sub(r"[^a-z0-9_-]+", "-", watch.lower())


def write_site(
    docs: Sequence[Doc],
    root: Path,
    order: str = "string",
    candidates: str = "others",
    per_event: int = 1,
) -> Path:
    """Story files, one JSON Feed of candidates and a config under ``root``; the config path."""
    (root / "stories").mkdir(parents=True)
    watches = []
    for watch, (_, story) in watches_of(docs, order, per_event).items():
        sentences = [s for s in story["sentences"] if s.strip()] or [str(story["doc_id"])]
        name = _slug(watch)
        (root / "stories" / f"{name}.txt").write_text(
            "\n\n".join(sentences) + "\n", encoding="utf-8"
        )
        watches.append(
            f"  - name: {name}\n    title: {json.dumps(watch)}\n"
            f"    story: stories/{name}.txt\n    sources: [corpus]\n    limit: 100000\n"
        )
    items = []
    for i, doc in enumerate(candidates_of(docs, order, candidates, per_event)):
        sentences = [s for s in doc["sentences"] if s.strip()] or [str(doc["doc_id"])]
        items.append(
            {
                "id": str(doc["doc_id"]),
                "url": CORPUS_URL + str(doc["doc_id"]),
                "title": sentences[0],
                "content_html": "".join(f"<p>{html.escape(s)}</p>" for s in sentences[1:])
                or f"<p>{html.escape(sentences[0])}</p>",
                "date_published": (_EPOCH + timedelta(minutes=i)).isoformat(),
            }
        )
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Corpus",
        "home_page_url": CORPUS_URL,
        "items": items,
    }
    (root / "corpus.json").write_text(json.dumps(feed), encoding="utf-8")
    config = root / "feedservice.yaml"
    config.write_text(
        "service:\n  feeds_dir: feeds\n  data_dir: var\n"
        "sources:\n  - name: corpus\n    url: corpus.json\n    interval: 1h\n"
        "watches:\n" + "".join(watches),
        encoding="utf-8",
    )
    return config


def run_app(
    docs: Sequence[Doc],
    order: str = "string",
    candidates: str = "others",
    per_event: int = 1,
    polls: int = 1,
) -> tuple[set[tuple[str, str]], float, int]:
    """Through the app: flagged (watch key, doc_id) pairs read from the published watch feeds,
    seconds of the passes, items polled. ``polls`` > 1: the feed grows over that many polls,
    each showing the next part of the items too, as a daemon sees the news arrive."""
    import asyncio
    import tempfile

    from feedservice.app import App
    from feedservice.config import load_config

    names = {_slug(w): w for w in watches_of(docs, order, per_event)}
    with tempfile.TemporaryDirectory(prefix="related-") as tmp:
        root = Path(tmp)
        config = load_config(write_site(docs, root, order, candidates, per_event))

        feed_path = root / "corpus.json"
        feed = json.loads(feed_path.read_text(encoding="utf-8"))
        step = -(-len(feed["items"]) // polls)

        async def once() -> float:
            elapsed = 0.0
            async with App(config) as app:
                for i in range(polls):
                    if polls > 1:
                        shown = dict(feed, items=feed["items"][: (i + 1) * step])
                        feed_path.write_text(json.dumps(shown), encoding="utf-8")
                    t0 = time.perf_counter()
                    report = await app.run_once(force=True)
                    elapsed += time.perf_counter() - t0
                    if report.errors:
                        raise SystemExit(f"the app reported errors: {report.errors}")
            return elapsed

        elapsed = asyncio.run(once())
        flagged: set[tuple[str, str]] = set()
        for name, watch in names.items():
            feed = json.loads((root / "feeds" / f"{name}.json").read_text(encoding="utf-8"))
            for item in feed["items"]:
                urls = [item.get("url", "")]
                urls += [a.get("url", "") for a in item.get("_feedservice", {}).get("also", [])]
                for url in urls:
                    if url.startswith(CORPUS_URL):
                        flagged.add((watch, url.removeprefix(CORPUS_URL)))
    return flagged, elapsed, len(candidates_of(docs, order, candidates, per_event))


def _topic_folds(pairs: Sequence[Pair]) -> dict[str, list[set[int]]]:
    topics = sorted({p[4] for p in pairs})
    return {
        "odd/even topics": [{t for t in topics if t % 2 == 1}, {t for t in topics if t % 2 == 0}],
        "leave one topic out": [{t} for t in topics],
    }


def cross_validate(
    pairs: Sequence[Pair],
    flagged: set[tuple[str, str]],
    baseline: dict[tuple[str, str], float],
) -> None:
    """Held-out folds of topics. The monitor uses its default threshold everywhere (nothing is
    fitted); the TF-IDF baseline fits its threshold on the other topics of each fold."""
    for name, folds in _topic_folds(pairs).items():
        base_flags: set[tuple[str, str]] = set()
        per_fold = []
        for test in folds:
            t, _ = best_threshold(pairs, baseline, lambda topic, test=test: topic not in test)
            base_flags |= {
                (p[0], p[1]) for p in pairs if p[4] in test and baseline[(p[0], p[1])] >= t
            }
            per_fold.append(
                metrics(pairs, _member(flagged), lambda topic, test=test: topic in test)["f1"]
            )
        m = metrics(pairs, _member(flagged), _all)
        b = metrics(pairs, _member(base_flags), _all)
        print(
            f"  CV {name}: monitor (default, pooled): {_fmt(m)}; fold F1 "
            f"{min(per_fold):.3f}..{max(per_fold):.3f}"
        )
        print(f"  CV {name}: tf-idf (threshold fitted on the other topics): {_fmt(b)}")


def _two_watches_per_event(docs: Sequence[Doc], order: str, cands: str, polls: int) -> int:
    """Two watches on each event, told in different texts: each should find what one finds."""
    pairs = pairs_of(docs, order, cands, 2)
    flagged, _, n = run_app(docs, order, cands, 2, polls)
    print(
        f"{len(docs)} documents, {len(watches_of(docs, order, 2))} watches (first and second "
        f"doc_id of each event, {order} order), {n} items ({cands})"
    )
    first = [p for p in pairs if not p[0].endswith(SECOND)]
    second = [p for p in pairs if p[0].endswith(SECOND)]
    print(f"first watches, published:  {_fmt(metrics(first, _member(flagged), _all))}")
    print(f"second watches, published: {_fmt(metrics(second, _member(flagged), _all))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--order", choices=("string", "numeric"), default="string")
    ap.add_argument(
        "--candidates",
        choices=("others", "all"),
        default="others",
        help="items: the documents that are not stories (default), or every document",
    )
    ap.add_argument(
        "--watches-per-event",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: also a second watch per event, its story the second document (reported apart)",
    )
    ap.add_argument(
        "--polls",
        type=int,
        default=1,
        help="the items arrive over this many polls of a growing feed (default: all at once)",
    )
    ap.add_argument("--cv", action="store_true", help="held-out topic folds, default threshold")
    ap.add_argument("--direct", action="store_true", help="also the Monitor in process")
    args = ap.parse_args(argv)
    docs = load(args.corpus)
    order = args.order
    cands = args.candidates
    if args.polls < 1:
        ap.error("--polls must be at least 1")
    if args.watches_per_event == 2:
        return _two_watches_per_event(docs, order, cands, args.polls)
    pairs = pairs_of(docs, order, cands)
    n_pos = sum(p[2] for p in pairs)
    n_hard = sum(p[3] for p in pairs)
    print(
        f"{args.corpus.name}: {len(docs)} documents, {len(stories_of(docs, order))} watches "
        f"(story = first doc_id, {order} order), "
        f"{len(candidates_of(docs, order, cands))} items ({cands}), {len(pairs)} pairs "
        f"({n_pos} positive, {n_hard} hard negative)"
    )
    flagged, elapsed, n = run_app(docs, order, cands, polls=args.polls)
    res = metrics(pairs, _member(flagged), _all)
    over = f", over {args.polls} polls" if args.polls > 1 else ""
    print(f"app, published (default threshold {DEFAULT_THRESHOLD:.2f}{over}): {_fmt(res)}")
    base = tfidf_scores(docs, order)
    t, bm = best_threshold(pairs, base, _all)
    print(f"tf-idf cosine (its best threshold {t:.3f}):       {_fmt(bm)}")
    print(
        f"app pass: {n} items polled, parsed, stored, matched against "
        f"{len(stories_of(docs, order))} watches and published in {elapsed:.2f} s "
        f"({n / elapsed:.0f} items/s end to end)"
    )
    if args.direct:
        res_d = evaluate(docs, None, order, cands)
        times = sorted(evaluate(docs, None, order, cands)["items_per_s"] for _ in range(3))
        print(f"monitor in process:                           {_fmt(res_d)}")
        print(f"monitor in process: {times[1]:.0f} items/s observed + matched (median of 3)")
    if args.cv:
        cross_validate(pairs, flagged, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
