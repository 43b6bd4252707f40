"""Held trap conditions across a daemon restart (found as a hall would find it): a switch's
uplink and a LED controller's own link are reported down by trap; the daemon is restarted
(SIGTERM, same store) while both are still down; their pings answer all along.

Before the held conditions were stored, the restarted daemon forgot them: the controller went
UP (a false "恢复" page, its incident closed) and the switch stayed DEGRADED for ever (the
linkUp that should clear it found nothing to clear). Now: no page at the restart, both
incidents stay open with the trap's cause, and the clearing trap recovers each (one page).
The trap events told before the restart are still in ``/api/v1/events`` after it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from tests.agents.daemon import (
    HallmonProcess,
    WebhookReceiver,
    free_port,
    node,
    parse_metrics,
    small_inventory,
    start_together,
)
from tests.test_e2e_traps import ENV, LINK_DOWN, LINK_UP, _statuses, _trap

COLD_START = "1.3.6.1.6.3.1.1.5.1"

# A switch that pings (no SNMP credential needed) and holds a port's linkDown until its linkUp.
EDGE_SWITCH = {
    "label": "交换机", "checks": [{"name": "ping", "kind": "icmp", "role": "reachability"}],
    "trap_rules": [
        {"name": "link-down", "oid": LINK_DOWN, "action": "degraded", "message": "端口断开",
         "instance": "1.3.6.1.2.1.2.2.1.1", "cleared_by": [LINK_UP], "hold": "1h"},
        {"name": "cold-start", "oid": COLD_START, "action": "event",
         "message": "设备重新启动（冷启动）"},
    ],
}


def _hall() -> str:
    devices = [node("sw-1", "127.35.0.1", cls="edge_switch"),
               node("led-1", "127.35.0.11", cls="led_controller"),
               node("pc-1", "127.35.0.21")]
    notifications = {
        "channels": {"hook": {"type": "webhook", "url": "${HOOK_URL}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": "200ms"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    doc = yaml.safe_load(small_inventory(devices, notifications=notifications,
                                         classes={"edge_switch": EDGE_SWITCH}))
    doc["credentials"] = {"traps": {"version": "2c", "community": "${TRAP_COMMUNITY}"}}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _open_incidents(db: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT device_id, status, cause FROM incidents "
                            "WHERE ended_at IS NULL").fetchall()
    return {dev: (status, cause) for dev, status, cause in rows}


def _pings_seen(d: HallmonProcess, devices: tuple[str, ...]) -> bool:
    return all(d.sample("hallmon_check_up", device=dev, check="ping") == 1 for dev in devices)


def test_restart_keeps_held_trap_conditions_and_the_clear_recovers(tmp_path: Path) -> None:
    port = free_port()
    with WebhookReceiver() as hook, HallmonProcess(
        tmp_path, _hall(), env={**ENV, "HOOK_URL": hook.url},
        args=(f"--traps.listen-address=127.0.0.1:{port}",),
    ) as d:
        d.wait_for(lambda: _pings_seen(d, ("sw-1", "led-1")), 30, "pings up")
        _trap(port, "127.35.0.1", LINK_DOWN, 24)  # the uplink, ifIndex 24
        _trap(port, "127.35.0.11", LINK_DOWN, 1)
        _trap(port, "127.35.0.1", COLD_START, 1)  # an event: history only
        d.wait_for(lambda: d.status("sw-1") == "degraded", 20, "sw-1 degraded by trap")
        d.wait_for(lambda: d.status("led-1") == "down", 20, "led-1 down by trap")
        d.wait_for(lambda: len(_statuses(hook, "sw-1")) == 1
                   and len(_statuses(hook, "led-1")) == 1, 20, "one message each")
        d.wait_for(lambda: len(d.http.get("/api/v1/events").json()) == 1, 20, "the event")
        before = _open_incidents(d.db)
        assert set(before) == {"sw-1", "led-1"}, before

        assert d.stop() == 0
        d.start()
        # The pings answer after the restart (several results each: thresholds are 2).
        d.wait_for(lambda: _pings_seen(d, ("sw-1", "led-1")), 30, "pings up after restart")
        # A hard UP ping is where the forgotten condition gave way; a few more results too.
        time.sleep(3.0)
        assert d.status("sw-1") == "degraded"
        assert d.status("led-1") == "down"
        assert "端口断开 (ifIndex=24)" in d.device("sw-1")["cause"]
        assert "设备网络链路断开 (ifIndex=1)" in d.device("led-1")["cause"]
        assert _open_incidents(d.db) == before  # the same incidents, still open
        time.sleep(1.0)  # group_wait 200 ms: a false recovery would have gone out by now
        assert _statuses(hook, "sw-1") == ["HallDeviceDegraded:firing"], hook.bodies()
        assert _statuses(hook, "led-1") == ["HallDeviceDown:firing"], hook.bodies()
        events = d.http.get("/api/v1/events").json()  # history survives the restart
        assert [(e["device"], e["rule"]) for e in events] == [("sw-1", "cold-start")]
        _trap(port, "127.35.0.1", COLD_START, 2)  # a second event: pages of one
        d.wait_for(lambda: len(d.http.get("/api/v1/events").json()) == 2, 20, "two events")
        newest = d.http.get("/api/v1/events", params={"limit": 1}).json()
        assert newest[0]["id"] > events[0]["id"]
        older = d.http.get("/api/v1/events", params={"limit": 1, "before": newest[0]["id"]})
        assert older.json() == events
        assert d.http.get("/api/v1/events", params={"limit": 0}).status_code == 422

        _trap(port, "127.35.0.1", LINK_UP, 24)
        _trap(port, "127.35.0.11", LINK_UP, 1)
        d.wait_for(lambda: d.status("sw-1") == "up" and d.status("led-1") == "up", 20,
                   "both up after linkUp")
        d.wait_for(lambda: len(_statuses(hook, "sw-1")) == 2
                   and len(_statuses(hook, "led-1")) == 2, 20, "one recovery each")
        time.sleep(1.0)
        assert _statuses(hook, "sw-1") == ["HallDeviceDegraded:firing",
                                           "HallDeviceDegraded:resolved"]
        assert _statuses(hook, "led-1") == ["HallDeviceDown:firing", "HallDeviceDown:resolved"]
        assert _open_incidents(d.db) == {}


# ---- two pollers sharing one PostgreSQL: a take-over keeps the held condition ----------------

LEDS = [node(f"led-{i}", f"127.35.1.{i + 1}", cls="led_controller") for i in range(6)]


def _ha_hall() -> str:
    notifications = {
        "channels": {"hook": {"type": "webhook", "url": "${HOOK_URL}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": "200ms"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    doc = yaml.safe_load(small_inventory(LEDS, notifications=notifications))
    doc["credentials"] = {"traps": {"version": "2c", "community": "${TRAP_COMMUNITY}"}}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _polled(d: HallmonProcess) -> set[str]:
    got = parse_metrics(d.metrics()).get("hallmon_device_last_poll_timestamp_seconds", [])
    return {labels["device"] for labels, v in got if v == v}


def test_the_poller_taking_a_device_over_keeps_its_held_trap_condition(
    tmp_path: Path, pg_server: Any,
) -> None:
    url = pg_server.new_database()
    ports = [free_port(), free_port()]
    with WebhookReceiver() as hook:
        pollers = [
            HallmonProcess(tmp_path / f"p{i}", _ha_hall(), autostart=False,
                           env={**ENV, "HOOK_URL": hook.url},
                           args=(f"--storage.url={url}", "--ha.lease=3", "--ha.heartbeat=1",
                                 f"--ha.poller-id=p{i}",
                                 f"--traps.listen-address=127.0.0.1:{ports[i]}"))
            for i in range(2)
        ]
        try:
            start_together(pollers)
            a = pollers[0]
            a.wait_for(lambda: all(p.sample("hallmon_poller_live") == 2 for p in pollers), 30,
                       "both pollers live")
            a.wait_for(lambda: len(_polled(pollers[0]) | _polled(pollers[1])) == len(LEDS), 30,
                       "every device polled")
            owner = 0 if _polled(pollers[0]) else 1
            victim, survivor = pollers[owner], pollers[1 - owner]
            led = sorted(_polled(victim))[0]
            address = next(d["address"] for d in LEDS if d["id"] == led)
            _trap(ports[1 - owner], address, LINK_DOWN, 1)  # to the poller not polling it
            _trap(ports[owner], address, LINK_DOWN, 1)
            victim.wait_for(lambda: victim.status(led) == "down", 20, f"{led} down by trap")
            victim.wait_for(lambda: _statuses(hook, led) == ["HallDeviceDown:firing"], 20,
                            "one page")
            # the survivor relays the trap of a device it does not poll to its owner
            # (through the store; tests/test_ha_inputs.py), where it renews the condition
            survivor.wait_for(lambda: (survivor.sample("hallmon_inputs_relayed_total",
                                                       input="trap", direction="out") or 0)
                              >= 1, 20, "the survivor relayed the trap")

            assert victim.stop() == 0  # a clean stop: the survivor takes its devices over
            survivor.wait_for(lambda: led in _polled(survivor), 30, f"{led} taken over")
            survivor.wait_for(lambda: survivor.sample("hallmon_check_up", device=led,
                                                      check="ping") == 1, 30, "its ping up")
            time.sleep(3.0)  # more pings: a forgotten condition would have recovered by now
            assert survivor.status(led) == "down"
            assert "设备网络链路断开 (ifIndex=1)" in survivor.device(led)["cause"]
            assert _statuses(hook, led) == ["HallDeviceDown:firing"], hook.bodies()

            _trap(ports[1 - owner], address, LINK_UP, 1)
            survivor.wait_for(lambda: survivor.status(led) == "up", 20, f"{led} up on linkUp")
            survivor.wait_for(lambda: len(_statuses(hook, led)) == 2, 20, "one recovery")
            time.sleep(1.0)
            assert _statuses(hook, led) == ["HallDeviceDown:firing", "HallDeviceDown:resolved"]
        finally:
            for p in reversed(pollers):
                p.__exit__()
