"""The only place with SQL: sources' poll state, entries, story files, matches, the outbox.

SQLAlchemy Core over SQLite (WAL) by default; any SQLAlchemy URL (PostgreSQL when
scaling out) works. Every public method raises :class:`StorageError` when the
database cannot be read or written; SQLAlchemy's exceptions never leave this package.

The package is one :class:`Store` composed of parts that each own one thing:

- ``_base``: the engine, connections and transactions, migrations and the meta table;
- ``sources``: sources' poll state, the buffered successful polls, per-host Retry-After holds;
- ``entries``: entries and the story files they were read from;
- ``matches``: watches' matches and their near-duplicates;
- ``outbox``: the notification outbox;
- ``schema``: the tables and the migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from feedservice.errors import StorageError
from feedservice.store.entries import EntriesMixin, SavedAnalysis, UpsertResult
from feedservice.store.matches import RECENT_SIGNATURES as RECENT_SIGNATURES
from feedservice.store.matches import MatchesMixin, MatchRow, StoredMatch
from feedservice.store.outbox import OutboxItem, OutboxMixin
from feedservice.store.schema import SCHEMA_VERSION
from feedservice.store.sources import PollState, SourcesMixin, SourceState
from feedservice.store.sources import host_of as host_of

# host_of and RECENT_SIGNATURES were public names of this module but never in __all__ (update
# and app import host_of from here): the redundant aliases above re-export them for mypy --strict.
__all__ = [
    "SCHEMA_VERSION",
    "MatchRow",
    "OutboxItem",
    "PollState",
    "SavedAnalysis",
    "SourceState",
    "Store",
    "StoredMatch",
    "UpsertResult",
    "open_store",
]


class Store(SourcesMixin, EntriesMixin, MatchesMixin, OutboxMixin):
    """All persistence. Methods are synchronous and short; callers batch their writes."""


def open_store(url_or_path: str | Path) -> Store:
    """Open (creating and migrating as needed) the database at a path or SQLAlchemy URL.

    Raises StorageError when it cannot be opened or its schema is newer than this code.
    """
    url = str(url_or_path)
    if "://" not in url:
        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{path.parent}: cannot create the data directory: {exc}") from exc
        url = f"sqlite:///{path}"
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ValueError) as exc:
        raise StorageError(f"{url}: cannot open database: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    store = Store(engine)
    store.migrate()
    return store


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (the server) never block the writer (the poller), and a crash mid-write
    # leaves the previous state intact.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
