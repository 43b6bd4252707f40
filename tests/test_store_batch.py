"""Group commit of the write queue (issue 17: 100 halls on one PostgreSQL).

As found: when a switch fails, its ~50 devices' incident writes went through the poller's one
writer thread one transaction after another (p99 event -> committed row 1.8-2.7 s against a
250 ms budget). The queue now runs the writes waiting at its head in ONE transaction, each in a
SAVEPOINT of its own. Real SQLite files and a real PostgreSQL; commits are counted by an event
listener on the store's own engine; locks are taken by real second connections and the server
is really stopped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.exc import IntegrityError

from monitor.store import AsyncStore, InvalidValue, Store
from monitor.store.aio import BATCH_MAX
from tests.agents.postgres import PostgresServer
from tests.agents.proc import eventually
from tests.conftest import Clock

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SWITCH_CHILDREN = 50  # a floor switch's devices, as in bench/sites_pg.py


def commits_of(store: Store) -> list[int]:
    """A list that grows by one for each transaction the store's engine commits."""
    seen: list[int] = []

    @event.listens_for(store.engine, "commit")
    def _commit(_conn: Connection) -> None:
        seen.append(1)

    return seen



def _switch_failure(store: AsyncStore, n: int = SWITCH_CHILDREN) -> list[asyncio.Future[Any]]:
    """The writes a switch failure queues at once: each child's incident and its page."""
    out: list[asyncio.Future[Any]] = []
    for i in range(n):
        dev = f"kiosk-{i:02d}"
        out.append(store.queue(store.store.open_incident, dev, None, "unreachable",
                               "parent down", AT))
        store.queue(store.store.enqueue, f"{dev}/down", f"ch{i % 3}", {"device": dev, "n": i})
    return out


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _check_burst(store: Store, opened: list[asyncio.Future[Any]], n: int) -> None:
    """Every row once; each future holds the id of its own device's incident; per channel the
    outbox rows are in the order they were queued."""
    kiosks = "SELECT device_id, id FROM incidents WHERE device_id LIKE 'kiosk-%'"
    by_device = dict(_rows(store, kiosks))
    assert len(by_device) == n == len(_rows(store, kiosks))
    assert [f.result() for f in opened] == [by_device[f"kiosk-{i:02d}"] for i in range(n)]
    for ch in ("ch0", "ch1", "ch2"):
        keys = [k for (k,) in _rows(store, f"SELECT key FROM outbox WHERE channel = '{ch}' "
                                           "ORDER BY id")]
        want = [f"kiosk-{i:02d}/down" for i in range(n) if f"ch{i % 3}" == ch]
        assert keys == want


async def test_a_switch_failure_lands_in_one_commit_not_a_hundred(url: str) -> None:
    one_each = AsyncStore(Store(url, timezone="Asia/Shanghai"), batch=1)  # as before
    commits = commits_of(one_each.store)
    try:
        _switch_failure(one_each, 10)
        assert await one_each.drain(60)
        assert len(commits) == one_each.batches == 20  # one transaction per write
        assert one_each.batch_sizes.counts[0] == 20 and one_each.batch_sizes.sum == 20
    finally:
        await one_each.aclose()

    store = AsyncStore(Store(url, timezone="Asia/Shanghai"),
                       clock=Clock(0.0))  # stands still: batches end by count
    commits = commits_of(store.store)
    try:
        before = len(commits)
        opened = _switch_failure(store)  # 100 writes, queued before the writer runs
        assert not any(f.done() for f in opened)
        assert await store.drain(60)
        # BATCH_MAX (64) writes in the first transaction, the 36 left in the second.
        assert len(commits) - before == 2 == -(-2 * SWITCH_CHILDREN // BATCH_MAX)
        # hallmon_store_batch_writes: both in the bucket le=64 (64 and 36), 100 writes.
        assert store.batch_sizes.counts == [0] * 6 + [2, 0] and store.batch_sizes.sum == 100
        assert store.writes == {"ok": 2 * SWITCH_CHILDREN, "failed": 0}
        _check_burst(store.store, opened, SWITCH_CHILDREN)
    finally:
        await store.aclose()


async def test_a_refused_write_in_the_middle_of_a_batch_is_dropped_alone(url: str) -> None:
    store = AsyncStore(Store(url, timezone="Asia/Shanghai"),
                       clock=Clock(0.0))  # stands still: batches end by count
    commits = commits_of(store.store)

    def taken_key(s: Store = store.store) -> None:
        with s.tx() as conn:  # a unique key taken: the database refuses it every time
            conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('k', 'a')"))
            conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('k', 'b')"))

    try:
        before = len(commits)
        first = [store.queue(store.store.open_incident, f"a-{i}", None, "down", "x", AT)
                 for i in range(10)]
        bad = store.queue(taken_key)
        bug = store.queue(store.store.close_incident, 1, "not a datetime")  # type: ignore[arg-type]
        bad_value = store.queue(store.store.open_incident, "a-x", None, "sideways", "x", AT)
        again = store.queue(store.store.open_incident, "a-3", None, "down", "x", AT)
        last = [store.queue(store.store.open_incident, f"b-{i}", None, "down", "x", AT)
                for i in range(10)]
        assert await store.drain(60)
        assert len(commits) - before == 1
        assert isinstance(bad.exception(), IntegrityError)
        assert bug.exception() is not None and isinstance(bad_value.exception(), InvalidValue)
        assert store.writes == {"ok": 21, "failed": 3} and store.write_retries == 0
        assert again.result() == first[3].result()  # the open incident, found in the batch
        assert _rows(store.store, "SELECT key FROM store_meta WHERE key = 'k'") == []
        ids = dict(_rows(store.store, "SELECT device_id, id FROM incidents"))
        assert sorted(ids) == sorted([f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)])
        assert [f.result() for f in first + last] == [
            ids[d] for d in [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)]]
        assert (await store.incidents(device_id="a-1"))[0].ended_at is None  # the bug closed none
    finally:
        await store.aclose()


