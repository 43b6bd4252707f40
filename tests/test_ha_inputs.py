"""Devices that speak first, with several pollers of one site on one PostgreSQL (issue 17).

As found (push): every poller watched every push check, but a kiosk calls ONE URL. When that
poller did not own the kiosk, the pipeline dropped the beat; the owner never saw a beat and,
``expect_every + grace`` after start-up, failed the check and paged DOWN for a kiosk beating
fine. And at a take-over the new owner watched from its own start-up, not the kiosk's last beat.
Now beats go through the store (monitor/relay.py): three real daemons (``hallmon run --mock``)
on one real PostgreSQL, the kiosk beating only to the poller that neither owns it nor takes it
over: it stays UP, ``status=down`` beats fail it within a bounded relay delay, kill -9 of its
owner pages nothing, and a real silence still fails it once (a webhook receiver counts pages).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from monitor.ha import assignment
from monitor.inventory.load import parse_inventory
from tests.agents.daemon import (
    HallmonProcess,
    WebhookReceiver,
    node,
    small_inventory,
    start_together,
    write_atomically,
)

LEASE, HEARTBEAT = 3.0, 1.0
TOKEN = "kiosk-1f-app-4c0ffee5d1e7a9b3"
KIOSK = "kiosk-1f"
EXPECT, GRACE = 3.0, 3.0  # a silence fails after 6 s alone, 9 s with the relay's slack
POLLERS = ("p0", "p1", "p2")
KIOSK_APP = {"label": "自助终端应用", "checks": [
    {"name": "heartbeat", "kind": "push", "role": "reachability",
     "expect_every": f"{EXPECT:g}s", "grace": f"{GRACE:g}s", "token": "${KIOSK_TOKEN}"}]}
DEVICES = [node(f"n-{i:02d}", f"127.30.0.{i + 1}") for i in range(5)] + [
    node(KIOSK, "127.30.1.1", cls="kiosk_app")]


def _hall(kiosk: bool = True) -> str:
    notifications = {
        "language": "en",
        "channels": {"hook": {"type": "webhook", "url": "${HALLMON_TEST_WEBHOOK}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": "1s"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    return small_inventory(DEVICES if kiosk else DEVICES[:-1], notifications=notifications,
                           classes={"kiosk_app": KIOSK_APP})


def _firing(hook: WebhookReceiver) -> list[dict[str, Any]]:
    return [a for b in hook.bodies() for a in b["alerts"]
            if a["labels"].get("device") == KIOSK and a["status"] == "firing"]


class Kiosk:
    """Calls one poller's push URL every 0.2 s from a thread: ``mode`` up, down or silent."""

    def __init__(self, base: str) -> None:
        self.mode = "up"
        self.sent = 0
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=base, timeout=5.0)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kiosk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if self.mode == "silent":
                continue
            params = {"status": "down", "msg": "queue app crashed"} if self.mode == "down" \
                else {}
            try:
                r = self._client.get(f"/api/v1/push/{TOKEN}", params=params)
                r.raise_for_status()
                self.sent += 1
            except httpx.HTTPError:
                pass  # the test's waits say what went wrong


def test_a_kiosk_beating_to_a_poller_that_does_not_own_it(tmp_path: Path,
                                                          pg_server: Any) -> None:
    inv = parse_inventory(_hall(), env={"KIOSK_TOKEN": TOKEN, "HALLMON_TEST_WEBHOOK": "x"})
    owner = assignment(inv, POLLERS)[KIOSK]
    successor = assignment(inv, [p for p in POLLERS if p != owner])[KIOSK]
    (called,) = set(POLLERS) - {owner, successor}  # neither owns the kiosk nor takes it over
    url = pg_server.new_database()
    with WebhookReceiver() as hook:
        pollers = {
            name: HallmonProcess(
                tmp_path / name, _hall(kiosk=False), autostart=False,
                env={"HALLMON_TEST_WEBHOOK": hook.url, "KIOSK_TOKEN": TOKEN},
                args=(f"--storage.url={url}", f"--ha.lease={LEASE:g}",
                      f"--ha.heartbeat={HEARTBEAT:g}", f"--ha.poller-id={name}"))
            for name in POLLERS
        }
        try:
            start_together(list(pollers.values()))
            first, later, rx = pollers[owner], pollers[successor], pollers[called]
            first.wait_for(lambda: all(p.sample("hallmon_poller_live") == 3
                                       for p in pollers.values()), 30, "three live leases")
            with Kiosk(rx.base) as kiosk:
                # The kiosk joins by a reload, the poller it calls first: each poller watches
                # it from its reload (pollers ready seconds apart must not fail it at start).
                for p in (rx, first, later):
                    write_atomically(p.inventory, _hall())
                    assert p.http.post("/-/reload").status_code == 200
                _beats_reach_the_owner(first, rx, hook, kiosk)
                _down_beats_fail_it_promptly(first, hook, kiosk)
                _kill_the_owner(first, later, hook, kiosk)
                _a_silence_fails_it_once(later, hook, kiosk)
            assert rx.sample("hallmon_inputs_relayed_total", input="push",
                             direction="out") >= kiosk.sent > 0
            assert "kiosk-1f-app" not in "".join(p.log() for p in pollers.values())  # token
        finally:
            for p in reversed(pollers.values()):
                p.__exit__()


