"""Relatedness quality on a labelled news corpus (issue 4 item 6).

Usage: python bench/related.py CORPUS.jsonl [--threshold X] [--cv] [--adaptive]

CORPUS.jsonl holds one document per line with ``doc_id``, ``topic``, ``event_cluster`` and
``sentences`` (the ECB+ conversion in the shared data folder). Protocol: for each event cluster
its first document by ``doc_id`` in plain lexicographic string order is the watch's story; every
other document of the file is a candidate item (title = first sentence, one paragraph per
further sentence; arrival order = file order); positive = same event cluster; hard negative =
same topic, other event cluster; hard-negative FP rate = flagged hard negatives / all hard
negatives. It prints precision, recall, F1 and that rate for the monitor at its default
threshold, next to plain TF-IDF cosine at ITS best threshold on the same data, and items/s.
``--cv`` adds two-fold cross-validation across topics (fit the threshold on odd topics, test on
even ones, and the reverse) for both methods.

The core is :func:`evaluate`, which the app-level harness can reuse.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
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


def stories_of(docs: Sequence[Doc]) -> dict[str, Doc]:
    """event cluster -> its story: the first document by doc_id, lexicographic string order."""
    out: dict[str, Doc] = {}
    for doc in sorted(docs, key=lambda d: str(d["doc_id"])):
        out.setdefault(str(doc["event_cluster"]), doc)
    return out


Pair = tuple[str, str, bool, bool, int]  # cluster, doc_id, positive, hard negative, story topic


def pairs_of(docs: Sequence[Doc]) -> list[Pair]:
    out: list[Pair] = []
    for cluster, story in stories_of(docs).items():
        for doc in docs:
            if doc["doc_id"] == story["doc_id"]:
                continue
            positive = doc["event_cluster"] == cluster
            hard = not positive and doc["topic"] == story["topic"]
            out.append((cluster, str(doc["doc_id"]), positive, hard, int(story["topic"])))
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


def run_monitor(
    docs: Sequence[Doc], threshold: float | None = None, *, adaptive: bool = False
) -> tuple[set[tuple[str, str]], float, int]:
    """Flagged (cluster, doc_id) pairs, seconds spent in match(), items matched."""
    entries = [to_entry(d) for d in docs]
    by_id = {e.id: e for e in entries}
    watches = [
        WatchInput(
            Watch(name=cluster, title=cluster, threshold=threshold),
            by_id[str(story["doc_id"])],
        )
        for cluster, story in stories_of(docs).items()
    ]
    monitor = Monitor(watches, stats=CorpusStats(), adaptive=adaptive)
    monitor.observe(entries)
    t0 = time.perf_counter()
    matches = monitor.match(entries)
    elapsed = time.perf_counter() - t0
    flagged = set()
    for m in matches:
        for entry_id in (m.entry_id, *m.also):
            flagged.add((m.watch, entry_id))
    return flagged, elapsed, len(entries)


def evaluate(
    docs: Sequence[Doc], threshold: float | None = None, *, adaptive: bool = False
) -> dict[str, float]:
    """The monitor's precision, recall, F1, hard-negative FP rate and items/s on ``docs``."""
    flagged, elapsed, n = run_monitor(docs, threshold, adaptive=adaptive)
    result = metrics(pairs_of(docs), lambda c, d: (c, d) in flagged, _all)
    result["items_per_s"] = n / elapsed if elapsed > 0 else math.inf
    result["threshold"] = DEFAULT_THRESHOLD if threshold is None else threshold
    return result


# --- the baseline: plain TF-IDF cosine -----------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def tfidf_scores(docs: Sequence[Doc]) -> dict[tuple[str, str], float]:
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
    for cluster, story in stories_of(docs).items():
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


def cross_validate(docs: Sequence[Doc], *, adaptive: bool = False) -> None:
    """Two-fold CV across topics: fit the threshold on one parity, report on the other."""
    pairs = pairs_of(docs)
    grid = [round(0.30 + 0.02 * i, 2) for i in range(21)]
    runs = {t: run_monitor(docs, t, adaptive=adaptive)[0] for t in grid}

    def parity(p: int) -> Callable[[int], bool]:
        return lambda t: t % 2 == p

    base = tfidf_scores(docs)
    for fit, test, name in ((1, 0, "fit odd -> test even"), (0, 1, "fit even -> test odd")):
        scored = [(metrics(pairs, _member(runs[t]), parity(fit))["f1"], t) for t in grid]
        t_best = max(scored)[1]
        m = metrics(pairs, _member(runs[t_best]), parity(test))
        bt, _ = best_threshold(pairs, base, parity(fit))
        bm = metrics(pairs, _above(base, bt), parity(test))
        print(f"  CV {name}: monitor thr {t_best:.2f}: {_fmt(m)}")
        print(f"  CV {name}: tf-idf  thr {bt:.3f}: {_fmt(bm)}")
    default = _member(runs[round(DEFAULT_THRESHOLD, 2)])
    m = metrics(pairs, default, parity(0))
    print(f"  default threshold on even topics: {_fmt(m)}")
    m = metrics(pairs, default, parity(1))
    print(f"  default threshold on odd topics:  {_fmt(m)}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--cv", action="store_true", help="two-fold cross-validation across topics")
    ap.add_argument("--adaptive", action="store_true", help="TDT-style profile folding")
    args = ap.parse_args(argv)
    docs = load(args.corpus)
    pairs = pairs_of(docs)
    n_pos = sum(p[2] for p in pairs)
    n_hard = sum(p[3] for p in pairs)
    print(
        f"{args.corpus.name}: {len(docs)} documents, {len(stories_of(docs))} watches, "
        f"{len(pairs)} pairs ({n_pos} positive, {n_hard} hard negative)"
    )
    res = evaluate(docs, args.threshold, adaptive=args.adaptive)
    print(f"monitor  (threshold {res['threshold']:.2f}): {_fmt(res)}")
    base = tfidf_scores(docs)
    t, bm = best_threshold(pairs, base, _all)
    print(f"tf-idf   (best threshold {t:.3f}): {_fmt(bm)}")
    times = sorted(evaluate(docs, args.threshold)["items_per_s"] for _ in range(3))
    print(
        f"speed: {times[1]:.0f} items/s matched against {len(stories_of(docs))} watches "
        "(median of 3)"
    )
    if args.cv:
        cross_validate(docs, adaptive=args.adaptive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
