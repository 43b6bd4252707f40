"""Outbox of notifications: written in the incident's transaction boundary, sent later, at most
one row per idempotency key (so a restart or a second poller never notifies twice)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import IntegrityError

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.models import NotFound, OutboxItem

O = schema.outbox  # noqa: E741 - the table, named like the others


def _item(row: Row[Any]) -> OutboxItem:
    m = dict(row._mapping)
    m["payload"] = json.loads(m["payload"])
    m.pop("claimed_until", None)  # the HA claim (issue 17) is the store's business
    return OutboxItem(**m)


class OutboxMixin(StoreBase):
    def enqueue(self, key: str, channel: str, payload: dict[str, Any],
                at: datetime | None = None) -> bool:
        """False if ``key`` was enqueued before (whatever its status)."""
        now = self._now(at)
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        with self.tx() as conn:
            if conn.execute(select(O.c.id).where(O.c.key == key)).first() is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(O.insert().values(key=key, channel=channel, payload=body,
                                                   status="pending", attempts=0,
                                                   next_attempt_at=now, created_at=now))
            except IntegrityError:
                return False
            return True

    # Seconds a poller holds the rows ``due`` gave it (0: no claim, ``due`` only reads). Set by
    # the daemon when pollers share one PostgreSQL (issue 17); see ``_claim_due``.
    outbox_claim_seconds: float = 0.0

    def due(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        if self.outbox_claim_seconds > 0:
            return self._claim_due(now, limit)
        with self.read() as conn:
            rows = conn.execute(select(O).where(O.c.status == "pending",
                                                O.c.next_attempt_at <= self._now(now))
                                .order_by(O.c.next_attempt_at, O.c.id).limit(limit))
            return [_item(r) for r in rows]

    def _claim_due(self, now: datetime, limit: int) -> list[OutboxItem]:
        """Due rows no other poller holds, held for ``outbox_claim_seconds``: across pollers
        each row is handed out once (a page goes out once). ``FOR UPDATE SKIP LOCKED`` lets two
        pollers claim at the same moment without waiting on each other; SQLite ignores it (its
        BEGIN IMMEDIATE already serialises writers). A poller that dies holding rows releases
        them when the claim runs out; mark_sent/mark_failed end it sooner."""
        at = self._now(now)
        with self.tx() as conn:
            ids = list(conn.execute(
                select(O.c.id).where(O.c.status == "pending", O.c.next_attempt_at <= at,
                                     (O.c.claimed_until.is_(None)) | (O.c.claimed_until <= at))
                .order_by(O.c.next_attempt_at, O.c.id).limit(limit)
                .with_for_update(skip_locked=True)).scalars())
            if not ids:
                return []
            conn.execute(update(O).where(O.c.id.in_(ids)).values(
                claimed_until=at + timedelta(seconds=self.outbox_claim_seconds)))
            rows = conn.execute(select(O).where(O.c.id.in_(ids))
                                .order_by(O.c.next_attempt_at, O.c.id))
            return [_item(r) for r in rows]

    def mark_sent(self, item_id: int, at: datetime) -> None:
        self._mark(item_id, status="sent", sent_at=self._now(at), claimed_until=None,
                   attempts=O.c.attempts + 1, last_error=None)

    def mark_failed(self, item_id: int, error: str, next_attempt_at: datetime,
                    dead: bool = False) -> None:
        """Record a failed attempt; ``error`` must already be free of secrets (channel URLs)."""
        self._mark(item_id, status="dead" if dead else "pending", last_error=error[:2000],
                   claimed_until=None,
                   next_attempt_at=self._now(next_attempt_at), attempts=O.c.attempts + 1)

    def _mark(self, item_id: int, **values: Any) -> None:
        with self.tx() as conn:
            if conn.execute(update(O).where(O.c.id == item_id).values(**values)).rowcount == 0:
                raise NotFound(f"outbox item {item_id} not found")

    def outbox_item(self, item_id: int) -> OutboxItem:
        with self.read() as conn:
            row = conn.execute(select(O).where(O.c.id == item_id)).one_or_none()
            if row is None:
                raise NotFound(f"outbox item {item_id} not found")
            return _item(row)

    def outbox_counts(self) -> dict[str, int]:
        with self.read() as conn:
            by_status = select(O.c.status, func.count()).group_by(O.c.status)
            got: dict[str, int] = {r[0]: r[1] for r in conn.execute(by_status)}
        return {s: int(got.get(s, 0)) for s in ("pending", "sent", "dead")}
