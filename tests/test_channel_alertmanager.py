"""Alertmanager v2 push against the real binary, asserted through its own API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from monitor.alerts.alertmanager import Alertmanager, build_payload
from monitor.alerts.base import AlertEvent, Location, Message
from monitor.alerts.message import Firing, Group, Recovery, Style, render
from monitor.inventory.notifications import AlertmanagerChannel
from tests.agents.alertmanager import running_alertmanager
from tests.conftest import require_tool

T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
DOWN = AlertEvent("sw-2f-core", "二楼核心交换机", "switch", "down", "up", T0, "3 次无响应",
                  Location(2, "机房"), "信息科", incident_id=7)
UP = AlertEvent("sw-2f-core", "二楼核心交换机", "switch", "up", "down", T0 + timedelta(minutes=9))


def _firing(now: datetime) -> Message:
    return render("it", "notice", "it:notice:1", Group(firing=(Firing(DOWN),)), Style(), now)


def _resolved(now: datetime) -> Message:
    group = Group(recoveries=(Recovery(UP, Firing(DOWN)),))
    return render("it", "notice", "it:notice:2", group, Style(), now)


def test_payload_exact_json() -> None:
    now = T0 + timedelta(minutes=1)
    labels = {"alertname": "HallDeviceDown", "device": "sw-2f-core", "class": "switch",
              "severity": "critical", "route": "it", "floor": "2"}
    assert build_payload(_firing(now), now, 60.0) == [{
        "labels": labels,
        "annotations": {"summary": "二楼核心交换机 故障", "description": "3 次无响应"},
        "startsAt": "2026-11-25T13:00:00+00:00",
        "endsAt": "2026-11-25T13:05:00+00:00",  # now + 4 x resend interval
    }]
    [resolved] = build_payload(_resolved(now), now, 60.0)
    assert resolved["endsAt"] == "2026-11-25T13:09:00+00:00"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager", "alertmanager")
    with running_alertmanager(binary, tmp_path / "am") as base:
        yield base


async def test_push_fires_then_resolves_in_real_alertmanager(alertmanager: str) -> None:
    now = datetime.now(UTC)
    cfg = AlertmanagerChannel(type="alertmanager", url=alertmanager)
    channel = Alertmanager("am", cfg, clock=now.timestamp)
    async with httpx.AsyncClient() as client:
        assert (await channel.send(_firing(now), client)).ok
        [alert] = (await client.get(f"{alertmanager}/api/v2/alerts")).json()
        assert alert["labels"]["device"] == "sw-2f-core"
        assert alert["labels"]["alertname"] == "HallDeviceDown"
        assert alert["status"]["state"] == "active"
        ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
        assert timedelta(minutes=3) < ends - now <= timedelta(minutes=4, seconds=1)

        up = AlertEvent("sw-2f-core", "二楼核心交换机", "switch", "up", "down", now)
        group = Group(recoveries=(Recovery(up, Firing(DOWN)),))
        resolved = render("it", "notice", "it:notice:3", group, Style(), now)
        assert (await channel.send(resolved, client)).ok
        assert (await client.get(f"{alertmanager}/api/v2/alerts")).json() == []


async def test_rejected_push_is_a_failure() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": 400, "message": "bad alert"})

    cfg = AlertmanagerChannel(type="alertmanager", url="http://127.0.0.1:9")
    async with httpx.AsyncClient(transport=httpx.MockTransport(reject)) as client:
        result = await Alertmanager("am", cfg).send(_firing(T0), client)
    assert not result.ok and not result.retryable and (result.error or "").startswith("HTTP 400")
