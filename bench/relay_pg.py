"""Budget: what relaying push beats between pollers of one site costs (monitor/relay.py), on a
real PostgreSQL on loopback. Three pollers (each its own store, writer thread and relay); every
beat reaches p0 (the poller behind the kiosks' address), p1 and p2 read the beats once a second,
as the daemon does:

- p0's writes: at most 2 statements per ``BEAT_LINGER`` (0.5 s), whatever the number of beats
  (one upsert, ``BEAT_LINGER`` after a beat, carries every beat since the last write): ~0.24
  statements per beat at 17 beats/s (1,000 kiosks beating every minute), ~0.02 at 170/s;
- each read (every second, per poller): p99 < 100 ms, whatever the number of beats;
- a beat reaches the other pollers within ``RELAY_SLACK`` (p99), and every beat reaches them.

Default load: 1,000 push checks each beating every 60 s (17 beats/s), for 12 s; ``--every 6``
is ten times that. Prints one JSON line; exits non-zero over budget.

    .venv/bin/python bench/relay_pg.py [--checks 1000] [--every 10] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _verdict import finish
from sqlalchemy import event

from monitor.relay import BEAT_LINGER, RELAY_EVERY, RELAY_SLACK, BeatRelay
from monitor.store import Store
from monitor.store.aio import AsyncStore
from tests.agents.postgres import postgres_server


def _counted(store: Store) -> list[int]:
    n = [0]

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        n[0] += 1

    return n


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


async def run(url: str, checks: int, every: float, seconds: float) -> dict[str, Any]:
    stores = [AsyncStore(Store(url, site="hall-a")) for _ in range(3)]
    counts = [_counted(s.store) for s in stores]
    relays = [BeatRelay(s, f"p{i}") for i, s in enumerate(stores)]
    sent: dict[tuple[str, str], float] = {}
    delays: list[float] = []
    reads: list[float] = []
    rows: list[int] = []
    seen = [0, 0, 0]
    beats = 0
    stop = time.monotonic() + seconds

    async def kiosks() -> None:
        nonlocal beats
        step = every / checks
        t = time.monotonic()
        i = 0
        while time.monotonic() < stop:
            key = (f"kiosk-{i % checks:04d}", "heartbeat")
            sent[key] = time.monotonic()
            relays[0].record(*key, "up", "")
            beats += 1
            i += 1
            t += step
            await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def reader(k: int) -> None:
        while time.monotonic() < stop + 2 * RELAY_EVERY:
            await asyncio.sleep(RELAY_EVERY)
            t = time.monotonic()
            got = await relays[k].read()
            now = time.monotonic()
            reads.append(now - t)
            rows.append(len(got))
            seen[k] += len(got)
            delays.extend(now - sent[(b.device, b.check)] for b in got)

    await asyncio.sleep(0)
    before = [c[0] for c in counts]
    await asyncio.gather(kiosks(), reader(1), reader(2))
    await stores[0].drain()
    writes = counts[0][0] - before[0]
    read_statements = sum(counts[k][0] - before[k] for k in (1, 2)) / max(1, len(reads))
    for s in stores:
        await s.aclose()
    return {"beats": beats, "writes_per_beat": round(writes / max(1, beats), 4),
            "writes_per_s": round(writes / seconds, 2),
            "statements_per_read": round(read_statements, 2),
            "rows_per_read": round(statistics.mean(rows), 1) if rows else 0,
            "read_ms_p50": round(_p(reads, 50) * 1000, 2),
            "read_ms_p99": round(_p(reads, 99) * 1000, 2),
            "relay_delay_s_p50": round(_p(delays, 50), 3),
            "relay_delay_s_p99": round(_p(delays, 99), 3),
            "seen_by_p1": seen[1], "seen_by_p2": seen[2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--every", type=float, default=60.0)
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    with postgres_server() as server:
        got = asyncio.run(run(server.new_database(), args.checks, args.every, args.seconds))
    print(f"{got['beats']} beats: {got['writes_per_beat']} write statements per beat, a read "
          f"{got['read_ms_p50']} ms (p99 {got['read_ms_p99']}) of {got['rows_per_read']} rows, "
          f"relayed in {got['relay_delay_s_p50']} s (p99 {got['relay_delay_s_p99']})")
    finish("relay_pg", {"checks": args.checks, "every_s": args.every, **got},
           {"writes_within_linger": got["writes_per_s"] <= 2 / BEAT_LINGER * 1.1,
            "read_p99_under_100ms": got["read_ms_p99"] < 100,
            "relay_p99_within_slack": got["relay_delay_s_p99"] <= RELAY_SLACK,
            # each beat read once per reader, at most (one row per check: a later beat of the
            # same check may replace one not yet read, so "at least" is the distinct keys)
            "every_check_relayed": min(got["seen_by_p1"], got["seen_by_p2"]) >= min(
                args.checks, got["beats"])})


if __name__ == "__main__":
    main()
