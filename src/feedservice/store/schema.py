"""Tables, the schema version and the migrations that reach it.

SQLAlchemy Core only, so the same schema runs on SQLite (default) and PostgreSQL.
Every datetime column goes through :class:`UTCDateTime`: SQLite has no time zones,
so values are stored as naive UTC and come back timezone-aware.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)

SCHEMA_VERSION = 5

# meta key: the last change sequence given to an entry (``entries.seq``); v5
ENTRY_SEQ_KEY = "store.entries_seq"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; naive values are refused."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; feedservice uses aware UTC only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("url", Text, nullable=True),  # current URL (after permanent redirects)
    Column("configured_url", Text, nullable=True),  # as in the config, to notice edits
    Column("host", String(255), nullable=True),
    Column("etag", Text, nullable=True),
    Column("last_modified", Text, nullable=True),
    Column("body_hash", String(64), nullable=True),
    Column("next_check_at", UTCDateTime, nullable=False),
    Column("next_check_reason", String(40), nullable=False, default="new"),
    Column("last_checked_at", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("failures", Integer, nullable=False, default=0),
    Column("gone", Boolean, nullable=False, default=False),
    Column("title", Text, nullable=True),
    Column("link", Text, nullable=True),
)
Index("ix_sources_next_check", sources.c.next_check_at)
Index("ix_sources_host", sources.c.host)

hosts = Table(
    "hosts",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("retry_after_until", UTCDateTime, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("id", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("link", Text, nullable=True),
    Column("published", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Column("dated", Boolean, nullable=False),
    Column("author", Text, nullable=True),
    Column("summary", Text, nullable=False),
    Column("content_html", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("tags", Text, nullable=False, default="[]"),  # JSON lists
    Column("entities", Text, nullable=False, default="[]"),
    Column("keywords", Text, nullable=False, default="[]"),
    Column("story_path", Text, nullable=True),
    Column("first_seen", UTCDateTime, nullable=False),
    # v2: a hash of the item as parsed, before normalising; an item whose raw hash is
    # unchanged is not normalised again (a changed feed usually changes one item of 20)
    Column("raw_hash", String(64), nullable=True),
    # v4: the monitor's analysis of the entry as it pooled it (monitor.saved), under the tag
    # of the analyser that wrote it; a restart restores the pool of recent items from these
    # instead of analysing 20,000 entries again. Cleared when the entry's content changes.
    Column("analysis", LargeBinary, nullable=True),
    Column("analysis_tag", String(64), nullable=True),
    # v5: the change sequence: a new number from a store-wide counter (meta ENTRY_SEQ_KEY,
    # never given twice) each time the entry is inserted or its content changes. The
    # monitor's mark counts these, not pks: an edit keeps its row and pk, and a follow-up
    # made by an edit that a crash kept from the monitor was never matched again.
    Column("seq", Integer, nullable=False),
    UniqueConstraint("source", "id", name="uq_entries_source_id"),
)
# v3: with id, so a published feed's newest entries (source IN ..., newest first, id to break
# ties) are picked from the index alone and only those rows are read (store.latest_entries)
Index("ix_entries_source_published_id", entries.c.source, entries.c.published, entries.c.id)
Index("ix_entries_link", entries.c.link)
Index("ix_entries_seq", entries.c.seq)

story_files = Table(
    "story_files",
    metadata,
    Column("source", String(200), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("mtime_ns", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("entry_id", Text, nullable=True),  # None: the file did not parse
    Column("error", Text, nullable=True),
)

matches = Table(
    "matches",
    metadata,
    Column("watch", String(200), primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("entry_id", Text, primary_key=True),
    Column("score", Float, nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list
    Column("also", Text, nullable=False, default="[]"),  # JSON list of [source, id]
    Column("signature", Text, nullable=True),  # JSON list of ints (MinHash)
    Column("matched_at", UTCDateTime, nullable=False),
)
Index("ix_matches_watch_time", matches.c.watch, matches.c.matched_at)

outbox = Table(
    "outbox",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False),  # idempotency key: watch + entry
    Column("target", Text, nullable=False),  # "webhook:URL", "email:addr", "command:[...]"
    Column("payload", Text, nullable=False),  # JSON of the notification
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("failed", Boolean, nullable=False, default=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("key", "target", name="uq_outbox_key_target"),
)
Index("ix_outbox_due", outbox.c.delivered_at, outbox.c.next_attempt_at)


def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn)


def _migrate_to_2(conn: Connection) -> None:
    # a database made by v1 code lacks entries.raw_hash; one made by _migrate_to_1 of this
    # code (create_all of today's tables) already has it
    columns = {c["name"] for c in inspect(conn).get_columns("entries")}
    if "raw_hash" not in columns:
        conn.execute(text("ALTER TABLE entries ADD COLUMN raw_hash VARCHAR(64)"))


def _migrate_to_3(conn: Connection) -> None:
    # the covering index replaces ix_entries_source_published (its first two columns); a
    # database made by _migrate_to_1 of this code already has the new one
    indexes = {ix["name"] for ix in inspect(conn).get_indexes("entries")}
    if "ix_entries_source_published_id" not in indexes:
        next(i for i in entries.indexes if i.name == "ix_entries_source_published_id").create(conn)
    if "ix_entries_source_published" in indexes:
        conn.execute(text("DROP INDEX ix_entries_source_published"))


def _migrate_to_4(conn: Connection) -> None:
    # entries saved before v4 have no analysis (NULL): the monitor analyses them once more
    columns = {c["name"] for c in inspect(conn).get_columns("entries")}
    if "analysis" not in columns:
        blob = LargeBinary().compile(dialect=conn.dialect)  # BLOB on SQLite, BYTEA on PostgreSQL
        conn.execute(text(f"ALTER TABLE entries ADD COLUMN analysis {blob}"))
    if "analysis_tag" not in columns:
        conn.execute(text("ALTER TABLE entries ADD COLUMN analysis_tag VARCHAR(64)"))


def _migrate_to_5(conn: Connection) -> None:
    # every row so far gets its pk as its sequence, and the counter goes on from the largest:
    # the monitor's mark (a pk until v4) then still covers the same entries, so nothing is
    # matched or notified again. A database made by _migrate_to_1 of this code has the column.
    columns = {c["name"] for c in inspect(conn).get_columns("entries")}
    if "seq" not in columns:
        # NOT NULL needs a default to add to existing rows; every insert gives its own
        conn.execute(text("ALTER TABLE entries ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"))
        conn.execute(update(entries).values(seq=entries.c.pk))
    indexes = {ix["name"] for ix in inspect(conn).get_indexes("entries")}
    if "ix_entries_seq" not in indexes:
        next(i for i in entries.indexes if i.name == "ix_entries_seq").create(conn)
    if conn.execute(select(meta.c.key).where(meta.c.key == ENTRY_SEQ_KEY)).first() is None:
        last = conn.execute(select(func.coalesce(func.max(entries.c.seq), 0))).scalar_one()
        conn.execute(insert(meta).values(key=ENTRY_SEQ_KEY, value=str(last)))


# MIGRATIONS[n] brings a database from version n to n + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    0: _migrate_to_1,
    1: _migrate_to_2,
    2: _migrate_to_3,
    3: _migrate_to_4,
    4: _migrate_to_5,
}
