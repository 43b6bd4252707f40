"""ICMP benchmark: the daemon's ICMP path against `fping -a -r0 -i0`, in the same run.

The headline drives the real ``Scheduler`` (SystemClock, the daemon's wake grid) with N ICMP
checks, each built as the daemon builds it (an Inventory of N loopback devices,
``monitor.checks.probe_call``, the ScheduledCheck fields of ``App.scheduled_checks``), all due
in one wake-up (first window ~0), and counts its second cycle: the steady state, woken by the
scheduler's timer wheel and re-arming every check for the next. Why the real Scheduler rather
than the batch function it calls: the per-check costs the daemon pays around the probe
(wake-up, device turn, deadline, result delivery, duration histogram, re-arming the next run)
are exactly what made the old probe()-per-task path 1.9x fping; measuring
``probes.icmp.submit`` alone would leave them out.
``on_result`` only counts (the state/pipeline are not fping's work; bench/daemon.py measures
the whole daemon). GC as the daemon sets it (monitor/app.py ``_settle_gc``).

1. 10,000 loopback addresses (127.10.x.y) answering, 1 packet, 1 s timeout: wall time, CPU,
   lost replies; best of 3, for the scheduler cycle (headline), for fping, and for information:
   10,000 concurrent probe() calls (the one-call API: a task per caller) and one sweep() (the
   engine alone). Budgets: scheduler-cycle CPU at most 1.2x fping's, nothing lost, every check
   in a batch (no task per check), no check late.
2. 5,000 silent hosts, same checks, one scheduler cycle inside a network namespace of our own
   whose loopback ignores echo (needs root + iproute2). Budget: every result in within the
   probe timeout + 10 % of the start.

Run: .venv/bin/python bench/icmp_sweep.py [--hosts 10000] [--silent 5000]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _verdict import finish  # noqa: E402

from monitor.app import WAKE_GRID_SECONDS  # noqa: E402
from monitor.checks import probe_call  # noqa: E402
from monitor.inventory import Inventory  # noqa: E402
from monitor.scheduler import ScheduledCheck, Scheduler  # noqa: E402
from probes import icmp  # noqa: E402
from probes.icmp import IcmpConfig  # noqa: E402
from probes.result import ProbeResult  # noqa: E402

ONE = IcmpConfig(packets=1, timeout=1.0)
# The checks' deadline: the probe's own timeout is 90 % of it, capped at 1 s (monitor/checks.py),
# so every check below probes with ONE's figures.
CHECK_TIMEOUT = "2s"
CHECK_INTERVAL = "3s"  # the daemon runs 30 s; a short one lets the bench time a second cycle


def addresses(count: int, second_octet: int) -> list[str]:
    return [f"127.{second_octet}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def cpu() -> float:
    """This process' CPU (ns clock: os.times() counts 10 ms ticks, a tenth of a sweep)."""
    return time.process_time()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def native(targets: list[str], config: IcmpConfig) -> dict[str, float]:
    gc.collect()
    c0, t0 = cpu(), time.perf_counter()
    results = await icmp.sweep(targets, config)
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"wall_s": wall, "cpu_s": used, "alive": sum(r.ok for r in results),
            "lost": sum(not r.ok for r in results)}


async def native_per_probe(targets: list[str], config: IcmpConfig) -> dict[str, float]:
    """The scheduler's path: one probe() call (task) per host, all at once."""
    engine = icmp._engine()
    batches = engine.batches
    gc.collect()
    c0, t0 = cpu(), time.perf_counter()
    results = await asyncio.gather(*(icmp.probe(t, config) for t in targets))
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"wall_s": wall, "cpu_s": used, "alive": sum(r.ok for r in results),
            "lost": sum(not r.ok for r in results), "batches": engine.batches - batches}


