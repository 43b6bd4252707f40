"""The trap receiver: one UDP socket, notifications in, check results into ``Pipeline.handle``.

Per datagram, in the protocol callback (cheap and bounded, never awaits):

1. the global budget (``max_per_second``, a token bucket): beyond it datagrams are dropped and
   counted before any decoding, so a flood costs a dict lookup each; v3 (pysnmp, ~1 ms each)
   has its own smaller budget and is taken only from device addresses;
2. v1/v2c: strict BER decoding (probes/snmp_trap.py), the community checked against the
   inventory's v1/v2c credentials; an inform with a good community is acknowledged at once;
   v3: pysnmp's USM (probes/snmp_trap_v3.py), authPriv users of the inventory's v3 credentials;
3. the sender named: the source address, else (v1) the agent-addr; an unknown sender is counted
   and logged at most once a minute, never more;
4. a per-device budget (``per_device_per_second``), then the device's trap rules
   (monitor/traps.py); the resulting check results are queued (bounded) for one worker task that
   awaits ``Pipeline.handle`` — the same way in as a polled result.

Holds that time out are ended by :meth:`TrapReceiver.expire` (a 1 s loop in the daemon).

With several pollers sharing the site (``owned`` set, ``relay`` a
:class:`~monitor.relay.TrapRelay`), a trap of a device another poller owns is not dropped: after
the device's budget it is queued in the store for its owner (``trap_relay``), which claims its
devices' traps once a second and applies them here as if received. A trap the owner got both
itself and through another poller (a device with two trap destinations) is applied once: the
same device, OID, var-binds and sysUpTime within ``DUPLICATE_SECONDS`` is a copy.

With a store, held conditions and events outlive the process: each change of a device's holds
and each event is written through the store's write queue (``AsyncStore.queue``), never awaited
here. Writes coalesce (``Coalesced``, monitor/store/coalesce.py): one queued write at a time
carries every device changed and every event received since the last one (at most
``EVENTS_PENDING`` events wait; beyond, they are dropped and counted).
:meth:`TrapReceiver.resume` reads the holds back at start and when a poller takes devices over;
a hold whose device or rule is gone is dropped, with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.checks import snmp_auth
from monitor.inventory import PASSIVE_KINDS, Inventory, ResolvedCheck, TrapRule
from monitor.relay import RELAY_EVERY, TRAP_MAX_AGE, ReadFailures, TrapRelay
from monitor.store.aio import AsyncStore
from monitor.store.coalesce import Coalesced
from monitor.store.traps import HoldRow
from monitor.traps import Event, Hold, TrapBook
from probes.result import ProbeResult
from probes.snmp_ber import BerError, VarBind
from probes.snmp_trap import (
    VERSION_3,
    decode_notification,
    inform_response,
    message_version,
)

log = logging.getLogger("hallmon.traps")

Handle = Callable[[ResolvedCheck, ProbeResult], Awaitable[None]]
LOG_EVERY_SECONDS = 60.0  # unknown senders, malformed datagrams: one log line per kind and minute
RECHECK_EVERY_SECONDS = 5.0  # a chatty device gets at most one re-check per this, from traps
RECHECKS_PER_SECOND = 50.0  # re-checks asked by traps, all devices together
EVENTS_KEPT = 1000  # in memory, without a store
EVENTS_PENDING = 2000  # events waiting for their queued write; beyond, dropped and counted
PRUNE_EVERY = 500  # events stored between two prunings of the history (store.add_trap_events)
RECEIVE_BUFFER = 1 << 20  # bytes asked for the socket (the kernel caps it at rmem_max)
EventRow = tuple[str, str, str, str, datetime]  # device, rule, message, trap_oid, at
# Pollers sharing a site: a trap seen again (relayed by another poller, or sent to two of them)
# within this long is a copy. With a sysUpTime (every v1, v2c and v3 notification carries one)
# a copy is the same notification, so the window covers a relayed trap's longest wait; without
# one, only a few seconds (a device repeating itself is news again after that).
DUPLICATE_SECONDS = TRAP_MAX_AGE
DUPLICATE_SECONDS_NO_UPTIME = 5.0
RECENT_PER_DEVICE = 32  # fingerprints kept per device for telling copies
RELAYED_PER_SECOND = 200.0  # traps relayed to other pollers, all devices together


class Bucket:
    """Token bucket: ``rate`` per second, bursts up to ``burst``."""

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.level, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False


def normal_address(address: str) -> str:
    """``::ffff:127.0.0.1`` (a dual-stack socket) and ``127.0.0.1`` are one sender."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


