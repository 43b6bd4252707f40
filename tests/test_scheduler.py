"""The scheduler with in-process probes and a manual clock: no sleeping through intervals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from monitor.scheduler import (
    DurationHistogram,
    ManualClock,
    ScheduledCheck,
    Scheduler,
    SystemClock,
    splay,
)
from probes.result import ProbeResult

Call = Callable[[], Awaitable[ProbeResult]]


class Recorder:
    """on_result that remembers (key, ok, error, started, finished)."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, str], bool, str | None, float, float]] = []

    def __call__(self, check: ScheduledCheck, result: ProbeResult, started: float,
                 finished: float) -> None:
        self.seen.append((check.key, result.ok, result.error, started, finished))

    def count(self, key: tuple[str, str]) -> int:
        return sum(1 for s in self.seen if s[0] == key)


async def ok() -> ProbeResult:
    return ProbeResult.success(0.0)


def check(device: str, name: str = "ping", call: Call = ok, kind: str = "mock",
          interval: float = 10.0, timeout: float = 5.0) -> ScheduledCheck:
    return ScheduledCheck((device, name), device, kind, interval, timeout, call)


class Gate:
    """A probe that waits for ``open`` and tracks how many calls are inside at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.inside = 0
        self.peak = 0
        self.cancelled = 0

    async def __call__(self) -> ProbeResult:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.inside -= 1
        return ProbeResult.success(0.0)


def test_splay_is_stable_and_spread() -> None:
    assert splay("kiosk-1f-03") == splay("kiosk-1f-03")
    fractions = [splay(f"dev-{i}") for i in range(1000)]
    assert all(0 <= f < 1 for f in fractions)
    # Roughly uniform: every tenth of the interval gets its share of first runs.
    deciles = [sum(1 for f in fractions if k / 10 <= f < (k + 1) / 10) for k in range(10)]
    assert min(deciles) > 60


async def test_run_once_runs_every_check_and_reports_times() -> None:
    rec = Recorder()
    sched = Scheduler([check("a"), check("b"), check("a", "snmp")], rec, clock=ManualClock())
    results = await sched.run_once()
    assert set(results) == {("a", "ping"), ("b", "ping"), ("a", "snmp")}
    assert all(r.ok for r in results.values())
    assert len(rec.seen) == 3 and all(s[3] <= s[4] for s in rec.seen)
    assert sched.stats.runs == {"mock": 3}


async def test_a_hung_probe_times_out_as_a_failure() -> None:
    gate = Gate()
    rec = Recorder()
    sched = Scheduler([check("a", call=gate, timeout=0.05)], rec)
    results = await sched.run_once()
    assert results[("a", "ping")].error == "timeout"
    assert sched.stats.timeouts == {"mock": 1} and gate.cancelled == 1


async def test_deadline_follows_the_injected_clock() -> None:
    clock = ManualClock()
    gate = Gate()
    rec = Recorder()
    sched = Scheduler([check("a", call=gate, interval=10, timeout=3)], rec, clock=clock)
    sched.start()
    await clock.advance(splay("a") * 10 + 2.9)  # the first run started and hangs
    assert gate.inside == 1 and rec.seen == []
    await clock.advance(0.1)  # its deadline passes: a "timeout" failure, and the loop goes on
    assert [s[1:3] for s in rec.seen] == [(False, "timeout")] and gate.cancelled == 1
    await sched.stop()


async def test_an_outside_cancel_is_not_a_timeout() -> None:
    gate = Gate()
    sched = Scheduler([check("a", call=gate, timeout=100)], Recorder(), clock=ManualClock())
    run = asyncio.create_task(sched.run_once())
    for _ in range(5):
        await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sched.stats.timeouts == {}


async def test_a_probe_that_raises_is_counted_and_the_loop_goes_on() -> None:
    calls = 0

    async def flaky() -> ProbeResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return ProbeResult.success(0.0)

    clock = ManualClock()
    rec = Recorder()
    sched = Scheduler([check("a", call=flaky)], rec, clock=clock)
    sched.start()
    await clock.advance(25)
    await sched.stop()
    assert [s[1:3] for s in rec.seen] == [
        (False, "probe error: RuntimeError: boom"), (True, None), (True, None)]
    assert sched.stats.probe_errors == {"mock": 1}


async def test_cadence_is_splayed_fixed_rate_and_never_bunched() -> None:
    clock = ManualClock()
    rec = Recorder()
    devices = [f"d{i}" for i in range(50)]
    sched = Scheduler([check(d, interval=10) for d in devices], rec, clock=clock)
    sched.start()
    await clock.advance(100)
    await sched.stop()
    assert {rec.count((d, "ping")) for d in devices} <= {10, 11}
    first = {}
    for key, *_rest, started, _ in rec.seen:
        first.setdefault(key, started)
    assert max(first.values()) - min(first.values()) > 5  # spread over the interval
    assert sched.stats.overdue_total == 0


async def test_kind_caps_and_one_poll_per_device_at_a_time() -> None:
    snmp, same_device = Gate(), Gate()
    checks = [check(f"d{i}", "snmp", snmp, kind="snmp") for i in range(6)]
    checks += [check("x", "one", same_device), check("x", "two", same_device)]
    sched = Scheduler(checks, Recorder(), caps={"snmp": 2})
    run = asyncio.create_task(sched.run_once())
    for _ in range(20):
        await asyncio.sleep(0)
    assert snmp.inside == 2 and same_device.inside == 1
    snmp.open.set()
    same_device.open.set()
    results = await run
    assert len(results) == 8 and snmp.peak == 2 and same_device.peak == 1


async def test_a_cancelled_waiter_does_not_wedge_its_device() -> None:
    gate = Gate()
    sched = Scheduler([check("x", "one", gate), check("x", "two")], Recorder(),
                      clock=ManualClock())
    first = asyncio.create_task(sched.recheck(("x", "one")))
    waiting = asyncio.create_task(sched.recheck(("x", "two")))
    for _ in range(5):
        await asyncio.sleep(0)
    waiting.cancel()  # gave up while queued behind "one"
    gate.open.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await sched.recheck("x"))[("x", "two")].ok  # the device is free again


async def test_a_cancelled_wait_for_a_kind_cap_gives_nothing_away_and_wedges_nothing() -> None:
    """A run waiting for a place under its kind's cap is cancelled (a reload, a stop) and a
    place is released before its task sees the cancel: the release skips it, the place stays
    free, and the cancel is a cancel (not an error from the waiter's own clean-up)."""
    from monitor.scheduler import _Cap

    cap = _Cap(1)
    assert cap.try_take()
    waiting = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)  # queued for a place
    handed = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)
    waiting.cancel()  # its future is cancelled now; its task runs the clean-up later
    cap.release()  # skips the cancelled waiter: the place goes to the next one
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await handed
    assert cap.free == 0 and not cap.try_take()
    cap.release()
    assert cap.free == 1 and cap.try_take()


