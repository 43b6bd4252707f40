"""A camera's outage and recovery with real ICMP and TCP, in a network namespace of our own.

As found (issue 10, point 5): after the camera's ping recovered, its slower RTSP check was still
hard DOWN from failures taken during the outage, so the camera rolled up DEGRADED
("rtsp: None"), paged falsely and left a spurious DEGRADED incident.

The daemon (``monitor.app.Hall``, live probes) runs inside the namespace against a camera at
127.20.1.21: ping every second and an RTSP-like TCP check (a real listener) every 3 s. The
"link" is the namespace's loopback: ``ip link set lo down`` makes both fail for real (no route),
``up`` brings them back. The alert events are read at the pipeline's alert seam.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.agents.netns import namespace, run_in_namespace
from tests.conftest import require_root, require_tool

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import asyncio, json, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import yaml
from monitor.app import Hall, Options

ADDR = "127.20.1.21"
RTSP_INTERVAL = 3.0

class Recorder:
    def __init__(self):
        self.events = []
    def submit(self, e):
        self.events.append([e.status, e.previous, e.cause])

async def until(what, timeout):
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what.__doc__ or what}")
        await asyncio.sleep(0.05)

def link(state):
    subprocess.run(["ip", "link", "set", "lo", state], check=True, timeout=10)

async def main(tmp):
    server = await asyncio.start_server(lambda r, w: w.close(), ADDR, 0)
    port = server.sockets[0].getsockname()[1]
    inv = {
        "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
        "defaults": {"interval": "1s", "timeout": "500ms", "failure_threshold": 2,
                     "success_threshold": 2},
        "classes": {"cam": {"label": "摄像机", "checks": [
            {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 1},
            {"name": "rtsp", "kind": "tcp", "port": port, "interval": f"{RTSP_INTERVAL}s"}]}},
        "devices": [{"id": "cam-1", "name": "一楼摄像机", "class": "cam", "address": ADDR}],
    }
    path = tmp / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv, allow_unicode=True), encoding="utf-8")
    hall = Hall(Options(inventory=path, state_dir=tmp))
    await hall.start()
    alerts = Recorder()
    hall.pipeline.alerts = alerts
    state = hall.pipeline.state
    seen = []
    def status():
        s = state.statuses["cam-1"]
        if not seen or seen[-1] != [s[0].value, s[1]]:
            seen.append([s[0].value, s[1]])
        return s[0].value
    async def watch(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            status()
            await asyncio.sleep(0.02)
    try:
        await until(lambda: status() == "up" and state.checks[("cam-1", "rtsp")].hard == "up", 30)
        link("down")
        await until(lambda: status() == "down", 30)
        await watch(3.5 * RTSP_INTERVAL)  # RTSP fails three times meanwhile
        link("up")
        await until(lambda: status() == "up", 30)
        await watch(2.5 * RTSP_INTERVAL)  # RTSP answers again: nothing more to say
        incidents = [[i.status, i.check, i.cause, i.ended_at is not None]
                     for i in reversed(await hall.astore.incidents("cam-1"))]
    finally:
        link("up")
        await hall.stop()
        server.close()
    print(json.dumps({"events": alerts.events, "statuses": seen, "incidents": incidents}))

asyncio.run(main(Path(sys.argv[2])))
"""


def test_camera_recovers_up_not_degraded_and_its_down_alert_is_resolved(tmp_path: Path) -> None:
    require_root("network namespaces")
    require_tool("ip")
    with namespace() as ns:
        proc = run_in_namespace(ns, [sys.executable, "-c", _SCRIPT, str(ROOT), str(tmp_path)],
                                timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    # One DOWN with its own reason, then one recovery that resolves it; nothing DEGRADED.
    assert [e[:2] for e in report["events"]] == [["down", "up"], ["up", "down"]], report
    assert all(e[2] and "None" not in e[2] for e in report["events"]), report
    assert [s for s, _ in report["statuses"]] == ["unknown", "up", "down", "up"], report
    assert all("None" not in cause for _, cause in report["statuses"]), report
    assert [i[0] for i in report["incidents"]] == ["down"], report
    assert report["incidents"][0][1] == "ping" and report["incidents"][0][3], report
