"""SNMP probe: one GET PDU per device carrying all its OIDs, bulk walks; v1/v2c on a fast path.

v1/v2c go through our own BER codec and UDP client (``probes.snmp_ber``, ``probes.snmp_udp``):
pysnmp spends ~2 ms CPU building and parsing each message, the fast path a tenth of that. v3
stays on pysnmp 7 asyncio, whose engine is only created when a v3 probe first needs it.

One ``SnmpEngine`` and one UDP socket per event loop, shared by every probe (an engine costs
1-4 MB and ~45 ms). More than ~100 requests in flight overflow a default receive buffer and
replies vanish silently (docs/field-notes.md, SNMP): a semaphore caps requests in flight
(default 100) and the socket's SO_RCVBUF is raised. OIDs are numeric and responses are not
looked up in MIBs.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # at run time: _load_pysnmp(), on the first v3 probe
    from pyasn1.codec.ber import decoder as ber_decoder  # type: ignore[import-untyped]
    from pyasn1.error import PyAsn1Error  # type: ignore[import-untyped]
    from pysnmp.carrier.asyncio.dgram import udp, udp6
    from pysnmp.entity import config as engine_config
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        Udp6TransportTarget,
        UdpTransportTarget,
        UsmUserData,
        bulk_walk_cmd,
        get_cmd,
        usmNoAuthProtocol,
        usmNoPrivProtocol,
        walk_cmd,
    )
    from pysnmp.proto import api, errind, rfc1902
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message

from probes import snmp_ber, snmp_udp
from probes._perloop import PerLoop
from probes.icmp import parse_literal
from probes.result import ProbeResult

AuthProtocol = Literal["sha", "sha224", "sha256", "sha384", "sha512"]
PrivProtocol = Literal["aes", "aes192", "aes256"]
# pysnmp's protocol objects by name (looked up once pysnmp is loaded).
_AUTH = {
    "sha": "usmHMACSHAAuthProtocol",
    "sha224": "usmHMAC128SHA224AuthProtocol",
    "sha256": "usmHMAC192SHA256AuthProtocol",
    "sha384": "usmHMAC256SHA384AuthProtocol",
    "sha512": "usmHMAC384SHA512AuthProtocol",
}
_PRIV = {
    "aes": "usmAesCfb128Protocol",
    "aes192": "usmAesCfb192Protocol",
    "aes256": "usmAesCfb256Protocol",
}
_RCVBUF_BYTES = 8 * 1024 * 1024
_MAX_REPETITIONS = 25


class Secret:
    """A string that never prints: repr and str are ``<secret>``; ``get()`` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _secret(value: str | Secret | None) -> Secret | None:
    return value if value is None or isinstance(value, Secret) else Secret(value)


