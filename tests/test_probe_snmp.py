"""SNMP probe against real agents on loopback: snmpsim serving recordings of real devices
(values asserted against the recording files), net-snmp snmpd with our own config (v1, v2c,
v3 authPriv), a UDP socket that never answers and a server that answers malformed BER."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from probes import snmp, snmp_udp
from probes import snmp_ber as ber
from probes.snmp import OidSpec, SnmpAuth, SnmpConfig
from tests.agents.snmp import (
    SIM_BIN,
    SNMPD_USERS,
    Agent,
    recording,
    snmpd_agent,
    snmpsim_agent,
)
from tests.agents.udp import MALFORMED_BER, malformed_ber_server, silent_udp
from tests.conftest import missing_tool, require_tool

SYS_DESCR = OidSpec("sys_descr", "1.3.6.1.2.1.1.1.0")
SYS_UPTIME = OidSpec("uptime_seconds", "1.3.6.1.2.1.1.3.0", scale=0.01)
SYS_NAME = OidSpec("sys_name", "1.3.6.1.2.1.1.5.0")
SYS_LOCATION = OidSpec("sys_location", "1.3.6.1.2.1.1.6.0")
MISSING = OidSpec("missing", "1.3.6.1.2.1.1.99.0")
IF_DESCR = OidSpec("if_descr", "1.3.6.1.2.1.2.2.1.2")


@pytest.fixture(autouse=True)
async def _engine() -> AsyncIterator[None]:
    snmp.configure()
    yield
    await snmp.close()
    snmp.configure()


@pytest.fixture(scope="module")
def snmpd() -> Iterator[Agent]:
    require_tool("snmpd", "/usr/sbin/snmpd")
    with snmpd_agent() as agent:
        yield agent


def v2c(agent: Agent, *oids: OidSpec, walks: tuple[OidSpec, ...] = (), **kw: float) -> SnmpConfig:
    return SnmpConfig(SnmpAuth("2c", community=agent.community), port=agent.port, oids=oids,
                      walks=walks, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- recordings (snmpsim)
def expected(records: dict[str, tuple[str, str]], oid: str) -> float | str:
    """A recorded value as the probe should report it (numbers as float, text decoded)."""
    tag, raw = records[oid]
    if tag in ("2", "65", "66", "67", "70"):
        return float(raw)
    if tag == "4x":
        return bytes.fromhex(raw).decode("utf-8", errors="replace").rstrip("\x00")
    return raw.rstrip("\x00")


@pytest.fixture(scope="module")
def sim() -> Iterator[dict[str, Agent]]:
    if not SIM_BIN.exists():
        missing_tool("snmpsim venv missing: make .venv-snmpsim/.installed")
    agents: dict[str, Agent] = {}
    from contextlib import ExitStack

    with ExitStack() as stack:
        for name in ("hikvision", "hikvision-nvr", "huawei-s5720", "apc-8932", "windows-xp"):
            agents[name] = stack.enter_context(snmpsim_agent(name))
        yield agents


HIK = "1.3.6.1.4.1.39165.1"
NVR = "1.3.6.1.4.1.50001.1"

# (recording, GET specs) — the class-profile kind of OIDs each device would get.
RECORDED_GETS = [
    ("hikvision", [OidSpec("model", f"{HIK}.1.0"), OidSpec("vendor", f"{HIK}.6.0"),
                   OidSpec("firmware", f"{HIK}.3.0"), OidSpec("flag", f"{HIK}.12.0")]),
    ("hikvision-nvr", [SYS_DESCR, OidSpec("uptime", "1.3.6.1.2.1.1.3.0"),
                       OidSpec("nvr_value", f"{NVR}.2.0"), OidSpec("nvr_220", f"{NVR}.220.0")]),
    ("huawei-s5720", [SYS_DESCR, SYS_NAME, OidSpec("if_number", "1.3.6.1.2.1.2.1.0"),
                      OidSpec("udp_hc_in", "1.3.6.1.2.1.7.8.0")]),
    ("apc-8932", [SYS_DESCR, SYS_NAME, OidSpec("uptime", "1.3.6.1.2.1.1.3.0")]),
    ("windows-xp", [SYS_DESCR, SYS_NAME, SYS_LOCATION, OidSpec("if_number", "1.3.6.1.2.1.2.1.0")]),
]


@pytest.mark.parametrize(("name", "specs"), RECORDED_GETS, ids=[n for n, _ in RECORDED_GETS])
async def test_get_matches_the_recording(
    sim: dict[str, Agent], name: str, specs: list[OidSpec]
) -> None:
    agent = sim[name]
    records = recording(name)
    result = await snmp.probe(agent.host, v2c(agent, *specs))
    assert result.ok, result
    for spec in specs:
        want = expected(records, spec.oid)
        got = result.values.get(spec.name, result.texts.get(spec.name))
        assert got == want, (spec, got, want)


async def test_hikvision_percent_text_parses_as_number(sim: dict[str, Agent]) -> None:
    agent = sim["hikvision"]
    records = recording("hikvision")
    assert expected(records, f"{HIK}.7.0") == "52 PERCENT"  # what the camera really says
    result = await snmp.probe(agent.host, v2c(agent, OidSpec("cpu_percent", f"{HIK}.7.0",
                                                             parse="number"),
                                              OidSpec("mem_percent", f"{HIK}.11.0",
                                                      parse="number"),
                                              OidSpec("model", f"{HIK}.1.0", parse="number")))
    assert result.values["cpu_percent"] == 52.0 and result.values["mem_percent"] == 75.0
    assert result.errors["model"].startswith("not a number")


async def test_switch_interface_walks_match_the_recording(sim: dict[str, Agent]) -> None:
    agent = sim["huawei-s5720"]
    records = recording("huawei-s5720")
    oper = OidSpec("if_oper_status", "1.3.6.1.2.1.2.2.1.8")
    hc_in = OidSpec("if_hc_in_octets", "1.3.6.1.2.1.31.1.1.1.6")
    result = await snmp.probe(agent.host, v2c(agent, SYS_NAME, walks=(IF_DESCR, oper, hc_in)))
    assert result.ok, result
    for spec, store in ((IF_DESCR, result.texts), (oper, result.values), (hc_in, result.values)):
        prefix = spec.oid + "."
        want = {f"{spec.name}.{o[len(prefix):]}": expected(records, o)
                for o in records if o.startswith(prefix)}
        got = {k: v for k, v in store.items() if k.startswith(spec.name + ".")}
        assert got == want
    assert len([k for k in result.texts if k.startswith("if_descr.")]) == 39


async def test_windows_storage_walk(sim: dict[str, Agent]) -> None:
    agent = sim["windows-xp"]
    size = OidSpec("hr_storage_size", "1.3.6.1.2.1.25.2.3.1.5")
    result = await snmp.probe(agent.host, v2c(agent, walks=(size,)))
    assert result.values["hr_storage_size.1"] == 1952447.0
    assert result.values["hr_storage_size.5"] == 15852.0


# ---------------------------------------------------------------- net-snmp snmpd
async def test_v2c_get_text_number_and_missing(snmpd: Agent) -> None:
    result = await snmp.probe(snmpd.host, v2c(snmpd, SYS_DESCR, SYS_UPTIME, SYS_LOCATION,
                                              MISSING))
    assert result.ok, result
    assert result.texts["sys_location"] == "hallmon test hall, floor 2"
    assert result.values["uptime_seconds"] >= 0  # TimeTicks scaled to seconds
    assert result.errors == {"missing": "noSuchObject 1.3.6.1.2.1.1.99.0"}


async def test_v1_no_such_name_drops_only_that_oid(snmpd: Agent) -> None:
    config = SnmpConfig(SnmpAuth("1", community=snmpd.community), port=snmpd.port,
                        oids=(SYS_LOCATION, MISSING, SYS_UPTIME), walks=(IF_DESCR,))
    result = await snmp.probe(snmpd.host, config)
    assert result.ok, result
    assert result.texts["sys_location"] == "hallmon test hall, floor 2"
    assert "uptime_seconds" in result.values
    assert result.errors["missing"].startswith("noSuchObject")
    assert result.texts["if_descr.1"] == "lo"


_PROTOCOLS = {"SHA": "sha", "SHA-256": "sha256", "SHA-512": "sha512", "AES": "aes",
              "AES-256": "aes256"}


@pytest.mark.parametrize("user", SNMPD_USERS, ids=[u[0] for u in SNMPD_USERS])
async def test_v3_auth_priv(snmpd: Agent, user: tuple[str, str, str, str, str]) -> None:
    name, auth, auth_key, priv, priv_key = user
    creds = SnmpAuth("3", user=name, auth_protocol=_PROTOCOLS[auth],  # type: ignore[arg-type]
                     auth_key=auth_key, priv_protocol=_PROTOCOLS[priv],  # type: ignore[arg-type]
                     priv_key=priv_key)
    result = await snmp.probe(snmpd.host, SnmpConfig(creds, port=snmpd.port,
                                                     oids=(SYS_LOCATION,), walks=(IF_DESCR,)))
    assert result.ok, result
    assert result.texts["sys_location"] == "hallmon test hall, floor 2"


@pytest.mark.parametrize("who", ["wrong key", "unknown user"])
async def test_v3_bad_credentials_are_an_authentication_failure(snmpd: Agent, who: str) -> None:
    name, _, auth_key, _, priv_key = SNMPD_USERS[0]
    if who == "wrong key":
        auth_key = "not-the-right-key"
    else:
        name = "nobody-here"
    creds = SnmpAuth("3", user=name, auth_protocol="sha", auth_key=auth_key,
                     priv_protocol="aes", priv_key=priv_key)
    result = await snmp.probe(snmpd.host, SnmpConfig(creds, port=snmpd.port, oids=(SYS_NAME,),
                                                     timeout=0.5, retries=0))
    assert not result.ok
    assert result.error == "authentication failure"


async def test_in_flight_cap_loses_no_reply(snmpd: Agent) -> None:
    snmp.configure(max_in_flight=20)
    config = v2c(snmpd, SYS_DESCR, SYS_UPTIME, SYS_NAME, SYS_LOCATION, timeout=2.0, retries=0)
    results = await asyncio.gather(*(snmp.probe(snmpd.host, config) for _ in range(300)))
    assert [r.ok for r in results] == [True] * 300
    assert snmp._engines[asyncio.get_running_loop()].limit._value == 20  # all slots returned


async def test_cancellation_mid_request_leaves_the_engine_usable(snmpd: Agent) -> None:
    with silent_udp() as (host, port):
        config = SnmpConfig(SnmpAuth("2c", community="x"), port=port, oids=(SYS_NAME,),
                            timeout=5.0, retries=0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await snmp.probe(host, config)
    result = await snmp.probe(snmpd.host, v2c(snmpd, SYS_LOCATION))
    assert result.ok, result
    assert snmp._engines[asyncio.get_running_loop()].limit._value == 100


# ---------------------------------------------------------------- misbehaving peers
async def test_silent_peer_times_out() -> None:
    with silent_udp() as (host, port):
        config = SnmpConfig(SnmpAuth("2c", community="public"), port=port, oids=(SYS_NAME,),
                            timeout=0.3, retries=1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await snmp.probe(host, config)
    assert not result.ok and result.error == "timeout"
    assert loop.time() - start < 0.3 * 2 + 0.5  # (retries + 1) x timeout, plus the 0.1 s tick


async def test_malformed_ber_reply_is_reported_never_raised() -> None:
    with malformed_ber_server() as (host, port):
        config = SnmpConfig(SnmpAuth("2c", community="public"), port=port, oids=(SYS_NAME,),
                            timeout=0.3, retries=0)
        result = await snmp.probe(host, config)
    assert not result.ok and result.error == "malformed reply"


async def test_unknown_name() -> None:
    config = SnmpConfig(SnmpAuth("2c", community="public"), oids=(SYS_NAME,))
    result = await snmp.probe("no-such-device.invalid", config)
    assert result.error == "name not resolved"


# ---------------------------------------------------------------- config and secrets
def test_secrets_never_print() -> None:
    creds = SnmpAuth("3", user="monitor", auth_protocol="sha256", auth_key="s3cret-auth",
                     priv_protocol="aes", priv_key="s3cret-priv")
    community = SnmpAuth("2c", community="s3cret-community")
    config = SnmpConfig(community, oids=(SYS_NAME,))
    for text in (repr(creds), str(creds), repr(community), repr(config), str(config)):
        assert "s3cret" not in text
    assert "<secret>" in repr(creds) and "<secret>" in repr(community)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": "2c"},
        {"version": "3"},
        {"version": "3", "user": "u", "auth_protocol": "sha"},
        {"version": "3", "user": "u", "priv_protocol": "aes", "priv_key": "k"},
        {"version": "3", "user": "u", "auth_protocol": "md5", "auth_key": "k"},
    ],
)
def test_incomplete_credentials_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        SnmpAuth(**kwargs)  # type: ignore[arg-type]


def test_oids_must_be_numeric() -> None:
    with pytest.raises(ValueError, match="numeric"):
        OidSpec("x", "sysDescr.0")
    assert OidSpec("x", ".1.3.6.1.2.1.1.1.0").oid == "1.3.6.1.2.1.1.1.0"


# ---------------------------------------------------------------- v1/v2c fast path
# A UDP peer we script on loopback (port 0): it decodes each request with our codec and answers
# what the test's ``answer(request, n)`` returns (n counts requests from 1).
Answer = Callable[[ber.Message, int], list[bytes]]


class _Scripted(asyncio.DatagramProtocol):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[ber.Message] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        request = ber.decode(data)
        self.requests.append(request)
        assert self.transport is not None
        for reply in self.answer(request, len(self.requests)):
            self.transport.sendto(reply, addr)


@asynccontextmanager
async def scripted_agent(answer: Answer, host: str = "127.0.0.1") -> AsyncIterator[_Scripted]:
    loop = asyncio.get_running_loop()
    transport, agent = await loop.create_datagram_endpoint(
        lambda: _Scripted(answer), local_addr=(host, 0))
    try:
        yield agent
    finally:
        transport.close()
        await asyncio.sleep(0)


def port_of(agent: _Scripted) -> int:
    assert agent.transport is not None
    return int(agent.transport.get_extra_info("sockname")[1])


def respond(request: ber.Message, binds: tuple[ber.VarBind, ...] | None = None,
            status: int = 0, index: int = 0, rid: int | None = None) -> bytes:
    return ber.encode(ber.Message(
        request.version, request.community, ber.RESPONSE,
        request.request_id if rid is None else rid, status, index,
        request.varbinds if binds is None else binds))


def fast_config(port: int, *oids: OidSpec, version: str = "2c", **kw: Any) -> SnmpConfig:
    return SnmpConfig(SnmpAuth(version, community="s3cret-community"),  # type: ignore[arg-type]
                      port=port, oids=oids, **kw)


async def test_v1_v2c_never_build_the_pysnmp_engine(snmpd: Agent) -> None:
    result = await snmp.probe(snmpd.host, v2c(snmpd, SYS_NAME, walks=(IF_DESCR,)))
    assert result.ok and result.texts["sys_name"] == "hallmon-snmpd"
    engine = snmp._engines[asyncio.get_running_loop()]
    assert engine._snmp is None  # the ~45 ms, 1-4 MB pysnmp engine is for v3 only


async def test_every_value_type_over_the_wire() -> None:
    base = "1.3.6.1.4.1.99999"
    binds: tuple[ber.VarBind, ...] = (
        (f"{base}.1.0", ber.COUNTER64, 2**64 - 1), (f"{base}.2.0", ber.IP_ADDRESS, b"\x7f\0\0\x01"),
        (f"{base}.3.0", ber.OPAQUE, b"\x9f\x78"), (f"{base}.4.0", ber.OBJECT_IDENTIFIER, "1.3.6"),
        (f"{base}.5.0", ber.INTEGER, -5), (f"{base}.6.0", ber.NO_SUCH_INSTANCE, None),
        (f"{base}.7.0", ber.GAUGE32, 10), (f"{base}.8.0", ber.END_OF_MIB_VIEW, None))
    specs = [OidSpec(f"v{i}", oid) for i, (oid, _, _) in enumerate(binds, 1)]
    async with scripted_agent(lambda req, n: [respond(req, binds)]) as agent:
        result = await snmp.probe("127.0.0.1", fast_config(port_of(agent), *specs))
    assert result.ok, result
    assert result.values == {"v1": float(2**64 - 1), "v5": -5.0, "v7": 10.0}
    assert result.texts == {"v2": "127.0.0.1", "v3": "0x9f78", "v4": "1.3.6"}
    assert result.errors == {"v6": f"noSuchInstance {base}.6.0", "v8": f"endOfMibView {base}.8.0"}


@pytest.mark.parametrize(("status", "reason"), [(1, "tooBig"), (5, "genErr"), (99, "99")])
async def test_error_status_is_the_failure_reason(status: int, reason: str) -> None:
    async with scripted_agent(lambda req, n: [respond(req, status=status, index=1)]) as agent:
        result = await snmp.probe("127.0.0.1", fast_config(port_of(agent), SYS_NAME))
    assert not result.ok and result.error == f"error-status {reason}"


async def test_foreign_replies_are_dropped_and_the_request_times_out() -> None:
    """Wrong request-id, wrong version, a request PDU, another source port: none is the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        other.setblocking(False)
        client_ports: list[int] = []

        def answer(req: ber.Message, n: int) -> list[bytes]:
            sock_port = client_ports[0]
            other.sendto(respond(req), ("127.0.0.1", sock_port))  # right id, other port
            wrong_version = ber.Message(0, req.community, ber.RESPONSE, req.request_id, 0, 0,
                                        req.varbinds)
            return [respond(req, rid=req.request_id ^ 1), ber.encode(wrong_version),
                    ber.encode(req)]

        async with scripted_agent(answer) as agent:
            engine = snmp._engine()
            await engine.fast._transport((socket.AF_INET, True))
            client_ports.append(engine.fast._transports[(socket.AF_INET, True)]
                                .get_extra_info("sockname")[1])
            result = await snmp.probe("127.0.0.1", fast_config(port_of(agent), SYS_NAME,
                                                               timeout=0.3, retries=0))
    assert not result.ok and result.error == "timeout"
    assert engine.fast.stray == 4


