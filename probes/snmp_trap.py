"""SNMP v1/v2c notifications on the wire: Trap-PDU (v1), SNMPv2-Trap and InformRequest (v2c).

Built on the poller's strict BER codec (:mod:`probes.snmp_ber`): the same bounds (definite
lengths, at most 128 arcs per OID, SMI value ranges), the same single error (``BerError``,
whatever the bytes). A v1 trap is translated to its SNMPv2 trap OID as RFC 3584 section 3.1
says (generic 0..5 -> snmpTraps.(g+1); enterpriseSpecific -> enterprise.0.specific), so rules
name one OID whatever version the device speaks. An inform is answered with a Response PDU of the
same request-id and var-binds (RFC 3416 section 4.2.7); :func:`inform_response` builds it.

v3 messages are not decoded here: :func:`message_version` tells the receiver to hand them to
pysnmp's USM (probes/snmp_trap_v3.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.snmp_ber import (
    _INT32,
    INTEGER,
    IP_ADDRESS,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    RESPONSE,
    SEQUENCE,
    TIMETICKS,
    VERSION_1,
    VERSION_2C,
    BerError,
    Message,
    VarBind,
    _expect_int,
    _header,
    _oid,
    _varbinds,
    encode,
    guarded,
    message_header,
)

TRAP_V1 = 0xA4
INFORM_REQUEST = 0xA6
TRAP_V2 = 0xA7
VERSION_3 = 3

SYS_UPTIME_0 = "1.3.6.1.2.1.1.3.0"  # SNMPv2-MIB::sysUpTime.0, first var-bind of a v2 trap
SNMP_TRAP_OID_0 = "1.3.6.1.6.3.1.1.4.1.0"  # SNMPv2-MIB::snmpTrapOID.0, the second
SNMP_TRAPS = "1.3.6.1.6.3.1.1.5"  # SNMPv2-MIB::snmpTraps (coldStart.1 .. egpNeighborLoss.6)
SNMP_TRAP_ENTERPRISE_0 = "1.3.6.1.6.3.1.1.4.3.0"  # snmpTrapEnterprise.0 (RFC 3584)

# A notification with more var-binds than this is refused whole: real ones carry a handful, and
# the receiver's work per datagram must stay bounded (a 64 KiB datagram holds ~6000 var-binds).
MAX_VARBINDS = 64


@dataclass(frozen=True, slots=True)
class Notification:
    """One decoded v1/v2c notification. ``varbinds`` exclude sysUpTime.0 and snmpTrapOID.0
    (those are ``uptime`` and ``trap_oid``); ``agent_addr`` is the v1 agent-addr (dotted),
    else None; ``request_id`` matters for informs only."""

    version: int
    community: bytes
    pdu_type: int
    trap_oid: str
    uptime: int | None
    agent_addr: str | None
    request_id: int
    varbinds: tuple[VarBind, ...]

    @property
    def is_inform(self) -> bool:
        return self.pdu_type == INFORM_REQUEST


def message_version(data: bytes) -> int:
    """The msgVersion of any SNMP message (0 v1, 1 v2c, 3 v3); ``BerError`` if unreadable."""
    return guarded(_version, data)


def _version(data: bytes) -> int:
    end = len(data)
    tag, pos, stop = _header(data, 0, end)
    if tag != SEQUENCE or stop != end:
        raise BerError("not one SEQUENCE")
    version, _ = _expect_int(data, pos, end, 0, VERSION_3)
    return version


def v3_engine_and_user(data: bytes) -> tuple[bytes, bytes]:
    """msgAuthoritativeEngineID and msgUserName of a v3 message (RFC 3412/3414 headers, read
    without decrypting); ``BerError`` if unreadable. A v3 trap's engine is its sender's."""
    return guarded(_v3_header, data)


def _v3_header(data: bytes) -> tuple[bytes, bytes]:
    end = len(data)
    tag, pos, stop = _header(data, 0, end)
    if tag != SEQUENCE or stop != end:
        raise BerError("not one SEQUENCE")
    _, pos = _expect_int(data, pos, end, VERSION_3, VERSION_3)
    tag, _, pos = _header(data, pos, end)  # msgGlobalData: skipped whole
    if tag != SEQUENCE:
        raise BerError("msgGlobalData is not a SEQUENCE")
    tag, start, stop = _header(data, pos, end)
    if tag != OCTET_STRING:
        raise BerError("msgSecurityParameters is not an OCTET STRING")
    tag, pos, sstop = _header(data, start, stop)
    if tag != SEQUENCE:
        raise BerError("USM parameters are not a SEQUENCE")
    tag, estart, pos = _header(data, pos, sstop)
    if tag != OCTET_STRING or pos - estart > 32:
        raise BerError("bad msgAuthoritativeEngineID")
    engine = data[estart:pos]
    _, pos = _expect_int(data, pos, sstop, 0, _INT32[1])  # boots
    _, pos = _expect_int(data, pos, sstop, 0, _INT32[1])  # time
    tag, ustart, pos = _header(data, pos, sstop)
    if tag != OCTET_STRING or pos - ustart > 32:
        raise BerError("bad msgUserName")
    return engine, data[ustart:pos]


def decode_notification(data: bytes) -> Notification:
    """Parse one v1/v2c trap or inform; raise ``BerError`` (and only that) otherwise."""
    return guarded(_decode, data)


def _decode(data: bytes) -> Notification:
    end = len(data)
    version, community, pdu_type, pos, stop = message_header(data)
    if stop != end:
        raise BerError("trailing bytes after the PDU")
    if version == VERSION_1 and pdu_type == TRAP_V1:
        return _v1_trap(data, pos, end, community)
    if version == VERSION_2C and pdu_type in (TRAP_V2, INFORM_REQUEST):
        return _v2_notification(data, pos, end, community, pdu_type)
    raise BerError(f"not a notification: PDU tag {pdu_type:#x} in version {version}")


def _varbind_list(data: bytes, pos: int, end: int) -> tuple[VarBind, ...]:
    tag, pos, stop = _header(data, pos, end)
    if tag != SEQUENCE or stop != end:
        raise BerError("var-bind list is not a SEQUENCE")
    # Count before decoding: a flood of tiny var-binds must not cost a full decode.
    count, p = 0, pos
    while p < stop:
        _, _, p = _header(data, p, stop)
        count += 1
        if count > MAX_VARBINDS:
            raise BerError(f"more than {MAX_VARBINDS} var-binds")
    return _varbinds(data, pos, stop)


def _v1_trap(data: bytes, pos: int, end: int, community: bytes) -> Notification:
    tag, start, pos = _header(data, pos, end)
    if tag != OBJECT_IDENTIFIER:
        raise BerError("enterprise is not an OID")
    enterprise = _oid(data, start, pos)
    tag, start, pos = _header(data, pos, end)
    if tag != IP_ADDRESS or pos - start != 4:
        raise BerError("agent-addr is not an IpAddress")
    agent = ".".join(str(b) for b in data[start:pos])
    generic, pos = _expect_int(data, pos, end, 0, 6)
    specific, pos = _expect_int(data, pos, end, 0, _INT32[1])
    tag, start, pos = _header(data, pos, end)
    if tag != TIMETICKS:
        raise BerError("time-stamp is not TimeTicks")
    uptime = int.from_bytes(data[start:pos], "big") if pos > start else 0
    if pos - start > 5 or uptime > 2**32 - 1:
        raise BerError("time-stamp out of range")
    varbinds = _varbind_list(data, pos, end)
    trap_oid = f"{SNMP_TRAPS}.{generic + 1}" if generic < 6 else f"{enterprise}.0.{specific}"
    return Notification(VERSION_1, community, TRAP_V1, trap_oid, uptime, agent, 0, varbinds)


def _v2_notification(
    data: bytes, pos: int, end: int, community: bytes, pdu_type: int
) -> Notification:
    request_id, pos = _expect_int(data, pos, end, *_INT32)
    _, pos = _expect_int(data, pos, end, 0, _INT32[1])  # error-status: 0 on the wire
    _, pos = _expect_int(data, pos, end, 0, _INT32[1])  # error-index
    varbinds = _varbind_list(data, pos, end)
    # RFC 3416 4.2.6: sysUpTime.0 then snmpTrapOID.0 come first.
    if (len(varbinds) < 2 or varbinds[0][0] != SYS_UPTIME_0 or varbinds[0][1] != TIMETICKS
            or varbinds[1][0] != SNMP_TRAP_OID_0 or varbinds[1][1] != OBJECT_IDENTIFIER):
        raise BerError("a v2 notification starts with sysUpTime.0 and snmpTrapOID.0")
    uptime, trap_oid = varbinds[0][2], varbinds[1][2]
    assert isinstance(uptime, int) and isinstance(trap_oid, str)
    return Notification(VERSION_2C, community, pdu_type, trap_oid, uptime, None, request_id,
                        varbinds[2:])


def inform_response(data: bytes, note: Notification) -> bytes:
    """The Response PDU acknowledging an inform: same version, community, request-id and
    var-binds (sysUpTime.0 and snmpTrapOID.0 included), error-status 0."""
    if not note.is_inform:
        raise ValueError("only informs are acknowledged")
    head = ((SYS_UPTIME_0, TIMETICKS, note.uptime), (SNMP_TRAP_OID_0, OBJECT_IDENTIFIER,
                                                     note.trap_oid))
    return encode(Message(note.version, note.community, RESPONSE, note.request_id, 0, 0,
                          (*head, *note.varbinds)))


def varbind_number(varbinds: tuple[VarBind, ...], oid: str) -> float | None:
    """The numeric value of the first var-bind at ``oid`` or below it (a table column with the
    row index appended: ``ifIndex`` matches ``ifIndex.3``)."""
    prefix = oid + "."
    for name, tag, value in varbinds:
        if (name == oid or name.startswith(prefix)) and isinstance(value, int) and tag != (
            OCTET_STRING
        ):
            return float(value)
    return None


def varbind_instance(varbinds: tuple[VarBind, ...], oid: str) -> str | None:
    """The value at ``oid`` (or its first row below it) as text, to tell instances apart
    (``ifIndex`` 3 vs 4); None when absent."""
    prefix = oid + "."
    for name, tag, value in varbinds:
        if name == oid or name.startswith(prefix):
            if isinstance(value, bytes):
                return value.hex() if tag == IP_ADDRESS else value.decode("utf-8", "replace")
            return str(value)
    return None


__all__ = [
    "INFORM_REQUEST",
    "INTEGER",
    "MAX_VARBINDS",
    "TRAP_V1",
    "TRAP_V2",
    "VERSION_3",
    "Notification",
    "decode_notification",
    "inform_response",
    "message_version",
    "v3_engine_and_user",
    "varbind_instance",
    "varbind_number",
]
