"""Several halls (sites) on one database (issue 17): a device id both halls use stays apart.

Reproduces the issue as found, on a real PostgreSQL: two halls with ``kiosk-1f-03`` sharing one
database mixed incidents, tickets, tallies and outbox rows; overlapping outages shared one
incident (one hall got no DOWN page, the other's ticket was resolved while its kiosk was still
down); a restart of one hall closed the other's incident and paged a recovery; any poller
delivered any hall's outbox rows. Also the migration bringing single-site stores along.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from monitor.alerts.base import DeliveryResult, Message
from monitor.alerts.delivery import Delivery
from monitor.inventory import Inventory
from monitor.pipeline import Pipeline
from monitor.state import DeviceStatus
from monitor.store import InvalidValue, NewTicket, Store, schema
from monitor.store.aio import AsyncStore
from monitor.tally import tally, tally_direct
from tests.conftest import Clock
from tests.test_pipeline import FAIL, OK, Recorder, check

T0 = 1_750_000_000.0
KIOSK = "kiosk-1f-03"


def hall(site: str) -> Inventory:
    return Inventory.model_validate({
        "site": {"id": site, "name": f"大厅 {site}", "timezone": "Asia/Shanghai"},
        "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 3,
                     "success_threshold": 2},
        "devices": [
            {"id": KIOSK, "name": "一楼自助终端3号", "class": "kiosk", "address": "127.20.1.13"},
            {"id": "prn-1f-01", "name": "一楼打印机", "class": "printer",
             "address": "127.20.1.31"},
        ],
        "tickets": {"auto": [{"classes": ["kiosk"], "when": ["down"]}]},
    }, context={"env": {}})


class Hall:
    """One hall's daemon side: its store (opened for its site), pipeline and pages."""

    def __init__(self, url: str, site: str, clock: Clock) -> None:
        self.site, self.clock = site, clock
        self.store = AsyncStore(Store(url, timezone="Asia/Shanghai", site=site))
        self.start()

    def start(self) -> None:
        """A (re)start of the hall's daemon: a new pipeline on the same store."""
        self.pages = Recorder()
        self.pipeline = Pipeline(hall(self.site), store=self.store, alerts=self.pages,
                                 clock=self.clock)

    async def feed(self, device: str, result: object, times: int = 1) -> None:
        p = self.pipeline
        for _ in range(times):
            self.clock.now += 30
            await p.handle(check(p.inventory, device, "ping"), result)  # type: ignore[arg-type]
        for task in list(p._ticket_tasks.values()):
            await task
        await self.store.drain()

    async def tickets(self) -> list[tuple[str | None, str]]:
        page, _ = await self.store.run(self.store.store.list_tickets)
        return [(t.device_id, t.status) for t in page]


@pytest.fixture
async def halls(pg_server) -> AsyncIterator[tuple[Hall, Hall, str]]:  # type: ignore[no-untyped-def]
    url = pg_server.new_database()
    clock = Clock(T0)
    a, b = Hall(url, "hall-a", clock), Hall(url, "hall-b", clock)
    for h in (a, b):
        for dev in (KIOSK, "prn-1f-01"):
            await h.feed(dev, OK)
    yield a, b, url
    await a.store.aclose()
    await b.store.aclose()


async def test_overlapping_outages_of_one_device_id_page_and_ticket_each_hall(
    halls: tuple[Hall, Hall, str],
) -> None:
    a, b, _ = halls
    await b.feed(KIOSK, FAIL, times=3)  # hall B's kiosk goes down first
    await a.feed(KIOSK, FAIL, times=3)  # then hall A's, while B's is still down
    assert a.pages.statuses() == [(KIOSK, "down")]  # A is paged (it was not: shared incident)
    assert b.pages.statuses() == [(KIOSK, "down")]
    inc_a, inc_b = await a.store.open_incidents(), await b.store.open_incidents()
    assert [i.device_id for i in inc_a] == [KIOSK] and [i.device_id for i in inc_b] == [KIOSK]
    assert inc_a[0].id != inc_b[0].id
    assert await a.tickets() == [(KIOSK, "open")]
    assert await b.tickets() == [(KIOSK, "open")]

    await a.feed(KIOSK, OK, times=2)  # A's kiosk is back: only A's ticket and incident end
    assert a.pages.statuses() == [(KIOSK, "down"), (KIOSK, "up")]
    assert b.pages.statuses() == [(KIOSK, "down")]
    assert await a.store.open_incidents() == []
    assert [i.id for i in await b.store.open_incidents()] == [inc_b[0].id]
    assert await a.tickets() == [(KIOSK, "resolved")]
    assert await b.tickets() == [(KIOSK, "open")]  # was resolved while B's kiosk was down
    assert b.pipeline.state.status(KIOSK) is DeviceStatus.DOWN


