"""From a resolved inventory check to a probe call: the one place that knows both worlds.

The probe configs are probes' own frozen dataclasses; this module fills them from the inventory
(credentials, ports, OIDs) and makes every transport retry fit inside the scheduler's deadline
(a probe whose retries outlast the deadline would be cancelled without saying why).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from monitor.inventory import (
    Device,
    HttpCheck,
    IcmpCheck,
    Inventory,
    MockCheck,
    OidSpec,
    ResolvedCheck,
    SnmpCheck,
    SnmpCredential,
    TcpCheck,
)
from probes import PROBES
from probes import http as http_probe
from probes import icmp as icmp_probe
from probes import mock as mock_probe
from probes import snmp as snmp_probe
from probes import tcp as tcp_probe
from probes.result import ProbeResult

ProbeCall = Callable[[], Awaitable[ProbeResult]]

# Share of the deadline a probe may use for itself; the rest is scheduling slack.
_DEADLINE_SHARE = 0.9


def snmp_auth(cred: SnmpCredential) -> snmp_probe.SnmpAuth:
    def reveal(secret: Any) -> str | None:
        return secret.get_secret_value() if secret is not None else None

    return snmp_probe.SnmpAuth(
        version=cred.version,
        community=reveal(cred.community_secret),
        user=cred.user,
        auth_protocol=cred.auth,
        auth_key=reveal(cred.auth_secret),
        priv_protocol="aes" if cred.priv == "aes128" else cred.priv,
        priv_key=reveal(cred.priv_secret),
    )


def _oids(specs: dict[str, OidSpec]) -> tuple[snmp_probe.OidSpec, ...]:
    return tuple(
        snmp_probe.OidSpec(name=name, oid=spec.oid.lstrip("."), parse=spec.parse, scale=spec.scale,
                           absent=tuple(spec.absent))
        for name, spec in specs.items()
    )


def probe_config(inventory: Inventory, device: Device, check: ResolvedCheck) -> Any:
    """The probe's config for one check of one device."""
    spec = check.spec
    budget = check.timeout * _DEADLINE_SHARE
    if isinstance(spec, IcmpCheck):
        spread = (spec.packets - 1) * spec.packet_interval
        return _shared_icmp(icmp_probe.IcmpConfig(
            packets=spec.packets,
            interval=spec.packet_interval,
            timeout=max(0.1, min(1.0, budget - spread)),
        ))
    if isinstance(spec, SnmpCheck):
        cred = inventory.credentials[device.credential or ""]
        tries = cred.retries + 1
        return snmp_probe.SnmpConfig(
            auth=snmp_auth(cred),
            port=check.port or 161,
            oids=_oids(spec.oids),
            walks=_oids(spec.walks),
            timeout=min(cred.timeout, budget / tries),
            retries=cred.retries,
        )
    if isinstance(spec, TcpCheck):
        return tcp_probe.TcpConfig(port=check.port or spec.port, timeout=budget)
    if isinstance(spec, HttpCheck):
        return http_probe.HttpConfig(
            url=spec.url,
            method=spec.method,
            expect_status=tuple(spec.expect_status),
            body_match=spec.body_match,
            verify_tls=spec.verify_tls,
            timeout=budget,
        )
    if isinstance(spec, MockCheck):
        return mock_probe.MockConfig(values=dict(spec.values))
    raise TypeError(f"unknown check kind {spec.kind!r}")


def probe_call(
    inventory: Inventory,
    device: Device,
    check: ResolvedCheck,
    *,
    mock: bool = False,
    mock_values: Mapping[str, float] | None = None,
) -> ProbeCall:
    """A zero-argument coroutine factory the scheduler calls on every run of ``check``.

    With ``mock`` every probe is the mock probe (``hallmon run --mock`` and the demo): it answers
    as the simulation script says, with the check's kind and name so scripts can target one check.
    """
    if mock:
        config: Any = _mock_config(check.name, check.kind, mock_values or {})
        fn = PROBES["mock"]
    else:
        config = probe_config(inventory, device, check)
        fn = PROBES[check.kind]
        if fn is icmp_probe.probe:
            return _IcmpCall(fn, device.address, config)
    return _Call(fn, device.address, config)


class _Call:
    """``fn(address, config)`` as a zero-argument call: one 72-byte object per check, where a
    closure was ~2x and a functools.partial (with its args tuple and keywords dict) ~3x that
    (10k checks: 2.1 MB as partials, bench/memory.py)."""

    __slots__ = ("address", "config", "fn")
    batch: Any = None  # see _IcmpCall: None = this kind runs one call at a time

    def __init__(self, fn: Callable[[str, Any], Awaitable[ProbeResult]], address: str,
                 config: Any) -> None:
        self.fn = fn
        self.address = address
        self.config = config

    def __call__(self) -> Awaitable[ProbeResult]:
        return self.fn(self.address, self.config)

    def __repr__(self) -> str:  # the config may hold a community or keys: never shown
        return f"<probe call {getattr(self.fn, '__module__', '?')} {self.address}>"


# Mock configs are frozen and identical for most checks: one shared object per distinct config
# instead of one (with two dicts) per check. Bounded: cleared past _MOCK_CONFIGS_MAX.
_mock_configs: dict[tuple[str, str, frozenset[tuple[str, float]]], mock_probe.MockConfig] = {}
_MOCK_CONFIGS_MAX = 10_000


def _mock_config(name: str, kind: str, values: Mapping[str, float]) -> mock_probe.MockConfig:
    key = (name, kind, frozenset(values.items()))
    config = _mock_configs.get(key)
    if config is None:
        if len(_mock_configs) >= _MOCK_CONFIGS_MAX:
            _mock_configs.clear()
        config = _mock_configs[key] = mock_probe.MockConfig(
            check=name, kind=kind, values=dict(values)
        )
    return config


class _IcmpCall(_Call):
    """An ICMP check: besides the one-call path (recheck, ``hallmon probe``), the scheduler
    hands every ICMP check due in one wake-up to ``batch`` at once (monitor/scheduler.py): one
    engine submit for all of them, results delivered per check, no task per check."""

    __slots__ = ()

    @staticmethod
    def batch(calls: Sequence[_Call], deliver: icmp_probe.Deliver) -> icmp_probe.Submitted:
        return icmp_probe.submit(calls, deliver)  # each call has the address and config


# One IcmpConfig object per distinct config: the ICMP engine groups a batch's targets by config
# object (one hash per run of equal configs, not one per target: ~10 % of a 10k-check cycle's
# CPU, bench/icmp_sweep.py), and 10k checks share a handful. Bounded like _mock_configs.
_icmp_configs: dict[icmp_probe.IcmpConfig, icmp_probe.IcmpConfig] = {}


def _shared_icmp(config: icmp_probe.IcmpConfig) -> icmp_probe.IcmpConfig:
    if len(_icmp_configs) >= _MOCK_CONFIGS_MAX:
        _icmp_configs.clear()
    return _icmp_configs.setdefault(config, config)
