"""Site-local calendar keys. Days are integers YYYYMMDD; coarser periods derive from the day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

PERIODS: tuple[str, ...] = ("day", "week", "month", "quarter", "year")


def day_key(at: datetime, tz: ZoneInfo) -> int:
    d = at.astimezone(tz).date()
    return d.year * 10000 + d.month * 100 + d.day


def key_to_date(key: int) -> date:
    return date(key // 10000, key // 100 % 100, key % 100)


def date_key(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def period_label(d: date, period: str) -> str:
    """Label of the period containing ``d``: 2025-03-07, 2025-W10, 2025-03, 2025-Q1, 2025."""
    if period == "day":
        return d.isoformat()
    if period == "week":
        y, w, _ = d.isocalendar()
        return f"{y}-W{w:02d}"
    if period == "month":
        return f"{d.year}-{d.month:02d}"
    if period == "quarter":
        return f"{d.year}-Q{(d.month - 1) // 3 + 1}"
    if period == "year":
        return str(d.year)
    raise ValueError(f"unknown period {period!r} (one of {', '.join(PERIODS)})")


def period_bounds(d: date, period: str) -> tuple[date, date]:
    """First and last day (inclusive) of the period that contains ``d``."""
    if period == "day":
        return d, d
    if period == "week":
        start = d - timedelta(days=d.weekday())
        return start, start + timedelta(days=6)
    if period == "month":
        start = d.replace(day=1)
    elif period == "quarter":
        start = date(d.year, (d.month - 1) // 3 * 3 + 1, 1)
    elif period == "year":
        start = date(d.year, 1, 1)
    else:
        raise ValueError(f"unknown period {period!r} (one of {', '.join(PERIODS)})")
    months = {"month": 1, "quarter": 3, "year": 12}[period]
    m = start.month - 1 + months
    nxt = date(start.year + m // 12, m % 12 + 1, 1)
    return start, nxt - timedelta(days=1)


def local_midnight_utc(d: date, tz: ZoneInfo) -> datetime:
    """The UTC instant of local midnight starting day ``d`` (DST-safe via zoneinfo)."""
    from datetime import UTC

    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)