def _beats_reach_the_owner(owner: HallmonProcess, rx: HallmonProcess, hook: WebhookReceiver,
                           kiosk: Kiosk) -> None:
    owner.wait_for(lambda: owner.status(KIOSK) == "up", 30, "the owner to see the kiosk up")
    # Longer than a silence takes to fail (9 s): no false DOWN on any poller.
    until = time.monotonic() + 2 * (EXPECT + GRACE + 3.0)
    while time.monotonic() < until:
        assert not _firing(hook), _firing(hook)
        time.sleep(0.5)
    assert owner.status(KIOSK) == "up" and rx.status(KIOSK) == "up"
    assert owner.device(KIOSK)["poller"] == rx.device(KIOSK)["poller"]
    assert (owner.sample("hallmon_inputs_relayed_total", input="push", direction="in")
            or 0) > 10


def _down_beats_fail_it_promptly(owner: HallmonProcess, hook: WebhookReceiver,
                                 kiosk: Kiosk) -> None:
    kiosk.mode = "down"
    sent = time.monotonic()
    owner.wait_for(lambda: owner.status(KIOSK) == "down", 30, "the reported DOWN",
                   every=0.05)
    took = time.monotonic() - sent
    print(f"a status=down beat to another poller failed the check on its owner in {took:.2f} s")
    row = owner.device(KIOSK)
    assert "reported down: queue app crashed" in row["cause"], row
    owner.wait_for(lambda: len(_firing(hook)) == 1, 20, "the DOWN page")
    kiosk.mode = "up"
    owner.wait_for(lambda: owner.status(KIOSK) == "up", 30, "the kiosk back up")


def _kill_the_owner(owner: HallmonProcess, successor: HallmonProcess, hook: WebhookReceiver,
                    kiosk: Kiosk) -> None:
    pages = len(_firing(hook))
    owner.kill()
    successor.wait_for(lambda: successor.device(KIOSK)["poller"] == successor_id(successor)
                       and successor.status(KIOSK) == "up", 30,
                       "the successor to own the kiosk and see it up")
    until = time.monotonic() + 2 * (EXPECT + GRACE + 3.0)
    while time.monotonic() < until:
        assert len(_firing(hook)) == pages, _firing(hook)  # no false DOWN at the take-over
        time.sleep(0.5)
    assert successor.status(KIOSK) == "up"


def successor_id(p: HallmonProcess) -> str:
    return str(p.http.get("/api/v1/pollers").json()["poller"])


def _a_silence_fails_it_once(successor: HallmonProcess, hook: WebhookReceiver,
                             kiosk: Kiosk) -> None:
    pages = len(_firing(hook))
    kiosk.mode = "silent"
    successor.wait_for(lambda: successor.status(KIOSK) == "down", 30, "the silence to fail it")
    assert "no heartbeat for" in successor.device(KIOSK)["cause"]
    successor.wait_for(lambda: len(_firing(hook)) == pages + 1, 20, "the page for the silence")
    time.sleep(2 * (EXPECT + GRACE))  # room for a second (wrong) page
    assert len(_firing(hook)) == pages + 1, _firing(hook)


# ---- in process: two pollers' Heartbeats over one real store, clocks driven by hand -----------


