"""Held trap conditions and trap events in the store (SQLite and real PostgreSQL).

- The store: a device's holds replaced as a whole, kept apart per site; events pruned to the
  retention by count and age; pages of events by id.
- The receiver with a store (real v2c datagrams through its datagram path): a flood of event
  traps while the store is busy is batched (a few writes, not one per trap), bounded (at most
  ``EVENTS_PENDING`` wait) and the rest counted as dropped.
- Resume: a held condition comes back DOWN with its cause and its clear ends it; a device
  removed from the inventory, or a rule removed, drops its condition with a log line.
- Pollers sharing the site: the poller that takes a device over resumes its held conditions,
  and the clearing trap (to the new owner) recovers it; the old owner ignores its traps.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.inventory import Inventory
from monitor.inventory.profiles import COLD_START, IF_INDEX, LINK_DOWN, LINK_UP
from monitor.pipeline import Pipeline
from monitor.receiver import EVENTS_PENDING, TrapReceiver
from monitor.state import DeviceStatus
from monitor.store import HoldRow, Store
from monitor.store.aio import AsyncStore
from probes.snmp_ber import encode_varbinds
from tests.test_pipeline import OK, Recorder, check
from tests.test_receiver import ENV, HALL
from tests.test_snmp_trap import TRAP_V2, _len

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
COMMUNITY = ENV["TRAP_COMMUNITY"].encode()
SWITCH, KIOSK = ("sw-1f", "127.33.0.1"), ("kiosk-1", "127.33.0.11")


def _datagram(trap_oid: str, ifindex: int | None = None) -> bytes:
    """A v2c trap (sysUpTime.0, snmpTrapOID.0[, ifIndex.N]) in the poller's own BER."""
    vbs: list[Any] = [("1.3.6.1.2.1.1.3.0", 0x43, 1), ("1.3.6.1.6.3.1.1.4.1.0", 0x06, trap_oid)]
    if ifindex is not None:
        vbs.append((f"{IF_INDEX}.{ifindex}", 0x02, ifindex))
    pdu = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + encode_varbinds(vbs)
    msg = (b"\x02\x01\x01\x04" + bytes([len(COMMUNITY)]) + COMMUNITY + bytes([TRAP_V2])
           + _len(len(pdu)) + pdu)
    return b"\x30" + _len(len(msg)) + msg


def _hold(device: str, rule: str = "link-down", instance: str = "1") -> HoldRow:
    return HoldRow(device, rule, instance, "degraded", f"端口断开 (ifIndex={instance})", T,
                   T + timedelta(hours=1))


# ---- the store -----------------------------------------------------------------------------


def test_holds_are_replaced_per_device_and_kept_apart_per_site(store: Store) -> None:
    store.save_trap_holds({"sw-1": [_hold("sw-1", instance="1"), _hold("sw-1", instance="2")],
                           "sw-2": [_hold("sw-2")]})
    assert [(h.device_id, h.instance) for h in store.trap_holds()] == [
        ("sw-1", "1"), ("sw-1", "2"), ("sw-2", "1")]
    store.save_trap_holds({"sw-1": [_hold("sw-1", instance="2")]})  # port 1 came back
    assert store.trap_holds({"sw-1"}) == [_hold("sw-1", instance="2")]
    store.save_trap_holds({"sw-2": []})  # its last condition cleared
    assert [h.device_id for h in store.trap_holds()] == ["sw-1"]
    other = store.for_site("hall-b")
    assert other.trap_holds() == []
    other.save_trap_holds({"sw-1": [_hold("sw-1", instance="9")]})
    assert [h.instance for h in store.trap_holds()] == ["2"]  # each hall its own
    assert [h.instance for h in other.trap_holds()] == ["9"]


