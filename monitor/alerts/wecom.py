"""WeCom (企业微信) group robot: key in the URL, no signing; byte limits on content.

text <= 2048 bytes, markdown <= 4096 bytes, both UTF-8: cut on a character boundary. Errors come
back as HTTP 200 with ``errcode != 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import httpx

from monitor.alerts.base import (
    DeliveryResult,
    Message,
    post_json,
    truncate_bytes,
    vendor_result,
)
from monitor.inventory.notifications import WeComChannel as WeComConfig

TEXT_BYTES = 2048
MARKDOWN_BYTES = 4096
# Invalid webhook URL/key, bad message type, empty content: a retry cannot fix these.
PERMANENT = frozenset({93000, 40008, 44004, 40058})


def build_payload(
    message: Message, msgtype: Literal["markdown", "text"] = "markdown",
    mention_mobiles: Sequence[str] = (),
) -> dict[str, Any]:
    if msgtype == "markdown":
        return {"msgtype": "markdown",
                "markdown": {"content": truncate_bytes(message.markdown, MARKDOWN_BYTES)}}
    text: dict[str, Any] = {"content": truncate_bytes(message.text, TEXT_BYTES)}
    if mention_mobiles:
        text["mentioned_mobile_list"] = list(mention_mobiles)
    return {"msgtype": "text", "text": text}


class WeCom:
    def __init__(self, name: str, config: WeComConfig) -> None:
        self.name = name
        self._config = config

    def __repr__(self) -> str:
        return f"WeCom({self.name!r}, webhook=<secret>)"

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        body = build_payload(message, self._config.msgtype, self._config.mention_mobiles)
        response = await post_json(client, self._config.webhook.get_secret_value(), body,
                                   message.key, self._config.timeout)
        if isinstance(response, DeliveryResult):
            return response
        return vendor_result(response, "errcode", "errmsg", PERMANENT)