@dataclass(frozen=True, slots=True)
class SnmpAuth:
    """Credentials (kept apart from what to collect). v3 always names SHA-2/AES protocols:
    pysnmp would otherwise default to MD5/DES."""

    version: Literal["1", "2c", "3"]
    community: str | Secret | None = None
    user: str | None = None
    auth_protocol: AuthProtocol | None = None
    auth_key: str | Secret | None = None
    priv_protocol: PrivProtocol | None = None
    priv_key: str | Secret | None = None

    def __post_init__(self) -> None:
        for name in ("community", "auth_key", "priv_key"):
            object.__setattr__(self, name, _secret(getattr(self, name)))
        if self.version in ("1", "2c") and self.community is None:
            raise ValueError(f"SNMP v{self.version} needs a community")
        if self.version == "3":
            if not self.user:
                raise ValueError("SNMP v3 needs a user")
            if (self.auth_protocol is None) != (self.auth_key is None):
                raise ValueError("SNMP v3: give auth_protocol and auth_key together")
            if (self.priv_protocol is None) != (self.priv_key is None):
                raise ValueError("SNMP v3: give priv_protocol and priv_key together")
            if self.priv_protocol and not self.auth_protocol:
                raise ValueError("SNMP v3: privacy needs authentication (authPriv)")
        if self.auth_protocol is not None and self.auth_protocol not in _AUTH:
            raise ValueError(f"unknown auth_protocol {self.auth_protocol!r}")
        if self.priv_protocol is not None and self.priv_protocol not in _PRIV:
            raise ValueError(f"unknown priv_protocol {self.priv_protocol!r}")

    def __repr__(self) -> str:
        shown = [f"version={self.version!r}"]
        if self.community is not None:
            shown.append("community=<secret>")
        if self.user is not None:
            shown.append(f"user={self.user!r}")
        if self.auth_protocol:
            shown.append(f"auth_protocol={self.auth_protocol!r}, auth_key=<secret>")
        if self.priv_protocol:
            shown.append(f"priv_protocol={self.priv_protocol!r}, priv_key=<secret>")
        return f"SnmpAuth({', '.join(shown)})"

    __str__ = __repr__

    def pysnmp_auth(self) -> CommunityData | UsmUserData:
        hlapi = _load_pysnmp()
        if self.version != "3":
            assert isinstance(self.community, Secret)
            return CommunityData(self.community.get(), mpModel=0 if self.version == "1" else 1)
        auth_key = self.auth_key.get() if isinstance(self.auth_key, Secret) else None
        priv_key = self.priv_key.get() if isinstance(self.priv_key, Secret) else None
        return UsmUserData(
            self.user,
            authKey=auth_key,
            privKey=priv_key,
            authProtocol=getattr(hlapi, _AUTH[self.auth_protocol]) if self.auth_protocol
            else usmNoAuthProtocol,
            privProtocol=getattr(hlapi, _PRIV[self.priv_protocol]) if self.priv_protocol
            else usmNoPrivProtocol,
        )


@dataclass(frozen=True, slots=True)
class OidSpec:
    """What to read: ``parse`` "number" takes the leading number of a text ("10 PERCENT" -> 10);
    ``scale`` multiplies numbers (TimeTicks 0.01 -> seconds); a raw number in ``absent`` means
    "not measured" and is left out (H3C: temperature 65535 where an entity has no sensor)."""

    name: str
    oid: str
    parse: Literal["auto", "number", "text"] = "auto"
    scale: float = 1.0
    absent: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\.?\d+(\.\d+)+", self.oid):
            raise ValueError(f"OID must be numeric (lookupMib=False): {self.oid!r}")
        object.__setattr__(self, "oid", self.oid.lstrip("."))


@dataclass(frozen=True, slots=True)
class SnmpConfig:
    auth: SnmpAuth
    port: int = 161
    oids: tuple[OidSpec, ...] = ()
    walks: tuple[OidSpec, ...] = ()
    timeout: float = 1.0
    retries: int = 1

    def __post_init__(self) -> None:
        if not self.oids and not self.walks:
            raise ValueError("SnmpConfig needs oids or walks")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")


# ---------------------------------------------------------------- engine (one per loop)
@dataclass(slots=True)
class _Settings:
    max_in_flight: int = 100


_settings = _Settings()


def configure(max_in_flight: int = 100) -> None:
    """Cap on SNMP requests in flight over all probes (beyond ~100, replies get lost)."""
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be >= 1")
    _settings.max_in_flight = max_in_flight


class _Watchful:
    """Mixin for the UDP transports: keep the last datagram from each peer, so a timeout can
    tell "the device answered garbage" (malformed reply) from "it never answered"."""

    last: dict[tuple[str, int], tuple[float, bytes]]

    def datagram_received(self, datagram: bytes, transportAddress: Any) -> None:
        self.last[(str(transportAddress[0]), int(transportAddress[1]))] = (
            asyncio.get_running_loop().time(),
            datagram,
        )
        super().datagram_received(datagram, transportAddress)  # type: ignore[misc]


# ---------------------------------------------------------------- pysnmp, loaded on first use
# v1/v2c never touch pysnmp: importing it (engine, MIB machinery, pyasn1) costs ~13 MB of RSS a
# v1/v2c or mock hall would pay for nothing (bench/memory.py). The first v3 probe, an engine or
# ``convert`` loads it and binds the names below as module globals.
_NUMERIC: Any = ()
_MISSING: dict[Any, str] = {}
_AUTH_FAILURES: Any = ()
_Udp: Any = None
_Udp6: Any = None


