"""E-mail: SMTP, STARTTLS and SMTPS with login against aiosmtpd; Chinese subjects encoded."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from monitor.alerts.base import Message
from monitor.alerts.email import Email, build_message
from monitor.inventory.notifications import EmailChannel
from tests.agents.proc import free_port
from tests.conftest import require_tool

TITLE = "[hallmon] 故障：二楼核心交换机"


def _message() -> Message:
    return Message(key="it:notice:m1", route="it", kind="notice", status="firing", title=TITLE,
                   text="【故障】二楼核心交换机（sw-2f-core）\n原因：3 次无响应",
                   markdown="-", created_at="2026-11-25T13:00:00+00:00")


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    good = isinstance(data, LoginPassword) and (data.login, data.password) == (b"hall", b"pw-1")
    return AuthResult(success=good, handled=False)  # handled=False: server answers 535


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


Mode = Literal["tls", "starttls", "none"]


@pytest.fixture
def smtp(
    request: pytest.FixtureRequest, cert: tuple[Path, Path]
) -> Iterator[tuple[Mode, Inbox, int]]:
    mode: Mode = request.param
    inbox = Inbox()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*cert)
    # aiosmtpd counts only STARTTLS as TLS; implicit TLS (SMTPS) is encrypted all the same.
    kwargs: dict[str, Any] = {"authenticator": _auth, "auth_require_tls": mode == "starttls"}
    if mode == "tls":
        kwargs["ssl_context"] = tls
    elif mode == "starttls":
        kwargs |= {"tls_context": tls, "require_starttls": True}
    # aiosmtpd's controller needs the port before it starts (it connects to itself).
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    try:
        yield mode, inbox, controller.port
    finally:
        controller.stop()


def _channel(mode: Mode, port: int, cert: Path, password: str = "pw-1") -> Email:
    cfg = EmailChannel(type="email", host="127.0.0.1", port=port, security=mode,
                       username="hall", password=SecretStr(password), sender="hallmon@hall.test",
                       recipients=["it@hall.test", "duty@hall.test"], ca_file=str(cert),
                       timeout=5.0)
    return Email("mail", cfg)


def test_chinese_subject_is_rfc2047_encoded() -> None:
    raw = bytes(build_message(_message(), "hallmon@hall.test", ["it@hall.test"]))
    assert b"Subject: [hallmon] =?utf-8?b?" in raw
    assert raw.isascii() and b"\r\n" in raw
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == TITLE
    assert parsed.get_content().startswith("【故障】二楼核心交换机")


@pytest.mark.parametrize("smtp", ["tls", "starttls", "none"], indirect=True)
async def test_delivered_with_login(
    smtp: tuple[Mode, Inbox, int], cert: tuple[Path, Path]
) -> None:
    mode, inbox, port = smtp
    async with httpx.AsyncClient() as client:
        result = await _channel(mode, port, cert[0]).send(_message(), client)
    assert result.ok, result.error
    [(rcpts, raw)] = inbox.mails
    assert rcpts == ["it@hall.test", "duty@hall.test"]
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == TITLE and parsed["X-Hallmon-Key"] == "it:notice:m1"


@pytest.mark.parametrize("smtp", ["tls"], indirect=True)
async def test_wrong_password_is_permanent_and_secret_free(
    smtp: tuple[Mode, Inbox, int], cert: tuple[Path, Path]
) -> None:
    mode, inbox, port = smtp
    channel = _channel(mode, port, cert[0], password="pw-WRONG")
    async with httpx.AsyncClient() as client:
        result = await channel.send(_message(), client)
    assert not result.ok and not result.retryable
    assert "pw-WRONG" not in (result.error or "") and "pw-WRONG" not in repr(channel)
    assert inbox.mails == []


async def test_server_down_is_retryable(cert: tuple[Path, Path]) -> None:
    async with httpx.AsyncClient() as client:
        result = await _channel("tls", free_port(), cert[0]).send(_message(), client)
    assert not result.ok and result.retryable
