"""probes/snmp_trap.py: notifications as net-snmp's snmptrap/snmpinform send them, the inform
acknowledgement snmpinform accepts, the v3 header read, and a fuzz that nothing but BerError
ever comes out of the decoder."""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.snmp_ber import BerError
from probes.snmp_trap import (
    INFORM_REQUEST,
    TRAP_V1,
    TRAP_V2,
    decode_notification,
    inform_response,
    message_version,
    v3_engine_and_user,
)
from tests.conftest import require_tool

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX_3 = "1.3.6.1.2.1.2.2.1.1.3"


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    yield s
    s.close()


def _send(sink: socket.socket, *args: str, tool: str = "snmptrap") -> tuple[bytes, tuple[str, int]]:
    port = sink.getsockname()[1]
    exe = require_tool(tool)
    subprocess.run([exe, "--clientaddr=127.0.0.42", *args[:-1], f"127.0.0.1:{port}",
                    *shlex.split(args[-1])], check=True, timeout=10)
    data, addr = sink.recvfrom(65535)
    return data, addr


def test_v1_trap_is_translated_to_its_v2_oid(sink: socket.socket) -> None:
    # generic-trap 2 (linkDown) from agent 127.0.0.9: RFC 3584 says snmpTraps.3
    data, addr = _send(sink, "-v", "1", "-c", "hall",
                       f"1.3.6.1.4.1.8072.2.3 127.0.0.9 2 0 '' {IF_INDEX_3} i 3")
    note = decode_notification(data)
    assert addr[0] == "127.0.0.42"
    assert message_version(data) == 0
    assert (note.pdu_type, note.trap_oid, note.agent_addr, note.community) == (
        TRAP_V1, LINK_DOWN, "127.0.0.9", b"hall")
    assert note.varbinds == ((IF_INDEX_3, 2, 3),)


def test_v1_enterprise_specific(sink: socket.socket) -> None:
    data, _ = _send(sink, "-v", "1", "-c", "hall", "1.3.6.1.4.1.99 127.0.0.9 6 17 ''")
    assert decode_notification(data).trap_oid == "1.3.6.1.4.1.99.0.17"


def test_v2c_trap(sink: socket.socket) -> None:
    data, _ = _send(sink, "-v", "2c", "-c", "hall",
                    "'' 1.3.6.1.2.1.33.2.0.1 1.3.6.1.2.1.33.1.2.2.0 i 65")
    note = decode_notification(data)
    assert (note.pdu_type, note.trap_oid, note.agent_addr) == (TRAP_V2, "1.3.6.1.2.1.33.2.0.1",
                                                                None)
    assert note.varbinds == (("1.3.6.1.2.1.33.1.2.2.0", 2, 65),)
    assert isinstance(note.uptime, int)


def test_inform_acknowledged_as_snmpinform_expects(sink: socket.socket) -> None:
    port = sink.getsockname()[1]
    proc = subprocess.Popen([require_tool("snmpinform"), "-v", "2c", "-c", "hall", "-r", "0",
                             "-t", "5", f"127.0.0.1:{port}", "", LINK_DOWN, IF_INDEX_3, "i", "3"],
                            stderr=subprocess.PIPE)
    data, addr = sink.recvfrom(65535)
    note = decode_notification(data)
    assert note.pdu_type == INFORM_REQUEST and note.is_inform
    sink.sendto(inform_response(data, note), addr)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err  # snmpinform exits 1 on "Timeout" without our Response


def test_v3_header_names_engine_and_user(sink: socket.socket) -> None:
    data, _ = _send(sink, "-v", "3", "-u", "monitor", "-l", "authPriv", "-a", "SHA-256", "-A",
                    "auth-pass-123", "-x", "AES", "-X", "priv-pass-123", "-e", "0x8000000001020304",
                    f"'' {LINK_DOWN}")
    assert message_version(data) == 3
    assert v3_engine_and_user(data) == (bytes.fromhex("8000000001020304"), b"monitor")
    with pytest.raises(BerError):
        decode_notification(data)  # v3 is pysnmp's (probes/snmp_trap_v3.py)


