"""A small, strict BER codec for SNMP v1/v2c messages (RFC 1157, RFC 3416), for the fast path.

pysnmp builds and parses every message through pyasn1 objects: ~2 ms CPU per 4-OID GET, three
times the budget (docs/field-notes.md, SNMP). This codec handles only what a v1/v2c poller sends and
receives: Get/GetNext/GetBulk requests and Response PDUs carrying INTEGER, OCTET STRING, NULL,
OBJECT IDENTIFIER, IpAddress, Counter32, Gauge32, TimeTicks, Opaque, Counter64 and the v2
exceptions noSuchObject, noSuchInstance and endOfMibView.

Strict: definite lengths only (at most 3 length bytes: a datagram is under 64 KB), no trailing
bytes, values within their SMI ranges, OIDs of at most 128 arcs each below 2**32 (an arc of more
than 5 bytes is refused at its 6th byte: a 65 KB arc once took 280 ms of big-integer shifts).
Every step is bounded by the bytes it reads, so decoding is linear in the input.
``peek_request_id`` reads the request-id alone (a few header bytes), so the transport can drop
datagrams nobody asked for before decoding them. Decoding raises nothing but ``BerError``,
whatever the bytes (tests fuzz it). Values decode to plain Python: ``int`` for the numeric
types, ``bytes`` for OCTET STRING, IpAddress and Opaque, a dotted ``str`` for OIDs, ``None`` for
NULL and the exceptions; the tag says which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

# ---------------------------------------------------------------- tags
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

GET_REQUEST = 0xA0
GET_NEXT_REQUEST = 0xA1
RESPONSE = 0xA2
GET_BULK_REQUEST = 0xA5
PDU_TYPES = frozenset((GET_REQUEST, GET_NEXT_REQUEST, RESPONSE, GET_BULK_REQUEST))

VERSION_1 = 0
VERSION_2C = 1

NUMERIC_TAGS = frozenset((INTEGER, COUNTER32, GAUGE32, TIMETICKS, COUNTER64))
EXCEPTION_NAMES = {
    NO_SUCH_OBJECT: "noSuchObject",
    NO_SUCH_INSTANCE: "noSuchInstance",
    END_OF_MIB_VIEW: "endOfMibView",
}
# RFC 3416 error-status names, as pysnmp prints them ("error-status tooBig").
ERROR_STATUS_NAMES = (
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
    "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
    "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
    "authorizationError", "notWritable", "inconsistentName",
)

_INT32 = (-(2**31), 2**31 - 1)
_RANGES = {  # SMI ranges (RFC 2578): out of range is a malformed value, as in pysnmp
    INTEGER: _INT32,
    COUNTER32: (0, 2**32 - 1),
    GAUGE32: (0, 2**32 - 1),
    TIMETICKS: (0, 2**32 - 1),
    COUNTER64: (0, 2**64 - 1),
}
_MAX_OID_ARCS = 128
_MAX_ARC = 2**32 - 1
_MAX_ARC_BYTES = 5  # 2**32 - 1 takes 5 bytes of 7 bits
_MAX_OID_BYTES = _MAX_OID_ARCS * _MAX_ARC_BYTES
_MAX_LENGTH_BYTES = 3

Value = int | bytes | str | None
VarBind = tuple[str, int, Value]  # (dotted OID, tag, value)


class BerError(ValueError):
    """The bytes are not a well-formed SNMP v1/v2c message (the only error decoding raises)."""


def error_status_name(status: int) -> str:
    if 0 <= status < len(ERROR_STATUS_NAMES):
        return ERROR_STATUS_NAMES[status]
    return str(status)


@dataclass(frozen=True, slots=True)
class Message:
    """One v1/v2c message. For GetBulk, ``error_status`` and ``error_index`` carry
    non-repeaters and max-repetitions (same place on the wire, RFC 3416 section 3)."""

    version: int
    community: bytes
    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: tuple[VarBind, ...]


# ---------------------------------------------------------------- encoding
def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _int_content(value: int) -> bytes:
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8  # minimal two's complement
    return value.to_bytes(size, "big", signed=True)


def encode_oid(oid: str) -> bytes:
    """The OBJECT IDENTIFIER TLV of a dotted OID ("1.3.6.1.2.1.1.5.0")."""
    try:
        arcs = [int(a) for a in oid.strip(".").split(".")]
    except ValueError:
        raise ValueError(f"not a numeric OID: {oid!r}") from None
    if (len(arcs) < 2 or len(arcs) > _MAX_OID_ARCS or arcs[0] > 2 or min(arcs) < 0
            or max(arcs) > _MAX_ARC or (arcs[0] < 2 and arcs[1] >= 40)):
        raise ValueError(f"OID out of range: {oid!r}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(OBJECT_IDENTIFIER, bytes(out))


def encode_value(tag: int, value: Value) -> bytes:
    """The TLV of one var-bind value (raises ValueError/TypeError on a value of the wrong kind)."""
    if tag in _RANGES:
        low, high = _RANGES[tag]
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"value {value!r} out of range for tag {tag:#x}")
        return _tlv(tag, _int_content(value))
    if tag in (OCTET_STRING, OPAQUE, IP_ADDRESS):
        if not isinstance(value, bytes) or (tag == IP_ADDRESS and len(value) != 4):
            raise ValueError(f"tag {tag:#x} needs bytes (4 for IpAddress), got {value!r}")
        return _tlv(tag, value)
    if tag == OBJECT_IDENTIFIER:
        if not isinstance(value, str):
            raise ValueError(f"OID value must be a dotted string, got {value!r}")
        return encode_oid(value)
    if tag in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return bytes((tag, 0))
    raise ValueError(f"unsupported tag {tag:#x}")


def encode_varbinds(varbinds: Sequence[VarBind]) -> bytes:
    return _tlv(SEQUENCE, b"".join(
        _tlv(SEQUENCE, encode_oid(oid) + encode_value(tag, value)) for oid, tag, value in varbinds))


def encode(message: Message) -> bytes:
    """The whole message (any of the four PDU types, any supported values)."""
    if message.version not in (VERSION_1, VERSION_2C) or message.pdu_type not in PDU_TYPES:
        raise ValueError("only v1/v2c Get/GetNext/GetBulk/Response messages")
    pdu = (_tlv(INTEGER, _int_content(message.request_id))
           + _tlv(INTEGER, _int_content(message.error_status))
           + _tlv(INTEGER, _int_content(message.error_index))
           + encode_varbinds(message.varbinds))
    return _tlv(SEQUENCE, _tlv(INTEGER, _int_content(message.version))
                + _tlv(OCTET_STRING, message.community) + _tlv(message.pdu_type, pdu))


class Request:
    """A request encoded once but for its request-id: ``encode(rid)`` costs a few concatenations
    (the poller sends the same OIDs to a device every cycle)."""

    __slots__ = ("_head", "_pdu_type", "_tail")

    def __init__(self, version: int, community: bytes, pdu_type: int, oids: Sequence[str],
                 non_repeaters: int = 0, max_repetitions: int = 0) -> None:
        if pdu_type not in (GET_REQUEST, GET_NEXT_REQUEST, GET_BULK_REQUEST):
            raise ValueError("requests are Get, GetNext or GetBulk")
        if pdu_type == GET_BULK_REQUEST and version == VERSION_1:
            raise ValueError("SNMP v1 has no GetBulk")
        self._head = _tlv(INTEGER, _int_content(version)) + _tlv(OCTET_STRING, community)
        self._pdu_type = pdu_type
        self._tail = (_tlv(INTEGER, _int_content(non_repeaters))
                      + _tlv(INTEGER, _int_content(max_repetitions))
                      + encode_varbinds([(oid, NULL, None) for oid in oids]))

    def encode(self, request_id: int) -> bytes:
        pdu = _tlv(INTEGER, _int_content(request_id)) + self._tail
        return _tlv(SEQUENCE, self._head + _tlv(self._pdu_type, pdu))


# ---------------------------------------------------------------- decoding
def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``; never past ``end``."""
    if pos + 2 > end:
        raise BerError("truncated header")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > _MAX_LENGTH_BYTES:  # indefinite form is not allowed in SNMP
            raise BerError("unsupported length form")
        if pos + count > end:
            raise BerError("truncated length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    stop = pos + length
    if stop > end:
        raise BerError("length beyond the data")
    return tag, pos, stop


def _integer(data: bytes, start: int, stop: int) -> int:
    if start == stop:
        raise BerError("empty INTEGER")
    if stop - start > 9:
        raise BerError("INTEGER too long")
    return int.from_bytes(data[start:stop], "big", signed=True)


def _expect_int(data: bytes, pos: int, end: int, low: int, high: int) -> tuple[int, int]:
    tag, start, stop = _header(data, pos, end)
    if tag != INTEGER:
        raise BerError(f"expected INTEGER, got tag {tag:#x}")
    value = _integer(data, start, stop)
    if not low <= value <= high:
        raise BerError("INTEGER out of range")
    return value, stop


_oid_cache: dict[bytes, str] = {}
_OID_CACHE_MAX = 50_000  # response OIDs repeat every cycle; beyond this start over


def _oid(data: bytes, start: int, stop: int) -> str:
    raw = data[start:stop]
    cached = _oid_cache.get(raw)
    if cached is not None:
        return cached
    if not raw or raw[-1] & 0x80:
        raise BerError("empty or unterminated OID")
    if len(raw) > _MAX_OID_BYTES:
        raise BerError("OID too long")
    arcs: list[int] = []
    arc = 0
    size = 0
    for byte in raw:
        if size == 0 and byte == 0x80:
            raise BerError("non-minimal OID arc")
        size += 1
        if size > _MAX_ARC_BYTES:  # before the shift: arcs stay small integers
            raise BerError("OID arc too long")
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
            size = 0
    first = arcs[0]
    if first < 80:
        head = [first // 40, first % 40]
    else:
        head = [2, first - 80]
    arcs[0:1] = head
    if len(arcs) > _MAX_OID_ARCS or max(arcs) > _MAX_ARC:
        raise BerError("OID out of range")
    text = ".".join(map(str, arcs))
    if len(_oid_cache) >= _OID_CACHE_MAX:
        _oid_cache.clear()
    _oid_cache[raw] = text
    return text


def _value(data: bytes, tag: int, start: int, stop: int) -> Value:
    if tag == OCTET_STRING or tag == OPAQUE:
        return data[start:stop]
    bounds = _RANGES.get(tag)
    if bounds is not None:
        value = _integer(data, start, stop)
        if not bounds[0] <= value <= bounds[1]:
            raise BerError(f"value out of range for tag {tag:#x}")
        return value
    if tag == OBJECT_IDENTIFIER:
        return _oid(data, start, stop)
    if tag == IP_ADDRESS:
        if stop - start != 4:
            raise BerError("IpAddress must be 4 bytes")
        return data[start:stop]
    if tag == NULL or tag in EXCEPTION_NAMES:
        if stop != start:
            raise BerError("NULL with content")
        return None
    raise BerError(f"unsupported value tag {tag:#x}")


def _varbinds(data: bytes, pos: int, end: int) -> tuple[VarBind, ...]:
    out: list[VarBind] = []
    while pos < end:
        tag, start, stop = _header(data, pos, end)
        if tag != SEQUENCE:
            raise BerError("var-bind is not a SEQUENCE")
        otag, ostart, ostop = _header(data, start, stop)
        if otag != OBJECT_IDENTIFIER:
            raise BerError("var-bind name is not an OID")
        vtag, vstart, vstop = _header(data, ostop, stop)
        if vstop != stop:
            raise BerError("trailing bytes in var-bind")
        out.append((_oid(data, ostart, ostop), vtag, _value(data, vtag, vstart, vstop)))
        pos = stop
    return tuple(out)


def peek_request_id(data: bytes) -> int | None:
    """The request-id of a v1/v2c message, reading only the headers before it (constant work
    whatever the size), or None when those first bytes are not an SNMP message."""
    try:
        end = len(data)
        tag, pos, stop = _header(data, 0, end)
        if tag != SEQUENCE or stop != end:
            return None
        _, pos = _expect_int(data, pos, end, VERSION_1, VERSION_2C)
        tag, _, pos = _header(data, pos, end)
        if tag != OCTET_STRING:
            return None
        tag, pos, _ = _header(data, pos, end)
        if tag not in PDU_TYPES:
            return None
        return _expect_int(data, pos, end, *_INT32)[0]
    except BerError:
        return None


_T = TypeVar("_T")


def guarded(parse: Callable[[bytes], _T], data: bytes) -> _T:
    """``parse(data)`` raising ``BerError`` and only that: a codec bug must still surface as
    "malformed", never crash the caller (a poller or the trap receiver)."""
    try:
        return parse(bytes(data))
    except BerError:
        raise
    except Exception as exc:
        raise BerError(f"undecodable: {exc.__class__.__name__}") from None


def message_header(data: bytes) -> tuple[int, bytes, int, int, int]:
    """A v1/v2c message's (version, community, PDU tag, PDU body start, PDU end)."""
    end = len(data)
    tag, pos, stop = _header(data, 0, end)
    if tag != SEQUENCE or stop != end:
        raise BerError("not one SEQUENCE")
    version, pos = _expect_int(data, pos, end, VERSION_1, VERSION_2C)
    tag, cstart, pos = _header(data, pos, end)
    if tag != OCTET_STRING:
        raise BerError("community is not an OCTET STRING")
    community = data[cstart:pos]
    pdu_type, pos, stop = _header(data, pos, end)
    return version, community, pdu_type, pos, stop


def decode(data: bytes) -> Message:
    """Parse one v1/v2c message; raise ``BerError`` (and only that) if it is malformed."""
    return guarded(_decode, data)


def _decode(data: bytes) -> Message:
    end = len(data)
    version, community, pdu_type, pos, stop = message_header(data)
    if pdu_type not in PDU_TYPES or stop != end:
        raise BerError(f"unsupported PDU tag {pdu_type:#x}")
    request_id, pos = _expect_int(data, pos, end, *_INT32)
    status, pos = _expect_int(data, pos, end, 0, _INT32[1])
    index, pos = _expect_int(data, pos, end, 0, _INT32[1])
    tag, pos, stop = _header(data, pos, end)
    if tag != SEQUENCE or stop != end:
        raise BerError("var-bind list is not a SEQUENCE")
    varbinds = _varbinds(data, pos, stop)
    return Message(version, community, pdu_type, request_id, status, index, varbinds)


# ---------------------------------------------------------------- values as text
def text(tag: int, value: Value) -> str:
    """A value as the pysnmp path prints it: strings as UTF-8 (else Latin-1) without trailing
    NULs, IpAddress dotted, Opaque as pyasn1 shows it (text if printable, else 0x-hex)."""
    if tag == OCTET_STRING and isinstance(value, bytes):
        try:
            return value.decode("utf-8").rstrip("\x00")
        except UnicodeDecodeError:
            return value.decode("latin-1").rstrip("\x00")
    if tag == IP_ADDRESS and isinstance(value, bytes):
        return ".".join(map(str, value))
    if tag == OPAQUE and isinstance(value, bytes):
        if all(32 <= b <= 126 for b in value):
            return value.decode("ascii")
        return "0x" + value.hex()
    return "" if value is None else str(value)
