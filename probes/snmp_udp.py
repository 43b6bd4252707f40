"""The v1/v2c fast path's transport: one UDP socket per address family, shared by all requests.

Replies are matched to requests by request-id *and* source address:port, checked before any
decoding (``snmp_ber.peek_request_id`` reads a few header bytes), so datagrams from anyone else
cost a dict lookup and are counted in ``stray``, never decoded. The socket binds the family's
loopback address for loopback peers and the wildcard only for the others (a daemon that polls
only loopback agents listens on no outside interface).

Each request has its own timeout and retries (the same request-id is re-sent, so a late first
reply still counts); ``probes.snmp`` sizes them to fit the scheduler's deadline. A semaphore
caps requests in flight (default 100) and SO_RCVBUF is raised: beyond ~100 in flight a default
buffer drops replies silently (docs/field-notes.md, SNMP). A cancelled request gives back its
slot and its request-id at once (``finally``), so a scheduler deadline never leaks capacity. A
garbage datagram from a peer with a request pending turns that request's timeout into "malformed
reply" (from anyone else it is dropped as stray).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from probes.snmp_ber import (
    END_OF_MIB_VIEW,
    EXCEPTION_NAMES,
    GET_BULK_REQUEST,
    GET_NEXT_REQUEST,
    GET_REQUEST,
    NULL,
    RESPONSE,
    VERSION_1,
    BerError,
    Message,
    Request,
    VarBind,
    decode,
    peek_request_id,
)

RCVBUF_BYTES = 8 * 1024 * 1024
_SO_RCVBUFFORCE = 33  # Linux: beyond net.core.rmem_max, allowed for root (CAP_NET_ADMIN)
_REQUEST_ID_MAX = 2**31 - 1
_CACHE_MAX = 100_000  # encoded GET requests kept (devices x OID sets); beyond it start over
_NOT_INCREASING = "OID not increasing"


@dataclass(frozen=True, slots=True)
class Peer:
    """Where and how to ask: the address is a literal of ``family`` (resolve names first)."""

    family: int
    host: str
    port: int
    version: int  # snmp_ber.VERSION_1 or VERSION_2C
    community: bytes = field(repr=False)  # a secret: never printed
    timeout: float = 1.0
    retries: int = 1


@dataclass(slots=True)
class WalkResult:
    """Rows of the subtree (exceptions left out), then why the walk stopped early, if it did:
    ``failure`` ("timeout", "malformed reply", ...) or a non-zero ``error_status``."""

    rows: list[VarBind]
    failure: str | None = None
    error_status: int = 0


Bind = tuple[int, bool]  # (address family, loopback only)


def bind_of(peer: Peer) -> Bind:
    """Which socket asks ``peer``: the loopback one for loopback peers, else the wildcard."""
    try:
        loopback = ipaddress.ip_address(peer.host).is_loopback
    except ValueError:
        loopback = False
    return peer.family, loopback


class _Pending:
    __slots__ = ("future", "host", "port", "version", "data", "bind", "tries", "timeout",
                 "timer", "started")

    def __init__(self, future: asyncio.Future[Message | None], peer: Peer, data: bytes,
                 started: float) -> None:
        self.future = future
        self.host = peer.host
        self.port = peer.port
        self.version = peer.version
        self.bind = bind_of(peer)
        self.data = data
        self.tries = peer.retries
        self.timeout = peer.timeout
        self.started = started
        self.timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: SnmpClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.client._received(data, addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for one peer (port unreachable...): its request simply times out.
        self.client.send_errors += 1


class SnmpClient:
    """Sends v1/v2c requests and matches the replies. One per event loop (``probes.snmp``)."""

    def __init__(self, limit: asyncio.Semaphore | None = None, max_in_flight: int = 100) -> None:
        self.limit = limit if limit is not None else asyncio.Semaphore(max_in_flight)
        self._loop = asyncio.get_running_loop()
        self._transports: dict[Bind, asyncio.DatagramTransport] = {}
        self._opening = asyncio.Lock()
        self._pending: dict[int, _Pending] = {}
        self._asked: Counter[tuple[str, int]] = Counter()  # (host, port) of pending requests
        self._next_id = random.randint(1, _REQUEST_ID_MAX)
        self._malformed: dict[tuple[str, int], float] = {}  # peer -> when garbage came last
        self._requests: dict[tuple[int, bytes, tuple[str, ...]], Request] = {}
        self.stray = 0  # datagrams matching no pending request (late, duplicate, spoofed)
        self.send_errors = 0

    # ------------------------------------------------------------ sockets
    async def _transport(self, bind: Bind) -> asyncio.DatagramTransport:
        transport = self._transports.get(bind)
        if transport is not None:
            return transport
        async with self._opening:  # two first requests must not open two sockets
            transport = self._transports.get(bind)
            if transport is None:
                transport = await self._open(*bind)
                self._transports[bind] = transport
        return transport

    async def _open(self, family: int, loopback: bool) -> asyncio.DatagramTransport:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF_BYTES)
            except OSError:  # not root: the kernel caps this at net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            if family == socket.AF_INET6:
                sock.bind(("::1" if loopback else "::", 0))
            else:
                sock.bind(("127.0.0.1" if loopback else "0.0.0.0", 0))
            sock.setblocking(False)
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Protocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        return transport

    def close(self) -> None:
        """Close the sockets; requests still waiting end as "timeout"."""
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result(None)
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        self._malformed.clear()
        self._requests.clear()

    # ------------------------------------------------------------ requests
    def _request_id(self) -> int:
        rid = self._next_id
        while rid in self._pending:  # ids of requests still waiting are never reused
            rid = rid % _REQUEST_ID_MAX + 1
        self._next_id = rid % _REQUEST_ID_MAX + 1
        return rid

    async def request(self, peer: Peer, request: Request) -> Message | str:
        """Send ``request`` and wait for its reply: the Response message, or the reason there
        is none ("timeout", "malformed reply", "socket error: ...")."""
        try:
            transport = await self._transport(bind_of(peer))
        except OSError as exc:  # e.g. no IPv6 on this host
            return f"socket error: {exc.strerror or exc}"
        async with self.limit:
            loop = self._loop
            rid = self._request_id()
            pending = _Pending(loop.create_future(), peer, request.encode(rid), loop.time())
            self._pending[rid] = pending
            asked = (peer.host, peer.port)
            self._asked[asked] += 1
            try:
                transport.sendto(pending.data, (peer.host, peer.port))
                pending.timer = loop.call_later(peer.timeout, self._expire, rid)
                reply = await pending.future
            finally:  # also on cancellation: the slot and the request-id come back now
                if pending.timer is not None:
                    pending.timer.cancel()
                del self._pending[rid]
                self._asked[asked] -= 1
                if not self._asked[asked]:
                    del self._asked[asked]
        if reply is None:
            seen = self._malformed.pop((peer.host, peer.port), None)
            return "malformed reply" if seen is not None and seen >= pending.started else "timeout"
        return reply

    def _expire(self, rid: int) -> None:
        pending = self._pending.get(rid)
        if pending is None or pending.future.done():
            return
        if pending.tries > 0:  # retry with the same request-id: a late reply still counts
            pending.tries -= 1
            transport = self._transports.get(pending.bind)
            if transport is not None:
                transport.sendto(pending.data, (pending.host, pending.port))
                pending.timer = self._loop.call_later(pending.timeout, self._expire, rid)
                return
        pending.future.set_result(None)

    def _received(self, data: bytes, host: str, port: int) -> None:
        """Cheap checks first: a polled address:port, then a pending request-id from it; only
        then decode. A flood from elsewhere costs a dict lookup per datagram."""
        if (host, port) not in self._asked:
            self.stray += 1
            return
        rid = peek_request_id(data)
        pending = self._pending.get(rid) if rid is not None else None
        if rid is not None and (pending is None or pending.port != port or pending.host != host
                                or pending.future.done()):
            self.stray += 1
            return
        try:
            message = decode(data)
        except BerError:
            if len(self._malformed) >= _CACHE_MAX:
                self._malformed.clear()
            self._malformed[(host, port)] = self._loop.time()
            return
        if (pending is None or pending.version != message.version
                or message.pdu_type != RESPONSE):
            self.stray += 1
            return
        pending.future.set_result(message)

    # ------------------------------------------------------------ operations
    async def get(self, peer: Peer, oids: Sequence[str]) -> Message | str:
        """One GET carrying all ``oids``; the encoded request is kept for the next cycle."""
        key = (peer.version, peer.community, tuple(oids))
        request = self._requests.get(key)
        if request is None:
            if len(self._requests) >= _CACHE_MAX:
                self._requests.clear()
            request = Request(peer.version, peer.community, GET_REQUEST, oids)
            self._requests[key] = request
        return await self.request(peer, request)

    async def walk(self, peer: Peer, root: str, max_repetitions: int = 25) -> WalkResult:
        """The subtree under ``root`` by GETBULK (v2c) or GETNEXT (v1), as pysnmp's walks with
        ``lexicographicMode=False``; a reply that does not move forward ends it as a failure
        (an agent looping on one OID would otherwise walk until the deadline)."""
        prefix = root + "."
        result = WalkResult([])
        last = root
        while True:
            if peer.version == VERSION_1:
                request = Request(peer.version, peer.community, GET_NEXT_REQUEST, (last,))
            else:
                request = Request(peer.version, peer.community, GET_BULK_REQUEST, (last,),
                                  0, max_repetitions)
            reply = await self.request(peer, request)
            if isinstance(reply, str):
                result.failure = reply
                return result
            if reply.error_status:
                if reply.error_status != 2:  # v1 noSuchName: the end of the MIB, not an error
                    result.error_status = reply.error_status
                return result
            if not reply.varbinds:
                return result
            for oid, tag, value in reply.varbinds:
                if tag == NULL or tag == END_OF_MIB_VIEW or not (
                        oid == root or oid.startswith(prefix)):
                    return result
                if oid != root and tag not in EXCEPTION_NAMES:
                    result.rows.append((oid, tag, value))
            newest = reply.varbinds[-1][0]
            if _arcs(newest) <= _arcs(last):
                result.failure = _NOT_INCREASING
                return result
            last = newest


def _arcs(oid: str) -> tuple[int, ...]:
    return tuple(int(arc) for arc in oid.split("."))
