"""Issue 10, points 2 and 4: a restart (kill -9 or a clean SIGTERM) loses no page, and per device
and route messages arrive in the order they happened, across retries and restarts.

The real daemon (``hallmon run --mock``) pages a webhook capture server on loopback. The switch
goes down; the process is stopped while the DOWN waits in the route's group window; the hall's
script is continued in the inventory (the switch stays down a few more seconds, then recovers)
and the daemon restarted on the same store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.agents.daemon import HallmonProcess, WebhookReceiver, node, small_inventory
from tests.test_daemon import _rows

DEVICES = [node("sw-1", "127.30.0.1"), node("pc-1", "127.30.1.1", parent="sw-1")]


def _notifications(group_wait: str) -> dict[str, Any]:
    return {
        "language": "en",
        "channels": {"hook": {"type": "webhook", "url": "${HALLMON_TEST_WEBHOOK}"}},
        "routes": [{"name": "it", "channels": ["hook"], "group_wait": group_wait}],
        "delivery": {"poll_interval": "200ms", "backoff_initial": "1s"},
    }


def _inventory(fault: dict[str, Any], group_wait: str = "8s") -> str:
    return small_inventory(DEVICES, notifications=_notifications(group_wait),
                           faults=[{"device": "sw-1", "mode": "down", **fault}])


def _story(bodies: list[dict[str, Any]], device: str) -> list[str]:
    """The statuses ``device`` was told in, in arrival order."""
    return [a["status"] for b in bodies for a in b["alerts"] if a["labels"]["device"] == device]


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_restart_inside_the_group_window_loses_no_page(tmp_path: Path, stop: str) -> None:
    with WebhookReceiver() as hook, HallmonProcess(
        tmp_path, _inventory({"at": "3s"}), env={"HALLMON_TEST_WEBHOOK": hook.url}
    ) as d:
        d.wait_for(lambda: _rows(d.db, "SELECT count(*) FROM incidents WHERE device_id = ? "
                                 "AND status = 'down'", "sw-1") == [(1,)], 20,
                   "the switch's DOWN incident")
        time.sleep(1.0)  # the DOWN is inside its 8 s group window
        if stop == "SIGKILL":
            d.kill()
        else:
            assert d.stop(10) == 0
        assert hook.bodies() == [], "told before the window closed: the test proves nothing"

        # The hall goes on: the switch stays down ~6 s into the next run, then recovers.
        d.inventory.write_text(_inventory({"at": 0, "duration": "6s"}), encoding="utf-8")
        d.spawn()
        d.wait_for(lambda: "resolved" in _story(hook.bodies(), "sw-1"), 40,
                   "the switch's recovery at the capture server")
        time.sleep(1.5)  # a late duplicate would arrive by now (poll 200 ms)
        story = _story(hook.bodies(), "sw-1")
        assert story == ["firing", "resolved"], hook.bodies()
        assert len(hook.keys) == len(set(hook.keys))
        down = hook.bodies()[0]
        assert down["alerts"][0]["annotations"].get("unreachable_children") == "pc-1"


def test_a_recovery_never_overtakes_its_outage_notice_across_a_failed_try_and_a_restart(
    tmp_path: Path,
) -> None:
    """The receiver fails the first attempt of the DOWN; the recovery is enqueued while the
    DOWN waits for its retry, and the daemon is killed meanwhile (the channel's hold must be in
    the store, not in memory)."""
    tries: list[str] = []

    def refuse_first_down(body: dict[str, Any]) -> bool:
        tries.append(body["status"])
        return body["status"] == "firing" and tries.count("firing") == 1

    inv = small_inventory(DEVICES, notifications={
        **_notifications("500ms"),
        "delivery": {"poll_interval": "200ms", "backoff_initial": "8s"},
    }, faults=[{"device": "sw-1", "mode": "down", "at": "2s", "duration": "3s"}])
    with WebhookReceiver(refuse=refuse_first_down) as hook, HallmonProcess(
        tmp_path, inv, env={"HALLMON_TEST_WEBHOOK": hook.url}
    ) as d:
        d.wait_for(lambda: hook.refused, 20, "the first (refused) try of the DOWN")
        d.wait_for(lambda: _rows(d.db, "SELECT count(*) FROM outbox WHERE status = 'pending'")
                   == [(2,)], 20, "the recovery to be enqueued behind the DOWN")
        d.kill()
        d.inventory.write_text(small_inventory(DEVICES, notifications=_notifications("500ms")),
                               encoding="utf-8")
        d.spawn()
        d.wait_for(lambda: len(hook.bodies()) >= 2, 30, "both messages after the retry")
        time.sleep(1.0)
        assert _story(hook.bodies(), "sw-1") == ["firing", "resolved"], hook.bodies()
        assert tries[:2] == ["firing", "firing"], tries  # nothing in between the two tries
