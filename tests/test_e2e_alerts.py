"""Alerts end to end (issue 6, "Done when"): the real daemon with mock probes, real HTTP to
vendor-like robots and a webhook receiver on loopback.

A floor switch dies with its children behind it: every route gets exactly ONE grouped message
naming the switch (the children inside it as unreachable) within interval x threshold + the
grouping window, then exactly one recovery message.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.agents.daemon import HallmonProcess, WebhookReceiver, node, small_inventory
from tests.agents.vendors import VendorServer

INTERVAL, THRESHOLD, GROUP_WAIT = 1.0, 2, 2.0
FAULT_AT, FAULT_FOR = 4.0, 8.0
SLACK = 3.0  # process scheduling, the delivery worker's poll, HTTP
CHILDREN = ["kiosk-1", "kiosk-2", "screen-1", "phone-1"]


def _inventory() -> str:
    devices = [node("sw-core", "127.31.0.1", floor=2),
               node("sw-1f", "127.31.1.1", parent="sw-core", name="一楼接入交换机"),
               *(node(c, f"127.31.1.{10 + i}", parent="sw-1f") for i, c in enumerate(CHILDREN)),
               node("other-2f", "127.31.2.1", parent="sw-core", floor=2)]
    notifications = {
        "language": "zh",
        "link_base": "http://127.0.0.1:10025/api/v1/devices/",
        "channels": {
            "ding": {"type": "dingtalk", "webhook": "${T_DING_URL}", "secret": "${T_DING_SECRET}"},
            "wecom": {"type": "wecom", "webhook": "${T_WECOM_URL}"},
            "hook": {"type": "webhook", "url": "${T_HOOK_URL}"},
        },
        "routes": [
            {"name": "it", "channels": ["ding", "hook"], "group_wait": f"{GROUP_WAIT:g}s"},
            {"name": "floor1", "match": {"floors": [1]}, "channels": ["wecom"],
             "group_wait": f"{GROUP_WAIT:g}s"},
        ],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "500ms"},
    }
    faults = [{"device": "sw-1f", "mode": "down", "at": f"{FAULT_AT:g}s",
               "duration": f"{FAULT_FOR:g}s"}]
    return small_inventory(devices, interval=f"{INTERVAL:g}s", timeout="500ms",
                           thresholds=THRESHOLD, faults=faults, notifications=notifications)


def _mock_start(log: str) -> float:
    """Wall time the mock programs started (the 'polling N checks' line follows at once)."""
    line = next(x for x in log.splitlines() if "polling " in x and "checks of" in x)
    found = re.search(r"ts=(\S+)Z", line)
    assert found, line
    return datetime.fromisoformat(found.group(1) + "+00:00").timestamp()


class Arrivals:
    """Messages per channel with the wall time the test first saw each (polled every 50 ms)."""

    def __init__(self, ding: VendorServer, hook: WebhookReceiver) -> None:
        self.ding, self.hook = ding, hook
        self.seen: dict[str, list[tuple[float, str, dict[str, Any]]]] = {
            "ding": [], "wecom": [], "hook": []}

    def poll(self) -> None:
        now = time.time()
        current = {
            "ding": [(b["markdown"]["text"], b) for b in self.ding.bodies("dingtalk")],
            "wecom": [(b["markdown"]["content"], b) for b in self.ding.bodies("wecom")],
            "hook": [(b["message"], b) for b in self.hook.bodies()],
        }
        for name, got in current.items():
            for text, body in got[len(self.seen[name]):]:
                self.seen[name].append((now, text, body))

    def texts(self, name: str) -> list[str]:
        return [t for _, t, _ in self.seen[name]]

    def wait(self, done: Any, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while True:
            self.poll()
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.seen}")
            time.sleep(0.05)


def test_floor_switch_one_grouped_message_per_route_then_one_recovery(tmp_path: Path) -> None:
    with VendorServer(token="robot-token", secret="ding-secret") as robots, \
            WebhookReceiver() as hook:
        env = {"T_DING_URL": robots.dingtalk_url, "T_DING_SECRET": "ding-secret",
               "T_WECOM_URL": robots.wecom_url, "T_HOOK_URL": hook.url}
        with HallmonProcess(tmp_path, _inventory(), env=env) as d:
            fault_at = _mock_start(d.log()) + FAULT_AT
            seen = Arrivals(robots, hook)
            budget = INTERVAL * THRESHOLD + GROUP_WAIT + SLACK
            seen.wait(lambda: all(seen.seen.values()),
                      fault_at + budget + 10 - time.time(), "a message on every channel")
            for name, got in seen.seen.items():
                late = got[0][0] - fault_at
                print(f"{name}: first message {late:.2f}s after the fault (budget {budget}s)")
                assert late <= budget, f"{name}: first message {late:.1f}s after the fault"

            # Wait out a second grouping window: nothing more may arrive while it is down.
            time.sleep(GROUP_WAIT + 1.5)
            seen.poll()
            assert d.status("sw-1f") == "down"
            assert {d.status(c) for c in CHILDREN} == {"unreachable"}
            for name in seen.seen:
                texts = seen.texts(name)
                assert len(texts) == 1, f"{name}: {len(texts)} messages, not one: {texts}"
                text = texts[0]
                assert "一楼接入交换机" in text and "故障" in text, text
                assert "连带不可达" in text, text  # the children ride inside it
                for child in CHILDREN:
                    assert f"设备 {child}" in text, (child, text)
                assert "other-2f" not in text
            payload = seen.seen["hook"][0][2]
            assert payload["version"] == "4" and payload["status"] == "firing"
            # One alert for the switch; its children are named in it, not paged on their own.
            [alert] = payload["alerts"]
            assert alert["labels"]["device"] == "sw-1f"
            assert alert["labels"]["alertname"] == "HallDeviceDown"
            children = alert["annotations"]["unreachable_children"].split(",")
            assert sorted(children) == sorted(CHILDREN)

            # The switch comes back: one recovery message per channel, and nothing else.
            seen.wait(lambda: all(len(v) >= 2 for v in seen.seen.values()),
                      fault_at + FAULT_FOR + budget + 10 - time.time(),
                      "a recovery message on every channel")
            d.wait_for(lambda: all(d.status(x) == "up" for x in ["sw-1f", *CHILDREN]), 10,
                       "the switch and its children up")
            time.sleep(GROUP_WAIT + 1.5)
            seen.poll()
            for name in seen.seen:
                texts = seen.texts(name)
                assert len(texts) == 2, f"{name}: {texts}"
                assert "恢复" in texts[1] and "一楼接入交换机" in texts[1], texts[1]
            assert seen.seen["hook"][1][2]["status"] == "resolved"
            assert robots.hits == len(robots.accepted), "a robot rejected a message"
