"""/metrics render at 10,000 devices: time, size, series count and RSS.

Budget (docs/architecture.md): 100k series exposed in <= 0.5 s; RSS <= 150 MB at 10k devices.
The hall: 10k devices, each with an ICMP reachability check (rtt min/avg/max + loss) and, for
one in three, an SNMP check with 4 values (2 gauges, 2 counters); statuses from a real
HallState (adapter ``device_rows`` included in the time, as in the daemon).

    .venv/bin/python bench/metrics_scrape.py [--devices 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

from _verdict import finish

from monitor.metrics import (
    CachedRenderer,
    DeviceInfo,
    Snapshot,
    ValueSpec,
    device_rows,
    render_text,
)
from monitor.scheduler import DurationHistogram
from monitor.state import CheckPolicy, DeviceSpec, HallState

SNMP_VALUES = {"toner_percent": 42.0, "temperature_celsius": 31.5,
               "if_in_errors": 12.0, "if_out_errors": 3.0}
SPECS = {"toner_percent": ValueSpec(), "temperature_celsius": ValueSpec(),
         "if_in_errors": ValueSpec("counter"), "if_out_errors": ValueSpec("counter")}
ICMP_VALUES = {"rtt_min_seconds": 0.0002, "rtt_avg_seconds": 0.0003,
               "rtt_max_seconds": 0.0005, "loss_ratio": 0.0}


class Source:
    def __init__(self, devices: int) -> None:
        self.hall, self.info, self.kinds = build(devices)
        self.hist = DurationHistogram()
        for i in range(devices):
            self.hist.observe(0.0003 * (i % 7))

    def snapshot(self) -> Snapshot:
        return Snapshot(
            devices=device_rows(self.hall, self.info, self.kinds),
            value_specs=SPECS,
            tickets_open={"fault": 3, "inspection": 0},
            tickets_total={"fault": 513, "inspection": 12},
            notifications={"dingtalk": 40, "email": 2},
            notification_failures={"dingtalk": 1, "email": 0},
            poll_durations={"icmp": self.hist, "snmp": self.hist},
            overdue_total=0,
            probe_errors={"icmp": 0, "snmp": 0},
            reload_success_timestamp=time.time(),
        )


def build(n: int) -> tuple[HallState, dict[str, DeviceInfo], dict[tuple[str, str], str]]:
    policy = CheckPolicy()
    specs, info, kinds = [], {}, {}
    for i in range(n):
        dev = f"dev-{i:05d}"
        parent = None if i < 50 else f"dev-{i % 50:05d}"
        checks = {"ping": policy} | ({"snmp": policy} if i % 3 == 0 else {})
        specs.append(DeviceSpec(dev, parent, "ping", checks))
        info[dev] = DeviceInfo("kiosk", f"一楼自助终端{i}号", str(1 + i % 3), "大厅",
                               "不动产中心", parent or "")
        kinds[(dev, "ping")] = "icmp"
        if i % 3 == 0:
            kinds[(dev, "snmp")] = "snmp"
    hall = HallState(specs)
    for i, spec in enumerate(specs):
        hall.apply(spec.id, "ping", i % 97 != 0, None if i % 97 else "timeout", 1.7e9,
                   ICMP_VALUES)
        if "snmp" in spec.checks:
            hall.apply(spec.id, "snmp", True, None, 1.7e9, SNMP_VALUES)
    return hall, info, kinds


async def cached(renderer: CachedRenderer) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(renderer.render() for _ in range(4)))
    return time.perf_counter() - t0


def main(devices: int, repeat: int) -> None:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    source = Source(devices)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    walls, cpus = [], []
    body = b""
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        body = render_text(source)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shared = asyncio.run(cached(CachedRenderer(source)))
    print(f"devices={devices} series={series} body={len(body) / 1e6:.1f} MB")
    print(f"render (snapshot + families + text): best {min(walls):.3f}s wall, "
          f"{min(cpus):.3f}s CPU; median {sorted(walls)[len(walls) // 2]:.3f}s "
          f"(budget 0.5 s)")
    print(f"4 concurrent scrapes through CachedRenderer: {shared:.3f}s wall")
    print(f"max RSS: {rss0:.0f} MB at start, {rss1:.0f} MB with the hall, {rss2:.0f} MB after "
          f"rendering (budget 150 MB)")
    finish("metrics_scrape",
           {"devices": devices, "series": series, "body_mb": len(body) / 1e6,
            "render_best_s": min(walls), "render_cpu_s": min(cpus), "shared_4_s": shared,
            "max_rss_mb": rss2},
           {"render_at_most_0.5s": min(walls) <= 0.5, "rss_at_most_150mb": rss2 <= 150})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    main(a.devices, a.repeat)