async def test_a_retry_resends_the_same_request_id_and_its_reply_counts() -> None:
    answer: Answer = lambda req, n: [] if n == 1 else [  # noqa: E731
        respond(req, ((SYS_NAME.oid, ber.OCTET_STRING, b"late"),))]
    async with scripted_agent(answer) as agent:
        result = await snmp.probe("127.0.0.1", fast_config(port_of(agent), SYS_NAME,
                                                           timeout=0.2, retries=2))
    assert result.ok and result.texts["sys_name"] == "late"
    assert len(agent.requests) == 2
    assert agent.requests[0].request_id == agent.requests[1].request_id


async def test_garbage_then_a_good_reply_is_a_success() -> None:
    answer: Answer = lambda req, n: [MALFORMED_BER, respond(  # noqa: E731
        req, ((SYS_NAME.oid, ber.OCTET_STRING, b"ok"),))]
    async with scripted_agent(answer) as agent:
        result = await snmp.probe("127.0.0.1", fast_config(port_of(agent), SYS_NAME))
    assert result.ok and result.texts["sys_name"] == "ok"


async def test_cancelled_request_frees_its_slot_and_request_id(snmpd: Agent) -> None:
    snmp.configure(max_in_flight=1)
    with silent_udp() as (host, port):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await snmp.probe(host, fast_config(port, SYS_NAME, timeout=5.0, retries=0))
    engine = snmp._engines[asyncio.get_running_loop()]
    assert engine.fast._pending == {} and engine.limit._value == 1
    result = await snmp.probe(snmpd.host, v2c(snmpd, SYS_LOCATION))  # the one slot works
    assert result.ok, result


