"""A pooled item saved as bytes and restored (monitor.saved): exactly as pooled, or refused."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedservice.model import Entry
from feedservice.monitor import (
    ANALYSIS_TAG,
    CorpusStats,
    Monitor,
    decode_item,
    encode_item,
    saved,
)
from feedservice.monitor.neighbours import PoolItem, RecentItems
from feedservice.monitor.score import Vectors, vectorise
from feedservice.monitor.text import analyse_entry

T0 = datetime(2024, 7, 28, tzinfo=UTC)
TEXTS = {
    # q08b names no year and borrows 2008 from q08, its nearest item
    "q08": "Quake hits Qeshm island\nA quake hit Qeshm island near Dargahan in 2008."
    "\nFive people were hurt in Dargahan, the Qeshm governor said on March 10.",
    "q08b": "Qeshm quake hurts five\nFive hurt as a quake struck near Dargahan on Sunday."
    "\nTents were ready in Dargahan, the governor said.",
    "q05": "Killer quake on Qeshm island\nA quake on Qeshm island killed ten people in 2005."
    "\nVillages near Qeshm were levelled, officials said.",
    "festival": "Harbour festival returns\nBoat parades and a night market along the quay.",
    # numeric dates and numbers split by a space (analysed since ANALYSER_VERSION 2)
    "dated": "Aftershocks jolt Qeshm\nPosted 11 / 28 / 05. The 6. 1 - magnitude quake left"
    " 120, 000 people on the island without power.",
    "empty": "Untitled",
}


def entry(entry_id: str, text: str) -> Entry:
    lines = text.splitlines()
    return Entry(
        id=entry_id,
        source="wire",
        title=lines[0],
        link=None,
        published=T0,
        updated=T0,
        summary=lines[1] if len(lines) > 1 else "",
        content_html="".join(f"<p>{line}</p>" for line in lines[1:]),
        content_hash=entry_id,
    )


def observed() -> Monitor:
    m = Monitor([])
    m.observe([entry(k, v) for k, v in TEXTS.items()])
    return m


def fields(item: PoolItem) -> tuple[object, ...]:
    """Everything of a pooled item, with the order of its keys (sums follow that order)."""
    v = item.vectors
    return (
        item.id,
        item.title,
        list(v.terms.items()),
        list(v.entities.items()),
        list(v.marks.items()),
        v.years,
        item.keys,
        item.borrowed,
    )


def test_a_saved_item_is_restored_exactly_as_pooled() -> None:
    m = observed()
    pooled = [m.pooled(k) for k in TEXTS]
    assert all(p is not None for p in pooled)
    q08b = m.pooled("q08b")
    assert q08b is not None and q08b.borrowed and q08b.vectors.years == {"y:2008"}
    for item in pooled:
        assert item is not None
        data = encode_item(item)
        assert data is not None
        assert fields(decode_item(item.id, item.title, data)) == fields(item)
    # a monitor restored from the bytes finds the same neighbours with the same similarities
    again = Monitor([], stats=m.stats)
    saved = [(p.id, p.title, encode_item(p)) for p in pooled if p is not None]
    again.remember([decode_item(i, t, d) for i, t, d in saved if d is not None])
    for k, text in TEXTS.items():
        probe = vectorise(analyse_entry(entry(k, text)), m.stats)
        want = [(s, fields(p)) for s, p in m.pool.nearest(probe, exclude=k)]
        assert [(s, fields(p)) for s, p in again.pool.nearest(probe, exclude=k)] == want
    assert len(again.pool) == len(TEXTS) and again.stats.n_docs == len(TEXTS)


def test_damaged_bytes_are_refused_never_decoded_wrong() -> None:
    item = observed().pooled("q08")
    assert item is not None
    data = encode_item(item)
    assert data is not None
    rng = random.Random(3)
    damaged = [b"", b"\x01", data[:-1], data[:20], data + b"x", b"\x02" + data[1:]]
    for _ in range(200):
        at = rng.randrange(len(data))
        damaged.append(data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :])
        damaged.append(data[: rng.randrange(len(data))])
    for bad in damaged:
        with pytest.raises(ValueError, match="not a saved pool item"):
            decode_item(item.id, item.title, bad)


def test_an_item_the_format_cannot_hold_is_not_saved() -> None:
    vectors = Vectors({"a\nb": 1.0}, {}, {}, frozenset())
    assert encode_item(PoolItem("x", "t", vectors, (("a\nb", 0.4),))) is None
    # posted under a key it does not hold
    assert (
        encode_item(PoolItem("x", "t", Vectors({"a": 1.0}, {}, {}, frozenset()), (("b", 0.4),)))
        is None
    )


def test_the_tag_is_the_same_in_every_process_and_moves_with_the_analyser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = "from feedservice.monitor import ANALYSIS_TAG; print(ANALYSIS_TAG)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    tags = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert tags == {ANALYSIS_TAG} and len(ANALYSIS_TAG) <= 64
    monkeypatch.setattr(saved, "ANALYSER_VERSION", saved.ANALYSER_VERSION + 1)
    assert saved._tag() != ANALYSIS_TAG
    monkeypatch.setattr(saved, "__version__", "0.0.0-other")
    assert saved._tag() != ANALYSIS_TAG


def test_restored_items_are_not_recounted_or_reanalysed() -> None:
    m = observed()
    stats = CorpusStats.from_json(m.stats.to_json())
    again = Monitor([], stats=stats, pool=RecentItems())
    item = m.pooled("q05")
    assert item is not None
    again.remember([item])
    assert again.stats.n_docs == len(TEXTS) and again.pooled("q05") is item


# The analyser's output on the sample texts, pinned beside ANALYSER_VERSION. When this fails the
# analysis changed, so items saved by the previous code are stale: bump ANALYSER_VERSION (in
# monitor/text.py) and pin the new digest under it.
PINNED = {2: "eb934a235e1e213b"}


def test_a_changed_analysis_comes_with_a_new_analyser_version() -> None:
    data = Path(__file__).resolve().parent / "data" / "monitor"
    m = Monitor([])
    m.observe([entry(p.stem, p.read_text()) for p in sorted(data.glob("*.txt"))])
    m.observe([entry(k, v) for k, v in TEXTS.items()])
    shape = []
    for key in [p.stem for p in sorted(data.glob("*.txt"))] + list(TEXTS):
        item = m.pooled(key)
        assert item is not None
        v = item.vectors
        # rounded: the last bit of a logarithm may differ between platforms' maths libraries
        shape.append(
            (
                [
                    (k, round(w, 9))
                    for part in (v.terms, v.entities, v.marks)
                    for k, w in part.items()
                ],
                sorted(v.years),
                [k for k, _ in item.keys],
                item.borrowed,
            )
        )
    digest = hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]
    assert PINNED.get(saved.ANALYSER_VERSION) == digest, digest
