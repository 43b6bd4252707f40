"""Counting the maintenance log: tickets by period and dimension, MTTR, MTBF, backlog, availability.

Periods are site-local calendar periods (zoneinfo): day, ISO week (Mon-Sun, labelled 2025-W01 by
ISO year), month, quarter, year. A ticket counts in the period of the local day it was *opened*.

Speed: ``tally()`` reads the ``ticket_tally`` table (per local day x dimension x value, maintained
in the same transaction as every ticket write), so counting a million tickets reads a few
thousand rows and folds days into coarser periods here. A filtered tally over two dimensions
at most (faults by floor, faults on floor 3) is read from it or from the pair table
(``ticket_pairs``, kept the same way); three dimensions or more (faults on floor 3 by status)
read only the matching entries of the dims index on the tickets (``_dims_scan``).

MTTR (tickets) = mean(resolved_at - opened_at) over tickets opened in the range and resolved.

Availability, per device, over a range R (hard states only: incidents are stored on hard
transitions, soft failures never make one):

    observed(d) = |R ∩ H(d) \\ M(d)|       H(d): the hall's opening hours on its working days
                                           (monitor.workdays), or all of R for classes counted
                                           24 h (lines); all of R without hours or calendar
                                           M(d): maintenance windows matching d (device, class,
                                                 floor selectors)
    down(d)     = |(∪ "down" incidents of d) ∩ R ∩ H(d) \\ M(d)|
    availability(d) = 1 - down(d) / observed(d)    (1.0 when observed is 0)

Every "down" incident the pipeline recorded counts, whatever check it names as its cause (the
pipeline records each device-level incident with the check that explains it: ``ping``...).
"unreachable" time (a parent is down: the device could not be asked) is summed apart, as
``unreachable_s``, and does not lower the device's own availability; "degraded" (reachable, a
health check failed) does not count as down. Per class: the device-time weighted mean,
1 - Σ down / Σ observed. MTBF per class = (Σ observed - Σ down) / number of down incidents that
started in R (None without failures); incident MTTR = Σ down / that number.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select

from monitor.inventory import parse_schedule
from monitor.store import Store, schema
from monitor.store.engine import ALL_SITES
from monitor.store.localtime import (
    PERIODS,
    date_key,
    key_to_date,
    local_midnight_utc,
    period_label,
)
from monitor.store.models import InvalidValue, category_key
from monitor.store.tickets import TALLY_DIMS
from monitor.workdays import WorkCalendar, union
from monitor.workdays import opening_intervals as working_hours

T = schema.tickets
GROUPS: tuple[str, ...] = tuple(TALLY_DIMS)
Interval = tuple[datetime, datetime]


class TallyRow(NamedTuple):  # a tuple: a day-by-day tally makes ten thousand of them
    period: str  # "2025-03", "2025-W10", ...
    group: str | None  # the group's value ("" for none), None when not grouped
    count: int  # type: ignore[assignment]  # shadows tuple.count, on purpose


def _check(period: str, group_by: str | None) -> None:
    if period not in PERIODS:
        raise InvalidValue(f"period must be one of {', '.join(PERIODS)}")
    if group_by is not None and group_by not in GROUPS:
        raise InvalidValue(f"group_by must be one of {', '.join(GROUPS)}")


def tally(store: Store, period: str, start: date, end: date, group_by: str | None = None,
          filters: Mapping[str, str] | None = None) -> list[TallyRow]:
    """Tickets opened from ``start`` to ``end`` (local dates, inclusive), counted per period
    (and group), in period order then group order. Empty periods are left out."""
    _check(period, group_by)
    if filters and "category" in filters:  # a Chinese label counts as its key
        filters = {**filters, "category": category_key(filters["category"])}
    if not filters and period in _SQL_BUCKETS:
        return _tally_sql(store, period, start, end, group_by)
    # Months, quarters and years are folded by SQL (a filtered tally by day returns up to
    # days x values rows per site: 1M tickets, 36k through Python where 1k will do).
    fold = _SQL_BUCKETS.get(period)
    days = _day_counts(store, start, end, group_by, filters or {}, fold)
    labels: dict[int, str] = {}
    for day, _ in days:
        if day not in labels:
            labels[day] = (_SQL_LABELS[period](day) if fold
                           else period_label(key_to_date(day), period))
    if period == "day" or fold:  # one row per (period, value) already: nothing to fold
        rows = [TallyRow(labels[d], v, n) for (d, v), n in days.items() if n]
    else:
        folded: dict[tuple[str, str | None], int] = defaultdict(int)
        for (day, value), n in days.items():
            folded[(labels[day], value)] += n
        rows = [TallyRow(p, g, n) for (p, g), n in folded.items() if n]
    rows.sort(key=_order)
    return rows


def _order(row: TallyRow) -> tuple[str, str]:
    return row.period, row.group or ""


# Months, quarters and years are integer arithmetic on YYYYMMDD, so SQL folds the days itself
# (ISO weeks are not: they are folded here from days).
_SQL_BUCKETS: dict[str, Callable[[Any], Any]] = {  # on a column, or on an int
    "month": lambda day: day // 100,
    "quarter": lambda day: day // 10000 * 10 + (day // 100 % 100 - 1) // 3 + 1,
    "year": lambda day: day // 10000,
}
_SQL_LABELS: dict[str, Callable[[int], str]] = {
    "month": lambda k: f"{k // 100}-{k % 100:02d}",
    "quarter": lambda k: f"{k // 10}-Q{k % 10}",
    "year": str,
}
Fold = Callable[[Any], Any]  # a _SQL_BUCKETS entry: YYYYMMDD -> month/quarter/year key


def _folded(day: Any, fold: Fold | None) -> Any:
    """The day column, or its period key (labelled by _SQL_LABELS) when folded."""
    return day if fold is None else fold(day)


def _sites(conn: Any, site: str) -> list[str]:
    """The sites a tally reads: ``site`` itself, or for "*" every site with tally rows, found by
    one index seek each on the tally table's key (site first) instead of a scan of it. Every
    site-first key is then read as one range per site (``site IN (...)``), added up here."""
    if site != ALL_SITES:
        return [site]
    tt = schema.ticket_tally
    found: list[str] = []
    while True:
        after = [tt.c.site > found[-1]] if found else []
        nxt = conn.execute(select(tt.c.site).where(*after).order_by(tt.c.site).limit(1)
                           ).scalar_one_or_none()
        if nxt is None:
            return found
        found.append(nxt)


def _tally_sql(store: Store, period: str, start: date, end: date,
               group_by: str | None) -> list[TallyRow]:
    tt = schema.ticket_tally
    bucket = _SQL_BUCKETS[period](tt.c.day)
    with store.read() as conn:
        rows = conn.execute(
            select(bucket, tt.c.value, func.sum(tt.c.n))
            .where(tt.c.site.in_(_sites(conn, store.site)), tt.c.dim == (group_by or "all"),
                   tt.c.day.between(date_key(start), date_key(end)))
            .group_by(bucket, tt.c.value)
        ).all()
    label = _SQL_LABELS[period]
    out = [TallyRow(label(int(k)), v if group_by else None, int(n)) for k, v, n in rows if n]
    return sorted(out, key=_order)


Counts = dict[tuple[int, str | None], int]  # (local day or period key, group value or None) -> n


def _day_counts(store: Store, start: date, end: date, group_by: str | None,
                filters: Mapping[str, str], fold: Fold | None = None) -> Counts:
    """Counts per (local day, value); with ``fold`` (a _SQL_BUCKETS entry) per (month, value),
    ..., folded by SQL (filtered tallies only: unfiltered ones fold in _tally_sql)."""
    lo, hi = date_key(start), date_key(end)
    unknown = set(filters) - set(TALLY_DIMS)
    if unknown:
        raise InvalidValue(f"unknown filter: {', '.join(sorted(unknown))}")
    with store.read() as conn:
        sites = _sites(conn, store.site)
        if not sites:  # no tickets in any hall ("*")
            return {}
        if not filters:
            # (site, dim, day, value) is the primary key: one contiguous range per site.
            # Up to days x values rows come back: fetched through the driver directly, as
            # SQLAlchemy's per-row processing doubled the cost (bench/tally.py).
            ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            raw = conn.connection.driver_connection
            rows = raw.execute(  # type: ignore[union-attr]
                f"SELECT day, value, n FROM ticket_tally WHERE site IN "
                f"({', '.join([ph] * len(sites))}) AND dim = {ph} AND day BETWEEN {ph} AND {ph}",
                (*sites, group_by or "all", lo, hi)).fetchall()
            return _added((fold(d) if fold else d, v if group_by else None, n)
                          for d, v, n in rows)
        found = _prefolded(conn, sites, lo, hi, group_by, filters, fold)
        if found is not None:
            return found
        return _dims_scan(conn, sites, lo, hi, group_by, filters, fold)


def _added(rows: Iterable[tuple[int, str | None, int]]) -> Counts:
    """Counts per (day, value), the rows of several sites (or index entries) added up."""
    out: Counts = defaultdict(int)
    for d, v, n in rows:
        if n:
            out[(d, v)] += n
    return {k: n for k, n in out.items() if n}


def _prefolded(conn: Any, sites: list[str], lo: int, hi: int, group_by: str | None,
               filters: Mapping[str, str], fold: Fold | None = None) -> Counts | None:
    """A filtered tally read from the counts kept in step with the tickets, else None.

    Two dimensions at most (one filter alone or grouped by another dimension, two filters
    ungrouped or grouped by one of them): per-day rows of the tally or pair table, a few
    thousand per site at 1M tickets (~5-30 ms instead of ~1.5 s over the tickets table)."""
    dims = set(filters) | ({group_by} if group_by else set())
    if len(dims) > 2:
        return None
    if len(filters) == 1 and group_by in (None, *filters):
        ((dim, want),) = filters.items()
        tt = schema.ticket_tally
        day = _folded(tt.c.day, fold)
        rows = conn.execute(select(day, func.sum(tt.c.n)).where(
            tt.c.site.in_(sites), tt.c.dim == dim, tt.c.day.between(lo, hi),
            tt.c.value == want).group_by(day))
        label = want if group_by else None
        return _added((d, label, int(n)) for d, n in rows)
    (a, x), *rest = filters.items()
    pt = schema.ticket_pairs
    day = _folded(pt.c.day, fold)
    if rest:  # two filters: the rows of the pair (a=x, b=y)
        ((b, y),) = rest
        rows = conn.execute(select(day, func.sum(pt.c.n)).where(
            pt.c.site.in_(sites), pt.c.dim == a, pt.c.value == x, pt.c.by_dim == b,
            pt.c.day.between(lo, hi), pt.c.by_value == y).group_by(day))
        label = None if group_by is None else filters[group_by]
        return _added((d, label, int(n)) for d, n in rows)
    assert group_by is not None  # one filter grouped by another dimension
    rows = conn.execute(select(day, pt.c.by_value, func.sum(pt.c.n)).where(
        pt.c.site.in_(sites), pt.c.dim == a, pt.c.value == x, pt.c.by_dim == group_by,
        pt.c.day.between(lo, hi)).group_by(day, pt.c.by_value))
    return _added((d, v, int(n)) for d, v, n in rows)


def _dims_scan(conn: Any, sites: list[str], lo: int, hi: int, group_by: str | None,
               filters: Mapping[str, str], fold: Fold | None = None) -> Counts:
    """Three dimensions or more, from the dims index of the tickets (schema.TICKET_DIMS_INDEX,
    site first): the site is one of ``sites``; each filter is an equality on its column; every
    column before the last filtered one that has no filter gets the list of its values in the
    range (from the tally table), so the index is entered once per combination of them and
    reads only matching entries. NULL is no value of an IN list: a column whose values include
    it is asked once with IN and once IS NULL (at most 8 queries; their tickets are apart, so
    their counts add). At 1M tickets the widest two filters match ~90k entries (status x floor:
    ~45 ms), the rest far fewer."""
    last = max(_INDEX_ORDER.index(TALLY_DIMS[d]) for d in filters)
    choices: list[list[ColumnElement[bool]]] = [[T.c.site.in_(sites)]]
    tt = schema.ticket_tally
    for name in _INDEX_ORDER[:last + 1]:
        col, dim = T.c[name], _DIM_OF[name]
        if dim in filters:
            want = filters[dim]
            choices.append([col.is_(None) if want == "" and col.nullable else col == want])
            continue
        values = set(conn.execute(select(tt.c.value).distinct().where(
            tt.c.site.in_(sites), tt.c.dim == dim, tt.c.day.between(lo, hi), tt.c.n != 0)
        ).scalars())
        named = sorted(values - {""})
        ways: list[ColumnElement[bool]] = [col.in_(named)] if named else []
        if "" in values:
            ways.append(col.is_(None) if col.nullable else col == "")
        if not ways:
            return {}
        choices.append(ways)
    keys: list[Any] = [_folded(T.c.local_day, fold)]
    if group_by is not None:
        keys.append(T.c[TALLY_DIMS[group_by]])
    found: list[tuple[int, str | None, int]] = []
    for conds in itertools.product(*choices):
        stmt = (select(*keys, func.count()).where(*conds, T.c.local_day.between(lo, hi))
                .group_by(*keys))
        for row in conn.execute(stmt):
            found.append((row[0], None if group_by is None else (row[1] or ""), int(row[-1])))
    return _added(found)


_INDEX_ORDER = schema.TICKET_DIMS_ORDER  # the dims index's columns after site, in its order
_DIM_OF = {col: dim for dim, col in TALLY_DIMS.items()}  # the tally dimension each holds


def tally_direct(conn: Any, lo: int, hi: int, group_by: str | None,
                 filters: Mapping[str, str], *, site: str = ALL_SITES,
                 ) -> dict[tuple[int, str | None], int]:
    """The same counts straight from the tickets table (also the tests' reference)."""
    conds: list[ColumnElement[bool]] = [T.c.local_day.between(lo, hi)]
    if site != ALL_SITES:
        conds.append(T.c.site == site)
    conds += [func.coalesce(T.c[TALLY_DIMS[k]], "") == v for k, v in filters.items()]
    if group_by is None:
        stmt = select(T.c.local_day, func.count()).where(*conds).group_by(T.c.local_day)
        return {(d, None): int(n) for d, n in conn.execute(stmt)}
    col = func.coalesce(T.c[TALLY_DIMS[group_by]], "")
    stmt = select(T.c.local_day, col, func.count()).where(*conds).group_by(T.c.local_day, col)
    return {(d, v): int(n) for d, v, n in conn.execute(stmt)}


def _range_utc(store: Store, start: date, end: date) -> Interval:
    return (local_midnight_utc(start, store.tz),
            local_midnight_utc(end + timedelta(days=1), store.tz))


def mttr(store: Store, start: date, end: date, group_by: str = "class") -> dict[str, float]:
    """Mean seconds from opening to resolution per group, tickets opened in the range."""
    return {k: s / n for k, (s, n) in mttr_sums(store, start, end, group_by).items()}


def mttr_sums(store: Store, start: date, end: date, group_by: str = "class"
              ) -> dict[str, tuple[float, int]]:
    """(Σ seconds from opening to resolution, number resolved) per group, tickets opened in
    the range and resolved."""
    _check("day", group_by)
    col = T.c[TALLY_DIMS[group_by]]
    with store.read() as conn:
        rows = conn.execute(select(col, T.c.opened_at, T.c.resolved_at).where(
            T.c.local_day.between(date_key(start), date_key(end)), T.c.resolved_at.is_not(None),
            *store.of_site(T)))
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for value, opened, resolved in rows:
            acc = sums[value or ""]
            acc[0] += (resolved - opened).total_seconds()
            acc[1] += 1
    return {k: (s, int(n)) for k, (s, n) in sorted(sums.items())}


def backlog(store: Store, period: str, start: date, end: date) -> list[tuple[str, int]]:
    """Tickets open (not yet resolved or closed) at the end of each period in the range."""
    _check(period, None)
    lo, hi = _range_utc(store, start, end)
    done = func.coalesce(T.c.resolved_at, T.c.closed_at)
    with store.read() as conn:
        spans = conn.execute(select(T.c.opened_at, T.c.resolved_at, T.c.closed_at).where(
            *store.of_site(T), T.c.opened_at < hi,
            (done.is_(None)) | (T.c.resolved_at >= lo) | (T.c.closed_at >= lo)
        )).all()
    out: list[tuple[str, int]] = []
    d = start
    while d <= end:
        label = period_label(d, period)
        nxt = d
        while nxt <= end and period_label(nxt, period) == label:
            nxt += timedelta(days=1)
        cut = local_midnight_utc(nxt, store.tz)
        open_at_cut = sum(1 for o, r, c in spans if o < cut and not _done_before(r, c, cut))
        out.append((label, open_at_cut))
        d = nxt
    return out


def open_at(store: Store, cut: datetime) -> int:
    """Tickets opened before ``cut`` and neither resolved nor closed before it (one COUNT; the
    same rule as ``backlog``)."""
    c = store._now(cut)
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(T).where(
            *store.of_site(T), T.c.opened_at < c,
            (T.c.resolved_at.is_(None)) | (T.c.resolved_at >= c),
            (T.c.closed_at.is_(None)) | (T.c.closed_at >= c))).scalar_one())