async def test_walk_that_does_not_advance_fails_instead_of_looping() -> None:
    stuck = ((f"{IF_DESCR.oid}.1", ber.OCTET_STRING, b"lo"),)
    async with scripted_agent(lambda req, n: [respond(req, stuck)]) as agent:
        config = SnmpConfig(SnmpAuth("2c", community="c"), port=port_of(agent), walks=(IF_DESCR,))
        result = await snmp.probe("127.0.0.1", config)
    assert not result.ok and result.error == "OID not increasing"
    assert result.texts == {"if_descr.1": "lo"} and len(agent.requests) == 2


async def test_v1_walk_ends_at_no_such_name_and_v2c_walk_errors_are_per_walk() -> None:
    def answer(req: ber.Message, n: int) -> list[bytes]:
        if req.version == 0 and n == 1:
            return [respond(req, ((f"{IF_DESCR.oid}.1", ber.OCTET_STRING, b"lo"),))]
        return [respond(req, status=2 if req.version == 0 else 5, index=1)]

    async with scripted_agent(answer) as agent:
        v1 = SnmpConfig(SnmpAuth("1", community="c"), port=port_of(agent), walks=(IF_DESCR,))
        result = await snmp.probe("127.0.0.1", v1)
        assert result.ok and result.texts == {"if_descr.1": "lo"}
        v2 = SnmpConfig(SnmpAuth("2c", community="c"), port=port_of(agent), walks=(IF_DESCR,))
        result = await snmp.probe("127.0.0.1", v2)
    assert result.ok and result.errors == {"if_descr": "error-status genErr"}
    assert agent.requests[0].pdu_type == ber.GET_NEXT_REQUEST
    assert agent.requests[-1].pdu_type == ber.GET_BULK_REQUEST


