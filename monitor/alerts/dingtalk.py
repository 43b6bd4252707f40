"""DingTalk group robot: signed URL (timestamp + sign), markdown, @mobiles.

Errors come back as HTTP 200 with ``errcode != 0``: only errcode 0 counts as sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote_plus

import httpx

from monitor.alerts.base import (
    DeliveryResult,
    Message,
    post_json,
    truncate_bytes,
    vendor_result,
)
from monitor.inventory.notifications import DingTalkChannel as DingTalkConfig

# Token missing/invalid, signature or keyword/IP check failed: a retry cannot fix these.
PERMANENT = frozenset({300001, 300005, 310000})
MAX_TEXT_BYTES = 18000  # the API rejects markdown above ~20000 bytes


def sign(secret: str, ms: int) -> str:
    """base64(HMAC-SHA256(secret, f"{ms}\\n{secret}")), URL-encoded."""
    digest = hmac.new(secret.encode(), f"{ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def signed_url(webhook: str, secret: str | None, ms: int) -> str:
    if not secret:
        return webhook
    joiner = "&" if "?" in webhook else "?"
    return f"{webhook}{joiner}timestamp={ms}&sign={sign(secret, ms)}"


def build_payload(message: Message, at_mobiles: Sequence[str] = ()) -> dict[str, Any]:
    # DingTalk only notifies the @-ed people when their numbers also appear in the text.
    mentions = " ".join(f"@{m}" for m in at_mobiles)
    text = truncate_bytes(message.markdown, MAX_TEXT_BYTES)
    return {
        "msgtype": "markdown",
        "markdown": {"title": message.title, "text": f"{text}\n\n{mentions}" if mentions else text},
        "at": {"atMobiles": list(at_mobiles), "isAtAll": False},
    }


class DingTalk:
    def __init__(
        self, name: str, config: DingTalkConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock

    def __repr__(self) -> str:
        return f"DingTalk({self.name!r}, webhook=<secret>)"

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        secret = self._config.secret.get_secret_value() if self._config.secret else None
        # A fresh signature per message: DingTalk rejects timestamps older than an hour.
        url = signed_url(self._config.webhook.get_secret_value(), secret,
                         int(self._clock() * 1000))
        body = build_payload(message, self._config.at_mobiles)
        response = await post_json(client, url, body, message.key, self._config.timeout)
        if isinstance(response, DeliveryResult):
            return response
        return vendor_result(response, "errcode", "errmsg", PERMANENT)
