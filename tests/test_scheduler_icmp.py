"""The scheduler's ICMP batch path with real ICMP on loopback (issue 12).

The ICMP checks woken together go to the engine as one batch (``_IcmpCall.batch`` ->
``probes.icmp.submit``), with no task per check; their results reach the state through the same
``on_result`` as any run. Counted at seams we own: ``SchedulerStats.batches``/``batched`` and
the loop's task list. Silent hosts and timeouts run inside a network namespace of our own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from monitor.checks import probe_call
from monitor.inventory import Inventory
from monitor.pipeline import Pipeline
from monitor.scheduler import ManualClock, ScheduledCheck, Scheduler
from probes import icmp
from probes.result import ProbeResult
from tests.agents.netns import namespace, run_in_namespace
from tests.conftest import require_root, require_tool


@pytest.fixture(autouse=True)
async def _engine() -> AsyncIterator[None]:
    icmp.configure()
    yield
    await icmp.close()
    icmp.configure()


FAST = {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 1,
        "timeout": "400ms"}
SLOW = {"name": "ping3", "kind": "icmp", "role": "reachability", "packets": 3,
        "packet_interval": "10ms", "timeout": "3s"}  # the probe's own timeout: 1 s at most
CLASSES = {  # per-check packets and timeouts differ by class
    "fast": {"label": "节点", "checks": [FAST]},
    "slow": {"label": "节点", "checks": [SLOW]},
    "twice": {"label": "节点", "checks": [FAST, {**SLOW, "role": "health"}]},
    "tcp-node": {"label": "端口", "checks": [
        {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 1},
        {"name": "port", "kind": "tcp", "port": 9},
    ]},
}


def hall(addresses: dict[str, str], cls: str | None = None) -> Inventory:
    """Devices by id -> address; class ``cls``, else fast and slow in turn."""
    return Inventory.model_validate({
        "site": {"name": "测试大厅"},
        "defaults": {"interval": "30s", "timeout": "1s"},
        "classes": CLASSES,
        "devices": [{"id": dev, "name": dev, "class": cls or ("fast", "slow")[i % 2],
                     "address": addr} for i, (dev, addr) in enumerate(addresses.items())],
    })


def scheduled(inv: Inventory) -> list[ScheduledCheck]:
    """As the daemon builds them (monitor/app.py ``scheduled_checks``)."""
    out = []
    for device in inv.devices:
        for c in inv.checks_for(device):
            out.append(ScheduledCheck(c.key, device.id, c.kind, c.interval, c.timeout,
                                      probe_call(inv, device, c), context=c))
    return out


async def until(cond: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"waited {limit} s for {what}"
        await asyncio.sleep(0.01)


ALIVE = {f"n{i}": f"127.0.0.{i}" for i in range(1, 10)}
if socket.has_ipv6:
    ALIVE["v6"] = "::1"


async def test_icmp_checks_due_in_one_wake_up_go_out_as_one_batch_and_reach_the_state() -> None:
    inv = hall(ALIVE | {f"m{i}": f"127.0.1.{i}" for i in range(1, 11)})
    pipeline = Pipeline(inv, clock=time.time)
    peak_tasks = 0

    def on_result(sc: ScheduledCheck, result: ProbeResult, started: float,
                  finished: float) -> Awaitable[None]:
        nonlocal peak_tasks
        peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
        return pipeline.handle(sc.context, result)

    clock = ManualClock()  # 1_000_000.0: on the 0.25 s grid, so every first run is due now
    checks = scheduled(inv)
    sched = Scheduler(checks, on_result, clock=clock, first_window=0.2, wake_grid=0.25)
    sched.start()
    await until(lambda: pipeline.results_total == len(checks), "the first cycle")
    assert (sched.stats.batches, sched.stats.batched) == (1, len(checks))
    assert peak_tasks <= 4  # the test, the batch, one engine sweep per config: never per check
    for c in checks:
        last = pipeline.state.checks[c.key].last
        assert last is not None and last.ok, (c.key, last)
        sent = 3.0 if c.key[1] == "ping3" else 1.0
        assert last.values["packets_sent"] == last.values["packets_received"] == sent
    assert sched.stats.runs == {"icmp": len(checks)} and not sched.stats.timeouts

    await clock.advance(30.0)  # the next cycle: the same checks, one batch again, none late
    await until(lambda: pipeline.results_total == 2 * len(checks), "the second cycle")
    assert (sched.stats.batches, sched.stats.batched) == (2, 2 * len(checks))
    assert sched.stats.overdue_total == 0
    await sched.stop()


async def test_the_daemons_default_caps_keep_icmp_checks_batched() -> None:
    """As found: the inventory caps ICMP at 10,000 checks in flight by default, and a capped
    kind used to run check by check, so the daemon never batched a ping (0 batches at 10k
    devices). The cap now counts batched checks: one batch, every place given back."""
    inv = hall(ALIVE)
    caps = {str(kind): n for kind, n in inv.polling.concurrency.items()}  # app.Hall._caps
    assert caps["icmp"] == 10000
    seen: list[tuple[str, str]] = []
    checks = scheduled(inv)
    sched = Scheduler(checks, lambda sc, r, s, f: seen.append(sc.key), caps=caps,
                      clock=ManualClock(), first_window=0.2, wake_grid=0.25)
    sched.start()
    await until(lambda: len(seen) == len(checks), "the first cycle")
    assert (sched.stats.batches, sched.stats.batched) == (1, len(checks))
    assert sched.places_free("icmp") == 10000
    await sched.stop()


async def test_a_cap_smaller_than_a_wake_up_bounds_the_checks_in_flight() -> None:
    """``polling.concurrency.icmp: 4`` with 19 pings due at once: 4 go in the batch, the rest
    wait for a place and run on their own; never more than 4 in flight, every check once, every
    place given back; the next cycle the same."""
    inv = hall(ALIVE | {f"m{i}": f"127.0.1.{i}" for i in range(1, 11)})
    checks = scheduled(inv)
    seen: list[tuple[str, str, bool]] = []
    flight = {"now": 0, "peak": 0}

    def took(n: int) -> None:
        flight["now"] += n
        flight["peak"] = max(flight["peak"], flight["now"])

    class Counted:
        """The check's real ICMP call, with the calls in flight counted on both paths."""

        def __init__(self, call: Any) -> None:
            self.call, self.address, self.config = call, call.address, call.config

        async def __call__(self) -> ProbeResult:  # on its own (its kind's cap was full)
            took(1)
            try:
                return cast(ProbeResult, await self.call())
            finally:
                took(-1)

        @staticmethod
        def batch(calls: list[Any], deliver: Callable[[int, ProbeResult], None]) -> Any:
            took(len(calls))

            def delivered(i: int, result: ProbeResult) -> None:
                took(-1)
                deliver(i, result)
            return icmp.submit(calls, delivered)

    counted = [dataclasses.replace(c, call=Counted(c.call)) for c in checks]
    sched = Scheduler(counted, lambda sc, r, s, f: seen.append((*sc.key, r.ok)),
                      caps={"icmp": 4}, clock=(clock := ManualClock()), first_window=0.2,
                      wake_grid=0.25)
    sched.start()
    await until(lambda: len(seen) == len(checks), "the first cycle")
    assert sorted((d, n) for d, n, _ in seen) == sorted(c.key for c in checks)
    assert all(ok for *_, ok in seen)
    assert flight == {"now": 0, "peak": 4}
    assert sched.stats.batched >= 4 and sched.places_free("icmp") == 4
    await clock.advance(30.0)
    await until(lambda: len(seen) == 2 * len(checks), "the second cycle")
    assert flight == {"now": 0, "peak": 4} and sched.places_free("icmp") == 4
    await sched.stop()


