"""Issue 10, point 3: pages never depend on a store write, and a long ticket import holds the
SQLite write lock only briefly.

Real SQLite files; the lock is held by a real second connection (as ``hallmon tickets import``
in another process held it for ~51 s before the import was staged).
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from monitor.pipeline import Pipeline
from monitor.state import DeviceStatus
from monitor.store import AsyncStore, InvalidValue, NewTicket, Store
from monitor.store.csvio import COLUMNS, parse_tickets_csv
from monitor.tally import tally
from tests.agents.daemon import (
    ROOT,
    HallmonProcess,
    WebhookReceiver,
    node,
    small_inventory,
    write_atomically,
)
from tests.agents.postgres import PostgresServer
from tests.agents.proc import eventually
from tests.conftest import Clock
from tests.test_alerts_restart import _notifications, _story
from tests.test_daemon import _rows
from tests.test_pipeline import FAIL, OK, Recorder, check, inventory

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC).timestamp()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[Path, AsyncStore]]:
    path = tmp_path / "hall.db"
    # A short busy timeout: the write fails (as after 30 s behind a long import) within the test.
    store = AsyncStore(Store(f"sqlite:///{path}", timezone="Asia/Shanghai", busy_timeout=0.2))
    yield path, store
    await store.aclose()



async def test_an_outage_while_another_process_holds_the_write_lock_is_paged_then_recorded(
    db: tuple[Path, AsyncStore],
) -> None:
    path, store = db
    inv, clock, alerts = inventory(), Clock(T0), Recorder()
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock)

    async def feed(device: str, result: object, times: int) -> None:
        for _ in range(times):
            clock.now += 30
            await p.handle(check(inv, device, "ping"), result)  # type: ignore[arg-type]

    for dev in ("sw-1f-a", "kiosk-1f-01", "cam-1f-01", "prn-1f-01"):
        await feed(dev, OK, 1)
    await store.drain()

    with closing(sqlite3.connect(path, isolation_level=None)) as importer:
        importer.execute("BEGIN IMMEDIATE")  # the other process' write lock
        await feed("sw-1f-a", FAIL, 3)
        down_at = clock.now  # the third failure makes it hard down
        # Paged at once, while every write of it waits behind the lock.
        assert alerts.statuses() == [("sw-1f-a", "down")]
        await feed("sw-1f-a", OK, 2)
        assert alerts.statuses()[-1] == ("sw-1f-a", "up")
        assert p.state.status("sw-1f-a") is DeviceStatus.UP
        await eventually("a failed and retried write", lambda: store.write_retries >= 2)
        assert store.queued_writes == 3  # open, close, resolve its ticket: none written yet
        importer.execute("COMMIT")

    assert await store.drain(20)
    rows = await store.incidents(device_id="sw-1f-a")
    assert [(i.status, i.started_at.timestamp(), i.ended_at and i.ended_at.timestamp())
            for i in rows] == [("down", down_at, clock.now)]
    assert await store.open_incidents() == []  # every close landed after its open


# ---- the staged import -------------------------------------------------------------------------


def write_log(path: Path, rows: int) -> None:
    """``rows`` closed jobs of 2025 in site-local time, as a paper log's CSV."""
    start = datetime(2025, 1, 1, 8, 30)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(rows):
            opened = start + timedelta(minutes=(i * 7919) % (365 * 24 * 60))
            done = opened + timedelta(hours=i % 29 + 1)
            w.writerow([opened.isoformat(sep=" "), CATS[i % len(CATS)], f"job {i}", "王",
                        f"dev-{i % 400}", ["kiosk", "camera", "line"][i % 3], str(i % 4 + 1),
                        "政务中心", ["张", "李", "刘"][i % 3], "closed",
                        done.isoformat(sep=" "), done.isoformat(sep=" "), "done"])


CATS = ["fault", "preventive", "line", "enrolment", "installation", "relocation", "inspection",
        "other"]


