"""TCP and HTTP(S) probes against real servers on 127.0.0.1, port 0, closed by the fixture."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from probes import http, tcp
from probes.http import HttpConfig
from probes.tcp import TcpConfig
from tests.conftest import require_tool


@pytest.fixture(autouse=True)
async def _clients() -> AsyncIterator[None]:
    yield
    await http.close()


Handler = tuple[int, bytes]


async def _serve(
    status: int = 200, body: bytes = b"kiosk app OK", delay: float = 0.0,
    tls: ssl.SSLContext | None = None,
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            head = (f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def _stop(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


# ---------------------------------------------------------------- TCP
async def test_tcp_connect_ok() -> None:
    server = await _serve()
    try:
        result = await tcp.probe("127.0.0.1", TcpConfig(port=_port(server)))
    finally:
        await _stop(server)
    assert result.ok, result
    assert 0 < result.values["connect_seconds"] < 1


async def test_tcp_refused() -> None:
    with socket.socket() as sock:  # a port that was just free: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await tcp.probe("127.0.0.1", TcpConfig(port=port, timeout=1.0))
    assert not result.ok and result.error == "connection refused"


async def test_tcp_timeout_when_backlog_is_full() -> None:
    """A listener that never accepts, with its backlog full, drops SYNs: a real timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        result = await tcp.probe("127.0.0.1", TcpConfig(port=port, timeout=0.3))
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert not result.ok and result.error == "timeout"


async def test_tcp_unknown_name() -> None:
    result = await tcp.probe("no-such-device.invalid", TcpConfig(port=80))
    assert result.error == "name not resolved"


# ---------------------------------------------------------------- HTTP
async def test_http_status_latency_and_body_match() -> None:
    server = await _serve(body=b"<h1>queue display ready</h1>")
    try:
        config = HttpConfig(url=f"http://{{address}}:{_port(server)}/health",
                            body_match=r"display\s+ready")
        result = await http.probe("127.0.0.1", config)
    finally:
        await _stop(server)
    assert result.ok, result
    assert result.values["status_code"] == 200
    assert result.values["content_length"] == len(b"<h1>queue display ready</h1>")
    assert 0 < result.values["response_seconds"] < 1
    assert "tls_expiry_days" not in result.values


async def test_http_unexpected_status_and_body_mismatch() -> None:
    server = await _serve(status=503, body=b"maintenance")
    try:
        url = f"http://127.0.0.1:{_port(server)}/"
        bad = await http.probe("127.0.0.1", HttpConfig(url=url))
        accepted = await http.probe("127.0.0.1", HttpConfig(url=url, expect_status=(503,)))
        mismatch = await http.probe("127.0.0.1", HttpConfig(url=url, expect_status=(503,),
                                                             body_match="ready"))
    finally:
        await _stop(server)
    assert bad.error == "unexpected status 503" and bad.values["status_code"] == 503
    assert accepted.ok
    assert mismatch.error == "body does not match"


async def test_http_timeout() -> None:
    server = await _serve(delay=2.0)
    try:
        result = await http.probe("127.0.0.1", HttpConfig(url=f"http://127.0.0.1:{_port(server)}/",
                                                          timeout=0.2))
    finally:
        await _stop(server)
    assert result.error == "timeout"


async def test_http_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await http.probe("127.0.0.1", HttpConfig(url=f"http://127.0.0.1:{port}/"))
    assert result.error == "connection refused"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    openssl = require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    yield cert, key


async def test_https_reports_days_to_certificate_expiry(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = await _serve(tls=tls)
    try:
        url = f"https://127.0.0.1:{_port(server)}/"
        untrusted = await http.probe("127.0.0.1", HttpConfig(url=url))
        unverified = await http.probe("127.0.0.1", HttpConfig(url=url, verify_tls=False))
    finally:
        await _stop(server)
    assert not untrusted.ok and untrusted.error is not None
    assert untrusted.error.startswith("tls error")
    assert unverified.ok, unverified
    assert 29.0 < unverified.values["tls_expiry_days"] <= 30.0


def test_address_placeholder() -> None:
    assert http.url_for("127.0.0.9", "http://{address}:8080/x") == "http://127.0.0.9:8080/x"
    assert http.url_for("::1", "http://{address}/") == "http://[::1]/"
    with pytest.raises(ValueError):
        HttpConfig(url="ftp://x/")