@dataclass(frozen=True, slots=True)
class _Known:
    """What the receiver knows of the inventory (rebuilt on reload)."""

    by_address: dict[str, str]
    rules: dict[str, list[TrapRule]]
    checks: dict[tuple[str, str], ResolvedCheck]
    rule_oids: dict[str, frozenset[str]]
    communities: frozenset[bytes]
    v3_users: tuple[Any, ...]


def _known(inventory: Inventory) -> _Known:
    by_address: dict[str, str] = {}
    rules: dict[str, list[TrapRule]] = {}
    checks: dict[tuple[str, str], ResolvedCheck] = {}
    oids: dict[str, frozenset[str]] = {}
    for device in inventory.devices:
        by_address.setdefault(normal_address(device.address), device.id)
        device_rules = inventory.traps_for(device)
        if device_rules:
            rules[device.id] = device_rules
            oids[device.id] = frozenset(r.oid for r in device_rules) | frozenset(
                m.oid for r in device_rules for m in r.cleared_by)
            for c in inventory.checks_for(device):
                if c.kind == "trap":
                    checks[c.key] = c
    communities = frozenset(
        c.community_secret.get_secret_value().encode()
        for c in inventory.credentials.values()
        if c.version in ("1", "2c") and c.community_secret is not None
    )
    users = tuple(snmp_auth(c) for c in inventory.credentials.values() if c.version == "3")
    return _Known(by_address, rules, checks, oids, communities, users)