async def test_beats_relayed_through_the_store_with_a_skewed_database_clock(
        tmp_path: Path) -> None:
    """p1 receives the beats of p0's kiosk: p0 applies them (ok recovers, down fails) at the
    time they were received, although the database's clock is an hour ahead of both pollers;
    each beat once; the non-owner never fails a check; a poller taking the kiosk over watches
    from its last beat anywhere. A poller alone (no relay) writes nothing per beat."""
    from datetime import UTC, datetime

    from monitor.inventory import Inventory
    from monitor.pipeline import Pipeline
    from monitor.push import Heartbeats
    from monitor.relay import RELAY_SLACK, BeatRelay
    from monitor.state import DeviceStatus
    from monitor.store import Store
    from monitor.store.aio import AsyncStore
    from tests.conftest import Clock
    from tests.test_push import HALL, OTHER, T0
    from tests.test_push import TOKEN as KIOSK_TOKEN

    (tmp_path / "display.token").write_text(OTHER + "\n")
    inv = Inventory.model_validate(HALL, context={"env": {"KIOSK_TOKEN": KIOSK_TOKEN},
                                                  "base_dir": str(tmp_path)})
    clock = Clock(T0)
    db_clock = lambda: datetime.fromtimestamp(clock.now + 3600, UTC)  # noqa: E731
    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", clock=db_clock))
    everything = {d.id for d in inv.devices}
    try:
        pipes, beats = [], []
        for name, owned in (("p0", set(everything)), ("p1", set())):
            p = Pipeline(inv, store=store, clock=clock)
            p.owned = owned
            hb = Heartbeats(inv, p.handle, clock)
            hb.owned, hb.relay = owned, BeatRelay(store, name, clock, linger=0)
            pipes.append(p)
            beats.append(hb)
        (p0, p1), (hb0, hb1) = pipes, beats
        kiosk = ("kiosk-3f", "heartbeat")

        async def relay(hb: Heartbeats) -> int:
            await store.drain()
            assert hb.relay is not None
            return await hb.relayed_beats(await hb.relay.read())

        clock.now = T0 + 10
        assert await hb1.beat(KIOSK_TOKEN) is not None  # to the poller that does not own it
        assert p1.state.status("kiosk-3f") is DeviceStatus.UNKNOWN  # not applied there
        await store.drain()  # (a driven clock: written before it moves on)
        clock.now = T0 + 11  # read a second later
        assert await relay(hb0) == 1
        assert p0.state.status("kiosk-3f") is DeviceStatus.UP
        assert abs(hb0._by_key[kiosk].last - (T0 + 10)) < 0.5  # received at, in p0's clock
        assert await relay(hb0) == 0  # the overlap re-reads it: applied once
        assert hb1.relayed == {"out": 1, "in": 0} and hb0.relayed == {"out": 0, "in": 1}

        await hb1.beat(KIOSK_TOKEN, "down", "蓝屏")
        assert await relay(hb0) == 1
        assert p0.state.statuses["kiosk-3f"] == (DeviceStatus.DOWN, "reported down: 蓝屏")
        clock.now = T0 + 20
        await hb1.beat(KIOSK_TOKEN)
        assert await relay(hb0) == 1 and p0.state.status("kiosk-3f") is DeviceStatus.UP

        # A silence: only the owner fails it, RELAY_SLACK after expect_every + grace.
        clock.now = T0 + 20 + 90 + RELAY_SLACK - 0.1
        assert await hb1.expire() == 0 and await hb0.expire() == 1  # the display (no beat)
        assert p0.state.status("kiosk-3f") is DeviceStatus.UP
        clock.now = T0 + 20 + 90 + RELAY_SLACK + 0.1
        assert await hb1.expire() == 0 and await hb0.expire() == 1
        assert p0.state.status("kiosk-3f") is DeviceStatus.DOWN

        # p0 gets a beat itself; p1 reads it and, taking the kiosk over, watches from it.
        clock.now = T0 + 200
        await hb0.beat(KIOSK_TOKEN)
        await store.drain()
        clock.now += 1
        assert await relay(hb1) == 0  # not p1's device (yet): its watch moves on only
        p0.owned = hb0.owned = set()
        p1.owned = hb1.owned = set(everything)
        clock.now = T0 + 200 + 90 + RELAY_SLACK - 1  # long past p1's start-up: not failed
        assert await hb1.expire() == 1  # the display, which never beat
        assert p1.state.status("kiosk-3f") is DeviceStatus.UNKNOWN
        clock.now += 2
        assert await hb1.expire() == 1
        assert p1.state.status("kiosk-3f") is DeviceStatus.DOWN

        # One poller alone: no relay, no write per beat.
        alone = Heartbeats(inv, Pipeline(inv, store=store, clock=clock).handle, clock)
        await alone.beat(KIOSK_TOKEN)
        await store.drain()
        before = dict(store.writes)
        for _ in range(5):
            await alone.beat(KIOSK_TOKEN)
        await store.drain()
        assert store.writes == before
    finally:
        await store.aclose()


