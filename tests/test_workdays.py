"""The hall's calendar (national arrangement + site overrides), opening hours on working days,
and the report schedule (issue 15)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.cli import main
from monitor.inventory import DEFAULT_REPORTS, Inventory, ReportSchedule, Site
from monitor.workdays import WorkCalendar, closing_time, due_reports, opening_intervals

ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_national_working_days_with_adjusted_weekends() -> None:
    cal = WorkCalendar()
    assert len(cal.working_days(date(2021, 1, 1), date(2021, 12, 31))) == 250
    assert len(cal.working_days(date(2025, 1, 1), date(2025, 12, 31))) == 248
    assert cal.is_workday(date(2021, 2, 7))  # a Sunday worked before the Spring Festival
    assert not cal.is_workday(date(2021, 2, 11))  # 除夕, a Thursday
    assert cal.is_workday(date(2025, 2, 8)) and not cal.is_workday(date(2025, 10, 8))


def test_site_overrides_win() -> None:
    site = Site.model_validate({"name": "x", "calendar": {
        "holidays": ["2025-03-03"], "workdays": ["2025-03-08"]}}, strict=False)
    cal = WorkCalendar.of(site)
    assert not cal.is_workday(date(2025, 3, 3)) and cal.is_workday(date(2025, 3, 8))
    # a year the package does not know: Monday-Friday, and said so
    assert cal.unknown_years([2025, 2099]) == [2099]
    assert cal.is_workday(date(2099, 3, 2)) and not cal.is_workday(date(2099, 3, 1))


def test_opening_hours_apply_on_working_days_only() -> None:
    cal = WorkCalendar()
    spec = "Mon-Fri 08:30-18:00, Sat 09:00-12:00"
    # 2025-09-28 (Sunday) is a make-up working day: Monday's hours; 2025-10-01..08 closed
    spans = opening_intervals(spec, cal, date(2025, 9, 27), date(2025, 10, 9), SHANGHAI)
    days = [a.astimezone(SHANGHAI).date() for a, _ in spans]
    assert days == [date(2025, 9, 28), date(2025, 9, 29), date(2025, 9, 30), date(2025, 10, 9)]
    a, b = spans[0]
    assert (a, b) == (datetime(2025, 9, 28, 0, 30, tzinfo=UTC), datetime(2025, 9, 28, 10,
                                                                           tzinfo=UTC))
    assert closing_time(spec, date(2025, 9, 28)).isoformat() == "18:00:00"
    # no hours given: whole working days
    whole = opening_intervals(None, cal, date(2025, 3, 3), date(2025, 3, 9), SHANGHAI)
    assert sum((b - a for a, b in whole), timedelta()) == timedelta(days=5)


def _count(year: int, schedules: tuple[ReportSchedule, ...] = DEFAULT_REPORTS) -> Counter[str]:
    site = Site(name="x", opening_hours="Mon-Fri 08:30-18:00")
    return Counter(d.period for d in due_reports(schedules, site, date(year, 1, 1),
                                                  date(year, 12, 31)))


def test_the_shipped_schedule_of_2021_and_2025() -> None:
    assert _count(2021) == {"day": 250, "week": 52, "month": 12, "quarter": 4}
    assert _count(2025) == {"day": 248, "week": 52, "month": 12, "quarter": 4}


def _independent_due(year: int) -> dict[str, list[date]]:
    """The same rules, counted the long way round from the package's workday list."""
    import chinese_calendar

    def first_workday(d: date) -> date:
        while not chinese_calendar.is_workday(d):
            d += timedelta(days=1)
        return d

    days = [date(year, 1, 1) + timedelta(n) for n in range(366)]
    days = [d for d in days if d.year == year]
    out: dict[str, list[date]] = {"day": [d for d in days if chinese_calendar.is_workday(d)]}
    mondays = {d - timedelta(days=d.weekday()) for d in days}
    out["week"] = sorted(w for m in mondays if (w := first_workday(m)).year == year)
    out["month"] = [first_workday(date(year, m, 1)) for m in range(1, 13)]
    out["quarter"] = [first_workday(date(year, m, 1)) for m in (1, 4, 7, 10)]
    return out


@pytest.mark.parametrize("year", [2021, 2025])
def test_due_days_agree_with_an_independent_count(year: int) -> None:
    site = Site(name="x")
    got: dict[str, list[date]] = {}
    for d in due_reports(DEFAULT_REPORTS, site, date(year, 1, 1), date(year, 12, 31)):
        got.setdefault(d.period, []).append(d.at.date())
    assert got == _independent_due(year)


def test_report_schedule_cli_lists_what_is_due(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "schedule", "--from", "2021-01-01", "--to", "2021-12-31",
                 "--inventory", str(ROOT / "inventory.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert Counter(x.split()[0] for x in lines) == {"day": 250, "week": 52, "month": 12,
                                                     "quarter": 4}
    assert lines[:4] == [
        "month 2020-12 due 2021-01-04 09:00 xlsx zh",
        "quarter 2020-Q4 due 2021-01-04 09:00 xlsx zh",
        "week 2020-W53 due 2021-01-04 09:00 xlsx zh",
        "day 2021-01-04 due 2021-01-04 18:00 xlsx zh",
    ]
    assert main(["report", "schedule", "--from", "2025-01-01", "--to", "2025-12-31",
                 "--inventory", str(ROOT / "inventory.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert Counter(x.split()[0] for x in lines) == {"day": 248, "week": 52, "month": 12,
                                                     "quarter": 4}
    assert "week 2025-W05 due 2025-02-05 09:00 xlsx zh" in lines  # after the Spring Festival


def test_a_reports_section_replaces_the_defaults() -> None:
    inv = Inventory.model_validate({
        "site": {"name": "x"},
        "reports": [{"period": "year", "when": "10:30", "format": "md", "language": "en"}],
    }, context={"env": {}})
    due = due_reports(inv.reports, inv.site, date(2026, 1, 1), date(2026, 1, 31))
    assert [(d.period, d.start, d.end, d.at.isoformat()) for d in due] == [
        ("year", date(2025, 1, 1), date(2025, 12, 31), "2026-01-04T10:30:00+08:00")]
