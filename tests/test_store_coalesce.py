"""Coalesced writes (monitor/store/coalesce.py) on a real SQLite file and a real PostgreSQL.

The pipeline's device statuses and the trap receiver's holds and events go through it. Here it
writes rows of ``store_meta`` (key -> value): a None value is a NULL the database refuses (NOT
NULL). The store is held busy by a queued write that waits on an event, the way a long import
holds it; a group commit is rolled back by a write behind it failing as a lost connection does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from monitor.store import AsyncStore, Store
from monitor.store.coalesce import Coalesced
from tests.conftest import Clock

Meta = dict[Any, str | None]


class MetaRows:
    """``write`` for a Coalesced: each (key, value) a row of store_meta, in one transaction;
    every call's argument kept in ``calls``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[Meta] = []

    def __call__(self, items: Meta) -> None:
        self.calls.append(dict(items))
        with self.store.tx() as conn:
            for key, value in items.items():
                conn.execute(text("DELETE FROM store_meta WHERE key = :k"), {"k": f"t:{key}"})
                conn.execute(text("INSERT INTO store_meta (key, value) VALUES (:k, :v)"),
                             {"k": f"t:{key}", "v": value})

    def rows(self) -> dict[str, str]:
        with self.store.read() as conn:
            return {k[2:]: v for k, v in conn.execute(
                text("SELECT key, value FROM store_meta WHERE key LIKE 't:%'"))}


@pytest.fixture
async def astore(url: str) -> Any:
    s = AsyncStore(Store(url, timezone="Asia/Shanghai"), clock=Clock(0.0))  # batches by count
    yield s
    await s.aclose()


async def hold(astore: AsyncStore) -> threading.Event:
    """Queue a write that holds the store thread until the returned event is set."""
    busy, release = threading.Event(), threading.Event()

    def busy_store() -> None:
        busy.set()
        assert release.wait(60)

    astore.queue(busy_store)
    assert await asyncio.to_thread(busy.wait, 60)
    return release


def fails_once_after(reached: threading.Event, go: threading.Event) -> Callable[[], None]:
    """A write that, on its first try, waits for ``go`` and then fails as a lost connection
    (its group commit is rolled back and run again); on the next, succeeds."""
    tries: list[int] = []

    def write() -> None:
        tries.append(1)
        if len(tries) == 1:
            reached.set()
            assert go.wait(60)
            raise OperationalError("INSERT ...", {}, ConnectionResetError("server closed"))

    return write


async def test_many_changes_land_in_one_write_with_each_keys_latest(
        astore: AsyncStore) -> None:
    meta = MetaRows(astore.store)
    statuses: Coalesced[str, str | None] = Coalesced(astore, meta)
    release = await hold(astore)
    ok_before = astore.writes["ok"]
    for i in range(100):  # ten devices change ten times each while the store is busy
        assert statuses.put(f"d{i % 10}", f"v{i}")
    assert len(statuses) == 10
    release.set()
    assert await astore.drain(60)
    assert astore.writes["ok"] - ok_before == 2  # the busy one, then ONE for the 100 changes
    assert meta.calls == [{f"d{k}": f"v{90 + k}" for k in range(10)}]
    assert meta.rows() == {f"d{k}": f"v{90 + k}" for k in range(10)}
    assert (statuses.written, statuses.dropped, len(statuses)) == (10, 0, 0)

    assert statuses.put("d1", "again")  # nothing waits: the next change queues a write
    assert await astore.drain(60)
    assert meta.rows()["d1"] == "again" and len(meta.calls) == 2


async def test_a_rolled_back_group_commit_puts_its_values_back_under_newer_ones(
        astore: AsyncStore) -> None:
    """The coalesced write ran and took a=1, b=1; then a=2 and c=2 came; then a write behind
    it in the same group commit failed and the batch was rolled back: the retry writes
    a=2 (never the older 1), b=1 and c=2."""
    meta = MetaRows(astore.store)
    statuses: Coalesced[str, str | None] = Coalesced(astore, meta)
    release = await hold(astore)
    statuses.put("a", "1")
    statuses.put("b", "1")
    reached, go = threading.Event(), threading.Event()
    astore.queue(fails_once_after(reached, go))  # in the same batch, after the coalesced write
    release.set()
    assert await asyncio.to_thread(reached.wait, 60)
    assert meta.calls == [{"a": "1", "b": "1"}] and len(statuses) == 0  # taken
    statuses.put("a", "2")  # newer than what the write took
    statuses.put("c", "2")
    go.set()
    assert await astore.drain(60)
    assert astore.retries["connection"] >= 1
    assert meta.calls[-1] == {"a": "2", "b": "1", "c": "2"}
    assert meta.rows() == {"a": "2", "b": "1", "c": "2"}
    assert (statuses.written, statuses.dropped) == (3, 0)  # the rolled-back try not counted