@pytest.mark.parametrize(("cls", "second"), [("tcp-node", "port"), ("twice", "ping3")])
async def test_a_batched_ping_holds_its_device_like_a_run_of_its_own(cls: str,
                                                                     second: str) -> None:
    """One poll per device at a time: the device's other check (TCP, or a second ICMP check)
    runs on its own once the batched ping's result is applied."""
    inv = hall({"a": "127.0.0.1", "b": "127.0.0.2"}, cls=cls)
    order: list[tuple[str, str, bool]] = []
    sched = Scheduler(scheduled(inv), lambda sc, r, s, f: order.append((*sc.key, r.ok)),
                      clock=ManualClock(), first_window=0.2, wake_grid=0.25)
    sched.start()
    await until(lambda: len(order) == 4, "every check")
    assert sched.stats.batches == 1 and sched.stats.batched == 2  # the pings only
    for dev in ("a", "b"):
        assert order.index((dev, "ping", True)) < [o[:2] for o in order].index((dev, second))
    await sched.stop()


async def test_a_reload_withdraws_a_batched_check_before_it_runs() -> None:
    inv = hall(ALIVE)
    seen: list[tuple[str, str]] = []
    checks = scheduled(inv)
    sched = Scheduler(checks, lambda sc, r, s, f: seen.append(sc.key), clock=ManualClock(),
                      first_window=0.2, wake_grid=0.25)
    sched.start()  # every check woken, the batch not yet started
    gone = checks[0].key
    assert sched.replace(checks[1:]) == []  # nothing to cancel: no task per check
    await until(lambda: len(seen) == len(checks) - 1, "the rest of the batch")
    await asyncio.sleep(0.05)
    assert gone not in seen and sched.stats.batched == len(checks) - 1
    sched.replace(checks)  # back again: its device was released, it runs on its own phase
    await sched.recheck(gone)
    assert seen[-1] == gone
    await sched.stop()


