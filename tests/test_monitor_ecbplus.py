"""Relatedness quality on the ECB+ dev file (issue 4 "Done when"), through bench/related.py.

Protocol (bench/related.py): per event cluster the first document by doc_id in lexicographic
string order is the story; every document that is not a story is a candidate; positives share
the event cluster; hard negatives share the topic only. This runs the Monitor in process (the
same code the app runs; ``bench/related.py`` reports the numbers read from the app's published
watch feeds, which agree within 0.003).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / ".." / "shared" / "data" / "ecbplus" / "ecbplus_dev.jsonl"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_related", ROOT / "bench" / "related.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    if not CORPUS.exists():
        pytest.skip("the ECB+ dev file is not in the shared data folder beside the repository")
    bench = _bench()
    docs = bench.load(CORPUS)
    pairs = bench.pairs_of(docs)
    scores = bench.tfidf_scores(docs)
    _, baseline = bench.best_threshold(pairs, scores, lambda _t: True)
    return {"monitor": bench.evaluate(docs), "baseline": baseline}


def test_monitor_beats_tfidf_at_its_best_threshold(results: dict[str, Any]) -> None:
    monitor, baseline = results["monitor"], results["baseline"]
    assert monitor["f1"] >= baseline["f1"] + 0.04
    assert monitor["hard_fp_rate"] <= baseline["hard_fp_rate"] - 0.20
    # Measured F1 0.937, hard-negative FP 0.066, precision 0.934 (before other watches'
    # items left the story neighbourhoods 0.923, 0.077, 0.923; before anchors and numeric
    # dates 0.899, 0.080, 0.915; before story profiles 0.886, 0.074, 0.918; the issue asks
    # F1 >= 0.92, FP <= 0.08; see docs/benchmarks.md): regression guards at the line.
    assert monitor["f1"] >= 0.92
    assert monitor["hard_fp_rate"] <= 0.08
    assert monitor["precision"] >= 0.91


@pytest.mark.parametrize("order", ["string", "numeric"])
def test_the_index_finds_what_checking_every_watch_finds(order: str) -> None:
    """The index proposes the watches an item can match; an item's judged neighbourhood can
    pass while its own similarity to the story sits between the neighbour floor and the
    watch's threshold. Such items (6 of 365 matches in string order) used to be missed; what
    is left (4 of 383 in string order, 3 of 374 in numeric: items reached only 2 hops out, or
    only through an anchor that is not among the item's nearest items) stays near 1%."""
    if not CORPUS.exists():
        pytest.skip("the ECB+ dev file is not in the shared data folder beside the repository")
    from feedservice.model import Watch
    from feedservice.monitor import CorpusStats, Monitor, WatchInput

    bench = _bench()
    docs = bench.load(CORPUS)
    found = []
    for use_index in (True, False):
        entries = [bench.to_entry(d) for d in bench.candidates_of(docs, order)]
        watches = [
            WatchInput(
                Watch(name=cluster, title=cluster),
                bench._as_story(bench.to_entry(story, source="story")),
            )
            for cluster, story in bench.stories_of(docs, order).items()
        ]
        monitor = Monitor(watches, stats=CorpusStats(), use_index=use_index)
        monitor.observe(entries)
        found.append({(m.watch, e) for m in monitor.match(entries) for e in (m.entry_id, *m.also)})
    indexed, every = found
    assert indexed <= every
    missed = every - indexed
    assert len(missed) <= 0.015 * len(every), sorted(missed)


def test_anchors_add_follow_ups_of_follow_ups_without_false_alarms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A near miss close to one of the watch's strongest matches (an anchor) as an item must
    be close to the story is matched: recall rises (string order 0.886 -> 0.923 through the
    app), the hard-negative FP rate does not; each such match says which anchor it is close
    to, reports at most ANCHORED_SCORE_CAP and is never an anchor itself."""
    if not CORPUS.exists():
        pytest.skip("the ECB+ dev file is not in the shared data folder beside the repository")
    from feedservice.model import Watch
    from feedservice.monitor import engine

    bench = _bench()
    docs = bench.load(CORPUS)
    pairs = bench.pairs_of(docs)
    runs = {}
    for name, level in (("off", 2.0), ("on", engine.ANCHOR_SCORE)):
        monkeypatch.setattr(engine, "ANCHOR_SCORE", level)
        entries = [bench.to_entry(d) for d in bench.candidates_of(docs)]
        watches = [
            engine.WatchInput(
                Watch(name=cluster, title=cluster),
                bench._as_story(bench.to_entry(story, source="story")),
            )
            for cluster, story in bench.stories_of(docs).items()
        ]
        monitor = engine.Monitor(watches)
        monitor.observe(entries)
        found = monitor.match(entries)
        flagged = {(m.watch, e) for m in found for e in (m.entry_id, *m.also)}
        runs[name] = (found, bench.metrics(pairs, lambda c, d, f=flagged: (c, d) in f, bench._all))
        anchors = {w: monitor.anchors(w) for w in bench.stories_of(docs)}
    (found_off, off), (found_on, on) = runs["off"], runs["on"]
    assert on["recall"] >= off["recall"] + 0.02, (off, on)
    assert on["hard_fp_rate"] <= off["hard_fp_rate"] + 0.005, (off, on)
    assert on["f1"] > off["f1"]
    before = {(m.watch, m.entry_id) for m in found_off}
    added = [m for m in found_on if (m.watch, m.entry_id) not in before]
    assert len(added) >= 10
    for m in added:
        assert m.score <= engine.ANCHORED_SCORE_CAP < engine.ANCHOR_SCORE
        assert any(r.startswith("close to items that match the story: ") for r in m.reasons)
        assert m.entry_id not in {a for a, _ in anchors[m.watch]}


def test_a_second_watch_per_event_takes_the_events_second_document() -> None:
    """``bench/related.py --watches-per-event 2``: an event of 3 or more documents gets a
    second watch whose story is its second document by doc_id (string order here: "1_10ecb"
    comes before "1_1ecb"); neither story is a candidate, and both watches are scored."""
    bench = _bench()

    def doc(doc_id: str, cluster: str) -> dict[str, Any]:
        return {"doc_id": doc_id, "topic": 1, "event_cluster": cluster, "sentences": [doc_id]}

    docs = [
        doc("1_1ecb", "1_ecb"),
        doc("1_2ecb", "1_ecb"),
        doc("1_10ecb", "1_ecb"),
        doc("1_1ecbplus", "1_ecbplus"),
        doc("1_2ecbplus", "1_ecbplus"),
    ]
    watches = bench.watches_of(docs, "string", 2)
    assert {key: story["doc_id"] for key, (_, story) in watches.items()} == {
        "1_ecb": "1_10ecb",
        "1_ecb#2": "1_1ecb",
        "1_ecbplus": "1_1ecbplus",
    }
    assert [d["doc_id"] for d in bench.candidates_of(docs, "string", "others", 2)] == [
        "1_2ecb",
        "1_2ecbplus",
    ]
    pairs = bench.pairs_of(docs, "string", "others", 2)
    assert {(w, d) for w, d, positive, *_ in pairs if positive} == {
        ("1_ecb", "1_2ecb"),
        ("1_ecb#2", "1_2ecb"),
        ("1_ecbplus", "1_2ecbplus"),
    }
    assert len(bench.watches_of(docs, "string")) == 2
