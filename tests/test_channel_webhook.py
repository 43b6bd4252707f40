"""Generic webhook: the Alertmanager version-4 payload, compared with what the real
Alertmanager sends to a webhook receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from monitor.alerts.base import AlertEvent, Location, Message
from monitor.alerts.message import Firing, Group, Style, render
from monitor.alerts.webhook import Webhook, build_payload, fingerprint
from monitor.inventory.notifications import WebhookChannel
from tests.agents.alertmanager import running_alertmanager
from tests.agents.proc import ServerThread
from tests.conftest import require_tool

T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
DOWN = AlertEvent("sw-2f-core", "二楼核心交换机", "switch", "down", "up", T0, "3 次无响应",
                  Location(2, "机房"), "信息科", incident_id=7)


def _message() -> Message:
    return render("it", "notice", "it:notice:1", Group(firing=(Firing(DOWN),)), Style(), T0)


def test_payload_exact_json() -> None:
    labels = {"alertname": "HallDeviceDown", "device": "sw-2f-core", "class": "switch",
              "severity": "critical", "route": "it", "floor": "2"}
    annotations = {"summary": "二楼核心交换机 故障", "description": "3 次无响应"}
    payload = build_payload(_message(), "http://hallmon.local")
    assert payload.pop("message").startswith("[hallmon] 故障：二楼核心交换机")
    assert payload == {
        "version": "4",
        "groupKey": "it:notice:1",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "it",
        "groupLabels": {"route": "it"},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://hallmon.local",
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": annotations,
            "startsAt": "2026-11-25T13:00:00+00:00", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fingerprint(labels),
        }],
        "title": "[hallmon] 故障：二楼核心交换机",
    }


class _Capture:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.status = 200
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                capture.bodies.append(json.loads(raw))
                capture.keys.append(self.headers.get("Idempotency-Key"))
                self.send_response(capture.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ServerThread(Handler)

    @property
    def url(self) -> str:
        return f"{self.server.base}/hook?token=SECRET9"


@pytest.fixture
def capture() -> Iterator[_Capture]:
    c = _Capture()
    c.server.start()
    try:
        yield c
    finally:
        c.server.stop()


async def test_delivered_with_idempotency_key_and_errors_redacted(capture: _Capture) -> None:
    channel = Webhook("hook", WebhookChannel(type="webhook", url=SecretStr(capture.url)))
    async with httpx.AsyncClient() as client:
        assert (await channel.send(_message(), client)).ok
        capture.status = 503
        failed = await channel.send(_message(), client)
    assert capture.keys == ["it:notice:1", "it:notice:1"]
    assert not failed.ok and failed.retryable and failed.error == "HTTP 503"
    assert "SECRET9" not in repr(channel)


def test_same_shape_as_real_alertmanager_webhook(capture: _Capture, tmp_path: Path) -> None:
    binary = require_tool("prometheus-alertmanager", "alertmanager")
    with running_alertmanager(binary, tmp_path / "am", webhook_url=capture.url) as base:
        ours = build_payload(_message())
        now = datetime.now(UTC)
        alert = {**ours["alerts"][0], "startsAt": now.isoformat(),
                 "endsAt": (now + timedelta(minutes=4)).isoformat()}
        with httpx.Client() as client:
            pushed = client.post(f"{base}/api/v2/alerts", json=[
                {k: alert[k] for k in ("labels", "annotations", "startsAt", "endsAt")}])
            assert pushed.status_code == 200
        deadline = time.monotonic() + 10
        while not capture.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
    [theirs] = capture.bodies
    assert set(theirs) <= set(ours)
    assert set(theirs["alerts"][0]) == set(ours["alerts"][0])
    assert theirs["version"] == ours["version"] == "4"
    assert theirs["alerts"][0]["labels"] == ours["alerts"][0]["labels"]