async def test_ipv6_get() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    binds = ((SYS_NAME.oid, ber.OCTET_STRING, b"six"),)
    try:
        cm = scripted_agent(lambda req, n: [respond(req, binds)], host="::1")
        agent = await cm.__aenter__()
    except OSError:
        pytest.skip("::1 not configured")
    try:
        result = await snmp.probe("::1", fast_config(port_of(agent), SYS_NAME))
    finally:
        await cm.__aexit__(None, None, None)
    assert result.ok and result.texts["sys_name"] == "six"


def test_fast_path_peer_never_prints_the_community() -> None:
    peer = snmp_udp.Peer(socket.AF_INET, "127.0.0.1", 161, ber.VERSION_2C, b"s3cret")
    assert "s3cret" not in repr(peer) and "s3cret" not in str(peer)


# ---------------------------------------------------------------- values matched by OID
# Issue 10, point 8, as found on a UPS: values were matched to the request by position. The UPS
# check as the shipped class defines it, probed and evaluated as the daemon does.
UPS_HEALTHY = {  # UPS-MIB: battery normal, on mains, full
    "1.3.6.1.2.1.33.1.2.1.0": 2, "1.3.6.1.2.1.33.1.2.2.0": 0, "1.3.6.1.2.1.33.1.2.3.0": 45,
    "1.3.6.1.2.1.33.1.2.4.0": 100, "1.3.6.1.2.1.33.1.4.1.0": 3,
}


