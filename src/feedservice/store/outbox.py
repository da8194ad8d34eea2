"""The notification outbox: one row per (idempotency key, target), claimed with a lease."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from feedservice.store._base import StoreBase, _translated
from feedservice.store.schema import outbox


@dataclass(frozen=True, slots=True)
class OutboxItem:
    pk: int
    key: str
    target: str
    payload: dict[str, Any]
    attempts: int


class OutboxMixin(StoreBase):
    """The notification outbox: queueing, leases, delivery attempts."""

    @_translated
    def enqueue(
        self, key: str, targets: Sequence[str], payload: dict[str, Any], *, now: datetime
    ) -> int:
        """Queue one notification per target; a (key, target) already queued is left alone,
        so a delivered match is never sent again. Returns how many were queued."""
        with self._tx() as conn:
            return self._enqueue_in(conn, key, targets, payload, now=now)

    def _enqueue_in(
        self,
        conn: Connection,
        key: str,
        targets: Sequence[str],
        payload: dict[str, Any],
        *,
        now: datetime,
    ) -> int:
        queued = 0
        body = json.dumps(payload, sort_keys=True)
        for target in targets:
            exists = conn.execute(
                select(outbox.c.pk).where(and_(outbox.c.key == key, outbox.c.target == target))
            ).first()
            if exists:
                continue
            conn.execute(
                insert(outbox).values(
                    key=key,
                    target=target,
                    payload=body,
                    attempts=0,
                    next_attempt_at=now,
                    failed=False,
                    created_at=now,
                )
            )
            queued += 1
        return queued

    @_translated
    def claim_due(
        self, *, now: datetime, lease_until: datetime, limit: int = 100
    ) -> list[OutboxItem]:
        """Due, undelivered items, leased until ``lease_until`` so a second worker skips them.

        A crash mid-delivery leaves the lease to expire: the item is tried again (at least
        once delivery; receivers dedupe by the idempotency key)."""
        with self._tx() as conn:
            rows = conn.execute(
                select(outbox)
                .where(
                    and_(
                        outbox.c.delivered_at.is_(None),
                        outbox.c.failed.is_(False),
                        outbox.c.next_attempt_at <= now,
                        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now),
                    )
                )
                .order_by(outbox.c.next_attempt_at, outbox.c.pk)
                .limit(limit)
            ).all()
            if rows:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.pk.in_([r.pk for r in rows]))
                    .values(claimed_until=lease_until)
                )
        return [OutboxItem(r.pk, r.key, r.target, json.loads(r.payload), r.attempts) for r in rows]

    @_translated
    def release_claims(self) -> int:
        """Void every lease: called at start-up, when no delivery of ours can be in flight,
        so items a killed process had claimed are retried at once."""
        with self._tx() as conn:
            done = conn.execute(
                update(outbox)
                .where(and_(outbox.c.claimed_until.is_not(None), outbox.c.delivered_at.is_(None)))
                .values(claimed_until=None)
            )
        return int(done.rowcount or 0)

    @_translated
    def mark_delivered(self, pk: int, *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.pk == pk)
                .values(
                    delivered_at=now,
                    attempts=outbox.c.attempts + 1,
                    claimed_until=None,
                    last_error=None,
                )
            )

    @_translated
    def mark_attempt_failed(
        self, pk: int, *, error: str, next_attempt_at: datetime, permanent: bool
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.pk == pk)
                .values(
                    attempts=outbox.c.attempts + 1,
                    last_error=error,
                    next_attempt_at=next_attempt_at,
                    claimed_until=None,
                    failed=permanent,
                )
            )

    @_translated
    def outbox_counts(self) -> dict[str, int]:
        """pending / delivered / failed counts, for status and tests."""
        with self._connect() as conn:
            pending = conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(and_(outbox.c.delivered_at.is_(None), outbox.c.failed.is_(False)))
            ).scalar_one()
            delivered = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_not(None))
            ).scalar_one()
            failed = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.failed.is_(True))
            ).scalar_one()
        return {"pending": int(pending), "delivered": int(delivered), "failed": int(failed)}