def _load_pysnmp() -> Any:
    """Import pysnmp once; returns its hlapi module (protocol objects are looked up by name)."""
    global ber_decoder, PyAsn1Error, udp, udp6, engine_config, api, errind, rfc1902
    global CommunityData, ContextData, ObjectIdentity, ObjectType, SnmpEngine
    global Udp6TransportTarget, UdpTransportTarget, UsmUserData, usmNoAuthProtocol
    global usmNoPrivProtocol, bulk_walk_cmd, get_cmd, walk_cmd, SNMPv3Message
    global _NUMERIC, _MISSING, _AUTH_FAILURES, _Udp, _Udp6
    if _NUMERIC:
        return _hlapi()
    from pyasn1.codec.ber import decoder as ber_decoder
    from pyasn1.error import PyAsn1Error
    from pysnmp.carrier.asyncio.dgram import udp, udp6
    from pysnmp.entity import config as engine_config
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        Udp6TransportTarget,
        UdpTransportTarget,
        UsmUserData,
        bulk_walk_cmd,
        get_cmd,
        usmNoAuthProtocol,
        usmNoPrivProtocol,
        walk_cmd,
    )
    from pysnmp.proto import api, errind, rfc1902, rfc1905
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message

    class Udp(_Watchful, udp.UdpAsyncioTransport):
        pass

    class Udp6(_Watchful, udp6.Udp6AsyncioTransport):
        pass

    _Udp, _Udp6 = Udp, Udp6

    _NUMERIC = (rfc1902.Integer32, rfc1902.Integer, rfc1902.Unsigned32, rfc1902.Gauge32,
                rfc1902.Counter32, rfc1902.Counter64, rfc1902.TimeTicks)
    _MISSING = {
        rfc1905.NoSuchObject: "noSuchObject",
        rfc1905.NoSuchInstance: "noSuchInstance",
        rfc1905.EndOfMibView: "endOfMibView",
    }
    _AUTH_FAILURES = (
        errind.UnknownUserName, errind.WrongDigest, errind.UnknownEngineID, errind.DecryptionError,
        errind.UnsupportedSecurityLevel, errind.AuthenticationFailure, errind.NotInTimeWindow,
    )
    return _hlapi()


def _hlapi() -> Any:
    import pysnmp.hlapi.v3arch.asyncio as hlapi

    return hlapi


class _Engine:
    def __init__(self) -> None:
        self.limit = asyncio.Semaphore(_settings.max_in_flight)
        self.fast = snmp_udp.SnmpClient(self.limit)  # v1/v2c; shares the in-flight cap
        self._snmp: SnmpEngine | None = None
        self.last: dict[tuple[str, int], tuple[float, bytes]] = {}
        self.transports: list[Any] = []
        self.socks: list[socket.socket] = []
        # Built once per device/credential: a transport target costs an executor round trip
        # (pysnmp resolves even IP literals with getaddrinfo), auth data a few objects.
        self.targets: dict[tuple[int, str, int, float, int], Any] = {}
        self.auths: dict[SnmpAuth, Any] = {}
        self.binds: dict[str, Any] = {}  # resolved once: MIB resolution per request is costly

    @property
    def snmp(self) -> SnmpEngine:
        """The pysnmp engine (v3 only), made on first use: v1/v2c-only halls never pay for it."""
        if self._snmp is None:
            _load_pysnmp()
            self._snmp = SnmpEngine()
            self._add(socket.AF_INET, _Udp, udp.DOMAIN_NAME, ("0.0.0.0", 0))
            self._add(socket.AF_INET6, _Udp6, udp6.DOMAIN_NAME, ("::", 0))
        return self._snmp

    def _add(self, family: int, cls: type, domain: Any, bind: tuple[str, int]) -> None:
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:  # no IPv6 on this host
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF_BYTES)  # SO_RCVBUFFORCE (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
        try:
            sock.bind(bind)
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        transport = cls()
        transport.last = self.last
        # Server mode on our own socket: the only way to hand pysnmp a socket we tuned.
        transport.open_server_mode(sock=sock)
        engine_config.add_transport(self.snmp, domain, transport)
        self.transports.append(transport)
        self.socks.append(sock)

    def close(self) -> None:
        self.fast.close()
        if self._snmp is not None:
            self._snmp.close_dispatcher()  # closes the transports and stops the engine's timer
        for sock in self.socks:
            sock.close()
        self.last.clear()


