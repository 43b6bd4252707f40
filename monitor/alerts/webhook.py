"""Generic webhook: the Alertmanager webhook version-4 payload, so existing receivers work."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import httpx

from monitor.alerts.base import AlertItem, DeliveryResult, Message, post_json, redact
from monitor.inventory.notifications import WebhookChannel as WebhookConfig

ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager sends for "not ended"


def fingerprint(labels: Mapping[str, str]) -> str:
    return hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16]


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def _alert(a: AlertItem) -> dict[str, Any]:
    return {
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": a.starts_at,
        "endsAt": a.ends_at or ZERO_TIME,
        "generatorURL": a.annotations.get("link", ""),
        "fingerprint": fingerprint(a.labels),
    }


def build_payload(message: Message, external_url: str = "") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": message.key,
        "truncatedAlerts": 0,
        "status": message.status,
        "receiver": message.route,
        "groupLabels": {"route": message.route},
        "commonLabels": _common([a.labels for a in message.alerts]),
        "commonAnnotations": _common([a.annotations for a in message.alerts]),
        "externalURL": external_url,
        "alerts": [_alert(a) for a in message.alerts],
        # Not part of version 4; receivers ignore unknown fields, people read these.
        "title": message.title,
        "message": message.text,
    }


class Webhook:
    def __init__(self, name: str, config: WebhookConfig, external_url: str = "") -> None:
        self.name = name
        self._config = config
        self._external_url = external_url

    def __repr__(self) -> str:
        return f"Webhook({self.name!r}, url=<secret>)"

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        response = await post_json(client, self._config.url.get_secret_value(),
                                   build_payload(message, self._external_url), message.key,
                                   self._config.timeout)
        if isinstance(response, DeliveryResult):
            return response
        if response.is_success:
            return DeliveryResult.success()
        status = response.status_code
        return DeliveryResult.failure(redact(f"HTTP {status}"), retryable=status >= 429)