async def test_a_refused_write_is_dropped_and_counted_and_the_next_change_writes_again(
        astore: AsyncStore, caplog: pytest.LogCaptureFixture) -> None:
    meta = MetaRows(astore.store)
    statuses: Coalesced[str, str | None] = Coalesced(astore, meta)
    release = await hold(astore)
    statuses.put("a", "1")
    statuses.put("b", None)  # NULL in a NOT NULL column: refused, every time
    release.set()
    assert await astore.drain(60)
    assert astore.writes["failed"] == 1 and astore.write_retries == 0  # not retried for ever
    assert (statuses.written, statuses.dropped, len(statuses)) == (0, 2, 0)
    assert meta.rows() == {}  # one transaction: nothing of it
    assert "MetaRows: 2 value(s) dropped with their write" in caplog.text

    def bug(items: Meta) -> None:
        raise KeyError("a bug of ours")

    buggy: Coalesced[str, str | None] = Coalesced(astore, bug)
    buggy.put("x", "1")
    assert await astore.drain(60)
    assert (buggy.written, buggy.dropped) == (0, 1) and astore.writes["failed"] == 2

    statuses.put("a", "2")  # the refused write is not waiting any more: this one is queued
    assert await astore.drain(60)
    assert meta.rows() == {"a": "2"} and (statuses.written, statuses.dropped) == (1, 2)


async def test_at_most_limit_values_wait_and_every_value_is_counted_once(
        astore: AsyncStore) -> None:
    """``append`` with a bound, as the trap receiver's events: beyond ``limit`` values are
    dropped and counted when they come, and when a rolled-back write puts its values back
    in front of newer ones (the oldest kept); written + dropped is every value appended."""
    meta = MetaRows(astore.store)
    events: Coalesced[int, str | None] = Coalesced(astore, meta, limit=5)
    release = await hold(astore)
    kept = [events.append(f"e{i}") for i in range(8)]
    assert kept == [True] * 5 + [False] * 3 and events.dropped == 3 and len(events) == 5
    reached, go = threading.Event(), threading.Event()
    astore.queue(fails_once_after(reached, go))
    release.set()
    assert await asyncio.to_thread(reached.wait, 60)
    assert [events.append(f"e{i}") for i in range(8, 12)] == [True] * 4  # after the take
    go.set()  # rolled back: 5 taken + 4 newer > 5: the oldest 5 kept, 4 dropped
    assert await astore.drain(60)
    assert (events.written, events.dropped) == (5, 7) and len(events) == 0
    assert sorted(meta.rows().values()) == [f"e{i}" for i in range(5)]
    assert events.written + events.dropped == 12

    assert events.append("e12")  # room again
    assert await astore.drain(60)
    assert (events.written, events.dropped) == (6, 7)


async def test_discarded_keys_are_not_written(astore: AsyncStore) -> None:
    meta = MetaRows(astore.store)
    holds: Coalesced[str, str | None] = Coalesced(astore, meta)
    release = await hold(astore)
    holds.put("mine", "1")
    holds.put("handed-over", "1")
    holds.discard({"handed-over", "never-seen"})
    release.set()
    assert await astore.drain(60)
    assert meta.rows() == {"mine": "1"} and holds.written == 1


async def test_linger_lets_changes_that_come_one_by_one_share_a_write(astore: AsyncStore) -> None:
    """``linger``: the write is queued that long after the first change (kiosks beat one by
    one: without it every beat was a transaction); ``flush`` queues it at once."""
    rows = MetaRows(astore.store)
    coalesced: Coalesced[str, str | None] = Coalesced(astore, rows, linger=0.2)
    for i in range(5):
        coalesced.put(f"k{i}", "v")
        await asyncio.sleep(0.01)  # one by one, within the linger
    assert rows.calls == [] and len(coalesced) == 5
    for _ in range(500):  # the timer queues it (bounded wait)
        await asyncio.sleep(0.01)
        if rows.calls:
            break
    assert await astore.drain(60)
    assert rows.calls == [{f"k{i}": "v" for i in range(5)}] and coalesced.written == 5
    held = Coalesced(astore, rows, linger=3600.0)  # never by its timer here
    held.put("late", "x")
    held.flush()  # a stop
    assert await astore.drain(60)
    assert rows.calls[-1] == {"late": "x"} and rows.rows()["late"] == "x"