def test_events_are_pruned_by_count_and_age_and_paged_by_id(store: Store) -> None:
    store.clock = lambda: T  # type: ignore[method-assign]
    old = [("sw-1", "cold-start", "重启", COLD_START, T - timedelta(days=100))]
    assert store.add_trap_events(old) == 1  # older than the 90 days kept: pruned at once
    rows = [(f"dev-{i % 3}", "cold-start", f"重启 {i}", COLD_START, T + timedelta(seconds=i))
            for i in range(25)]
    assert store.add_trap_events(rows[:20], keep=15) == 5
    assert store.add_trap_events(rows[20:], keep=15) == 5
    newest = store.trap_events(limit=10)
    assert [e.message for e in newest] == [f"重启 {i}" for i in range(24, 14, -1)]
    page2 = store.trap_events(before=newest[-1].id, limit=10)
    assert [e.message for e in page2] == [f"重启 {i}" for i in range(14, 9, -1)]
    assert [e.message for e in store.trap_events(device="dev-1", limit=3)] == [
        "重启 22", "重启 19", "重启 16"]
    assert store.for_site("hall-b").trap_events() == []
    late = [("dev-0", "cold-start", "重启 25", COLD_START, T + timedelta(seconds=25))]
    assert store.add_trap_events(late, prune=False, keep=1) == 0  # pruned at the next pruning
    assert len(store.trap_events(limit=100)) == 16


# ---- the receiver with a store ---------------------------------------------------------------


class Poller:
    """One poller's pipeline and trap receiver on a shared store (no socket: datagrams go in
    through ``datagram_received``, the path a socket feeds)."""

    def __init__(self, store: AsyncStore, inventory: Inventory) -> None:
        self.inventory = inventory
        self.alerts = Recorder()
        self.pipeline = Pipeline(inventory, store=store, alerts=self.alerts, clock=time.time)
        self.receiver = TrapReceiver(inventory, self.pipeline.handle, lambda dev: None,
                                     store=store, per_device_per_second=1e6,
                                     max_per_second=1e6, queue_size=100_000)

    async def send(self, sender: tuple[str, str], data: bytes) -> None:
        self.receiver.datagram_received(data, (sender[1], 40000))
        await self.receiver.drain()

    async def resume(self, devices: set[str] | None = None) -> None:
        held = await self.receiver.resume(devices)
        await self.pipeline.resume(devices, held)

    async def up(self, *devices: str) -> None:
        for dev in devices:
            for _ in range(2):
                await self.pipeline.handle(check(self.inventory, dev, "ping"), OK)


def _inventory(hall: dict[str, Any] | None = None) -> Inventory:
    return Inventory.model_validate(hall or HALL, context={"env": ENV})


@pytest.fixture
async def astore(url: str) -> Any:
    s = AsyncStore(Store(url, timezone="Asia/Shanghai"))
    yield s
    await s.aclose()


async def test_a_flood_of_events_is_batched_bounded_and_counted(astore: AsyncStore) -> None:
    poller = Poller(astore, _inventory())
    busy, release = threading.Event(), threading.Event()

    def hold_the_store() -> None:  # a long import, the database away: writes wait
        busy.set()
        release.wait(30)

    astore.queue(hold_the_store)
    await asyncio.to_thread(busy.wait, 30)
    writes_before = astore.writes["ok"]
    flood = EVENTS_PENDING + 500
    for _ in range(flood):
        poller.receiver.datagram_received(_datagram(COLD_START), (SWITCH[1], 40000))
    assert poller.receiver.events_dropped == 500
    release.set()
    assert await astore.drain(30)
    assert poller.receiver.events_stored == EVENTS_PENDING
    # one write for the held store, one for every event that waited: not one per trap
    assert astore.writes["ok"] - writes_before <= 2
    rows = await astore.run(astore.store.trap_events, SWITCH[0], None, 1000)
    assert len(rows) == 1000 and rows[0].rule == "cold-start"


async def test_held_conditions_resume_and_their_clear_recovers(astore: AsyncStore) -> None:
    first = Poller(astore, _inventory())
    await first.up(SWITCH[0], KIOSK[0])
    await first.send(SWITCH, _datagram(LINK_DOWN, 24))
    await first.send(KIOSK, _datagram(LINK_DOWN, 1))
    assert first.pipeline.state.status(SWITCH[0]) is DeviceStatus.DEGRADED
    assert first.pipeline.state.status(KIOSK[0]) is DeviceStatus.DOWN
    assert await astore.drain(30)

    again = Poller(astore, _inventory())  # a restart on the same store
    await again.resume()
    await again.up(SWITCH[0], KIOSK[0])  # their pings answer
    assert again.pipeline.state.statuses[SWITCH[0]] == (
        DeviceStatus.DEGRADED, "traps: 端口断开 (ifIndex=24)")
    assert again.pipeline.state.status(KIOSK[0]) is DeviceStatus.DOWN
    assert "设备网络链路断开 (ifIndex=1)" in again.pipeline.state.statuses[KIOSK[0]][1]
    assert again.alerts.events == []  # nothing to tell: no recovery, no second "down"
    await again.send(SWITCH, _datagram(LINK_UP, 24))
    await again.send(KIOSK, _datagram(LINK_UP, 1))
    assert again.pipeline.state.status(SWITCH[0]) is DeviceStatus.UP
    assert again.pipeline.state.status(KIOSK[0]) is DeviceStatus.UP
    assert [(e.device_id, e.status) for e in again.alerts.events] == [
        (SWITCH[0], "up"), (KIOSK[0], "up")]
    assert await astore.drain(30)
    assert await astore.run(astore.store.trap_holds) == []


