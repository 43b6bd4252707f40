"""The ICMP backends' trade-off on 1,000 loopback hosts: native engine vs ping3 thread pool.

ping3 opens a socket per packet and blocks a worker thread per packet (64 workers): portable
(Windows, macOS) but costly. Run: .venv/bin/python bench/ping3_vs_native.py [--hosts 1000]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _verdict import finish

from probes import icmp, icmp_ping3
from probes.icmp import IcmpConfig

CONFIG = IcmpConfig(packets=1, timeout=1.0)


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run(name: str, targets: list[str]) -> dict[str, float]:
    c0, t0 = cpu(), time.perf_counter()
    if name == "native":
        results = await icmp.sweep(targets, CONFIG)
    else:
        results = await asyncio.gather(*(icmp_ping3.probe(t, CONFIG) for t in targets))
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"wall_s": wall, "cpu_s": used, "cpu_ms_per_probe": used / len(targets) * 1000,
            "lost": sum(not r.ok for r in results)}


async def main(hosts: int) -> None:
    targets = [f"127.12.{i // 250}.{i % 250 + 1}" for i in range(hosts)]
    await icmp.sweep(targets[:5], CONFIG)
    native = await run("native", targets)
    ping3 = await run("ping3", targets)
    await icmp.close()
    for name, r in (("native", native), ("ping3", ping3)):
        print(f"{name:7s} {hosts} hosts: wall {r['wall_s']:.3f} s  cpu {r['cpu_s']:.3f} s "
              f"({r['cpu_ms_per_probe']:.3f} ms/probe)  lost {int(r['lost'])}")
    print(f"ping3 costs {ping3['cpu_s'] / max(native['cpu_s'], 1e-9):.1f}x the CPU, "
          f"{ping3['wall_s'] / native['wall_s']:.1f}x the wall time")
    finish("ping3_vs_native", {"hosts": hosts, "native": native, "ping3": ping3},
           {"native_cheaper_than_ping3": native["cpu_s"] < ping3["cpu_s"],
            "native_lost_none": native["lost"] == 0})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    asyncio.run(main(parser.parse_args().hosts))
