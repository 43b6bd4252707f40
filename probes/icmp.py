"""ICMP echo probe: one socket per address family, shared by every probe of the event loop.

Why one socket: every raw ICMP socket receives a copy of every ICMP packet the host gets, so a
socket per probe multiplies CPU and loses replies (docs/field-notes.md, ICMP). Replies are
matched by an 8-byte token in the payload (unique per packet for the engine's life), so more
than 65k probes may be in flight even though the ICMP sequence number has only 16 bits. The
event loop's timer heap holds one deadline per batch.

Two ways in, one engine. :func:`submit` is the daemon's: the scheduler hands it every ICMP
check due in one wake-up and gets each result through a callback as soon as that target's
replies are in (no task, future or timer per target). :func:`probe` is the one-call API: calls
sharing an IcmpConfig that arrive in the same loop iteration are gathered into the same batches
(one task, timer and send loop per batch and config, not per call). A withdrawn request or a
cancelled caller takes back only its own packets.

Backends: ``native`` (this engine: raw socket with CAP_NET_RAW, else a ping socket where
``net.ipv4.ping_group_range`` allows it), ``ping3`` (portable, thread pool; Windows/macOS) and
``auto`` (native when it can open a socket, else ping3). Chosen once with :func:`configure`.
"""

from __future__ import annotations

import array
import asyncio
import errno
import ipaddress
import random
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol

from probes._perloop import PerLoop
from probes.result import ProbeResult, fast_success

Backend = Literal["auto", "native", "ping3"]
SocketMode = Literal["raw", "dgram"]

_ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
_PROTO: dict[int, int] = {
    socket.AF_INET: socket.IPPROTO_ICMP,
    socket.AF_INET6: socket.IPPROTO_ICMPV6,
}
# Room for a 10k-host burst of replies: a loopback skb costs ~1-2 KiB of buffer each.
_BUFFER_BYTES = 32 * 1024 * 1024
_SOL_RAW, _ICMP_FILTER, _ICMP6_FILTER = 255, 1, 1
_U16, _U64 = struct.Struct("!H"), struct.Struct("!Q")  # the reply's ident and match token
# Paced sends go out in bursts of this many seconds at the pacing rate (2000/s: 10 packets).
PACING_BURST = 0.005


@dataclass(frozen=True, slots=True)
class IcmpConfig:
    """``interval`` separates the packets of one probe; ``timeout`` is the wait after the last."""

    packets: int = 3
    interval: float = 0.05
    timeout: float = 1.0
    size: int = 56

    def __post_init__(self) -> None:
        if self.packets < 1:
            raise ValueError("packets must be >= 1")
        if not 8 <= self.size <= 65000:
            raise ValueError("size must be between 8 and 65000 bytes (8 carry the match token)")
        if self.interval < 0 or self.timeout <= 0:
            raise ValueError("interval must be >= 0 and timeout > 0")


class IcmpPermissionError(RuntimeError):
    """Neither a raw nor a ping socket can be opened: the operator must fix privileges."""


FIX_HINT = (
    "cannot open an ICMP socket: neither raw (needs CAP_NET_RAW; systemd: "
    "AmbientCapabilities=CAP_NET_RAW, or `setcap cap_net_raw+ep` on the interpreter) nor ping "
    "socket (needs the process group inside `sysctl net.ipv4.ping_group_range`, e.g. "
    "`sysctl -w net.ipv4.ping_group_range='0 2147483647'`); or set icmp.backend: ping3"
)


# ---------------------------------------------------------------- configuration (once per process)
@dataclass(slots=True)
class _Settings:
    backend: Backend = "auto"
    pacing_per_second: float = 0.0  # 0 = unpaced (loopback, benchmarks); real halls: 1000-5000
    socket_mode: SocketMode | None = None  # None = raw, else dgram


_settings = _Settings()
_mode_cache: dict[SocketMode | None, SocketMode] = {}


def configure(
    backend: Backend = "auto",
    pacing_per_second: float = 0.0,
    socket_mode: SocketMode | None = None,
) -> None:
    """Choose the backend, send pacing (packets/s over all probes) and socket kind, once."""
    if backend not in ("auto", "native", "ping3"):
        raise ValueError(f"unknown icmp backend {backend!r} (auto, native or ping3)")
    if pacing_per_second < 0:
        raise ValueError("pacing_per_second must be >= 0")
    _settings.backend = backend
    _settings.pacing_per_second = pacing_per_second
    _settings.socket_mode = socket_mode


