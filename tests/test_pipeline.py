"""The whole flow of a result: conditions -> state -> incidents -> alerts -> tickets.

Real SQLite store in a temp dir; results are fed straight into the pipeline (the scheduler is
tested on its own), with a wall clock the test drives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from monitor.alerts.base import AlertEvent
from monitor.inventory import Inventory, ResolvedCheck
from monitor.pipeline import Pipeline
from monitor.state import DeviceStatus
from monitor.store import Store
from monitor.store.aio import AsyncStore
from probes.result import ProbeResult
from tests.conftest import Clock

T0 = 1_750_000_000.0  # the tests' wall clock starts in mid-2025

HALL = {
    "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
    "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 3,
                 "success_threshold": 2},
    "credentials": {"ro": {"version": "2c", "community": "${COMMUNITY:-public}"}},
    "devices": [
        {"id": "sw-1f-a", "name": "一楼接入交换机A", "class": "switch",
         "address": "127.20.1.1", "credential": "ro", "location": {"floor": 1}},
        {"id": "kiosk-1f-01", "name": "一楼自助终端1号", "class": "kiosk",
         "address": "127.20.1.11", "parent": "sw-1f-a", "credential": "ro"},
        {"id": "cam-1f-01", "name": "一楼摄像机1号", "class": "camera",
         "address": "127.20.1.21", "parent": "sw-1f-a"},
        {"id": "prn-1f-01", "name": "一楼打印机", "class": "printer",
         "address": "127.20.1.31", "credential": "ro"},
    ],
    "tickets": {"auto": [{"classes": ["switch", "printer"], "when": ["down", "degraded"]}]},
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def submit(self, event: AlertEvent) -> None:
        self.events.append(event)

    def statuses(self) -> list[tuple[str, str]]:
        return [(e.device_id, e.status) for e in self.events]


def inventory() -> Inventory:
    return Inventory.model_validate(HALL, context={"env": {}})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    s = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"))
    yield s
    await s.aclose()


def check(inv: Inventory, device: str, name: str) -> ResolvedCheck:
    return next(c for c in inv.checks_for(inv.device(device)) if c.name == name)


OK = ProbeResult.success(0.001)
FAIL = ProbeResult.failure(1.0, "no reply")


async def feed(p: Pipeline, clock: Clock, device: str, name: str, result: ProbeResult,
               times: int = 1) -> None:
    for _ in range(times):
        clock.now += 30
        await p.handle(check(p.inventory, device, name), result)
    if p.store is not None:
        await p.store.drain()  # the pipeline's writes are queued (they never hold up a page)


async def all_up(p: Pipeline, clock: Clock) -> None:
    for dev in ("sw-1f-a", "kiosk-1f-01", "cam-1f-01", "prn-1f-01"):
        await feed(p, clock, dev, "ping", OK)


async def test_parent_down_pages_once_and_children_are_unreachable(store: AsyncStore) -> None:
    inv, clock, alerts = inventory(), Clock(T0), Recorder()
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock)
    await all_up(p, clock)
    assert alerts.events == []  # an initial UP is not a recovery

    await feed(p, clock, "sw-1f-a", "ping", FAIL, times=3)
    await feed(p, clock, "kiosk-1f-01", "ping", FAIL, times=3)
    await feed(p, clock, "cam-1f-01", "ping", FAIL, times=3)

    assert p.state.status("sw-1f-a") is DeviceStatus.DOWN
    assert p.state.status("kiosk-1f-01") is DeviceStatus.UNREACHABLE
    assert alerts.statuses() == [
        ("sw-1f-a", "down"), ("kiosk-1f-01", "unreachable"), ("cam-1f-01", "unreachable"),
    ]
    incidents = await store.open_incidents()
    assert sorted((i.device_id, i.status) for i in incidents) == [
        ("cam-1f-01", "unreachable"), ("kiosk-1f-01", "unreachable"), ("sw-1f-a", "down"),
    ]


async def test_restart_resumes_without_a_second_down(store: AsyncStore) -> None:
    inv, clock, alerts = inventory(), Clock(T0), Recorder()
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "sw-1f-a", "ping", FAIL, times=3)
    assert alerts.statuses() == [("sw-1f-a", "down")]

    # a new process on the same store
    alerts2 = Recorder()
    p2 = Pipeline(inv, store=store, alerts=alerts2, clock=clock)
    assert await p2.resume() == 1
    assert p2.state.status("sw-1f-a") is DeviceStatus.DOWN
    await feed(p2, clock, "sw-1f-a", "ping", FAIL, times=5)
    assert alerts2.events == []  # still down: nothing new to say

    await feed(p2, clock, "sw-1f-a", "ping", OK, times=2)
    assert alerts2.statuses() == [("sw-1f-a", "up")]
    assert await store.open_incidents() == []


async def test_auto_ticket_once_per_incident_and_resolved_on_recovery(
    store: AsyncStore,
) -> None:
    inv, clock = inventory(), Clock(T0)
    p = Pipeline(inv, store=store, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "sw-1f-a", "ping", FAIL, times=6)
    for task in list(p._ticket_tasks.values()):
        await task
    await store.drain()
    page, _total = await store.run(store.store.list_tickets)
    auto = [t for t in page if t.source == "auto"]
    assert len(auto) == 1
    assert auto[0].device_id == "sw-1f-a" and auto[0].status == "open"

    await feed(p, clock, "sw-1f-a", "ping", OK, times=2)
    ticket = await store.get_ticket(auto[0].id)
    assert ticket.status == "resolved"
    assert "recovered after" in (ticket.resolution or "")


async def test_low_toner_degrades_the_printer(store: AsyncStore) -> None:
    inv, clock, alerts = inventory(), Clock(T0), Recorder()
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock)
    await all_up(p, clock)
    low = ProbeResult.success(0.01, {"supply_level": 4, "supply_max": 100, "cover_status": 4})
    await feed(p, clock, "prn-1f-01", "supplies", low, times=3)
    status, cause = p.state.statuses["prn-1f-01"]
    assert status is DeviceStatus.DEGRADED
    assert "碳粉不足" in cause and "toner_percent=4" in cause
    assert alerts.statuses() == [("prn-1f-01", "degraded")]


async def test_child_failing_before_its_parent_is_hard_down_does_not_page(
    store: AsyncStore,
) -> None:
    inv, clock, alerts = inventory(), Clock(T0), Recorder()
    rechecked: list[str] = []
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock, recheck=rechecked.append)
    await all_up(p, clock)
    # splay put the kiosk's polls ahead of its switch's: the switch has failed only once
    await feed(p, clock, "sw-1f-a", "ping", FAIL)
    await feed(p, clock, "kiosk-1f-01", "ping", FAIL, times=3)
    assert "sw-1f-a" in rechecked  # the child's failure asks about the path at once
    assert p.state.status("kiosk-1f-01") is DeviceStatus.UNREACHABLE
    assert alerts.statuses() == [("kiosk-1f-01", "unreachable")]  # rides, never pages

    # the switch was a glitch: the kiosk is re-checked, and only then pages as DOWN
    await feed(p, clock, "sw-1f-a", "ping", OK)
    assert p.state.status("kiosk-1f-01") is DeviceStatus.UNREACHABLE
    assert "kiosk-1f-01" in rechecked
    await feed(p, clock, "kiosk-1f-01", "ping", FAIL)
    assert p.state.status("kiosk-1f-01") is DeviceStatus.DOWN
    assert alerts.statuses()[-1] == ("kiosk-1f-01", "down")
    assert ("kiosk-1f-01", "down") not in alerts.statuses()[:-1]


# --- an automatic ticket follows its outage (issue 10, point 13) --------------------------------

CAMERA_TICKETS = {**HALL, "tickets": {"auto": [{"classes": ["camera"],
                                                "when": ["down", "degraded"]}]}}
REFUSED = ProbeResult.failure(0.001, "connection refused")


async def camera_tickets(store: AsyncStore) -> list[tuple[str, str]]:
    page, _total = await store.run(store.store.list_tickets)
    return [(t.status, t.summary) for t in page if t.source == "auto"]


async def settle(p: Pipeline) -> None:
    for task in list(p._ticket_tasks.values()):
        await task


async def test_camera_ticket_resolves_when_the_camera_is_back(store: AsyncStore) -> None:
    """As found: a camera loses power; ping and its RTSP check fail; power returns."""
    inv = Inventory.model_validate(CAMERA_TICKETS, context={"env": {}})
    clock, alerts = Clock(T0), Recorder()
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "cam-1f-01", "rtsp", OK)
    for _ in range(3):
        await feed(p, clock, "cam-1f-01", "ping", FAIL)
        await feed(p, clock, "cam-1f-01", "rtsp", REFUSED)
    await settle(p)
    assert [s for s, _ in await camera_tickets(store)] == ["open"]
    await feed(p, clock, "cam-1f-01", "ping", OK, times=2)
    await feed(p, clock, "cam-1f-01", "rtsp", OK)
    assert alerts.statuses() == [("cam-1f-01", "down"), ("cam-1f-01", "up")]
    assert [s for s, _ in await camera_tickets(store)] == ["resolved"]
    incidents = await store.incidents("cam-1f-01")
    assert [i.status for i in incidents] == ["down"]  # no DEGRADED incident was made up
    assert all(i.ended_at is not None for i in incidents)


async def test_ticket_follows_the_outage_through_every_status(store: AsyncStore) -> None:
    """down -> degraded (maintenance ends mid-way) -> unreachable -> up: one ticket, resolved
    at the end, not left open when the incident it was opened for gave way to the next."""
    inv = Inventory.model_validate(CAMERA_TICKETS, context={"env": {}})
    clock = Clock(T0)
    p = Pipeline(inv, store=store, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "cam-1f-01", "rtsp", REFUSED, times=3)
    assert p.state.status("cam-1f-01") is DeviceStatus.DEGRADED
    await settle(p)
    await feed(p, clock, "cam-1f-01", "ping", FAIL, times=3)
    assert p.state.status("cam-1f-01") is DeviceStatus.DOWN
    await feed(p, clock, "sw-1f-a", "ping", FAIL, times=3)  # now its switch dies too
    assert p.state.status("cam-1f-01") is DeviceStatus.UNREACHABLE
    await settle(p)
    assert [s for s, _ in await camera_tickets(store)] == ["open"]  # one ticket per outage

    await feed(p, clock, "sw-1f-a", "ping", OK, times=2)
    await feed(p, clock, "cam-1f-01", "ping", OK, times=2)
    assert p.state.status("cam-1f-01") is DeviceStatus.UP
    assert [s for s, _ in await camera_tickets(store)] == ["resolved"]


async def test_ticket_follows_the_outage_across_a_restart(store: AsyncStore) -> None:
    inv = Inventory.model_validate(CAMERA_TICKETS, context={"env": {}})
    clock = Clock(T0)
    p = Pipeline(inv, store=store, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "cam-1f-01", "ping", FAIL, times=3)
    await settle(p)
    await feed(p, clock, "sw-1f-a", "ping", FAIL, times=3)  # down -> unreachable
    assert p.state.status("cam-1f-01") is DeviceStatus.UNREACHABLE

    p2 = Pipeline(inv, store=store, clock=clock)  # a new process on the same store
    await p2.resume()
    await feed(p2, clock, "sw-1f-a", "ping", OK, times=2)
    await feed(p2, clock, "cam-1f-01", "ping", OK, times=2)
    assert p2.state.status("cam-1f-01") is DeviceStatus.UP
    assert [s for s, _ in await camera_tickets(store)] == ["resolved"]


async def test_restart_keeps_the_device_cause_and_since(store: AsyncStore) -> None:
    """Point 12: after a restart the cause stays "no reply" and since is the outage start."""
    inv, clock = inventory(), Clock(T0)
    p = Pipeline(inv, store=store, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "prn-1f-01", "ping", FAIL, times=3)
    down_at = p.state.since["prn-1f-01"]
    assert p.state.statuses["prn-1f-01"] == (DeviceStatus.DOWN, "no reply")

    clock.now += 600
    p2 = Pipeline(inv, store=store, clock=clock)
    await p2.resume()
    assert p2.state.statuses["prn-1f-01"] == (DeviceStatus.DOWN, "no reply")
    assert p2.state.since["prn-1f-01"] == pytest.approx(down_at, abs=1e-3)
    await feed(p2, clock, "prn-1f-01", "ping", OK)  # settling: still its own cause
    assert p2.state.statuses["prn-1f-01"] == (DeviceStatus.DOWN, "no reply")


async def test_device_api_since_and_cause_are_the_devices_own(store: AsyncStore) -> None:
    """Point 12: a check changing later (the camera's RTSP check's first result) does not move
    the device's ``since``; after a restart both stay the device's own."""
    import types

    import httpx

    from monitor.web import create_app

    inv, clock = inventory(), Clock(T0)
    p = Pipeline(inv, store=store, clock=clock)
    await all_up(p, clock)
    up_at = p.state.since["cam-1f-01"]
    await feed(p, clock, "cam-1f-01", "rtsp", OK)  # its check's own first hard state, later
    await feed(p, clock, "prn-1f-01", "ping", FAIL, times=3)
    down_at = p.state.since["prn-1f-01"]
    clock.now += 600
    p2 = Pipeline(inv, store=store, clock=clock)
    await p2.resume()
    await feed(p2, clock, "cam-1f-01", "ping", OK)
    await feed(p2, clock, "cam-1f-01", "rtsp", OK)
    cam_up = p2.state.since["cam-1f-01"]
    await feed(p2, clock, "prn-1f-01", "ping", FAIL)

    for pipeline, device, status, cause, since in (
        (p, "cam-1f-01", "up", "ok", up_at),
        (p2, "cam-1f-01", "up", "ok", cam_up),
        (p2, "prn-1f-01", "down", "no reply", down_at),
    ):
        app = create_app(types.SimpleNamespace(pipeline=pipeline), site_name="测试大厅")
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hallmon") as c:
            body = (await c.get(f"/api/v1/devices/{device}")).json()
        assert (body["status"], body["cause"]) == (status, cause)
        assert datetime.fromisoformat(body["since"]).timestamp() == pytest.approx(since, abs=1e-3)


async def test_restart_keeps_a_degraded_device_degraded_with_its_cause_and_since(
    store: AsyncStore,
) -> None:
    inv, clock, alerts = inventory(), Clock(T0), Recorder()
    p = Pipeline(inv, store=store, alerts=alerts, clock=clock)
    await all_up(p, clock)
    low = ProbeResult.success(0.01, {"supply_level": 4, "supply_max": 100, "cover_status": 4})
    await feed(p, clock, "prn-1f-01", "supplies", low, times=3)
    before = p.state.statuses["prn-1f-01"]
    degraded_at = p.state.since["prn-1f-01"]
    assert before[0] is DeviceStatus.DEGRADED

    clock.now += 600
    alerts2 = Recorder()
    p2 = Pipeline(inv, store=store, alerts=alerts2, clock=clock)
    await p2.resume()
    assert p2.state.statuses["prn-1f-01"] == before  # not "supplies: supplies: ..."
    await feed(p2, clock, "prn-1f-01", "ping", OK)
    await feed(p2, clock, "prn-1f-01", "supplies", low)
    assert p2.state.statuses["prn-1f-01"] == before
    assert p2.state.since["prn-1f-01"] == pytest.approx(degraded_at, abs=1e-3)
    assert alerts2.events == []
    assert [i.status for i in await store.open_incidents()] == ["degraded"]


async def test_a_rule_without_auto_resolve_leaves_the_ticket_to_people(
    store: AsyncStore,
) -> None:
    doc = {**HALL, "tickets": {"auto": [{"classes": ["camera"], "auto_resolve": False}]}}
    inv = Inventory.model_validate(doc, context={"env": {}})
    clock = Clock(T0)
    p = Pipeline(inv, store=store, clock=clock)
    await all_up(p, clock)
    await feed(p, clock, "cam-1f-01", "ping", FAIL, times=3)
    await settle(p)
    await feed(p, clock, "cam-1f-01", "ping", OK, times=2)
    assert [s for s, _ in await camera_tickets(store)] == ["open"]
