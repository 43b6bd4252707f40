"""Two outboxes with the store's outbox API, and the contract both must keep.

``MemoryOutbox`` serves the engine and delivery tests; ``SqliteOutbox`` (WAL, synchronous=FULL,
a connection per call) survives kill -9 in the crash test. The real store (monitor/store) must
pass ``test_outbox_contract`` too (it is the ``store`` param of the fixture).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class OutboxItem:
    id: int
    key: str
    channel: str
    payload: dict[str, Any]
    attempts: int = 0
    next_attempt_at: datetime = datetime.min.replace(tzinfo=UTC)
    state: str = "pending"  # pending | sent | dead
    error: str | None = None


def _fifo_due(pending: list[OutboxItem], now: datetime, limit: int) -> list[OutboxItem]:
    """The outbox's order rule (see monitor/store/outbox.py ``due``): per channel, items in id
    order up to the first one not yet due."""
    out: list[OutboxItem] = []
    blocked: set[str] = set()
    for item in pending:
        if item.channel in blocked:
            continue
        if item.next_attempt_at > now:
            blocked.add(item.channel)
            continue
        out.append(item)
    return sorted(out, key=lambda i: i.id)[:limit]


class MemoryOutbox:
    def __init__(self) -> None:
        self.items: dict[int, OutboxItem] = {}
        self._lock = threading.Lock()
        self.states: dict[str, str] = {}  # the engines' snapshots (``commit``), by name
        self.fail_commits = 0  # the next N commits fail, as a locked database would
        self.commits = 0

    def enqueue(self, key: str, channel: str, payload: dict[str, Any]) -> bool:
        with self._lock:
            if any(i.key == key for i in self.items.values()):
                return False
            new_id = len(self.items) + 1
            # A JSON round trip, as a database would do.
            self.items[new_id] = OutboxItem(new_id, key, channel, json.loads(json.dumps(payload)))
            return True

    def commit(self, rows: list[tuple[str, str, dict[str, Any]]], state: str,
               name: str = "engine") -> int:
        self.commits += 1
        if self.fail_commits:
            self.fail_commits -= 1
            raise RuntimeError("database is locked")
        added = sum(self.enqueue(k, c, p) for k, c, p in rows)
        self.states[name] = state
        return added

    def alert_state(self, name: str = "engine") -> str | None:
        return self.states.get(name)

    def due(self, now: datetime, limit: int) -> list[OutboxItem]:
        with self._lock:
            pending = sorted((i for i in self.items.values() if i.state == "pending"),
                             key=lambda i: i.id)
            return _fifo_due(pending, now, limit)

    def mark_sent(self, id: int, at: datetime) -> None:
        with self._lock:
            self.items[id] = replace(self.items[id], state="sent")

    def mark_failed(self, id: int, error: str, next_attempt_at: datetime, dead: bool) -> None:
        with self._lock:
            item = self.items[id]
            self.items[id] = replace(item, attempts=item.attempts + 1, error=error,
                                     next_attempt_at=next_attempt_at,
                                     state="dead" if dead else "pending")

    def outbox_counts(self) -> dict[str, int]:
        with self._lock:
            counts = {"pending": 0, "sent": 0, "dead": 0}
            for i in self.items.values():
                counts[i.state] += 1
            return counts


class SqliteOutbox:
    """A connection per call: safe from any thread, and nothing half-written after kill -9."""

    SCHEMA = """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, channel TEXT NOT NULL,
        payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending',
        error TEXT, sent_at REAL)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(self.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def enqueue(self, key: str, channel: str, payload: dict[str, Any]) -> bool:
        with closing(self._connect()) as db, db:
            cur = db.execute("INSERT OR IGNORE INTO outbox (key, channel, payload) VALUES (?,?,?)",
                             (key, channel, json.dumps(payload)))
            return cur.rowcount == 1

    def due(self, now: datetime, limit: int) -> list[OutboxItem]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT id, key, channel, payload, attempts, next_attempt_at FROM outbox "
                "WHERE state='pending' ORDER BY id")
            pending = [OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4],
                                  datetime.fromtimestamp(r[5], UTC)) for r in rows]
            return _fifo_due(pending, now, limit)

    def mark_sent(self, id: int, at: datetime) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE outbox SET state='sent', sent_at=? WHERE id=?", (at.timestamp(), id))

    def mark_failed(self, id: int, error: str, next_attempt_at: datetime, dead: bool) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE outbox SET attempts=attempts+1, error=?, next_attempt_at=?, "
                       "state=? WHERE id=?",
                       (error, next_attempt_at.timestamp(), "dead" if dead else "pending", id))

    def outbox_counts(self) -> dict[str, int]:
        with closing(self._connect()) as db:
            counts = {"pending": 0, "sent": 0, "dead": 0}
            counts |= dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state"))
            return counts


T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "store"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "store":  # the real one (monitor/store), on SQLite
        from monitor.store import Store

        store = Store(f"sqlite:///{tmp_path / 'store.db'}", clock=lambda: T0)
        try:
            yield store
        finally:
            store.close()
        return
    yield MemoryOutbox() if request.param == "memory" else SqliteOutbox(tmp_path / "o.db")


def test_outbox_contract(outbox: Any) -> None:
    assert outbox.enqueue("k1", "dt", {"title": "故障"}) is True
    assert outbox.enqueue("k1", "dt", {"title": "again"}) is False  # idempotency key
    assert outbox.enqueue("k2", "wc", {"title": "x"}) is True
    first, second = outbox.due(T0, 10)
    assert (first.key, first.channel, first.payload, first.attempts) == ("k1", "dt",
                                                                         {"title": "故障"}, 0)
    outbox.mark_failed(first.id, "HTTP 503", T0 + timedelta(seconds=2), dead=False)
    assert outbox.enqueue("k3", "dt", {"title": "恢复"}) is True  # due now, but behind k1
    assert [i.key for i in outbox.due(T0, 10)] == ["k2"]
    again, third = [i for i in outbox.due(T0 + timedelta(seconds=2), 10) if i.channel == "dt"]
    assert (again.key, again.attempts, third.key) == ("k1", 1, "k3")
    outbox.mark_sent(second.id, T0)
    outbox.mark_sent(third.id, T0)
    outbox.mark_failed(first.id, "errcode 310000", T0, dead=True)
    assert outbox.due(T0 + timedelta(days=1), 10) == []
    assert outbox.outbox_counts() == {"pending": 0, "sent": 2, "dead": 1}