# ---- traps: to any poller of the site, applied by the device's owner --------------------------


def _trap_pollers(tmp_path: Path, url: str, hook: str) -> dict[str, HallmonProcess]:
    from tests.agents.daemon import free_port
    from tests.test_e2e_traps import ENV
    from tests.test_e2e_traps import _hall as trap_hall

    return {name: HallmonProcess(
        tmp_path / name, trap_hall(), autostart=False, env={**ENV, "HOOK_URL": hook},
        args=(f"--storage.url={url}", f"--ha.lease={LEASE:g}", f"--ha.heartbeat={HEARTBEAT:g}",
              f"--ha.poller-id={name}", f"--traps.listen-address=127.0.0.1:{free_port()}"))
        for name in POLLERS}


def _trap_port(p: HallmonProcess) -> int:
    return int(next(a for a in p.args if a.startswith("--traps.")).rsplit(":", 1)[1])


def test_a_trap_to_a_poller_that_does_not_own_the_device(tmp_path: Path,
                                                         pg_server: Any) -> None:
    """As found: a poller dropped the traps of devices it did not own (reason ``not_owned``),
    so with three pollers and a device sending to one or two of them most traps were lost.
    Now the LED controller's linkDown sent to the poller that neither owns it nor takes it
    over makes it DOWN on its owner (one page); the same notification sent to the owner and
    to another poller is applied once; a linkDown sent just after kill -9 of the owner is
    applied by the poller taking the device over (a second page, once)."""
    import socket

    from tests.test_e2e_traps import ENV, LINK_DOWN, LINK_UP, _trap
    from tests.test_e2e_traps import _hall as trap_hall
    from tests.test_snmp_trap import _v2_trap

    led = "led-1"
    inv = parse_inventory(trap_hall(), env={**ENV, "HOOK_URL": "x"})
    owner = assignment(inv, POLLERS)[led]
    successor = assignment(inv, [p for p in POLLERS if p != owner])[led]
    (called,) = set(POLLERS) - {owner, successor}
    url = pg_server.new_database()
    with WebhookReceiver() as hook:
        pollers = _trap_pollers(tmp_path, url, hook.url)
        try:
            start_together(list(pollers.values()))
            first, later, rx = pollers[owner], pollers[successor], pollers[called]
            first.wait_for(lambda: all(p.sample("hallmon_poller_live") == 3
                                       for p in pollers.values()), 30, "three live leases")

            def pages() -> list[str]:
                return [a["status"] for b in hook.bodies() for a in b["alerts"]
                        if a["labels"].get("device") == led]

            first.wait_for(lambda: first.status(led) == "up", 30, "led-1 up on its owner")
            _trap(_trap_port(rx), "127.34.0.11", LINK_DOWN, 1)
            first.wait_for(lambda: first.status(led) == "down", 20, "the relayed linkDown")
            assert "设备网络链路断开 (ifIndex=1)" in first.device(led)["cause"]
            first.wait_for(lambda: pages() == ["firing"], 20, "one DOWN page")
            assert rx.sample("hallmon_inputs_relayed_total", input="trap",
                             direction="out") == 1
            assert first.sample("hallmon_inputs_relayed_total", input="trap",
                                direction="in") == 1

            # One notification, two destinations (the owner and another poller): once.
            datagram = _v2_trap([("1.3.6.1.2.1.2.2.1.1.2", 0x02, 2)], ENV[
                "TRAP_COMMUNITY"].encode())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.34.0.11", 0))
                for p in (first, rx):
                    s.sendto(datagram, ("127.0.0.1", _trap_port(p)))
            first.wait_for(lambda: first.sample("hallmon_traps_dropped_total",
                                                reason="duplicate") == 1, 20,
                           "the relayed copy told apart")
            assert first.sample("hallmon_traps_received_total", device=led, oid=LINK_DOWN,
                                outcome="matched") == 2
            for ifindex in (1, 2):
                _trap(_trap_port(rx), "127.34.0.11", LINK_UP, ifindex)
            first.wait_for(lambda: first.status(led) == "up", 20, "the relayed linkUps")
            first.wait_for(lambda: pages() == ["firing", "resolved"], 20, "one recovery")

            # The owner dies; a linkDown comes before anybody noticed: the successor has it.
            first.kill()
            _trap(_trap_port(rx), "127.34.0.11", LINK_DOWN, 3)
            later.wait_for(lambda: later.devices()[led]["poller"] == successor
                           and later.status(led) == "down", 30,
                           "the poller taking led-1 over to apply the linkDown")
            later.wait_for(lambda: pages() == ["firing", "resolved", "firing"], 20,
                           "the second DOWN page")
            time.sleep(2.0)  # room for a second (wrong) page
            assert pages() == ["firing", "resolved", "firing"], hook.bodies()
            assert (later.sample("hallmon_inputs_relayed_total", input="trap",
                                 direction="in") or 0) >= 1
            assert all(p.sample("hallmon_traps_dropped_total", reason="not_owned") is None
                       for p in (later, rx))
            assert ENV["TRAP_COMMUNITY"] not in "".join(p.log() for p in pollers.values())
        finally:
            for p in reversed(pollers.values()):
                p.__exit__()