_engines: PerLoop[_Engine] = PerLoop(lambda _loop: _Engine())
_engine = _engines.get


async def close() -> None:
    """Close this loop's SNMP engine and sockets (daemon shutdown, test teardown)."""
    engine = _engines.pop()
    if engine is not None:
        engine.close()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run


# ---------------------------------------------------------------- values
_LEADING_NUMBER = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)")


def _text(value: Any) -> str:
    if isinstance(value, rfc1902.IpAddress):  # an OctetString subclass, but shown dotted
        return str(value.prettyPrint())
    if isinstance(value, rfc1902.OctetString):
        raw = bytes(value)
        try:
            return raw.decode("utf-8").rstrip("\x00")
        except UnicodeDecodeError:
            return raw.decode("latin-1").rstrip("\x00")
    return str(value.prettyPrint())


def convert(
    spec: OidSpec, key: str, oid: str, value: Any, out: dict[str, dict[str, Any]]
) -> None:
    """Put one response value into out["values"|"texts"|"errors"] as ``spec`` says."""
    _load_pysnmp()
    for kind, word in _MISSING.items():
        if isinstance(value, kind):
            out["errors"][key] = f"{word} {oid}"
            return
    if spec.parse != "text" and isinstance(value, _NUMERIC):
        if int(value) not in spec.absent:
            out["values"][key] = int(value) * spec.scale
    elif spec.parse == "number":
        match = _LEADING_NUMBER.match(_text(value))
        if match:
            out["values"][key] = float(match.group(1)) * spec.scale
        else:
            out["errors"][key] = f"not a number: {_text(value)[:40]!r} at {oid}"
    else:
        out["texts"][key] = _text(value)


def convert_ber(
    spec: OidSpec, key: str, oid: str, tag: int, value: snmp_ber.Value,
    out: dict[str, dict[str, Any]],
) -> None:
    """``convert`` for a fast-path value (tag + plain Python value): the same outcome."""
    missing = snmp_ber.EXCEPTION_NAMES.get(tag)
    if missing is not None:
        out["errors"][key] = f"{missing} {oid}"
    elif spec.parse != "text" and tag in snmp_ber.NUMERIC_TAGS:
        if value not in spec.absent:
            out["values"][key] = value * spec.scale  # type: ignore[operator]
    elif spec.parse == "number":
        shown = snmp_ber.text(tag, value)
        match = _LEADING_NUMBER.match(shown)
        if match:
            out["values"][key] = float(match.group(1)) * spec.scale
        else:
            out["errors"][key] = f"not a number: {shown[:40]!r} at {oid}"
    else:
        out["texts"][key] = snmp_ber.text(tag, value)


def match_replies(specs: Iterable[OidSpec], varbinds: Iterable[tuple[str, Any]],
                  ) -> tuple[list[tuple[OidSpec, str, Any]], list[OidSpec]]:
    """Pair each requested spec with the reply's var-bind *of its OID*, never by position
    (agents reorder, drop or pad var-binds: a positional match read a reordered battery charge
    as "battery low" and an empty reply as healthy). Returns (matched, missing); var-binds for
    OIDs nobody asked for are ignored, a repeated OID counts once."""
    by_oid = {oid.lstrip("."): item for oid, item in reversed(list(varbinds))}  # first wins
    matched, missing = [], []
    for spec in specs:
        item = by_oid.get(spec.oid)
        if item is None:
            missing.append(spec)
        else:
            matched.append((spec, spec.oid, item))
    return matched, missing


def _no_value(spec: OidSpec, out: dict[str, dict[str, Any]]) -> None:
    out["errors"][spec.name] = f"no value in the reply for {spec.oid}"


# ---------------------------------------------------------------- requests
_CACHE_MAX = 100_000  # devices x distinct timeouts; beyond it start over rather than grow


async def _target(engine: _Engine, family: int, address: str, config: SnmpConfig) -> Any:
    key = (family, address, config.port, config.timeout, config.retries)
    target = engine.targets.get(key)
    if target is None:
        cls = Udp6TransportTarget if family == socket.AF_INET6 else UdpTransportTarget
        target = await cls.create((address, config.port), timeout=config.timeout,
                                  retries=config.retries)
        if len(engine.targets) >= _CACHE_MAX:
            engine.targets.clear()
        engine.targets[key] = target
    return target


