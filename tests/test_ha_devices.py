"""Two pollers of one hall on one PostgreSQL (issue 17): each shows every device, with the poller
that polls it.

As found: with several pollers sharing a site, ``GET /api/v1/devices`` on poller A showed the
devices owned by poller B as "unknown", and a re-check of one of B's devices on A answered
``queued: false`` with no reason. Now the owner records each status change in the store
(``device_status``), A shows B's devices as the store knows them (an open incident: its status
and start; else what B recorded) with ``poller``, the status board and device page say the same,
and a re-check of B's device on A is a 409 naming B. Two real daemons (``hallmon run --mock``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from monitor.ha import assignment
from monitor.inventory.load import parse_inventory
from monitor.store import Store, schema
from tests.agents.daemon import (
    HallmonProcess,
    node,
    parse_metrics,
    small_inventory,
    start_together,
)

LEASE, HEARTBEAT = 3.0, 1.0
DEVICES = [node(f"n-{i:02d}", f"127.30.0.{i + 1}") for i in range(10)]
POLLERS = ("p0", "p1")


def _hall(down: str | None) -> str:
    faults = [{"device": down, "mode": "down", "at": 0}] if down else []
    return small_inventory(DEVICES, faults=faults)


def _last_polls(d: HallmonProcess) -> dict[str, float]:
    got = parse_metrics(d.metrics()).get("hallmon_device_last_poll_timestamp_seconds", [])
    return {labels["device"]: v for labels, v in got if v == v}


def _recorded(url: str) -> dict[str, tuple[str, str, Any]]:
    """device -> (status, the poller that recorded it, when), straight from the table."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            DS = schema.device_status
            return {d: (s, p, at) for d, s, p, at in conn.execute(
                sa.select(DS.c.device_id, DS.c.status, DS.c.poller, DS.c.updated_at))}
    finally:
        store.close()


def test_a_poller_shows_the_other_pollers_devices_and_sends_rechecks_there(
    tmp_path: Path, pg_server: Any,
) -> None:
    owners = assignment(parse_inventory(_hall(None)), list(POLLERS))
    theirs = sorted(d for d, p in owners.items() if p == "p1")
    mine = sorted(d for d, p in owners.items() if p == "p0")
    assert theirs and mine, owners  # the seed below splits ten devices between two pollers
    down = theirs[0]  # polled by p1, down from the start
    url = pg_server.new_database()
    pollers = [
        HallmonProcess(tmp_path / name, _hall(down), autostart=False,
                       args=(f"--storage.url={url}", f"--ha.lease={LEASE:g}",
                             f"--ha.heartbeat={HEARTBEAT:g}", f"--ha.poller-id={name}"))
        for name in POLLERS
    ]
    try:
        start_together(pollers)
        a, b = pollers
        a.wait_for(lambda: all(p.sample("hallmon_poller_live") == 2 for p in pollers), 30,
                   "both pollers to see two live leases")
        want = {d: ("down" if d == down else "up", owners[d]) for d in owners}

        def seen(p: HallmonProcess) -> dict[str, tuple[str, str]]:
            return {d: (row["status"], row["poller"]) for d, row in p.devices().items()}

        # both pollers show every device, with its poller, as it is (none "unknown")
        for p in pollers:
            p.wait_for(lambda p=p: seen(p) == want, 30,  # type: ignore[misc]
                       "every device with its status and poller")
        row = a.device(down)
        assert (row["status"], row["poller"], row["last_poll"]) == ("down", "p1", None)
        assert row["since"] is not None and row["cause"]
        assert row["history"] and row["history"][0]["ended_at"] is None
        assert row["checks"] == [] and b.device(down)["checks"]  # results live on p1
        assert b.device(down)["since"] == row["since"]  # the owner's status change, as stored
        got = a.http.get("/api/v1/devices", params={"status": "down"}).json()
        assert [d["id"] for d in got["devices"]] == [down]

        # a re-check of another poller's device: 409 naming it; on its poller: queued
        r = a.http.post(f"/api/v1/devices/{down}/recheck")
        assert r.status_code == 409, r.text
        assert r.json()["poller"] == "p1" and "'p1'" in r.json()["detail"]
        r = b.http.post(f"/api/v1/devices/{down}/recheck")
        assert r.status_code == 202 and r.json()["queued"] is True
        r = a.http.post(f"/api/v1/devices/{mine[0]}/recheck")
        assert r.status_code == 202 and r.json()["queued"] is True

        # the pages say the same: the board's counts and incidents, the device page
        board = a.http.get("/status/data.json").json()
        assert board["counts"]["down"] == 1 and board["counts"]["unknown"] == 0
        assert [i["id"] for i in board["incidents"]] == [down]
        page = a.http.get(f"/status/devices/{down}", headers={"Accept-Language": "en"}).text
        assert 'id="device-poller">p1</dd>' in page and ">down</span>" in page

        # recorded on status changes only: more polls write nothing
        before = _recorded(url)  # (the poller that saw a change: maybe p0 before p1 joined)
        assert {d: s for d, (s, _, _) in before.items()} == {d: s for d, (s, _) in want.items()}
        polled = {**_last_polls(a), **_last_polls(b)}
        for p in pollers:
            p.wait_for(lambda p=p: all(v >= polled[d] + 3  # type: ignore[misc]
                                       for d, v in _last_polls(p).items()), 30,
                       "three more polls of every device")
        assert _recorded(url) == before
    finally:
        for p in reversed(pollers):
            p.__exit__()