def _open_socket(family: int, kind: SocketMode) -> socket.socket:
    stype = socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM
    sock = socket.socket(family, stype, _PROTO[family])
    sock.setblocking(False)
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # 33/32: *BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, _BUFFER_BYTES)
        except OSError:  # not root: capped by net.core.[rw]mem_max, still better than default
            sock.setsockopt(socket.SOL_SOCKET, opt, _BUFFER_BYTES)
    if kind == "raw":
        _only_echo_replies(sock, family)
    return sock


def _only_echo_replies(sock: socket.socket, family: int) -> None:
    """Kernel-side filter: a raw socket otherwise also queues our own requests (on loopback)
    and every other ICMP message of the host, halving the room left for replies."""
    blocked = ~(1 << _ECHO_REPLY[family])
    try:
        if family == socket.AF_INET:
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked & 0xFFFFFFFF))
        else:  # ICMPv6 types 0-255 as 8 words; a set bit blocks the type
            words = [0xFFFFFFFF] * 8
            words[_ECHO_REPLY[family] >> 5] &= ~(1 << (_ECHO_REPLY[family] & 31)) & 0xFFFFFFFF
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
    except OSError:  # filter unsupported: replies are still matched in user space
        pass


def mode() -> SocketMode:
    """Socket kind the native engine uses ("raw" or "dgram"); raises with both fixes if none."""
    wanted = _settings.socket_mode
    if wanted in _mode_cache:
        return _mode_cache[wanted]
    kinds: tuple[SocketMode, ...] = (wanted,) if wanted else ("raw", "dgram")
    for kind in kinds:
        try:
            _open_socket(socket.AF_INET, kind).close()
        except (PermissionError, OSError):
            continue
        _mode_cache[wanted] = kind
        return kind
    raise IcmpPermissionError(FIX_HINT)


def backend() -> Literal["native", "ping3"]:
    """The backend probes will use: ``auto`` falls back to ping3 when no socket can be opened."""
    if _settings.backend != "auto":
        return _settings.backend
    if not sys.platform.startswith("linux"):  # the native engine is tested on Linux only
        return "ping3"
    try:
        mode()
    except IcmpPermissionError:
        return "ping3"
    return "native"


def privileges() -> str:
    """What ICMP probes will send with, said once at start-up ("native engine, raw socket ...").

    Raises :class:`IcmpPermissionError` naming both fixes when no ICMP socket can be opened: on
    Linux ping3 needs the same raw or ping socket, so falling back to it would only turn every
    ping into "permission denied" while the daemon looked healthy.
    """
    chosen = backend()
    if not sys.platform.startswith("linux"):
        return f"{chosen} backend"
    kind = mode()  # raises with FIX_HINT
    how = ("raw socket (CAP_NET_RAW)" if kind == "raw"
           else "ping socket (net.ipv4.ping_group_range)")
    return f"{'native engine' if chosen == 'native' else 'ping3 backend'}, {how}"