def _bind(engine: _Engine, oid: str) -> Any:
    """A request var-bind, reused: pysnmp resolves an ObjectType against its MIB view once and
    then keeps it (~1 ms CPU per request saved). Only read by pysnmp, so sharing is safe."""
    bind = engine.binds.get(oid)
    if bind is None:
        if len(engine.binds) >= _CACHE_MAX:
            engine.binds.clear()
        bind = engine.binds[oid] = ObjectType(ObjectIdentity(oid))
    return bind


def _auth(engine: _Engine, auth: SnmpAuth) -> Any:
    data = engine.auths.get(auth)
    if data is None:
        if len(engine.auths) >= _CACHE_MAX:
            engine.auths.clear()
        data = engine.auths[auth] = auth.pysnmp_auth()
    return data


def _failure_reason(indication: Any, engine: _Engine, peer: tuple[str, int], since: float) -> str:
    if isinstance(indication, errind.RequestTimedOut):
        seen = engine.last.get(peer)
        if seen and seen[0] >= since and not _decodes(seen[1]):
            return "malformed reply"
        return "timeout"
    if isinstance(indication, _AUTH_FAILURES):
        return "authentication failure"
    return str(indication)


def _decodes(datagram: bytes) -> bool:
    """Does ``datagram`` parse as an SNMP message (v1/v2c or v3)? Called on timeouts only."""
    try:
        version = int(api.decode_message_version(datagram))
        spec = SNMPv3Message() if version == 3 else api.PROTOCOL_MODULES[version].Message()
        ber_decoder.decode(datagram, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, errind.ErrorIndication):
        return False
    except Exception:  # pysnmp raises its own error types for bad versions
        return False
    return True


async def _get(
    engine: _Engine, auth: Any, target: Any, specs: Iterable[OidSpec],
    out: dict[str, dict[str, Any]],
) -> Any:
    """One GET PDU with all OIDs; v1's noSuchName drops the named OID and asks again."""
    todo = list(specs)
    while todo:
        binds = [_bind(engine, s.oid) for s in todo]
        async with engine.limit:
            indication, status, index, varbinds = await get_cmd(
                engine.snmp, auth, target, ContextData(), *binds, lookupMib=False
            )
        if indication:
            return indication
        if status:
            bad = int(index) - 1
            if str(status.prettyPrint()) == "noSuchName" and 0 <= bad < len(todo):
                spec = todo.pop(bad)
                out["errors"][spec.name] = f"noSuchObject {spec.oid}"
                continue
            return f"error-status {status.prettyPrint()}"
        matched, missing = match_replies(todo, ((str(n), v) for n, v in varbinds))
        for spec, oid, value in matched:
            convert(spec, spec.name, oid, value, out)
        for spec in missing:
            _no_value(spec, out)
        return None
    return None


async def _walk(
    engine: _Engine, auth: Any, target: Any, spec: OidSpec, version: str,
    out: dict[str, dict[str, Any]],
) -> Any:
    prefix = spec.oid + "."
    bind = ObjectType(ObjectIdentity(spec.oid))
    ctx = ContextData()
    async with engine.limit:
        if version == "1":  # no GETBULK in v1
            rows = walk_cmd(engine.snmp, auth, target, ctx, bind,
                            lexicographicMode=False, lookupMib=False)
        else:
            rows = bulk_walk_cmd(engine.snmp, auth, target, ctx, 0, _MAX_REPETITIONS, bind,
                                 lexicographicMode=False, lookupMib=False)
        async for indication, status, _, varbinds in rows:
            if indication:
                return indication
            if status:
                out["errors"][spec.name] = f"error-status {status.prettyPrint()}"
                return None
            for name, value in varbinds:
                oid = str(name)
                if oid.startswith(prefix) and not isinstance(value, tuple(_MISSING)):
                    convert(spec, f"{spec.name}.{oid[len(prefix):]}", oid, value, out)
    return None


