"""The store's foundation: the engine, connections and transactions, the schema's
migration and the meta table; the error translation and chunking every part shares.

Each part of :class:`~feedservice.store.Store` (sources, entries, matches, outbox) is a mixin
over :class:`StoreBase`, so it sees the engine and the transaction helpers with their types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from feedservice.errors import StorageError
from feedservice.store.schema import MIGRATIONS, SCHEMA_VERSION, meta

P = ParamSpec("P")
T = TypeVar("T")

# SQLite caps bound parameters per statement; stay well below it.
_CHUNK = 500


def _translated(fn: Callable[P, T]) -> Callable[P, T]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise StorageError(f"{fn.__name__}: {exc.__class__.__name__}: {exc}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class StoreBase:
    """The engine and its transactions; the schema version and the meta table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _flush_polls(self) -> None:
        """Write buffered writes before a transaction that asks for it: nothing here; the
        sources part buffers successful polls and overrides this."""

    def _enqueue_in(
        self,
        conn: Connection,
        key: str,
        targets: Sequence[str],
        payload: dict[str, Any],
        *,
        now: datetime,
    ) -> int:
        """Queue a notification in the caller's transaction: the outbox part overrides this,
        so a match and its notification are stored together (the matches part knows no
        outbox SQL)."""
        raise NotImplementedError

    @contextmanager
    def _tx(self, *, flush: bool = False) -> Iterator[Connection]:
        """A transaction; ``flush``: write the buffered polls first (for anything that
        reads or writes the sources' poll state)."""
        if flush:
            self._flush_polls()
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self, *, flush: bool = False) -> Iterator[Connection]:
        if flush:
            self._flush_polls()
        with self.engine.connect() as conn:
            yield conn

    @_translated
    def flush(self) -> None:
        """Write the buffered successful polls now (close() does it too)."""
        self._flush_polls()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.engine.dispose()

    # --- schema ---------------------------------------------------------------------------

    @_translated
    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; refuse a newer database. Returns the version."""
        with self._tx() as conn:
            meta.create(conn, checkfirst=True)
            row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"database schema v{version} is newer than this feedservice "
                    f"(v{SCHEMA_VERSION}); upgrade feedservice"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
            self._set_meta(conn, "schema_version", str(version))
        return version

    @_translated
    def get_meta(self, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
        return None if row is None else str(row[0])

    @_translated
    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as conn:
            self._set_meta(conn, key, value)

    @staticmethod
    def _set_meta(conn: Connection, key: str, value: str) -> None:
        done = conn.execute(update(meta).where(meta.c.key == key).values(value=value))
        if done.rowcount == 0:
            conn.execute(insert(meta).values(key=key, value=value))