async def test_a_run_that_cannot_start_on_time_is_counted_overdue() -> None:
    clock = ManualClock()
    gate = Gate()
    rec = Recorder()
    # Two checks of one device: "slow" holds the device lock past the other's due time.
    sched = Scheduler([check("a", "slow", gate, interval=10, timeout=100),
                       check("a", "fast", interval=10)], rec, clock=clock)
    sched.start()
    await clock.advance(10)  # both were due: "slow" got the lock first and hangs
    assert rec.seen == []
    await clock.advance(25)
    gate.open.set()
    await clock.advance(0.001)
    await sched.stop()
    # "fast" ran once, 25+ s late; "slow"'s next run was due at 20 and ran late too. Both are
    # counted, both ran once, and both re-anchored (no burst of catch-up runs).
    assert (rec.count(("a", "fast")), rec.count(("a", "slow"))) == (1, 2)
    assert sched.stats.overdue_total == 2


async def test_recheck_runs_now_and_requests_coalesce() -> None:
    rec = Recorder()
    sched = Scheduler([check("a"), check("a", "snmp"), check("b")], rec, clock=ManualClock())
    got = await sched.recheck("a")
    assert set(got) == {("a", "ping"), ("a", "snmp")}
    assert set(await sched.recheck(("b", "ping"))) == {("b", "ping")}
    with pytest.raises(KeyError):
        await sched.recheck("nope")
    rec.seen.clear()
    sched.request_recheck("b")
    sched.request_recheck("b")  # already pending: coalesced
    for _ in range(10):
        await asyncio.sleep(0)
    assert rec.count(("b", "ping")) == 1
    await sched.stop()