def _done_before(resolved: datetime | None, closed: datetime | None, cut: datetime) -> bool:
    stamps = [t for t in (resolved, closed) if t is not None]
    return bool(stamps) and min(stamps) < cut


# ---- availability -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRef:
    id: str
    device_class: str
    floor: str | None = None


@dataclass(frozen=True, slots=True)
class Availability:
    key: str  # device id or class (or floor)
    observed_s: float
    down_s: float
    failures: int
    unreachable_s: float = 0.0

    @property
    def ratio(self) -> float:
        return 1.0 if self.observed_s <= 0 else 1.0 - self.down_s / self.observed_s

    @property
    def mtbf_s(self) -> float | None:
        return (self.observed_s - self.down_s) / self.failures if self.failures else None

    @property
    def mttr_s(self) -> float | None:
        return self.down_s / self.failures if self.failures else None


def opening_intervals(spec: str, start: date, end: date, tz: ZoneInfo) -> list[Interval]:
    """UTC intervals of the site's opening hours ("Mon-Fri 08:30-18:00, Sat 09:00-12:00", the
    inventory's schedule syntax, parsed by the inventory) within the dates."""
    try:
        spans = parse_schedule(spec)
    except ValueError as exc:
        raise InvalidValue(f"opening hours: {exc}") from None
    out: list[Interval] = []
    d = start
    while d <= end:
        for span in spans:
            if d.weekday() in span.days:
                close = d if span.start < span.end else d + timedelta(days=1)
                out.append((datetime.combine(d, span.start, tz).astimezone(UTC),
                            datetime.combine(close, span.end, tz).astimezone(UTC)))
        d += timedelta(days=1)
    return union(out)