async def test_stop_with_a_batch_in_flight_ends_cleanly() -> None:
    inv = hall(ALIVE)
    seen: list[tuple[str, str]] = []
    sched = Scheduler(scheduled(inv), lambda sc, r, s, f: seen.append(sc.key),
                      clock=ManualClock(), first_window=0.2, wake_grid=0.25)
    sched.start()
    await asyncio.sleep(0)  # the batch has started; replies not yet in
    await asyncio.wait_for(sched.stop(), 5.0)
    await asyncio.sleep(0.1)
    assert not seen and not icmp._engine().pending


# ---------------------------------------------------------------- silent hosts, own namespace
# 10 silent hosts whose checks time out at the engine (3 s check: "no reply" after the probe's
# own 1 s), 10 whose scheduler deadline (0.3 s) is shorter than their probe's 0.9 s timeout
# (the daemon's ``--pace``): "timeout" from the scheduler; and ::1, which answers, in the same
# batch. One wake-up (first_window ~0): one batch. The real SystemClock and the real pipeline.
_SILENT_CYCLE = """
import asyncio, json, time
from monitor.pipeline import Pipeline
from monitor.scheduler import ScheduledCheck, Scheduler
from probes import icmp
from tests.test_scheduler_icmp import hall, scheduled

async def main():
    short = hall({f"s{i}": f"127.9.0.{i}" for i in range(1, 11)} | {"v6": "::1"}, cls="slow")
    cut = hall({f"c{i}": f"127.9.1.{i}" for i in range(1, 11)}, cls="tcp-node")
    pipeline = Pipeline(short, clock=time.time)
    checks = scheduled(short)
    checks += [ScheduledCheck(c.key, c.device_id, c.kind, c.interval, 0.3, c.call, c.context)
               for c in scheduled(cut) if c.kind == "icmp"]
    out = {}
    def on_result(sc, result, started, finished):
        out["/".join(sc.key)] = [result.ok, result.error, finished - started,
                                 result.values.get("packets_sent")]
        if sc.key[0] in pipeline.state.devices:
            return pipeline.handle(sc.context, result)
    sched = Scheduler(checks, on_result, first_window=1e-9, wake_grid=0.25)
    sched.start()
    for _ in range(500):
        if len(out) == len(checks):
            break
        await asyncio.sleep(0.01)
    await sched.stop()
    await icmp.close()
    state = {"/".join(k): [s.last.ok, s.last.error] for k, s in pipeline.state.checks.items()
             if s.last is not None}
    st = sched.stats
    print(json.dumps({"out": out, "state": state, "batches": st.batches, "batched": st.batched,
                      "timeouts": st.timeouts, "runs": st.runs}))
asyncio.run(main())
"""