class TrapReceiver(asyncio.DatagramProtocol):
    def __init__(
        self,
        inventory: Inventory,
        handle: Handle,
        recheck: Callable[[str], object],
        *,
        clock: Callable[[], float] = time.time,
        max_per_second: float = 2000.0,
        per_device_per_second: float = 20.0,
        v3_per_second: float = 200.0,
        queue_size: int = 1000,
        store: AsyncStore | None = None,
    ) -> None:
        self.handle = handle
        self.store = store
        self.owned: set[str] | None = None  # pollers sharing the site: this one's devices
        # Held conditions by device (written by _save) and events, each coalesced into one
        # queued write at a time; events beyond EVENTS_PENDING waiting are dropped and counted.
        self._holds: Coalesced[str, list[HoldRow]] | None = None
        self._events: Coalesced[int, EventRow] | None = None
        if store is not None:
            self._holds = Coalesced(store, self._write_holds)
            self._events = Coalesced(store, self._write_events, limit=EVENTS_PENDING)
        self.relay: TrapRelay | None = None  # ... and the store's relay to the others
        self.relayed: dict[str, int] = {"out": 0, "in": 0}
        self.read_failures = ReadFailures("the traps other pollers received")
        self._recent: dict[str, deque[tuple[int, float]]] = {}  # device -> (fingerprint, at)
        self._unpruned = PRUNE_EVERY  # the first write prunes (the retention may have shrunk)
        self.recheck = recheck
        self.clock = clock
        self.book = TrapBook()
        self.events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self.received: dict[tuple[str, str, str], int] = {}  # (device, oid, outcome)
        self.dropped: dict[str, int] = {}  # by reason
        self.unknown_senders = 0
        self.address: tuple[str, int] | None = None
        self._budget = Bucket(max_per_second, max_per_second, clock())
        self._v3_budget = Bucket(v3_per_second, v3_per_second, clock())
        self._recheck_budget = Bucket(RECHECKS_PER_SECOND, 2 * RECHECKS_PER_SECOND, clock())
        # Traps relayed to other pollers through the store: at most this rate, so a flood
        # leaves at most RELAYED_PER_SECOND * TRAP_MAX_AGE rows per poller in the table.
        self._relay_budget = Bucket(RELAYED_PER_SECOND, 2 * RELAYED_PER_SECOND, clock())
        self._per_device_rate = per_device_per_second
        self._device_buckets: dict[str, Bucket] = {}
        self._last_recheck: dict[str, float] = {}
        self._queue: deque[tuple[ResolvedCheck, ProbeResult]] = deque()
        self._queue_size = queue_size
        self._wake = asyncio.Event()
        self._logged: dict[str, float] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._v3: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.known = _known(inventory)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Bind (raises OSError with the reason: port taken, or < 1024 without
        CAP_NET_BIND_SERVICE) and start the worker and the expiry loop."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a burst (a switch reboot: dozens of linkUp) must not overflow it
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sockname = transport.get_extra_info("sockname")
        self.address = (str(sockname[0]), int(sockname[1]))
        self._build_v3()
        self._tasks = [loop.create_task(self._work()), loop.create_task(self._expire_loop())]
        if self.relay is not None:
            self._tasks.append(loop.create_task(self._relay_loop()))
        log.info("receiving SNMP traps on %s:%d", *self.address)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._transport is not None:
            self._transport.close()
        if self._v3 is not None:
            with contextlib.suppress(Exception):
                self._v3.close()

    def use(self, inventory: Inventory) -> None:
        """A good reload: new devices, rules and credentials; removed devices forgotten."""
        old_users = self.known.v3_users
        self.known = _known(inventory)
        keep = {d.id for d in inventory.devices}
        for device in self.book.forget(keep):
            log.info("device %s left the inventory: its held trap conditions are dropped",
                     device)
            self._save(device)
        for device in list(self.book.holds):
            self._drop_stale(device)
        self.received = {k: v for k, v in self.received.items() if k[0] in keep}
        self._device_buckets = {k: v for k, v in self._device_buckets.items() if k in keep}
        self._recent = {k: v for k, v in self._recent.items() if k in keep}
        self._last_recheck = {k: v for k, v in self._last_recheck.items() if k in keep}
        if self._transport is not None and self.known.v3_users != old_users:
            self._build_v3()

    def _drop_stale(self, device: str) -> None:
        """End the device's conditions whose rule is gone (or no longer holds that kind)."""
        rules = {r.name: r.action for r in self.known.rules.get(device, [])}

        def keep(rule: str, hold: Hold) -> bool:
            if rules.get(rule) == hold.kind:
                return True
            log.info("device %s: trap rule %r no longer holds %s conditions: its condition "
                     "(%s) is dropped", device, rule, hold.kind, hold.message)
            return False

        changed = self.book.drop(device, keep)
        for name, result in changed:
            check = self.known.checks.get((device, name))
            if check is not None:
                self._enqueue(check, result)
        if changed:
            self._save(device)

    async def resume(self, devices: set[str] | None = None) -> dict[tuple[str, str],
                                                                    tuple[str, float]]:
        """Read the held conditions of ``devices`` (None: all) back from the store; drop
        those of devices or rules the inventory no longer has (logged). Returns the trap
        checks they fail, (device, check) -> (error, since), for ``Pipeline.resume``."""
        if self.store is None:
            return {}
        # Every row of the site: a device gone from the inventory is no poller's any more,
        # so whoever reads its rows first drops them.
        rows = await self.store.run(self.store.store.trap_holds)
        gone: set[str] = set()
        for row in rows:
            if row.device_id not in self.known.rules:
                if row.device_id not in gone:
                    log.info("device %s is no longer in the inventory (or has no trap rules): "
                             "its held trap conditions are dropped", row.device_id)
                gone.add(row.device_id)
                continue
            if devices is not None and row.device_id not in devices:
                continue
            self.book.load(row.device_id, row.rule, row.instance, Hold(
                row.message, row.until.timestamp(), row.kind, row.since.timestamp()))
        for device in gone:
            self._save(device)
        out: dict[tuple[str, str], tuple[str, float]] = {}
        for device in {r.device_id for r in rows
                       if devices is None or r.device_id in devices} - gone:
            self._drop_stale(device)
            for name, failing in self.book.failing(device).items():
                if (device, name) in self.known.checks:
                    out[(device, name)] = failing
        if out:
            log.info("resumed %d held trap condition(s) from the store",
                     sum(len(self.book.holds.get(d, {})) for d in {d for d, _ in out}))
        return out

    def release(self, devices: set[str]) -> None:
        """Another poller owns these devices now: forget their conditions here (their new
        owner resumes them from the store)."""
        for device in devices & set(self.book.holds):
            del self.book.holds[device]
        if self._holds is not None:  # a write still waiting must not undo the new owner's
            self._holds.discard(devices)

    # -- the store (queued writes, never awaited here) -------------------------------------

    @property
    def events_stored(self) -> int:
        return 0 if self._events is None else self._events.written

    @property
    def events_dropped(self) -> int:
        """Events not stored: too many waiting (a flood, the database away), or refused."""
        return 0 if self._events is None else self._events.dropped

    def _save(self, device: str) -> None:
        """The device's holds changed: queue their new rows (coalesced with the others')."""
        if self._holds is None:
            return
        self._holds.put(device, [
            HoldRow(device, rule, instance, h.kind, h.message, _utc(h.since), _utc(h.until))
            for (rule, instance), h in self.book.holds.get(device, {}).items()])

    def _write_holds(self, holds: dict[str, list[HoldRow]]) -> None:
        assert self.store is not None
        self.store.store.save_trap_holds(holds)

    def _store_event(self, event: Event) -> None:
        if self._events is not None:
            self._events.append(
                (event.device, event.rule, event.message, event.trap_oid, _utc(event.at)))

    def _write_events(self, events: dict[int, EventRow]) -> None:
        assert self.store is not None
        store = self.store.store
        prune = self._unpruned + len(events) >= PRUNE_EVERY  # only the store thread reads it
        store.add_trap_events(list(events.values()), prune=prune)
        unpruned = self._unpruned
        self._unpruned = 0 if prune else unpruned + len(events)
        # A group commit rolled back after this write: the history was not pruned either.
        store.on_rollback(lambda: setattr(self, "_unpruned", unpruned))

    def _build_v3(self) -> None:
        if self._v3 is not None:
            with contextlib.suppress(Exception):
                self._v3.close()
            self._v3 = None
        if self.known.v3_users:
            from probes.snmp_trap_v3 import V3Receiver

            self._v3 = V3Receiver(self.known.v3_users, self._send, self._deliver_v3)

    # -- the datagram path -----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._datagram(data, (str(addr[0]), int(addr[1])))
        except Exception:  # never let one datagram end the receiver
            self._drop("error")
            log.exception("trap receiver: unexpected error (datagram dropped)")

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self.clock()
        if not self._budget.take(now):
            self._drop("rate_limited")
            return
        source = normal_address(addr[0])
        device = self.known.by_address.get(source)
        try:
            version = message_version(data)
        except BerError:
            self._drop("malformed")
            self._log_limited("malformed", "malformed datagram from %s", source)
            return
        if version == VERSION_3:
            if self._v3 is None:
                self._drop("no_v3_user")
                return
            if device is None:  # v3 names no agent-addr: only the source address can map it
                self._unknown(source, "(v3)")
                return
            if not self._v3_budget.take(now):  # pysnmp costs ~1 ms a message (bench/traps.py)
                self._drop("rate_limited")
                return
            before = self._v3.rejected
            self._v3.feed(data, addr, learn=device is not None)
            if self._v3.rejected != before:
                self._drop("v3_rejected")
            return
        try:
            note = decode_notification(data)
        except BerError:
            self._drop("malformed")
            self._log_limited("malformed", "malformed datagram from %s", source)
            return
        if note.community not in self.known.communities:
            self._drop("bad_community")
            self._log_limited("community", "trap from %s with an unknown community", source)
            return
        if note.is_inform:
            self._send(inform_response(data, note), addr)
        if device is None and note.agent_addr is not None:
            device = self.known.by_address.get(note.agent_addr)
        self._notification(device, source, note.trap_oid, note.varbinds, now, note.uptime)

    def _deliver_v3(self, note: Any) -> None:
        source = normal_address(note.address[0])
        self._notification(self.known.by_address.get(source), source, note.trap_oid,
                           note.varbinds, self.clock(), note.uptime)

    def _notification(self, device: str | None, source: str, trap_oid: str,
                      varbinds: tuple[VarBind, ...], now: float, uptime: int | None = None,
                      *, relayed: bool = False) -> None:
        if device is None:
            self._unknown(source, trap_oid)
            return
        if self.owned is not None and device not in self.owned and self.relay is None:
            self._drop("not_owned")  # another poller of the site holds its conditions
            return
        if not relayed:  # (a relayed trap took its device's budget where it was received)
            bucket = self._device_buckets.get(device)
            if bucket is None:
                rate = self._per_device_rate
                bucket = self._device_buckets[device] = Bucket(rate, rate * 2, now)
            if not bucket.take(now):
                self._drop("rate_limited")
                return
        if self.owned is not None and device not in self.owned and self.relay is not None:
            if self._relay_budget.take(self.clock()) and self.relay.send(
                    device, trap_oid, uptime, varbinds):
                self.relayed["out"] += 1  # to its owner, through the store
            else:
                self._drop("relay_full")
            return
        if self.relay is not None and self._copy(device, trap_oid, uptime, varbinds, now):
            self._drop("duplicate")
            return
        rules = self.known.rules.get(device, [])
        outcome = self.book.apply(device, rules, trap_oid, varbinds, now)
        if outcome.held_changed:
            self._save(device)
        label = trap_oid if trap_oid in self.known.rule_oids.get(device, ()) else "other"
        result = "matched" if outcome.matched else "unmatched"
        if not outcome.matched:  # the OIDs a rule could name: say them, once a minute at most
            self._log_limited("unmatched", "device %s sent trap %s: no rule for it", device,
                              trap_oid, level=logging.INFO)
        key = (device, label, result)
        self.received[key] = self.received.get(key, 0) + 1
        for event in outcome.events:
            self.events.append(event)
            self._store_event(event)
            log.info("device %s: %s (trap %s)", device, event.message, trap_oid)
        for name, res in outcome.results.items():
            check = self.known.checks.get((device, name))
            if check is not None:
                self._enqueue(check, res)
        if relayed:  # applied as of when it was received; the budgets run on the clock
            now = self.clock()
        if outcome.recheck and now - self._last_recheck.get(device, -1e18) >= (
            RECHECK_EVERY_SECONDS
        ) and self._recheck_budget.take(now):
            # Bounded overall too: a core switch reboot makes every switch say coldStart, and
            # finding a device's checks costs the scheduler a scan of its slots.
            self._last_recheck[device] = now
            self.recheck(device)

    def _copy(self, device: str, trap_oid: str, uptime: int | None,
              varbinds: tuple[VarBind, ...], now: float) -> bool:
        """Pollers sharing the site: was this very notification applied here already (received
        both here and through another poller)? Remembers it if not."""
        fingerprint = hash((trap_oid, uptime, varbinds))
        window = DUPLICATE_SECONDS if uptime is not None else DUPLICATE_SECONDS_NO_UPTIME
        recent = self._recent.get(device)
        if recent is None:
            recent = self._recent[device] = deque(maxlen=RECENT_PER_DEVICE)
        if any(fp == fingerprint and abs(now - at) <= window for fp, at in recent):
            return True
        recent.append((fingerprint, now))
        return False

    def _unknown(self, source: str, trap_oid: str) -> None:
        self.unknown_senders += 1
        self._log_limited("unknown", "trap %s from %s: no device has this address "
                          "(%d from unknown senders so far)", trap_oid, source,
                          self.unknown_senders)

    def _enqueue(self, check: ResolvedCheck, result: ProbeResult) -> None:
        if len(self._queue) >= self._queue_size:
            self._drop("queue_full")
            return
        self._queue.append((check, result))
        self._wake.set()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _log_limited(self, kind: str, message: str, *args: object,
                     level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -1e18) >= LOG_EVERY_SECONDS:
            self._logged[kind] = now
            log.log(level, message, *args)

    # -- tasks -----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Apply every queued result (the worker's body; tests call it directly)."""
        while self._queue:
            check, result = self._queue.popleft()
            try:
                await self.handle(check, result)
            except Exception:
                log.exception("trap result for %s/%s failed", *check.key)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain()

    def expire(self, now: float | None = None) -> int:
        """End the holds that timed out; returns how many check results that queued."""
        n = 0
        for device, name, result in self.book.expire(self.clock() if now is None else now):
            self._save(device)
            check = self.known.checks.get((device, name))
            if check is not None:
                self._enqueue(check, result)
                n += 1
        if self._v3 is not None:
            self._v3.tick(time.time())
        return n

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.expire()

    async def claim_relayed(self) -> int:
        """Apply the traps other pollers received for this poller's devices; how many."""
        assert self.relay is not None
        owned = frozenset(self.owned or ())  # read on the store thread: a snapshot
        purged = self.relay.purged
        traps = await self.relay.claim(owned.__contains__)
        if self.relay.purged > purged:  # relayed by a poller, claimed by none in time
            self.dropped["relay_expired"] = (self.dropped.get("relay_expired", 0)
                                             + self.relay.purged - purged)
        for trap in traps:
            self.relayed["in"] += 1
            self._notification(trap.device, "relay", trap.trap_oid, trap.varbinds, trap.at,
                               trap.uptime, relayed=True)
        return len(traps)

    async def _relay_loop(self) -> None:
        failures = self.read_failures
        while True:
            await asyncio.sleep(RELAY_EVERY)
            try:
                await self.claim_relayed()
            except Exception as exc:  # the database away: the traps wait in the store
                failures.failed(exc)
            else:
                failures.ok()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def passive(check: ResolvedCheck) -> bool:
    """Checks no scheduler polls (push and trap checks): the device speaks first."""
    return check.kind in PASSIVE_KINDS
