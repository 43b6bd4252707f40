"""Devices that speak first, with several pollers of one site (issue 17): a push beat or a trap
reaches the poller the device calls, which is often not the device's owner. Both go through the
database every poller already shares (monitor/store/relay.py); nothing is sent poller to poller.

Push beats: every beat a sharing poller receives is recorded (one row per check, the latest
beat, at the database's clock), coalesced like the pipeline's status records: one queued
write, ``BEAT_LINGER`` after the first beat, carries every beat since the last one. Every
poller reads the beats other pollers recorded in the last seconds, once a second
(``BeatRelay.read``): the owner applies them to its checks (a
``status=down`` beat fails, an ok beat recovers), and every poller keeps each check's last beat
current, so one taking a device over watches from the device's last beat anywhere, not from its
own start-up. Only the time difference to the database's clock, read in the same query, turns a
row's time into this poller's: skewed poller clocks do not matter.

Traps: a poller that receives a trap of a device it does not own queues it for the owner
(``TrapRelay.send``); owners claim their devices' traps once a second (``TrapRelay.claim``), each
exactly once, and apply them as if received. A trap the owner got itself too (a device with
two destinations) is told apart by its content and sysUpTime and applied once
(``TrapReceiver``). Bounded: at most ``TRAPS_PENDING`` wait in memory per poller and rows older
than ``TRAP_MAX_AGE`` are purged.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from monitor.store.aio import AsyncStore
from monitor.store.coalesce import Coalesced
from probes.snmp_ber import VarBind

log = logging.getLogger("hallmon.relay")

RELAY_EVERY = 1.0  # seconds between two reads of the store (beats and traps)
# A beat waits this long for others to share its write: kiosks beat one by one, so without it
# every beat was a transaction of its own (2 statements; bench/relay_pg.py).
BEAT_LINGER = 0.5
# Beats are re-read for this long: a row stamped before a read may commit after it (a queued
# write commits with its group, ~50 ms of work; a lock wait can stretch that).
BEAT_OVERLAP = 10.0
# With pollers sharing the site, a silence fails this much later than ``expect_every +
# grace``: a beat that reached another poller just in time arrives here up to a read, a write
# and a commit later, and must not page a DOWN and an UP one second apart.
RELAY_SLACK = 3.0
TRAPS_PENDING = 1000  # traps waiting for their queued write; beyond, dropped and counted
TRAP_MAX_AGE = 120.0  # seconds a relayed trap waits for its owner (it covers a take-over)
CLAIM_LIMIT = 1000  # relayed traps claimed per read at most


@dataclass(frozen=True, slots=True)
class Beat:
    """A beat another poller received, in this poller's clock."""

    device: str
    check: str
    at: float
    status: str  # "up" | "down"
    message: str


@dataclass(frozen=True, slots=True)
class Trap:
    """A trap another poller received for one of this poller's devices."""

    device: str
    trap_oid: str
    uptime: int | None
    varbinds: tuple[VarBind, ...]
    at: float  # when it was received, in this poller's clock