async def test_a_restart_of_one_hall_leaves_the_other_halls_incident_alone(
    halls: tuple[Hall, Hall, str],
) -> None:
    a, b, _ = halls
    await b.feed(KIOSK, FAIL, times=3)
    (inc_b,) = await b.store.open_incidents()
    a.start()  # hall A restarts while B's kiosk is down
    assert await a.pipeline.resume() == 0  # nothing of A's is open
    assert a.pipeline.state.status(KIOSK) is not DeviceStatus.DOWN
    await a.feed(KIOSK, OK, times=3)
    assert a.pages.events == []  # no recovery for a device that was never down
    assert [i.id for i in await b.store.open_incidents()] == [inc_b.id]
    assert await b.tickets() == [(KIOSK, "open")]
    assert await a.tickets() == []


class Robot:
    """A hall's robot channel (the channel seam we own): what it was asked to send."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[str] = []

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        self.got.append(message.title)  # the hall the message is about
        return DeliveryResult.success()


def _payload(key: str, site: str) -> dict[str, object]:
    return Message(key=key, route="it", kind="notice", status="firing", title=site, text=site,
                   markdown=site, created_at="2025-06-15T00:00:00+00:00").to_payload()


@pytest.mark.parametrize("claim", [0.0, 60.0], ids=["one-poller", "ha-claims"])
async def test_each_halls_outbox_goes_to_its_own_delivery_worker(
    pg_server, claim: float,  # type: ignore[no-untyped-def]
) -> None:
    url = pg_server.new_database()
    stores = {s: Store(url, site=s) for s in ("hall-a", "hall-b")}
    try:
        key = f"down/{KIOSK}/1750000090/robot"  # the same key in both halls: both kept
        for site, st in stores.items():
            st.outbox_claim_seconds = claim
            assert st.commit([(key, "robot", _payload(key, site))], f'{{"site": "{site}"}}') == 1
            assert st.alert_state() == f'{{"site": "{site}"}}'  # one engine state per hall
        robots = {s: Robot("robot") for s in stores}
        now = datetime.now(UTC) + timedelta(seconds=1)
        async with httpx.AsyncClient() as client:
            sent = await Delivery(stores["hall-a"], {"robot": robots["hall-a"]}, client,
                                  lambda: now).run_once()
            assert sent == 1
            assert stores["hall-b"].outbox_counts() == {"pending": 1, "sent": 0, "dead": 0}
            assert await Delivery(stores["hall-b"], {"robot": robots["hall-b"]}, client,
                                  lambda: now).run_once() == 1
        assert robots["hall-a"].got == ["hall-a"]  # never the other hall's page
        assert robots["hall-b"].got == ["hall-b"]
        for st in stores.values():
            assert st.outbox_counts() == {"pending": 0, "sent": 1, "dead": 0}
            assert st.due(now) == []
    finally:
        for st in stores.values():
            st.close()


def test_pollers_of_one_hall_never_see_another_halls(pg_server) -> None:  # type: ignore[no-untyped-def]
    url = pg_server.new_database()
    a, b = Store(url, site="hall-a"), Store(url, site="hall-b")
    try:
        a.heartbeat("poller-1", 30)
        b.heartbeat("poller-1", 30)  # the same poller id in both halls: two leases
        assert b.heartbeat("poller-2", 30).live == ("poller-1", "poller-2")
        assert a.membership().live == ("poller-1",)
        a.leave("poller-1")
        assert a.membership().live == ()
        assert b.membership().live == ("poller-1", "poller-2")
    finally:
        a.close()
        b.close()


def test_tallies_per_site_and_across_sites_are_exact(url: str) -> None:
    """Per site and across sites ("*"), compared with a count of the ticket rows themselves.
    Runs on SQLite too: the same code, one file holding the sites a test puts in it."""
    at = datetime(2025, 6, 16, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Monday
    plan = {"hall-a": [("fault", "kiosk"), ("fault", "kiosk"), ("other", "printer")],
            "hall-b": [("fault", "kiosk"), ("inspection", "printer")]}
    stores = {s: Store(url, timezone="Asia/Shanghai", site=s) for s in plan}
    every = Store(url, timezone="Asia/Shanghai", site="*")
    try:
        for site, rows in plan.items():
            for i, (category, cls) in enumerate(rows):
                stores[site].create_ticket(NewTicket(
                    summary=f"{site} {i}", category=category, reporter="t", device_id=KIOSK,
                    device_class=cls), at=at + timedelta(hours=i))
        day = date(2025, 6, 16)
        totals = {s: sum(r.count for r in tally(st, "day", day, day)) for s, st in stores.items()}
        assert totals == {"hall-a": 3, "hall-b": 2}
        assert [r.count for r in tally(every, "day", day, day)] == [5]
        by_class = {(r.group, r.count) for r in tally(every, "month", day, day, "class")}
        assert by_class == {("kiosk", 3), ("printer", 2)}
        assert {(r.group, r.count) for r in tally(stores["hall-b"], "day", day, day,
                                                  "category")} == {("fault", 1), ("inspection", 1)}
        # filtered (from the folded rows, and from the tickets): per site and across
        assert [r.count for r in tally(stores["hall-a"], "day", day, day,
                                       filters={"category": "fault"})] == [2]
        assert [r.count for r in tally(every, "day", day, day,
                                       filters={"category": "fault"})] == [3]
        assert [r.count for r in tally(every, "day", day, day, "class",
                                       filters={"category": "fault"})] == [3]
        with every.read() as conn:
            for site in stores:
                assert tally_direct(conn, 20250616, 20250616, None, {}, site=site) == {
                    (20250616, None): totals[site]}
            assert tally_direct(conn, 20250616, 20250616, None, {}) == {(20250616, None): 5}
        counts = {s: st.ticket_counts()["total"] for s, st in stores.items()}
        assert counts["hall-a"]["fault"] == 2 and counts["hall-b"]["fault"] == 1
        assert every.ticket_counts()["total"]["fault"] == 3
        # a hall's ticket list and ticket ids are its own; "*" lists every hall's
        assert stores["hall-a"].list_tickets()[1] == 3
        assert every.list_tickets()[1] == 5
        assert every.sites() == stores["hall-a"].sites() == ["hall-a", "hall-b"]
        b_id = stores["hall-b"].list_tickets()[0][0].id
        with pytest.raises(Exception, match="not found"):
            stores["hall-a"].get_ticket(b_id)
        with pytest.raises(InvalidValue, match="only reads"):
            every.create_ticket(NewTicket(summary="x", category="fault", reporter="t"))
    finally:
        for st in [*stores.values(), every]:
            st.close()


def test_a_site_id_is_strict() -> None:
    with pytest.raises(InvalidValue, match="site 'Hall A'"):
        Store("sqlite://", site="Hall A")
    with pytest.raises(ValueError, match="invalid id 'Hall A'"):
        hall("Hall A")
    assert Inventory.model_validate(
        {"site": {"name": "x"}, "devices": []}, context={"env": {}}).site.id == "default"


# ---- the migration: a single-site store of schema v4 comes along -------------------------------

_OLD_UNIQUE = {("incidents", "open_key"), ("tickets", "incident_key"), ("outbox", "key")}


_AFTER_V4 = {"sites", "device_status", "trap_holds", "trap_events", "push_beats",
             "trap_relay"}  # later migrations create


def _v4_shape() -> sa.MetaData:
    """The tables as v4 left them: no site column, keys unique across the database."""
    old = sa.MetaData()
    for t in schema.metadata.sorted_tables:
        if t.name in _AFTER_V4:
            continue
        cols = []
        for c in t.columns:
            if c.name == "site":
                continue
            copy = c._copy()
            copy.unique = (t.name, c.name) in _OLD_UNIQUE or None
            cols.append(copy)
        sa.Table(t.name, old, *cols)
    return old


def test_the_migration_gives_todays_rows_the_single_site(url: str) -> None:
    from monitor.store.engine import make_engine

    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    at = datetime(2025, 6, 16, 2, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            _v4_shape().create_all(conn)
            for v in range(1, 5):
                conn.execute(schema.schema_version.insert().values(version=v, applied_at=at))
            if pg:
                conn.execute(sa.text(
                    "CREATE UNIQUE INDEX ux_incidents_device_open ON incidents (device_id) "
                    "WHERE ended_at IS NULL AND \"check\" IS NOT NULL"))
            conn.execute(sa.text(
                "INSERT INTO incidents (device_id, \"check\", status, cause, started_at, open_key)"
                f" VALUES ('{KIOSK}', 'ping', 'down', 'no reply', :at, '{KIOSK}|ping|down')"),
                {"at": at.replace(tzinfo=None)})
            conn.execute(sa.text(
                "INSERT INTO outbox (key, channel, payload, status, attempts, next_attempt_at,"
                " created_at) VALUES ('k1', 'robot', '{}', 'pending', 0, :at, :at)"),
                {"at": at.replace(tzinfo=None)})
            conn.execute(sa.text("INSERT INTO alert_state (name, value, updated_at) "
                                 "VALUES ('engine', '{\"v\": 1}', :at)"),
                         {"at": at.replace(tzinfo=None)})
    finally:
        engine.dispose()
    single = Store(url, timezone="Asia/Shanghai")  # migrates: today's rows are "default"'s
    other = Store(url, timezone="Asia/Shanghai", site="hall-b")
    try:
        single.create_ticket(NewTicket(summary="x", category="fault", reporter="t"), at=at)
        assert [i.device_id for i in single.open_incidents()] == [KIOSK]
        assert [i.key for i in single.due(at + timedelta(seconds=1))] == ["k1"]
        assert single.alert_state() == '{"v": 1}'
        assert other.open_incidents() == [] and other.due(at + timedelta(seconds=1)) == []
        assert other.alert_state() is None
        assert single.ticket_counts()["total"]["fault"] == 1
        assert other.ticket_counts()["total"]["fault"] == 0
        # the later migrations' tables came along too (sites, device_status)
        single.register_site("hall", "Asia/Shanghai", None, 1, {"devices": []})
        assert [r.id for r in other.list_sites()] == ["default"]
        other.record_statuses("p1", [(KIOSK, "up", "", at)])
        assert other.peer_view()[KIOSK].status == "up"
        assert single.peer_view()[KIOSK].status == "down"  # its open incident, from v4
        if pg:  # keys are per site now: hall B opens its own incident of the same device
            mine = other.open_incident(KIOSK, "ping", "down", "no reply", at)
            assert mine != single.open_incidents()[0].id
            assert other.enqueue("k1", "robot", {})
            assert len(other.open_incidents()) == 1
    finally:
        single.close()
        other.close()


async def test_the_tally_api_counts_this_hall_another_or_every_hall(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_api_tickets import auth_header, make_app

    db = tmp_path / "api.db"
    app = make_app(db)  # the daemon's store: the single site "default"
    other = Store(f"sqlite:///{db}", timezone="Asia/Shanghai", site="hall-b")
    at = datetime(2025, 6, 16, 2, 0, tzinfo=UTC)
    try:
        mine = app.state.store.store
        for st, n in ((mine, 2), (other, 3)):
            for i in range(n):
                st.create_ticket(NewTicket(summary=f"t{i}", category="fault", reporter="t"),
                                 at=at)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hall") as client:
            async def total(**site: str) -> object:
                r = await client.get("/api/v1/tickets/tally", headers=auth_header("viewer"),
                                     params={"from": "2025-06-01", "to": "2025-06-30", **site})
                return r.json()["total"] if r.status_code == 200 else r.status_code
            assert await total() == 2
            assert await total(site="hall-b") == 3
            assert await total(site="*") == 5
            assert await total(site="nowhere") == 0
            assert await total(site="Hall B") == 422
    finally:
        other.close()
        await app.state.store.aclose()


def test_a_hall_joining_a_shared_database_sends_reports_from_its_own_first_day(url: str) -> None:
    from monitor.report_delivery import ReportSender, since_key

    first, later = (datetime(2025, 1, 6, 2, 0, tzinfo=UTC), datetime(2025, 6, 16, 2, 0, tzinfo=UTC))
    a, b = Store(url, site="default"), Store(url, site="hall-b")
    try:
        assert ReportSender(a, lambda: hall("default"), lambda: first)._since(first) == first
        # hall B joins months later: its reports start then (not January's, as hall A's did)
        assert ReportSender(b, lambda: hall("hall-b"), lambda: later)._since(later) == later
        assert ReportSender(a, lambda: hall("default"), lambda: later)._since(later) == first
    finally:
        a.close()
        b.close()
    assert since_key("default") == "reports_since"
    assert len(since_key("x" * 63)) <= 64 and since_key("x" * 63) != since_key("x" * 62 + "y")


# ---- two real daemons (``hallmon run --mock``), one hall each, on one PostgreSQL ------------


def _daemon_hall(site: str, down: bool) -> str:
    import yaml

    from tests.agents.daemon import node, small_inventory
    from tests.test_ha import DEVICES

    notifications = {
        "language": "en",
        "channels": {"robot": {"type": "webhook", "url": "${HALLMON_TEST_WEBHOOK}"}},
        "routes": [{"name": "it", "channels": ["robot"], "group_wait": "1s"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    faults = [{"device": KIOSK, "mode": "down", "at": 0}] if down else []
    doc = yaml.safe_load(small_inventory([*DEVICES[:3], node(KIOSK, "127.30.0.40")],
                                         notifications=notifications, faults=faults))
    doc["site"]["id"] = site
    doc["tickets"] = {"auto": [{"classes": ["node"], "when": ["down"]}]}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def test_two_daemons_of_two_halls_on_one_database(tmp_path, pg_server) -> None:  # type: ignore[no-untyped-def]
    """Hall A's kiosk-1f-03 goes down: A's robot is paged, A's incident and ticket opened; hall
    B's robot hears nothing and B's kiosk-1f-03 has no incident; a restart of A with its kiosk
    back pages A's recovery only."""
    import time

    from tests.agents.daemon import HallmonProcess, WebhookReceiver, write_atomically
    from tests.test_ha import _firing

    url = pg_server.new_database()
    with WebhookReceiver() as robot_a, WebhookReceiver() as robot_b:
        halls = {
            site: HallmonProcess(tmp_path / site, _daemon_hall(site, down=site == "hall-a"),
                                 autostart=False, env={"HALLMON_TEST_WEBHOOK": robot.url},
                                 args=(f"--storage.url={url}",))
            for site, robot in (("hall-a", robot_a), ("hall-b", robot_b))
        }
        reader = {s: Store(url, site=s) for s in halls}
        try:
            for h in halls.values():
                h.__enter__()
                h.spawn()
            for h in halls.values():
                h.wait_ready()
            a, b = halls["hall-a"], halls["hall-b"]
            a.wait_for(lambda: _firing(robot_a, KIOSK), 30, "hall A's page about its kiosk")
            a.wait_for(lambda: reader["hall-a"].list_tickets()[1] == 1, 30, "hall A's ticket")
            time.sleep(3.0)  # room for a wrong page: group_wait 1 s, delivery every 200 ms
            assert len(_firing(robot_a, KIOSK)) == 1
            assert not [x for body in robot_b.bodies() for x in body["alerts"]]
            assert [i.device_id for i in reader["hall-a"].open_incidents()] == [KIOSK]
            assert reader["hall-b"].open_incidents() == []
            assert reader["hall-b"].list_tickets()[1] == 0
            assert b.http.get(f"/api/v1/devices/{KIOSK}").json()["status"] == "up"
            assert reader["hall-b"].outbox_counts()["sent"] == 0
            # each daemon registered its hall: B answers for A's and for every hall's report
            sites = b.http.get("/api/v1/sites").json()
            assert [(s["id"], s["this"]) for s in sites["sites"]] == [
                ("hall-a", False), ("hall-b", True)]
            got = b.http.get("/api/v1/reports/day", params={
                "site": "*", "format": "csv", "lang": "en"})
            assert got.status_code == 200, got.text
            rows = list(csv.reader(io.StringIO(got.content.decode("utf-8-sig"))))
            head = rows.index(["Incidents and downtime"]) + 1
            assert rows[head][:2] == ["Site", "Device"]
            assert [r[:2] for r in rows[head + 1:] if r[:1] == ["hall-a"]][:1] == [
                ["hall-a", KIOSK]]  # A's kiosk is down, counted in A's report section
            one = b.http.get("/api/v1/reports/day", params={"site": "hall-a", "lang": "en"})
            assert one.status_code == 200 and KIOSK in one.text

            a.stop()  # hall A restarts with its kiosk repaired
            write_atomically(a.inventory, _daemon_hall("hall-a", down=False))
            a.start()
            a.wait_for(lambda: reader["hall-a"].open_incidents() == [], 30,
                       "hall A's incident to close")
            a.wait_for(lambda: [x for body in robot_a.bodies() for x in body["alerts"]
                                if x["status"] == "resolved"], 30, "hall A's recovery page")
            time.sleep(3.0)
            assert not [x for body in robot_b.bodies() for x in body["alerts"]]
            (ticket,), _ = reader["hall-a"].list_tickets()
            assert ticket.status == "resolved" and reader["hall-b"].list_tickets()[1] == 0
        finally:
            for st in reader.values():
                st.close()
            for h in halls.values():
                h.__exit__()