async def test_a_removed_device_or_rule_drops_its_held_condition(
    astore: AsyncStore, caplog: pytest.LogCaptureFixture,
) -> None:
    first = Poller(astore, _inventory())
    await first.send(SWITCH, _datagram(LINK_DOWN, 3))
    await first.send(KIOSK, _datagram(LINK_DOWN, 1))
    assert await astore.drain(30)
    assert len(await astore.run(astore.store.trap_holds)) == 2

    hall = copy.deepcopy(HALL)
    hall["devices"] = [d for d in hall["devices"] if d["id"] != KIOSK[0]]  # kiosk removed
    # the switch's own rule replaces the class's link-down: it no longer holds a condition
    sw = next(d for d in hall["devices"] if d["id"] == SWITCH[0])
    sw["trap_rules"] = [{"name": "link-down", "oid": LINK_DOWN, "action": "event",
                         "message": "端口断开"}]
    again = Poller(astore, _inventory(hall))
    with caplog.at_level(logging.INFO, logger="hallmon.traps"):
        await again.resume()
    assert again.receiver.book.holds == {}
    assert again.pipeline.state.status(SWITCH[0]) is not DeviceStatus.DEGRADED
    text = caplog.text
    assert "device kiosk-1 is no longer in the inventory" in text
    assert "device sw-1f: trap rule 'link-down' no longer holds degraded conditions" in text
    assert await astore.drain(30)
    assert await astore.run(astore.store.trap_holds) == []


async def test_the_poller_taking_a_device_over_resumes_its_held_conditions(pg_server: Any) -> None:
    astore = AsyncStore(Store(pg_server.new_database(), timezone="Asia/Shanghai"))
    try:
        inv = _inventory()
        a, b = Poller(astore, inv), Poller(astore, inv)
        for p, mine in ((a, {KIOSK[0]}), (b, {SWITCH[0]})):
            p.pipeline.owned = p.receiver.owned = set(mine)
        await a.up(KIOSK[0])
        await a.send(KIOSK, _datagram(LINK_DOWN, 1))
        assert a.pipeline.state.status(KIOSK[0]) is DeviceStatus.DOWN
        await b.send(KIOSK, _datagram(LINK_DOWN, 2))  # not b's device: nothing held there
        assert b.receiver.book.holds == {} and b.receiver.dropped["not_owned"] == 1
        assert await astore.drain(30)

        # a hands the kiosk over (App._rebalance's order): b resumes it, still DOWN, no page
        a.pipeline.owned = a.receiver.owned = set()
        a.pipeline.release({KIOSK[0]})
        a.receiver.release({KIOSK[0]})
        b.pipeline.owned = b.receiver.owned = {SWITCH[0], KIOSK[0]}
        await b.resume({KIOSK[0]})
        await b.up(KIOSK[0])
        assert b.pipeline.state.status(KIOSK[0]) is DeviceStatus.DOWN
        assert b.alerts.events == []
        assert a.receiver.book.holds == {}
        await a.send(KIOSK, _datagram(LINK_UP, 1))  # to the old owner: ignored there
        assert b.pipeline.state.status(KIOSK[0]) is DeviceStatus.DOWN
        await b.send(KIOSK, _datagram(LINK_UP, 1))
        assert b.pipeline.state.status(KIOSK[0]) is DeviceStatus.UP
        assert [(e.device_id, e.status) for e in b.alerts.events] == [(KIOSK[0], "up")]
        assert await astore.drain(30)
        assert await astore.run(astore.store.trap_holds) == []
    finally:
        await astore.aclose()


