"""The daemon's memory at 10,000 devices (budget, docs/architecture.md: RSS <= 150 MB).

Three figures:

1. the real daemon: ``python -m monitor.cli run --mock`` on 127.0.0.1 with a generated inventory
   (one ICMP check per device, answered by the mock probe), after /-/ready, two full cycles and
   two /metrics scrapes: VmRSS and VmHWM (peak) from /proc/PID/status;
2. the import-only baseline: ``python -c "import monitor.app"``;
3. in-process: tracemalloc's top 20 by module of what the Hall (started, first cycle done) holds.

    .venv/bin/python bench/memory.py [--devices 10000] [--interval 5] [--no-tracemalloc]

Loopback only. Ends with one JSON line, like the other bench/ scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _verdict import finish  # noqa: E402

from tests.agents.daemon import HallmonProcess, node, parse_metrics, small_inventory  # noqa: E402

BUDGET_MB = 150.0


def inventory_text(devices: int, interval: float) -> str:
    nodes = [node(f"dev-{i:05d}", f"127.40.{i // 250}.{i % 250 + 1}", floor=1 + i % 3)
             for i in range(devices)]
    return small_inventory(nodes, interval=f"{interval:g}s", timeout="1s")


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return tuple(int(re.search(rf"{k}:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]
                 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def _polls(text: str) -> float:
    return sum(v for _, v in parse_metrics(text).get("hallmon_poll_duration_seconds_count", []))


def daemon(devices: int, interval: float) -> dict[str, float]:
    # HallmonProcess prints the daemon's log on exit (for pytest); keep it out of the figures.
    with contextlib.redirect_stdout(io.StringIO()), \
            tempfile.TemporaryDirectory(prefix="hallmon-mem-") as tmp, \
            HallmonProcess(Path(tmp), inventory_text(devices, interval), ready_within=60,
                           args=("--log.level=info",)) as d:
        assert d.proc is not None
        pid = d.proc.pid
        ready = rss_mb(pid)
        base = _polls(d.metrics())
        d.wait_for(lambda: _polls(d.metrics()) >= base + 2 * devices, 3 * interval + 5,
                   "two full cycles", every=max(1.0, interval / 2))
        cycles = rss_mb(pid)
        d.metrics()
        d.metrics()
        scraped = rss_mb(pid)
        time.sleep(2.0)  # past the renderer's cache age: what the daemon holds between scrapes
        idle = rss_mb(pid)
    return {"ready_rss_mb": ready[0], "cycles_rss_mb": cycles[0], "rss_mb": scraped[0],
            "idle_rss_mb": idle[0], "peak_mb": idle[1]}


def import_baseline() -> float:
    code = ("import re, monitor.app; print(int(re.search(r'VmRSS:\\s+(\\d+)', "
            "open('/proc/self/status').read()).group(1)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return int(out) / 1024


def _module(filename: str) -> str:
    """A short module-ish name for a traceback frame's file."""
    path = Path(filename)
    parts = path.with_suffix("").parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1:]
            return ".".join(rest[:2]) if anchor == "site-packages" else ".".join(rest)
    return path.name


async def _in_process(inv: Path, state: Path) -> tuple[list[tuple[str, int]], int, int]:
    from monitor.app import Hall, Options

    tracemalloc.start(1)
    hall = Hall(Options(inventory=inv, state_dir=state, mock=True))
    try:
        await hall.start()
        deadline = time.monotonic() + 60
        # Hall has no readiness event to await (the daemon's /-/ready polls the flag too).
        while not hall.ready and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await hall.render_metrics()
        snap = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        await hall.stop()
        tracemalloc.stop()
    by_module: dict[str, int] = {}
    for stat in snap.statistics("filename"):
        name = _module(stat.traceback[0].filename)
        by_module[name] = by_module.get(name, 0) + stat.size
    top = sorted(by_module.items(), key=lambda kv: -kv[1])[:20]
    return top, current, peak


def in_process(devices: int, interval: float) -> tuple[list[tuple[str, int]], int, int]:
    with tempfile.TemporaryDirectory(prefix="hallmon-mem-") as tmp:
        inv = Path(tmp) / "inventory.yaml"
        inv.write_text(inventory_text(devices, interval), encoding="utf-8")
        return asyncio.run(_in_process(inv, Path(tmp) / "state"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--no-tracemalloc", action="store_true")
    a = ap.parse_args()

    imports = import_baseline()
    print(f"import monitor.app alone: RSS {imports:.1f} MB")
    d = daemon(a.devices, a.interval)
    print(f"daemon, {a.devices} devices: RSS {d['ready_rss_mb']:.1f} MB at ready, "
          f"{d['cycles_rss_mb']:.1f} MB after two cycles, {d['rss_mb']:.1f} MB after two "
          f"scrapes, {d['idle_rss_mb']:.1f} MB 2 s later; peak (VmHWM) {d['peak_mb']:.1f} MB "
          f"(budget {BUDGET_MB:.0f} MB)")
    result: dict[str, object] = {"devices": a.devices, "import_rss_mb":
                                 round(imports, 1), **{k: round(v, 1) for k, v in d.items()}}
    if not a.no_tracemalloc:
        top, current, peak = in_process(a.devices, a.interval)
        print(f"in-process (tracemalloc, Hall started, first cycle, one render): "
              f"{current / 2**20:.1f} MB traced, peak {peak / 2**20:.1f} MB; top 20 by module:")
        for name, size in top:
            print(f"  {size / 2**20:7.2f} MB  {name}")
        result["traced_mb"] = round(current / 2**20, 1)
        result["traced_peak_mb"] = round(peak / 2**20, 1)
    result["budget_mb"] = BUDGET_MB
    finish("memory", result, {"peak_rss_at_most_150mb": d["peak_mb"] <= BUDGET_MB})


if __name__ == "__main__":
    main()
