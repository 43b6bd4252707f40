"""Budget: migrating a single-site PostgreSQL store to sites (``_v5_sites``, issue 17) and on to
today's schema (the pair table of issue 12 included) takes < 20 s for 100,000 tickets,
incidents and outbox rows, tally rebuild included.

Builds a store of schema v4 (no site column, keys unique per database) on a throw-away real
PostgreSQL on loopback, fills it with N rows per table in the database, opens it with today's
Store (which migrates and rebuilds the tally table) and times that opening. Prints one JSON line.

    .venv/bin/python bench/sites_migration.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from _verdict import finish

from monitor.store import Store
from monitor.store.engine import make_engine
from monitor.store.migrations import LATEST
from tests.agents.postgres import postgres_server
from tests.test_sites import _v4_shape

BUDGET_S = 20.0


def fill(url: str, n: int) -> None:
    engine = make_engine(url)
    with engine.begin() as c:
        _v4_shape().create_all(c)
        for v in range(1, 5):
            c.execute(sa.text("INSERT INTO schema_version VALUES (:v, now())"), {"v": v})
        c.execute(sa.text("INSERT INTO store_meta VALUES ('timezone', 'Asia/Shanghai')"))
        c.execute(sa.text(
            "INSERT INTO tickets (device_id, device_class, floor, category, status, summary, "
            "reporter, source, opened_at, updated_at, local_day, incident_key) "
            "SELECT 'd-' || (i % 1000), 'kiosk', '1', 'fault', 'open', 's', 'r', 'auto', "
            "now() - (i || ' minutes')::interval, now(), 20250101, 'incident:' || i "
            "FROM generate_series(1, :n) i"), {"n": n})
        c.execute(sa.text(
            "INSERT INTO incidents (device_id, \"check\", status, cause, started_at, ended_at) "
            "SELECT 'd-' || (i % 1000), 'ping', 'down', '', now() - (i || ' minutes')::interval, "
            "now() FROM generate_series(1, :n) i"), {"n": n})
        c.execute(sa.text(
            "INSERT INTO outbox (key, channel, payload, status, attempts, next_attempt_at, "
            "created_at) SELECT 'k' || i, 'robot', '{}', 'sent', 1, now(), now() "
            "FROM generate_series(1, :n) i"), {"n": n})
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with postgres_server() as server:
        url = server.new_database()
        fill(url, args.rows)
        started = time.perf_counter()
        store = Store(url, timezone="Asia/Shanghai")
        took = time.perf_counter() - started
        counted = store.ticket_counts()["total"]["fault"]
        store.close()
    print(f"v4 -> v{LATEST} with {args.rows} rows per table: {took:.2f} s "
          f"(tally and pairs rebuilt: {counted})")
    finish("sites_migration", {"rows": args.rows, "migrate_s": round(took, 3)},
           {"migrate_under_20s": took < BUDGET_S and counted == args.rows})


if __name__ == "__main__":
    main()