# ---------------------------------------------------------------- packets
def checksum(data: bytes) -> int:
    """Internet checksum in native byte order (pack it with ``=H``): sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def build_echo(family: int, ident: int, seq: int, token: int, size: int) -> bytes:
    """Echo request whose payload starts with the 8-byte match token (rest zero)."""
    kind = _ECHO_REQUEST[family]
    pad = _PADDING.get(size) or _PADDING.setdefault(size, bytes(size - 8))
    if family == socket.AF_INET6:  # the kernel fills the ICMPv6 checksum (pseudo-header)
        return _ECHO.pack(kind, 0, 0, ident, seq, token) + pad
    # The checksum of header + token, summed as integers: ~5x cheaper than over the bytes.
    total = (kind << 8) + ident + seq
    total += (token >> 48) + ((token >> 32) & 0xFFFF) + ((token >> 16) & 0xFFFF) + (token & 0xFFFF)
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return _ECHO.pack(kind, 0, ~total & 0xFFFF, ident, seq, token) + pad


_ECHO = struct.Struct("!BBHHHQ")  # type, code, checksum, ident, sequence, match token
_PADDING: dict[int, bytes] = {}  # zero payload after the token, by packet size (a few sizes)


# ---------------------------------------------------------------- the engine (one per loop)
class _Group:
    """One sweep: how many probes still wait for replies, and the future that ends the wait."""

    __slots__ = ("remaining", "done")

    def __init__(self, remaining: int, done: asyncio.Future[None]) -> None:
        self.remaining = remaining
        self.done = done


# Where a finished target's result goes: ``sink(tag, result)``, called once, synchronously.
Sink = Callable[[Any, ProbeResult], None]


class _Probe:
    """Book-keeping of one target in a sweep: send times and RTTs by packet index. A submitted
    target (or probe() call) also carries its ``sink`` and ``tag``: the result is handed over
    as soon as its figures are in, not at the batch's end."""

    __slots__ = ("address", "family", "sent", "rtts", "tokens", "expected", "group", "finished",
                 "error", "start", "sink", "tag")

    def __init__(self, family: int, address: str, expected: int, start: float,
                 sink: Sink | None = None, tag: Any = None) -> None:
        self.family = family
        self.address = address
        self.expected = expected
        self.start = start
        self.sink = sink
        self.tag = tag
        self.group: _Group | None = None
        self.sent: list[float] = []
        self.rtts: dict[int, float] = {}
        self.tokens: list[int] = []
        self.finished = 0.0
        self.error: str | None = None

    def answer(self, result: ProbeResult) -> None:
        """Hand ``result`` to the sink, once (a withdrawn target has no sink any more)."""
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink(self.tag, result)

    def complete(self, now: float) -> None:
        self.finished = now
        if self.sink is not None:  # answer this caller now, not at batch end
            self.answer(_result(self, now))
        group = self.group
        if group is None:
            return
        group.remaining -= 1
        if group.remaining <= 0 and not group.done.done():
            group.done.set_result(None)