def test_staged_import_is_all_or_nothing_and_keeps_ids_events_and_tally(
    url: str, tmp_path: Path
) -> None:
    store = Store(url, timezone="Asia/Shanghai")
    try:
        first = store.create_ticket(NewTicket(category="fault", summary="before", reporter="x"))
        log = tmp_path / "log.csv"
        write_log(log, 300)
        rows = parse_tickets_csv(log.read_bytes(), store.tz, store.categories)
        ids = store.import_tickets(rows, actor="老王")
        assert ids == list(range(first.id + 1, first.id + 301))
        assert store.last_import_lock_seconds is not None
        t = store.get_ticket(ids[7])
        assert (t.summary, t.status, t.source, t.category) == ("job 7", "closed", "import",
                                                              CATS[7])
        [created] = store.ticket_events(ids[7])
        assert (created.actor, created.kind, created.new, created.note, created.at) == (
            "老王", "created", "closed", "imported", t.opened_at)
        after = store.create_ticket(NewTicket(category="fault", summary="after", reporter="x"))
        assert after.id == ids[-1] + 1  # PostgreSQL's sequence moved past the explicit ids
        by_cat = tally(store, "year", date(2025, 1, 1), date(2025, 12, 31), "category")
        assert sum(r.count for r in by_cat) == 300 and {r.group for r in by_cat} == set(CATS)
        # A refused row: nothing of the file is kept.
        bad = [*rows[:5], replace(rows[5], category="nope")]
        with pytest.raises(InvalidValue):
            store.import_tickets(bad)
        assert store.list_tickets(limit=1000)[1] == 302
    finally:
        store.close()


def test_an_outage_during_a_150k_row_import_into_the_daemons_store_is_recorded_and_paged(
    tmp_path: Path,
) -> None:
    """As found: ``hallmon tickets import`` of a 150k-row log into the running daemon's SQLite
    file while a switch goes down. The import is a real second process; so is the daemon."""
    log = tmp_path / "log.csv"
    write_log(log, 150_000)
    devices = [node("sw-1", "127.30.0.1"), node("pc-1", "127.30.1.1", parent="sw-1")]
    inv = small_inventory(devices, notifications=_notifications("1s"),
                          faults=[{"device": "sw-1", "mode": "down", "at": 0,
                                   "duration": "30s"}])
    with WebhookReceiver() as hook, HallmonProcess(
        tmp_path / "hall", inv, env={"HALLMON_TEST_WEBHOOK": hook.url}, autostart=False
    ) as d:
        d.storage.mkdir(parents=True, exist_ok=True)
        started = time.time()
        importer = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "tickets", "import", str(log),
             f"--db=sqlite:///{d.db}", "--timezone=Asia/Shanghai", "--as=老王"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            d.start()
            out, _ = importer.communicate(timeout=300)
        finally:
            if importer.poll() is None:
                importer.kill()
        finished = time.time()
        text = out.decode()
        assert importer.returncode == 0 and "imported 150000 tickets" in text, text
        lock = float(text.rsplit("write lock held ", 1)[1].split(" s")[0])

        d.wait_for(lambda: "resolved" in _story(hook.bodies(), "sw-1"), 60,
                   "the switch's recovery at the capture server")
        assert _story(hook.bodies(), "sw-1") == ["firing", "resolved"], hook.bodies()
        rows = _rows(d.db, "SELECT started_at, ended_at FROM incidents WHERE device_id = ?",
                     "sw-1")
        assert len(rows) == 1 and rows[0][1] is not None, rows
        begun = datetime.fromisoformat(rows[0][0]).replace(tzinfo=UTC).timestamp()
        assert started < begun < finished, "the outage did not overlap the import"
        assert _rows(d.db, "SELECT count(*) FROM tickets WHERE source = 'import'") == [
            (150_000,)]
        print(f"150k-row import: write lock held {lock:.2f} s")


def test_the_engine_state_lands_with_its_messages_one_per_poller(store: Store) -> None:
    a, b = "engine/shard-0-of-2", "engine/shard-1-of-2"
    assert store.alert_state(a) is None
    assert store.commit([("k1/dt", "dt", {"n": 1}), ("k2/dt", "dt", {"n": 2})], '{"s": 1}', a) == 2
    assert store.commit([("k3/dt", "dt", {"n": 3})], '{"s": "b"}', b) == 1
    assert store.commit([("k1/dt", "dt", {"n": 1})], '{"s": 2}', a) == 0  # a retried write
    assert (store.alert_state(a), store.alert_state(b)) == ('{"s": 2}', '{"s": "b"}')
    assert [i.key for i in store.due(datetime.now(UTC))] == ["k1/dt", "k2/dt", "k3/dt"]


