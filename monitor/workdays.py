"""The hall's calendar: working days, opening hours on them, and when each report is due.

Working days come from the national holiday arrangement (``chinesecalendar``, maintained each
year when the State Council publishes the next year's 调休), overridden by the inventory's
``site.calendar: {holidays: [...], workdays: [...]}``. A year the package does not know yet
falls back to Monday-Friday (plus the overrides) and ``unknown_years()`` says so, so that the
hall can type that year's arrangement into the inventory.

Opening hours (``site.opening_hours``) apply on working days only: a holiday is closed whatever
its weekday; a make-up working day on a weekend (调休) keeps the hours of Monday, since the
hall works it as an ordinary weekday.

Reports fall due on working days only (``reports:`` in the inventory, see ReportSchedule): a
day's report at the end of that day, a week's on the first working day of the next ISO week,
a month's, quarter's or year's on the first working day after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar

from monitor.inventory import ReportSchedule, Site, Span, parse_schedule

Interval = tuple[datetime, datetime]
DEFAULT_CLOSING = time(18, 0)  # "closing" when the site gives no opening hours


@lru_cache(maxsize=4096)
def _national(d: date) -> bool | None:
    """Working day under the national arrangement, or None for a year the package lacks."""
    try:
        return bool(chinese_calendar.is_workday(d))
    except NotImplementedError:
        return None


@dataclass(frozen=True)
class WorkCalendar:
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    @classmethod
    def of(cls, site: Site) -> WorkCalendar:
        return cls(frozenset(site.calendar.holidays), frozenset(site.calendar.workdays))

    def is_workday(self, d: date) -> bool:
        if d in self.workdays:
            return True
        if d in self.holidays:
            return False
        national = _national(d)
        return d.weekday() < 5 if national is None else national

    def days(self, start: date, end: date) -> Iterator[date]:
        d = start
        while d <= end:
            yield d
            d += timedelta(days=1)

    def working_days(self, start: date, end: date) -> list[date]:
        return [d for d in self.days(start, end) if self.is_workday(d)]

    def first_workday_from(self, d: date) -> date:
        for _ in range(366):  # a year without a working day is not a calendar
            if self.is_workday(d):
                return d
            d += timedelta(days=1)
        raise ValueError(f"no working day within a year from {d}")

    def unknown_years(self, years: Iterable[int]) -> list[int]:
        return [y for y in sorted(set(years)) if _national(date(y, 6, 1)) is None]


# ---- opening hours ------------------------------------------------------------------------------
def _spans_of(spans: tuple[Span, ...], weekday: int) -> list[Span]:
    return [s for s in spans if weekday in s.days]


def opening_intervals(spec: str | None, calendar: WorkCalendar, start: date, end: date,
                      tz: ZoneInfo) -> list[Interval]:
    """UTC intervals when the hall is open within local dates [start, end]: the opening hours
    of each working day (whole working days when no hours are given)."""
    spans = parse_schedule(spec) if spec else ()
    out: list[Interval] = []
    for d in calendar.working_days(start, end):
        if not spans:
            out.append((_utc(d, time(0), tz), _utc(d + timedelta(days=1), time(0), tz)))
            continue
        todays = _spans_of(spans, d.weekday()) or _spans_of(spans, 0)
        for s in todays:
            close = d if s.start < s.end else d + timedelta(days=1)
            out.append((_utc(d, s.start, tz), _utc(close, s.end, tz)))
    return union(out)


def closing_time(spec: str | None, d: date) -> time:
    """The latest closing time of a working day (DEFAULT_CLOSING without hours)."""
    spans = parse_schedule(spec) if spec else ()
    todays = _spans_of(spans, d.weekday()) or _spans_of(spans, 0)
    ends = [s.end for s in todays if s.start < s.end]
    return max(ends) if ends else DEFAULT_CLOSING


def _utc(d: date, t: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, t, tz).astimezone(UTC)


def union(spans: Iterable[Interval]) -> list[Interval]:
    """Overlapping or touching spans merged, in time order (empty spans dropped)."""
    out: list[Interval] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# ---- the report schedule ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Due:
    """One scheduled report: which period it covers and when it is due (site-local)."""

    period: str
    start: date  # first day of the period covered
    end: date  # last day of the period covered
    at: datetime  # due moment, site-local aware
    schedule: ReportSchedule

    @property
    def key(self) -> str:
        """Unique per report sent: the outbox's key, so that it is never sent twice."""
        s = self.schedule
        return (f"report:{self.period}:{self.start.isoformat()}:{s.format}:{s.language}:"
                f"{s.route or '-'}")


def _period_start(d: date, period: str) -> date:
    if period == "week":
        return d - timedelta(days=d.weekday())
    if period == "month":
        return d.replace(day=1)
    if period == "quarter":
        return date(d.year, (d.month - 1) // 3 * 3 + 1, 1)
    if period == "year":
        return date(d.year, 1, 1)
    raise ValueError(period)


def due_reports(schedules: Iterable[ReportSchedule], site: Site, start: date, end: date,
                calendar: WorkCalendar | None = None) -> list[Due]:
    """Every report due on a local date in [start, end], in order of due moment."""
    cal = calendar or WorkCalendar.of(site)
    tz = site.tz
    out: list[Due] = []
    for sched in schedules:
        for d in cal.working_days(start, end):
            covered = _covered(sched.period, d, cal)
            if covered is None:
                continue
            at = (closing_time(site.opening_hours, d) if sched.at == "closing"
                  else time.fromisoformat(sched.at))
            out.append(Due(sched.period, covered[0], covered[1], datetime.combine(d, at, tz),
                           sched))
    out.sort(key=lambda x: (x.at, x.period, x.start))
    return out


def _covered(period: str, d: date, cal: WorkCalendar) -> tuple[date, date] | None:
    """The period whose report falls due on working day ``d``, if any."""
    if period == "day":
        return d, d
    if period == "week":
        monday = d - timedelta(days=d.weekday())
        if cal.first_workday_from(monday) != d:
            return None
        prev = monday - timedelta(days=7)
        return prev, monday - timedelta(days=1)
    # month, quarter, year: due on the first working day from the start of the next period
    this_start = _period_start(d, period)
    if cal.first_workday_from(this_start) != d:
        return None
    prev_start = _period_start(this_start - timedelta(days=1), period)
    return prev_start, this_start - timedelta(days=1)