async def test_a_batch_commits_once_its_writes_ran_batch_seconds(tmp_path: Path) -> None:
    """A big batch's first write would wait for the last one's work: the batch ends after the
    write that took it past ``batch_seconds`` (an injected clock: the writes move it)."""
    clock = Clock(0.0)
    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"),
                       clock=clock, batch_seconds=1.0)
    commits = commits_of(store.store)

    def slow(i: int) -> int:
        clock.now += 0.4  # each write "takes" 0.4 s: three of them pass 1 s
        return store.store.open_incident(f"d-{i}", None, "down", "x", AT)

    try:
        opened = [store.queue(slow, i) for i in range(7)]
        assert await store.drain(60)
        assert len(commits) == store.batches == 3  # 3 + 3 + 1
        assert [f.result() for f in opened] == [i.id for i in
                                                sorted(await store.open_incidents(),
                                                       key=lambda i: i.device_id)]
    finally:
        await store.aclose()


async def test_an_sqlalchemy_error_in_a_batch_sends_its_writes_one_at_a_time(url: str) -> None:
    """An error of SQLAlchemy's own (not the database's) may leave the batch's connection
    unusable for the writes after it: rather than drop those, the batch is rolled back and its
    writes run one at a time, where only the culprit fails."""
    store = AsyncStore(Store(url, timezone="Asia/Shanghai"), clock=Clock(0.0))

    def no_row(s: Store = store.store) -> None:
        with s.tx() as conn:
            conn.execute(text("SELECT 1 WHERE 1 = 0")).one()  # NoResultFound: a bug of ours

    try:
        opened = [store.queue(store.store.open_incident, f"d-{i}", None, "down", "x", AT)
                  for i in range(4)]
        bad = store.queue(no_row)
        opened += [store.queue(store.store.open_incident, f"d-{i}", None, "down", "x", AT)
                   for i in range(4, 8)]
        assert await store.drain(60)
        assert bad.exception() is not None and store.write_retries == 0
        assert store.writes == {"ok": 8, "failed": 1}
        ids = dict(_rows(store.store, "SELECT device_id, id FROM incidents"))
        assert [f.result() for f in opened] == [ids[f"d-{i}"] for i in range(8)]
        # Then batches again.
        more = [store.queue(store.store.open_incident, f"e-{i}", None, "down", "x", AT)
                for i in range(5)]
        batches = store.batches
        assert await store.drain(60) and store.batches == batches + 1
        assert all(f.result() for f in more)
    finally:
        await store.aclose()


async def test_a_switch_failure_through_the_pipeline_is_one_batch_with_every_id_right(
        url: str) -> None:
    """As found: a floor switch fails and its 50 devices go unreachable in one sweep; each
    transition queues its incident's opening. They land in a few commits, and each incident id
    the pipeline keeps (alerts carry it, its close and ticket use it) is the committed row's."""
    from monitor.inventory.load import parse_inventory
    from monitor.pipeline import Pipeline
    from monitor.state import DeviceStatus
    from tests.agents.daemon import node, small_inventory
    from tests.test_pipeline import FAIL, OK, Recorder, check

    kids = [f"kiosk-{i:02d}" for i in range(SWITCH_CHILDREN)]
    inv = parse_inventory(small_inventory(
        [node("sw-1f", "127.30.0.1"),
         *[node(k, f"127.30.1.{i + 1}", parent="sw-1f") for i, k in enumerate(kids)]]))
    clock = Clock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC).timestamp())
    store = AsyncStore(Store(url, timezone="Asia/Shanghai"), clock=Clock(0.0))
    p = Pipeline(inv, store=store, alerts=Recorder(), clock=clock)
    commits = commits_of(store.store)
    try:
        for dev in ["sw-1f", *kids]:
            await p.handle(check(inv, dev, "ping"), OK)
        for _ in range(2):  # the failure threshold
            clock.now += 1
            await p.handle(check(inv, "sw-1f", "ping"), FAIL)
        assert await store.drain(60)
        before = len(commits)
        for _ in range(2):  # one sweep after another: every child fails
            clock.now += 1
            for dev in kids:
                await p.handle(check(inv, dev, "ping"), FAIL)
        assert {p.state.status(k) for k in kids} == {DeviceStatus.UNREACHABLE}
        assert await store.drain(60)
        assert len(commits) - before <= 3, len(commits) - before  # was 50: one per incident
        rows = {i.device_id: i.id for i in await store.open_incidents()}
        assert sorted(rows) == sorted(["sw-1f", *kids])
        assert {d: p.incidents[d].id for d in rows} == rows
    finally:
        await store.aclose()


