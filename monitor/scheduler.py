"""Runs every check on its own cadence and hands each result to ``on_result``.

Knows nothing of state or alerts. Design (and why):

- One timer per wake-up time in the clock's queue (a heap of due times), holding the list of
  checks it wakes, and a task only while a run is in flight: each check's timing stays
  independent (a slow SNMP walk never delays a ping), and the next run is armed when the
  previous one ends. One sleeping task per check held
  ~9 MB at 10,000 devices (task, coroutine, frame, weakref; bench/memory.py).
- First runs are splayed by a stable hash of the device id over ``first_window`` (the
  inventory defaults' interval) or the check's own interval if shorter, so a restart keeps each
  device's phase and 10k devices never fire in one burst, yet every check has run once within
  ``first_window`` of start or reload: readiness and every device's status do not wait for a
  5-minute check's own phase (the shipped hall was ready only after ~5 min). The checks of one
  device share that phase and run back to back under the device's lock (one burst per device).
- Fixed-rate cadence: the next run is due one interval after the previous *due* time, so
  timing does not drift by the probe's duration.
- A run that starts (after waiting for its device lock and kind cap) more than ``late_grace``
  of its interval past its due time is counted in ``stats.overdue_total`` and the cadence
  re-anchors on its real start: late runs are counted, never skipped, never bunched.
- ``wake_grid`` (the daemon: 0.25 s, at most 1 % of the interval): a run wakes at its due time
  rounded *down* to the grid, so the checks due within one grid step start in one event-loop
  wake-up and their ICMP probes go out as one batch (one send loop, one timer, replies drained
  together). Measured at 10k devices, 30 s: one wake-up per check (~2,000/s with the probe's
  packet rounds and replies) was the daemon's largest cost. A run never starts late because of
  it, at most one grid step early; the cadence (``due``) is unchanged.
- Batched kinds (ICMP): a check whose call has a ``batch`` runner (monitor/checks.py) does not
  get a task of its own. Every such check woken in one wake-up (whose device is free, and whose
  kind's cap has room: a batched check holds a place under the cap from wake-up until its result
  is in) joins one ``_Batch``: one runner call for all of them (the ICMP engine sends
  them as one sweep per config), one task that applies their results in arrival order, one
  deadline timer per distinct timeout. Per check it keeps what a run of its own has: the device's
  turn from wake-up to applied result, its own timeout and config, overdue accounting,
  fixed-rate re-arming. Measured at 10k ICMP checks: a task, a future and their callbacks per
  check cost as much CPU as the whole ICMP sweep (bench/icmp_sweep.py). A check whose device is
  busy, or whose kind's cap is full, runs on its own as before (and waits for its turn and a
  place). (The inventory caps ICMP at 10,000 by default: before the cap counted batched checks,
  any cap sent every ICMP check down the task path and the daemon never batched.)
- Every call runs under a deadline of ``check.timeout`` (``asyncio.timeout`` semantics, timer
  in the clock's queue); a timeout is the failure
  "timeout"; an unexpected exception is logged, counted per kind and becomes the failure
  "probe error: ..." — the loop goes on.
- Order of waiting: device lock first, then the kind's cap, so a check waiting for its
  device never holds a scarce probe slot. ``on_result`` runs under the device lock (results
  of one device are applied in order) but after the cap is released.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from heapq import heappop, heappush
from typing import Any, Protocol

from probes.result import ProbeResult

log = logging.getLogger("hallmon.scheduler")

Key = tuple[str, str]  # (device_id, check name)
# Default caps per probe kind. SNMP: more than ~100 requests in flight overflow the client
# socket's receive buffer and replies are lost silently (docs/field-notes.md, SNMP). Other kinds are
# uncapped unless configured.
DEFAULT_CAPS: Mapping[str, int] = {"snmp": 100}
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


@dataclass(frozen=True, slots=True)
class ScheduledCheck:
    key: Key
    device_id: str
    kind: str
    interval: float
    timeout: float
    call: Callable[[], Awaitable[ProbeResult]] = field(compare=False)
    context: Any = field(default=None, compare=False)  # whatever on_result needs back


# on_result(check, result, started, finished): started/finished are wall-clock seconds.
OnResult = Callable[[ScheduledCheck, ProbeResult, float, float], Awaitable[None] | None]


class Withdrawable(Protocol):
    def withdraw(self, index: int) -> None: ...  # no more work and no result for ``index``


# ``call.batch(calls, deliver)``: start every call at once; ``deliver(index, result)`` once per
# call, never from inside ``batch`` itself; the handle withdraws a call (its deadline passed).
BatchRunner = Callable[[Sequence[Any], Callable[[int, ProbeResult], None]], Withdrawable]


class Timer:
    """A cancellable callback in a clock's timer queue (cancel is O(1): lazy deletion)."""

    __slots__ = ("callback", "cancelled", "fired")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock(Protocol):
    def time(self) -> float: ...  # wall clock: timestamps handed to on_result
    def monotonic(self) -> float: ...  # schedule and deadlines
    async def sleep_until(self, deadline: float) -> None: ...  # a monotonic deadline
    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer: ...


