"""Budget: what pollers sharing a site (issue 17) pay to show each other's devices, on a real
PostgreSQL on loopback, at 10,000 devices of one site:

- the owner records a burst of status changes (every device at once, as at start-up) in one
  queued transaction: < 2 s; ten changes: < 50 ms;
- every poller reads the site's view (``peer_view``: statuses and open incidents) once a
  heartbeat: < 250 ms per read (the default heartbeat is 5 s), with 500 devices in an incident.

Prints one JSON line; exits non-zero over budget.

    .venv/bin/python bench/device_status.py [--devices 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _verdict import finish

from monitor.store import Store
from tests.agents.postgres import postgres_server

READS = 10


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    args = ap.parse_args()
    n = args.devices
    with postgres_server() as server:
        store = Store(server.new_database(), timezone="Asia/Shanghai", site="hall-a")
        try:
            now = datetime.now(UTC)
            rows = [(f"d-{i:05d}", "up", "", now) for i in range(n)]
            t = time.perf_counter()
            store.record_statuses("p0", rows)
            burst = time.perf_counter() - t
            down = [(d, "down", "no reply", now + timedelta(seconds=1)) for d, *_ in rows[:500]]
            for d, *_ in down:
                store.open_incident(d, "ping", "down", "no reply", now)
            t = time.perf_counter()
            store.record_statuses("p0", down[:10])
            ten = time.perf_counter() - t
            store.record_statuses("p0", down)
            t = time.perf_counter()
            for _ in range(READS):
                view = store.peer_view()
            read = (time.perf_counter() - t) / READS
            assert len(view) == n and sum(v.status == "down" for v in view.values()) == 500
        finally:
            store.close()
    print(f"{n} devices: record all {burst * 1000:.0f} ms, 10 changes {ten * 1000:.1f} ms, "
          f"peer_view {read * 1000:.1f} ms")
    finish("device_status", {"devices": n, "record_all_ms": round(burst * 1000, 1),
                             "record_10_ms": round(ten * 1000, 2),
                             "peer_view_ms": round(read * 1000, 2)},
           {"record_all_under_2s": burst < 2.0, "record_10_under_50ms": ten < 0.05,
            "peer_view_under_250ms": read < 0.25})


if __name__ == "__main__":
    main()