def test_availability_and_backlog_of_one_device_id_are_each_halls_own(url: str) -> None:
    """Hall A's kiosk-1f-03 is down 30 min, hall B's 90 min on the same day: each hall's
    availability, MTTR and backlog count its own outage only."""
    from monitor.tally import DeviceRef, availability, backlog, mttr_sums

    day = date(2025, 6, 16)
    noon = datetime(2025, 6, 16, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    end = datetime(2025, 6, 16, 16, 0, tzinfo=UTC)  # the local day is over
    stores = {s: Store(url, timezone="Asia/Shanghai", site=s) for s in ("hall-a", "hall-b")}
    try:
        for (site, st), minutes in zip(stores.items(), (30, 90), strict=True):
            inc = st.open_incident(KIOSK, "ping", "down", "no reply", noon)
            st.close_incident(inc, noon + timedelta(minutes=minutes))
            t = st.create_ticket(NewTicket(summary=site, category="fault", reporter="t",
                                           device_id=KIOSK, device_class="kiosk"), at=noon)
            st.transition(t.id, "resolved", "t", at=noon + timedelta(minutes=minutes))
        st_b = stores["hall-b"]
        st_b.create_ticket(NewTicket(summary="still open", category="fault", reporter="t"),
                           at=noon)
        refs = [DeviceRef(KIOSK, "kiosk")]
        down = {s: availability(st, refs, day, day, now=end)[0][0].down_s
                for s, st in stores.items()}
        assert down == {"hall-a": 1800.0, "hall-b": 5400.0}
        assert mttr_sums(stores["hall-a"], day, day, "category") == {"fault": (1800.0, 1)}
        assert mttr_sums(st_b, day, day, "category") == {"fault": (5400.0, 1)}
        assert backlog(stores["hall-a"], "day", day, day) == [("2025-06-16", 0)]
        assert backlog(st_b, "day", day, day) == [("2025-06-16", 1)]
        every = st_b.for_site("*")
        assert mttr_sums(every, day, day, "category") == {"fault": (7200.0, 2)}
        assert backlog(every, "day", day, day) == [("2025-06-16", 1)]
    finally:
        for st in stores.values():
            st.close()