# ---- what an operator sees of the write queue (hallmon_store_write_*) ---------------------------


async def test_the_write_queue_counts_what_waits_how_long_and_why(tmp_path: Path) -> None:
    path = tmp_path / "hall.db"
    clock = Clock(100.0)
    store = AsyncStore(Store(f"sqlite:///{path}", timezone="Asia/Shanghai", busy_timeout=0.2),
                       clock=clock)
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    try:
        assert (store.queued_writes, store.oldest_write_age()) == (0, 0.0)
        with closing(sqlite3.connect(path, isolation_level=None)) as importer:
            importer.execute("BEGIN IMMEDIATE")  # another process' write lock
            store.queue(store.store.open_incident, "sw-1f-a", "ping", "down", "no reply", at)
            clock.now += 30
            store.queue(store.store.open_incident, "sw-2f-a", "ping", "down", "no reply", at)
            await eventually("retries behind the lock", lambda: store.retries["locked"] >= 2)
            assert store.queued_writes == 2
            assert store.oldest_write_age() == 30.0  # the first one's, not the last one's
            clock.now += 15
            assert store.oldest_write_age() == 45.0
            assert store.writes == {"ok": 0, "failed": 0}
            importer.execute("COMMIT")
        assert await store.drain(20)
        assert (store.queued_writes, store.oldest_write_age()) == (0, 0.0)
        assert store.writes == {"ok": 2, "failed": 0}
        assert store.retries["connection"] == store.retries["other"] == 0
        # A write no retry can help (a bug, a refused value) is dropped and counted as failed.
        store.queue(store.store.close_incident, 999_999, "not a datetime")  # type: ignore[arg-type]
        assert await store.drain(20)
        assert store.writes["failed"] == 1 and store.write_retries == store.retries["locked"]
        assert len(await store.incidents()) == 2
    finally:
        await store.aclose()


def test_retry_kinds_of_real_postgresql_errors(pg_server: PostgresServer) -> None:
    import sqlalchemy
    from sqlalchemy import text

    from monitor.store.aio import retry_kind
    from tests.agents.proc import free_port

    engine = sqlalchemy.create_engine(pg_server.new_database())
    try:
        with engine.connect() as holder, engine.connect() as waiter:
            holder.execute(text("CREATE TABLE t (a text PRIMARY KEY)"))
            holder.execute(text("INSERT INTO t VALUES ('locked')"))
            holder.commit()
            # Another transaction holds the table: the lock wait runs out (55P03).
            holder.execute(text("LOCK TABLE t IN ACCESS EXCLUSIVE MODE"))
            waiter.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(sqlalchemy.exc.DBAPIError) as waited:
                waiter.execute(text("INSERT INTO t VALUES ('x')"))
            waiter.rollback()
            holder.rollback()
            # A refused value is no lock, whatever its message says ("... (a)=(locked) ...").
            with pytest.raises(sqlalchemy.exc.DBAPIError) as refused_value:
                waiter.execute(text("INSERT INTO t VALUES ('locked')"))
            waiter.rollback()
    finally:
        engine.dispose()
    assert retry_kind(waited.value) == "locked"
    assert retry_kind(refused_value.value) == "other"
    # Nothing listens on that port: psycopg is refused before any server speaks (no sqlstate).
    away = sqlalchemy.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=5")
    try:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as refused:
            away.connect()
    finally:
        away.dispose()
    assert retry_kind(refused.value) == "connection"


# ---- as an operator finds it: the daemon's database goes away while devices go down -------------

BACKLOG_DEVICES = [node(f"n-{i}", f"127.30.0.{i + 1}") for i in range(6)]
OUTAGES = 4  # n-0 .. n-3 go down (one after the other) while the database takes no writes
WRITES = 3 * OUTAGES  # each: open its incident, close it, resolve its automatic ticket (if any)
FAULTS = [{"device": f"n-{i}", "mode": "down", "at": f"{i}s" if i else 0, "duration": "4s"}
          for i in range(OUTAGES)]


