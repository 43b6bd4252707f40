"""Push heartbeats: devices that call us (``/api/v1/push/{token}``) instead of being polled.

A ``push`` check (:class:`~monitor.inventory.PushCheck`) expects a beat at least every
``expect_every``. A beat is a result (ok, or failed with ``status=down``) that enters through
``Pipeline.handle`` like a probe's; :meth:`Heartbeats.expire` turns a beat missing for
``expect_every + grace`` into one failed result (push checks fail and recover on one result:
the grace is the tolerance). Until the first beat after start-up the clock runs from start-up:
a kiosk that never calls goes DOWN after ``expect_every + grace``.

Tokens are secrets: kept only as SHA-256 digests here, never logged, compared by digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from monitor.inventory import Inventory, PushCheck, ResolvedCheck
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
        self._by_digest: dict[bytes, _Watch] = {}
        self._task: asyncio.Task[None] | None = None
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
        keys = {w.check.key for w in fresh.values()}
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
        if status is not None and status.lower() == "down":
            result = ProbeResult.failure(0.0, f"reported down: {text}" if text else
                                         "reported down")
        else:
            result = ProbeResult.success(0.0)
        await self.handle(watch.check, result)
        return watch.check

    async def expire(self, now: float | None = None) -> int:
        """Fail every check whose beat is overdue (once per silence). Returns how many."""
        now = self.clock() if now is None else now
        late = [w for w in self._by_digest.values()
                if not w.overdue and now - w.last > w.deadline_after]
        for w in late:
            w.overdue = True
            silent = now - w.last
            await self.handle(w.check, ProbeResult.failure(0.0, f"no heartbeat for {silent:.0f}s"))
        return len(late)

    def start(self, every: float = 1.0) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(every))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def next_wait(self, most: float) -> float:
        """Seconds until the earliest deadline passes (at most ``most``: beats and reloads move
        deadlines), so a check fails right after ``expect_every + grace``, not up to a tick
        later."""
        now = self.clock()
        pending = [w.last + w.deadline_after - now for w in self._by_digest.values()
                   if not w.overdue]
        return min(max(min(pending, default=most) + 0.01, 0.01), most)

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(self.next_wait(every))
            try:
                await self.expire()
            except Exception:
                log.exception("heartbeat expiry failed")