async def test_replace_keeps_timing_stops_removed_starts_new() -> None:
    clock = ManualClock()
    rec = Recorder()
    sched = Scheduler([check("keep"), check("gone")], rec, clock=clock)
    sched.start()
    await clock.advance(10)
    due_before = sched._slots[("keep", "ping")].due
    sched.replace([check("keep", timeout=2.0), check("new")])
    assert sched._slots[("keep", "ping")].due == due_before
    assert sched.checks[("keep", "ping")].timeout == 2.0
    rec.seen.clear()
    await clock.advance(20)
    await sched.stop()
    assert rec.count(("gone", "ping")) == 0
    assert rec.count(("keep", "ping")) == 2 and rec.count(("new", "ping")) == 2


async def test_stop_cancels_in_flight_probes() -> None:
    gate = Gate()
    clock = ManualClock()
    sched = Scheduler([check("a", call=gate, timeout=100)], Recorder(), clock=clock)
    sched.start()
    await clock.advance(10)
    assert gate.inside == 1
    await sched.stop()
    assert gate.cancelled == 1 and not sched.running


async def test_async_handler_and_handler_errors_do_not_stop_polling() -> None:
    clock = ManualClock()
    seen: list[bool] = []

    async def handler(c: ScheduledCheck, r: ProbeResult, s: float, f: float) -> None:
        await asyncio.sleep(0)
        seen.append(r.ok)
        if len(seen) == 1:
            raise ValueError("bug in the pipeline")

    sched = Scheduler([check("a")], handler, clock=clock)
    sched.start()
    await clock.advance(25)
    await sched.stop()
    assert seen == [True, True, True] and sched.stats.handler_errors == 1


@pytest.mark.parametrize(("seconds", "bucket"), [(0.001, 0), (0.0011, 1), (10.0, 12), (11, 13)])
def test_duration_buckets_are_le(seconds: float, bucket: int) -> None:
    h = DurationHistogram()
    h.observe(seconds)
    assert h.counts[bucket] == 1 and h.sum == seconds


async def test_replace_with_a_new_interval_rephases_the_check() -> None:
    clock = ManualClock()
    rec = Recorder()
    sched = Scheduler([check("a", interval=10)], rec, clock=clock)
    sched.start()
    await clock.advance(10)
    sched.replace([check("a", interval=60)])
    rec.seen.clear()
    await clock.advance(120)
    await sched.stop()
    assert rec.count(("a", "ping")) == 2


async def test_system_clock_queue_wakes_in_order_and_honours_cancels() -> None:
    # Real time, but milliseconds: the one test of the production timer queue itself.
    clock = SystemClock()
    woke: list[int] = []
    fired: list[str] = []

    async def sleeper(n: int, delay: float) -> None:
        await clock.sleep_until(clock.monotonic() + delay)
        woke.append(n)

    tasks = [asyncio.create_task(sleeper(n, 0.004 * (4 - n))) for n in range(4)]
    doomed = asyncio.create_task(sleeper(9, 0.005))
    clock.call_at(clock.monotonic() + 0.006, lambda: fired.append("kept"))
    clock.call_at(clock.monotonic() + 0.002, lambda: fired.append("cancelled")).cancel()
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.01)
    assert woke == [3, 2, 1, 0] and fired == ["kept"] and doomed.cancelled()