def ups_check(port: int) -> tuple[Any, Any]:
    from monitor.checks import probe_call
    from monitor.inventory import Inventory

    inv = Inventory.model_validate({
        "site": {"name": "测试大厅"},
        "credentials": {"ro": {"version": "2c", "community": "${UPS_COMMUNITY}"}},
        "devices": [{"id": "ups-1", "name": "机房UPS", "class": "ups", "address": "127.0.0.1",
                     "credential": "ro", "snmp_port": port}],
    }, context={"env": {"UPS_COMMUNITY": "s3cret-community"}})
    device = inv.device("ups-1")
    check = next(c for c in inv.checks_for(device) if c.name == "ups")
    return check, probe_call(inv, device, check)


async def ups_reply(binds: Callable[[ber.Message], tuple[ber.VarBind, ...]]) -> Any:
    from monitor.conditions import evaluate

    async with scripted_agent(lambda req, n: [respond(req, binds(req))]) as agent:
        check, call = ups_check(port_of(agent))
        return await call(), evaluate(check, await call())


def healthy(req: ber.Message) -> list[ber.VarBind]:
    return [(oid, ber.INTEGER, UPS_HEALTHY[oid]) for oid, _, _ in req.varbinds]


async def test_reordered_var_binds_are_matched_by_oid() -> None:
    raw, result = await ups_reply(lambda req: tuple(reversed(healthy(req))))
    assert result.ok, result  # no false "battery low" from output_source's 3
    assert raw.values["battery_status"] == 2 and raw.values["output_source"] == 3
    assert raw.values["runtime_remaining_seconds"] == 45 * 60
    assert raw.errors == {}