# ---- the store's side (SQLite and PostgreSQL) ------------------------------------------------


def test_varbinds_go_through_json_as_they_were() -> None:
    from monitor.relay import decode_varbinds, encode_varbinds

    vbs = (("1.3.6.1.2.1.2.2.1.1.3", 2, 3), ("1.3.6.1.2.1.2.2.1.2.3", 4, b"\xffGi0/3\x00"),
           ("1.3.6.1.4.1.99.1", 6, "1.3.6.1.4.1.99.0.1"), ("1.3.6.1.4.1.99.2", 5, None))
    assert decode_varbinds(encode_varbinds(vbs)) == vbs


def test_relayed_traps_are_claimed_once_by_their_owner_and_purged_when_stale(url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from monitor.relay import TRAP_MAX_AGE
    from monitor.store import Store

    at = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    now = [at]
    a = Store(url, site="hall-a", clock=lambda: now[0])
    other = Store(url, site="hall-b", clock=lambda: now[0])
    try:
        assert a.relay_traps("p0", [("led-1", "1.3.6.1.6.3.1.1.5.3", 7, "[]", 0.0),
                                    ("sw-1", "1.3.6.1.6.3.1.1.5.3", 8, "[]", 0.5),
                                    ("led-1", "1.3.6.1.6.3.1.1.5.4", 9, "[]", 0.0)]) == 3
        other.relay_traps("q0", [("led-1", "1.3.6.1.6.3.1.1.5.3", 1, "[]", 0.0)])
        _, got, purged = a.claim_traps({"led-1"}.__contains__, TRAP_MAX_AGE)
        assert [(t.device_id, t.uptime, t.poller) for t in got] == [("led-1", 7, "p0"),
                                                                    ("led-1", 9, "p0")]
        assert purged == 0
        assert a.claim_traps({"led-1"}.__contains__, TRAP_MAX_AGE)[1] == []  # once
        if url.startswith("sqlite"):  # the database's clock is the store's: the age is kept
            now_db = a.claim_traps(lambda d: False, TRAP_MAX_AGE)[0]
            assert now_db == at
        now[0] = at + timedelta(seconds=TRAP_MAX_AGE + 1)
        if url.startswith("sqlite"):  # nobody claimed sw-1's in time (say it left)
            assert a.claim_traps(lambda d: False, TRAP_MAX_AGE)[2] == 1
        assert [t.device_id for t in other.claim_traps(
            {"led-1"}.__contains__, TRAP_MAX_AGE * 1e6)[1]] == ["led-1"]  # its own site's
    finally:
        a.close()
        other.close()


def test_beats_are_read_back_with_the_databases_time(url: str) -> None:
    from monitor.store import Store

    s = Store(url, site="hall-a")
    try:
        s.record_beats("p1", [("kiosk-1", "heartbeat", "up", "", 0.0),
                              ("kiosk-2", "app", "down", "蓝屏", 2.0)])
        now, rows = s.beats_since(None, overlap=10.0)
        got = {r.device_id: r for r in rows}
        assert set(got) == {"kiosk-1", "kiosk-2"}
        assert got["kiosk-2"].status == "down" and got["kiosk-2"].message == "蓝屏"
        age = (now - got["kiosk-2"].at).total_seconds()
        assert 2.0 <= age < 60.0  # received 2 s before its write
        s.record_beats("p2", [("kiosk-1", "heartbeat", "up", "", 0.0)])  # one row per check
        assert [r.poller for r in s.beats_since(now, 10.0)[1] if r.device_id == "kiosk-1"] \
            == ["p2"]
        assert s.beats_since(now, overlap=-60.0)[1] == []  # nothing newer than a minute ahead
    finally:
        s.close()


async def test_traps_waiting_to_be_relayed_are_bounded(tmp_path: Path) -> None:
    """A flood of another poller's device's traps: at most TRAPS_PENDING wait for their write;
    the rest are refused (the receiver counts them as relay_full), and what waited lands."""
    from monitor.relay import TRAPS_PENDING, TrapRelay
    from monitor.store import Store
    from monitor.store.aio import AsyncStore

    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}"))
    try:
        relay = TrapRelay(store, "p0")
        vbs = (("1.3.6.1.2.1.2.2.1.1.1", 2, 1),)
        sent = [relay.send("led-1", "1.3.6.1.6.3.1.1.5.3", n, vbs)
                for n in range(TRAPS_PENDING + 5)]  # no await: the write cannot run meanwhile
        assert sent.count(True) == TRAPS_PENDING and sent[-5:] == [False] * 5
        await store.drain()
        got = await relay.claim({"led-1"}.__contains__)
        assert len(got) == TRAPS_PENDING and got[0].varbinds == vbs
        assert [t.uptime for t in got] == list(range(TRAPS_PENDING))  # in order
        assert relay.send("led-1", "1.3.6.1.6.3.1.1.5.4", None, ())  # room again
    finally:
        await store.aclose()