async def test_every_first_run_falls_inside_the_first_window() -> None:
    """Issue 10, point 7: the shipped classes' 5-minute checks were splayed over 5 minutes, so
    readiness (every check run once) took up to 5 minutes. Now every first run falls inside the
    defaults' interval (30 s), after start and after a reload, and then keeps its own cadence."""
    clock = ManualClock()
    rec = Recorder()
    devices = [f"d{i}" for i in range(40)]
    checks = [check(d, "ping", interval=30) for d in devices]
    checks += [check(d, "snmp", interval=300) for d in devices]
    sched = Scheduler(checks, rec, clock=clock, first_window=30)
    t0 = clock.time()
    sched.start()
    await clock.advance(30)
    first: dict[tuple[str, str], float] = {}
    for key, *_rest, started, _ in rec.seen:
        first.setdefault(key, started)
    assert set(first) == {c.key for c in checks}  # all ran within the window
    assert max(first.values()) - t0 < 30 and max(first.values()) - min(first.values()) > 15
    for d in devices:  # one burst per device: its checks share the phase
        assert first[(d, "snmp")] == pytest.approx(first[(d, "ping")], abs=0.01)

    # Reload 100 s later with a new 5-minute check: it too runs within 30 s.
    await clock.advance(70)
    sched.replace([*checks, check("new", "snmp", interval=300)])
    reloaded = clock.time()
    await clock.advance(30)
    assert [s[3] for s in rec.seen if s[0] == ("new", "snmp")][0] - reloaded < 30

    # Then each check keeps its own interval: the 5-minute checks ran once more by 330 s.
    await clock.advance(230)
    await sched.stop()
    assert {rec.count((d, "snmp")) for d in devices} == {2}
    assert {rec.count((d, "ping")) for d in devices} <= {11, 12}
    assert sched.stats.overdue_total == 0


def test_first_window_keeps_the_phase_across_restarts() -> None:
    a = Scheduler([check("cam-1f-01", "rtsp", interval=300)], Recorder(), clock=ManualClock(),
                  first_window=30)
    b = Scheduler([check("cam-1f-01", "rtsp", interval=300)], Recorder(), clock=ManualClock(),
                  first_window=30)
    due = a._slots[("cam-1f-01", "rtsp")].due - a._base
    assert due == b._slots[("cam-1f-01", "rtsp")].due - b._base
    assert due == pytest.approx(splay("cam-1f-01") * 30)


async def test_wake_grid_starts_runs_together_never_later_than_due() -> None:
    """Issue 12: the daemon's runs wake on a grid (rounded down), so the checks due within one
    step start in one wake-up and their ICMP probes go out as one batch; the cadence is kept."""
    devices = [f"d{i}" for i in range(200)]

    async def starts(grid: float) -> tuple[dict[tuple[str, str], list[float]], Scheduler]:
        clock = ManualClock()
        rec = Recorder()
        sched = Scheduler([check(d, interval=30) for d in devices], rec, clock=clock,
                          wake_grid=grid)
        sched.start()
        await clock.advance(300)
        await sched.stop()
        out: dict[tuple[str, str], list[float]] = {}
        for key, _ok, _err, started, _ in rec.seen:
            out.setdefault(key, []).append(started - clock.time() + clock.monotonic())
        return out, sched

    exact, _ = await starts(0.0)
    gridded, sched = await starts(0.25)
    assert sched.stats.overdue_total == 0
    assert gridded.keys() == exact.keys()
    wakeups = set()
    for key, runs in exact.items():
        assert len(gridded[key]) - len(runs) in (0, 1)  # a run due just after the end: early
        for due, got in zip(runs, gridded[key], strict=False):
            assert got == pytest.approx(due - due % 0.25, abs=1e-6)  # rounded down, never late
            wakeups.add(round(got, 3))
    assert len(wakeups) <= 300 / 0.25  # at most one wake-up per grid step


async def test_wake_grid_is_at_most_a_hundredth_of_the_interval() -> None:
    clock = ManualClock()
    rec = Recorder()
    sched = Scheduler([check("d1", interval=1.0)], rec, clock=clock, wake_grid=0.25)
    sched.start()
    await clock.advance(5)
    await sched.stop()
    base = clock.time() - clock.monotonic()
    starts = [started - base for *_rest, started, _ in rec.seen]
    due = 1_000_000.0 + splay("d1") * 1.0
    assert starts[0] == pytest.approx(due - due % 0.01, abs=1e-6)  # a 10 ms step, not 250 ms
    assert sched.stats.overdue_total == 0