async def test_a_reload_that_removes_a_device_or_rule_drops_its_held_condition(
    astore: AsyncStore, caplog: pytest.LogCaptureFixture,
) -> None:
    poller = Poller(astore, _inventory())
    await poller.up(SWITCH[0], KIOSK[0])
    await poller.send(SWITCH, _datagram(LINK_DOWN, 3))
    await poller.send(KIOSK, _datagram(LINK_DOWN, 1))
    assert poller.pipeline.state.status(SWITCH[0]) is DeviceStatus.DEGRADED
    hall = copy.deepcopy(HALL)
    hall["devices"] = [d for d in hall["devices"] if d["id"] != KIOSK[0]]
    sw = next(d for d in hall["devices"] if d["id"] == SWITCH[0])
    sw["trap_rules"] = [{"name": "link-down", "oid": LINK_DOWN, "action": "event",
                         "message": "端口断开"}]
    inv = _inventory(hall)
    with caplog.at_level(logging.INFO, logger="hallmon.traps"):
        poller.pipeline.use(inv)  # the daemon's order (App._apply_inventory)
        poller.receiver.use(inv)
    await poller.receiver.drain()
    assert "device kiosk-1 left the inventory" in caplog.text
    assert "device sw-1f: trap rule 'link-down' no longer holds degraded conditions" in caplog.text
    assert poller.receiver.book.holds == {}
    assert poller.pipeline.state.status(SWITCH[0]) is DeviceStatus.UP  # nothing holds it now
    assert await astore.drain(30)
    assert await astore.run(astore.store.trap_holds) == []




async def test_traps_while_postgresql_is_away_land_when_it_is_back(own_pg: Any) -> None:
    astore = AsyncStore(Store(own_pg.new_database(), timezone="Asia/Shanghai"))
    try:
        poller = Poller(astore, _inventory())
        await poller.up(SWITCH[0])
        assert await astore.drain(30)
        with own_pg.stopped():
            for _ in range(50):
                await poller.send(SWITCH, _datagram(COLD_START))  # never waits for the store
            await poller.send(SWITCH, _datagram(LINK_DOWN, 7))  # (a coldStart clears links)
            assert poller.pipeline.state.status(SWITCH[0]) is DeviceStatus.DEGRADED
            assert poller.receiver.events_stored == 0
        assert await astore.drain(60)
        assert poller.receiver.events_stored == 50 and poller.receiver.events_dropped == 0
        assert len(await astore.run(astore.store.trap_events, None, None, 1000)) == 50
        assert [h.instance for h in await astore.run(astore.store.trap_holds)] == ["7"]
    finally:
        await astore.aclose()


async def test_a_group_commit_rolled_back_after_the_trap_writes_keeps_them(
        astore: AsyncStore) -> None:
    """Found at the group-commit merge: the receiver's coalesced writes take what is pending when
    they run. When a later write of the same batch failed (a lock, the server gone) the batch
    was rolled back and run again, but the second run found nothing pending: the held condition
    and the event were gone from the store while the daemon believed them written."""
    from sqlalchemy.exc import OperationalError

    poller = Poller(astore, _inventory())
    await poller.up(SWITCH[0])
    assert await astore.drain(30)
    busy, release = threading.Event(), threading.Event()

    def hold_the_store() -> None:  # the writes below queue up behind it: one batch
        busy.set()
        release.wait(30)

    tries = []

    def fails_once() -> None:  # after the trap writes, in their batch: a lost connection
        tries.append(1)
        if len(tries) == 1:
            raise OperationalError("INSERT ...", {}, ConnectionResetError("server closed"))

    astore.queue(hold_the_store)
    await asyncio.to_thread(busy.wait, 30)
    await poller.send(SWITCH, _datagram(COLD_START))  # an event (a coldStart clears links)
    await poller.send(SWITCH, _datagram(LINK_DOWN, 7))  # a held condition
    astore.queue(fails_once)
    release.set()
    assert await astore.drain(30)
    assert len(tries) == 2 and sum(astore.retries.values()) >= 1
    assert [h.instance for h in await astore.run(astore.store.trap_holds)] == ["7"]
    assert len(await astore.run(astore.store.trap_events, SWITCH[0], None, 10)) == 1
    assert poller.receiver.events_stored == 1