class _Engine:
    def __init__(self, loop: asyncio.AbstractEventLoop, kind: SocketMode) -> None:
        self.loop = loop
        self.kind = kind
        self.ident = random.getrandbits(16)
        self._token = random.getrandbits(62)  # random start: stale replies of an old engine miss
        self._socks: dict[int, socket.socket] = {}
        self._idents: dict[int, int] = {}
        self.pending: dict[int, _Probe] = {}  # by token (a packet's index: its place in tokens)
        self._next_send = 0.0
        # probe() calls gathering for the next batch, by config, with the flush's timer
        self.gathering: dict[IcmpConfig, tuple[list[_Probe], asyncio.TimerHandle]] = {}
        self.running: dict[asyncio.Task[None], list[_Probe]] = {}
        self.resolving: set[asyncio.Task[None]] = set()  # submit()'s hostname look-ups
        self.batches = 0  # batches sent and probe() calls they carried (tests, benchmarks)
        self.batched = 0

    def sock(self, family: int) -> socket.socket:
        sock = self._socks.get(family)
        if sock is None:
            sock = _open_socket(family, self.kind)
            self._socks[family] = sock
            # A ping socket's echo id is its local port, rewritten by the kernel.
            self._idents[family] = sock.getsockname()[1] if self.kind == "dgram" else self.ident
            self.loop.add_reader(sock.fileno(), self._on_readable, sock, family)
        return sock

    def next_token(self) -> int:
        self._token += 1
        return self._token

    async def pace(self) -> None:
        """Global send pacing: on average 1/rate apart, in bursts of ``PACING_BURST`` seconds'
        worth. ``_next_send`` is when the packets sent so far are paid for at the rate; a
        packet goes now unless that is more than a burst ahead, else the sender sleeps until
        it is paid (then a burst may go back to back). A sleep per packet made a loop wake-up
        per packet: at 10k devices the daemon's largest cost (~1 s of CPU per 30 s cycle)."""
        rate = _settings.pacing_per_second
        if rate <= 0:
            return
        now = self.loop.time()
        if self._next_send > now + PACING_BURST:
            await asyncio.sleep(self._next_send - now)
            now = self.loop.time()
        self._next_send = max(now, self._next_send) + 1.0 / rate

    def send(self, probe: _Probe, index: int, size: int) -> bytes | None:
        """Send packet ``index`` of ``probe`` without blocking; returns the packet if the send
        buffer is full (the caller awaits room), ends the probe with its reason on errors."""
        family = probe.family
        token = self._token = self._token + 1  # next_token(), inline: once per packet
        packet = build_echo(family, self._idents[family], token & 0xFFFF, token, size)
        self.pending[token] = probe
        probe.tokens.append(token)
        probe.sent.append(self.loop.time())
        try:
            self._socks[family].sendto(packet, (probe.address, 0))
        except BlockingIOError:
            return packet
        except OSError as exc:
            self.send_failed(probe, token, exc)
        return None

    async def send_later(self, probe: _Probe, packet: bytes) -> None:
        """The send buffer was full under a burst: wait for room instead of dropping."""
        try:
            await self.loop.sock_sendto(self._socks[probe.family], packet, (probe.address, 0))
        except OSError as exc:
            self.send_failed(probe, probe.tokens[-1], exc)

    def send_failed(self, probe: _Probe, token: int, exc: OSError) -> None:
        self.pending.pop(token, None)
        probe.sent.pop()
        probe.error = _SEND_ERRORS.get(exc.errno or 0, f"send failed: {exc.strerror}")
        probe.complete(self.loop.time())

    async def run(self, live: list[_Probe], config: IcmpConfig) -> float:
        """Send ``config.packets`` rounds to ``live`` and wait for replies or the timeout after
        the last round; returns the end time. On return or cancellation every token is
        forgotten, so late replies are ignored."""
        loop = self.loop
        group = _Group(len(live), loop.create_future())
        for p in live:
            p.group = group
        for family in {p.family for p in live}:
            self.sock(family)
        paced = _settings.pacing_per_second > 0
        timer: asyncio.TimerHandle | None = None
        try:
            for index in range(config.packets):
                if index:
                    await asyncio.sleep(config.interval)
                    if group.remaining <= 0:  # every caller left or failed: nobody to serve
                        break
                for p in live:
                    if paced and p.error is None:
                        await self.pace()  # its caller may leave meanwhile: test again below
                    if p.error is None:
                        full = self.send(p, index, config.size)
                        if full is not None:
                            await self.send_later(p, full)
            if live and not group.done.done():
                timer = loop.call_at(loop.time() + config.timeout, _finish, group.done)
                await group.done
        finally:
            if timer is not None:
                timer.cancel()
            if not group.done.done():
                group.done.cancel()
            pending = self.pending
            for p in live:
                for token in p.tokens:
                    pending.pop(token, None)
        return loop.time()

    def enqueue(self, family: int, address: str, config: IcmpConfig, start: float,
                sink: Sink, tag: Any) -> _Probe:
        """Add a target to the batch gathering for ``config``; the first one of a batch arms
        its flush, ``BATCH_WINDOW`` later (next loop iteration when 0)."""
        p = _Probe(family, address, config.packets, start, sink, tag)
        self.gather(config).append(p)
        return p

    def gather(self, config: IcmpConfig) -> list[_Probe]:
        """The batch gathering for ``config`` (made, and its flush armed, if none)."""
        entry = self.gathering.get(config)
        if entry is None:
            entry = ([], self.loop.call_later(BATCH_WINDOW, self.flush, config))
            self.gathering[config] = entry
        return entry[0]

    def flush(self, config: IcmpConfig) -> None:
        """Send a gathered batch as one sweep, in a task of its own (callers only wait)."""
        batch, _ = self.gathering.pop(config)
        live = [p for p in batch if p.error is None]  # withdrawn while gathering: left
        if not live:
            return
        self.batches += 1
        self.batched += len(live)
        task = self.loop.create_task(self._serve(live, config))
        self.running[task] = live
        task.add_done_callback(self._served)

    async def _serve(self, live: list[_Probe], config: IcmpConfig) -> None:
        end = await self.run(live, config)
        for p in live:  # the rest timed out (or failed to send): "no reply", partial loss
            if p.sink is not None:
                p.answer(_result(p, end))

    def _served(self, task: asyncio.Task[None]) -> None:
        live = self.running.pop(task, ())
        if task.cancelled() or task.exception() is not None:  # close(), or a bug: never hang
            reason = "icmp engine closed" if task.cancelled() else f"icmp error: {task.exception()}"
            _fail_waiters(live, self.loop.time(), reason)

    def drop(self, p: _Probe) -> None:
        """A target was withdrawn (its caller's deadline): forget its packets and its sink,
        leave the batch alone."""
        p.sink = None
        pending = self.pending
        for token in p.tokens:
            pending.pop(token, None)
        if p.error is None:
            p.error = "cancelled"  # the batch sends it nothing more
        if p.group is not None and not p.finished:
            p.complete(self.loop.time())  # the batch need not wait for its replies

    def _on_readable(self, sock: socket.socket, family: int) -> None:
        now = self.loop.time()
        raw = self.kind == "raw"
        strip_ip = family == socket.AF_INET and raw
        reply_type = _ECHO_REPLY[family]
        ident = self._idents[family]
        pending = self.pending
        for _ in range(4096):  # drain a burst, but give other callbacks a turn
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. a queued ICMP error on the socket: nothing to match
                continue
            off = (data[0] & 0x0F) * 4 if strip_ip else 0
            if len(data) < off + 16 or data[off] != reply_type:
                continue
            if raw and _U16.unpack_from(data, off + 4)[0] != ident:
                continue  # another process' echo
            token = _U64.unpack_from(data, off + 8)[0]
            probe = pending.pop(token, None)
            if probe is None:
                continue
            if addr[0] == probe.address or _same_address(addr[0], probe.address):
                tokens = probe.tokens
                index = 0 if tokens[0] == token else tokens.index(token)
                probe.rtts[index] = now - probe.sent[index]
                if len(probe.rtts) == probe.expected:
                    probe.complete(now)

    def close(self) -> None:
        now = self.loop.time()
        for batch, flush in self.gathering.values():
            flush.cancel()
            _fail_waiters(batch, now, "icmp engine closed")
        self.gathering.clear()
        for task in self.running:
            task.cancel()  # its done-callback answers the callers
        for task in self.resolving:
            task.cancel()
        for sock in self._socks.values():
            if not self.loop.is_closed():
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        self.pending.clear()


