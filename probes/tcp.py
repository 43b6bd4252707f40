"""TCP connect probe: can a device's service port be reached (RTSP 554, SIP 5060, vendor ports)."""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass

from probes.result import ProbeResult


@dataclass(frozen=True, slots=True)
class TcpConfig:
    port: int
    timeout: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, not {self.port}")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")


_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset",
}


async def probe(target: str, config: TcpConfig) -> ProbeResult:
    """Open and close one connection; ``connect_seconds`` covers resolution and handshake."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(config.timeout):
            _, writer = await asyncio.open_connection(target, config.port)
        elapsed = loop.time() - start
    except TimeoutError:
        return ProbeResult.failure(loop.time() - start, "timeout")
    except socket.gaierror:
        return ProbeResult.failure(loop.time() - start, "name not resolved")
    except OSError as exc:
        reason = _REASONS.get(exc.errno or 0, f"connect failed: {exc.strerror or exc}")
        return ProbeResult.failure(loop.time() - start, reason)
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:  # a reset while closing says nothing about reachability
                pass
    return ProbeResult.success(elapsed, {"connect_seconds": elapsed})


async def close() -> None:
    """Nothing shared to close; present so every probe module has the same shutdown call."""
