"""Outbox of notifications: written in the incident's transaction boundary, sent later, at most
one row per idempotency key (so a restart or a second poller never notifies twice)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, select, update
from sqlalchemy.exc import IntegrityError

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.models import NotFound, OutboxItem

O = schema.outbox  # noqa: E741 - the table, named like the others
A = schema.alert_state
ENGINE_STATE = "engine"


def _item(row: Row[Any]) -> OutboxItem:
    m = dict(row._mapping)
    m["payload"] = json.loads(m["payload"])
    m.pop("claimed_until", None)  # the HA claim (issue 17) is the store's business
    m.pop("site", None)  # so is the site: a store only ever sees its own
    return OutboxItem(**m)


class OutboxMixin(StoreBase):
    def enqueue(self, key: str, channel: str, payload: dict[str, Any],
                at: datetime | None = None) -> bool:
        """False if ``key`` was enqueued before (whatever its status)."""
        now = self._now(at)
        with self.tx() as conn:
            return self._enqueue(conn, key, channel, payload, now)

    def _enqueue(self, conn: Connection, key: str, channel: str, payload: dict[str, Any],
                 now: datetime) -> bool:
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        site = self.write_site
        if conn.execute(select(O.c.id).where(O.c.site == site, O.c.key == key)
                        ).first() is not None:
            return False
        try:
            with conn.begin_nested():
                conn.execute(O.insert().values(site=site, key=key, channel=channel, payload=body,
                                               status="pending", attempts=0,
                                               next_attempt_at=now, created_at=now))
        except IntegrityError:
            return False
        return True

    def commit(self, rows: list[tuple[str, str, dict[str, Any]]], state: str,
               name: str = ENGINE_STATE) -> int:
        """The alert engine's write: its messages, in order, and its state, in one transaction
        (a restart finds either both or neither). ``name``: one per poller (shard)."""
        now = self._now(None)
        site = self.write_site
        with self.tx() as conn:
            added = sum(self._enqueue(conn, k, c, p, now) for k, c, p in rows)
            done = conn.execute(update(A).where(A.c.site == site, A.c.name == name)
                                .values(value=state, updated_at=now))
            if done.rowcount == 0:
                conn.execute(A.insert().values(site=site, name=name, value=state,
                                               updated_at=now))
            return added

    def alert_state(self, name: str = ENGINE_STATE) -> str | None:
        with self.read() as conn:
            value = conn.execute(select(A.c.value).where(A.c.site == self.write_site,
                                                         A.c.name == name)).scalar()
            return None if value is None else str(value)

    # Seconds a poller holds the rows ``due`` gave it (0: no claim, ``due`` only reads). Set by
    # the daemon when pollers share one PostgreSQL (issue 17); see ``_claim_due``.
    outbox_claim_seconds: float = 0.0

    def due(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Per channel, the pending items in the order they were enqueued, up to the first one
        not yet due: a message waiting for its retry holds back every later message of its
        channel (a recovery never overtakes its outage notice), and that hold is in the table,
        so it outlives a restart. Channels come oldest head first."""
        if self.outbox_claim_seconds > 0:
            return self._claim_due(now, limit)
        with self.read() as conn:
            return self._in_order(conn, self._now(now), limit)

    def _in_order(self, conn: Connection, at: datetime, limit: int) -> list[OutboxItem]:
        """The due rows, per channel in order, stopping at the first one not due or held by
        another poller's claim (what it sends must go out before anything after it)."""
        head = func.min(O.c.id)
        mine = O.c.site == self.write_site  # a hall delivers its own pages only (issue 17)
        heads = conn.execute(select(O.c.channel, head).where(mine, O.c.status == "pending")
                             .group_by(O.c.channel).order_by(head)).all()
        out: list[OutboxItem] = []
        for channel, _head in heads:
            if len(out) >= limit:
                break
            rows = conn.execute(select(O).where(mine, O.c.status == "pending",
                                                O.c.channel == channel)
                                .order_by(O.c.id).limit(limit - len(out)))
            for row in rows:
                claimed = row.claimed_until
                if row.next_attempt_at > at or (claimed is not None and claimed > at):
                    break
                out.append(_item(row))
        return out

    def _claim_due(self, now: datetime, limit: int) -> list[OutboxItem]:
        """Due rows no other poller holds, held for ``outbox_claim_seconds``: across pollers
        each row is handed out once (a page goes out once), and per channel in order: a row
        another poller claims at the same moment (``FOR UPDATE SKIP LOCKED`` skips it) holds
        back the rest of its channel. SQLite ignores the lock clause (its BEGIN IMMEDIATE
        already serialises writers). A poller that dies holding rows releases them when the
        claim runs out; mark_sent/mark_failed end it sooner."""
        at = self._now(now)
        with self.tx() as conn:
            wanted = self._in_order(conn, at, limit)
            if not wanted:
                return []
            free = (O.c.claimed_until.is_(None)) | (O.c.claimed_until <= at)
            locked = set(conn.execute(
                select(O.c.id).where(O.c.id.in_([i.id for i in wanted]), O.c.status == "pending",
                                     free)
                .with_for_update(skip_locked=True)).scalars())
            out: list[OutboxItem] = []
            blocked: set[str] = set()
            for item in wanted:
                if item.channel in blocked:
                    continue
                if item.id not in locked:
                    blocked.add(item.channel)
                    continue
                out.append(item)
            if out:
                conn.execute(update(O).where(O.c.id.in_([i.id for i in out])).values(
                    claimed_until=at + timedelta(seconds=self.outbox_claim_seconds)))
            return out

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
            if conn.execute(update(O).where(O.c.id == item_id, *self.of_site(O))
                            .values(**values)).rowcount == 0:
                raise NotFound(f"outbox item {item_id} not found")

    def outbox_item(self, item_id: int) -> OutboxItem:
        with self.read() as conn:
            row = conn.execute(select(O).where(O.c.id == item_id, *self.of_site(O))
                               ).one_or_none()
            if row is None:
                raise NotFound(f"outbox item {item_id} not found")
            return _item(row)

    def outbox_counts(self) -> dict[str, int]:
        with self.read() as conn:
            by_status = (select(O.c.status, func.count()).where(*self.of_site(O))
                         .group_by(O.c.status))
            got: dict[str, int] = {r[0]: r[1] for r in conn.execute(by_status)}
        return {s: int(got.get(s, 0)) for s in ("pending", "sent", "dead")}
