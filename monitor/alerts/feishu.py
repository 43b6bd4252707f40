"""Feishu (飞书) custom bot: signature in the body, seconds; ``code != 0`` is a failure.

sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")) -- the secret goes into the
key and the message is empty (Feishu's own sample does exactly this).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx

from monitor.alerts.base import (
    DeliveryResult,
    Message,
    post_json,
    truncate_bytes,
    vendor_result,
)
from monitor.inventory.notifications import FeishuChannel as FeishuConfig

# Bad parameters, signature/IP/keyword check failed: a retry cannot fix these.
PERMANENT = frozenset({19001, 19021, 19022, 19024})
MAX_TEXT_BYTES = 20000  # request bodies are capped at 20 KB


def sign(secret: str, seconds: int) -> str:
    key = f"{seconds}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def build_payload(message: Message, secret: str | None, seconds: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if secret:
        body = {"timestamp": str(seconds), "sign": sign(secret, seconds)}
    body |= {"msg_type": "text",
             "content": {"text": truncate_bytes(message.text, MAX_TEXT_BYTES)}}
    return body


class Feishu:
    def __init__(
        self, name: str, config: FeishuConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock

    def __repr__(self) -> str:
        return f"Feishu({self.name!r}, webhook=<secret>)"

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        secret = self._config.secret.get_secret_value() if self._config.secret else None
        body = build_payload(message, secret, int(self._clock()))
        response = await post_json(client, self._config.webhook.get_secret_value(), body,
                                   message.key, self._config.timeout)
        if isinstance(response, DeliveryResult):
            return response
        if response.status_code < 400:
            try:  # older bots answer {"StatusCode": 0}; current ones {"code": 0}
                data = response.json()
                if "code" not in data and data.get("StatusCode") == 0:
                    return DeliveryResult.success()
            except (ValueError, AttributeError):
                pass
        return vendor_result(response, "code", "msg", PERMANENT)