def test_silent_hosts_and_mixed_timeouts_in_one_batch_reach_the_state() -> None:
    require_root("network namespaces")
    require_tool("ip")
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with namespace(["net.ipv4.icmp_echo_ignore_all=1"]) as ns:  # ::1 answers, 127.x is silent
        proc = run_in_namespace(ns, [sys.executable, "-c", _SILENT_CYCLE])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    out, state = report["out"], report["state"]
    assert len(out) == 21 and report["batches"] == 1 and report["batched"] == 21
    assert report["runs"] == {"icmp": 21} and report["timeouts"] == {"icmp": 10}
    for i in range(1, 11):
        ok, error, took, sent = out[f"s{i}/ping3"]
        assert not ok and error == "no reply" and sent == 3.0 and took >= 1.0
        assert state[f"s{i}/ping3"] == [False, "no reply"]
        ok, error, took, _ = out[f"c{i}/ping"]
        assert not ok and error == "timeout" and took >= 0.3  # the deadline, not the probe
    ok, error, took, sent = out["v6/ping3"]
    assert ok and error is None and sent == 3.0 and took < 1.0  # not held back by the silent
    assert state["v6/ping3"] == [True, None]


async def test_a_handler_error_in_a_batch_is_counted_and_the_rest_applied() -> None:
    inv = hall(ALIVE)
    checks = scheduled(inv)
    seen: list[tuple[str, str]] = []

    async def on_result(sc: ScheduledCheck, r: ProbeResult, s: float, f: float) -> None:
        await asyncio.sleep(0)  # an async handler that really suspends, as the daemon's may
        if sc.key == checks[0].key:
            raise RuntimeError("handler bug")
        seen.append(sc.key)

    clock = ManualClock()
    sched = Scheduler(checks, on_result, clock=clock, first_window=0.2, wake_grid=0.25)
    sched.start()
    await until(lambda: sum(sched.stats.runs.values()) == len(checks), "the first cycle")
    assert sched.stats.handler_errors == 1 and len(seen) == len(checks) - 1
    await clock.advance(30.0)  # polling goes on, the failing check included
    await until(lambda: sum(sched.stats.runs.values()) == 2 * len(checks), "the next cycle")
    assert sched.stats.handler_errors == 2 and sched.stats.batches == 2
    await sched.stop()


async def test_a_batch_keeps_the_global_send_pacing() -> None:
    icmp.configure(pacing_per_second=200)
    inv = hall({f"p{i}": f"127.6.1.{i}" for i in range(1, 21)}, cls="fast")
    loop = asyncio.get_running_loop()
    seen: list[tuple[bool, float]] = []
    sched = Scheduler(scheduled(inv), lambda sc, r, s, f: seen.append((r.ok, loop.time())),
                      clock=ManualClock(), first_window=0.2, wake_grid=0.25)
    start = loop.time()
    sched.start()
    await until(lambda: len(seen) == 20, "every check")
    assert sched.stats.batches == 1 and all(ok for ok, _ in seen)
    # one batch, yet 20 packets at 200/s: the last reply comes >= ~95 ms after the start
    assert max(t for _, t in seen) - start >= 19 / 200 * 0.9
    await sched.stop()


async def test_a_late_batch_is_counted_overdue_and_re_anchored_not_bunched() -> None:
    inv = hall(ALIVE)
    checks = scheduled(inv)
    seen: list[tuple[str, str]] = []
    clock = ManualClock()
    sched = Scheduler(checks, lambda sc, r, s, f: seen.append(sc.key), clock=clock,
                      first_window=0.2, wake_grid=0.25)
    await clock.advance(10.0)  # the loop was held 10 s past every first due time (> 3 s grace)
    sched.start()
    await until(lambda: len(seen) == len(checks), "the late cycle")
    assert sched.stats.overdue_total == len(checks) and sched.stats.batches == 1
    await clock.advance(29.0)  # re-anchored on the late start: nothing due yet, no catch-up
    await asyncio.sleep(0.05)
    assert len(seen) == len(checks)
    await clock.advance(1.0)
    await until(lambda: len(seen) == 2 * len(checks), "the next cycle, on time")
    assert sched.stats.overdue_total == len(checks) and sched.stats.batches == 2
    await sched.stop()
