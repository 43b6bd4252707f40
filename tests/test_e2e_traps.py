"""Traps and heartbeats end to end (issue 16, "Done when"): the real daemon (mock polling) with
``--traps.listen-address`` on a loopback high port, real net-snmp ``snmptrap`` from device
addresses, a webhook capture server, and a push check fed over HTTP.

- A LED controller says its link is down (DOWN, one message); its ping then fails too (the
  simulation's fault): still one incident, no second message; linkUp after the ping recovered:
  one recovery message.
- A bounded flood from an unknown loopback sender leaves polling on time (overdue 0).
- A push check goes DOWN after its beats stop and UP on the next one.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.agents.daemon import HallmonProcess, WebhookReceiver, free_port, node, small_inventory
from tests.conftest import require_tool
from tests.test_snmp_trap import _v2_trap

LINK_DOWN, LINK_UP = "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4"
COMMUNITY = "hall-traps-e2e"
PUSH_TOKEN = "queue-display-7c9e2a41b5d3"


def _hall(faults: list[dict[str, Any]] | None = None, interval: str = "1s") -> str:
    devices = [
        node("ups-1", "127.34.0.40", cls="ups_plain"),
        node("nvr-1", "127.34.0.50", cls="led_controller"),
        node("cam-1", "127.34.0.60", cls="led_controller"),
        node("led-1", "127.34.0.11", cls="led_controller"),
        node("sw-1", "127.34.0.1", floor=2),
        *(node(f"n-{i}", f"127.34.1.{i + 1}") for i in range(20)),
        node("queue-1", "127.34.0.30", extra_checks=[
            {"name": "app", "kind": "push", "expect_every": "2s", "grace": "1s",
             "token": "${PUSH_TOKEN}"}]),
    ]
    notifications = {
        "channels": {"hook": {"type": "webhook", "url": "${HOOK_URL}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": "200ms"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    # a UPS with the built-in UPS trap rules but no SNMP polling (no credential needed)
    ups = {"label": "UPS", "checks": [{"name": "ping", "kind": "icmp", "role": "reachability"}],
           "trap_rules": [{"name": "on-battery", "oid": "1.3.6.1.2.1.33.2.0.1",
                           "action": "degraded", "message": "UPS市电中断，电池供电中",
                           "hold": "3m"}]}
    text = small_inventory(devices, interval=interval, timeout="500ms", thresholds=2,
                           faults=faults or [], notifications=notifications,
                           classes={"ups_plain": ups})
    doc = yaml.safe_load(text)
    doc["credentials"] = {
        "traps": {"version": "2c", "community": "${TRAP_COMMUNITY}"},
        "hall-v3": {"version": 3, "user": "monitor", "auth": "sha256",
                    "auth_key": "${V3_AUTH}", "priv": "aes", "priv_key": "${V3_PRIV}"},
    }
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


ENV = {"TRAP_COMMUNITY": COMMUNITY, "PUSH_TOKEN": PUSH_TOKEN, "V3_AUTH": "auth-pass-e2e",
       "V3_PRIV": "priv-pass-e2e"}
V3 = ["-v", "3", "-u", "monitor", "-l", "authPriv", "-a", "SHA-256", "-A", ENV["V3_AUTH"], "-x",
      "AES", "-X", ENV["V3_PRIV"]]


def _daemon(tmp_path: Path, text: str, trap_port: int, hook: str) -> HallmonProcess:
    return HallmonProcess(tmp_path, text, env={**ENV, "HOOK_URL": hook},
                          args=(f"--traps.listen-address=127.0.0.1:{trap_port}",))


def _trap(port: int, source: str, oid: str, ifindex: int) -> None:
    subprocess.run([require_tool("snmptrap"), f"--clientaddr={source}", "-v", "2c", "-c",
                    COMMUNITY, f"127.0.0.1:{port}",
                    *shlex.split(f"'' {oid} 1.3.6.1.2.1.2.2.1.1.{ifindex} i {ifindex}")],
                   check=True, timeout=20)


def _statuses(hook: WebhookReceiver, device: str) -> list[str]:
    out = []
    for body in hook.bodies():
        for alert in body["alerts"]:
            if alert["labels"].get("device") == device:
                out.append(f'{alert["labels"]["alertname"]}:{alert["status"]}')
    return out


def test_trap_then_failed_ping_one_incident_one_message(tmp_path: Path) -> None:
    port = free_port()
    # The ping of led-1 fails from 6 s to 22 s after start (simulation); the trap comes first
    # (or, on a slow start, during the outage: one incident either way).
    faults = [{"device": "led-1", "check": "ping", "mode": "down", "at": "6s",
               "duration": "16s"}]
    with WebhookReceiver() as hook, _daemon(tmp_path, _hall(faults), port, hook.url) as d:
        _trap(port, "127.34.0.11", LINK_DOWN, 1)
        d.wait_for(lambda: d.status("led-1") == "down", 20, "led-1 down by trap")
        checks = {c["name"]: c for c in d.device("led-1")["checks"]}
        assert checks["traps-down"]["kind"] == "trap" and checks["traps-down"]["hard"] == "down"
        assert checks["traps-down"]["last"]["error"] == "设备网络链路断开 (ifIndex=1)"
        d.wait_for(lambda: len(_statuses(hook, "led-1")) == 1, 20, "one message")
        _trap(port, "127.34.0.11", LINK_DOWN, 1)  # devices repeat themselves
        d.wait_for(lambda: d.sample("hallmon_check_up", device="led-1", check="ping") == 0, 30,
                   "the ping hard down as well")
        d.wait_for(lambda: d.sample("hallmon_check_up", device="led-1", check="ping") == 1, 30,
                   "the ping back")
        assert d.status("led-1") == "down"  # the link is still reported down
        assert len(_statuses(hook, "led-1")) == 1, hook.bodies()
        _trap(port, "127.34.0.11", LINK_UP, 1)
        d.wait_for(lambda: d.status("led-1") == "up", 20, "led-1 up after linkUp")
        d.wait_for(lambda: len(_statuses(hook, "led-1")) == 2, 20, "one recovery message")
        time.sleep(1.0)
        assert _statuses(hook, "led-1") == ["HallDeviceDown:firing", "HallDeviceDown:resolved"]
        assert d.sample("hallmon_traps_received_total", device="led-1", oid=LINK_DOWN,
                        outcome="matched") == 2
        assert d.sample("hallmon_traps_received_total", device="led-1", oid=LINK_UP,
                        outcome="matched") == 1
        assert d.sample("hallmon_checks_overdue_total") is not None
        assert COMMUNITY not in d.log()


def _net_snmp(tool: str, source: str, port: int, *args: str) -> int:
    return subprocess.run([require_tool(tool), f"--clientaddr={source}", *args[:-1],
                           f"127.0.0.1:{port}", *shlex.split(args[-1])],
                          timeout=30, capture_output=True).returncode


def test_v1_v3_and_inform_each_change_a_device_and_tell_it_once(tmp_path: Path) -> None:
    port = free_port()
    with WebhookReceiver() as hook, _daemon(tmp_path, _hall(), port, hook.url) as d:
        # v1 upsTrapOnBattery (enterprise upsTraps, specific 1) from the UPS
        assert _net_snmp("snmptrap", "127.34.0.40", port, "-v", "1", "-c", COMMUNITY,
                         "1.3.6.1.2.1.33.2 127.34.0.40 6 1 ''") == 0
        # v3 authPriv linkDown from one controller, a v2c inform from another (acked: rc 0)
        assert _net_snmp("snmptrap", "127.34.0.60", port, *V3, "-e", "0x8000000001023460",
                         f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.1 i 1") == 0
        assert _net_snmp("snmpinform", "127.34.0.50", port, "-v", "2c", "-c", COMMUNITY,
                         "-r", "0", "-t", "5", f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.1 i 1") == 0
        expected = {"ups-1": "degraded", "cam-1": "down", "nvr-1": "down"}
        for device, status in expected.items():
            d.wait_for(lambda dev=device, st=status: d.status(dev) == st, 20,
                       f"{device} {status}")
        names = {"degraded": "HallDeviceDegraded", "down": "HallDeviceDown"}
        for device in expected:
            d.wait_for(lambda dev=device: len(_statuses(hook, dev)) >= 1, 20, f"{device} told")
        time.sleep(1.0)
        for device, status in expected.items():
            assert _statuses(hook, device) == [f"{names[status]}:firing"], hook.bodies()


def test_flood_from_an_unknown_sender_leaves_polling_on_time(tmp_path: Path) -> None:
    port = free_port()
    with WebhookReceiver() as hook, _daemon(tmp_path, _hall(interval="5s"), port, hook.url) as d:
        time.sleep(1.0)  # past start-up
        before = d.sample("hallmon_checks_overdue_total")
        assert before is not None
        flood = _v2_trap([("1.3.6.1.2.1.2.2.1.1.3", 0x02, 3)], COMMUNITY.encode())
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.34.9.9", 0))
            stop = time.monotonic() + 12.0  # bounded in time and count: over two poll cycles
            while sent < 150_000 and time.monotonic() < stop:  # ~10k/s: 5x the decode budget
                for _ in range(500):
                    sock.sendto(flood, ("127.0.0.1", port))
                sent += 500
                time.sleep(0.05)
        seen = (d.sample("hallmon_trap_unknown_senders_total") or 0) + (
            d.sample("hallmon_traps_dropped_total", reason="rate_limited") or 0)
        assert seen > 1000, (sent, seen)
        time.sleep(5.5)  # one more cycle after the flood
        assert d.sample("hallmon_checks_overdue_total") == before, d.log_tail()  # none late
        assert d.status("sw-1") == "up"
        log_lines = [x for x in d.log().splitlines() if "no device has this address" in x]
        assert 1 <= len(log_lines) <= 2  # once a minute, not once a trap


def test_push_check_down_after_silence_up_on_next_beat(tmp_path: Path) -> None:
    port = free_port()
    with WebhookReceiver() as hook, _daemon(tmp_path, _hall(), port, hook.url) as d:
        beat = f"/api/v1/push/{PUSH_TOKEN}"
        for i in range(3):
            if i:
                time.sleep(0.5)
            assert d.http.get(beat).status_code == 200
        silent_from = time.monotonic()  # the daemon took the last beat just before this
        assert d.status("queue-1") == "up"
        d.wait_for(lambda: d.status("queue-1") == "degraded", 20, "degraded after silence")
        # expect_every 2 s + grace 1 s: never before (the upper bound is test_push's, on a
        # driven clock: wall time here would make the test flaky)
        assert time.monotonic() - silent_from >= 3.0 - 0.2
        d.wait_for(lambda: _statuses(hook, "queue-1") == ["HallDeviceDegraded:firing"], 20,
                   "one message")
        assert d.http.post(beat, params={"status": "up"}).status_code == 200
        d.wait_for(lambda: d.status("queue-1") == "up", 10, "up on the next beat")
        assert d.sample("hallmon_push_heartbeats_total", device="queue-1", check="app") == 4
        assert d.http.get("/api/v1/push/wrong-token-0000000000").status_code == 404
        assert PUSH_TOKEN not in d.log()
        d.wait_for(lambda: _statuses(hook, "queue-1") == ["HallDeviceDegraded:firing",
                                                          "HallDeviceDegraded:resolved"], 20,
                   "one recovery message")


def test_a_taken_trap_address_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        d = HallmonProcess(tmp_path, _hall(), autostart=False,
                           env={**ENV, "HOOK_URL": "http://127.0.0.1:9/hook"},
                           args=(f"--traps.listen-address=127.0.0.1:{port}",))
        with d:
            d.spawn()
            assert d.proc is not None
            assert d.proc.wait(60) == 1
        assert f"cannot receive traps on 127.0.0.1:{port}: Address already in use" in d.log()


def test_traps_listen_address_forms() -> None:
    import argparse

    import pytest

    from monitor.cli.run import _traps_listen

    assert _traps_listen("0.0.0.0") == ("0.0.0.0", 162)  # the standard port when left out
    assert _traps_listen("127.0.0.1:1162") == ("127.0.0.1", 1162)
    assert _traps_listen("[::1]:1162") == ("::1", 1162)
    assert _traps_listen("[::]") == ("::", 162)
    assert _traps_listen("off") is None
    with pytest.raises(argparse.ArgumentTypeError):
        _traps_listen("127.0.0.1:http")
