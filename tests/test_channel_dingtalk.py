"""DingTalk robot: exact payload, signature, and a local server that behaves like DingTalk."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from monitor.alerts.base import Message
from monitor.alerts.dingtalk import DingTalk, build_payload, sign, signed_url
from monitor.inventory.notifications import DingTalkChannel
from tests.agents.vendors import VendorServer

NOW = 1_700_000_000.0


def _message(markdown: str = "### 故障\n\n**二楼核心交换机**") -> Message:
    return Message(key="it:notice:abc", route="it", kind="notice", status="firing",
                   title="[hallmon] 故障：二楼核心交换机", text="故障", markdown=markdown,
                   created_at="2026-11-25T13:00:00+00:00")


def test_sign_matches_openssl_vector() -> None:
    # printf '1700000000000\nSECabc' | openssl dgst -sha256 -hmac SECabc -binary | base64
    assert sign("SECabc", 1_700_000_000_000) == "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM%3D"
    assert signed_url("https://oapi.dingtalk.com/robot/send?access_token=t", "SECabc",
                      1_700_000_000_000) == (
        "https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=1700000000000"
        "&sign=jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM%3D")


def test_payload_is_exact_json_with_mentions() -> None:
    assert build_payload(_message(), ["13800000000"]) == {
        "msgtype": "markdown",
        "markdown": {"title": "[hallmon] 故障：二楼核心交换机",
                     "text": "### 故障\n\n**二楼核心交换机**\n\n@13800000000"},
        "at": {"atMobiles": ["13800000000"], "isAtAll": False},
    }


def _channel(url: str, secret: str | None, clock: float = NOW) -> DingTalk:
    cfg = DingTalkChannel(type="dingtalk", webhook=SecretStr(url),
                          secret=SecretStr(secret) if secret else None)
    return DingTalk("it-group", cfg, clock=lambda: clock)


async def test_signed_message_is_accepted_by_a_dingtalk_like_server() -> None:
    with VendorServer(token="tok123", secret="SECxyz", clock=lambda: NOW) as server:
        async with httpx.AsyncClient() as client:
            result = await _channel(server.dingtalk_url, "SECxyz").send(_message(), client)
        assert result.ok, result.error
        assert server.keys() == ["it:notice:abc"]
        assert server.bodies("dingtalk")[0]["msgtype"] == "markdown"


@pytest.mark.parametrize(
    ("token", "secret", "clock", "expected"),
    [
        ("wrong", "SECxyz", NOW, "errcode 300001"),
        ("tok123", "SECbad", NOW, "errcode 310000"),
        ("tok123", "SECxyz", NOW - 7200, "errcode 310000"),  # stale timestamp
    ],
)
async def test_http_200_with_errcode_is_a_permanent_failure(
    token: str, secret: str, clock: float, expected: str
) -> None:
    with VendorServer(token="tok123", secret="SECxyz", clock=lambda: NOW) as server:
        url = server.dingtalk_url.replace("tok123", token)
        async with httpx.AsyncClient() as client:
            result = await _channel(url, secret, clock).send(_message(), client)
    assert not result.ok and not result.retryable
    assert result.error is not None and result.error.startswith(expected)
    assert "tok123" not in result.error and "SEC" not in result.error


async def test_throttled_at_20_a_minute_is_retryable() -> None:
    with VendorServer(token="t", clock=lambda: NOW) as server:
        async with httpx.AsyncClient() as client:
            channel = _channel(server.dingtalk_url, None)
            results = [await channel.send(_message(), client) for _ in range(21)]
    assert [r.ok for r in results] == [True] * 20 + [False]
    assert results[-1].retryable and "130101" in (results[-1].error or "")


async def test_transport_error_redacts_the_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        channel = _channel("https://oapi.dingtalk.com/robot/send?access_token=SECRET1", "SEC2")
        result = await channel.send(_message(), client)
    assert not result.ok and result.retryable
    assert "SECRET1" not in (result.error or "") and "sign=" not in (result.error or "")
    assert "SECRET1" not in repr(channel)
