"""Trap rules as stories: what a trap holds, what clears it, what times it out (monitor/traps.py),
and the whole flow through the pipeline: a trap and a failed ping are one incident, told once.

Pure book first (times are numbers), then the real pipeline with a SQLite store and a recording
alert sink, results fed exactly as the receiver and the scheduler feed them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.inventory import Inventory
from monitor.inventory.profiles import (
    COLD_START,
    IF_INDEX,
    LINK_DOWN,
    LINK_UP,
    UPS_ALARM_DESCR,
    UPS_ALARM_LOW_BATTERY,
    UPS_ALARM_ON_BATTERY,
    UPS_TRAP_ALARM_ADDED,
    UPS_TRAP_ALARM_REMOVED,
    UPS_TRAP_ON_BATTERY,
)
from monitor.pipeline import Pipeline
from monitor.state import DeviceStatus
from monitor.store import Store
from monitor.store.aio import AsyncStore
from monitor.traps import TrapBook
from probes.result import ProbeResult
from tests.conftest import Clock
from tests.test_pipeline import FAIL, OK, Recorder, check

T0 = 1_750_000_000.0
HALL = {
    "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
    "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 3,
                 "success_threshold": 2},
    "devices": [
        {"id": "sw-1f", "name": "一楼交换机", "class": "switch", "address": "127.20.1.1"},
        {"id": "kiosk-1", "name": "一楼自助终端1号", "class": "kiosk", "address": "127.20.1.11"},
        {"id": "ups-1", "name": "机房UPS", "class": "ups", "address": "127.20.1.40"},
        {"id": "gate-1", "name": "闸机", "class": "access_gate", "address": "127.20.1.50",
         "trap_rules": [{"name": "door-forced", "oid": "1.3.6.1.4.1.99.0.7", "action": "degraded",
                         "when": [{"oid": "1.3.6.1.4.1.99.1.2", "op": ">=", "value": 2}],
                         "message": "闸机被强行打开", "hold": "5m"}]},
    ],
}


def inventory() -> Inventory:
    return Inventory.model_validate(HALL, context={"env": {}})


def rules(device: str) -> list:
    inv = inventory()
    return inv.traps_for(inv.device(device))


def port(oid: str, index: int) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    return oid, ((f"{IF_INDEX}.{index}", 0x02, index),)


def alarm(oid: str, what: str) -> tuple[str, tuple[tuple[str, int, str], ...]]:
    return oid, ((f"{UPS_ALARM_DESCR}.7", 0x06, what),)


# -- the book ---------------------------------------------------------------------------------

def test_link_down_holds_until_link_up_of_the_same_port() -> None:
    book, sw = TrapBook(), rules("sw-1f")
    out = book.apply("sw-1f", sw, *port(LINK_DOWN, 3), T0)
    assert out.results["traps"] == ProbeResult.failure(0.0, "端口断开 (ifIndex=3)")
    assert out.recheck and out.matched == ["link-down"]
    assert book.apply("sw-1f", sw, *port(LINK_UP, 4), T0 + 1).results == {}  # another port
    out = book.apply("sw-1f", sw, *port(LINK_DOWN, 5), T0 + 2)
    assert out.results["traps"].error == "端口断开 (ifIndex=3); 端口断开 (ifIndex=5)"
    assert book.apply("sw-1f", sw, *port(LINK_UP, 3), T0 + 3).results["traps"].error == (
        "端口断开 (ifIndex=5)")
    assert book.apply("sw-1f", sw, *port(LINK_UP, 5), T0 + 4).results["traps"].ok


def test_a_restart_ends_every_link_condition() -> None:
    book, sw = TrapBook(), rules("sw-1f")
    book.apply("sw-1f", sw, *port(LINK_DOWN, 3), T0)
    book.apply("sw-1f", sw, *port(LINK_DOWN, 4), T0)
    out = book.apply("sw-1f", sw, COLD_START, (), T0 + 1)
    assert out.results["traps"].ok and out.events and book.holds == {}


def test_kiosk_link_down_is_down_not_degraded() -> None:
    out = TrapBook().apply("kiosk-1", rules("kiosk-1"), *port(LINK_DOWN, 1), T0)
    assert set(out.results) == {"traps-down"} and not out.results["traps-down"].ok


def test_a_hold_ends_when_its_time_passes_and_repeats_renew_it() -> None:
    book, ups = TrapBook(), rules("ups-1")
    assert not book.apply("ups-1", ups, UPS_TRAP_ON_BATTERY, (), T0).results["traps"].ok
    book.apply("ups-1", ups, UPS_TRAP_ON_BATTERY, (), T0 + 60)  # the UPS repeats every minute
    assert book.expire(T0 + 60 + 179) == []
    assert book.expire(T0 + 60 + 180) == [("ups-1", "traps", ProbeResult.success(0.0))]
    assert book.holds == {}


def test_ups_alarm_table_sets_and_clears_by_description() -> None:
    book, ups = TrapBook(), rules("ups-1")
    out = book.apply("ups-1", ups, *alarm(UPS_TRAP_ALARM_ADDED, UPS_ALARM_LOW_BATTERY), T0)
    assert out.matched == ["battery-low"] and out.recheck
    assert out.results["traps"].error == "UPS电池电量低，即将断电"
    # removing the on-battery alarm does not end "battery low"
    out = book.apply("ups-1", ups, *alarm(UPS_TRAP_ALARM_REMOVED, UPS_ALARM_ON_BATTERY), T0 + 1)
    assert out.results == {}
    out = book.apply("ups-1", ups, *alarm(UPS_TRAP_ALARM_REMOVED, UPS_ALARM_LOW_BATTERY), T0 + 2)
    assert out.results["traps"].ok


def test_var_bind_conditions_and_unknown_traps() -> None:
    book, gate = TrapBook(), rules("gate-1")
    low = (("1.3.6.1.4.1.99.1.2.0", 0x02, 1),)
    high = (("1.3.6.1.4.1.99.1.2.0", 0x02, 2),)
    assert book.apply("gate-1", gate, "1.3.6.1.4.1.99.0.7", low, T0).matched == []
    assert book.apply("gate-1", gate, "1.3.6.1.4.1.99.0.7", high, T0).matched == ["door-forced"]
    assert book.apply("gate-1", gate, "1.3.6.1.4.1.99.0.8", high, T0).matched == []


def test_restart_is_an_event_and_a_recheck() -> None:
    out = TrapBook().apply("sw-1f", rules("sw-1f"), COLD_START, (), T0)
    assert out.recheck and out.results == {}
    assert [(e.device, e.rule, e.message) for e in out.events] == [
        ("sw-1f", "cold-start", "设备重新启动（冷启动）")]


def test_device_rules_replace_class_rules_of_the_same_name() -> None:
    hall = {**HALL, "devices": [{**HALL["devices"][0], "trap_rules": [  # type: ignore[dict-item]
        {"name": "link-down", "oid": LINK_DOWN, "action": "event", "message": "端口变化"}]}]}
    inv = Inventory.model_validate(hall, context={"env": {}})
    names = [(r.name, r.action) for r in inv.traps_for(inv.device("sw-1f"))]
    assert names == [("cold-start", "event"), ("warm-start", "event"), ("link-down", "event")]
    assert [c.name for c in inv.checks_for(inv.device("sw-1f"))] == ["ping", "snmp", "ports"]


# -- through the pipeline ------------------------------------------------------------------------

@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    s = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"))
    yield s
    await s.aclose()


async def _open_incidents(store: AsyncStore) -> list:
    await store.drain()  # the pipeline queues its incident writes
    return await store.open_incidents()


async def _up(p: Pipeline, clock: Clock, *devices: str) -> None:
    for dev in devices:
        await p.handle(check(p.inventory, dev, "ping"), OK)
    clock.now += 1


async def _trap(p: Pipeline, book: TrapBook, clock: Clock, device: str, oid: str,
                varbinds: tuple = ()) -> None:
    """What the receiver does with a trap from ``device``."""
    out = book.apply(device, p.inventory.traps_for(p.inventory.device(device)), oid, varbinds,
                     clock())
    for name, result in out.results.items():
        await p.handle(check(p.inventory, device, name), result)


async def test_link_down_then_failed_ping_is_one_incident_told_once(store: AsyncStore) -> None:
    clock, alerts, book = Clock(T0), Recorder(), TrapBook()
    p = Pipeline(inventory(), store=store, alerts=alerts, clock=clock)
    await _up(p, clock, "kiosk-1")
    await _trap(p, book, clock, "kiosk-1", *port(LINK_DOWN, 1))
    assert p.state.status("kiosk-1") is DeviceStatus.DOWN
    for _ in range(3):  # the ping fails, three times: hard DOWN on its own
        clock.now += 30
        await p.handle(check(p.inventory, "kiosk-1", "ping"), FAIL)
    await _trap(p, book, clock, "kiosk-1", *port(LINK_DOWN, 1))  # the device repeats itself
    assert alerts.statuses() == [("kiosk-1", "down")]
    assert len(await _open_incidents(store)) == 1
    await _trap(p, book, clock, "kiosk-1", *port(LINK_UP, 1))
    assert p.state.status("kiosk-1") is DeviceStatus.DOWN  # the ping still says so
    for _ in range(2):
        clock.now += 30
        await p.handle(check(p.inventory, "kiosk-1", "ping"), OK)
    assert alerts.statuses() == [("kiosk-1", "down"), ("kiosk-1", "up")]
    assert await _open_incidents(store) == []


async def test_failed_ping_then_link_down_is_one_incident_told_once(store: AsyncStore) -> None:
    clock, alerts, book = Clock(T0), Recorder(), TrapBook()
    p = Pipeline(inventory(), store=store, alerts=alerts, clock=clock)
    await _up(p, clock, "kiosk-1")
    for _ in range(3):
        clock.now += 30
        await p.handle(check(p.inventory, "kiosk-1", "ping"), FAIL)
    await _trap(p, book, clock, "kiosk-1", *port(LINK_DOWN, 1))
    assert alerts.statuses() == [("kiosk-1", "down")]
    assert len(await _open_incidents(store)) == 1


async def test_switch_port_down_degrades_once_and_link_up_recovers(store: AsyncStore) -> None:
    clock, alerts, book = Clock(T0), Recorder(), TrapBook()
    p = Pipeline(inventory(), store=store, alerts=alerts, clock=clock)
    await _up(p, clock, "sw-1f")
    await _trap(p, book, clock, "sw-1f", *port(LINK_DOWN, 3))
    await _trap(p, book, clock, "sw-1f", *port(LINK_DOWN, 3))
    await _trap(p, book, clock, "sw-1f", *port(LINK_DOWN, 4))
    assert p.state.status("sw-1f") is DeviceStatus.DEGRADED
    last = p.state.checks[("sw-1f", "traps")].last
    assert last is not None and last.error == "端口断开 (ifIndex=3); 端口断开 (ifIndex=4)"
    await _trap(p, book, clock, "sw-1f", *port(LINK_UP, 3))
    await _trap(p, book, clock, "sw-1f", *port(LINK_UP, 4))
    assert alerts.statuses() == [("sw-1f", "degraded"), ("sw-1f", "up")]


async def test_a_timed_out_hold_recovers_the_device(store: AsyncStore) -> None:
    clock, alerts, book = Clock(T0), Recorder(), TrapBook()
    p = Pipeline(inventory(), store=store, alerts=alerts, clock=clock)
    await _up(p, clock, "ups-1")
    await _trap(p, book, clock, "ups-1", UPS_TRAP_ON_BATTERY)
    clock.now += 181
    for device, name, result in book.expire(clock()):
        await p.handle(check(p.inventory, device, name), result)
    assert alerts.statuses() == [("ups-1", "degraded"), ("ups-1", "up")]


def test_rollup_down_checks_outrank_degraded_but_not_a_bad_parent() -> None:
    from monitor.state import CheckState, CheckStatus, rollup

    up, down = CheckState(hard=CheckStatus.UP), CheckState(hard=CheckStatus.DOWN)
    health = {"traps-down": down, "snmp": down}
    assert rollup(up, health, None, False)[0] is DeviceStatus.DEGRADED  # not marked: degraded
    assert rollup(up, health, None, False, down_checks=frozenset({"traps-down"}))[0] is (
        DeviceStatus.DOWN)
    assert rollup(up, {"traps-down": up}, None, False,
                  down_checks=frozenset({"traps-down"}))[0] is DeviceStatus.UP
    assert rollup(up, health, None, True, down_checks=frozenset({"traps-down"}))[0] is (
        DeviceStatus.MAINTENANCE)
