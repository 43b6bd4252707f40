"""Budget: the tally over 1,000,000 tickets answers in < 200 ms on SQLite.

Builds (once, cached under $HALLMON_BENCH_DIR or /tmp) a SQLite file with 1M tickets spread over
three years and over --sites halls sharing it (issue 17), then times tally() for each period and
grouping, and every set of filters the API offers (one to all six dimensions, one value each)
with every grouping, for each hall and across halls (site "*"), by month (the slowest 20 by day
and by week too). Prints one line per query (the filtered ones: the slowest few and a count),
then one JSON line with create_ticket's median on a fresh file store (what the pair rows cost a
write); exits non-zero if any median exceeds the budget. The cached file is named by the schema
version and the number of halls (a new schema builds a new one).

    .venv/bin/python bench/tally.py [--tickets N] [--sites N]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _verdict import finish

from monitor.store import NewTicket, Store, schema
from monitor.store.localtime import day_key
from monitor.store.migrations import LATEST
from monitor.tally import tally, tally_direct

BUDGET_S = 0.200
TZ = "Asia/Shanghai"
START = datetime(2023, 1, 1, tzinfo=UTC)
CATS = ["fault", "preventive", "line", "enrolment", "installation", "relocation", "inspection",
        "other"]
# One value per filter of the tally API (monitor.store.tickets.TALLY_DIMS), as built below.
FILTER_VALUES = {"category": "fault", "class": "camera", "floor": "3", "owner": "unit-5",
                 "assignee": "tech-7", "status": "resolved"}
CLASSES = ["kiosk", "led", "camera", "nvr", "switch", "line", "printer", "ups", "gate", "queue"]


def build(path: Path, n: int, sites: list[str]) -> Store:
    """The bench database, opened across its halls (site "*")."""
    fresh = not path.exists()
    store = Store(f"sqlite:///{path}", timezone=TZ)
    if not fresh:
        store.close()
        return Store(f"sqlite:///{path}", timezone=TZ, site="*")
    rng = random.Random(5)
    t0 = time.perf_counter()
    with store.tx() as conn:
        batch = []
        for i in range(n):
            opened = START + timedelta(seconds=rng.randrange(3 * 365 * 86400))
            done = rng.random() < 0.9
            status = rng.choice(["resolved", "closed"]) if done else rng.choice(
                ["open", "in_progress"])
            batch.append({
                "site": rng.choice(sites),  # the same device ids in every hall
                "device_id": f"dev-{rng.randrange(2000)}", "device_class": rng.choice(CLASSES),
                "floor": str(rng.randrange(1, 6)), "owner": f"unit-{rng.randrange(12)}",
                "category": rng.choice(CATS), "status": status, "summary": "bench",
                "reporter": "bench", "assignee": f"tech-{rng.randrange(15)}",
                "source": "import", "opened_at": opened, "updated_at": opened,
                "resolved_at": opened + timedelta(hours=rng.randrange(1, 72)) if done else None,
                "local_day": day_key(opened, store.tz),
            })
            if len(batch) == 20000:
                conn.execute(schema.tickets.insert(), batch)
                batch = []
                print(f"  inserted {i + 1}", end="\r", file=sys.stderr)
        if batch:
            conn.execute(schema.tickets.insert(), batch)
    store.close()
    every = Store(f"sqlite:///{path}", timezone=TZ, site="*")
    every.rebuild_tally()  # every hall's tally and pair rows ("*"; one site's store: its own)
    every.close()
    print(f"built {n} tickets in {time.perf_counter() - t0:.1f} s: {path}", file=sys.stderr)
    return Store(f"sqlite:///{path}", timezone=TZ, site="*")


def create_median(runs: int = 400) -> float:
    """create_ticket's median on a fresh file store: one write with its tally and pair rows."""
    samples = []
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{Path(folder) / 'create.db'}", timezone=TZ, site="hall-a")
        for i in range(runs):
            new = NewTicket(category="fault", summary="bench", reporter="bench",
                            device_id=f"dev-{i % 50}", device_class="kiosk", floor=str(i % 5),
                            owner=f"unit-{i % 7}", assignee=f"tech-{i % 9}",
                            opened_at=START + timedelta(minutes=i))
            t = time.perf_counter()
            store.create_ticket(new)
            samples.append(time.perf_counter() - t)
        store.close()
    return statistics.median(samples[50:])  # past the first writes' warm-up


