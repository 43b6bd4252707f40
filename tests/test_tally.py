"""Tally invariants (hypothesis) and hand-checked MTTR, backlog and availability examples."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from monitor.store import InvalidValue, NewTicket, NotFound, Store, schema
from monitor.store.localtime import date_key
from monitor.store.migrations import MIGRATIONS, _v8_tally2_pairs
from monitor.tally import (
    GROUPS,
    DeviceRef,
    availability,
    backlog,
    mttr,
    open_at,
    opening_intervals,
    tally,
    tally_direct,
)

CATS = ["fault", "line", "inspection"]
START = datetime(2024, 12, 20, tzinfo=UTC)
SPAN = timedelta(days=400)


def new(cat: str, cls: str, assignee: str | None, at: datetime) -> NewTicket:
    return NewTicket(category=cat, summary="s", reporter="r", device_class=cls, floor="1",
                     assignee=assignee, opened_at=at)


op = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(CATS), st.sampled_from(["kiosk", "ups"]),
              st.sampled_from([None, "zhang", "wang"]),
              st.integers(0, int(SPAN.total_seconds()))),
    st.tuples(st.just("move"), st.integers(0, 30), st.sampled_from(
        ["in_progress", "resolved", "closed", "open"])),
    st.tuples(st.just("edit"), st.integers(0, 30), st.sampled_from(CATS),
              st.sampled_from([None, "li"])),
)


@pytest.fixture
def mem() -> Iterator[Store]:
    s = Store("sqlite://", timezone="Asia/Shanghai")
    yield s
    s.close()


def apply(store: Store, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    ids: list[int] = []
    for o in ops:
        if o[0] == "new":
            at = START + timedelta(seconds=o[4])
            ids.append(store.create_ticket(new(o[1], o[2], o[3], at)).id)
        elif ids and o[0] == "move":
            tid = ids[o[1] % len(ids)]
            try:
                store.transition(tid, o[2], "t")
            except Exception as exc:  # InvalidTransition is part of the story
                assert "cannot move" in str(exc)
        elif ids:
            store.update_ticket(ids[o[1] % len(ids)], "t", {"category": o[2], "assignee": o[3]})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=40))
def test_tally_invariants(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    store = Store("sqlite://", timezone="Asia/Shanghai")
    try:
        apply(store, ops)
        lo, hi = date(2024, 12, 1), date(2026, 2, 1)
        total = sum(r.count for r in tally(store, "year", lo, hi))
        assert total == sum(1 for o in ops if o[0] == "new")
        for period in ("day", "week", "month", "quarter", "year"):
            plain = {r.period: r.count for r in tally(store, period, lo, hi)}
            assert sum(plain.values()) == total
            for g in GROUPS:  # every grouping partitions each period
                grouped: Counter[str] = Counter()
                for r in tally(store, period, lo, hi, g):
                    grouped[r.period] += r.count
                assert dict(grouped) == plain
        # a filter's values partition the whole, and a filtered tally agrees with the grouped one
        by_cat: Counter[str | None] = Counter()
        for r in tally(store, "year", lo, hi, "category"):
            by_cat[r.group] += r.count
        for g in ("category", "class", "assignee", "status"):
            values = {r.group or "" for r in tally(store, "year", lo, hi, g)}
            parts = [sum(r.count for r in tally(store, "year", lo, hi, filters={g: v}))
                     for v in values]
            assert sum(parts) == total
        for cat, n in by_cat.items():
            assert sum(r.count for r in tally(store, "month", lo, hi,
                                              filters={"category": cat or ""})) == n
        # days fold into months, months into quarters, quarters into the year
        days = tally(store, "day", lo, hi)
        months = Counter({r.period: r.count for r in tally(store, "month", lo, hi)})
        assert Counter(_sum_by(days, lambda p: p[:7])) == months
        quarters = {r.period: r.count for r in tally(store, "quarter", lo, hi)}
        assert _sum_by(list(tally(store, "month", lo, hi)),
                       lambda p: f"{p[:4]}-Q{(int(p[5:7]) - 1) // 3 + 1}") == quarters
        # the maintained table equals a GROUP BY over the raw rows
        for g in (None, *GROUPS):
            kept = {k: v for k, v in _days(store, lo, hi, g).items() if v}
            with store.read() as conn:
                direct = tally_direct(conn, date_key(lo), date_key(hi), g, {})
            assert kept == direct
        # every single filter, with every grouping, equals the GROUP BY over the raw rows
        # (those the tally table holds are read from it: issue 12)
        for f in GROUPS:
            for v in {r.group or "" for r in tally(store, "year", lo, hi, f)} | {"nobody"}:
                for g in (None, *GROUPS):
                    kept = {k: n for k, n in _days(store, lo, hi, g, {f: v}).items() if n}
                    with store.read() as conn:
                        direct = tally_direct(conn, date_key(lo), date_key(hi), g, {f: v})
                    assert kept == direct, (f, v, g)
    finally:
        store.close()


def _days(store: Store, lo: date, hi: date, g: str | None,
          filters: dict[str, str] | None = None, period: str | None = None,
          ) -> dict[tuple[int, str | None], int]:
    """Counts per (day, group), or per (period key, group) folded by SQL for a period."""
    from monitor.tally import _SQL_BUCKETS, _day_counts

    return _day_counts(store, lo, hi, g, filters or {},
                       None if period is None else _SQL_BUCKETS[period])


def _fold(days: dict[tuple[int, str | None], int], period: str | None,
          ) -> dict[tuple[int, str | None], int]:
    """Day counts summed per month/quarter/year key, by hand (the reference for _days)."""
    key = {None: lambda d: d, "month": lambda d: d // 100, "year": lambda d: d // 10000,
           "quarter": lambda d: d // 10000 * 10 + (d // 100 % 100 - 1) // 3 + 1}[period]
    out: Counter[tuple[int, str | None]] = Counter()
    for (d, v), n in days.items():
        out[(key(d), v)] += n
    return {k: n for k, n in out.items() if n}


def _sum_by(rows: list, key) -> dict[str, int]:  # type: ignore[no-untyped-def,type-arg]
    out: Counter[str] = Counter()
    for r in rows:
        out[key(r.period)] += r.count
    return dict(out)


def test_local_days_follow_the_site_timezone(mem: Store) -> None:
    # 2024-12-31 17:00 UTC is 2025-01-01 01:00 in Shanghai: counted in 2025, W01, Q1.
    mem.create_ticket(new("fault", "kiosk", None, datetime(2024, 12, 31, 17, tzinfo=UTC)))
    lo, hi = date(2024, 1, 1), date(2025, 12, 31)
    assert [(r.period, r.count) for r in tally(mem, "year", lo, hi)] == [("2025", 1)]
    assert tally(mem, "week", lo, hi)[0].period == "2025-W01"
    assert tally(mem, "day", lo, hi)[0].period == "2025-01-01"


def test_filtered_tally_reads_the_tally_and_pair_tables_up_to_two_dimensions(mem: Store) -> None:
    from monitor.tally import _prefolded

    at = datetime(2025, 3, 3, 4, tzinfo=UTC)
    for cat, cls in [("fault", "kiosk"), ("fault", "ups"), ("line", "kiosk")]:
        mem.create_ticket(new(cat, cls, None, at))
    lo, hi = date_key(date(2025, 1, 1)), date_key(date(2025, 12, 31))
    with mem.read() as conn:
        pre = partial(_prefolded, conn, ["default"], lo, hi)  # this store's one site
        assert pre(None, {"class": "kiosk"}) == {(20250303, None): 2}
        assert pre("status", {"category": "fault"}) == {(20250303, "open"): 2}
        assert pre("category", {"status": "open"}) == {
            (20250303, "fault"): 2, (20250303, "line"): 1}
        assert pre("class", {"category": "fault"}) == {
            (20250303, "kiosk"): 1, (20250303, "ups"): 1}
        assert pre(None, {"category": "fault", "class": "ups"}) == {
            (20250303, None): 1}
        assert pre("class", {"category": "fault", "class": "ups"}) == {
            (20250303, "ups"): 1}
        # three dimensions: the dims index (tally._dims_scan), not the pair table
        assert pre("status", {"category": "fault", "class": "ups"}) is None


def test_a_tally_across_halls_of_an_empty_store_is_empty_and_still_checks_filters(
        mem: Store) -> None:
    every, lo, hi = mem.for_site("*"), date(2025, 1, 1), date(2025, 12, 31)
    assert tally(every, "month", lo, hi, "class", filters={"floor": "3"}) == []
    assert tally(every, "day", lo, hi) == tally(every, "year", lo, hi, "status") == []
    with pytest.raises(InvalidValue, match="unknown filter: colour"):
        tally(every, "month", lo, hi, filters={"colour": "red"})


def test_faults_on_a_floor_by_category_from_the_pair_table(mem: Store) -> None:
    """Issue 12: "floor=2 grouped by category" (1.4-1.6 s at 1M tickets over the tickets)."""
    at = datetime(2025, 3, 3, 4, tzinfo=UTC)
    for cat, floor in [("fault", "2"), ("fault", "2"), ("line", "2"), ("fault", "3")]:
        mem.create_ticket(replace(new(cat, "kiosk", None, at), floor=floor))
    rows = tally(mem, "month", date(2025, 1, 1), date(2025, 12, 31), "category",
                 filters={"floor": "2"})
    assert [(r.period, r.group, r.count) for r in rows] == [("2025-03", "fault", 2),
                                                            ("2025-03", "line", 1)]
    with mem.read() as conn:  # read from the pair rows (the tickets are not asked)
        pairs = conn.execute(select(schema.ticket_pairs.c.by_value, schema.ticket_pairs.c.n)
                             .where(schema.ticket_pairs.c.dim == "floor",
                                    schema.ticket_pairs.c.value == "2",
                                    schema.ticket_pairs.c.by_dim == "category")).all()
    assert sorted(pairs) == [("fault", 2), ("line", 1)]


def test_mttr_and_backlog(mem: Store) -> None:
    t0 = datetime(2025, 3, 3, 1, tzinfo=UTC)
    a = mem.create_ticket(new("fault", "kiosk", None, t0))
    b = mem.create_ticket(new("fault", "kiosk", None, t0))
    mem.create_ticket(new("fault", "ups", None, t0))
    mem.transition(a.id, "resolved", "x", at=t0 + timedelta(hours=2))
    mem.transition(b.id, "resolved", "x", at=t0 + timedelta(hours=4, days=7))
    assert mttr(mem, date(2025, 3, 1), date(2025, 3, 31)) == {"kiosk": (2 + 4 + 168) * 1800.0}
    weeks = backlog(mem, "week", date(2025, 3, 3), date(2025, 3, 16))
    assert weeks == [("2025-W10", 2), ("2025-W11", 1)]
    # open_at (one COUNT) agrees with the backlog at each cut
    cuts = [datetime(2025, 3, 9, 16, tzinfo=UTC), datetime(2025, 3, 16, 16, tzinfo=UTC)]
    assert [open_at(mem, c) for c in cuts] == [2, 1]
    assert open_at(mem, t0) == 0 and open_at(mem, t0 + timedelta(hours=3)) == 2


def test_opening_hours_parse_and_span() -> None:
    from zoneinfo import ZoneInfo

    spans = opening_intervals("Mon-Fri 08:30-18:00", date(2025, 3, 3), date(2025, 3, 9),
                              ZoneInfo("Asia/Shanghai"))
    assert len(spans) == 5 and spans[0][0] == datetime(2025, 3, 3, 0, 30, tzinfo=UTC)
    with pytest.raises(InvalidValue, match="expected like"):
        opening_intervals("weekdays 9-5", date(2025, 3, 3), date(2025, 3, 3), ZoneInfo("UTC"))


def test_availability_formula(mem: Store) -> None:
    """One day (UTC site), sw down 2 h of which 1 h inside a maintenance window."""
    s = Store("sqlite://", timezone="UTC")
    day = date(2025, 3, 3)
    t = datetime(2025, 3, 3, tzinfo=UTC)
    # the pipeline's shapes: a DOWN names its reachability check, degraded a health check
    inc = s.open_incident("sw", "ping", "down", "x", t + timedelta(hours=10))
    s.close_incident(inc, t + timedelta(hours=12))
    s.open_incident("sw", "ping", "unreachable", "parent", t + timedelta(hours=14))  # apart
    s.open_incident("kiosk", "toner", "degraded", "x", t + timedelta(hours=1))  # not down
    s.add_window("class", "switch", t + timedelta(hours=11), t + timedelta(hours=13), "fw", "a")
    devs = [DeviceRef("sw", "switch", "2"), DeviceRef("kiosk", "kiosk", "1")]
    per_dev, per_class = availability(s, devs, day, day, now=t + timedelta(days=2))
    sw, kiosk = per_dev
    assert (sw.observed_s, sw.down_s, sw.failures) == (22 * 3600, 3600, 1)
    assert sw.unreachable_s == 10 * 3600 and kiosk.down_s == 0
    assert sw.ratio == pytest.approx(1 - 1 / 22) and kiosk.ratio == 1.0
    assert sw.mtbf_s == 21 * 3600 and sw.mttr_s == 3600
    assert [c.key for c in per_class] == ["kiosk", "switch"]
    # opening hours only: Monday 08:30-18:00 = 9.5 h, down 10-11 (11-12 is maintenance)
    per_dev, _ = availability(s, devs, day, day, opening_hours="Mon-Fri 08:30-18:00",
                              now=t + timedelta(days=2))
    assert per_dev[0].observed_s == 7.5 * 3600 and per_dev[0].down_s == 3600
    s.close()


# ---- pairs and combined filters, on both backends (issue 12: every tally the API offers) ------
# Two halls share one store (issue 17): the same device ids and incident keys in both.
FLOORS, CLASSES, OWNERS, PEOPLE = [None, "1", "2"], [None, "kiosk", "ups"], [None, "a", "b"], [
    None, "zhang", "wang"]
SITES, DEVICES = ["hall-a", "hall-b"], [None, "kiosk-1f-03", "ups-b1-01"]
_ticket = st.tuples(st.sampled_from(CATS), st.sampled_from(CLASSES), st.sampled_from(FLOORS),
                    st.sampled_from(OWNERS), st.sampled_from(PEOPLE), st.sampled_from(DEVICES),
                    st.integers(0, int(SPAN.total_seconds())))
full_op = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(SITES), _ticket),
    st.tuples(st.just("auto"), st.sampled_from(SITES), st.sampled_from(["k1", "k2"]), _ticket),
    st.tuples(st.just("import"), st.sampled_from(SITES), st.lists(_ticket, min_size=1,
                                                                  max_size=3)),
    st.tuples(st.just("move"), st.integers(0, 30), st.sampled_from(
        ["in_progress", "resolved", "closed", "open"])),
    st.tuples(st.just("edit"), st.integers(0, 30), st.sampled_from(CATS),
              st.sampled_from(FLOORS), st.sampled_from(OWNERS), st.sampled_from(PEOPLE),
              st.booleans()),
)
SUBSETS = [c for k in range(1, len(GROUPS) + 1) for c in itertools.combinations(GROUPS, k)]


def _new(t: tuple) -> NewTicket:  # type: ignore[type-arg]
    cat, cls, floor, owner, person, dev, secs = t
    return NewTicket(category=cat, summary="s", reporter="r", device_class=cls, floor=floor,
                     owner=owner, assignee=person, device_id=dev,
                     opened_at=START + timedelta(seconds=secs))


def apply_full(halls: dict[str, Store], ops: list[tuple]) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    """The ops on the halls' stores; the (site, id) of every ticket made."""
    ids: list[tuple[str, int]] = []
    for o in ops:
        if o[0] == "new":
            ids.append((o[1], halls[o[1]].create_ticket(_new(o[2])).id))
        elif o[0] == "auto":  # the same incident key in both halls: a ticket in each
            ticket, created = halls[o[1]].auto_ticket(o[2], _new(o[3]))
            if created:
                ids.append((o[1], ticket.id))
        elif o[0] == "import":
            ids += [(o[1], tid) for tid in halls[o[1]].import_tickets(map(_new, o[2]))]
        elif ids and o[0] == "move":
            site, tid = ids[o[1] % len(ids)]
            try:
                halls[site].transition(tid, o[2], "t")
            except Exception as exc:  # InvalidTransition is part of the story
                assert "cannot move" in str(exc)
        elif ids:
            site, tid = ids[o[1] % len(ids)]
            if o[6]:  # asked of the other hall: its ticket ids are not this hall's
                other = halls[SITES[1 - SITES.index(site)]]
                with pytest.raises(NotFound):
                    other.update_ticket(tid, "t", {"category": o[2], "floor": o[3]})
            halls[site].update_ticket(tid, "t", {
                "category": o[2], "floor": o[3], "owner": o[4], "assignee": o[5]})
    return ids