def _store_samples(d: HallmonProcess) -> dict[str, float]:
    """The hallmon_store_* samples of one scrape, ``name`` or ``name{label}`` -> value; and
    ``up`` -> how many devices are up."""
    out: dict[str, float] = {}
    got = d.samples()
    for name, rows in got.items():
        if name.startswith("hallmon_store_"):
            for labels, value in rows:
                out[name + "".join(f"{{{v}}}" for v in labels.values())] = value
    out["up"] = sum(v for labels, v in got["hallmon_device_status"] if labels["status"] == "up")
    return out


def _outages_while_the_database_takes_no_writes(
    d: HallmonProcess, no_writes: AbstractContextManager[object], kind: str, within: float,
    *, again: bool
) -> None:
    """Scripted outages while ``no_writes`` holds: /metrics shows every write queued, retries
    of ``kind`` counting (``again``: wait for one more) and the oldest aging; after it, the
    queue drains to 0 and every write landed. ``within``: how long one failed try may take (a
    lock wait: the busy timeout)."""
    # All up, and the writes of coming up landed: the first cycle's status changes (recorded
    # for peers on a shared site) pass through the same queue and may still wait a moment.
    before = d.wait_for(
        lambda: (s := _store_samples(d))["up"] == len(BACKLOG_DEVICES)
        and s["hallmon_store_write_queue"] == 0
        and s["hallmon_store_write_oldest_seconds"] == 0 and s, 30, "all up, every write landed")
    retries = f"hallmon_store_write_retries_total{{{kind}}}"
    with no_writes:
        # The outages start now: the mock's script counts from the reload.
        write_atomically(d.inventory, small_inventory(BACKLOG_DEVICES, faults=FAULTS))
        assert d.http.post("/-/reload").status_code == 200, d.log_tail()
        # Every outage queued its writes, none of them landed, and they are being retried.
        backlog = d.wait_for(
            lambda: (s := _store_samples(d))["hallmon_store_write_queue"] >= WRITES
            and s["up"] == len(BACKLOG_DEVICES) and s[retries] >= 1 and s,
            60 + within, "the outages, queued and retried")
        # (More than WRITES when other writes queue too: pollers sharing a site record status
        # changes through the same queue.)
        waiting = backlog["hallmon_store_write_queue"]
        assert backlog["hallmon_store_writes_total{ok}"] == before[
            "hallmon_store_writes_total{ok}"]
        first_age = backlog["hallmon_store_write_oldest_seconds"]
        assert first_age > 0
        # Still retrying, and the oldest write keeps aging.
        later = d.wait_for(
            lambda: (s := _store_samples(d))["hallmon_store_write_oldest_seconds"] > first_age
            and (s[retries] > backlog[retries] or not again) and s, 30, "another retry")
        assert later["hallmon_store_write_queue"] >= waiting  # nothing landed, nothing lost
        others = [k for k in ("locked", "connection", "other") if k != kind]
        assert [later[f"hallmon_store_write_retries_total{{{k}}}"] for k in others] == [0, 0]
    # The database takes writes again: the queue drains to 0 and every write lands.
    after = d.wait_for(
        lambda: (s := _store_samples(d))["hallmon_store_write_queue"] == 0 and s, 60 + within,
        "the queue drained")
    assert after["hallmon_store_write_oldest_seconds"] == 0
    assert after["hallmon_store_writes_total{ok}"] - before[
        "hallmon_store_writes_total{ok}"] >= waiting  # every write that waited landed
    assert after["hallmon_store_writes_total{failed}"] == 0
    # Group commit: what waited landed in batches (hallmon_store_batch_writes), fewer
    # transactions than writes, every write landed counted in one of them.
    batches, writes = (after[f"hallmon_store_batch_writes_{s}"]
                       - before[f"hallmon_store_batch_writes_{s}"] for s in ("count", "sum"))
    assert 1 <= batches < writes and writes >= waiting


def _no_incident_lost(url: str) -> None:
    store = Store(url, site="*")
    try:
        rows = store.incidents()
    finally:
        store.close()
    # One DOWN per scripted outage, each closed, none for the others.
    assert sorted((i.device_id, i.status, i.ended_at is not None) for i in rows) == [
        (f"n-{i}", "down", True) for i in range(OUTAGES)]




