"""Portable ICMP backend on ping3 for hosts where the native engine cannot run (Windows, macOS).

ping3 blocks, so each packet runs in a bounded thread pool (never in the event loop). It is
~10x costlier in CPU than the native engine and opens a socket per packet, so under a burst of
thousands of probes replies can be lost (docs/field-notes.md, ICMP); bench/ping3_vs_native.py
measures it.
Same result shape as the native engine (shared ``summarize``).
"""

from __future__ import annotations

import asyncio
import errno
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import ping3

from probes._perloop import PerLoop
from probes.result import ProbeResult

if TYPE_CHECKING:
    from probes.icmp import IcmpConfig

_WORKERS = 64
# Exceptions, not False, for every failure: "name not resolved" must differ from "no reply".
ping3.EXCEPTIONS = True
_pools: PerLoop[ThreadPoolExecutor] = PerLoop(
    lambda _loop: ThreadPoolExecutor(_WORKERS, thread_name_prefix="hallmon-ping3"))
_pool = _pools.get


def _one(address: str, seq: int, config: IcmpConfig) -> float | str | None:
    """RTT in seconds, None for no reply, or an error reason (runs in a worker thread)."""
    try:
        # seq distinguishes our packets; ping3 matches replies by its own id (the thread id).
        rtt = ping3.ping(address, timeout=config.timeout, unit="s", seq=seq, size=config.size)
    except ping3.errors.Timeout:
        return None
    except ping3.errors.HostUnknown:
        return "name not resolved"
    except ping3.errors.DestinationUnreachable:
        return "host unreachable"
    except ping3.errors.PingError as exc:
        return f"icmp error: {exc}"
    except PermissionError:
        return "permission denied (ping3 needs a raw or ping socket)"
    except OSError as exc:
        if exc.errno == errno.ENETUNREACH:
            return "network unreachable"
        return f"send failed: {exc.strerror}"
    if rtt is None or rtt is False:
        return None
    return float(rtt)


async def probe(target: str, config: IcmpConfig) -> ProbeResult:
    """Same contract as probes.icmp.probe, on ping3 (packets one after another)."""
    from probes.icmp import summarize  # icmp imports this module lazily; no import cycle

    loop = asyncio.get_running_loop()
    start = loop.time()
    pool = _pool()
    rtts: list[float] = []
    error: str | None = None
    sent = 0
    for seq in range(config.packets):
        if seq:
            await asyncio.sleep(config.interval)
        outcome = await loop.run_in_executor(pool, _one, target, seq, config)
        if isinstance(outcome, str):
            error = outcome
            break
        sent += 1
        if outcome is not None:
            rtts.append(outcome)
    if error == "name not resolved":
        return ProbeResult.failure(loop.time() - start, error)
    return summarize(loop.time() - start, sent, rtts, error)


async def close() -> None:
    """Shut this loop's worker threads down (waits for packets in flight, bounded by timeout)."""
    pool = _pools.pop()
    if pool is not None:
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
