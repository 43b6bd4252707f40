"""Alertmanager v2 push: POST /api/v2/alerts with an array of alerts.

Firing alerts carry ``endsAt`` = send time + 4 x the resend interval (as Prometheus does), and
the engine re-sends them every ``resend_interval`` (<= 1 min) while they fire; a recovery sets
``endsAt`` to the recovery time, which resolves the alert at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from monitor.alerts.base import DeliveryResult, Message, post_json, redact
from monitor.inventory.notifications import AlertmanagerChannel as AlertmanagerConfig


def build_payload(message: Message, now: datetime, resend_interval: float) -> list[dict[str, Any]]:
    expires = (now + timedelta(seconds=4 * resend_interval)).isoformat()
    alerts = []
    for a in message.alerts:
        alert: dict[str, Any] = {
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": a.starts_at,
            "endsAt": a.ends_at if a.status == "resolved" and a.ends_at else expires,
        }
        if "link" in a.annotations:
            alert["generatorURL"] = a.annotations["link"]
        alerts.append(alert)
    return alerts


class Alertmanager:
    def __init__(
        self, name: str, config: AlertmanagerConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock

    def __repr__(self) -> str:
        return f"Alertmanager({self.name!r})"

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        body = build_payload(message, datetime.fromtimestamp(self._clock(), UTC),
                             self._config.resend_interval)
        if not body:
            return DeliveryResult.success()  # a test or text-only message: nothing to push
        url = self._config.url.rstrip("/") + "/api/v2/alerts"
        response = await post_json(client, url, body, message.key, self._config.timeout)
        if isinstance(response, DeliveryResult):
            return response
        if response.is_success:
            return DeliveryResult.success()
        status = response.status_code
        detail = redact(response.text[:200])
        return DeliveryResult.failure(f"HTTP {status}: {detail}", retryable=status >= 429
                                      or status == 408)