def _intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    out, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a < b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def _minus(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in xs:
        cur = a
        for c, d in ys:
            if d <= cur or c >= b:
                continue
            if c > cur:
                out.append((cur, c))
            cur = max(cur, d)
        if cur < b:
            out.append((cur, b))
    return out


def _seconds(spans: list[Interval]) -> float:
    return sum((b - a).total_seconds() for a, b in spans)


def availability(store: Store, devices: Iterable[DeviceRef], start: date, end: date,
                 opening_hours: str | None = None, now: datetime | None = None,
                 calendar: WorkCalendar | None = None, all_day: Iterable[str] = (),
                 ) -> tuple[list[Availability], list[Availability]]:
    """(per device, per class) availability over local dates [start, end]; see module doc.
    With a ``calendar``, opening hours count on its working days only; classes in ``all_day``
    are observed over the whole range."""
    lo, hi = _range_utc(store, start, end)
    hi = min(hi, now or store.clock())
    whole = [(lo, hi)] if hi > lo else []
    if calendar is not None:
        hours = _intersect(whole, working_hours(opening_hours, calendar, start, end, store.tz))
    elif opening_hours:
        hours = _intersect(whole, opening_intervals(opening_hours, start, end, store.tz))
    else:
        hours = whole
    day_long = set(all_day)
    incidents = [i for i in store.incidents(since=lo, until=hi, limit=10_000_000)
                 if i.status in ("down", "unreachable")]
    windows = store.windows(include_past=True, limit=1_000_000)
    per_device: list[Availability] = []
    per_class: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    by_device: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    starts: dict[str, int] = defaultdict(int)
    for inc in incidents:
        by_device[(inc.device_id, inc.status)].append((inc.started_at, inc.ended_at or hi))
        if inc.status == "down" and lo <= inc.started_at < hi:
            starts[inc.device_id] += 1
    for dev in devices:
        maint = union((w.starts_at, w.ends_at) for w in windows if
                       (w.selector, w.value) in {("device", dev.id), ("class", dev.device_class),
                                                 ("floor", dev.floor or "\0")})
        observed = _minus(whole if dev.device_class in day_long else hours, maint)
        down = _intersect(union(by_device.get((dev.id, "down"), [])), observed)
        behind = _intersect(union(by_device.get((dev.id, "unreachable"), [])), observed)
        a = Availability(dev.id, _seconds(observed), _seconds(down), starts.get(dev.id, 0),
                         _seconds(behind))
        per_device.append(a)
        acc = per_class[dev.device_class]
        acc[0] += a.observed_s
        acc[1] += a.down_s
        acc[2] += a.failures
        acc[3] += a.unreachable_s
    classes = [Availability(c, o, d, int(f), u) for c, (o, d, f, u) in sorted(per_class.items())]
    return per_device, classes


def fold(rows: Iterable[Availability], key: Callable[[str], str]) -> list[Availability]:
    """Per-device availability summed into groups (``key(device id)``: its floor, ...)."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for a in rows:
        g = acc[key(a.key)]
        g[0] += a.observed_s
        g[1] += a.down_s
        g[2] += a.failures
        g[3] += a.unreachable_s
    return [Availability(k, o, d, int(f), u) for k, (o, d, f, u) in sorted(acc.items())]