async def bare_tasks(targets: list[str]) -> dict[str, float]:
    """The floor of any per-call API: 10k gathered tasks that each wait for a future that
    one callback resolves (what every probe() caller pays before any ICMP work)."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[str]] = []

    async def wait(target: str) -> str:
        future: asyncio.Future[str] = loop.create_future()
        futures.append(future)
        return await future

    def wake() -> None:
        for future, target in zip(futures, targets, strict=True):
            future.set_result(target)

    c0, t0 = cpu(), time.perf_counter()
    gathered = asyncio.gather(*(wait(t) for t in targets))
    loop.call_later(0.001, wake)
    await gathered
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0}


def hall(targets: list[str]) -> list[ScheduledCheck]:
    """One ICMP check (1 packet) per loopback device, built as ``App.scheduled_checks`` does."""
    inv = Inventory.model_validate({
        "site": {"name": "bench"},
        "defaults": {"interval": CHECK_INTERVAL, "timeout": CHECK_TIMEOUT},
        "classes": {"node": {"label": "节点", "checks": [
            {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 1}]}},
        "devices": [{"id": f"d{i}", "name": f"d{i}", "class": "node", "address": a}
                    for i, a in enumerate(targets)],
    })
    out = []
    for device in inv.devices:
        for c in inv.checks_for(device):
            call = probe_call(inv, device, c)
            assert getattr(call, "config", None) == ONE, call
            out.append(ScheduledCheck(c.key, device.id, c.kind, c.interval,
                                      min(c.timeout, c.interval * 0.8), call, context=c))
    return out


async def scheduler_cycle(checks: list[ScheduledCheck]) -> dict[str, float]:
    """The daemon's path in its steady state: the real Scheduler's second cycle, woken by its
    timer wheel (the first cycle, started by ``start()``, opens everything and is not counted).
    Every check is due in one wake-up. CPU from the end of the first cycle to the end of the
    second (the loop sleeps in between); wall from the batch's start to its last result."""
    loop = asyncio.get_running_loop()
    n = len(checks)
    cycles: list[asyncio.Future[None]] = [loop.create_future(), loop.create_future()]
    seen = {"results": 0, "lost": 0, "first": math.inf, "last": 0.0}

    def on_result(sc: ScheduledCheck, result: ProbeResult, started: float,
                  finished: float) -> None:
        seen["results"] += 1
        cycle = int(seen["results"] - 1) // n
        if cycle == 1:
            seen["lost"] += not result.ok
            seen["first"] = min(seen["first"], started)
            seen["last"] = max(seen["last"], finished)
        if seen["results"] % n == 0 and cycle < 2:
            cycles[cycle].set_result(None)

    sched = Scheduler(checks, on_result, first_window=1e-9, wake_grid=WAKE_GRID_SECONDS)
    gc.collect()  # not this run's garbage: the previous run's scheduler, its 10k slots
    sched.start()
    await asyncio.wait_for(cycles[0], 30)
    batches, batched, c0 = sched.stats.batches, sched.stats.batched, cpu()
    await asyncio.wait_for(cycles[1], 30)
    used = cpu() - c0
    await sched.stop()
    st = sched.stats
    return {"wall_s": seen["last"] - seen["first"], "cpu_s": used,
            "alive": n - int(seen["lost"]), "lost": seen["lost"],
            "batches": st.batches - batches, "batched": st.batched - batched,
            "timeouts": sum(st.timeouts.values()), "overdue": st.overdue_total}