@pytest.mark.slow
def test_metrics_show_writes_queued_while_postgresql_is_stopped_and_none_is_lost(
    tmp_path: Path, own_pg: PostgresServer
) -> None:
    url = own_pg.new_database()
    # A lease longer than the outage: this poller keeps its devices throughout (HA is on by
    # default on PostgreSQL; its own heartbeats fail meanwhile, and are logged).
    with HallmonProcess(tmp_path / "d", small_inventory(BACKLOG_DEVICES),
                        args=(f"--storage.url={url}", "--ha.lease=120",
                              "--ha.heartbeat=5")) as d:
        _outages_while_the_database_takes_no_writes(d, own_pg.stopped(), "connection", 0,
                                                    again=True)
    _no_incident_lost(url)


@contextmanager
def _write_locked(db: Path) -> Iterator[None]:
    """Another process' transaction holding SQLite's write lock (as a long import did)."""
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("COMMIT")


@pytest.mark.slow
def test_metrics_show_writes_queued_while_another_process_holds_the_sqlite_lock(
    tmp_path: Path,
) -> None:
    with HallmonProcess(tmp_path / "d", small_inventory(BACKLOG_DEVICES)) as d:
        # Each try waits out SQLite's busy timeout (30 s) before it counts as a retry: one
        # is enough (the unit test above counts several with a short timeout).
        _outages_while_the_database_takes_no_writes(d, _write_locked(d.db), "locked", 35,
                                                    again=False)
        url = f"sqlite:///{d.db}"
    _no_incident_lost(url)


async def test_a_write_the_database_refuses_does_not_hold_back_the_writes_behind_it(
        tmp_path: Path, pg_server: PostgresServer) -> None:
    """Found by the store-metrics work: every database error was retried, so one write refused
    for its data (a unique key taken, a value out of range) blocked every write behind it for
    good — the daemon recorded nothing more until restarted. Such a write is dropped, logged and
    counted as failed; a lock or a lost connection is still waited out (tests above)."""
    from sqlalchemy import text

    for url in (f"sqlite:///{tmp_path / 'hall.db'}", pg_server.new_database()):
        store = AsyncStore(Store(url, timezone="Asia/Shanghai"))
        at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        try:
            def refused(store: Store = store.store) -> None:
                with store.tx() as conn:  # a key that is taken: no retry can help
                    conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('k', 'a')"))
                    conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('k', 'b')"))

            store.queue(refused)
            landed = store.queue(store.store.open_incident, "sw-1f-a", "ping", "down",
                                 "no reply", at)
            assert await store.drain(20), f"{url.split(':')[0]}: the queue is stuck behind it"
            assert landed.done() and landed.exception() is None
            assert store.writes == {"ok": 1, "failed": 1}
            assert sum(store.retries.values()) == 0
            assert [i.device_id for i in await store.incidents()] == ["sw-1f-a"]
        finally:
            await store.aclose()


def test_a_postgresql_server_that_never_answers_fails_a_connect_in_bounded_time() -> None:
    """Found chasing a stalled store thread: a PostgreSQL address that accepts the TCP
    connection but never answers (a half-dead server, a proxy with nothing behind it; a
    firewall dropping SYNs is worse) held the store thread — every queued write and the HA
    heartbeat — with no bound. The engine now sets libpq's connect_timeout (10 s) and TCP
    keepalives unless the URL sets them."""
    import socket

    import sqlalchemy

    from monitor.store.engine import PG_DEFAULTS, make_engine

    with socket.socket() as silent:  # accepts (the kernel's backlog), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for query, bound in (("", PG_DEFAULTS["connect_timeout"]), ("?connect_timeout=1", 1)):
            engine = make_engine(f"postgresql://postgres@127.0.0.1:{port}/hall{query}")
            started = time.monotonic()
            try:
                with pytest.raises(sqlalchemy.exc.OperationalError):
                    engine.connect()
            finally:
                engine.dispose()
            took = time.monotonic() - started
            assert bound - 0.5 <= took < bound + 20, (query, took)