def _fail_waiters(probes: Sequence[_Probe], now: float, reason: str) -> None:
    for p in probes:
        if p.sink is not None:
            p.answer(ProbeResult.failure(now - p.start, reason))


def _same_address(got: str, want: str) -> bool:
    try:
        return ipaddress.ip_address(got.split("%", 1)[0]) == ipaddress.ip_address(want)
    except ValueError:
        return False


_engines: PerLoop[_Engine] = PerLoop(lambda loop: _Engine(loop, mode()))
_engine = _engines.get


async def close() -> None:
    """Close this loop's ICMP sockets and ping3 pool (shutdown, test teardown); idempotent."""
    engine = _engines.pop()
    if engine is not None:
        tasks = [*engine.running, *engine.resolving]
        engine.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    from probes import icmp_ping3  # lazy: the portable backend is rarely used

    await icmp_ping3.close()


# ---------------------------------------------------------------- resolution and results
def parse_literal(target: str) -> tuple[int, str] | None:
    """(family, canonical address) of an IP literal; inet_pton is ~10x cheaper than ipaddress."""
    try:
        socket.inet_pton(socket.AF_INET, target)
        return socket.AF_INET, target
    except OSError:
        pass
    try:
        return socket.AF_INET6, str(ipaddress.IPv6Address(target))
    except ValueError:
        return None


async def resolve(target: str) -> tuple[int, str] | None:
    """(family, address) of a literal or a hostname, resolved off the loop; None if unknown."""
    literal = parse_literal(target)
    if literal is not None:
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        return None
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, str(sockaddr[0])
    return None


def summarize(duration: float, sent: int, rtts: list[float], error: str | None) -> ProbeResult:
    """Loss and RTT figures shared by both backends (RTTs in send order)."""
    received = len(rtts)
    if received == 1 and sent == 1:
        return _one_reply(duration, rtts[0])
    values: dict[str, float] = {
        "packets_sent": float(sent),
        "packets_received": float(received),
        "loss_ratio": (1.0 - received / sent) if sent else 1.0,
    }
    if not rtts:
        return ProbeResult.failure(duration, error or "no reply", values)
    if received == 1:
        rtt = rtts[0]
        values.update(rtt_min_seconds=rtt, rtt_max_seconds=rtt, rtt_avg_seconds=rtt)
        values["rtt_jitter_seconds"] = 0.0
    else:
        values["rtt_min_seconds"] = min(rtts)
        values["rtt_max_seconds"] = max(rtts)
        values["rtt_avg_seconds"] = sum(rtts) / received
        diffs = [abs(b - a) for a, b in zip(rtts, rtts[1:], strict=False)]
        values["rtt_jitter_seconds"] = sum(diffs) / len(diffs)
    # Direct construction: ProbeResult.success copies the dict again (10k results per sweep).
    return fast_success(duration, MappingProxyType(values))


