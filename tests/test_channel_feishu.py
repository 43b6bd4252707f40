"""Feishu bot: signature in the body (seconds), ``code != 0`` is a failure."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from monitor.alerts.base import Message
from monitor.alerts.feishu import Feishu, build_payload, sign
from monitor.inventory.notifications import FeishuChannel
from tests.agents.vendors import VendorServer

NOW = 1_700_000_000


def _message() -> Message:
    return Message(key="it:notice:f1", route="it", kind="notice", status="firing",
                   title="故障", text="【故障】二楼核心交换机", markdown="-",
                   created_at="2026-11-25T13:00:00+00:00")


def test_sign_matches_openssl_vector() -> None:
    # printf '' | openssl dgst -sha256 -mac HMAC -macopt "key:$(printf '1700000000\nSECabc')"
    assert sign("SECabc", NOW) == "XprR1de+0SSBnwWyU/4k6x2TL+Q2SJlM5NNEdAv7MWg="


def test_payload_exact_json() -> None:
    assert build_payload(_message(), "SECabc", NOW) == {
        "timestamp": "1700000000",
        "sign": "XprR1de+0SSBnwWyU/4k6x2TL+Q2SJlM5NNEdAv7MWg=",
        "msg_type": "text",
        "content": {"text": "【故障】二楼核心交换机"},
    }
    assert "sign" not in build_payload(_message(), None, NOW)


async def test_signed_message_accepted_and_bad_signature_refused() -> None:
    with VendorServer(token="hook-1", secret="SECf", clock=lambda: NOW) as server:
        good = FeishuChannel(type="feishu", webhook=SecretStr(server.feishu_url),
                             secret=SecretStr("SECf"))
        bad = good.model_copy(update={"secret": SecretStr("SECwrong")})
        async with httpx.AsyncClient() as client:
            ok = await Feishu("fs", good, clock=lambda: NOW).send(_message(), client)
            refused = await Feishu("fs", bad, clock=lambda: NOW).send(_message(), client)
        assert ok.ok, ok.error
        assert not refused.ok and not refused.retryable
        assert (refused.error or "").startswith("code 19021")
        assert len(server.bodies("feishu")) == 1


async def test_legacy_status_code_reply_and_http_errors() -> None:
    replies = iter([httpx.Response(200, json={"StatusCode": 0, "StatusMessage": "success"}),
                    httpx.Response(502, text="bad gateway")])

    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: next(replies))) as c:
        cfg = FeishuChannel(type="feishu", webhook=SecretStr("https://x/open-apis/bot/v2/hook/T"))
        first = await Feishu("fs", cfg).send(_message(), c)
        second = await Feishu("fs", cfg).send(_message(), c)
    assert first.ok
    assert not second.ok and second.retryable and second.error == "HTTP 502"