async def test_beats_linger_to_share_a_write_and_a_stop_flushes_them(tmp_path: Path) -> None:
    from monitor.relay import BeatRelay
    from monitor.store import Store
    from monitor.store.aio import AsyncStore

    store = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}"))
    try:
        relay = BeatRelay(store, "p0", linger=60.0)  # never by its timer in this test
        for i in range(20):
            relay.record(f"kiosk-{i}", "heartbeat", "up", "")
        relay.record("kiosk-0", "heartbeat", "down", "蓝屏")  # the latest of a check wins
        await store.drain()
        assert (await store.run(store.store.beats_since, None, 60.0))[1] == []
        before = store.writes["ok"]
        relay.flush()  # as Heartbeats.stop does
        await store.drain()
        assert store.writes["ok"] == before + 1  # one write for 21 beats
        rows = (await store.run(store.store.beats_since, None, 60.0))[1]
        assert len(rows) == 20
        assert {r.device_id: (r.status, r.message) for r in rows}["kiosk-0"] == ("down", "蓝屏")
    finally:
        await store.aclose()


async def test_a_receiver_relays_other_pollers_traps_and_applies_a_copy_once(
        tmp_path: Path) -> None:
    """Two pollers' real receivers and pipelines on one store (datagrams through the path a
    socket feeds): b relays the kiosk's linkDown to a, which applies it; the same notification
    sent to a itself is a copy; a flood to b is relayed at most RELAYED_PER_SECOND (burst 2 x)
    and the rest counted as relay_full."""
    from monitor.receiver import RELAYED_PER_SECOND, TrapReceiver
    from monitor.relay import TrapRelay
    from monitor.state import DeviceStatus
    from monitor.store import Store
    from monitor.store.aio import AsyncStore
    from tests.conftest import Clock
    from tests.test_traps_store import KIOSK, LINK_DOWN, Poller, _datagram, _inventory

    astore = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"))
    try:
        inv = _inventory()
        a, b = Poller(astore, inv), Poller(astore, inv)
        clock = Clock(time.time())  # b's budgets do not refill during the flood
        b.receiver = TrapReceiver(inv, b.pipeline.handle, lambda dev: None, store=astore,
                                  per_device_per_second=1e6, max_per_second=1e6, clock=clock)
        for p, name, mine in ((a, "a", {KIOSK[0]}), (b, "b", set())):
            p.pipeline.owned = p.receiver.owned = mine
            p.receiver.relay = TrapRelay(astore, name)
        await a.up(KIOSK[0])
        await b.send(KIOSK, _datagram(LINK_DOWN, 1))
        assert b.receiver.relayed == {"out": 1, "in": 0} and b.receiver.book.holds == {}
        assert await astore.drain(30)
        assert await b.receiver.claim_relayed() == 0  # not b's device: left for a
        assert await a.receiver.claim_relayed() == 1
        await a.receiver.drain()
        assert a.pipeline.state.status(KIOSK[0]) is DeviceStatus.DOWN
        assert a.receiver.relayed == {"out": 0, "in": 1}
        await a.send(KIOSK, _datagram(LINK_DOWN, 1))  # the same notification, to a as well
        assert a.receiver.dropped == {"duplicate": 1}
        assert sum(a.receiver.received.values()) == 1
        await a.send(KIOSK, _datagram(LINK_DOWN, 2))  # another port: news
        assert sum(a.receiver.received.values()) == 2

        burst = int(2 * RELAYED_PER_SECOND)
        for _ in range(burst + 50):
            b.receiver.datagram_received(_datagram(LINK_DOWN, 3), (KIOSK[1], 40000))
        assert b.receiver.relayed["out"] == 1 + burst - 1  # the bucket had lent one already
        assert b.receiver.dropped == {"relay_full": 51}
        assert await astore.drain(30)
        got = 0
        while n := await a.receiver.claim_relayed():
            got += n
        assert got == burst - 1
        assert a.receiver.dropped["duplicate"] == 1 + burst - 2  # one notification, its copies
    finally:
        await astore.aclose()


