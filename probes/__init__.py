"""Probes: talk to devices, know nothing of monitor/. One file per protocol, one registry.

Every probe is ``async def probe(target, config) -> ProbeResult``; "device down" is a value,
never an exception, and every probe is safe to cancel at any await (the scheduler's deadline).
Modules with state (sockets, engines, clients) create it lazily per event loop; the daemon
awaits :func:`close_all` on shutdown.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from probes import http, icmp, mock, snmp, tcp
from probes.result import ProbeResult

Probe = Callable[[str, Any], Awaitable[ProbeResult]]

PROBES: dict[str, Probe] = {
    "icmp": icmp.probe,  # dispatches to the native engine or ping3, see icmp.configure()
    "snmp": snmp.probe,
    "tcp": tcp.probe,
    "http": http.probe,
    "mock": mock.probe,
}


async def close_all() -> None:
    """Close every probe module's per-loop state (sockets, SNMP engine, HTTP clients)."""
    for module in (icmp, snmp, http, tcp, mock):
        close = getattr(module, "close", None)
        if close is not None:
            await close()


__all__ = ["PROBES", "Probe", "ProbeResult", "close_all", "http", "icmp", "mock", "snmp", "tcp"]
