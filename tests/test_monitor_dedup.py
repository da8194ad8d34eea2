"""Near-duplicate detection (MinHash) and the grouping of one story from many outlets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from feedservice.model import Entry, Watch
from feedservice.monitor import Monitor, WatchInput, near_duplicate, signature
from feedservice.monitor.dedup import (
    NUM_HASHES,
    group_near_duplicates,
    signature_of_text,
    similarity,
)

DATA = Path(__file__).resolve().parent / "data" / "monitor"
T0 = datetime(2024, 7, 28, tzinfo=UTC)

WIRE = (
    "Japan and the United States will set up a joint headquarters for U.S. forces in Japan, "
    "defence chiefs said in Tokyo on Sunday after two-plus-two talks. Defense Secretary Lloyd "
    "Austin said the new command would be phased in over the coming year, and Japan's Defense "
    "Minister Minoru Kihara called it a historic step for the alliance."
)
# The same wire copy as a second outlet runs it: a new first sentence, a trimmed ending.
REPUBLISHED = (
    "TOKYO (Reuters) - Japan and the United States will set up a joint headquarters for U.S. "
    "forces in Japan, defence chiefs said in Tokyo on Sunday after two-plus-two talks. Defense "
    "Secretary Lloyd Austin said the new command would be phased in over the coming year, and "
    "Japan's Defense Minister Minoru Kihara called it a historic step."
)
PARAPHRASE = (
    "Washington and Tokyo agreed to restructure the American military command in Japan into a "
    "joint force headquarters, with Austin and Kihara describing a gradual transition."
)


def entry(entry_id: str, title: str, body: str, source: str) -> Entry:
    return Entry(
        id=entry_id,
        source=source,
        title=title,
        link=None,
        published=T0,
        updated=T0,
        summary="",
        content_html=f"<p>{body}</p>",
        content_hash=entry_id,
    )


def test_signatures_are_stable_and_estimate_jaccard() -> None:
    a = signature_of_text(WIRE)
    assert len(a) == NUM_HASHES
    assert a == signature_of_text(WIRE)  # no salted hash(): the same across processes
    assert a == signature_of_text(WIRE.upper())  # case does not matter
    assert similarity(a, a) == 1.0
    b = signature_of_text(REPUBLISHED)
    c = signature_of_text(PARAPHRASE)
    assert near_duplicate(a, b)
    assert not near_duplicate(a, c)
    assert similarity(a, b) > 0.5 > similarity(a, c)
    empty = signature_of_text("")
    assert similarity(empty, empty) == 0.0 and not near_duplicate(empty, a)


def test_signature_of_entry_uses_title_and_text() -> None:
    one = entry("1", "Joint HQ", WIRE, "wire")
    two = entry("2", "Joint HQ", WIRE, "blog")
    other = entry("3", "Something else", PARAPHRASE, "blog")
    assert signature(one) == signature(two)
    assert not near_duplicate(signature(one), signature(other))


def test_grouping_is_transitive_and_keeps_input_order() -> None:
    sigs = [
        signature_of_text(PARAPHRASE),
        signature_of_text(WIRE),
        signature_of_text("A completely different story about floods in the north."),
        signature_of_text(REPUBLISHED),
    ]
    groups = group_near_duplicates(sigs)
    assert sorted(groups) == [[0], [1, 3], [2]]


def test_monitor_groups_one_story_from_many_outlets() -> None:
    story_text = (DATA / "japan_story.txt").read_text(encoding="utf-8").strip().splitlines()
    story = entry("story", story_text[0], " ".join(story_text[1:]), "newsroom")
    items = [
        entry("wire-1", "Japan, U.S. to set up joint headquarters", WIRE, "wire"),
        entry("unrelated", "Heatwave in Europe", "Temperatures topped 40C in Athens.", "wire"),
        entry("blog-1", "Japan, U.S. to set up joint headquarters", REPUBLISHED, "blog"),
    ]
    m = Monitor([WatchInput(Watch(name="hq", title="t", threshold=0.3), story)])
    m.observe([story, *items])
    matches = m.match(items)
    assert len(matches) == 1
    assert matches[0].entry_id == "wire-1"
    assert matches[0].also == ("blog-1",)
    assert m.match(items) == []  # both ids count as reported
