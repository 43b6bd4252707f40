"""HTTP(S) probe: status, latency, optional body match and days until the TLS certificate expires.

One httpx client per event loop (and per TLS-verification setting), created lazily and shared,
closed by :func:`close`. ``{address}`` in the URL becomes the device's address.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from probes._perloop import PerLoop
from probes.result import ProbeResult


@dataclass(frozen=True, slots=True)
class HttpConfig:
    url: str
    method: str = "GET"
    expect_status: tuple[int, ...] = ()  # empty: any 2xx
    body_match: str | None = None  # a regular expression searched in the body
    verify_tls: bool = True
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://: {self.url!r}")
        if self.body_match is not None:
            re.compile(self.body_match)  # a bad pattern is a config error, raised early


_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset",
}
_clients: PerLoop[dict[bool, httpx.AsyncClient]] = PerLoop(lambda _loop: {})  # by verify_tls
_MAX_BODY = 1024 * 1024  # body_match reads at most this much


def _client(verify: bool) -> httpx.AsyncClient:
    clients = _clients.get()
    client = clients.get(verify)
    if client is None:
        client = clients[verify] = httpx.AsyncClient(
            verify=verify, follow_redirects=True, trust_env=False)
    return client


async def close() -> None:
    """Close this loop's HTTP clients (daemon shutdown, test teardown)."""
    for client in (_clients.pop() or {}).values():
        await client.aclose()


def url_for(target: str, url: str) -> str:
    host = f"[{target}]" if ":" in target else target  # IPv6 literal in a URL
    return url.replace("{address}", host)


async def probe(target: str, config: HttpConfig) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = loop.time()
    values: dict[str, float] = {}
    url = url_for(target, config.url)
    try:
        async with asyncio.timeout(config.timeout):
            async with _client(config.verify_tls).stream(config.method, url) as response:
                values["response_seconds"] = loop.time() - start  # time to headers
                days = _tls_expiry_days(response)
                if days is not None:
                    values["tls_expiry_days"] = days
                body = await _read(response) if config.body_match is not None else b""
                values["content_length"] = float(
                    response.headers.get("content-length") or len(body))
                values["status_code"] = float(response.status_code)
    except TimeoutError:
        return ProbeResult.failure(loop.time() - start, "timeout", values)
    except httpx.ConnectError as exc:
        return ProbeResult.failure(loop.time() - start, _connect_reason(exc), values)
    except httpx.HTTPError as exc:
        return ProbeResult.failure(loop.time() - start, f"http error: {type(exc).__name__}")
    duration = loop.time() - start
    status = response.status_code
    if config.expect_status and status not in config.expect_status:
        return ProbeResult.failure(duration, f"unexpected status {status}", values)
    if not config.expect_status and not 200 <= status < 300:
        return ProbeResult.failure(duration, f"unexpected status {status}", values)
    if config.body_match is not None and not re.search(
        config.body_match.encode(), body
    ):
        return ProbeResult.failure(duration, "body does not match", values)
    return ProbeResult.success(duration, values)


async def _read(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_BODY:
            break
    return b"".join(chunks)


def _connect_reason(exc: httpx.ConnectError) -> str:
    """The root cause's reason: httpx wraps the OSError ("All connection attempts failed")."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            break
        if isinstance(cause, socket.gaierror):
            return "name not resolved"
        if isinstance(cause, OSError) and cause.errno in _ERRNO:
            return _ERRNO[cause.errno]
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    if "certificate" in text or "ssl" in text:
        return "tls error: certificate not trusted" if "verify" in text else "tls error"
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "not known" in text:
        return "name not resolved"
    if "unreachable" in text:
        return "network unreachable"
    return "connect failed"


def _tls_expiry_days(response: httpx.Response) -> float | None:
    stream: Any = response.extensions.get("network_stream")
    obj = stream.get_extra_info("ssl_object") if stream is not None else None
    if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = obj.getpeercert(binary_form=True)  # also present when verification is off
    not_after = _not_after(der) if der else None
    if not_after is None:
        return None
    return (not_after - time.time()) / 86400.0


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, pos, pos + length


def _not_after(der: bytes) -> float | None:
    """notAfter of an X.509 certificate, read with a tiny DER walk (no crypto library needed):
    Certificate -> tbsCertificate -> [version] serial signature issuer validity."""
    try:
        _, pos, _ = _tlv(der, 0)
        _, pos, _ = _tlv(der, pos)  # into tbsCertificate
        tag, _, end = _tlv(der, pos)
        if tag == 0xA0:  # explicit version
            pos = end
        for _ in range(3):  # serial, signature algorithm, issuer
            _, _, pos = _tlv(der, pos)
        _, pos, _ = _tlv(der, pos)  # into validity
        _, _, pos = _tlv(der, pos)  # skip notBefore
        tag, start, end = _tlv(der, pos)
        text = der[start:end].decode("ascii")
        fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"  # UTCTime | GeneralizedTime
        return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
    except (IndexError, ValueError):
        return None
