"""Push heartbeats: devices that call us (``/api/v1/push/{token}``) instead of being polled.

A ``push`` check (:class:`~monitor.inventory.PushCheck`) expects a beat at least every
``expect_every``. A beat is a result (ok, or failed with ``status=down``) that enters through
``Pipeline.handle`` like a probe's; :meth:`Heartbeats.expire` turns a beat missing for
``expect_every + grace`` into one failed result (push checks fail and recover on one result:
the grace is the tolerance). Until the first beat after start-up the clock runs from start-up:
a kiosk that never calls goes DOWN after ``expect_every + grace``.

With several pollers sharing the site (``owned`` set, ``relay`` a
:class:`~monitor.relay.BeatRelay`), a kiosk calls one of them, often not its device's owner:
every poller watches every push check, records each beat it receives in the store, and reads
the beats the others received once a second (:meth:`Heartbeats.relayed`). Only the owner
applies a beat (here or relayed) and only the owner fails a silent check, ``RELAY_SLACK``
later than alone (a beat relayed just in time must not page DOWN and UP a second apart). Every
poller keeps each check's last beat, so one taking a device over watches from the device's last
beat anywhere.

Tokens are secrets: kept only as SHA-256 digests here, never logged, compared by digest; the
store gets the device and check, never the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from monitor.inventory import Inventory, PushCheck, ResolvedCheck
from monitor.relay import RELAY_EVERY, RELAY_SLACK, Beat, BeatRelay, ReadFailures
from probes.result import ProbeResult

log = logging.getLogger("hallmon.push")

Handle = Callable[[ResolvedCheck, ProbeResult], Awaitable[None]]
MAX_MESSAGE = 200  # characters of a beat's message kept (it becomes the check's error text)


def _has_push(inventory: Inventory) -> bool:
    """Any push check at all? (10k devices: skip resolving every device's checks when none.)"""
    return any(c.kind == "push" for cls in inventory.device_classes().values()
               for c in cls.checks) or any(c.kind == "push" for d in inventory.devices
                                           for c in d.extra_checks)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class _Watch:
    check: ResolvedCheck
    deadline_after: float  # expect_every + grace
    last: float  # last beat, or start-up
    overdue: bool = False


class Heartbeats:
    def __init__(self, inventory: Inventory, handle: Handle,
                 clock: Callable[[], float] = time.time) -> None:
        self.handle = handle
        self.clock = clock
        self.beats: dict[tuple[str, str], int] = {}  # (device, check) -> beats received
        # Pollers sharing the site: this poller's devices (None: all), the store's relay, and
        # beats relayed for other pollers' devices ("out") or from them for ours ("in").
        self.owned: set[str] | None = None
        self.relay: BeatRelay | None = None
        self.relayed: dict[str, int] = {"out": 0, "in": 0}
        self.read_failures = ReadFailures("the push beats other pollers received")
        self._by_digest: dict[bytes, _Watch] = {}
        self._by_key: dict[tuple[str, str], _Watch] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.use(inventory)

    def __repr__(self) -> str:  # tokens never shown, not even as digests
        return f"Heartbeats({len(self._by_digest)} push checks)"

    def use(self, inventory: Inventory) -> None:
        """(Re)load: unchanged checks keep their last beat; new ones start their clock now."""
        old = {w.check.key: w for w in self._by_digest.values()}
        now = self.clock()
        fresh: dict[bytes, _Watch] = {}
        for device in inventory.devices if _has_push(inventory) else ():
            for check in inventory.checks_for(device):
                spec = check.spec
                if not isinstance(spec, PushCheck):
                    continue
                prev = old.get(check.key)
                fresh[digest(spec.token_secret.get_secret_value())] = _Watch(
                    check, spec.expect_every + spec.grace,
                    prev.last if prev else now, prev.overdue if prev else False,
                )
        self._by_digest = fresh
        self._by_key = {w.check.key: w for w in fresh.values()}
        keys = set(self._by_key)
        if self.relay is not None:
            self.relay.keep(keys)
        self.beats = {k: self.beats.get(k, 0) for k in keys}

    async def beat(self, token: str, status: str | None = None,
                   message: str | None = None) -> ResolvedCheck | None:
        """One heartbeat; None when no push check has this token."""
        watch = self._by_digest.get(digest(token))
        if watch is None:
            return None
        watch.last = self.clock()
        watch.overdue = False
        key = watch.check.key
        self.beats[key] = self.beats.get(key, 0) + 1
        text = (message or "").strip()[:MAX_MESSAGE]
        down = status is not None and status.lower() == "down"
        if self.relay is not None:  # for the owner (maybe another poller) and a successor
            self.relay.record(*key, "down" if down else "up", text)
            if not self._mine(key[0]):
                self.relayed["out"] += 1
        if self._mine(key[0]):
            await self.handle(watch.check, _result(down, text))
        return watch.check

    async def relayed_beats(self, beats: list[Beat]) -> int:
        """Beats other pollers received: each check's last beat moves on; the owner applies
        them. Returns how many were applied here."""
        applied = 0
        for beat in beats:
            watch = self._by_key.get((beat.device, beat.check))
            if watch is None or beat.at <= watch.last:
                continue  # a check gone by a reload, or older than what this poller saw
            watch.last = beat.at
            watch.overdue = False
            if self._mine(beat.device):
                self.relayed["in"] += 1
                applied += 1
                await self.handle(watch.check, _result(beat.status == "down", beat.message))
        return applied

    def _mine(self, device: str) -> bool:
        return self.owned is None or device in self.owned

    async def expire(self, now: float | None = None) -> int:
        """Fail every check whose beat is overdue (once per silence). Returns how many."""
        now = self.clock() if now is None else now
        slack = self._slack()
        # Another poller's check is its owner's to fail (and this poller's once it owns it).
        late = [w for w in self._by_digest.values()
                if not w.overdue and now - w.last > w.deadline_after + slack
                and self._mine(w.check.device_id)]
        for w in late:
            w.overdue = True
            silent = now - w.last
            await self.handle(w.check, ProbeResult.failure(0.0, f"no heartbeat for {silent:.0f}s"))
        return len(late)

    def _slack(self) -> float:
        return 0.0 if self.relay is None else RELAY_SLACK

    def start(self, every: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(every))]
        if self.relay is not None:
            self._tasks.append(loop.create_task(self._relay_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.relay is not None:  # the last beats go with the store's final drain
            self.relay.flush()

    async def _relay_loop(self) -> None:
        assert self.relay is not None
        failures = self.read_failures
        while True:
            await asyncio.sleep(RELAY_EVERY)
            if not self._by_key:  # no push check (a reload may add some): nothing to read
                continue
            try:
                await self.relayed_beats(await self.relay.read())
            except Exception as exc:  # the database away: the next read catches up
                failures.failed(exc)
            else:
                failures.ok()

    def next_wait(self, most: float) -> float:
        """Seconds until the earliest deadline passes (at most ``most``: beats and reloads move
        deadlines), so a check fails right after ``expect_every + grace``, not up to a tick
        later."""
        now, slack = self.clock(), self._slack()
        pending = [w.last + w.deadline_after + slack - now for w in self._by_digest.values()
                   if not w.overdue and self._mine(w.check.device_id)]
        return min(max(min(pending, default=most) + 0.01, 0.01), most)

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(self.next_wait(every))
            try:
                await self.expire()
            except Exception:
                log.exception("heartbeat expiry failed")


def _result(down: bool, text: str) -> ProbeResult:
    if down:
        return ProbeResult.failure(0.0, f"reported down: {text}" if text else "reported down")
    return ProbeResult.success(0.0)