class ReadFailures:
    """A relay loop's failed reads, logged as an operator wants them while the database is away
    (a read a second would be a warning a second): the first failure, then one line a minute
    with the count, and one line when reads work again."""

    def __init__(self, what: str, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.every = every
        self.clock = clock
        self.failures = 0  # in a row
        self._logged = 0.0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = self.clock()
        if self.failures == 1 or now - self._logged >= self.every:
            self._logged = now
            log.warning("cannot read %s (%s; %d failed read(s) in a row, retried every %g s)",
                        self.what, type(exc).__name__, self.failures, RELAY_EVERY)

    def ok(self) -> None:
        if self.failures:
            log.warning("reading %s again after %d failed read(s)", self.what, self.failures)
            self.failures = 0


def encode_varbinds(varbinds: tuple[VarBind, ...]) -> str:
    """JSON: [oid, tag, kind, value] each; bytes as base64 ("b"), so any octet string goes."""
    out: list[list[object]] = []
    for oid, tag, value in varbinds:
        if isinstance(value, bytes):
            out.append([oid, tag, "b", base64.b64encode(value).decode()])
        elif isinstance(value, bool) or not isinstance(value, int | str | None):
            raise TypeError(f"var-bind value of type {type(value).__name__}")
        else:
            out.append([oid, tag, "v", value])
    return json.dumps(out, separators=(",", ":"))


def decode_varbinds(text: str) -> tuple[VarBind, ...]:
    out: list[VarBind] = []
    for oid, tag, kind, value in json.loads(text):
        out.append((str(oid), int(tag), base64.b64decode(value) if kind == "b" else value))
    return tuple(out)


def _local(at: datetime, db_now: datetime, local_now: float) -> float:
    """A time of the database's clock in this poller's (never in the future)."""
    return local_now - max(0.0, (db_now - at).total_seconds())


class BeatRelay:
    """This poller's side of the beats shared through ``push_beats``."""

    def __init__(self, store: AsyncStore, poller_id: str,
                 clock: Callable[[], float] = time.time, linger: float = BEAT_LINGER) -> None:
        self.store = store
        self.poller_id = poller_id
        self.clock = clock
        # (device, check) -> (status, message, monotonic time received): each check's latest
        self._beats: Coalesced[tuple[str, str], tuple[str, str, float]] = Coalesced(
            store, self._write, linger=linger)
        self._after: datetime | None = None  # the database's time of the last read
        self._seen: dict[tuple[str, str], datetime] = {}  # each check's newest beat read

    def record(self, device: str, check: str, status: str, message: str) -> None:
        """A beat received here: to the store (coalesced; never awaited)."""
        self._beats.put((device, check), (status, message, time.monotonic()))

    def keep(self, checks: set[tuple[str, str]]) -> None:
        """A reload: forget the checks that are gone."""
        self._seen = {k: v for k, v in self._seen.items() if k in checks}

    def flush(self) -> None:
        """Queue the lingering write now (a stop: the store drains it)."""
        self._beats.flush()

    def _write(self, taken: dict[tuple[str, str], tuple[str, str, float]]) -> None:
        now = time.monotonic()
        self.store.store.record_beats(
            self.poller_id, [(d, c, s, m, now - t) for (d, c), (s, m, t) in taken.items()])

    async def read(self) -> list[Beat]:
        """The beats other pollers recorded since the last read, each once, oldest first."""
        db_now, rows = await self.store.run(self.store.store.beats_since, self._after,
                                            BEAT_OVERLAP)
        local_now = self.clock()
        self._after = db_now
        out = []
        for row in rows:
            key = (row.device_id, row.check)
            seen = self._seen.get(key)
            if seen is not None and row.at <= seen:
                continue
            self._seen[key] = row.at
            if row.poller == self.poller_id:
                continue
            out.append(Beat(row.device_id, row.check, _local(row.at, db_now, local_now),
                            row.status, row.message))
        return out


class TrapRelay:
    """This poller's side of the traps shared through ``trap_relay``."""

    def __init__(self, store: AsyncStore, poller_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.poller_id = poller_id
        self.clock = clock
        self.purged = 0  # relayed traps nobody claimed in time (their device left, say)
        # (device, trap_oid, uptime, var-binds JSON, monotonic time received), in order
        self._traps: Coalesced[int, tuple[str, str, int | None, str, float]] = Coalesced(
            store, self._write, limit=TRAPS_PENDING)

    def send(self, device: str, trap_oid: str, uptime: int | None,
             varbinds: tuple[VarBind, ...]) -> bool:
        """Queue a trap for its device's owner; False when too many wait (a flood, the
        database away): the caller counts it as dropped."""
        return self._traps.append(
            (device, trap_oid, uptime, encode_varbinds(varbinds), time.monotonic()))

    def _write(self, taken: dict[int, tuple[str, str, int | None, str, float]]) -> None:
        now = time.monotonic()
        self.store.store.relay_traps(
            self.poller_id, [(d, o, u, v, now - t) for d, o, u, v, t in taken.values()])

    async def claim(self, mine: Callable[[str], bool]) -> list[Trap]:
        """The traps other pollers relayed for the devices ``mine`` accepts, each once."""
        db_now, rows, purged = await self.store.run(
            self.store.store.claim_traps, mine, TRAP_MAX_AGE, CLAIM_LIMIT)
        self.purged += purged
        if purged:
            log.warning("%d relayed trap(s) were not claimed within %.0f s and were dropped",
                        purged, TRAP_MAX_AGE)
        local_now = self.clock()
        out = []
        for row in rows:
            try:
                varbinds = decode_varbinds(row.varbinds)
            except (ValueError, TypeError, KeyError):
                log.warning("relayed trap %d of %s: unreadable var-binds, dropped", row.id,
                            row.device_id)
                continue
            out.append(Trap(row.device_id, row.trap_oid, row.uptime, varbinds,
                            _local(row.received_at, db_now, local_now)))
        return out