def test_a_savepoint_inside_a_write_inside_a_batch_still_catches_its_own_conflict(
        store: Store) -> None:
    """open_incident, enqueue and auto_ticket catch an IntegrityError of their own
    ``begin_nested()``: inside a batch that savepoint is one level deeper, and must still
    leave the write (and the batch) going."""
    def write() -> str:
        with store.tx() as conn:
            conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('n', '1')"))
            try:
                with conn.begin_nested():
                    conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('n', '2')"))
            except IntegrityError:
                pass
            conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('m', '3')"))
        return "done"

    with store.batch():
        inc = store.open_incident("d", None, "down", "x", AT)
        assert write() == "done"
        assert store.enqueue("k", "c", {}, AT) is True
        assert store.enqueue("k", "c", {}, AT) is False
        assert [i.id for i in store.open_incidents()] == [inc]  # read in the batch: seen
    assert sorted(_rows(store, "SELECT key, value FROM store_meta WHERE key IN ('n', 'm')")) \
        == [("m", "3"), ("n", "1")]
    assert [i.id for i in store.open_incidents()] == [inc]


class Gate:
    """A queued write that, on its first try only, calls ``trip`` (which makes the batch fail
    the way the database does), recording every try and undoing its in-memory effect when the
    batch is rolled back (``Store.on_rollback``), as the pipeline does with incident ids."""

    def __init__(self, store: Store, trip: Callable[[], None]) -> None:
        self.store, self.trip, self.tries = store, trip, 0
        self.held: list[int] = []

    def __call__(self) -> int:
        self.tries += 1
        got = self.store.open_incident("gate", None, "down", "x", AT)
        self.held.append(got)
        self.store.on_rollback(self.held.pop)
        if self.tries == 1:
            self.trip()
        return got


async def test_a_lock_mid_batch_on_sqlite_retries_the_whole_batch_nothing_lost_or_doubled(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hall.db'}"
    store = AsyncStore(Store(url, timezone="Asia/Shanghai", busy_timeout=0.2),
                       clock=Clock(0.0))  # stands still: batches end by count
    other = create_engine(url, connect_args={"timeout": 0.2, "isolation_level": None})

    def locked() -> None:  # another connection wants the write lock our batch holds: busy
        with other.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    gate = Gate(store.store, locked)
    try:
        opened = _switch_failure(store, 12)
        gated = store.queue(gate)
        opened += _switch_failure_more(store, 12, 24)
        assert await store.drain(60)
        assert store.retries["locked"] == 49  # the whole first batch (all 49 writes), once
        assert store.writes == {"ok": 49, "failed": 0} and gate.tries == 2
        assert gate.held == [gated.result()]  # the rolled-back try left nothing behind
        _check_burst(store.store, opened, 24)
    finally:
        other.dispose()
        await store.aclose()


def _switch_failure_more(store: AsyncStore, start: int, stop: int) -> list[asyncio.Future[Any]]:
    out: list[asyncio.Future[Any]] = []
    for i in range(start, stop):
        dev = f"kiosk-{i:02d}"
        out.append(store.queue(store.store.open_incident, dev, None, "unreachable",
                               "parent down", AT))
        store.queue(store.store.enqueue, f"{dev}/down", f"ch{i % 3}", {"device": dev, "n": i})
    return out




async def test_postgresql_stopped_mid_batch_retries_the_whole_batch_nothing_lost_or_doubled(
        own_pg: PostgresServer) -> None:
    store = AsyncStore(Store(own_pg.new_database(), timezone="Asia/Shanghai"),
                       clock=Clock(0.0))  # stands still: batches end by count
    reached, go = threading.Event(), threading.Event()

    def server_goes_away() -> None:  # the test stops the server while this write waits
        reached.set()
        assert go.wait(120)
        with store.store.tx() as conn:
            conn.execute(text("SELECT 1"))

    gate = Gate(store.store, server_goes_away)
    try:
        opened = _switch_failure(store, 12)
        gated = store.queue(gate)
        opened += _switch_failure_more(store, 12, 24)
        await eventually("the batch half-way", reached.is_set)
        with own_pg.stopped():
            go.set()
            await eventually("a retry while the server is away",
                              lambda: store.retries["connection"] >= 2 * 49)
            assert not gated.done() and not any(f.done() for f in opened)
        assert await store.drain(120)
        assert store.retries["connection"] % 49 == 0 and store.retries["locked"] == 0
        assert store.writes == {"ok": 49, "failed": 0} and gate.tries >= 2
        assert gate.held == [gated.result()]
        _check_burst(store.store, opened, 24)
    finally:
        await store.aclose()