def _wipe(store: Store) -> None:
    with store.tx() as conn:
        for table in (schema.ticket_events, schema.tickets, schema.ticket_tally,
                      schema.ticket_pairs):
            conn.execute(table.delete())


def _pair_rows(store: Store) -> set[tuple]:  # type: ignore[type-arg]
    with store.read() as conn:
        return {tuple(r) for r in conn.execute(select(schema.ticket_pairs)) if r.n}


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(full_op, max_size=30), st.integers(0, 30), st.data())
def test_every_filter_combination_with_every_grouping_equals_a_direct_count(
        store: Store, ops: list[tuple], pick: int, data: st.DataObject,  # type: ignore[type-arg]
) -> None:
    """Every set of filters the API offers (one to all six dimensions), with every grouping,
    in each of two halls sharing the store and across them ("*"), equals the GROUP BY over the
    raw rows: the pair table and the dims index stay exact through creations, automatic
    tickets, imports, transitions and edits, NULLs (counted as "") included."""
    _wipe(store)
    halls = {site: store.for_site(site) for site in SITES}
    ids = apply_full(halls, ops)
    views = {**halls, "*": store.for_site("*")}
    lo, hi = date(2024, 12, 1), date(2026, 2, 1)
    if ids:  # one ticket's values (the filters it matches), each also asked as "nobody"
        site, tid = ids[pick % len(ids)]
        mine = halls[site].get_ticket(tid)
        own = {"category": mine.category, "class": mine.device_class or "",
               "floor": mine.floor or "", "owner": mine.owner or "",
               "assignee": mine.assignee or "", "status": mine.status}
    else:
        own = dict.fromkeys(GROUPS, "")
    for dims in SUBSETS:
        miss = data.draw(st.sampled_from([None, *dims]), label="filter asked as 'nobody'")
        filters = {d: ("nobody" if d == miss else own[d]) for d in dims}
        # across the halls ("*") and one hall, drawn (the three views each time: 90 s)
        hall = data.draw(st.sampled_from(SITES), label="the hall asked")
        # by day, or by month, quarter or year as SQL folds them
        period = data.draw(st.sampled_from([None, "month", "quarter", "year"]), label="period")
        for g in (None, *GROUPS):
            for site in ("*", hall):
                kept = {k: n for k, n in _days(views[site], lo, hi, g, filters, period).items()
                        if n}
                with store.read() as conn:
                    direct = tally_direct(conn, date_key(lo), date_key(hi), g, filters,
                                          site=site)
                assert kept == _fold(direct, period), (site, filters, g, period)
    # the write path, the rebuilds (one hall's, every hall's) and the migration's backfill
    # agree row for row
    kept = _pair_rows(store)
    assert {r[0] for r in kept} <= set(SITES)
    for view in (halls["hall-b"], views["*"]):
        view.rebuild_tally()
        assert _pair_rows(store) == kept
    with store.tx() as conn:
        _v8_tally2_pairs(conn)
    assert _pair_rows(store) == kept