async def test_an_empty_var_bind_list_is_not_a_healthy_ups() -> None:
    raw, result = await ups_reply(lambda req: ())
    assert raw.values == {}
    assert raw.errors["battery_status"] == "no value in the reply for 1.3.6.1.2.1.33.1.2.1.0"
    assert not result.ok
    assert "cannot evaluate UPS电池电量低: battery_status missing" in (result.error or "")
    assert "cannot evaluate UPS市电中断，电池供电中: output_source missing" in (result.error or "")


async def test_one_value_of_five_does_not_pass() -> None:
    raw, result = await ups_reply(lambda req: tuple(healthy(req)[3:4]))  # the charge only
    assert raw.values == {"charge_percent": 100}
    assert set(raw.errors) == {"battery_status", "seconds_on_battery",
                               "runtime_remaining_seconds", "output_source"}
    assert not result.ok and "battery_status missing" in (result.error or "")


async def test_no_such_instance_and_foreign_oids_are_per_value() -> None:
    def odd(req: ber.Message) -> tuple[ber.VarBind, ...]:
        binds = healthy(req)
        binds[0] = (binds[0][0], ber.NO_SUCH_INSTANCE, None)  # battery_status
        return (("1.3.6.1.2.1.1.5.0", ber.OCTET_STRING, b"not asked"), *binds,
                (binds[4][0], ber.INTEGER, 5))  # a repeated OID: the first one counts
    raw, result = await ups_reply(odd)
    assert raw.errors == {"battery_status": "noSuchInstance 1.3.6.1.2.1.33.1.2.1.0"}
    assert raw.values["output_source"] == 3 and "sys_name" not in raw.texts
    assert not result.ok
    assert result.error == ("cannot evaluate UPS电池电量低: battery_status missing "
                            "(noSuchInstance 1.3.6.1.2.1.33.1.2.1.0)")