_SEND_ERRORS = {
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EACCES: "permission denied (broadcast address?)",
}


async def _resolve_all(targets: Sequence[str]) -> list[tuple[int, str] | None]:
    found = [parse_literal(t) for t in targets]
    names = [i for i, f in enumerate(found) if f is None]
    if names:  # hostnames only: concurrent lookups in the loop's resolver threads
        lookups = await asyncio.gather(*(resolve(targets[i]) for i in names))
        for i, res in zip(names, lookups, strict=True):
            found[i] = res
    return found


async def sweep(targets: Sequence[str], config: IcmpConfig) -> list[ProbeResult]:
    """Probe many targets at once with the native engine (results in ``targets`` order).

    Same figures as :func:`probe`, without a task, a future and a timer per target: what a
    benchmark (or any caller holding a list) uses to sweep thousands of hosts in one call.
    """
    engine = _engine()
    start = engine.loop.time()
    resolved = await _resolve_all(targets)
    probes = [_Probe(res[0], res[1], config.packets, start) if res else None for res in resolved]
    live = [p for p in probes if p is not None]
    end = await engine.run(live, config)
    return [_result(p, end) if p is not None else _UNRESOLVED for p in probes]


_UNRESOLVED = ProbeResult.failure(0.0, "name not resolved")


def _one_reply(duration: float, rtt: float) -> ProbeResult:
    """One packet sent, its reply in: the common sweep case, kept cheap (one dict literal)."""
    one = {
        "packets_sent": 1.0,
        "packets_received": 1.0,
        "loss_ratio": 0.0,
        "rtt_min_seconds": rtt,
        "rtt_max_seconds": rtt,
        "rtt_avg_seconds": rtt,
        "rtt_jitter_seconds": 0.0,
    }
    return fast_success(duration, MappingProxyType(one))


def _result(p: _Probe, end: float) -> ProbeResult:
    rtts = p.rtts
    if len(rtts) == 1 and len(p.sent) == 1:  # summarize's fast path, without its list
        return _one_reply((p.finished or end) - p.start, rtts[0])
    ordered = [rtts[i] for i in sorted(rtts)] if len(rtts) > 1 else list(rtts.values())
    return summarize((p.finished or end) - p.start, len(p.sent), ordered, p.error)


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


# How long the first probe() call of a batch waits for others sharing its IcmpConfig. 0 = the
# next loop iteration: no added latency, and it already gathers a burst, because the scheduler
# wakes every check due within 2 ms in one iteration. Measured: calls arriving one per 2 ms
# wake (4000 calls) made 4000 batches at 0 and ~3950 at 2 ms, CPU within noise; a wider window
# only adds latency. bench/icmp_sweep.py measures the burst (10k calls: one batch).
BATCH_WINDOW = 0.0


async def probe(target: str, config: IcmpConfig) -> ProbeResult:
    """Echo ``target`` ``config.packets`` times; ok when at least one reply came back.

    Calls sharing a config that arrive within ``BATCH_WINDOW`` go out as one sweep (a task, a
    timer and a send loop per batch instead of per call); each caller gets its own result as
    soon as its replies are in, and a cancelled caller only withdraws its own packets.
    """
    if backend() == "ping3":
        from probes import icmp_ping3

        return await icmp_ping3.probe(target, config)
    engine = _engine()
    start = engine.loop.time()
    found = parse_literal(target) or await resolve(target)
    if found is None:
        return _UNRESOLVED
    waiter: asyncio.Future[ProbeResult] = engine.loop.create_future()
    p = engine.enqueue(found[0], found[1], config, start, _set_result, waiter)
    try:
        return await waiter
    except asyncio.CancelledError:
        engine.drop(p)
        raise


def _set_result(waiter: asyncio.Future[ProbeResult], result: ProbeResult) -> None:
    if not waiter.done():
        waiter.set_result(result)



