"""10,000 devices (issue 4, "Done when"): the real daemon with mock probes runs full cycles with no
overdue check, and one /metrics scrape holds every device's series.

Budgets (CPU per check, RSS, scrape time) are held by the benchmarks in bench/, not here; this
test prints what it measured so a regression is visible in the log.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.agents.daemon import HallmonProcess, node, parse_metrics, small_inventory

N = 10_000
INTERVAL = 5.0
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


def _polls(text: str) -> float:
    rows = parse_metrics(text).get("hallmon_poll_duration_seconds_count", [])
    return sum(v for _, v in rows)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_ten_thousand_devices_full_cycles_no_overdue_complete_metrics(tmp_path: Path) -> None:
    devices = [node(f"dev-{i:05d}", f"127.40.{i // 250}.{i % 250 + 1}", floor=1 + i % 3)
               for i in range(N)]
    inv = small_inventory(devices, interval=f"{INTERVAL:g}s", timeout="1s")
    started = time.monotonic()
    with HallmonProcess(tmp_path, inv, ready_within=45, args=("--log.level=info",)) as d:
        assert d.proc is not None
        pid = d.proc.pid
        ready_after = time.monotonic() - started
        base = _polls(d.metrics())
        # Two full cycles with nothing but the daemon's own work (a scrape costs ~0.5 s CPU at
        # this size, so polling /metrics meanwhile would blur the CPU figure).
        cpu_start, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(2 * INTERVAL + 0.5)
        cpu, wall = _cpu_seconds(pid) - cpu_start, time.monotonic() - t0
        d.wait_for(lambda: _polls(d.metrics()) >= base + 2 * N, 2 * INTERVAL,
                   "two full cycles after ready", every=0.5)

        t_scrape = time.monotonic()
        text = d.metrics()
        scrape = time.monotonic() - t_scrape
        rss, hwm = _rss_mb(pid)
        samples = parse_metrics(text)
        assert samples["hallmon_checks_overdue_total"] == [({}, 0.0)], "overdue checks"
        for name in ("hallmon_device_up", "hallmon_device_info", "hallmon_check_up",
                     "hallmon_device_last_poll_timestamp_seconds"):
            got = {labels["device"] for labels, _ in samples[name]}
            assert len(got) == N, f"{name}: {len(got)} devices of {N}"
        ups = [v for _, v in samples["hallmon_device_up"]]
        assert ups.count(1.0) == N, "every mock device is up"
        total = sum(len(rows) for rows in samples.values())
        print(f"\n10k devices: ready {ready_after:.1f}s after spawn; over {wall:.1f}s (2 cycles) "
              f"{cpu:.2f}s CPU = {100 * cpu / wall:.1f}% of a core at a {INTERVAL:g}s interval, "
              f"{1e6 * cpu / (N * wall / INTERVAL):.0f} us per check; scrape {scrape * 1000:.0f} ms"
              f" for {total} samples; RSS {rss:.0f} MB (peak {hwm:.0f} MB)")
    assert time.monotonic() - started < 75
