"""The whole daemon as a subprocess (``hallmon run --mock``): readiness, signals, reload, restart.

Real process, real HTTP on loopback, mock probes scripted by the inventory's ``simulation:``.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.agents.daemon import (
    HallmonProcess,
    WebhookReceiver,
    node,
    parse_metrics,
    small_inventory,
    write_atomically,
)
from tests.conftest import missing_tool, require_tool

ROOT = Path(__file__).resolve().parents[1]

DEVICE_SERIES = ("hallmon_device_up", "hallmon_device_status", "hallmon_device_info",
                 "hallmon_check_up")


def _series_devices(text: str, name: str) -> set[str]:
    return {labels["device"] for labels, _ in parse_metrics(text).get(name, [])}


# ---- 1. lifecycle -------------------------------------------------------------------------------


def test_lifecycle_ready_metrics_and_sigterm(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    # 'slow-1' hangs until its 4 s deadline, so the first cycle cannot finish before ~4 s:
    # /-/ready must answer 503 that long, while every series already exists.
    devices = [node("sw-1", "127.30.0.1"), node("pc-1", "127.30.1.1", parent="sw-1"),
               node("slow-1", "127.30.1.2", parent="sw-1")]
    inv = small_inventory(devices, interval="5s", timeout="4s",
                          faults=[{"device": "slow-1", "mode": "timeout", "at": 0}])
    with HallmonProcess(tmp_path, inv, autostart=False) as d:
        d.spawn()
        first = d.wait_for(lambda: d._get_status("/-/ready"), 30, "the web server to answer")
        early = d.metrics()
        assert first == 503, "ready before the first cycle finished"
        ids = {"sw-1", "pc-1", "slow-1"}
        for name in DEVICE_SERIES:
            assert _series_devices(early, name) == ids, f"{name} incomplete at start-up"
        up = {lab["device"]: v for lab, v in parse_metrics(early)["hallmon_device_up"]}
        assert all(v != v or v in (0.0, 1.0) for v in up.values())  # NaN until known

        d.wait_ready(15)
        assert d.http.get("/-/healthy").status_code == 200
        live = d.metrics()
        check = subprocess.run([promtool, "check", "metrics"], input=live.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        assert d.sample("hallmon_config_last_reload_successful") == 1.0
        assert d.sample("hallmon_device_up", device="sw-1") == 1.0
        assert d.sample("hallmon_build_info") == 1.0

        t0 = time.monotonic()
        assert d.stop(10) == 0
        took = time.monotonic() - t0
        assert took < 5, f"SIGTERM took {took:.1f}s"
    assert "stopped" in d.log()
    # The store was closed: SQLite checkpoints and removes the WAL when its last connection
    # closes cleanly; a leftover -wal file means a connection was abandoned.
    assert not Path(f"{d.db}-wal").exists(), "store not closed (WAL left behind)"
    with sqlite3.connect(d.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


# ---- 2. reload ----------------------------------------------------------------------------------


def _all_devices(text: str) -> set[str]:
    """Every device named by any series with a ``device`` label."""
    return {lab["device"] for rows in parse_metrics(text).values() for lab, _ in rows
            if "device" in lab}


def _broken(text: str) -> tuple[str, list[str]]:
    """Two mistakes in ``text``, and the file:line:col prefixes the loader must report."""
    bad = text.replace("    floor: 1\n", "    floor: 1\n    colour: red\n", 1)
    bad = bad.replace("parent: sw-1", "parent: sw-9", 1)
    lines = bad.splitlines()
    colour = next(i for i, line in enumerate(lines) if "colour:" in line) + 1
    parent = next(i for i, line in enumerate(lines) if "sw-9" in line) + 1
    col = lines[parent - 1].index("sw-9") + 1
    return bad, [f"{colour}:5: devices[0].location: unknown key 'colour'",
                 f"{parent}:{col}: devices[1].parent: unknown device 'sw-9'"]


def test_reload_broken_keeps_old_good_swaps_and_watch(tmp_path: Path) -> None:
    base = [node("sw-1", "127.30.0.1"), node("pc-1", "127.30.1.1", parent="sw-1"),
            node("pc-2", "127.30.1.2", parent="sw-1")]
    good = small_inventory(base)
    with HallmonProcess(tmp_path, good) as d:
        before = d.devices()
        assert set(before) == {"sw-1", "pc-1", "pc-2"}
        assert d.sample("hallmon_config_last_reload_successful") == 1.0

        # Broken file + SIGHUP: the old inventory keeps serving, the metric says so.
        bad, where = _broken(good)
        write_atomically(d.inventory, bad)
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: d.sample("hallmon_config_last_reload_successful") == 0.0, 5,
                   "reload_successful 0 after SIGHUP with a broken file")
        assert "SIGHUP: reloading" in d.log()
        assert set(d.devices()) == set(before)
        assert _all_devices(d.metrics()) == set(before)

        # Broken file + POST /-/reload: 422 listing every problem as file:line:col.
        r = d.http.post("/-/reload")
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail["ok"] is False
        problems = detail["problems"]
        assert len(problems) == 2, problems
        for p, expected in zip(problems, where, strict=True):
            assert p.startswith(f"{d.inventory}:{expected}"), (p, expected)
        assert d.sample("hallmon_config_last_reload_successful") == 0.0
        assert set(d.devices()) == set(before)

        # A good file with pc-2 removed and pc-3 added, by POST /-/reload.
        second = small_inventory([*base[:2], node("pc-3", "127.30.1.3", parent="sw-1")])
        write_atomically(d.inventory, second)
        r = d.http.post("/-/reload")
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "changed": True, "problems": []}
        assert d.sample("hallmon_config_last_reload_successful") == 1.0
        text = d.metrics()
        assert "pc-2" not in _all_devices(text), "removed device's series still exposed"
        for name in DEVICE_SERIES:
            assert _series_devices(text, name) == {"sw-1", "pc-1", "pc-3"}, name
        assert set(d.devices()) == {"sw-1", "pc-1", "pc-3"}
        d.wait_for(lambda: d.status("pc-3") == "up", 10, "the added device to come up")
        assert d.status("pc-1") == "up"  # kept its state across the swap

        # Content watch: a save by rename (no signal, no POST) is picked up (watch every 5 s).
        third = small_inventory([*base[:2], node("pc-4", "127.30.1.4", parent="sw-1")])
        write_atomically(d.inventory, third)
        d.wait_for(lambda: "pc-4" in _all_devices(d.metrics()), 15,
                   "the content watch to reload the renamed file")
        assert "pc-3" not in _all_devices(d.metrics())
        assert d.sample("hallmon_config_last_reload_successful") == 1.0


# ---- 3. kill -9 and restart ---------------------------------------------------------------------


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the daemon's SQLite store while it runs (WAL: readers never block the writer)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _webhook_notifications(route: str = "it") -> dict[str, Any]:
    return {
        "language": "en",
        "channels": {"hook": {"type": "webhook", "url": "${HALLMON_TEST_WEBHOOK}"}},
        "routes": [{"name": route, "channels": ["hook"], "group_wait": "1s"}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }


def _alerts_for(bodies: list[dict[str, Any]], device: str, status: str) -> list[dict[str, Any]]:
    return [a for b in bodies for a in b["alerts"]
            if a["labels"].get("device") == device and a["status"] == status]


@contextmanager
def _killed_and_restarted(tmp_path: Path) -> Iterator[tuple[HallmonProcess, WebhookReceiver]]:
    """dead-1 is down for the first 8 s of each run (the mock's clock starts with the process):
    hard down after 2 polls, notified after 1 s of grouping, then kill -9 and a restart on the
    same storage while it is still down. Yields once the restarted daemon has had time for a
    (wrong) second notice, having checked that none came."""
    devices = [node("sw-1", "127.30.0.1"), node("pc-1", "127.30.1.1", parent="sw-1"),
               node("dead-1", "127.30.1.9", parent="sw-1")]
    inv = small_inventory(devices, notifications=_webhook_notifications(),
                          faults=[{"device": "dead-1", "mode": "down", "at": 0,
                                   "duration": "8s"}])
    with WebhookReceiver() as hook, HallmonProcess(
        tmp_path, inv, env={"HALLMON_TEST_WEBHOOK": hook.url}
    ) as d:
        d.wait_for(lambda: d.status("dead-1") == "down", 10, "dead-1 hard down")
        d.wait_for(lambda: _alerts_for(hook.bodies(), "dead-1", "firing"), 10,
                   "the 'down' notice at the webhook")
        d.wait_for(lambda: _rows(d.db, "SELECT count(*) FROM outbox WHERE status = 'pending'")
                   == [(0,)], 5, "the outbox to record the delivery")
        d.kill()

        opened = _rows(d.db, "SELECT id, status, ended_at FROM incidents WHERE device_id = ?",
                       "dead-1")
        assert [(s, e) for _, s, e in opened] == [("down", None)], opened

        # Restart on the same storage: dead-1 is down from the first answer, before any poll.
        d.spawn()
        d.wait_for(lambda: d._get_status("/-/healthy") == 200, 30, "the restarted web server")
        assert d.status("dead-1") == "down", "status not resumed from the store"
        assert d.sample("hallmon_device_up", device="dead-1") == 0.0
        d.wait_ready(10)
        time.sleep(3.5)  # polls (1 s) x threshold (2) + group_wait (1 s) + delivery: a 2nd notice?
        assert d.status("dead-1") == "down"
        assert _rows(d.db, "SELECT id FROM incidents WHERE device_id = ?", "dead-1") == [
            (opened[0][0],)
        ], "a second incident row after the restart"
        firing = _alerts_for(hook.bodies(), "dead-1", "firing")
        assert len(firing) == 1, f"duplicate 'down' notice after restart: {hook.bodies()}"
        assert d.status("pc-1") == "up" and d.status("sw-1") == "up"
        yield d, hook


def test_kill9_restart_resumes_without_duplicates(tmp_path: Path) -> None:
    with _killed_and_restarted(tmp_path) as (d, hook):
        # The outage ends (8 s into the second run): the resumed incident closes, no new one.
        d.wait_for(lambda: d.status("dead-1") == "up", 15, "dead-1 to recover")
        d.wait_for(lambda: _rows(d.db, "SELECT count(*) FROM incidents WHERE device_id = ? "
                                 "AND ended_at IS NOT NULL", "dead-1") == [(1,)], 5,
                   "the resumed incident to close")
        assert len(_rows(d.db, "SELECT id FROM incidents WHERE device_id = ?", "dead-1")) == 1
        assert len(_alerts_for(hook.bodies(), "dead-1", "firing")) == 1


def test_kill9_restart_still_tells_the_recovery(tmp_path: Path) -> None:
    with _killed_and_restarted(tmp_path) as (d, hook):
        d.wait_for(lambda: d.status("dead-1") == "up", 15, "dead-1 to recover")
        d.wait_for(lambda: _alerts_for(hook.bodies(), "dead-1", "resolved"), 5,
                   "the recovery notice for the incident begun before the restart")
        assert len(_alerts_for(hook.bodies(), "dead-1", "firing")) == 1


def test_reload_removing_a_down_device_ends_its_incident_and_its_pages(tmp_path: Path) -> None:
    notifications = _webhook_notifications()
    notifications["routes"][0]["repeat_interval"] = "2s"
    devices = [node("sw-1", "127.30.0.1"), node("dead-1", "127.30.1.9", parent="sw-1")]
    inv = small_inventory(devices, notifications=notifications,
                          faults=[{"device": "dead-1", "mode": "down", "at": 0}])
    with WebhookReceiver() as hook, HallmonProcess(
        tmp_path, inv, env={"HALLMON_TEST_WEBHOOK": hook.url}
    ) as d:
        d.wait_for(lambda: _alerts_for(hook.bodies(), "dead-1", "firing"), 10, "the notice")
        write_atomically(d.inventory, small_inventory(devices[:1], notifications=notifications))
        assert d.http.post("/-/reload").json()["changed"] is True
        d.wait_for(lambda: _rows(d.db, "SELECT count(*) FROM incidents WHERE ended_at IS NULL")
                   == [(0,)], 5, "the removed device's incident to end")
        told = len(hook.bodies())
        time.sleep(3.5)  # more than the route's repeat_interval: no 'still down' any more
        assert hook.bodies()[told:] == [], "repeat notices for a device no longer monitored"
        assert set(d.devices()) == {"sw-1"}


# ---- 6. hallmon probe ---------------------------------------------------------------------------


def _icmp_available() -> None:
    for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return
        except OSError:
            continue
    missing_tool("no ICMP socket: needs root/CAP_NET_RAW or net.ipv4.ping_group_range")


def _probe(inventory: Path, device: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "probe", device, "--inventory", str(inventory),
         "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_probe_json_against_loopback(tmp_path: Path) -> None:
    _icmp_available()
    host = {"label": "主机", "checks": [
        {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 2},
        {"name": "svc", "kind": "tcp", "port": 1},
    ]}
    with socket.socket() as listener, socket.socket() as spare:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        spare.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        open_port, closed_port = listener.getsockname()[1], spare.getsockname()[1]
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(small_inventory(
            [node("box-1", "127.0.0.1", cls="host", checks={"svc": {"port": open_port}}),
             node("box-2", "127.0.0.2", cls="host", checks={"svc": {"port": closed_port}})],
            interval="10s", timeout="2s", classes={"host": host}), encoding="utf-8")

        ok = _probe(inventory, "box-1")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        out = json.loads(ok.stdout)
        assert out["device"] == "box-1"
        assert [(c["check"], c["kind"], c["ok"]) for c in out["checks"]] == [
            ("ping", "icmp", True), ("svc", "tcp", True)]
        for c in out["checks"]:
            assert set(c) == {"check", "kind", "ok", "error", "duration_seconds", "values",
                              "texts", "errors"}
            assert c["error"] is None and 0 <= c["duration_seconds"] < 2
        ping = out["checks"][0]["values"]
        assert ping["packets_sent"] == 2 and ping["packets_received"] == 2
        assert ping["loss_ratio"] == 0 and 0 < ping["rtt_avg_seconds"] < 0.5

        refused = _probe(inventory, "box-2")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        checks = {c["check"]: c for c in json.loads(refused.stdout)["checks"]}
        assert checks["ping"]["ok"] is True
        assert checks["svc"]["ok"] is False and checks["svc"]["error"]

    unknown = _probe(inventory, "nope")
    assert unknown.returncode == 1 and "unknown device 'nope'" in unknown.stderr


# ---- start-up failures: a clear message, exit 1, nothing left half-open -------------------------


def _run(inventory: Path, listen: str, storage: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "run", "--mock", f"--inventory={inventory}",
         f"--web.listen-address={listen}", f"--storage.path={storage}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_run_with_a_broken_inventory_exits_1_with_every_problem(tmp_path: Path) -> None:
    bad, where = _broken(small_inventory([node("sw-1", "127.30.0.1"),
                                          node("pc-2", "127.30.1.2", parent="sw-1")]))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(bad, encoding="utf-8")
    proc = _run(inventory, "127.0.0.1:1", tmp_path / "state")  # never gets to listen
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith(str(inventory))]
    assert [x.removeprefix(f"{inventory}:")[: len(w)] for x, w in zip(lines, where,
            strict=True)] == where
    assert "Traceback" not in proc.stderr


def test_run_on_a_busy_port_exits_1_and_closes_the_store(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(small_inventory([node("sw-1", "127.30.0.1")]), encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        proc = _run(inventory, f"127.0.0.1:{busy.getsockname()[1]}", tmp_path / "state")
    assert proc.returncode == 1, proc.stderr
    assert "address already in use" in proc.stderr and "cannot serve on" in proc.stderr
    assert "msg=stopped" in proc.stderr, "exited without stopping the hall"
    assert not (tmp_path / "state" / "hallmon.db-wal").exists(), "store not closed"
