"""The store against real SQLite files: migrations, poll state, entries, matches, outbox."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedservice.errors import StorageError
from feedservice.model import Entry, Match, Source, Validators
from feedservice.store import SCHEMA_VERSION, MatchRow, open_store


def _entry(i: int, *, source: str = "wire", content: str = "<p>body</p>", **kw: object) -> Entry:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    values: dict[str, object] = {
        "id": f"id-{i}",
        "source": source,
        "title": f"Title {i}",
        "link": f"https://example.org/{i}",
        "published": base + timedelta(hours=i),
        "updated": base + timedelta(hours=i),
        "summary": "summary",
        "content_html": content,
        "content_hash": f"hash-{i}-{content}",
    }
    values.update(kw)
    return Entry(**values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = open_store(tmp_path / "db" / "feedservice.sqlite3")
    yield s
    s.close()


def test_open_creates_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = open_store(path)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    store.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    # reopening migrates nothing and keeps the version
    assert open_store(path).migrate() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    open_store(path).set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StorageError, match="newer than this feedservice"):
        open_store(path)


def test_unopenable_database_is_a_storage_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        open_store(bad)


def test_sources_due_and_poll_state(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    srcs = [
        Source("a", 60, url="https://one.example/feed"),
        Source("b", 60, url="https://one.example/other"),
        Source("c", 60, directory=Path("stories")),
    ]
    store.sync_sources(srcs, now=now)
    assert store.due_sources(now) == ["a", "b", "c"]
    later = now + timedelta(minutes=5)
    store.record_poll(
        "a",
        now=now,
        next_check_at=later,
        reason="interval",
        status=200,
        validators=Validators('"e1"', "Wed, 25 Nov 2026 10:00:00 GMT", "h"),
    )
    assert store.due_sources(now) == ["b", "c"]
    assert store.due_sources(later) == ["b", "c", "a"]  # oldest due first
    state = store.source_state("a")
    assert state is not None
    assert state.validators.etag == '"e1"'
    assert state.next_check_reason == "interval"
    assert state.next_check_at == later and state.next_check_at.tzinfo is not None

    assert (
        store.record_failure("b", now=now, error="boom", next_check_at=later, reason="backoff") == 1
    )
    assert (
        store.record_failure("b", now=now, error="boom", next_check_at=later, reason="backoff") == 2
    )
    # Retry-After on one host holds for every source on that host
    until = now + timedelta(hours=1)
    assert store.defer_host("one.example", until) == 2
    assert store.due_sources(later) == ["c"]
    # --force polls everything except sources under Retry-After or gone
    store.record_failure(
        "c", now=now, error="gone", next_check_at=until, reason="gone", status=410, gone=True
    )
    assert store.due_sources(now, force=True) == []
    assert store.due_sources(until) == ["a", "b"]


def test_sync_sources_resets_on_url_change_and_drops_removed(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    store.sync_sources([Source("a", 60, url="https://x.example/1")], now=now)
    store.record_poll(
        "a",
        now=now,
        next_check_at=now + timedelta(days=1),
        reason="interval",
        validators=Validators('"e"', None, None),
    )
    store.sync_sources([Source("a", 60, url="https://x.example/2")], now=now)
    state = store.source_state("a")
    assert state is not None and state.url == "https://x.example/2"
    assert state.validators == Validators(None, None, None)
    assert store.due_sources(now) == ["a"]
    store.sync_sources([], now=now)
    assert store.source_state("a") is None


def test_upsert_keeps_updated_unless_content_changes(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    e = _entry(1)
    first = store.upsert_entries("wire", [e], now=now)
    assert [x.id for x in first.new] == ["id-1"]
    again = store.upsert_entries("wire", [e], now=now + timedelta(hours=1))
    assert again.new == () and again.changed == () and again.unchanged == 1
    edited = _entry(1, content="<p>new body</p>")
    later = now + timedelta(days=2)
    changed = store.upsert_entries("wire", [edited], now=later)
    assert len(changed.changed) == 1
    [stored] = store.latest_entries(["wire"], 10)
    assert stored.content_html == "<p>new body</p>"
    assert stored.published == e.published
    assert stored.updated == later  # the item's own date did not move: our clock says when


def test_undated_entry_keeps_first_seen(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    e = _entry(1, dated=False, published=now, updated=now)
    store.upsert_entries("news", [replace(e, source="news")], now=now)
    later = now + timedelta(days=1)
    edit = replace(e, source="news", published=later, updated=later, content_hash="other")
    store.upsert_entries("news", [edit], now=later)
    [stored] = store.latest_entries(["news"], 10)
    assert stored.published == now
    assert stored.updated == later


def test_latest_entries_newest_first_limited(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    store.upsert_entries("wire", [_entry(i) for i in range(5)], now=now)
    store.upsert_entries("other", [_entry(9, source="other")], now=now)
    got = store.latest_entries(["wire", "other"], 3)
    assert [e.id for e in got] == ["id-9", "id-4", "id-3"]
    assert store.delete_entries("wire", ["id-4", "id-3"]) == 2
    assert [e.id for e in store.latest_entries(["wire"], 10)] == ["id-2", "id-1", "id-0"]
    found = store.get_entries([("wire", "id-1"), ("wire", "nope")])
    assert list(found) == [("wire", "id-1")]
    assert store.entry_by_link("https://example.org/2") is not None
    batches = list(store.iter_entries(batch=2))
    assert sum(len(b) for b in batches) == 4


def test_large_batches_are_chunked(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    many = [_entry(i) for i in range(2500)]
    assert len(store.upsert_entries("wire", many, now=now).new) == 2500
    assert store.upsert_entries("wire", many, now=now).unchanged == 2500
    assert store.count_entries() == 2500


def test_matches_are_never_reported_twice(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    store.upsert_entries("wire", [_entry(1), _entry(2)], now=now)
    m = Match("w", "id-1", 0.8, ("shares: Tokyo",))
    row = MatchRow(m, "wire", [1, 2, 3])
    assert store.add_matches([row], now=now) == [row]
    assert store.add_matches([row], now=now) == []
    assert store.add_also("w", "wire", "id-1", ("other", "id-2"))
    assert not store.add_also("w", "wire", "id-1", ("other", "id-2"))
    [sm] = store.watch_matches("w", 10)
    assert sm.match.also == ("id-2",) and sm.also == (("other", "id-2"),)
    assert sm.entry.title == "Title 1"
    assert store.match_signatures("w") == [("wire", "id-1", [1, 2, 3])]
    assert store.is_matched("w", "wire", "id-1") and not store.is_matched("w", "wire", "id-2")
    # near-duplicate grouping compares a new match with the latest matches only
    later = MatchRow(Match("w", "id-2", 0.7, ()), "wire", [4, 5, 6])
    store.add_matches([later], now=now + timedelta(minutes=1))
    assert store.match_signatures("w", limit=1) == [("wire", "id-2", [4, 5, 6])]
    assert len(store.match_signatures("w")) == 2


def test_outbox_lease_retry_and_delivered_once(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    assert store.enqueue("k1", ["webhook:http://x", "email:a@b"], {"title": "t"}, now=now) == 2
    assert store.enqueue("k1", ["webhook:http://x"], {"title": "t"}, now=now) == 0
    lease = now + timedelta(minutes=5)
    claimed = store.claim_due(now=now, lease_until=lease)
    assert len(claimed) == 2
    # leased items are not handed out again until the lease expires (a crash mid-delivery)
    assert store.claim_due(now=now, lease_until=lease) == []
    web, mail = sorted(claimed, key=lambda i: i.target, reverse=True)
    store.mark_delivered(web.pk, now=now)
    store.mark_attempt_failed(
        mail.pk, error="down", next_attempt_at=now + timedelta(minutes=1), permanent=False
    )
    assert store.claim_due(now=now, lease_until=lease) == []
    retry = store.claim_due(now=now + timedelta(minutes=1), lease_until=lease)
    assert [i.target for i in retry] == ["email:a@b"] and retry[0].attempts == 1
    # after the lease expires, an unacknowledged item comes back
    again = store.claim_due(
        now=lease + timedelta(seconds=1), lease_until=lease + timedelta(minutes=5)
    )
    assert [i.target for i in again] == ["email:a@b"]
    store.mark_delivered(again[0].pk, now=now)
    assert store.outbox_counts() == {"pending": 0, "delivered": 2, "failed": 0}
    assert store.claim_due(now=now + timedelta(days=1), lease_until=now + timedelta(days=2)) == []


def test_naive_datetimes_are_refused(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((StorageError, ValueError)):
        store.sync_sources([Source("a", 60, url="https://x")], now=datetime(2026, 1, 1))


# --- speed paths (issue 3 item 8): buffered poll records, prefetched states, raw hashes ------


def test_a_value_sqlite_cannot_store_fails_no_poll_record(tmp_path: Path) -> None:
    # Bytes decoded with surrogateescape leave lone surrogates, which SQLite refuses; in a
    # batched flush one of them used to fail every buffered record of the pass.
    path = tmp_path / "a.sqlite3"
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    store = open_store(path)
    names = ["a", "b", "c"]
    store.sync_sources([Source(n, 60, url=f"https://h.example/{n}") for n in names], now=now)
    odd = "caf\udce9"
    store.record_poll(
        "a", now=now, next_check_at=now, reason="interval", status=200,
        validators=Validators(etag=odd, last_modified=odd), title=odd, link=odd, warning=odd,
    )  # fmt: skip
    store.record_poll("b", now=now, next_check_at=now, reason="interval", status=304)
    assert store.record_failure("c", now=now, error=odd, next_check_at=now, reason="backoff") == 1
    store.close()  # writes what is buffered
    again = open_store(path)
    states = {s.name: s for s in again.source_states()}
    again.close()
    assert states["a"].last_status == 200 and states["b"].last_status == 304
    assert states["a"].validators.etag == "caf?" and states["a"].title == "caf?"
    assert states["a"].last_error == "caf?" and states["c"].last_error == "caf?"


def test_buffered_poll_records_are_visible_and_survive_close(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    store = open_store(path)
    store.sync_sources([Source("a", 60, url="https://h.example/a")], now=now)
    store.record_poll(
        "a",
        now=now,
        next_check_at=now + timedelta(minutes=5),
        reason="interval",
        status=304,
        validators=Validators(etag='"v1"'),
    )
    # any read of the poll state sees the buffered record
    state = store.source_state("a")
    assert state is not None and state.validators.etag == '"v1"' and state.last_status == 304
    poll = store.poll_state("a")
    assert poll is not None and poll.validators.etag == '"v1"'
    store.record_poll(
        "a", now=now, next_check_at=now + timedelta(minutes=9), reason="interval", status=200
    )
    store.close()  # writes what is buffered
    again = open_store(path)
    state = again.source_state("a")
    assert state is not None
    assert state.last_status == 200 and state.next_check_at == now + timedelta(minutes=9)
    assert state.validators.etag == '"v1"'  # no validators given: the stored ones stay
    again.close()


def test_buffered_poll_respects_a_host_hold(store) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    store.sync_sources([Source("a", 60, url="https://h.example/a")], now=now)
    store.defer_host("h.example", now + timedelta(hours=1))
    store.record_poll("a", now=now, next_check_at=now + timedelta(minutes=5), reason="interval")
    state = store.source_state("a")
    assert state is not None
    assert state.next_check_at == now + timedelta(hours=1)
    assert state.next_check_reason == "retry-after"


def test_raw_hashes_are_stored_with_entries(store) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    store.upsert_entries("wire", [_entry(1), _entry(2)], now=now, raw_hashes={"id-1": "h1"})
    assert store.raw_hashes("wire") == {"id-1": "h1", "id-2": None}
    # an unchanged entry gets its new raw hash without counting as changed
    result = store.upsert_entries("wire", [_entry(2)], now=now, raw_hashes={"id-2": "h2"})
    assert result.unchanged == 1 and not result.changed
    assert store.raw_hashes("wire")["id-2"] == "h2"


def test_migration_from_v1_adds_raw_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    open_store(path).close()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE entries DROP COLUMN raw_hash")  # what v1 code created
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    store = open_store(path)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    store.upsert_entries("wire", [_entry(1)], now=_entry(1).published, raw_hashes={"id-1": "h"})
    assert store.raw_hashes("wire") == {"id-1": "h"}
    store.close()


def test_iter_entries_newest(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    store.upsert_entries("wire", [_entry(i) for i in range(10)], now=now)
    newest = [e.id for batch in store.iter_entries(batch=2, newest=3) for e in batch]
    assert newest == ["id-7", "id-8", "id-9"]
    assert sum(len(b) for b in store.iter_entries(newest=50)) == 10


def test_monitored_mark_and_entries_after_it(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    assert store.monitored_upto() == (None, 0)
    store.upsert_entries("wire", [_entry(i) for i in range(3)], now=now)
    store.set_monitored_upto()  # up to the last entry stored now
    mark = store.last_entry_seq()
    assert store.monitored_upto() == (mark, mark)
    store.upsert_entries("wire", [_entry(i) for i in range(3, 6)], now=now)
    after = [e.id for b in store.iter_entries_since(mark, batch=2) for e in b]
    assert after == ["id-3", "id-4", "id-5"]
    assert [e.id for b in store.iter_entries_since(mark, upto=mark + 2) for e in b] == [
        "id-3",
        "id-4",
    ]
    store.set_monitored_upto(mark + 1)
    assert store.monitored_upto() == (mark + 1, mark + 3)


def test_a_new_entry_after_the_newest_was_removed_is_past_the_mark(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    # SQLite gives a new row the largest pk + 1: with the newest entry removed, the next one
    # takes its pk, at the mark. Its change sequence is a new one, above the mark, so a
    # catch-up still finds it (with a mark by pk, the mark had to follow the pks down).
    store.upsert_entries("wire", [_entry(i) for i in range(3)], now=now)
    store.set_monitored_upto()
    mark, _ = store.monitored_upto()
    assert store.delete_entries("wire", ["id-2"]) == 1
    assert store.monitored_upto() == (mark, mark)  # the counter never goes back
    store.upsert_entries("wire", [_entry(9)], now=now)
    con = sqlite3.connect(store.engine.url.database)
    pks = dict(con.execute("SELECT id, pk FROM entries").fetchall())
    con.close()
    assert pks["id-9"] == 3  # SQLite's rowid reuse
    assert store.monitored_upto() == (mark, mark + 1)
    assert [e.id for b in store.iter_entries_since(mark) for e in b] == ["id-9"]


def test_an_edit_is_numbered_past_the_mark_and_nothing_else_is(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    store.upsert_entries("wire", [_entry(i) for i in range(3)], now=now)
    store.set_monitored_upto()
    mark = store.last_entry_seq()
    # the same content with a new raw hash, a saved analysis: nothing to match again
    store.upsert_entries("wire", [_entry(1)], now=now, raw_hashes={"id-1": "h"})
    store.save_analyses([("wire", "id-0", b"a")], tag="t")
    assert store.monitored_upto() == (mark, mark)
    assert list(store.iter_entries_since(mark)) == []
    # an edit keeps its row (and pk) but gets the next sequence; new entries go first, as
    # the result lists them and a pass hands them to the monitor
    result = store.upsert_entries(
        "wire", [_entry(0, content="<p>edited</p>"), _entry(5), _entry(6)], now=now
    )
    assert [e.id for e in result.new] == ["id-5", "id-6"]
    assert [e.id for e in result.changed] == ["id-0"]
    assert store.monitored_upto() == (mark, mark + 3)
    since = [(e.id, e.content_html) for b in store.iter_entries_since(mark, batch=2) for e in b]
    assert since == [("id-5", "<p>body</p>"), ("id-6", "<p>body</p>"), ("id-0", "<p>edited</p>")]
    assert [e.id for b in store.iter_entries_since(mark, upto=mark + 2) for e in b] == [
        "id-5",
        "id-6",
    ]
    # the entries themselves keep the order they were first stored in
    assert [e.id for b in store.iter_entries() for e in b] == [
        "id-0",
        "id-1",
        "id-2",
        "id-5",
        "id-6",
    ]
    assert [e.id for b in store.iter_entries(upto=mark) for e in b] == ["id-1", "id-2"]
    # a second edit of the same entry moves it again
    store.set_monitored_upto()
    store.upsert_entries("wire", [_entry(0, content="<p>again</p>")], now=now)
    assert [e.id for b in store.iter_entries_since(mark + 3) for e in b] == ["id-0"]


def as_v4_database(path: Path) -> None:
    """Make a database what v4 code left: no change sequence, no counter."""
    con = sqlite3.connect(path)
    con.execute("DROP INDEX ix_entries_seq")
    con.execute("ALTER TABLE entries DROP COLUMN seq")
    con.execute("DELETE FROM meta WHERE key = 'store.entries_seq'")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.commit()
    con.close()


def test_migration_from_v4_numbers_every_entry_by_its_pk(tmp_path: Path, now: datetime) -> None:
    path = tmp_path / "a.sqlite3"
    store = open_store(path)
    store.upsert_entries("wire", [_entry(i) for i in range(6)], now=now)
    store.delete_entries("wire", ["id-1", "id-5"])  # pks 1, 3, 4, 5 are left
    store.set_monitored_upto(4)  # a v4 mark: a pk
    store.close()
    as_v4_database(path)
    store = open_store(path)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    # the mark covers the same entries, and the counter goes on from the largest pk
    assert store.monitored_upto() == (4, 5)
    assert [e.id for b in store.iter_entries_since(4) for e in b] == ["id-4"]
    assert [e.id for b in store.iter_entries(upto=4) for e in b] == ["id-0", "id-2", "id-3"]
    store.upsert_entries("wire", [_entry(7), _entry(2, content="<p>edited</p>")], now=now)
    assert store.monitored_upto() == (4, 7)
    assert [e.id for b in store.iter_entries_since(4) for e in b] == ["id-4", "id-7", "id-2"]
    store.close()
    con = sqlite3.connect(path)
    rows = con.execute("SELECT id, pk, seq FROM entries ORDER BY pk").fetchall()
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert rows == [("id-0", 1, 1), ("id-2", 3, 7), ("id-3", 4, 4), ("id-4", 5, 5), ("id-7", 6, 6)]
    assert "ix_entries_seq" in names


def test_migration_from_v2_makes_the_newest_entries_index_covering(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    open_store(path).close()
    con = sqlite3.connect(path)
    # what v2 code created: the index without id
    con.execute("DROP INDEX ix_entries_source_published_id")
    con.execute("CREATE INDEX ix_entries_source_published ON entries (source, published)")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    store = open_store(path)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    store.close()
    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert "ix_entries_source_published_id" in names
    assert "ix_entries_source_published" not in names


def test_latest_entries_break_ties_by_id(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    same = datetime(2026, 11, 2, tzinfo=UTC)
    batch = [_entry(i, published=same, updated=same) for i in (5, 3, 4, 1)]
    store.upsert_entries("wire", batch, now=now)
    store.upsert_entries("other", [_entry(7, source="other")], now=now)  # older
    got = store.latest_entries(["wire", "other"], 3)
    assert [e.id for e in got] == ["id-1", "id-3", "id-4"]
    assert [e.title for e in got] == ["Title 1", "Title 3", "Title 4"]


def test_due_polls_carry_what_a_poll_needs(store) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    store.sync_sources(
        [Source(n, 60, url=f"https://h.example/{n}") for n in ("a", "b", "c")], now=now
    )
    store.record_poll(
        "b",
        now=now,
        next_check_at=now - timedelta(minutes=1),  # due before the others
        reason="interval",
        status=304,
        validators=Validators(etag='"e"', last_modified="Mon, 02 Nov 2026 00:00:00 GMT"),
    )
    store.record_failure("c", now=now, error="boom", next_check_at=now, reason="backoff")
    store.record_failure("a", now=now, error="gone", next_check_at=now, reason="gone", gone=True)
    due = store.due_polls(now)
    assert [p.name for p in due] == ["b", "c"]  # oldest due first; gone never
    assert due[0].validators == Validators('"e"', "Mon, 02 Nov 2026 00:00:00 GMT", None)
    assert due[0].url == "https://h.example/b" and due[0].failures == 0
    assert due[1].failures == 1
    assert store.due_sources(now) == ["b", "c"]
    assert store.poll_state("c") == due[1]
    assert store.poll_state("nope") is None


def test_buffered_polls_of_every_shape_in_one_flush(store) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    store.sync_sources(
        [
            Source("held", 60, url="https://slow.example/a"),
            Source("moved", 60, url="https://h.example/old"),
            Source("plain", 60, url="https://h.example/p"),
        ],
        now=now,
    )
    store.record_poll(
        "plain",
        now=now,
        next_check_at=now + timedelta(minutes=1),
        reason="interval",
        status=200,
        validators=Validators(etag='"p1"', body_hash="x"),
        title="Plain",
        link="https://h.example/",
    )
    store.flush()
    until = now + timedelta(hours=2)
    store.defer_host("slow.example", until)
    later = now + timedelta(minutes=5)
    store.record_poll("held", now=now, next_check_at=later, reason="interval", status=304)
    store.record_poll(
        "moved",
        now=now,
        next_check_at=later,
        reason="ttl",
        status=200,
        url="https://new.example/feed",
        validators=Validators(etag='"m"'),
    )
    # a 304 without a title or link keeps them; its validators replace the stored ones
    store.record_poll(
        "plain",
        now=now,
        next_check_at=later,
        reason="cache",
        status=304,
        validators=Validators(etag='"p2"'),
        warning="careful",
    )
    store.flush()
    held, moved, plain = (store.source_state(n) for n in ("held", "moved", "plain"))
    assert held is not None and moved is not None and plain is not None
    assert (held.next_check_at, held.next_check_reason) == (until, "retry-after")
    assert (moved.next_check_at, moved.next_check_reason) == (later, "ttl")
    assert moved.url == "https://new.example/feed" and moved.validators.etag == '"m"'
    assert (plain.next_check_at, plain.next_check_reason) == (later, "cache")
    assert plain.title == "Plain" and plain.link == "https://h.example/"
    assert plain.validators == Validators('"p2"', None, None)
    assert plain.last_error == "careful" and plain.last_status == 304
    assert [p.name for p in store.due_polls(now + timedelta(hours=3))] == [
        "moved",
        "plain",
        "held",
    ]


def test_saved_analyses_by_tag_newest_first_cleared_on_change(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    store.upsert_entries("wire", [_entry(i) for i in range(6)], now=now)
    mark = store.last_entry_seq()
    store.upsert_entries("desk", [_entry(9, source="desk")], now=now)
    store.save_analyses(
        [("wire", f"id-{i}", f"a{i}".encode()) for i in range(1, 6)] + [("wire", "gone", b"x")],
        tag="t1",
    )
    store.save_analyses([("wire", "id-5", b"old")], tag="t0")  # another analyser's

    def saved(**kw: object) -> list[tuple[str, bytes | None]]:
        return [(r.id, r.data) for b in store.iter_analyses(batch=2, **kw) for r in b]

    assert saved(newest=4, tag="t1", upto=mark) == [
        ("id-2", b"a2"),
        ("id-3", b"a3"),
        ("id-4", b"a4"),
        ("id-5", None),
    ]
    assert saved(newest=2, tag="t1") == [("id-5", None), ("id-9", None)]
    assert store.count_entries(upto=mark) == 6 and store.count_entries() == 7
    assert [e.id for b in store.iter_entries(newest=2, upto=mark) for e in b] == ["id-4", "id-5"]
    # a changed entry's analysis was of its old content; an unchanged one keeps its own
    store.upsert_entries("wire", [_entry(3, content="<p>new</p>"), _entry(4)], now=now)
    last = store.last_entry_seq()
    assert saved(newest=4, tag="t1", upto=last)[:2] == [("id-3", None), ("id-4", b"a4")]
    # and, changed after the mark, it is no longer among the entries up to the mark
    assert saved(newest=3, tag="t1", upto=mark) == [
        ("id-2", b"a2"),
        ("id-4", b"a4"),
        ("id-5", None),
    ]
    assert store.count_entries(upto=mark) == 5


def test_migration_from_v3_adds_the_saved_analysis(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = open_store(path)
    store.upsert_entries("wire", [_entry(1)], now=_entry(1).published)
    store.close()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE entries DROP COLUMN analysis")  # what v3 code created
    con.execute("ALTER TABLE entries DROP COLUMN analysis_tag")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    store = open_store(path)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    [[row]] = list(store.iter_analyses(newest=10, tag="t"))
    assert (row.id, row.title, row.data) == ("id-1", "Title 1", None)  # analysed once more
    store.save_analyses([("wire", "id-1", b"a")], tag="t")
    assert [r.data for b in store.iter_analyses(newest=10, tag="t") for r in b] == [b"a"]
    store.close()


def test_saved_analyses_are_kept_for_the_newest_entries_only(store, now: datetime) -> None:  # type: ignore[no-untyped-def]
    def saved() -> list[str]:
        return [r.id for b in store.iter_analyses(newest=100, tag="t") for r in b if r.data]

    store.upsert_entries("wire", [_entry(i) for i in range(5)], now=now)
    store.save_analyses([("wire", f"id-{i}", b"a") for i in range(5)], tag="t")
    assert store.prune_analyses(keep=10) == 0
    assert store.prune_analyses(keep=3) == 2
    assert saved() == ["id-2", "id-3", "id-4"]
    store.upsert_entries("wire", [_entry(i) for i in range(5, 7)], now=now)
    store.save_analyses([("wire", "id-5", b"a"), ("wire", "id-6", b"a")], tag="t")
    # an old entry saved again (changed, observed again) below the mark is left alone
    store.save_analyses([("wire", "id-0", b"a")], tag="t")
    assert store.prune_analyses(keep=3) == 2
    # (a leak of one entry's bytes until it changes again, in exchange for never walking the
    # whole table)
    assert saved() == ["id-0", "id-4", "id-5", "id-6"]
    # what a restart restores: the newest, all saved
    restored = [(r.id, r.data) for b in store.iter_analyses(newest=3, tag="t") for r in b]
    assert restored == [("id-4", b"a"), ("id-5", b"a"), ("id-6", b"a")]