def timed(fn, runs: int = 7) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm the page cache once
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=2, help="halls sharing the database (1-26)")
    args = ap.parse_args()
    sites = [f"hall-{chr(ord('a') + i)}" for i in range(args.sites)]
    folder = Path(os.environ.get("HALLMON_BENCH_DIR", "/tmp"))
    every = build(folder / f"hallmon-bench-tally-s{LATEST}-{args.sites}x{args.tickets}.db",
                  args.tickets, sites)
    views = {site: every.for_site(site) for site in ("*", *sites)}
    lo, hi = date(2023, 1, 1), date(2025, 12, 31)
    # the counts are checked, not only timed: every ticket in the tally across halls
    counted = sum(r.count for r in tally(views["*"], "year", lo, hi))
    worst = 0.0
    for site, store in views.items():
        for period in ("day", "week", "month", "quarter", "year"):
            for group in (None, "category", "class", "assignee", "status"):
                rows: list = []
                s = timed(lambda st=store, p=period, g=group, r=rows: r.append(
                    tally(st, p, lo, hi, g)))
                total = sum(r.count for r in rows[-1])
                worst = max(worst, s)
                print(f"tally site={site:6} period={period:7} group_by={group or '-':8} "
                      f"{s * 1000:7.1f} ms  ({len(rows[-1])} rows, {total} tickets)")
    # Every set of filters the API offers (GET /api/v1/tickets/tally), one value each, with
    # every grouping: the counts a hall asks for ("faults on floor 3 by status").
    timings: list[tuple[float, str, str, str | None, int, str]] = []
    dims = list(FILTER_VALUES)
    for site, store in views.items():
        for k in range(1, len(dims) + 1):
            for chosen in itertools.combinations(dims, k):
                filters = {d: FILTER_VALUES[d] for d in chosen}
                for group in (None, *dims):
                    rows = []
                    s = timed(lambda st=store, g=group, f=filters, r=rows: r.append(
                        tally(st, "month", lo, hi, g, f)), runs=3)
                    label = ",".join(f"{d}={v}" for d, v in filters.items())
                    timings.append((s, site, label, group, sum(r.count for r in rows[-1]),
                                    "month"))
    # The slowest by month again by day and by ISO week (folded in Python, not SQL: up to
    # days x values rows per site come back): every period the API offers.
    timings.sort(key=lambda t: t[0], reverse=True)
    for _, site, label, group, _, _ in timings[:20]:
        filters = dict(kv.split("=") for kv in label.split(","))
        for period in ("day", "week"):
            rows = []
            s = timed(lambda st=views[site], p=period, g=group, f=filters, r=rows: r.append(
                tally(st, p, lo, hi, g, f)), runs=3)
            timings.append((s, site, label, group, sum(r.count for r in rows[-1]), period))
    timings.sort(key=lambda t: t[0], reverse=True)
    for s, site, label, group, total, period in timings[:12]:
        print(f"tally site={site:6} period={period:5} filter {label:40} "
              f"group_by={group or '-':8} {s * 1000:7.1f} ms  ({total} tickets)")
    worst_filtered = timings[0][0]
    worst_every = max(t[0] for t in timings if t[1] == "*")
    worst_month = max(t[0] for t in timings if t[5] == "month")
    median = statistics.median(t[0] for t in timings)
    print(f"{len(timings)} filtered tallies (every filter set x every grouping, per hall and "
          f"across, by month; the 20 slowest by day and week too), slowest above; median "
          f"{median * 1000:.1f} ms; worst across halls (*) {worst_every * 1000:.1f} ms, worst by "
          f"month {worst_month * 1000:.1f} ms")
    with every.read() as conn:
        s = timed(lambda: tally_direct(conn, 20230101, 20251231, "category", {}), runs=3)
    print(f"reference: GROUP BY over the tickets table {s * 1000:.0f} ms")
    every.close()
    create_s = create_median()
    print(f"worst tally {worst * 1000:.1f} ms, worst filtered {worst_filtered * 1000:.1f} ms, "
          f"budget {BUDGET_S * 1000:.0f} ms; create_ticket median {create_s * 1000:.2f} ms")
    finish("tally", {"tickets": args.tickets, "sites": len(sites), "worst_ms": worst * 1000,
                     "worst_filtered_ms": worst_filtered * 1000,
                     "worst_filtered_every_site_ms": worst_every * 1000,
                     "worst_filtered_by_month_ms": worst_month * 1000,
                     "filtered_tallies": len(timings),
                     "direct_group_by_ms": s * 1000, "create_ticket_median_ms": create_s * 1000},
           {"every_ticket_counted": counted == args.tickets,
            "worst_tally_under_200ms": worst < BUDGET_S,
            "worst_filtered_tally_under_200ms": worst_filtered < BUDGET_S})


if __name__ == "__main__":
    main()
