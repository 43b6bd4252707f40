"""Pollers of one hall sharing one PostgreSQL (issue 17): leases, rendezvous shares, take-over.

As found: a sharded pair (`--shard 0/2`, `1/2`) after kill -9 of one poller left its devices
unwatched and a camera outage inside that gap was never paged; two pollers for one hall paged
every outage two or three times. Here three real daemons (``hallmon run --mock``) share one real
PostgreSQL: the work is split with no device polled twice; kill -9 one, and its devices are polled
again by the others within two lease periods; an outage that starts during the take-over is paged
exactly once (a webhook receiver on loopback counts the pages).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from monitor.ha import assignment, owner, units
from monitor.inventory import Inventory
from monitor.inventory.load import parse_inventory
from tests.agents.daemon import (
    HallmonProcess,
    WebhookReceiver,
    node,
    parse_metrics,
    small_inventory,
    start_together,
    write_atomically,
)
from tests.conftest import require_tool

LEASE, HEARTBEAT = 3.0, 1.0
BOUND = 2 * LEASE  # a dead poller's devices are polled again within this (seconds)


# ---- the assignment (pure) -------------------------------------------------------------------


def _inventory(devices: list[dict[str, Any]]) -> Inventory:
    return parse_inventory(small_inventory(devices))


def _flat(n: int) -> Inventory:
    return _inventory([node(f"d-{i:04d}", f"127.30.{i // 250}.{i % 250 + 1}") for i in range(n)])


def test_a_dead_poller_moves_only_its_devices_and_a_new_one_takes_a_fair_share() -> None:
    inv = _flat(1200)
    three = assignment(inv, ["a", "b", "c"])
    assert set(three.values()) == {"a", "b", "c"}
    assert all(300 < n < 500 for n in Counter(three.values()).values())  # roughly even
    two = assignment(inv, ["a", "c"])
    moved = {d for d in three if three[d] != two[d]}
    assert moved == {d for d, p in three.items() if p == "b"}  # only b's devices move
    four = assignment(inv, ["a", "b", "c", "d"])
    joined = {d for d in three if three[d] != four[d]}
    assert all(four[d] == "d" for d in joined)  # what moves, moves to the newcomer
    assert 200 < len(joined) < 400  # about a quarter
    assert assignment(inv, []) == {}
    assert owner("x", ["b", "a"]) == owner("x", ["a", "b"])  # order of the live set is no input


def test_a_device_goes_with_its_parent_chain() -> None:
    inv = _inventory([
        node("core", "127.30.0.1"), node("sw-1", "127.30.0.2", parent="core"),
        node("pc-1", "127.30.1.1", parent="sw-1"), node("lone", "127.30.2.1"),
    ])
    assert units(inv) == {"core": "core", "sw-1": "core", "pc-1": "core", "lone": "lone"}
    for live in (["a"], ["a", "b"], ["a", "b", "c"], ["x", "y"]):
        got = assignment(inv, live)
        assert got["core"] == got["sw-1"] == got["pc-1"]


# ---- three daemons on one PostgreSQL ---------------------------------------------------------

DEVICES = [node(f"n-{i:02d}", f"127.30.0.{i + 1}") for i in range(12)]


def _hall(faults: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    notifications = {
        "language": "en",
        "channels": {"hook": {"type": "webhook", "url": "${HALLMON_TEST_WEBHOOK}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": "1s"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    return small_inventory(DEVICES, notifications=notifications, faults=faults)


def _last_polls(d: HallmonProcess) -> dict[str, float]:
    """device -> last poll (unix seconds), for the devices this poller exports (owns)."""
    got = parse_metrics(d.metrics()).get("hallmon_device_last_poll_timestamp_seconds", [])
    return {labels["device"]: v for labels, v in got if v == v}  # NaN: not yet polled


def _owned(d: HallmonProcess) -> dict[str, float]:
    got = parse_metrics(d.metrics()).get("hallmon_poller_devices_owned", [])
    return {labels["poller"]: v for labels, v in got}


def _firing(hook: WebhookReceiver, device: str) -> list[dict[str, Any]]:
    return [a for b in hook.bodies() for a in b["alerts"]
            if a["labels"].get("device") == device and a["status"] == "firing"]


def test_three_pollers_share_the_hall_and_take_over_a_killed_one(
    tmp_path: Path, pg_server: Any
) -> None:
    url = pg_server.new_database()
    with WebhookReceiver() as hook:
        pollers = [
            HallmonProcess(tmp_path / f"p{i}", _hall(), autostart=False,
                           env={"HALLMON_TEST_WEBHOOK": hook.url},
                           args=(f"--storage.url={url}", f"--ha.lease={LEASE:g}",
                                 f"--ha.heartbeat={HEARTBEAT:g}", f"--ha.poller-id=p{i}"))
            for i in range(3)
        ]
        try:
            start_together(pollers)
            _steady_state(pollers)
            _take_over(pollers, hook)
        finally:
            for p in reversed(pollers):
                p.__exit__()


def _steady_state(pollers: list[HallmonProcess]) -> None:
    """Each device owned by exactly one poller, and polled by that one only."""
    a = pollers[0]
    a.wait_for(lambda: all(p.sample("hallmon_poller_live") == 3 for p in pollers), 30,
               "every poller to see three live leases")
    views = [_owned(p) for p in pollers]
    assert views[0] == views[1] == views[2], views  # all compute the same assignment
    assert sum(views[0].values()) == len(DEVICES), views[0]
    # Every poller exports (and polls) exactly its own share, and the shares partition the hall.
    a.wait_for(lambda: all(len(_last_polls(p)) == views[0][f"p{i}"]
                           for i, p in enumerate(pollers)), 30, "each poller's share polled")
    # Watch until every device was polled again (each second; bounded), then count by whom.
    before = [_last_polls(p) for p in pollers]
    after: list[dict[str, float]] = []

    def all_polled_again() -> bool:
        after[:] = [_last_polls(p) for p in pollers]
        again = {d for b, f in zip(before, after, strict=True) for d in f if f[d] > b.get(d, 0)}
        return len(again) == len(DEVICES)

    a.wait_for(all_polled_again, 30, "every device polled again")
    polled_by: Counter[str] = Counter()
    for b, f in zip(before, after, strict=True):
        assert set(b) == set(f)
        polled_by.update(dev for dev in f if f[dev] > b[dev])
    assert polled_by == Counter({d["id"]: 1 for d in DEVICES}), polled_by
    api = pollers[1].http.get("/api/v1/pollers").json()
    assert api["live"] == 3 and api["poller"] == "p1"
    assert {p["id"]: p["role"] for p in api["pollers"]} == {"p0": "peer", "p1": "self",
                                                            "p2": "peer"}
    assert sum(p["devices_owned"] for p in api["pollers"]) == len(DEVICES)


def _take_over(pollers: list[HallmonProcess], hook: WebhookReceiver) -> None:
    shares = [_last_polls(p) for p in pollers]
    v = max(range(3), key=lambda i: len(shares[i]))
    victim, survivors = pollers[v], [p for i, p in enumerate(pollers) if i != v]
    orphans = sorted(shares[v])
    assert orphans, shares
    camera = orphans[0]  # goes down while nobody polls it
    assert not _firing(hook, camera)

    victim.kill()
    killed_at = time.time()
    # The outage starts now, during the take-over (faults count from the reload).
    for p in survivors:
        write_atomically(p.inventory, _hall([{"device": camera, "mode": "down", "at": 0}]))
        assert p.http.post("/-/reload").status_code == 200

    first_seen: dict[str, float] = {}

    def all_taken() -> bool:
        # The poll's own timestamp (not when this test saw it): scraping under load adds none.
        for p in survivors:
            for dev, at in _last_polls(p).items():
                if dev in orphans and at > killed_at:
                    first_seen.setdefault(dev, at)
        return set(first_seen) == set(orphans)

    survivors[0].wait_for(all_taken, 30, "the killed poller's devices to be polled again",
                          every=0.1)
    took = max(first_seen.values()) - killed_at
    print(f"take-over of {len(orphans)} devices: {took:.2f} s after kill -9 (bound {BOUND:g})")
    assert took <= BOUND, took
    assert all(p.sample("hallmon_poller_live") == 2 for p in survivors)
    assert sum(_owned(survivors[0]).values()) == len(DEVICES)

    survivors[0].wait_for(lambda: _firing(hook, camera), 20, f"the page about {camera}")
    time.sleep(3.0)  # room for a second (wrong) page: group_wait 1 s, delivery every 200 ms
    pages = _firing(hook, camera)
    assert len(pages) == 1, pages
    assert Counter(a["labels"]["device"] for a in
                   (a for b in hook.bodies() for a in b["alerts"])) == {camera: 1}
    roles = {p["id"]: p["role"] for p in survivors[0].http.get("/api/v1/pollers").json()["pollers"]}
    assert sorted(roles.values()) == ["expired", "peer", "self"], roles
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=survivors[0].metrics().encode(),
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    # A clean stop gives the lease back: the last poller takes everything at its next
    # heartbeat, without waiting for the lease to run out.
    last, leaving = survivors
    leaving.stop()
    stopped_at = time.time()
    polled: dict[str, float] = {}

    def whole_hall() -> bool:
        for dev, at in _last_polls(last).items():
            if at > stopped_at:
                polled.setdefault(dev, at)
        return len(polled) == len(DEVICES)

    last.wait_for(whole_hall, 30, "the last poller to poll the whole hall")
    took = max(polled.values()) - stopped_at
    print(f"after a clean stop the last poller polls all {len(DEVICES)} devices in {took:.2f} s")
    assert took < LEASE + 1.0, took  # a heartbeat and a poll, not a lease
    assert last.sample("hallmon_poller_live") == 1



# ---- the pipeline's hand-over (a real SQLite store, results fed in) ---------------------------


async def test_a_poller_resumes_only_the_incidents_of_the_devices_it_owns(tmp_path: Path) -> None:
    """As found: a restarted shard poller also resumed the other shard's open incidents, which
    it never polls (so they were never resolved by anyone who watched them)."""
    from monitor.pipeline import Pipeline
    from monitor.state import DeviceStatus
    from monitor.store import Store
    from monitor.store.aio import AsyncStore
    from tests.conftest import Clock
    from tests.test_pipeline import FAIL, T0, Recorder, all_up, feed, inventory

    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"))
    try:
        inv, clock = inventory(), Clock(T0)
        first = Pipeline(inv, store=store, alerts=Recorder(), clock=clock)
        await all_up(first, clock)
        await feed(first, clock, "sw-1f-a", "ping", FAIL, times=3)
        await feed(first, clock, "prn-1f-01", "ping", FAIL, times=3)
        open_before = sorted(i.id for i in await store.open_incidents())
        assert len(open_before) == 2

        # This poller owns only the printer: the switch's incident is its owner's business.
        alerts = Recorder()
        mine = Pipeline(inv, store=store, alerts=alerts, clock=clock)
        mine.owned = {"prn-1f-01"}
        assert await mine.resume({"prn-1f-01"}) == 1
        assert set(mine.incidents) == {"prn-1f-01"}
        assert mine.state.status("sw-1f-a") is DeviceStatus.UNKNOWN
        assert [e.device_id for e in mine.resumed_events({"prn-1f-01"})] == ["prn-1f-01"]
        await mine.set_maintenance({"sw-1f-a"})  # not its device: no move, no record
        assert mine.state.status("sw-1f-a") is DeviceStatus.UNKNOWN

        # Hand the printer over: forgotten here, nothing resolved, its incident still open.
        mine.release({"prn-1f-01"})
        assert mine.incidents == {} and mine.outages == {}
        assert mine.state.status("prn-1f-01") is DeviceStatus.UNKNOWN
        assert [(e.device_id, e.status) for e in alerts.events] == [("prn-1f-01", "unknown")]
        assert sorted(i.id for i in await store.open_incidents()) == open_before

        # Take the switch over: resumed DOWN, still down is no news; back up is.
        mine.owned = {"sw-1f-a"}
        assert await mine.resume({"sw-1f-a"}) == 1
        assert mine.state.status("sw-1f-a") is DeviceStatus.DOWN
        await feed(mine, clock, "sw-1f-a", "ping", FAIL, times=3)
        assert [e.status for e in alerts.events] == ["unknown"]
        await feed(mine, clock, "prn-1f-01", "ping", FAIL, times=3)  # not its device: ignored
        assert mine.state.status("prn-1f-01") is DeviceStatus.UNKNOWN
    finally:
        await store.aclose()


def test_lease_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    inv = tmp_path / "inventory.yaml"
    inv.write_text(small_inventory(DEVICES[:1]), encoding="utf-8")
    with pytest.raises(SystemExit, match="--ha.heartbeat 2 must be under half of --ha.lease 3"):
        main(["run", "--mock", f"--inventory={inv}", "--ha.lease=3", "--ha.heartbeat=2"])
    with pytest.raises(SystemExit) as exc:
        main(["run", "--mock", f"--inventory={inv}", "--ha.lease=soon"])
    assert exc.value.code == 2
    assert "--ha.lease: expected seconds in (0, 3600], got 'soon'" in capsys.readouterr().err


async def test_a_ticket_waiting_for_its_delay_is_opened_by_the_poller_taking_over(
    tmp_path: Path
) -> None:
    """The printer's rule waits 1 s before ticketing; its poller hands it over meanwhile. The
    new owner resumes the incident and opens the ticket when the rest of the delay is over
    (before: nobody did, the outage had no ticket)."""
    from monitor.inventory import Inventory
    from monitor.pipeline import Pipeline
    from monitor.store import Store
    from monitor.store.aio import AsyncStore
    from tests.conftest import Clock
    from tests.test_pipeline import FAIL, HALL, T0, Recorder, all_up, camera_tickets, feed, settle

    hall = {**HALL, "tickets": {"auto": [{"classes": ["printer"], "when": ["down"],
                                           "delay": "1s"}]}}
    inv = Inventory.model_validate(hall, context={"env": {}})
    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"))
    try:
        clock = Clock(T0)
        old = Pipeline(inv, store=store, alerts=Recorder(), clock=clock)
        await all_up(old, clock)
        await feed(old, clock, "prn-1f-01", "ping", FAIL, times=3)
        assert old._ticket_tasks  # waiting for the delay
        old.release({"prn-1f-01"})
        assert not old._ticket_tasks
        new = Pipeline(inv, store=store, alerts=Recorder(), clock=clock)
        new.owned = {"prn-1f-01"}
        assert await new.resume({"prn-1f-01"}) == 1
        await settle(new)
        assert [s for s, _ in await camera_tickets(store)] == ["open"]
        await new.resume({"prn-1f-01"})  # resumed again (say a restart): still one ticket
        await settle(new)
        assert len(await camera_tickets(store)) == 1
    finally:
        await store.aclose()


def test_a_hall_below_one_switch_runs_active_standby(tmp_path: Path, pg_server: Any) -> None:
    """Every device hangs below one core switch: one poller polls all, the other stands by
    (ready, owning nothing) and takes the whole hall over when the first is killed."""
    url = pg_server.new_database()
    devices = [node("core", "127.30.0.1")] + [
        node(f"pc-{i}", f"127.30.1.{i + 1}", parent="core") for i in range(4)]
    pollers = [HallmonProcess(tmp_path / f"s{i}", small_inventory(devices), autostart=False,
                              args=(f"--storage.url={url}", f"--ha.lease={LEASE:g}",
                                    f"--ha.heartbeat={HEARTBEAT:g}", f"--ha.poller-id=s{i}"))
               for i in range(2)]
    try:
        for p in pollers:
            p.__enter__()
            p.start()  # one after the other: the second joins a live first
        first = pollers[0]
        first.wait_for(lambda: all(p.sample("hallmon_poller_live") == 2 for p in pollers), 30,
                       "both pollers live")
        owned = _owned(first)
        active = pollers[0] if owned["s0"] == len(devices) else pollers[1]
        standby = pollers[1] if active is pollers[0] else pollers[0]
        assert sorted(owned.values()) == [0, len(devices)], owned
        standby.wait_for(lambda: not _last_polls(standby) and len(_last_polls(active)) == 5,
                         30, "the active poller polling the hall, the standby none")
        active.kill()
        killed_at = time.time()
        taken: dict[str, float] = {}

        def whole_hall() -> bool:
            for dev, at in _last_polls(standby).items():
                if at > killed_at:
                    taken.setdefault(dev, at)
            return len(taken) == len(devices)

        standby.wait_for(whole_hall, 30, "the standby to take the hall over")
        took = max(taken.values()) - killed_at
        print(f"standby took over {len(devices)} devices {took:.2f} s after kill -9")
        assert took <= BOUND, took
        assert standby.status("pc-0") == "up"  # judged with its parent: not "unreachable"
    finally:
        for p in reversed(pollers):
            p.__exit__()
