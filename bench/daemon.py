"""The whole daemon against the tools a hall would otherwise run, in one run (issue 12).

The real daemon (``python -m monitor.cli run``, no mock) polls 10,000 loopback devices with real
ICMP (3 packets each) and 1,000 of them with one 4-OID SNMP GET against net-snmp snmpd listening
on those 1,000 addresses. Beside it, in the same run and against the same agents, the same work
done by fping (``-C 3``, every host) and snmp_exporter (one 4-OID scrape per SNMP device).

1. quiet: after the first cycle, ``--cycles`` whole intervals: the daemon's CPU per cycle
   (utime + stime from /proc) against fping's + snmp_exporter's for one cycle's work.
   Budgets: at most 3x; RSS (VmHWM) at most 150 MB.
2. loaded: the device list (every page), one device's detail, /metrics (gzip, as Prometheus asks)
   and a day report requested back to back for ``--load-seconds``. Budgets: no check started late
   (hallmon_checks_overdue_total), no probe slower than its timeout (the poll-duration histogram
   above the timeout's bucket), no device changed status and every check still up.

    .venv/bin/python bench/daemon.py [--devices 10000] [--snmp-devices 1000] [--interval 30]
                                     [--cycles 2] [--load-seconds 120]

Needs root (raw ICMP), fping, snmpd, prometheus-snmp-exporter. Loopback only; every loop is
bounded in count and time. Ends with one JSON line; exits 1 over budget.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402
from _snmp_exporter import proc_cpu, scrape_all  # noqa: E402
from _verdict import finish  # noqa: E402

from tests.agents.daemon import HallmonProcess  # noqa: E402
from tests.agents.snmp import SNMPD_COMMUNITY, snmpd_agent  # noqa: E402

RATIO_BUDGET = 3.0
RSS_BUDGET_MB = 150.0
TIMEOUT_S = 2.5  # a histogram bucket bound: "slower than the timeout" is read off the buckets
PACKETS = 3
PACKET_INTERVAL_MS = 50
MAX_REQUESTS = 20_000
OIDS = {"uptime_seconds": {"oid": "1.3.6.1.2.1.1.3.0", "scale": 0.01},
        "services": "1.3.6.1.2.1.1.7.0",
        "if_number": "1.3.6.1.2.1.2.1.0",
        "snmp_in_pkts": {"oid": "1.3.6.1.2.1.11.1.0", "type": "counter"}}


def addresses(n: int) -> list[str]:
    return [f"127.50.{i // 250}.{i % 250 + 1}" for i in range(n)]


def inventory(addrs: list[str], snmp_devices: int, port: int, interval: float) -> str:
    ping = {"name": "ping", "kind": "icmp", "role": "reachability", "packets": PACKETS,
            "packet_interval": f"{PACKET_INTERVAL_MS}ms"}
    devices: list[dict[str, Any]] = []
    for i, a in enumerate(addrs):
        d: dict[str, Any] = {"id": f"dev-{i:05d}", "name": f"设备 {i}", "address": a,
                             "class": "agent" if i < snmp_devices else "node",
                             "location": {"floor": 1 + i % 3, "area": "大厅"},
                             "owner": f"unit-{i % 7}"}
        if i < snmp_devices:
            d.update(credential="bench", snmp_port=port)
        devices.append(d)
    doc = {
        "site": {"name": "基准大厅", "timezone": "Asia/Shanghai"},
        "defaults": {"interval": f"{interval:g}s", "timeout": f"{TIMEOUT_S * 1000:.0f}ms",
                     "failure_threshold": 2, "success_threshold": 2},
        "credentials": {"bench": {"version": "2c", "community": "${HALLMON_BENCH_COMMUNITY}",
                                  "timeout": "1s", "retries": 1}},
        "classes": {"node": {"label": "节点", "checks": [ping]},
                    "agent": {"label": "SNMP 节点", "checks": [
                        ping, {"name": "system", "kind": "snmp", "oids": OIDS}]}},
        "devices": devices,
    }
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


# ---- the reference: fping and snmp_exporter doing one cycle's work ------------------------------


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_rss(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def fping_cycle(addrs: list[str]) -> dict[str, float]:
    exe = shutil.which("fping")
    if exe is None:
        raise SystemExit("fping is not installed")
    c0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run([exe, "-q", "-C", str(PACKETS), "-p", str(PACKET_INTERVAL_MS), "-i0",
                           "-r0", "-t1000"], input="\n".join(addrs), capture_output=True,
                          text=True, timeout=120)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    alive = sum(1 for line in proc.stderr.splitlines()
                if " : " in line and "-" not in line.split(" : ", 1)[1])
    return {"hosts": len(addrs), "wall_s": wall, "cpu_s": cpu, "alive": alive}


async def exporter_cycle(targets: list[str], port: int) -> dict[str, float]:
    run = await scrape_all(targets, port, in_flight=100)  # hallmon's in-flight cap
    return {"gets": run.scrapes, "wall_s": run.wall_s, "cpu_s": run.cpu_s,
            "failures": run.failures}


# ---- the daemon ---------------------------------------------------------------------------------


class RealDaemon(HallmonProcess):
    """``hallmon run`` with real probes (the test harness' process, without ``--mock``)."""

    def command(self) -> list[str]:
        return [a for a in super().command() if a != "--mock"]


def polls(samples: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    return sum(v for _, v in samples.get("hallmon_poll_duration_seconds_count", []))


def slower_than_timeout(samples: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    """Probe calls whose duration fell above the bucket of the timeout, summed over kinds."""
    total = 0.0
    by_kind: dict[str, dict[str, float]] = {}
    for labels, v in samples.get("hallmon_poll_duration_seconds_bucket", []):
        by_kind.setdefault(labels["kind"], {})[labels["le"]] = v
    for buckets in by_kind.values():
        total += buckets["+Inf"] - buckets[f"{TIMEOUT_S:g}"]
    return total


def last_changes(samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, float]:
    return {lab["device"]: v
            for lab, v in samples["hallmon_device_last_change_timestamp_seconds"]}


def quiet_phase(d: RealDaemon, n: int, interval: float, cycles: int) -> dict[str, Any]:
    assert d.proc is not None
    pid = d.proc.pid
    # One more whole cycle after ready: the start-up's allocations and first states settle.
    base = polls(d.samples())
    d.wait_for(lambda: polls(d.samples()) >= base + n, 2 * interval + 30,
               "a full cycle after ready", every=2.0)
    first = d.samples()
    c0, t0 = proc_cpu(pid), time.monotonic()
    time.sleep(cycles * interval)  # nothing but the daemon's own work
    cpu, wall = proc_cpu(pid) - c0, time.monotonic() - t0
    rss, hwm = proc_rss(pid)
    samples = d.samples()
    ups = [v for _, v in samples["hallmon_device_up"]]
    return {"cycles": cycles, "wall_s": wall, "cpu_s": cpu, "cpu_per_cycle_s": cpu / cycles,
            "core_percent": 100 * cpu / wall, "rss_mb": rss, "peak_rss_mb": hwm,
            "devices_up": ups.count(1.0),
            "overdue": samples["hallmon_checks_overdue_total"][0][1],
            # The path the daemon really took: ICMP polls that went out in batches.
            "icmp_polls": icmp_polls(samples) - icmp_polls(first),
            "icmp_batched": (counter(samples, "hallmon_probe_batched_checks_total")
                             - counter(first, "hallmon_probe_batched_checks_total"))}


def counter(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in samples.get(name, []))


def icmp_polls(samples: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    return sum(v for labels, v in samples.get("hallmon_poll_duration_seconds_count", [])
               if labels.get("kind") == "icmp")


def load_phase(d: RealDaemon, n: int, seconds: float) -> dict[str, Any]:
    assert d.proc is not None
    before = d.samples()
    changes = last_changes(before)
    requests = pages = 0
    t0 = time.monotonic()
    with httpx.Client(base_url=d.base, timeout=30.0) as http:
        while time.monotonic() - t0 < seconds and requests < MAX_REQUESTS:
            offset, total = 0, 1
            while offset < total:
                r = http.get("/api/v1/devices", params={"offset": offset, "limit": 1000})
                r.raise_for_status()
                body = r.json()
                total, offset = body["total"], offset + max(1, len(body["devices"]))
                requests, pages = requests + 1, pages + 1
            http.get(f"/api/v1/devices/dev-{requests % n:05d}").raise_for_status()
            http.get("/metrics", headers={"Accept-Encoding": "gzip"}).raise_for_status()
            http.get("/api/v1/reports/day", params={"format": "md"}).raise_for_status()
            requests += 3
    wall = time.monotonic() - t0
    after = d.samples()
    moved = [dev for dev, at in last_changes(after).items() if changes.get(dev) != at]
    checks_up = [v for _, v in after["hallmon_check_up"]]
    _, hwm = proc_rss(d.proc.pid)
    return {
        "seconds": wall, "requests": requests, "device_pages": pages,
        "overdue": (after["hallmon_checks_overdue_total"][0][1]
                    - before["hallmon_checks_overdue_total"][0][1]),
        "slower_than_timeout": slower_than_timeout(after) - slower_than_timeout(before),
        "polls": polls(after) - polls(before),
        "devices_changed": len(moved), "changed_example": moved[:5],
        "checks_not_up": len(checks_up) - checks_up.count(1.0),
        "peak_rss_mb": hwm,
    }


async def reference(addrs: list[str], snmp_targets: list[str], port: int) -> dict[str, Any]:
    fp = fping_cycle(addrs)
    ex = await exporter_cycle(snmp_targets, port)
    return {"fping": fp, "snmp_exporter": ex, "cpu_per_cycle_s": fp["cpu_s"] + ex["cpu_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--snmp-devices", type=int, default=1_000)
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--load-seconds", type=float, default=120.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: raw ICMP sockets for the daemon")
    addrs = addresses(a.devices)
    snmp_targets = addrs[: a.snmp_devices]
    with snmpd_agent(snmp_targets) as agent, tempfile.TemporaryDirectory(
            prefix="hallmon-bench-daemon-") as tmp:
        ref = asyncio.run(reference(addrs, snmp_targets, agent.port))
        print(f"reference, one cycle: fping -C{PACKETS} {a.devices} hosts "
              f"{ref['fping']['cpu_s']:.2f} s CPU ({ref['fping']['alive']} alive); "
              f"snmp_exporter {a.snmp_devices} GETs {ref['snmp_exporter']['cpu_s']:.2f} s CPU "
              f"({ref['snmp_exporter']['failures']} failed)", flush=True)
        inv = inventory(addrs, a.snmp_devices, agent.port, a.interval)
        started = time.monotonic()
        with RealDaemon(Path(tmp), inv, ready_within=a.interval * 2 + 60,
                        env={"HALLMON_BENCH_COMMUNITY": SNMPD_COMMUNITY},
                        args=("--log.level=info",)) as d:
            ready_s = time.monotonic() - started
            quiet = quiet_phase(d, a.devices + a.snmp_devices, a.interval, a.cycles)
            ratio = quiet["cpu_per_cycle_s"] / max(ref["cpu_per_cycle_s"], 1e-9)
            print(f"daemon, quiet: {quiet['cpu_per_cycle_s']:.2f} s CPU per {a.interval:g} s "
                  f"cycle ({quiet['core_percent']:.1f} % of a core) = {ratio:.2f}x the reference "
                  f"(budget {RATIO_BUDGET:g}x); RSS {quiet['rss_mb']:.0f} MB, peak "
                  f"{quiet['peak_rss_mb']:.0f} MB (budget {RSS_BUDGET_MB:.0f}); "
                  f"{quiet['devices_up']} of {a.devices} up", flush=True)
            load = load_phase(d, a.devices, a.load_seconds) if a.load_seconds > 0 else {}
            if load:
                print(f"daemon, loaded {load['seconds']:.0f} s: {load['requests']} requests "
                      f"({load['device_pages']} device pages); {load['polls']:.0f} polls; "
                      f"overdue {load['overdue']:.0f}, slower than timeout "
                      f"{load['slower_than_timeout']:.0f}, devices changed "
                      f"{load['devices_changed']}, checks not up {load['checks_not_up']}; "
                      f"peak RSS {load['peak_rss_mb']:.0f} MB", flush=True)
    budgets = {
        f"cpu_per_cycle_at_most_{RATIO_BUDGET:g}x_fping_plus_snmp_exporter": ratio <= RATIO_BUDGET,
        f"peak_rss_at_most_{RSS_BUDGET_MB:.0f}mb": quiet["peak_rss_mb"] <= RSS_BUDGET_MB,
        "quiet_every_device_up": quiet["devices_up"] == a.devices,
        "quiet_no_overdue": quiet["overdue"] == 0,
        # Batches carry every ICMP poll of the quiet cycles (give or take the batches in flight
        # at either scrape): the daemon's default caps once kept them all out.
        "quiet_icmp_polls_batched": quiet["icmp_polls"] > 0
        and quiet["icmp_batched"] >= 0.95 * quiet["icmp_polls"],
    }
    if load:
        budgets.update({
            "loaded_no_overdue": load["overdue"] == 0,
            "loaded_no_probe_slower_than_timeout": load["slower_than_timeout"] == 0,
            "loaded_no_status_change": load["devices_changed"] == 0,
            "loaded_every_check_up": load["checks_not_up"] == 0,
        })
    finish("daemon", {"devices": a.devices, "snmp_devices": a.snmp_devices,
                      "interval_s": a.interval, "ready_s": ready_s, "reference": ref,
                      "quiet": quiet, "ratio": ratio, "loaded": load}, budgets)


if __name__ == "__main__":
    main()
