"""WeCom group robot: byte limits on a character boundary, errcode answers."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from monitor.alerts.base import Message
from monitor.alerts.wecom import MARKDOWN_BYTES, TEXT_BYTES, WeCom, build_payload
from monitor.inventory.notifications import WeComChannel
from tests.agents.vendors import VendorServer


def _message(text: str = "故障", markdown: str = "### 故障") -> Message:
    return Message(key="it:notice:k1", route="it", kind="notice", status="firing",
                   title="故障", text=text, markdown=markdown,
                   created_at="2026-11-25T13:00:00+00:00")


def test_payload_exact_json() -> None:
    assert build_payload(_message()) == {"msgtype": "markdown",
                                         "markdown": {"content": "### 故障"}}
    assert build_payload(_message(), "text", ["13800000000"]) == {
        "msgtype": "text",
        "text": {"content": "故障", "mentioned_mobile_list": ["13800000000"]},
    }


def test_long_chinese_is_cut_on_a_character_boundary() -> None:
    long = "交换机" * 2000  # 3 bytes a character
    md = build_payload(_message(markdown="a" + long))["markdown"]["content"]
    assert len(md.encode()) <= MARKDOWN_BYTES and len(md.encode()) > MARKDOWN_BYTES - 3
    assert md.startswith("a交换机")
    text = build_payload(_message(text=long), "text")["text"]["content"]
    assert len(text.encode()) <= TEXT_BYTES and text == long[: len(text)]


async def test_sent_to_a_wecom_like_server_even_when_long() -> None:
    with VendorServer(token="key-1") as server:
        cfg = WeComChannel(type="wecom", webhook=SecretStr(server.wecom_url))
        async with httpx.AsyncClient() as client:
            result = await WeCom("wc", cfg).send(_message(markdown="设备" * 3000), client)
        assert result.ok, result.error
        assert len(server.bodies("wecom")) == 1


async def test_bad_key_is_a_permanent_failure_without_the_key() -> None:
    with VendorServer(token="key-1") as server:
        url = server.wecom_url.replace("key-1", "key-2")
        cfg = WeComChannel(type="wecom", webhook=SecretStr(url))
        async with httpx.AsyncClient() as client:
            result = await WeCom("wc", cfg).send(_message(), client)
    assert not result.ok and not result.retryable
    assert (result.error or "").startswith("errcode 93000")
    assert "key-2" not in (result.error or "")


async def test_throttle_answer_is_retryable() -> None:
    with VendorServer(token="k", limit=1) as server:
        cfg = WeComChannel(type="wecom", webhook=SecretStr(server.wecom_url))
        async with httpx.AsyncClient() as client:
            first = await WeCom("wc", cfg).send(_message(), client)
            second = await WeCom("wc", cfg).send(_message(), client)
    assert first.ok and not second.ok and second.retryable
    assert "45009" in (second.error or "")
