"""Native ICMP engine against the real kernel: 127.0.0.0/8 and ::1 answer, a namespace of our
own is silent. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from probes import icmp
from probes.icmp import IcmpConfig
from tests.agents.netns import namespace, run_in_namespace, silent_namespace
from tests.conftest import require_root, require_tool

FAST = IcmpConfig(packets=3, interval=0.01, timeout=1.0)


@pytest.fixture(autouse=True)
async def _engine() -> AsyncIterator[None]:
    try:
        icmp.mode()
    except icmp.IcmpPermissionError:
        pytest.skip("no ICMP socket available here (needs CAP_NET_RAW or ping_group_range)")
    icmp.configure()
    yield
    await icmp.close()
    icmp.configure()


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way (network byte order)."""
    if len(data) % 2:
        data += b"\0"
    total = sum((data[i] << 8) + data[i + 1] for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@pytest.mark.parametrize("token", [0, 1, 0xFFFF, 0x1_0000, 2**62 + 12345, 2**64 - 1])
def test_echo_request_checksum_is_rfc1071(token: int) -> None:
    packet = icmp.build_echo(socket.AF_INET, 0xBEEF, token & 0xFFFF, token, 56)
    assert len(packet) == 8 + 56
    (carried,) = struct.unpack_from("!H", packet, 2)
    zeroed = packet[:2] + b"\0\0" + packet[4:]
    assert carried == reference_checksum(zeroed)


async def test_three_packets_to_loopback_give_rtt_and_no_loss() -> None:
    result = await icmp.probe("127.0.0.1", FAST)
    assert result.ok, result
    v = result.values
    assert v["packets_sent"] == 3 and v["packets_received"] == 3 and v["loss_ratio"] == 0.0
    assert 0 < v["rtt_min_seconds"] <= v["rtt_avg_seconds"] <= v["rtt_max_seconds"] < 1.0
    assert v["rtt_jitter_seconds"] >= 0.0
    assert icmp.mode() in ("raw", "dgram")


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    result = await icmp.probe("::1", IcmpConfig(packets=2, interval=0.01))
    assert result.ok, result
    assert result.values["packets_received"] == 2


async def test_unknown_name_is_not_resolved_not_no_reply() -> None:
    result = await icmp.probe("no-such-device.invalid", FAST)
    assert not result.ok
    assert result.error == "name not resolved"


async def test_hostname_resolves_without_blocking() -> None:
    result = await icmp.probe("localhost", IcmpConfig(packets=1))
    assert result.ok, result


async def test_sweep_of_many_loopback_hosts_loses_nothing() -> None:
    targets = [f"127.3.{i // 200}.{i % 200 + 1}" for i in range(2000)]
    results = await icmp.sweep(targets, IcmpConfig(packets=1, timeout=2.0))
    assert [r.ok for r in results] == [True] * len(targets)


async def test_concurrent_probes_share_one_socket_per_family() -> None:
    targets = [f"127.4.0.{i}" for i in range(1, 201)]
    results = await asyncio.gather(*(icmp.probe(t, IcmpConfig(packets=2, interval=0.0))
                                     for t in targets))
    assert all(r.ok and r.values["packets_received"] == 2 for r in results)
    engine = icmp._engines[asyncio.get_running_loop()]
    assert list(engine._socks) == [socket.AF_INET]
    assert not engine.pending  # every token was answered or forgotten


async def test_token_space_is_wider_than_the_16_bit_sequence() -> None:
    """Tokens (not sequence numbers) match replies: more than 65k probes may be in flight."""
    engine = icmp._engine()
    engine._token = 0xFFFF - 50  # the sequence wraps in the middle of this sweep
    targets = [f"127.5.0.{i}" for i in range(1, 101)]
    results = await icmp.sweep(targets, IcmpConfig(packets=1))
    assert all(r.ok for r in results)
    assert engine._token > 0xFFFF


async def test_cancelled_probe_forgets_its_packets() -> None:
    task = asyncio.create_task(icmp.probe("127.0.0.1", IcmpConfig(packets=5, interval=0.2)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not icmp._engines[asyncio.get_running_loop()].pending
    assert (await icmp.probe("127.0.0.1", IcmpConfig(packets=1))).ok  # engine still healthy


async def test_pacing_spreads_sends() -> None:
    icmp.configure(pacing_per_second=200)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await icmp.sweep([f"127.6.0.{i}" for i in range(1, 21)], IcmpConfig(packets=1))
    assert all(r.ok for r in results)
    assert loop.time() - start >= 19 / 200 * 0.9  # 20 packets at 200/s take >= ~95 ms


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        IcmpConfig(packets=0)
    with pytest.raises(ValueError):
        IcmpConfig(size=4)
    with pytest.raises(ValueError):
        icmp.configure(backend="fast")  # type: ignore[arg-type]


def test_fix_hint_names_both_fixes() -> None:
    assert "CAP_NET_RAW" in icmp.FIX_HINT and "AmbientCapabilities" in icmp.FIX_HINT
    assert "ping_group_range" in icmp.FIX_HINT


# ---------------------------------------------------------------- inside our own namespaces
_SILENT_SWEEP = """
import asyncio, json
from probes import icmp
async def main():
    cfg = icmp.IcmpConfig(packets=2, interval=0.01, timeout=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await icmp.sweep([f"127.9.0.{i}" for i in range(1, 51)] + ["::1"], cfg)
    took = loop.time() - start
    await icmp.close()
    print(json.dumps({"took": took, "mode": icmp.mode(),
                      "results": [[r.ok, r.error, dict(r.values)] for r in results]}))
asyncio.run(main())
"""


def test_silent_hosts_report_no_reply_within_the_timeout() -> None:
    require_root("network namespaces")
    require_tool("ip")
    with silent_namespace() as ns:
        proc = run_in_namespace(ns, [sys.executable, "-c", _SILENT_SWEEP])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert len(report["results"]) == 51
    for ok, error, values in report["results"]:
        assert not ok and error == "no reply"
        assert values["loss_ratio"] == 1.0 and values["packets_sent"] == 2
    assert report["took"] < 0.01 + 0.3 + 0.2  # interval + timeout + slack, never per host


_DGRAM_PROBE = """
import asyncio, json
from probes import icmp
icmp.configure(socket_mode="dgram")
async def main():
    r = await icmp.probe("127.0.0.1", icmp.IcmpConfig(packets=2, interval=0.01))
    await icmp.close()
    print(json.dumps({"mode": icmp.mode(), "ok": r.ok, "got": r.values["packets_received"]}))
asyncio.run(main())
"""

_NO_SOCKET = """
from probes import icmp
icmp.configure(socket_mode="dgram")
try:
    icmp.mode()
except icmp.IcmpPermissionError as exc:
    print(exc)
"""


def test_ping_socket_mode_where_ping_group_range_allows_it() -> None:
    require_root("network namespaces")
    require_tool("ip")
    with namespace(["net.ipv4.ping_group_range=0 2147483647"]) as ns:
        proc = run_in_namespace(ns, [sys.executable, "-c", _DGRAM_PROBE])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report == {"mode": "dgram", "ok": True, "got": 2}


def test_no_usable_socket_is_a_loud_error_naming_both_fixes() -> None:
    require_root("network namespaces")
    require_tool("ip")
    with namespace(["net.ipv4.ping_group_range=1 0"]) as ns:
        proc = run_in_namespace(ns, [sys.executable, "-c", _NO_SOCKET])
    assert proc.returncode == 0, proc.stderr
    assert "CAP_NET_RAW" in proc.stdout and "ping_group_range" in proc.stdout


def test_namespace_helper_cleans_up() -> None:
    require_root("network namespaces")
    require_tool("ip")
    with silent_namespace() as ns:
        pass
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    assert ns not in listed.stdout


# ---------------------------------------------------------------- probe() calls coalesce
async def test_concurrent_probe_calls_go_out_as_one_batch() -> None:
    engine = icmp._engine()
    targets = [f"127.7.0.{i}" for i in range(1, 201)] + ["no-such-device.invalid"]
    cfg = IcmpConfig(packets=2, interval=0.0)
    results = await asyncio.gather(*(icmp.probe(t, cfg) for t in targets))
    assert engine.batches == 1 and engine.batched == 200  # the unresolved name never queues
    assert all(r.ok and r.values["packets_sent"] == 2 for r in results[:-1])
    assert results[-1].error == "name not resolved"
    swept = await icmp.sweep(targets[:1], cfg)
    assert set(results[0].values) == set(swept[0].values)  # the same figures as a sweep
    assert not engine.pending and not engine.gathering and not engine.running


async def test_mixed_configs_make_one_batch_each() -> None:
    engine = icmp._engine()
    one, three = IcmpConfig(packets=1), IcmpConfig(packets=3, interval=0.01)
    calls = [icmp.probe(f"127.7.1.{i}", one if i % 2 else three) for i in range(1, 41)]
    results = await asyncio.gather(*calls)
    assert engine.batches == 2
    for i, r in enumerate(results, start=1):
        assert r.ok and r.values["packets_received"] == (1 if i % 2 else 3)


async def test_cancelled_caller_leaves_the_rest_of_its_batch_alone() -> None:
    engine = icmp._engine()
    cfg = IcmpConfig(packets=4, interval=0.05)
    tasks = [asyncio.create_task(icmp.probe(f"127.7.2.{i}", cfg)) for i in range(1, 21)]
    await asyncio.sleep(0.07)  # two rounds sent
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    # its packets are forgotten at once: no pending token points at a cancelled probe
    assert all(p.error is None for p in engine.pending.values())
    results = await asyncio.gather(*tasks[1:])
    assert all(r.ok and r.values["packets_received"] == 4 for r in results)
    assert engine.batches == 1 and not engine.pending and not engine.running


async def test_caller_cancelled_before_the_flush_is_never_sent() -> None:
    engine = icmp._engine()
    tasks = [asyncio.create_task(icmp.probe(f"127.7.3.{i}", FAST)) for i in range(1, 11)]
    await asyncio.sleep(0)  # every task has queued its call; the flush has not run
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert engine.batched == 9
    assert all(isinstance(r, icmp.ProbeResult) and r.ok for i, r in enumerate(results) if i != 3)


async def test_batch_stops_sending_when_every_caller_left() -> None:
    engine = icmp._engine()
    cfg = IcmpConfig(packets=50, interval=0.05)
    tasks = [asyncio.create_task(icmp.probe(f"127.7.4.{i}", cfg)) for i in range(1, 6)]
    await asyncio.sleep(0.03)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    running = list(engine.running)
    await asyncio.wait_for(asyncio.gather(*running), 0.5)  # one interval, not 50
    assert not engine.pending and not engine.running


async def test_close_answers_callers_still_waiting() -> None:
    task = asyncio.create_task(icmp.probe("127.7.5.1", IcmpConfig(packets=20, interval=0.05)))
    await asyncio.sleep(0.02)
    await icmp.close()
    result = await asyncio.wait_for(task, 1.0)
    assert not result.ok and result.error == "icmp engine closed"


_MIXED_BATCH = """
import asyncio, json
from probes import icmp
async def main():
    cfg = icmp.IcmpConfig(packets=2, interval=0.01, timeout=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async def timed(target):
        r = await icmp.probe(target, cfg)
        return [r.ok, r.error, r.values["packets_received"], loop.time() - start]
    out = await asyncio.gather(timed("::1"), timed("127.9.0.1"), timed("127.9.0.2"))
    batches = icmp._engine().batches
    await icmp.close()
    print(json.dumps({"out": out, "batches": batches}))
asyncio.run(main())
"""


def test_answering_host_is_not_held_back_by_a_silent_one_in_its_batch() -> None:
    require_root("network namespaces")
    require_tool("ip")
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with namespace(["net.ipv4.icmp_echo_ignore_all=1"]) as ns:  # ::1 answers, 127.x is silent
        proc = run_in_namespace(ns, [sys.executable, "-c", _MIXED_BATCH])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["batches"] == 1
    (ok6, err6, got6, took6), *silent = report["out"]
    assert ok6 and err6 is None and got6 == 2 and took6 < 0.3  # well before the 0.5 s timeout
    for ok, error, got, took in silent:
        assert not ok and error == "no reply" and got == 0 and took >= 0.5


async def test_caller_leaving_during_paced_sends_is_not_sent_later() -> None:
    icmp.configure(pacing_per_second=100)  # one packet per 10 ms: the batch waits between sends
    engine = icmp._engine()
    tasks = [asyncio.create_task(icmp.probe(f"127.7.6.{i}", IcmpConfig(packets=1)))
             for i in range(1, 11)]
    await asyncio.sleep(0.045)  # the batch is pacing through the middle of the list
    tasks[-1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[-1], asyncio.CancelledError)
    assert all(isinstance(r, icmp.ProbeResult) and r.ok for r in results[:-1])
    assert engine.batched == 10 and not engine.pending and not engine.running