# Timers due within this much of each other fire together: one event-loop wake-up (and one
# epoll call) per batch instead of per check. Runs start at most this much early.
_BATCH = 0.002

_Entry = tuple[float, int, "asyncio.Future[None] | Timer"]


class _TimerQueue:
    """Sleepers and timers in one heap of C-comparable tuples.

    10k loops each sleeping with ``asyncio.sleep`` (and each probe deadline an
    ``asyncio.timeout``) keep 10k+ TimerHandles in the event loop's heap, whose comparisons
    run in Python: measured at more CPU per check than everything else together.
    """

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = 0

    def _push(self, deadline: float, item: asyncio.Future[None] | Timer) -> None:
        self._seq += 1
        heappush(self._heap, (deadline, self._seq, item))

    def _pop_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            item = heappop(heap)[2]
            if isinstance(item, Timer):
                if not item.cancelled:
                    item.fired = True
                    item.callback()
            elif not item.done():
                item.set_result(None)


class SystemClock(_TimerQueue):
    """Real time; one event-loop timer armed for the earliest entry of the queue."""

    def __init__(self) -> None:
        super().__init__()
        self._timer: asyncio.TimerHandle | None = None
        self._next = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()  # what the default event loop's time() is

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): forget the old one's timers
            self._loop, self._heap, self._timer, self._next = loop, [], None, math.inf
        return loop

    async def sleep_until(self, deadline: float) -> None:
        loop = self._bind()
        if deadline <= loop.time():
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._schedule(loop, deadline, fut)
        await fut  # a cancelled sleeper leaves a done future behind: _pop_due skips it

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(callback)
        self._schedule(self._bind(), deadline, timer)
        return timer

    def _schedule(self, loop: asyncio.AbstractEventLoop, deadline: float,
                  item: asyncio.Future[None] | Timer) -> None:
        self._push(deadline, item)
        if deadline < self._next:
            if self._timer is not None:
                self._timer.cancel()
            self._next = deadline
            self._timer = loop.call_at(deadline, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._next = None, math.inf
        self._pop_due(loop.time() + _BATCH)
        if self._heap:
            self._next = self._heap[0][0]
            self._timer = loop.call_at(self._next, self._fire, loop)


class ManualClock(_TimerQueue):
    """A clock that moves only when told (tests, simulations): ``await clock.advance(30)``
    fires every sleeper and timer due by then, in order, letting woken tasks run to their next
    wait. Probe deadlines follow it too, so timeouts are tested without waiting."""

    def __init__(self, start: float = 1_000_000.0, wall_offset: float = 1_700_000_000.0) -> None:
        super().__init__()
        self._now = start
        self._wall = wall_offset

    def time(self) -> float:
        return self._wall + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push(deadline, fut)
        await fut

    def call_at(self, deadline: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(callback)
        self._push(deadline, timer)
        return timer

    async def advance(self, seconds: float, settle: int = 20) -> None:
        target = self._now + seconds
        await _settle(settle)  # tasks started just before get to their first wait
        while self._heap and self._heap[0][0] <= target:
            self._now = max(self._now, self._heap[0][0])
            self._pop_due(self._now)
            await _settle(settle)
        self._now = target
        await _settle(settle)


async def _settle(rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass(slots=True)
class DurationHistogram:
    """Plain-data histogram (the metrics collector renders it): ``counts`` per bucket,
    non-cumulative, the last one for +Inf."""

    bounds: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # buckets are "le"
        self.sum += seconds


@dataclass(slots=True)
class SchedulerStats:
    runs: dict[str, int] = field(default_factory=dict)  # by kind
    timeouts: dict[str, int] = field(default_factory=dict)
    probe_errors: dict[str, int] = field(default_factory=dict)  # unexpected exceptions
    handler_errors: int = 0  # on_result raised
    overdue_total: int = 0
    batches: int = 0  # batched runs (one per wake-up and batch runner) ...
    batched: int = 0  # ... and the checks they carried
    durations: dict[str, DurationHistogram] = field(default_factory=dict)


@dataclass(slots=True)
class _Slot:
    check: ScheduledCheck
    due: float
    task: asyncio.Task[None] | None = None  # the run in flight, if any
    wake_at: float | None = None  # the wake-up of the next run, while none is in flight
    batch: _Batch | None = None  # the batch its run is in, if any ...
    index: int = 0  # ... and its place there


# A wake grid step is at most this share of a check's interval (1 s checks: 10 ms).
_GRID_SHARE = 0.01


def splay(device_id: str) -> float:
    """Stable fraction in [0, 1) for a device: the same phase across restarts and hosts."""
    digest = hashlib.blake2b(device_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Scheduler:
    def __init__(
        self,
        checks: Iterable[ScheduledCheck],
        on_result: OnResult,
        *,
        caps: Mapping[str, int] | None = None,
        clock: Clock | None = None,
        late_grace: float = 0.1,
        first_window: float | None = None,
        wake_grid: float = 0.0,
    ) -> None:
        self.on_result = on_result
        self.first_window = first_window  # every first run falls inside it (None: own interval)
        self.clock: Clock = clock or SystemClock()
        self.late_grace = late_grace  # share of the interval a run may start late unflagged
        self.wake_grid = wake_grid  # seconds; 0 wakes each run at its own due time
        self.stats = SchedulerStats()
        self._caps = dict(DEFAULT_CAPS if caps is None else caps)
        # asyncio primitives bind to a loop only when first awaited (3.10+): safe to make here.
        self._sems = {kind: _Cap(n) for kind, n in self._caps.items()}
        self._busy: set[str] = set()  # devices being polled
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._base = self.clock.monotonic()
        self._slots: dict[Key, _Slot] = {}
        self._extra: set[asyncio.Task[Any]] = set()
        self._gathering: dict[BatchRunner, _Batch] = {}  # batches filling in this wake-up
        # Wake-up time -> the slots it wakes and its one timer: with the wake grid, ~120
        # timers per 30 s cycle instead of one per check (a Timer, a heap push and pop each).
        self._wheel: dict[float, tuple[list[_Slot], Timer]] = {}
        self._batches: set[_Batch] = set()  # every batch not finished
        self._rechecking: set[Key] = set()
        self._running = False
        for c in checks:
            self._slots[c.key] = _Slot(c, self._first_due(c))

    # -- public ---------------------------------------------------------------------------------

    @property
    def checks(self) -> dict[Key, ScheduledCheck]:
        return {k: s.check for k, s in self._slots.items()}

    def places_free(self, kind: str) -> int | None:
        """Places left under ``kind``'s cap on checks in flight (None: the kind has no cap)."""
        cap = self._sems.get(kind)
        return None if cap is None else cap.free

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Arm every check's first run (inside a running event loop)."""
        self._running = True
        for slot in self._slots.values():
            self._arm(slot)

    async def stop(self) -> None:
        """Cancel every timer and in-flight probe and wait for them to finish."""
        self._running = False
        tasks = [s.task for s in self._slots.values() if s.task] + list(self._extra)
        for batch in list(self._batches):
            batch.release()
            tasks.append(batch.task)
        self._batches.clear()
        self._gathering.clear()
        for s in self._slots.values():
            self._disarm(s)
        for _, timer in self._wheel.values():
            timer.cancel()
        self._wheel.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._extra.clear()
        self._rechecking.clear()

    def replace(self, checks: Iterable[ScheduledCheck]) -> list[asyncio.Task[Any]]:
        """Reload: unchanged checks keep their timing, changed intervals re-phase, removed
        checks stop (an in-flight probe of a removed check is cancelled). Returns the tasks it
        cancelled (they finish on the loop's next turns)."""
        cancelled: list[asyncio.Task[Any]] = []
        new = {c.key: c for c in checks}
        for key in [k for k in self._slots if k not in new]:
            gone = self._slots.pop(key)
            if gone.batch is not None:
                gone.batch.withdraw(gone)
            if gone.task:
                gone.task.cancel()
                cancelled.append(gone.task)
            self._disarm(gone)
        for key, c in new.items():
            slot = self._slots.get(key)
            if slot is None:
                added = self._slots[key] = _Slot(c, self._first_due(c))
                if self._running:
                    self._arm(added)
            elif slot.check.interval != c.interval:
                if slot.batch is not None:
                    slot.batch.withdraw(slot)
                if slot.task:
                    slot.task.cancel()
                    cancelled.append(slot.task)
                self._disarm(slot)
                slot.check, slot.due = c, self._first_due(c)
                if self._running:
                    self._arm(slot)
            else:
                slot.check = c  # the next run picks the new call/timeout up
        return cancelled

    async def run_once(self) -> dict[Key, ProbeResult]:
        """Run every check once now (tests, ``hallmon probe``, the first cycle)."""
        checks = [s.check for s in self._slots.values()]
        results = await asyncio.gather(*(self._run(c, None) for c in checks))
        return {c.key: r for c, (_, r) in zip(checks, results, strict=True)}

    async def recheck(self, target: str | Key) -> dict[Key, ProbeResult]:
        """Run one check (a key) or all checks of one device (an id) now; KeyError if unknown."""
        checks = self._select(target)
        results = await asyncio.gather(*(self._run(c, None) for c in checks))
        return {c.key: r for c, (_, r) in zip(checks, results, strict=True)}

    def request_recheck(self, target: str | Key) -> None:
        """Fire-and-forget ``recheck`` (from on_result, say); repeated requests coalesce."""
        for check in self._select(target):
            if check.key in self._rechecking:
                continue
            self._rechecking.add(check.key)
            task = asyncio.get_running_loop().create_task(self._recheck_one(check))
            self._extra.add(task)
            task.add_done_callback(self._extra.discard)

    # -- internals ------------------------------------------------------------------------------

    def _select(self, target: str | Key) -> list[ScheduledCheck]:
        if isinstance(target, tuple):
            return [self._slots[target].check]
        found = [s.check for s in self._slots.values() if s.check.device_id == target]
        if not found:
            raise KeyError(target)
        return found

    async def _recheck_one(self, check: ScheduledCheck) -> None:
        try:
            await self._run(check, None)
        finally:
            self._rechecking.discard(check.key)

    def _first_due(self, check: ScheduledCheck) -> float:
        """The next time on this device's stable phase, at or after now: within the first
        window (or the check's own interval if shorter), whatever the check's own interval."""
        now = self.clock.monotonic()
        window = check.interval
        if self.first_window is not None and 0 < self.first_window < window:
            window = self.first_window
        offset = splay(check.device_id) * window
        return now + (offset - (now - self._base)) % window

    def _arm(self, slot: _Slot) -> None:
        """Wake ``slot``'s next run at its due time rounded *down* to the grid (the runs due
        within one step share a wake-up); a run already due starts now."""
        grid = min(self.wake_grid, slot.check.interval * _GRID_SHARE)
        wake = slot.due - slot.due % grid if grid > 0 else slot.due
        if wake <= self.clock.monotonic():
            self._wake(slot)
            return
        slot.wake_at = wake
        entry = self._wheel.get(wake)
        if entry is None:
            entry = self._wheel[wake] = ([], self.clock.call_at(wake, partial(self._ring, wake)))
        entry[0].append(slot)

    def _ring(self, wake: float) -> None:
        """Wake every slot still armed for ``wake`` (a disarmed slot is skipped: lazy removal;
        one re-armed for the same time is listed twice and woken once)."""
        entry = self._wheel.pop(wake, None)
        for slot in entry[0] if entry is not None else ():
            if slot.wake_at == wake:
                self._wake(slot)

    def _disarm(self, slot: _Slot) -> None:
        slot.wake_at = None
        slot.task = None

    def _wake(self, slot: _Slot) -> None:
        slot.wake_at = None
        if not self._running:
            return  # stopped (a reload disarms the slots it removes: never woken)
        check = slot.check
        runner: BatchRunner | None = getattr(check.call, "batch", None)
        if runner is not None and check.device_id not in self._busy:
            cap = self._sems.get(check.kind)
            if cap is None or cap.try_take():  # a place under the kind's cap, until delivered
                self._busy.add(check.device_id)  # its device's turn, held until its result is in
                batch = self._gathering.get(runner)
                if batch is None:
                    batch = self._gathering[runner] = _Batch(self, runner)
                batch.add(slot, cap)
                return
        slot.task = asyncio.get_running_loop().create_task(
            self._run_slot(slot), name=f"check {check.key[0]}/{check.key[1]}"
        )

    async def _run_slot(self, slot: _Slot) -> None:
        """One scheduled run, then the next one armed (fixed rate: one interval after the
        previous due time; re-anchored on the real start when it began late)."""
        started, _ = await self._run(slot.check, slot.due)
        if slot.task is not asyncio.current_task():
            return  # a reload re-phased or removed the check meanwhile
        slot.task = None
        self._rearm(slot, started)

    def _rearm(self, slot: _Slot, started: float) -> None:
        if started - slot.due > self.late_grace * slot.check.interval:
            slot.due = started  # counted as overdue; re-anchor instead of bunching
        slot.due += slot.check.interval
        if self._running:
            self._arm(slot)

    async def _run(self, check: ScheduledCheck, due: float | None) -> tuple[float, ProbeResult]:
        """One poll under the device lock and the kind's cap: its monotonic start, its result.
        (Written flat on purpose: this runs 10k times per cycle, see bench/core_overhead.py.)"""
        device = check.device_id
        if device in self._busy:
            await self._wait_turn(device)
        else:
            self._busy.add(device)
        clock = self.clock
        try:
            sem = self._sems.get(check.kind)
            if sem is not None:
                await sem.acquire()
            try:
                start = clock.monotonic()
                if due is not None and start - due > self.late_grace * check.interval:
                    self.stats.overdue_total += 1
                    log.debug("check %s/%s started %.3fs late", *check.key, start - due)
                started = clock.time()
                result = await self._call(check, start)
            finally:
                if sem is not None:
                    sem.release()
            elapsed = clock.monotonic() - start
            self._record(check.kind, elapsed)
            try:
                ret = self.on_result(check, result, started, started + elapsed)
                if ret is not None:
                    await ret
            except Exception:  # a handler bug must not stop polling
                self.stats.handler_errors += 1
                log.exception("on_result failed for %s/%s", *check.key)
        finally:
            self._next_turn(device)
        return start, result

    # A per-device lock, cheaper than 10k asyncio.Locks on the hot path: a set of busy devices
    # and, only when contended, a queue of futures handed the turn in FIFO order.

    async def _wait_turn(self, device: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(device, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._next_turn(device)  # we were handed the turn: pass it on
            else:
                queue = self._waiters.get(device)
                if queue is not None and fut in queue:
                    queue.remove(fut)
            raise

    def _next_turn(self, device: str) -> None:
        queue = self._waiters.get(device)
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)  # the device stays busy: the turn moves to that waiter
                return
        self._waiters.pop(device, None)
        self._busy.discard(device)

    async def _call(self, check: ScheduledCheck, start: float) -> ProbeResult:
        """The probe call under its deadline. Same semantics as ``asyncio.timeout`` (our own
        cancel becomes "timeout", anyone else's cancel propagates), but the deadline lives in
        the clock's queue: cheaper at 10k checks, and driven by a ManualClock in tests."""
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        timer = self.clock.call_at(start + check.timeout, task.cancel)
        try:
            result = await check.call()
        except asyncio.CancelledError:
            if timer.fired and task.uncancel() <= cancelling:
                _bump(self.stats.timeouts, check.kind)
                return ProbeResult.failure(self.clock.monotonic() - start, "timeout")
            raise
        except Exception as exc:  # one bad probe must not stop the loop
            _bump(self.stats.probe_errors, check.kind)
            log.warning("probe %s/%s raised", *check.key, exc_info=True)
            reason = f"probe error: {type(exc).__name__}: {exc}"[:200]
            return ProbeResult.failure(self.clock.monotonic() - start, reason)
        finally:
            timer.cancel()
        if timer.fired:  # the probe swallowed our cancel and returned anyway: undo the request
            task.uncancel()
        return result

    def _record(self, kind: str, seconds: float) -> None:
        _bump(self.stats.runs, kind)
        hist = self.stats.durations.get(kind)
        if hist is None:
            hist = self.stats.durations[kind] = DurationHistogram()
        hist.observe(seconds)


class _Cap:
    """A kind's cap on checks in flight: an ``asyncio.Semaphore`` that can also be taken
    without waiting (a batched check takes its place at wake-up, in a plain callback). FIFO: a
    try never overtakes a run already waiting."""

    __slots__ = ("free", "_waiters")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # handed a place by release()
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a place while being cancelled: pass it on
            elif fut in self._waiters:  # (a release meanwhile may have skipped and dropped it)
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the place moves to that waiter
                return
        self.free += 1


class _Batch:
    """The batched checks woken together (see the module's doc): one runner call, one task.

    ``slots[i]`` is None once check ``i``'s result is applied or it was withdrawn;
    ``results[i]`` is its result once delivered (queued in ``ready`` by index until applied);
    ``open`` counts the checks whose device turn is still held."""

    __slots__ = ("owner", "runner", "slots", "checks", "caps", "results", "times", "open",
                 "ready", "wake", "handle", "start", "task", "now")

    def __init__(self, owner: Scheduler, runner: BatchRunner) -> None:
        self.owner = owner
        self.runner = runner
        self.now = owner.clock.monotonic
        self.slots: list[_Slot | None] = []
        self.checks: list[ScheduledCheck] = []
        self.caps: list[_Cap | None] = []  # the cap each check holds a place under, until
        # its result is delivered or it is withdrawn (then None)
        self.results: list[ProbeResult | None] = []
        self.times: list[float] = []  # monotonic time each result came in
        self.open = 0
        self.ready: deque[int] = deque()
        self.wake: asyncio.Future[None] | None = None
        self.handle: Withdrawable | None = None
        self.start = 0.0
        # Its first step runs after every wake-up of this loop iteration: they all join.
        self.task = asyncio.get_running_loop().create_task(self._run(), name="check batch")
        owner._batches.add(self)

    def add(self, slot: _Slot, cap: _Cap | None) -> None:
        slot.batch, slot.index = self, len(self.slots)
        self.slots.append(slot)
        self.checks.append(slot.check)
        self.caps.append(cap)
        self.open += 1

    def _free(self, index: int) -> None:
        """Check ``index`` is no longer in flight: give its place under the cap back (once)."""
        cap = self.caps[index]
        if cap is not None:
            self.caps[index] = None
            cap.release()

    async def _run(self) -> None:
        owner = self.owner
        if owner._gathering.get(self.runner) is self:
            del owner._gathering[self.runner]  # later wake-ups start a new batch
        if self.open < len(self.slots):  # some were withdrawn (reload) before the start
            kept = [(s, c, cap) for s, c, cap in zip(self.slots, self.checks, self.caps,
                                                      strict=True) if s is not None]
            self.slots, self.checks = [s for s, _, _ in kept], [c for _, c, _ in kept]
            self.caps = [cap for _, _, cap in kept]
            for i, (s, _, _) in enumerate(kept):
                s.index = i
            if not kept:
                owner._batches.discard(self)
                return
        size = len(self.checks)
        self.results, self.times = [None] * size, [0.0] * size
        owner.stats.batches += 1
        owner.stats.batched += size
        clock = owner.clock
        start = self.start = clock.monotonic()
        started = clock.time()
        grace = owner.late_grace
        for check, slot in zip(self.checks, self.slots, strict=True):
            assert slot is not None
            if start - slot.due > grace * check.interval:
                owner.stats.overdue_total += 1
                log.debug("check %s/%s started %.3fs late", *check.key, start - slot.due)
        timers = [clock.call_at(start + t, partial(self._expire, t))
                  for t in {c.timeout for c in self.checks}]
        try:
            try:
                self.handle = self.runner([c.call for c in self.checks], self.deliver)
            except Exception as exc:  # a bug in the runner: every check fails, polling goes on
                log.warning("batch of %d checks raised", size, exc_info=True)
                reason = f"probe error: {type(exc).__name__}: {exc}"[:200]
                for i, check in enumerate(self.checks):
                    _bump(owner.stats.probe_errors, check.kind)
                    self.deliver(i, ProbeResult.failure(0.0, reason))
            await self._apply(started)
        finally:
            for timer in timers:
                timer.cancel()
            owner._batches.discard(self)
            self.release()

    def deliver(self, index: int, result: ProbeResult) -> None:
        """The runner's callback: queue the result for the batch's task (once per check)."""
        if self.slots[index] is None or self.results[index] is not None:
            return  # withdrawn, or timed out first
        self.results[index] = result
        self.times[index] = self.now()
        self._free(index)
        self.ready.append(index)
        wake = self.wake
        if wake is not None:
            self.wake = None
            if not wake.done():
                wake.set_result(None)

    async def _apply(self, started: float) -> None:
        """Results in arrival order, each as a run of its own would: duration, on_result under
        the device's turn, then the turn passed on and the next run armed."""
        owner = self.owner
        on_result, ready, start = owner.on_result, self.ready, self.start
        slots, checks, results, times = self.slots, self.checks, self.results, self.times
        runs, durations = owner.stats.runs, owner.stats.durations
        busy, waiters = owner._busy, owner._waiters
        kind, hist = "", DurationHistogram()
        while self.open > 0:
            if not ready:
                self.wake = asyncio.get_running_loop().create_future()
                await self.wake
                continue
            i = ready.popleft()
            slot, check, result = slots[i], checks[i], results[i]
            assert slot is not None and result is not None
            self.open -= 1
            elapsed = times[i] - start
            if check.kind != kind:  # _record, with the kind's histogram kept at hand
                kind = check.kind
                hist = durations.get(kind) or durations.setdefault(kind, DurationHistogram())
            runs[kind] = runs.get(kind, 0) + 1
            hist.observe(elapsed)
            try:
                ret = on_result(check, result, started, started + elapsed)
                if ret is not None:
                    await ret
            except Exception:  # a handler bug must not stop polling
                owner.stats.handler_errors += 1
                log.exception("on_result failed for %s/%s", *check.key)
            finally:
                slots[i] = None
                device = check.device_id
                if device in waiters:
                    owner._next_turn(device)
                else:  # nobody waits for this device: _next_turn's common case, inline
                    busy.discard(device)
            if slot.batch is self:  # not re-phased or removed by a reload meanwhile
                slot.batch = None
                owner._rearm(slot, start)

    def _expire(self, timeout: float) -> None:
        """The deadline of the checks with this timeout: withdraw the unanswered ones."""
        now = self.owner.clock.monotonic()
        results = self.results
        for i, slot in enumerate(self.slots):
            check = self.checks[i]
            if slot is not None and results[i] is None and check.timeout == timeout:
                if self.handle is not None:
                    self.handle.withdraw(i)
                _bump(self.owner.stats.timeouts, check.kind)
                self.deliver(i, ProbeResult.failure(now - self.start, "timeout"))

    def withdraw(self, slot: _Slot) -> None:
        """A reload removed or re-phased ``slot``'s check: no result applied, no re-arm."""
        if slot.batch is not self:
            return
        slot.batch = None
        i = slot.index
        if self.slots[i] is not slot or (self.results and self.results[i] is not None):
            return  # its result is queued: applied (device turn passed on), but not re-armed
        self.slots[i] = None
        self._free(i)
        if self.handle is not None:
            self.handle.withdraw(i)
        self.open -= 1
        self.owner._next_turn(self.checks[i].device_id)
        if self.open <= 0 and self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def release(self) -> None:
        """Stopped (or the task ended early): withdraw what is left, pass every turn on."""
        slots = self.slots
        while self.ready:  # delivered, not applied
            i = self.ready.popleft()
            slot, slots[i] = slots[i], None
            self.open -= 1
            if slot is not None and slot.batch is self:
                slot.batch = None
            self.owner._next_turn(self.checks[i].device_id)
        for slot in slots:
            if slot is not None:
                self.withdraw(slot)


def _bump(counts: dict[str, int], kind: str) -> None:
    counts[kind] = counts.get(kind, 0) + 1


__all__ = [
    "DEFAULT_CAPS",
    "DURATION_BUCKETS",
    "Clock",
    "DurationHistogram",
    "ManualClock",
    "OnResult",
    "ScheduledCheck",
    "Scheduler",
    "SchedulerStats",
    "SystemClock",
    "Timer",
    "splay",
]