# ---------------------------------------------------------------- the daemon's batch path
Deliver = Callable[[int, ProbeResult], None]


class Request(Protocol):
    """What :func:`submit` reads of each request (the daemon passes its check calls as they
    are: no tuple per target per cycle)."""

    @property
    def address(self) -> str: ...
    @property
    def config(self) -> IcmpConfig: ...


@dataclass(frozen=True, slots=True)
class Target:
    """A plain :class:`Request` for callers without objects of their own."""

    address: str
    config: IcmpConfig


class Submitted:
    """The requests of one :func:`submit` call, by index: withdraw any before its result."""

    __slots__ = ("_engine", "entries", "_withdrawn")

    def __init__(self, engine: _Engine | None, size: int) -> None:
        self._engine = engine
        # per request: its engine entry, its ping3 task, or None while its name resolves
        self.entries: list[_Probe | asyncio.Task[None] | None] = [None] * size
        self._withdrawn: set[int] = set()

    def withdraw(self, index: int) -> None:
        """No more packets and no result for request ``index`` (its caller's deadline)."""
        entry = self.entries[index]
        if isinstance(entry, _Probe):
            assert self._engine is not None
            self._engine.drop(entry)
        elif entry is not None:
            entry.cancel()
        else:
            self._withdrawn.add(index)

    def withdrawn(self, index: int) -> bool:
        return index in self._withdrawn


def submit(requests: Sequence[Request], deliver: Deliver) -> Submitted:
    """Probe each request's ``address`` with its ``config``; call ``deliver(index, result)``
    once per request, as soon as that target's replies are in or its ``config.timeout``
    passed; never from inside this call. Requests sharing a config go out as one sweep in the
    next loop iteration (with any probe() calls gathering for it): one task, timer and send
    loop per config, nothing per target but its book-keeping. Hostnames are resolved first,
    concurrently, off the loop.

    The scheduler's path: every ICMP check due in one wake-up is one call (monitor/checks.py).
    """
    if backend() == "ping3":
        return _submit_ping3(requests, deliver)
    engine = _engine()
    start = engine.loop.time()
    handle = Submitted(engine, len(requests))
    entries = handle.entries
    names: list[int] = []
    config: IcmpConfig | None = None
    batch: list[_Probe] = []
    inet_pton, af_inet = socket.inet_pton, int(socket.AF_INET)
    for i, request in enumerate(requests):
        address, cfg = request.address, request.config
        try:
            inet_pton(af_inet, address)  # parse_literal's common case, without its tuple
            family = af_inet
        except OSError:
            found = parse_literal(address)
            if found is None:
                names.append(i)
                continue
            family, address = found
        if cfg is not config:  # runs of one config object: hashed once, not per target
            config, batch = cfg, engine.gather(cfg)
        p = entries[i] = _Probe(family, address, cfg.packets, start, deliver, i)
        batch.append(p)
    if names:
        task = engine.loop.create_task(_submit_names(engine, handle, requests, names, deliver))
        engine.resolving.add(task)
        task.add_done_callback(engine.resolving.discard)
    return handle


async def _submit_names(engine: _Engine, handle: Submitted, requests: Sequence[Request],
                        names: list[int], deliver: Deliver) -> None:
    start = engine.loop.time()
    found = await asyncio.gather(*(resolve(requests[i].address) for i in names))
    for i, res in zip(names, found, strict=True):
        if handle.withdrawn(i):
            continue
        if res is None:
            handle.entries[i] = None
            handle.withdraw(i)  # answered: a later withdraw has nothing to take back
            deliver(i, ProbeResult.failure(engine.loop.time() - start, "name not resolved"))
        else:
            handle.entries[i] = engine.enqueue(res[0], res[1], requests[i].config, start,
                                               deliver, i)


def _submit_ping3(requests: Sequence[Request], deliver: Deliver) -> Submitted:
    """The portable backend has no batch engine: one task per request, same contract."""
    from probes import icmp_ping3

    async def one(i: int, target: str, config: IcmpConfig) -> None:
        deliver(i, await icmp_ping3.probe(target, config))

    handle = Submitted(None, len(requests))
    loop = asyncio.get_running_loop()
    for i, request in enumerate(requests):
        handle.entries[i] = loop.create_task(one(i, request.address, request.config))
    return handle
