"""Store on a SQLite file and on a real PostgreSQL server: incidents, tickets, windows, outbox."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from monitor.store import (
    AsyncStore,
    InvalidTransition,
    InvalidValue,
    NewTicket,
    NotFound,
    Store,
    StoreError,
    TimezoneMismatch,
    schema,
)
from monitor.store.migrations import LATEST

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)




def fault(**kw: object) -> NewTicket:
    base: dict[str, object] = {"category": "fault", "summary": "kiosk screen black",
                               "reporter": "li", "device_id": "kiosk-1f-03",
                               "device_class": "kiosk", "floor": "1", "owner": "不动产中心"}
    base.update(kw)
    return NewTicket(**base)  # type: ignore[arg-type]


def test_migrations_are_versioned_and_idempotent(url: str) -> None:
    Store(url).close()
    s = Store(url)
    with s.read() as conn:
        versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
    assert versions == list(range(1, LATEST + 1))
    s.close()


def test_timezone_is_remembered_and_never_changed_silently(url: str) -> None:
    s = Store(url, timezone="UTC")
    t = s.create_ticket(fault(), at=datetime(2025, 3, 1, 20, 0, tzinfo=UTC))  # 04:00 next day CST
    s.close()
    s = Store(url)
    assert s.tz.key == "UTC"
    s.close()
    with pytest.raises(TimezoneMismatch, match="in site time UTC, not Asia/Shanghai"):
        Store(url, timezone="Asia/Shanghai")  # a store holding rows: refused, not relocalised
    s = Store(url, timezone="Asia/Shanghai", change_timezone=True)  # the site really moved
    with s.read() as conn:
        day = conn.execute(select(schema.tickets.c.local_day)
                           .where(schema.tickets.c.id == t.id)).scalar_one()
    assert day == 20250302
    s.close()
    with pytest.raises(InvalidValue, match="unknown timezone"):
        Store(url, timezone="Mars/Olympus")


def test_incidents_open_idempotent_close_and_query(store: Store) -> None:
    a = store.open_incident("sw-2f", None, "down", "no reply", T0)
    assert store.open_incident("sw-2f", None, "down", "no reply", T0 + timedelta(minutes=1)) == a
    b = store.open_incident("sw-2f", "ifOper", "degraded", "port down", T0)
    assert b != a
    assert [i.id for i in store.open_incidents()] == [a, b]
    store.close_incident(a, T0 + timedelta(hours=1))
    store.close_incident(a, T0 + timedelta(hours=2))  # keeps the first end
    [closed] = [i for i in store.incidents("sw-2f") if i.id == a]
    assert closed.ended_at == T0 + timedelta(hours=1) and closed.started_at.tzinfo is not None
    # a new outage after the close is a new incident
    assert store.open_incident("sw-2f", None, "down", "x", T0 + timedelta(hours=3)) not in (a, b)
    assert store.incidents(since=T0 + timedelta(hours=2), device_id="sw-2f")[-1].id == b
    with pytest.raises(NotFound):
        store.close_incident(9999, T0)
    with pytest.raises(InvalidValue):
        store.open_incident("x", None, "sideways", "", T0)


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="timezone-aware"):
        store.open_incident("x", None, "down", "", datetime(2025, 1, 1))


def test_ticket_lifecycle_and_audit_trail(store: Store) -> None:
    t = store.create_ticket(fault(), at=T0)
    assert (t.status, t.source, t.opened_at) == ("open", "manual", T0)
    t = store.update_ticket(t.id, "wang", {"assignee": "zhang"}, at=T0 + timedelta(minutes=1))
    t = store.transition(t.id, "in_progress", "zhang", at=T0 + timedelta(minutes=5))
    assert t.started_at == T0 + timedelta(minutes=5)
    assert store.devices_in_progress() == {"kiosk-1f-03"}
    store.comment(t.id, "zhang", "replaced the HDMI cable")
    with pytest.raises(InvalidTransition, match="cannot move to closed"):
        store.transition(t.id, "closed", "zhang")
    t = store.transition(t.id, "resolved", "zhang", resolution="cable", at=T0 + timedelta(hours=1))
    assert (t.resolution, t.resolved_at) == ("cable", T0 + timedelta(hours=1))
    t = store.transition(t.id, "closed", "wang")
    t = store.transition(t.id, "open", "li", "still black")
    assert t.resolved_at is None and t.closed_at is None
    kinds = [(e.kind, e.old, e.new) for e in store.ticket_events(t.id)]
    assert kinds == [("created", None, "open"), ("assigned", None, "zhang"),
                     ("status", "open", "in_progress"), ("comment", None, None),
                     ("status", "in_progress", "resolved"), ("status", "resolved", "closed"),
                     ("status", "closed", "open")]
    with pytest.raises(NotFound):
        store.transition(12345, "closed", "x")
    with pytest.raises(InvalidValue, match="unknown category"):
        store.create_ticket(fault(category="coffee"))
    with pytest.raises(InvalidValue, match="not editable"):
        store.update_ticket(t.id, "x", {"status": "closed"})


def test_list_filters_and_pagination(store: Store) -> None:
    for i in range(7):
        store.create_ticket(fault(category="fault" if i % 2 else "inspection"),
                            at=T0 + timedelta(hours=i))
    page, total = store.list_tickets(limit=3, category="fault")
    assert total == 3 and [t.category for t in page] == ["fault"] * 3
    page, total = store.list_tickets(limit=3, offset=6)
    assert total == 7 and len(page) == 1
    _, total = store.list_tickets(opened_from=T0 + timedelta(hours=2),
                                  opened_to=T0 + timedelta(hours=4))
    assert total == 2


def test_auto_ticket_is_idempotent_and_resolves(store: Store) -> None:
    inc = store.open_incident("sw-2f", None, "down", "no reply", T0)
    t1, created = store.auto_ticket(f"incident:{inc}", fault(incident_id=inc), at=T0)
    t2, again = store.auto_ticket(f"incident:{inc}", fault(incident_id=inc), at=T0)
    assert created and not again and t1.id == t2.id and t1.source == "auto"
    t = store.resolve_auto_ticket(f"incident:{inc}", "recovered after 12 min", at=T0)
    assert t is not None and t.status == "resolved"
    assert store.resolve_auto_ticket(f"incident:{inc}", "again") is None


def test_auto_ticket_race_between_two_stores(url: str) -> None:
    """Two pollers (two engines) racing on one database open one ticket."""
    stores = [Store(url), Store(url)]
    barrier = threading.Barrier(2)
    results: list[int] = []

    incidents: list[int] = []
    enqueued: list[bool] = []

    def worker(s: Store) -> None:
        barrier.wait()
        for i in range(20):
            t, _ = s.auto_ticket(f"inc-{i}", fault(), at=T0)
            results.append(t.id)
            incidents.append(s.open_incident(f"dev-{i}", None, "down", "x", T0))
            enqueued.append(s.enqueue(f"inc-{i}/dingtalk", "dingtalk", {"i": i}, at=T0))

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert len(results) == 40 and len(set(results)) == 20
    assert len(incidents) == 40 and len(set(incidents)) == 20
    assert enqueued.count(True) == 20
    assert stores[0].list_tickets()[1] == 20
    for s in stores:
        s.close()


def test_maintenance_windows(store: Store) -> None:
    w = store.add_window("floor", "2", T0, T0 + timedelta(hours=2), "line work", "admin")
    store.add_window("device", "sw-2f", T0 + timedelta(hours=5), T0 + timedelta(hours=6), "x",
                     "admin")
    assert [x.id for x in store.active_windows(T0 + timedelta(hours=1))] == [w.id]
    assert store.active_windows(T0 + timedelta(hours=2)) == []  # end is exclusive
    assert len(store.windows(now=T0)) == 2
    store.delete_window(w.id)
    with pytest.raises(NotFound):
        store.delete_window(w.id)
    with pytest.raises(InvalidValue, match="end after"):
        store.add_window("class", "kiosk", T0, T0, "x", "admin")


def test_outbox(store: Store) -> None:
    assert store.enqueue("inc-1:dingtalk", "dingtalk", {"text": "二楼核心交换机 down"}, at=T0)
    assert not store.enqueue("inc-1:dingtalk", "dingtalk", {"text": "dup"}, at=T0)
    assert store.enqueue("inc-1:mail", "email", {"text": "x"}, at=T0 + timedelta(minutes=1))
    [first] = store.due(T0)
    assert first.payload == {"text": "二楼核心交换机 down"} and first.status == "pending"
    store.mark_failed(first.id, "HTTP 500", T0 + timedelta(minutes=5))
    assert [i.key for i in store.due(T0 + timedelta(minutes=2))] == ["inc-1:mail"]
    item = store.outbox_item(first.id)
    assert (item.attempts, item.last_error) == (1, "HTTP 500")
    store.mark_sent(first.id, T0 + timedelta(minutes=6))
    second = store.due(T0 + timedelta(minutes=2))[0]
    store.mark_failed(second.id, "bad", T0, dead=True)
    assert store.outbox_counts() == {"pending": 0, "sent": 1, "dead": 1}


def test_ticket_counts(store: Store) -> None:
    t = store.create_ticket(fault())
    store.create_ticket(fault(category="line"))
    store.transition(t.id, "resolved", "x")
    counts = store.ticket_counts()
    assert counts["open"]["line"] == 1 and counts["open"]["fault"] == 0
    assert counts["total"]["fault"] == 1 and counts["total"]["other"] == 0


async def test_async_store_runs_off_the_loop(url: str) -> None:
    s = AsyncStore(Store(url))
    loop_thread = threading.get_ident()
    seen: list[int] = []
    inc = await s.open_incident("d", None, "down", "c", T0)
    await s.run(lambda: seen.append(threading.get_ident()))
    assert seen and seen[0] != loop_thread
    results = await asyncio.gather(*(s.enqueue(f"k{i}", "c", {"i": i}) for i in range(10)))
    assert all(results) and (await s.outbox_counts())["pending"] == 10
    assert [i.id for i in await s.open_incidents()] == [inc]
    await s.aclose()


def test_tally_on_both_backends(store: Store) -> None:
    from datetime import date

    from monitor.tally import tally

    for h in (0, 20, 40):  # 2025-03-01 02:00Z + h hours, Shanghai days 03-01, 03-02, 03-03
        store.create_ticket(fault(category="line" if h else "fault"), at=T0 + timedelta(hours=h))
    lo, hi = date(2025, 1, 1), date(2025, 12, 31)
    assert [(r.period, r.count) for r in tally(store, "day", lo, hi)] == [
        ("2025-03-01", 1), ("2025-03-02", 1), ("2025-03-03", 1)]
    assert [(r.period, r.group, r.count) for r in tally(store, "quarter", lo, hi, "category")] == [
        ("2025-Q1", "fault", 1), ("2025-Q1", "line", 2)]
    assert [(r.period, r.count) for r in tally(store, "week", lo, hi)] == [
        ("2025-W09", 2), ("2025-W10", 1)]


def test_repr_hides_the_url(url: str) -> None:
    s = Store(url.replace("postgres@", "postgres:hunter2@"))
    assert "hunter2" not in repr(s) and "hunter2" not in repr(AsyncStore(s))
    s.close()


def test_sqlite_online_backup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Store(f"sqlite:///{tmp_path / 'live.db'}")
    s.create_ticket(fault())
    s.backup(str(tmp_path / "copy.db"))
    s.close()
    copy = Store(f"sqlite:///{tmp_path / 'copy.db'}")
    assert copy.list_tickets()[1] == 1
    copy.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/not/a/url", "storage URL: <unparsable URL>"),
        ("sqlite:////proc/no-such-dir/hallmon.db", "cannot open the store sqlite:////proc/"),
        ("postgresql://hallmon:hunter2@127.0.0.1:1/hallmon", "postgresql://hallmon:***@"),
    ],
)
def test_a_bad_storage_url_is_a_store_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StoreError) as err:
        Store(url)
    assert message in str(err.value)
    assert "hunter2" not in str(err.value)


def test_a_store_created_without_a_zone_takes_the_sites_later(url: str) -> None:
    """Issue 10.10: a store first created by the CLI (no zone) must not pin UTC for good."""
    s = Store(url)
    assert s.tz.key == "UTC" and not s.timezone_recorded
    t = s.create_ticket(fault(), at=datetime(2025, 3, 1, 20, 0, tzinfo=UTC))
    s.close()
    s = Store(url, timezone="Asia/Shanghai")  # the daemon, with the inventory's zone
    assert s.tz.key == "Asia/Shanghai" and s.timezone_recorded
    with s.read() as conn:
        day = conn.execute(select(schema.tickets.c.local_day)
                           .where(schema.tickets.c.id == t.id)).scalar_one()
    assert day == 20250302
    s.close()
    s = Store(url)
    assert s.tz.key == "Asia/Shanghai"
    s.close()


def test_a_database_from_a_newer_hallmon_is_a_store_error(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """docs/operations.md: a database written by a newer hallmon is refused at start. Found
    walking it: refused with a RuntimeError traceback (`hallmon tickets list`, and the daemon,
    whose start catches StoreError only); now a StoreError, printed as one line."""
    from monitor.cli import main

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    s = Store(url)
    with s.tx() as conn:
        conn.execute(schema.schema_version.insert().values(version=LATEST + 1,
                                                           applied_at=datetime.now(UTC)))
    s.close()
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} is newer than this"):
        Store(url)
    assert main(["tickets", "list", "--db", url]) == 2
    assert capsys.readouterr().err.startswith(
        f"hallmon: database schema version {LATEST + 1} is newer than this hallmon")