async def test_reads_while_postgresql_is_away_are_logged_once_a_minute_not_every_second(
        tmp_path: Path, own_pg: Any, caplog: Any) -> None:
    """As found reading the relay: with the database away, both relay loops (push beats, trap
    claims) logged a warning on every read, one a second each, per poller. Now the first
    failure, then one line a minute with the count, and one line when reads work again."""
    import asyncio
    import logging

    from monitor.inventory import Inventory
    from monitor.push import Heartbeats
    from monitor.relay import BeatRelay
    from monitor.store import Store
    from monitor.store.aio import AsyncStore
    from tests.test_push import HALL, OTHER
    from tests.test_push import TOKEN as KIOSK_TOKEN

    (tmp_path / "display.token").write_text(OTHER + "\n")
    inv = Inventory.model_validate(HALL, context={"env": {"KIOSK_TOKEN": KIOSK_TOKEN},
                                                  "base_dir": str(tmp_path)})

    async def handle(*_: object) -> None:
        return None

    store = AsyncStore(Store(own_pg.new_database()))
    hb = Heartbeats(inv, handle)
    hb.owned, hb.relay = {d.id for d in inv.devices}, BeatRelay(store, "p0", linger=0)
    caplog.set_level(logging.WARNING, logger="hallmon.relay")

    def lines(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    hb.start()
    try:
        with own_pg.stopped():
            for _ in range(1200):  # bounded: at least 4 failed reads (one a second)
                await asyncio.sleep(0.05)
                if hb.read_failures.failures >= 4:
                    break
            assert hb.read_failures.failures >= 4
            assert lines("cannot read the push beats") == 1, caplog.text
            assert "1 failed read(s) in a row" in caplog.text
        for _ in range(600):
            await asyncio.sleep(0.05)
            if lines("reading the push beats other pollers received again"):
                break
        assert lines("reading the push beats other pollers received again") == 1, caplog.text
        assert lines("cannot read the push beats") == 1
    finally:
        await hb.stop()
        await store.aclose()
