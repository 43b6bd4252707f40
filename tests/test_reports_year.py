"""A year of the hall (2025): tickets imported with `hallmon tickets import`, outages recorded by
the real pipeline; the yearly, quarterly and monthly reports checked cell by cell against an
independent count made here from the scripted truth (issue 15), and the XLSX opened with
openpyxl for its charts and formats."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
import yaml
from openpyxl import load_workbook

from monitor.cli import main
from monitor.inventory import Inventory
from monitor.reports import Hall, Label, Report, build_report, display_width, render
from monitor.store import Store
from monitor.store.aio import AsyncStore
from monitor.store.models import CATEGORY_ZH
from tests.test_reports import FAIL, HALL, OK, Hallway

TZ = ZoneInfo("Asia/Shanghai")
YEAR = 2025
NOW = datetime(2026, 6, 1, tzinfo=UTC)  # the whole year is over
CATS = list(CATEGORY_ZH)
DEVICES = ["sw-1f", "kiosk-1f-01", "line-egov", None]
OWNERS = ["信息科", "电信", "综合科"]
ASSIGNEES = ["王工", "李工", None]


@dataclass(frozen=True)
class Row:
    opened: datetime  # aware, site-local
    category: str
    device: str | None
    owner: str
    assignee: str | None
    resolved: datetime | None


def scripted_tickets(rng: random.Random) -> list[Row]:
    out = []
    for _ in range(700):
        day = date(YEAR, 1, 1) + timedelta(days=rng.randrange(365))
        opened = datetime.combine(day, time(rng.randrange(8, 18), rng.randrange(60)), TZ)
        resolved = (opened + timedelta(minutes=rng.randrange(30, 72 * 60))
                    if rng.random() < 0.7 else None)
        out.append(Row(opened, rng.choice(CATS), rng.choice(DEVICES), rng.choice(OWNERS),
                       rng.choice(ASSIGNEES), resolved))
    return out


def scripted_outages(rng: random.Random) -> list[tuple[str, datetime, datetime]]:
    """Per device, non-overlapping outages, some across opening and closing times."""
    out = []
    for dev in ("sw-1f", "line-egov"):
        for m in range(1, 13):
            for half in (0, 1):
                start = datetime(YEAR, m, 1 + 14 * half, rng.randrange(24), rng.randrange(60),
                                 tzinfo=TZ) + timedelta(days=rng.randrange(10))
                out.append((dev, start, start + timedelta(minutes=rng.randrange(5, 600))))
    return out


def csv_of(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["opened_at", "category", "summary", "device_id", "owner", "assignee",
                "resolved_at"])
    for i, r in enumerate(rows):
        cat = CATEGORY_ZH[r.category] if i % 2 else r.category  # labels and keys both taken
        w.writerow([r.opened.strftime("%Y-%m-%d %H:%M"), cat, f"工单{i}", r.device or "",
                    r.owner, r.assignee or "",
                    r.resolved.strftime("%Y-%m-%d %H:%M") if r.resolved else ""])
    return buf.getvalue()


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, list[Row], list[
        tuple[str, datetime, datetime]]]]:
    import asyncio

    tmp = tmp_path_factory.mktemp("year")
    rng = random.Random(15)
    rows, outages = scripted_tickets(rng), scripted_outages(rng)
    inv_path = tmp / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(HALL, allow_unicode=True), encoding="utf-8")
    (tmp / "log.csv").write_text(csv_of(rows), encoding="utf-8")
    db = f"sqlite:///{tmp / 'hall.db'}"
    assert main(["tickets", "import", str(tmp / "log.csv"), "--db", db, "--inventory",
                 str(inv_path), "--as", "clerk"]) == 0

    async def record() -> None:
        astore = AsyncStore(Store(db))
        inv = Inventory.model_validate(HALL, context={"env": {}})
        hall = Hallway(inv, astore, datetime(YEAR, 1, 1, tzinfo=TZ))
        await hall.all_up(datetime(YEAR, 1, 1, tzinfo=TZ))
        events = sorted([(a, d, FAIL) for d, a, _ in outages] + [(b, d, OK) for d, _, b in
                                                                  outages],
                        key=lambda e: e[0])
        for at, dev, result in events:
            await hall.ping(dev, result, at)
        await astore.aclose()

    asyncio.run(record())
    store = Store(db)
    yield store, rows, outages
    store.close()


# ---- the independent count ----------------------------------------------------------------------
def open_spans(start: date, end: date, all_day: bool) -> list[tuple[datetime, datetime]]:
    out = []
    d = start
    while d <= end:
        if all_day:
            out.append((datetime.combine(d, time(0), TZ),
                        datetime.combine(d + timedelta(days=1), time(0), TZ)))
        elif chinese_calendar.is_workday(d):
            out.append((datetime.combine(d, time(8, 30), TZ), datetime.combine(d, time(18), TZ)))
        d += timedelta(days=1)
    return out


def overlap(spans: list[tuple[datetime, datetime]], a: datetime, b: datetime) -> float:
    return sum(max(0.0, (min(b, y) - max(a, x)).total_seconds()) for x, y in spans)


def expected(rows: list[Row], outages: list[tuple[str, datetime, datetime]], start: date,
             end: date) -> dict[str, object]:
    lo = datetime.combine(start, time(0), TZ)
    hi = datetime.combine(end + timedelta(days=1), time(0), TZ)
    mine = [r for r in rows if lo <= r.opened < hi]
    by_cat = Counter(r.category for r in mine)
    mttr: dict[str, list[float]] = defaultdict(list)
    for r in mine:
        if r.resolved:
            mttr[r.category].append((r.resolved - r.opened).total_seconds())
    spans = {False: open_spans(start, end, False), True: open_spans(start, end, True)}
    obs: dict[str, float] = {}
    down: dict[str, float] = defaultdict(float)
    fails: Counter[str] = Counter()
    for cls in ("switch", "kiosk", "line"):
        obs[cls] = sum((y - x).total_seconds() for x, y in spans[cls == "line"])
    for dev, a, b in outages:
        cls = "switch" if dev == "sw-1f" else "line"
        down[cls] += overlap(spans[cls == "line"], a, b)
        fails[cls] += lo <= a < hi
    all_n = sum(len(v) for v in mttr.values())
    total_obs, total_down = sum(obs.values()), sum(down.values())
    return {
        "by_cat": [[Label("category", c), by_cat.get(c, 0)] for c in CATS],
        "opened": len(mine),
        "resolved": sum(1 for r in rows if r.resolved and lo <= r.resolved < hi),
        "backlog": sum(1 for r in rows if r.opened < hi and not (r.resolved and r.resolved < hi)),
        "mttr_all": round(sum(sum(v) for v in mttr.values()) / all_n / 3600, 1) if all_n else None,
        "mttr": [[Label("category", c), len(mttr[c]),
                  round(sum(mttr[c]) / len(mttr[c]) / 3600, 1) if mttr[c] else None]
                 for c in CATS],
        "avail_all": round((1 - total_down / total_obs) * 100, 3),
        "incidents_all": sum(fails.values()),
        "down_all": round(total_down / 60, 1),
        "classes": {c: [round((1 - down[c] / obs[c]) * 100, 3), fails[c], round(down[c] / 60, 1)]
                    for c in obs},
        "months": sorted(Counter(f"{r.opened:%Y-%m}" for r in mine).items()),
        "lines": sorted(a for d, a, _ in outages if d == "line-egov" and lo <= a < hi),
    }


def figures(rep: Report) -> dict[str, object]:
    summary = {r[0].key: r[1] for r in rep.section("summary").rows}
    return {
        "by_cat": [r[:2] for r in rep.section("jobs").rows],
        **{k: summary[k] for k in ("opened", "resolved", "backlog", "mttr_all", "avail_all",
                                   "incidents_all", "down_all")},
        "mttr": rep.section("mttr").rows,
        "classes": {r[0].key: [r[2], r[3], r[4]] for r in rep.section("availability").rows},
        "months": [tuple(r) for r in rep.section("months").rows if r[1]],
        "lines": [r[2].astimezone(TZ) for r in rep.section("lines").rows],
    }


PERIODS = [("year", date(YEAR, 6, 1), date(YEAR, 1, 1), date(YEAR, 12, 31)),
           *[("quarter", date(YEAR, m, 1), date(YEAR, m, 1),
              date(YEAR, m + 2, 30 if m + 2 in (6, 9) else 31)) for m in (1, 4, 7, 10)],
           *[("month", date(YEAR, m, 1), date(YEAR, m, 1),
              date(YEAR + m // 12, m % 12 + 1, 1) - timedelta(days=1)) for m in range(1, 13)]]


@pytest.mark.parametrize(("period", "day", "start", "end"), PERIODS,
                         ids=[f"{p}-{s:%m}" for p, _, s, _ in PERIODS])
def test_figures_match_an_independent_count(
        year: tuple[Store, list[Row], list[tuple[str, datetime, datetime]]], period: str,
        day: date, start: date, end: date) -> None:
    store, rows, outages = year
    hall = Hall.of(Inventory.model_validate(HALL, context={"env": {}}))
    rep = build_report(store, period, day, hall, now=NOW)
    assert (rep.start, rep.end) == (start, end)
    assert figures(rep) == expected(rows, outages, start, end)
    # the previous period's column is that period's own count
    prev_start = start - timedelta(days=1)
    prev = expected(rows, outages, build_report(store, period, prev_start, hall, now=NOW).start,
                    prev_start)
    assert [r[2] for r in rep.section("jobs").rows] == [r[1] for r in prev["by_cat"]]  # type: ignore[attr-defined]
    # the ticket list is the period's tickets, every one
    assert len(rep.section("ticket_list").rows) == expected(rows, outages, start, end)["opened"]


def test_xlsx_is_formatted_and_charted(
        year: tuple[Store, list[Row], list[tuple[str, datetime, datetime]]]) -> None:
    store, _, _ = year
    hall = Hall.of(Inventory.model_validate(HALL, context={"env": {}}))
    rep = build_report(store, "year", date(YEAR, 1, 1), hall, now=NOW)
    wb = load_workbook(io.BytesIO(render(rep, "xlsx", "zh")))
    assert wb.sheetnames[:3] == ["关键指标", "按类别统计工单", "按责任部门统计工单"]
    for ws in wb.worksheets:
        assert ws["A1"].value.startswith("测试政务服务中心 运维报告(年报) 2025")
        assert ws.freeze_panes == "A3"
        assert all(c.font.bold for c in ws[2] if c.value is not None)
        for col in ws.iter_cols(min_row=2):
            width = ws.column_dimensions[col[0].column_letter].width
            longest = max(16 if isinstance(c.value, datetime) else display_width(str(c.value))
                          for c in col if c.value is not None)
            assert width >= min(longest, 58), (ws.title, col[0].value)
    months = wb["每月工单"]
    (chart,) = months._charts
    assert [months.cell(row=i, column=1).value for i in range(3, 15)] == [
        f"2025-{m:02d}" for m in range(1, 13)]
    assert chart.title is not None and months["B3"].number_format == "0"
    avail = wb["各类设备可用率"]
    assert len(avail._charts) == 1
    assert avail["C3"].number_format == "0.000" and isinstance(avail["C4"].value, float)
    assert [avail.cell(row=i, column=1).value for i in range(3, 6)] == ["自助终端", "专线",
                                                                        "交换机"]
    tickets = wb["工单清单"]
    assert tickets["B3"].number_format == "yyyy-mm-dd hh:mm"
    assert isinstance(tickets["B3"].value, datetime)
    wb.close()
    assert render(rep, "md", "zh").startswith("# 测试政务服务中心 运维报告(年报) 2025".encode())
    assert "关键指标" in render(rep, "csv", "zh").decode("utf-8-sig")


def test_cli_report_names_everything(
        year: tuple[Store, list[Row], list[tuple[str, datetime, datetime]]],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _, _ = year
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(HALL, allow_unicode=True), encoding="utf-8")
    assert main(["report", "--period", "month", "--date", "2025-03-01", "--db", store.url,
                 "--inventory", str(inv_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 测试政务服务中心 运维报告(月报) 2025-03")
    assert "| 电子政务外网专线 |" in out and "(未在清单中)" not in out