async def _fast_get(
    client: snmp_udp.SnmpClient, peer: snmp_udp.Peer, specs: Iterable[OidSpec],
    out: dict[str, dict[str, Any]],
) -> str | None:
    """``_get`` on the fast path: one GET, v1's noSuchName drops the named OID and asks again."""
    todo = list(specs)
    while todo:
        reply = await client.get(peer, [s.oid for s in todo])
        if isinstance(reply, str):
            return reply
        if reply.error_status:
            bad = reply.error_index - 1
            if reply.error_status == 2 and 0 <= bad < len(todo):  # noSuchName
                spec = todo.pop(bad)
                out["errors"][spec.name] = f"noSuchObject {spec.oid}"
                continue
            return f"error-status {snmp_ber.error_status_name(reply.error_status)}"
        matched, missing = match_replies(
            todo, ((oid, (tag, value)) for oid, tag, value in reply.varbinds))
        for spec, oid, (tag, value) in matched:
            convert_ber(spec, spec.name, oid, tag, value, out)
        for spec in missing:
            _no_value(spec, out)
        return None
    return None


async def _fast_walk(
    client: snmp_udp.SnmpClient, peer: snmp_udp.Peer, spec: OidSpec,
    out: dict[str, dict[str, Any]],
) -> str | None:
    walked = await client.walk(peer, spec.oid, _MAX_REPETITIONS)
    cut = len(spec.oid) + 1
    for oid, tag, value in walked.rows:
        convert_ber(spec, f"{spec.name}.{oid[cut:]}", oid, tag, value, out)
    if walked.error_status:
        out["errors"][spec.name] = (
            f"error-status {snmp_ber.error_status_name(walked.error_status)}")
    return walked.failure


async def _probe_fast(
    engine: _Engine, family: int, address: str, config: SnmpConfig, start: float
) -> ProbeResult:
    """v1/v2c: the same results as the pysnmp path, without pysnmp."""
    assert isinstance(config.auth.community, Secret)
    version = snmp_ber.VERSION_1 if config.auth.version == "1" else snmp_ber.VERSION_2C
    peer = snmp_udp.Peer(family, address, config.port, version,
                         config.auth.community.get().encode(), config.timeout, config.retries)
    out: dict[str, dict[str, Any]] = {"values": {}, "texts": {}, "errors": {}}
    problem = await _fast_get(engine.fast, peer, config.oids, out) if config.oids else None
    for spec in config.walks if problem is None else ():
        problem = await _fast_walk(engine.fast, peer, spec, out)
    duration = asyncio.get_running_loop().time() - start
    if problem is not None:
        return ProbeResult.failure(duration, problem, out["values"], out["texts"])
    return ProbeResult.success(duration, out["values"], out["texts"], out["errors"])


async def probe(target: str, config: SnmpConfig) -> ProbeResult:
    """GET ``config.oids`` in one PDU, then walk ``config.walks``; device down is a value."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    engine = _engine()
    resolved = parse_literal(target)
    if resolved is None:
        from probes.icmp import resolve  # hostnames: resolved off the loop

        resolved = await resolve(target)
        if resolved is None:
            return ProbeResult.failure(loop.time() - start, "name not resolved")
    family, address = resolved
    if config.auth.version != "3":
        return await _probe_fast(engine, family, address, config, start)
    _load_pysnmp()
    peer = (address, config.port)
    auth = _auth(engine, config.auth)
    out: dict[str, dict[str, Any]] = {"values": {}, "texts": {}, "errors": {}}
    reason: str | None = None
    try:
        transport = await _target(engine, family, address, config)
        problem = None
        if config.oids:
            problem = await _get(engine, auth, transport, config.oids, out)
        for spec in config.walks if problem is None else ():
            problem = await _walk(engine, auth, transport, spec, config.auth.version, out)
        if problem is not None:
            reason = problem if isinstance(problem, str) else _failure_reason(
                problem, engine, peer, start)
    finally:  # also on cancellation: forget the peer's last datagram
        engine.last.pop(peer, None)
    duration = loop.time() - start
    if reason is not None:
        return ProbeResult.failure(duration, reason, out["values"], out["texts"])
    return ProbeResult.success(duration, out["values"], out["texts"], out["errors"])
