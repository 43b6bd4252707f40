"""Issue 10, point 6: repeated short outages are told, and they count toward flapping.

As found: a line down ~14 s every 40 s, polled by real ICMP every 5 s. Two network namespaces
joined by a veth pair (tests/agents/netns.py); the far end is the device, its link is taken down
14 s of every 40 s for three cycles. The hall (monitor.app.Hall: scheduler, real ICMP probe,
pipeline, alert engine, outbox delivery) runs in a child process inside the near namespace, with a
webhook capture server on that namespace's loopback; the child writes what the server received.

Before the fix each outage fell inside one 30 s group window and "latest status wins" dropped it:
three hard-DOWN incidents in the store, not one message, and the flap percent stayed ~25 %.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agents.daemon import ROOT, WebhookReceiver, node, small_inventory
from tests.agents.netns import LINK_FAR, linked_namespaces, set_link
from tests.conftest import require_root, require_tool

DOWN_S, CYCLE_S, CYCLES = 14.0, 40.0, 3


@pytest.mark.timeout(300)  # three 40 s cycles of the hall's real rhythm
def test_a_line_down_14s_every_40s_is_told_each_time_then_as_flapping(tmp_path: Path) -> None:
    require_tool("ip")
    require_root("network namespaces")
    with linked_namespaces() as (near, far):
        child = subprocess.run(
            ["ip", "netns", "exec", near, sys.executable, "-m", "tests.test_alerts_flaps",
             str(tmp_path), far], cwd=ROOT, capture_output=True, text=True, timeout=400,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-8000:]
    got = json.loads((tmp_path / "result.json").read_text())
    assert got["incidents"] == ["down"] * CYCLES, got
    alerts = [a for b in got["bodies"] for a in b["alerts"]]
    told = [(a["status"], a["labels"]["alertname"]) for a in alerts]
    assert told == [("resolved", "HallDeviceDown"), ("resolved", "HallDeviceDown"),
                    ("firing", "HallDeviceFlapping")], got["bodies"]
    for blip in alerts[:2]:
        summary = blip["annotations"]["summary"]
        assert summary.startswith("line 1 DOWN ") and summary.endswith("s, RECOVERED"), summary
        lasted = (_t(blip["endsAt"]) - _t(blip["startsAt"]))
        assert 5 <= lasted <= DOWN_S + 10, lasted  # ~14 s, seen through 5 s polls
    assert "outages" in alerts[2]["annotations"]["description"]


def _t(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339).timestamp()


# ---- the child, inside the near namespace ----------------------------------------------------


def _inventory() -> str:
    notifications = {
        "language": "en",
        "channels": {"hook": {"type": "webhook", "url": "${HALLMON_TEST_WEBHOOK}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": "30s"}],
        "delivery": {"poll_interval": "200ms"},
    }
    return small_inventory([node("line-1", LINK_FAR, name="line 1")], interval="5s",
                           timeout="2s", notifications=notifications)


async def _drive(workdir: Path, far: str, hook: WebhookReceiver) -> dict[str, Any]:
    from monitor.app import Hall, Options
    from monitor.state import DeviceStatus

    inventory = workdir / "inventory.yaml"
    inventory.write_text(_inventory(), encoding="utf-8")
    os.environ["HALLMON_TEST_WEBHOOK"] = hook.url
    hall = Hall(Options(inventory=inventory, storage_url=f"sqlite:///{workdir / 'hall.db'}"))
    await hall.start()
    try:
        for _ in range(300):
            if hall.pipeline.state.status("line-1") is DeviceStatus.UP:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("line-1 never came up")
        for _ in range(CYCLES):
            set_link(far, "hm-far", False)
            await asyncio.sleep(DOWN_S)
            set_link(far, "hm-far", True)
            await asyncio.sleep(CYCLE_S - DOWN_S)
        for _ in range(150):  # up to 30 s: the last window closes and is delivered
            if len(hook.bodies()) >= CYCLES:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything more would arrive now
    finally:
        await hall.stop()
    assert hall.store is not None
    incidents = sorted(hall.store.incidents(device_id="line-1"), key=lambda i: i.started_at)
    return {"bodies": hook.bodies(), "incidents": [i.status for i in incidents]}


def _child(workdir: Path, far: str) -> None:
    with WebhookReceiver() as hook:
        result = asyncio.run(_drive(workdir, far, hook))
    (workdir / "result.json").write_text(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), sys.argv[2])
