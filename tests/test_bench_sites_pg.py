"""bench/sites_pg.py (issue 17) on a tiny plan, so the bench cannot rot: three halls of 40 devices,
two pollers each, on a real PostgreSQL, for a few seconds of polling with faults.

Only the bench's correctness checks are asserted here (one open incident per device in fault,
halls apart, tickets once, every page sent once, every lease held, no hand-over); its latency
budget is the bench's business (rule 4: no timed assertions in tests). Then a row of another
hall's is planted, and the same checks must catch it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.sites_pg import Plan, faults, kind_of, run, site_id, summarise, touched

TINY = Plan(sites=3, devices=40, pollers=2, duration=10.0, interval=1.0, fault_rate=0.1,
            heartbeat=2.0, lease=15.0, processes=1, group=10)
# Not "lease_traffic_linear_in_pollers": its spread between pollers is a rate over a window
# (the bench's business); its statements per heartbeat, a count, are asserted below.
CORRECTNESS = ("one_open_incident_per_device_in_fault", "sites_apart", "tickets_once",
               "no_page_lost_or_twice", "no_write_lost", "no_handover_without_a_death",
               "every_lease_held")


def test_the_plan_is_the_same_in_every_process_and_differs_per_hall() -> None:
    assert faults(TINY, 0) == faults(TINY, 0)
    assert faults(TINY, 0) != faults(TINY, 1)
    assert len(faults(TINY, 0)) == 4  # 10 % of 40
    # A faulted switch takes the devices below it along (unreachable).
    plan = Plan(devices=40, group=10, fault_rate=0.1)
    for site in range(20):
        for f in faults(plan, site):
            if f["device"] == "dev-0010":
                assert {f"dev-{k:04d}" for k in range(11, 20)} <= touched(plan, site)
    assert kind_of("UPDATE pollers SET heartbeat_at=1") == "lease:w"
    assert kind_of("SELECT clock_timestamp()") == "lease"
    assert kind_of("INSERT INTO ticket_tally (site) VALUES (1)") == "tally:w"
    assert kind_of("SELECT outbox.id FROM outbox FOR UPDATE SKIP LOCKED") == "outbox"
    assert kind_of("SAVEPOINT sa_savepoint_1") == "savepoint"


def test_the_bench_core_on_three_small_halls(pg_server: Any) -> None:
    outcome = run(TINY, pg_server.new_database())
    got = summarise(outcome)
    f, budgets = got["figures"], got["budgets"]
    assert {k: budgets[k] for k in CORRECTNESS} == dict.fromkeys(CORRECTNESS, True), f["checks"]
    # The fault stream happened and went through every store path.
    assert f["incidents"]["opened"] > 0 and f["incidents"]["closed"] > 0, f["incidents"]
    assert f["tickets_auto"] > 0 and f["pages_received"] == f["outbox_rows"] > 0
    assert {"incidents", "tickets", "tally", "outbox", "lease"} <= set(f["writes_per_s"])
    assert f["lease"]["pollers"] == 6 and f["lease"]["heartbeats"] >= 6
    assert 4 <= f["lease"]["statements_per_heartbeat"] <= 6  # store/pollers.py heartbeat()
    assert f["incident_write_ms"]["n"] > 0 and f["pg_connections"] >= 6

    # Another hall's incident for a device this hall never had in fault: caught twice over
    # (an open incident nobody holds in fault, and a row outside the hall's faults).
    healthy = next(f"dev-{j:04d}" for j in range(TINY.devices)
                   if f"dev-{j:04d}" not in touched(TINY, 1))
    with psycopg.connect(outcome.url.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as db:
        db.execute("INSERT INTO incidents (site, device_id, \"check\", status, cause, "
                   "started_at, open_key) VALUES (%s, %s, 'ping', 'down', 'planted', %s, %s)",
                   (site_id(1), healthy, datetime.now(UTC), f"{healthy}|ping|down"))
    again = summarise(outcome)["budgets"]
    assert not again["one_open_incident_per_device_in_fault"]
    assert not again["sites_apart"]
