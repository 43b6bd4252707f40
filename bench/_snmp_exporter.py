"""prometheus-snmp-exporter as the benchmarks' reference (bench/daemon.py, bench/snmp_get.py).
Not a benchmark itself (``make bench`` skips ``_*.py``).

``scrape_all`` starts the exporter on a free loopback port with bench/snmp_exporter.yml (module
``hallmon4``: the 4 OIDs hallmon's probe reads, in one GET), warms it up, then scrapes every
target with a bound on scrapes in flight and reads the exporter's own CPU from /proc. A scrape
that does not answer 200 with every OID is a failure.

    from _snmp_exporter import installed, scrape_all
    if installed():
        run = await scrape_all(targets, agent.port, in_flight=100)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

CONFIG = Path(__file__).resolve().parent / "snmp_exporter.yml"
EXE = "prometheus-snmp-exporter"
WARM_UP = 50  # scrapes before the measured ones (its first connections, Go's first GC)


def installed() -> str | None:
    """The exporter's path, None when it is not installed."""
    return shutil.which(EXE)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Scrapes:
    scrapes: int
    wall_s: float
    cpu_s: float  # the exporter's own, over the measured scrapes
    failures: int  # warm-up ones included


async def scrape_all(targets: Sequence[str], port: int, in_flight: int) -> Scrapes:
    """Scrape ``hallmon4`` of every target (``address``, its agent on ``port``), at most
    ``in_flight`` at once. Raises SystemExit when the exporter is not installed."""
    exe = installed()
    if exe is None:
        raise SystemExit(f"{EXE} is not installed")
    web = _free_port()
    proc = await asyncio.create_subprocess_exec(
        exe, f"--config.file={CONFIG}", f"--web.listen-address=127.0.0.1:{web}",
        "--log.level=error", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            for _ in range(200):  # until it listens (bounded: 10 s)
                try:
                    await client.get(f"http://127.0.0.1:{web}/")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            limit = asyncio.Semaphore(in_flight)
            failures = 0

            async def scrape(target: str) -> None:
                nonlocal failures
                async with limit:
                    r = await client.get(f"http://127.0.0.1:{web}/snmp", params={
                        "module": "hallmon4", "target": f"{target}:{port}"})
                if r.status_code != 200 or "ifNumber" not in r.text:
                    failures += 1

            await asyncio.gather(*(scrape(t) for t in itertools.islice(
                itertools.cycle(targets), WARM_UP)))
            c0, t0 = proc_cpu(proc.pid), time.perf_counter()
            await asyncio.gather(*(scrape(t) for t in targets))
            wall, cpu = time.perf_counter() - t0, proc_cpu(proc.pid) - c0
        return Scrapes(len(targets), wall, cpu, failures)
    finally:
        proc.terminate()
        await proc.wait()