def _v2_trap(extra: list[tuple[str, int, object]], community: bytes = b"hall") -> bytes:
    """A v2c trap built with the poller's own BER encoder (sysUpTime.0, snmpTrapOID.0, extra)."""
    from probes.snmp_ber import encode_varbinds

    vbs: list = [("1.3.6.1.2.1.1.3.0", 0x43, 1), ("1.3.6.1.6.3.1.1.4.1.0", 0x06, LINK_DOWN),
                 *extra]
    pdu = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + encode_varbinds(vbs)
    msg = b"\x02\x01\x01\x04" + bytes([len(community)]) + community + bytes([TRAP_V2]) \
        + _len(len(pdu)) + pdu
    return b"\x30" + _len(len(msg)) + msg


def _len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")


def test_built_trap_decodes() -> None:
    note = decode_notification(_v2_trap([(IF_INDEX_3, 0x02, 3)]))
    assert (note.trap_oid, note.varbinds) == (LINK_DOWN, ((IF_INDEX_3, 2, 3),))


def test_too_many_varbinds_refused() -> None:
    data = _v2_trap([(f"1.3.6.1.4.1.1.{i}", 0x02, i) for i in range(100)])
    with pytest.raises(BerError, match="var-binds"):
        decode_notification(data)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoders_raise_only_ber_error(data: bytes) -> None:
    for fn in (decode_notification, message_version, v3_engine_and_user):
        try:
            fn(data)
        except BerError:
            pass


# Mutations of a well-formed notification reach much deeper than random bytes.
_SEED = _v2_trap([(IF_INDEX_3, 0x02, 3), ("1.3.6.1.2.1.2.2.1.2.3", 0x04, b"GigabitEthernet0/3"),
                  ("1.3.6.1.2.1.4.20.1.1.3", 0x40, b"\x7f\x00\x00\x01")])


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 200))
def test_fuzz_mutated_notification(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SEED)
    for pos, byte in flips:
        if pos < len(data):
            data[pos] = byte
    for fn in (decode_notification, message_version):
        try:
            fn(bytes(data[: len(data) - cut]))
        except BerError:
            pass


_V3_SEED = bytes.fromhex(  # a v3 authPriv linkDown as snmptrap sent it (engine 0x8000000001020304)
    "3081bd020103301102047918e1d5020300ffe30401030201030441303f0408800000000102030402"
    "0101020302f50204076d6f6e69746f720418fd415a6fc8aae28da6c93de4291c8c3bc25c8a0e9326"
    "20850408e83b93c6280883ba0462d9ac0c7f227e791cd64eea9bd5afe82e2e82e46dbb712a201df3"
    "c5ace6163ed99c9557e305da4fa334f222531811441c69a03dbaea68415cbd9f508e09d765fc6538"
    "94b694f620ce511c69c8c4949372e83febad4d463171f843612d0ca8ce04ae38"
)


def _v3_receiver() -> object:
    from probes.snmp import SnmpAuth
    from probes.snmp_trap_v3 import V3Receiver

    user = SnmpAuth(version="3", user="monitor", auth_protocol="sha256",
                    auth_key="auth-pass-123", priv_protocol="aes", priv_key="priv-pass-123")
    return V3Receiver([user], lambda data, addr: None, lambda note: None, max_engines=50)


_V3 = _v3_receiver()


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.lists(st.tuples(st.integers(0, 150), st.integers(0, 255)), max_size=6).map(
                     lambda flips: _mutate(_V3_SEED, flips))))
def test_fuzz_v3_path_never_raises(data: bytes) -> None:
    """pysnmp's side of the receiver: malformed v3 input is dropped inside feed(), and engine-ID
    learning stays bounded (max_engines)."""
    _V3.feed(data, ("127.0.0.1", 40000), learn=True)  # type: ignore[attr-defined]
    assert len(_V3._learned) <= 50  # type: ignore[attr-defined]


def test_the_v3_seed_is_a_real_message() -> None:
    assert v3_engine_and_user(_V3_SEED) == (bytes.fromhex("8000000001020304"), b"monitor")


def _mutate(seed: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(seed)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    return bytes(data)
