"""Budget: the yearly report of a busy hall (200,000 tickets over three years, ~67k in the year,
300 devices) builds in < 10 s and renders as XLSX in < 30 s on SQLite; the daily report in < 2 s.

Reuses bench/tally.py's database (cached under $HALLMON_BENCH_DIR or /tmp). Prints one line per
measurement and, last, one JSON line; exits non-zero over budget.

    .venv/bin/python bench/report.py [--tickets N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tally import build  # bench/tally.py: the shared ticket database

from monitor.reports import build_report, render

BUDGET_S = {"year_build": 10.0, "year_xlsx": 30.0, "day_build": 2.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tickets", type=int, default=200_000)
    args = ap.parse_args()
    folder = Path(os.environ.get("HALLMON_BENCH_DIR", "/tmp"))
    store = build(folder / f"hallmon-bench-tally-{args.tickets}.db", args.tickets)
    got: dict[str, float] = {}
    t = time.perf_counter()
    year = build_report(store, "year", date(2024, 6, 1))
    got["year_build"] = time.perf_counter() - t
    t = time.perf_counter()
    data = render(year, "xlsx", "zh")
    got["year_xlsx"] = time.perf_counter() - t
    t = time.perf_counter()
    build_report(store, "day", date(2024, 6, 3))
    got["day_build"] = time.perf_counter() - t
    store.close()
    listed = len(year.section("ticket_list").rows)
    for k, v in got.items():
        print(f"{k:11} {v:6.2f} s (budget {BUDGET_S[k]:.0f} s)")
    over = [k for k, v in got.items() if v > BUDGET_S[k]]
    print(json.dumps({"bench": "report", "tickets": args.tickets, "listed": listed,
                      "xlsx_bytes": len(data), **{k: round(v, 2) for k, v in got.items()},
                      "ok": not over}))
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