def settle_gc() -> None:
    """As the daemon does after start-up (monitor/app.py ``_settle_gc``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def fping(targets: list[str], timeout_ms: int = 1000) -> dict[str, float]:
    exe = shutil.which("fping")
    if not exe:
        return {}
    c0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run([exe, "-a", "-r0", "-i0", f"-t{timeout_ms}"],
                          input="\n".join(targets), capture_output=True, text=True, timeout=120)
    wall, used = time.perf_counter() - t0, children_cpu() - c0
    alive = len(proc.stdout.split())
    return {"wall_s": wall, "cpu_s": used, "alive": alive, "lost": len(targets) - alive}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["wall_s"]) if runs and runs[0] else {}


async def alive_part(count: int) -> dict[str, object]:
    targets = addresses(count, 10)
    checks = hall(targets)
    settle_gc()
    await icmp.sweep(targets[:10], ONE)  # open the socket outside the measurement
    cycle = best([await scheduler_cycle(checks) for _ in range(3)])
    theirs = [fping(targets) for _ in range(3)]
    ours = [await native(targets, ONE) for _ in range(3)]
    per_probe = best([await native_per_probe(targets, ONE) for _ in range(3)])
    tasks_only = best([await bare_tasks(targets) for _ in range(3)])
    await icmp.close()
    n, f = best(ours), best(theirs)
    report: dict[str, object] = {"hosts": count, "mode": icmp.mode(), "scheduler": cycle,
                                 "native": n, "native_per_probe": per_probe,
                                 "tasks_only": tasks_only, "fping": f}
    if f:
        report["wall_ratio"] = cycle["wall_s"] / f["wall_s"]
        report["cpu_ratio"] = cycle["cpu_s"] / max(f["cpu_s"], 1e-9)
        report["probe_cpu_ratio"] = per_probe["cpu_s"] / max(f["cpu_s"], 1e-9)
        report["sweep_cpu_ratio"] = n["cpu_s"] / max(f["cpu_s"], 1e-9)
    return report


_CHILD = "--silent-child"


async def silent_child(count: int) -> None:
    targets = addresses(count, 11)
    checks = hall(targets)
    settle_gc()
    await icmp.sweep(targets[:1], IcmpConfig(packets=1, timeout=0.05))  # open the socket
    result = await scheduler_cycle(checks)
    await icmp.close()
    result["fping"] = fping(targets)  # type: ignore[assignment]
    print(json.dumps(result))


def silent_part(count: int) -> dict[str, object]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return {"skipped": "needs root and iproute2 for a network namespace"}
    from tests.agents.netns import run_in_namespace, silent_namespace

    with silent_namespace() as ns:
        proc = run_in_namespace(ns, [sys.executable, __file__, _CHILD, str(count)], timeout=120)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    result["hosts"] = count
    result["within_timeout_plus_10pct"] = float(result["wall_s"]) <= 1.1  # type: ignore[arg-type]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--silent", type=int, default=5_000)
    parser.add_argument(_CHILD, type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.silent_child:
        asyncio.run(silent_child(args.silent_child))
        return
    alive: dict[str, Any] = asyncio.run(alive_part(args.hosts))
    print(f"alive {args.hosts} loopback hosts ({alive['mode']} socket), best of 3:")
    for label, key in ((f"scheduler, {args.hosts} checks", "scheduler"),
                       ("fping -i0", "fping"),
                       (f"{args.hosts} concurrent probe()", "native_per_probe"),
                       ("engine alone: one sweep()", "native")):
        r = alive.get(key) or {}
        if r:
            extra = f"  ({r['batches']} batches)" if "batches" in r else ""
            print(f"  {label:28s} wall {r['wall_s']:.3f} s  cpu {r['cpu_s']:.3f} s  "
                  f"lost {r['lost']}{extra}")
    bare = alive["tasks_only"]
    print(f"  {'floor: callers tasks alone':28s} wall {bare['wall_s']:.3f} s  "
          f"cpu {bare['cpu_s']:.3f} s  ({args.hosts} tasks waiting on a future, no ICMP)")
    if "wall_ratio" in alive:
        print(f"  ratio scheduler/fping: wall {alive['wall_ratio']:.2f}x  "
              f"cpu {alive['cpu_ratio']:.2f}x (budget 1.2x); probe() cpu "
              f"{alive['probe_cpu_ratio']:.2f}x, sweep() cpu {alive['sweep_cpu_ratio']:.2f}x")
    silent: dict[str, Any] = silent_part(args.silent)
    if "wall_s" in silent:
        sf = silent.get("fping") or {}
        print(f"silent {args.silent} hosts, 1 s timeout: scheduler cycle wall "
              f"{silent['wall_s']:.3f} s "
              f"cpu {silent['cpu_s']:.3f} s; fping wall {sf.get('wall_s', float('nan')):.3f} s")
    else:
        print(f"silent part: {silent}")
    budgets = {
        "scheduler_cpu_at_most_1.2x_fping": float(alive.get("cpu_ratio", math.inf)) <= 1.2,
        "scheduler_lost_none": alive["scheduler"]["lost"] == 0,
        "no_check_late": alive["scheduler"]["overdue"] == 0,
        # no task per check: every check of the cycle went out in a batch (one per wake-up;
        # the 3 s interval's 30 ms grid step may split the cycle's dues over two)
        "every_check_batched": alive["scheduler"]["batched"] == args.hosts,
        "silent_within_timeout_plus_10pct": bool(silent.get("within_timeout_plus_10pct")),
    }
    finish("icmp_sweep", {"alive": alive, "silent": silent}, budgets)


if __name__ == "__main__":
    main()