# ---- the pipeline side, in process: what the owner records and what another poller shows ------


async def test_the_owner_records_changes_only_and_another_poller_reads_them(
    tmp_path: Path,
) -> None:
    """The real pipeline of poller p1 (devices of tests/test_pipeline.py's hall, sw-1f-a and
    its kiosk behind it): the switch goes down and the kiosk is unreachable behind it; the
    store holds each device's latest status, written once per change (many results between
    changes write nothing); p0's pipeline, owning nothing of it, shows what p1 recorded."""
    from monitor.pipeline import Pipeline
    from monitor.state import DeviceStatus
    from monitor.store.aio import AsyncStore
    from tests.conftest import Clock
    from tests.test_pipeline import FAIL, OK, T0, feed, inventory

    url = f"sqlite:///{tmp_path / 'hall.db'}"
    inv, clock = inventory(), Clock(T0)
    store = AsyncStore(Store(url, timezone="Asia/Shanghai"))
    writes: list[int] = []
    record = store.store.record_statuses

    def counted(poller: str, rows: Any) -> int:
        writes.append(n := record(poller, rows))
        return n

    store.store.record_statuses = counted  # type: ignore[method-assign]
    try:
        devices = ("sw-1f-a", "kiosk-1f-01", "cam-1f-01", "prn-1f-01")
        p1 = Pipeline(inv, store=store, clock=clock)
        p1.poller_id, p1.owned = "p1", set(devices)
        for dev in devices:
            await feed(p1, clock, dev, "ping", OK)
        first = len(writes)
        for dev in devices:  # nothing changes: nothing is written
            await feed(p1, clock, dev, "ping", OK, times=5)
        assert len(writes) == first and sum(writes) == len(devices)
        await feed(p1, clock, "sw-1f-a", "ping", FAIL, times=3)
        await feed(p1, clock, "kiosk-1f-01", "ping", FAIL, times=3)
        recorded = {d: (s, p) for d, (s, p, _) in _recorded(url).items()}
        assert recorded == {"sw-1f-a": ("down", "p1"), "kiosk-1f-01": ("unreachable", "p1"),
                            "cam-1f-01": ("up", "p1"), "prn-1f-01": ("up", "p1")}
        assert sum(writes) == len(devices) + 2  # two changes since

        p0 = Pipeline(inv, store=store, clock=clock)
        p0.poller_id, p0.owned = "p0", set()
        p0.owners = dict.fromkeys(devices, "p1")
        assert p0.status_of("cam-1f-01")[:2] == (DeviceStatus.UNKNOWN,
                                                 "polled by p1, no status recorded yet")
        p0.peers = await store.run(store.store.peer_view)
        status, cause, since = p0.status_of("sw-1f-a")
        assert status is DeviceStatus.DOWN and cause == "no reply"
        assert since == p1.state.since["sw-1f-a"]  # the incident's start: the owner's change
        assert p0.status_of("kiosk-1f-01")[0] is DeviceStatus.UNREACHABLE
        assert p0.status_of("cam-1f-01")[0] is DeviceStatus.UP
    finally:
        await store.aclose()