def test_an_older_store_gains_its_pair_counts_on_upgrade(url: str) -> None:
    """A store from before the pair table (schema 7, tickets of two halls in it, one device id
    in both) is backfilled by the migration per hall, and its filtered tallies are exact from
    the first read, per hall and across halls."""
    s = Store(url, timezone="Asia/Shanghai", site="hall-a")
    at = datetime(2025, 3, 3, 4, tzinfo=UTC)
    plan = {"hall-a": [("fault", "2"), ("fault", "2"), ("line", None), ("fault", "3")],
            "hall-b": [("fault", "2"), ("line", "2"), ("fault", None)]}
    for site, rows in plan.items():
        for cat, floor in rows:
            s.for_site(site).create_ticket(replace(new(cat, "kiosk", None, at), floor=floor,
                                                   device_id="kiosk-1f-03"))
    before = MIGRATIONS.index(_v8_tally2_pairs)  # the schema version before the pair table
    with s.tx() as conn:  # back to that schema
        conn.execute(schema.ticket_pairs.delete())
        conn.execute(text("DROP TABLE ticket_pairs"))
        conn.execute(text("DROP INDEX ix_tickets_dims"))
        conn.execute(schema.schema_version.delete().where(
            schema.schema_version.c.version > before))
    s.close()
    s = Store(url, timezone="Asia/Shanghai", site="hall-a")
    views = {"hall-a": s, "hall-b": s.for_site("hall-b"), "*": s.for_site("*")}
    try:
        lo, hi = date(2025, 1, 1), date(2025, 12, 31)
        rows = tally(s, "year", lo, hi, "category", filters={"floor": "2"})
        assert [(r.group, r.count) for r in rows] == [("fault", 2)]
        rows = tally(s, "year", lo, hi, "floor", filters={"category": "fault", "class": "kiosk",
                                                          "status": "open"})
        assert [(r.group, r.count) for r in rows] == [("2", 2), ("3", 1)]
        assert [(r.group, r.count) for r in tally(s, "year", lo, hi, "floor",
                                                  filters={"category": "line"})] == [("", 1)]
        rows = tally(views["*"], "year", lo, hi, "category", filters={"floor": "2"})
        assert [(r.group, r.count) for r in rows] == [("fault", 3), ("line", 1)]
        rows = tally(views["hall-b"], "year", lo, hi, "floor", filters={
            "category": "fault", "class": "kiosk", "status": "open"})
        assert [(r.group, r.count) for r in rows] == [("", 1), ("2", 1)]
        own = {"category": "fault", "class": "kiosk", "floor": "2", "owner": "",
               "assignee": "", "status": "open"}
        for dims in SUBSETS:  # every filter set, ungrouped and by floor, per hall and across
            filters = {d: own[d] for d in dims}
            for g in (None, "floor"):
                for site, view in views.items():
                    with s.read() as conn:
                        direct = tally_direct(conn, date_key(lo), date_key(hi), g, filters,
                                              site=site)
                    assert _days(view, lo, hi, g, filters) == direct, (site, filters, g)
    finally:
        s.close()
