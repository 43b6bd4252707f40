"""Scheduler + state overhead per check at 10,000 devices, with a trivial in-process probe.

Budget (docs/architecture.md, issue 4): < 50 microseconds of CPU per check. Real clock, real loops:
10k devices under 50 switches, interval 2 s (15x the production rate, to get many runs in a
few seconds), on_result applies each result to HallState. Prints CPU per check (scheduler
alone, and scheduler + state), the share of one core a 30 s interval would cost, overdue runs
(late by more than 10% of the interval) and RSS.

    .venv/bin/python bench/core_overhead.py [--devices 10000] [--seconds 4] [--interval 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time

from _verdict import finish

from monitor.scheduler import ScheduledCheck, Scheduler
from monitor.state import CheckPolicy, DeviceSpec, HallState
from probes.result import ProbeResult

R = "ping"
_OK = ProbeResult.success(0.0001, {"rtt_avg_seconds": 0.0001, "loss_ratio": 0.0})


async def probe() -> ProbeResult:
    return _OK


def hall(n: int) -> tuple[list[DeviceSpec], list[str]]:
    policy = {R: CheckPolicy()}
    switches = [f"sw-{i:02d}" for i in range(50)]
    specs = [DeviceSpec(s, None, R, policy) for s in switches]
    specs += [DeviceSpec(f"dev-{i:05d}", switches[i % 50], R, policy) for i in range(n - 50)]
    return specs, [s.id for s in specs]


gc_cpu: list[float] = []
_gc_start = [0.0]


def _gc_watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_start[0] = time.process_time()
    else:
        gc_cpu.append(time.process_time() - _gc_start[0])


async def measure(devices: int, seconds: float, interval: float, with_state: bool,
                  freeze: bool) -> float:
    """CPU seconds per check over ``seconds`` of steady running (after one warm-up interval)."""
    specs, ids = hall(devices)
    state = HallState(specs)
    runs = 0

    def on_result(check: ScheduledCheck, result: ProbeResult, started: float,
                  finished: float) -> None:
        nonlocal runs
        runs += 1
        if with_state:
            state.apply(check.device_id, R, result.ok, result.error, finished, result.values)

    checks = [ScheduledCheck((d, R), d, "icmp", interval, interval / 2, probe) for d in ids]
    sched = Scheduler(checks, on_result)
    if with_state:
        c0, t0 = time.process_time(), time.perf_counter()
        await sched.run_once()  # the first cycle, as the daemon does it
        cpu = time.process_time() - c0
        print(f"  run_once: {runs} checks in {time.perf_counter() - t0:.3f}s wall, "
              f"{cpu / runs * 1e6:.1f} us CPU/check")
    sched.start()
    await asyncio.sleep(interval)  # every loop reaches its splayed phase
    if freeze:
        gc.freeze()  # what the daemon does after start-up: long-lived objects leave the GC's scans
    overdue0, runs = sched.stats.overdue_total, 0
    gc_cpu.clear()
    c0 = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - c0
    done, overdue = runs, sched.stats.overdue_total - overdue0
    await sched.stop()
    gc.unfreeze()
    print(f"  {'scheduler+state' if with_state else 'scheduler only '}: {done} checks, "
          f"{cpu / done * 1e6:.1f} us CPU/check, overdue {overdue}, "
          f"GC {sum(gc_cpu) * 1e3:.0f} ms in {len(gc_cpu)} collections")
    return cpu / done


def calibrate() -> float:
    """CPU seconds for a fixed pure-Python loop: how fast this Python on this machine is right
    now (other load on a 2-core box slows everything down; compare runs by this too)."""
    c0 = time.process_time()
    x = 0
    for i in range(5_000_000):
        x += i
    return time.process_time() - c0


async def main(devices: int, seconds: float, interval: float, repeat: int,
               freeze: bool) -> None:
    print(f"calibration: 5M-iteration Python loop = {calibrate():.3f}s CPU")
    print(f"devices={devices} interval={interval}s window={seconds}s repeat={repeat} "
          f"(best of; other load on the machine only adds)")
    gc.callbacks.append(_gc_watch)
    bare = min([await measure(devices, seconds, interval, False, freeze) for _ in range(repeat)])
    full = min([await measure(devices, seconds, interval, True, freeze) for _ in range(repeat)])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scheduler only:  {bare * 1e6:.1f} us CPU/check")
    print(f"scheduler+state: {full * 1e6:.1f} us CPU/check (budget 50 us); "
          f"at a 30 s interval {full * devices / 30 * 100:.2f}% of one core; "
          f"max RSS {rss_mb:.0f} MB")
    finish("core_overhead",
           {"devices": devices, "interval_s": interval, "scheduler_us_per_check": bare * 1e6,
            "scheduler_state_us_per_check": full * 1e6, "max_rss_mb": rss_mb},
           {"scheduler_state_at_most_50us_per_check": full <= 50e-6})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-freeze", dest="freeze", action="store_false",
                    help="skip gc.freeze() after start-up")
    ap.add_argument("--gc-threshold", type=int, default=50_000,
                    help="gen0 GC threshold (Python's default: 700; 0 keeps it)")
    a = ap.parse_args()
    if a.gc_threshold:
        # Each run allocates a few short-lived containers (futures, coroutines, states) that
        # outlive 700 allocations: at the default threshold GC was ~30% of the CPU per check.
        gc.set_threshold(a.gc_threshold, 20, 10)
    print(f"gc threshold {gc.get_threshold()}, freeze after start-up: {a.freeze}")
    asyncio.run(main(a.devices, a.seconds, a.interval, a.repeat, a.freeze))