async def test_v3_values_matched_by_oid_and_missing_ones_are_per_value(snmpd: Agent) -> None:
    name, auth, auth_key, priv, priv_key = SNMPD_USERS[0]
    creds = SnmpAuth("3", user=name, auth_protocol=_PROTOCOLS[auth],  # type: ignore[arg-type]
                     auth_key=auth_key, priv_protocol=_PROTOCOLS[priv],  # type: ignore[arg-type]
                     priv_key=priv_key)
    result = await snmp.probe(snmpd.host, SnmpConfig(
        creds, port=snmpd.port, oids=(MISSING, SYS_LOCATION, SYS_UPTIME)))
    assert result.ok, result
    assert result.texts["sys_location"] == "hallmon test hall, floor 2"
    assert result.values["uptime_seconds"] >= 0
    assert result.errors == {"missing": "noSuchObject 1.3.6.1.2.1.1.99.0"}


def test_match_replies_pairs_by_oid_never_by_position() -> None:
    specs = [SYS_NAME, SYS_LOCATION, MISSING]
    matched, missing = snmp.match_replies(specs, [
        ("1.3.6.1.2.1.1.6.0", "where"), (".1.3.6.1.2.1.1.5.0", "who"), ("1.3.6.1.2.1.1.5.0", "x"),
        ("1.3.6.1.2.1.1.7.0", "unasked")])
    assert [(s.name, v) for s, _, v in matched] == [("sys_name", "who"),
                                                      ("sys_location", "where")]
    assert missing == [MISSING]


