"""The store's side of pollers sharing one database (issue 17): leases at the database's clock,
outbox rows claimed once, one open incident per device on PostgreSQL (the loser adopts)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from monitor.store import Store

T0 = datetime(2025, 6, 2, 1, 0, tzinfo=UTC)


def test_leases_live_expire_and_leave(store: Store) -> None:
    assert store.heartbeat("a", 30).live == ("a",)
    assert store.heartbeat("b", 0.2).live == ("a", "b")
    time.sleep(0.5)  # b's lease runs out (no heartbeat)
    m = store.heartbeat("a", 30)
    assert m.live == ("a",)
    assert {p.id for p in m.pollers} == {"a", "b"}  # b stays visible as expired
    (b,) = [p for p in m.pollers if p.id == "b"]
    assert b.expires_at < m.now
    assert store.heartbeat("b", 30).live == ("a", "b")  # b is back
    store.leave("a")  # a clean stop: gone at once
    assert store.membership().live == ("b",)
    assert [p.id for p in store.membership().pollers] == ["b"]


def test_leases_follow_the_database_clock_not_the_pollers(pg_server) -> None:  # type: ignore[no-untyped-def]
    """Two pollers whose machine clocks are an hour apart still see each other live."""
    url = pg_server.new_database()
    early = Store(url, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    late = Store(url, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    try:
        early.heartbeat("early", 30)
        assert late.heartbeat("late", 30).live == ("early", "late")
        assert early.heartbeat("early", 30).live == ("early", "late")
    finally:
        early.close()
        late.close()


def test_outbox_rows_are_claimed_once_across_pollers(url: str) -> None:
    """As found: both delivery workers took the same outbox row (a page sent twice)."""
    a, b = Store(url), Store(url)
    try:
        for s in (a, b):
            s.outbox_claim_seconds = 60
        for i in range(40):
            assert a.enqueue(f"k{i}", "hook", {"n": i}, at=T0)
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda s: s.due(T0 + timedelta(seconds=1), 30), [a, b, a, b]))
        keys = [i.key for batch in got for i in batch]
        # Each row once, and per channel in order (issue 10.4): while one poller holds the
        # channel's head, the others wait behind it rather than send what comes after it.
        assert keys == [f"k{i}" for i in range(30)]
        # A claim ends when the row is marked; a failed row is due again at its retry.
        first = next(batch for batch in got if batch)[0]
        a.mark_failed(first.id, "HTTP 503", T0 + timedelta(seconds=2))
        assert [i.key for i in b.due(T0 + timedelta(seconds=3))] == [first.key]
        # A poller that died holding rows: they come back when the claim runs out (b's claim
        # of the head, taken at +3 s, runs to +63 s; the rest ran out at +61 s).
        assert b.due(T0 + timedelta(seconds=30)) == []
        assert [i.key for i in b.due(T0 + timedelta(seconds=64))] == [
            f"k{i}" for i in range(40)]
    finally:
        a.close()
        b.close()


def test_two_pollers_opening_an_incident_for_one_device_share_one(pg_server) -> None:  # type: ignore[no-untyped-def]
    """During a hand-over both pollers may see the camera fail: one open incident, adopted."""
    url = pg_server.new_database()
    a, b = Store(url), Store(url)
    try:
        first = a.open_incident("cam-1f-01", "ping", "down", "no reply", T0)
        assert b.open_incident("cam-1f-01", "rtsp", "degraded", "refused", T0) == first
        assert [i.id for i in b.open_incidents()] == [first]
        a.close_incident(first, T0 + timedelta(minutes=5))
        assert b.open_incident("cam-1f-01", "rtsp", "degraded", "x", T0) != first
    finally:
        a.close()
        b.close()


def test_the_migration_closes_duplicate_open_incidents(pg_server) -> None:  # type: ignore[no-untyped-def]
    """Stores that ran two pollers before this version hold duplicates: the newest stays open."""
    import sqlalchemy as sa

    from monitor.store import migrations

    n = 3
    url = pg_server.new_database()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            migrations.current_version(conn)
            migrations._v1_initial(conn)
            conn.execute(sa.text("INSERT INTO schema_version VALUES (1, now())"))
            for i in range(n):
                conn.execute(sa.text(
                    "INSERT INTO incidents (device_id, \"check\", status, cause, started_at, "
                    "open_key) VALUES ('cam', 'ping', 'down', '', now(), :k)"), {"k": f"k{i}"})
        s = Store(url)
        try:
            assert [i.id for i in s.open_incidents()] == [n]
        finally:
            s.close()
    finally:
        engine.dispose()


def test_pollers_starting_together_on_a_fresh_database_all_open_it(pg_server) -> None:  # type: ignore[no-untyped-def]
    """As found with three pollers started at once: two inserted the site's timezone at the
    same moment and one exited (UniqueViolation on store_meta)."""
    url = pg_server.new_database()
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store(url, timezone="Asia/Shanghai"), range(4)))
    try:
        assert {str(s.tz) for s in stores} == {"Asia/Shanghai"}
    finally:
        for s in stores:
            s.close()