# ---------------------------------------------------------------- hostile datagrams (issue 11)
# A separate process floods the client's socket from a foreign loopback address with the worst
# datagram found: a well-formed Response whose OID has one 60 KB arc (decoding it took 280 ms).
_FLOOD = r"""
import socket, sys, time
port, count, rate = (int(a) for a in sys.argv[1:4])
seconds = float(sys.argv[4])
arc = b"\xff" * 60000 + b"\x01"
oid = b"\x06\x83" + len(arc).to_bytes(3, "big") + arc
def tlv(tag, body):
    n = len(body)
    return bytes([tag]) + (bytes([n]) if n < 128 else b"\x83" + n.to_bytes(3, "big")) + body
vb = tlv(0x30, tlv(0x30, oid + b"\x05\x00"))
pdu = tlv(0xA2, b"\x02\x01\x07\x02\x01\x00\x02\x01\x00" + vb)
data = tlv(0x30, b"\x02\x01\x01" + tlv(4, b"public") + pdu)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.9", 0))
sent, end = 0, time.monotonic() + seconds
while sent < count and time.monotonic() < end:
    try:
        s.sendto(data, ("127.0.0.1", port)); sent += 1
    except OSError:
        pass
    time.sleep(1 / rate)
print(sent)
"""


async def test_flood_from_a_foreign_address_delays_no_check(snmpd: Agent) -> None:
    """Found: every datagram was decoded before its source was checked, so anyone on the LAN
    could stall the loop. Now a hall of SNMP checks polled against snmpd on its schedule while
    a process floods the client's socket from 127.0.0.9: no check starts late."""
    import subprocess
    import sys

    from monitor.scheduler import ScheduledCheck, Scheduler
    from probes.result import ProbeResult

    config = v2c(snmpd, SYS_NAME, SYS_UPTIME, timeout=1.0, retries=1)
    first = await snmp.probe(snmpd.host, config)  # opens the client's loopback socket
    assert first.ok, first
    client = snmp._engines[asyncio.get_running_loop()].fast
    sockname = client._transports[(socket.AF_INET, True)].get_extra_info("sockname")
    assert sockname[0] == "127.0.0.1"  # loopback-only peers: no wildcard listener

    results: list[ProbeResult] = []

    async def call() -> ProbeResult:
        return await snmp.probe(snmpd.host, config)

    checks = [ScheduledCheck((f"dev-{i}", "snmp"), f"dev-{i}", "snmp", 1.0, 2.5, call)
              for i in range(20)]
    scheduler = Scheduler(checks, lambda c, r, s, f: results.append(r), late_grace=0.25)
    flood = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FLOOD, str(sockname[1]), "20000", "4000", "4.5",
        stdout=subprocess.PIPE)
    try:
        scheduler.start()
        await asyncio.sleep(4.5)
        await scheduler.stop()
        async with asyncio.timeout(30):
            sent = int((await flood.communicate())[0])
    finally:
        if flood.returncode is None:
            flood.kill()
            await flood.wait()
    assert sent > 1000
    assert scheduler.stats.overdue_total == 0
    assert client.stray >= 1000, (sent, client.stray)  # dropped before decoding
    assert len(results) >= 20 * 4 and all(r.ok for r in results), results[:3]


@pytest.mark.parametrize(("family", "host", "loopback"), [
    (socket.AF_INET, "127.0.0.1", True), (socket.AF_INET, "127.21.0.9", True),
    (socket.AF_INET6, "::1", True), (socket.AF_INET, "198.51.100.1", False),
    (socket.AF_INET6, "fe80::1", False), (socket.AF_INET, "not-an-address", False)])
def test_the_socket_binds_loopback_for_loopback_peers_only(family: int, host: str,
                                                            loopback: bool) -> None:
    """Found: the client listened on 0.0.0.0 even when it polled only loopback agents. Which
    socket a peer gets is decided without sending anything (no traffic off loopback here)."""
    from probes.snmp_udp import Peer, bind_of

    assert bind_of(Peer(family, host, 161, 1, b"c")) == (family, loopback)
