"""Reports: what the daemon recorded, as management reads it, in Markdown, CSV and XLSX.

Outages are seeded by running the real pipeline (monitor.pipeline with driven mock results and a
hand-moved clock), never by writing incident rows of a shape the pipeline does not write.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from monitor.inventory import Inventory, ResolvedCheck
from monitor.pipeline import Pipeline
from monitor.reports import Hall, Label, build_report, display_width, render, safe_text
from monitor.state import DeviceStatus
from monitor.store import NewTicket, Store
from monitor.store.aio import AsyncStore
from probes.result import ProbeResult
from tests.conftest import Clock

# Monday 2025-03-03, a working day; 10:00 in Shanghai
MONDAY_10 = datetime(2025, 3, 3, 2, tzinfo=UTC)
# What the ICMP probe returns (the line's conditions read loss and RTT: without them a check
# "cannot evaluate" and fails, issue 10.8).
OK = ProbeResult.success(0.001, {"loss_ratio": 0.0, "rtt_avg_seconds": 0.001})
FAIL = ProbeResult.failure(1.0, "no reply", {"loss_ratio": 1.0})

HALL = {
    "site": {"name": "测试政务服务中心", "timezone": "Asia/Shanghai",
             "opening_hours": "Mon-Fri 08:30-18:00"},
    "defaults": {"interval": "10s", "timeout": "2s", "failure_threshold": 1,
                 "success_threshold": 1},
    "credentials": {"ro": {"version": "2c", "community": "${COMMUNITY:-public}"}},
    "devices": [
        {"id": "sw-1f", "name": "一楼接入交换机", "class": "switch", "address": "127.20.1.1",
         "location": {"floor": 1}, "owner": "信息科", "credential": "ro"},
        {"id": "kiosk-1f-01", "name": "一楼自助终端1号", "class": "kiosk",
         "address": "127.20.1.11", "parent": "sw-1f", "location": {"floor": 1},
         "credential": "ro"},
        {"id": "line-egov", "name": "电子政务外网专线", "class": "line", "address": "127.20.0.4",
         "location": {"floor": 2}, "owner": "电信"},
    ],
}


def inventory() -> Inventory:
    return Inventory.model_validate(HALL, context={"env": {}})


@pytest.fixture
async def astore(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    s = AsyncStore(Store(f"sqlite:///{tmp_path / 'hall.db'}", timezone="Asia/Shanghai"))
    yield s
    await s.aclose()


def _check(inv: Inventory, device: str) -> ResolvedCheck:
    return next(c for c in inv.checks_for(inv.device(device)) if c.role == "reachability")


class Hallway:
    """The real pipeline, fed ping results at a driven wall clock."""

    def __init__(self, inv: Inventory, store: AsyncStore, start: datetime) -> None:
        self.inv, self.clock = inv, Clock(start.timestamp())
        self.p = Pipeline(inv, store=store, clock=self.clock)

    async def ping(self, device: str, result: ProbeResult, at: datetime) -> None:
        self.clock.now = at.timestamp()
        await self.p.handle(_check(self.inv, device), result)
        assert self.p.store is not None
        await self.p.store.drain()  # the pipeline queues its writes; the report reads them

    async def all_up(self, at: datetime) -> None:
        for dev in ("sw-1f", "kiosk-1f-01", "line-egov"):
            await self.ping(dev, OK, at)


async def test_the_daemons_own_outages_count(astore: AsyncStore) -> None:
    """Issue 10.1 as found: a line down 40 s showed 100 % and no outage in the day report."""
    inv, t0 = inventory(), MONDAY_10
    hall = Hallway(inv, astore, t0)
    await hall.all_up(t0)
    # the line: down at +60 s (threshold 1), back at +100 s -> 40 s
    await hall.ping("line-egov", FAIL, t0 + timedelta(seconds=60))
    await hall.ping("line-egov", FAIL, t0 + timedelta(seconds=80))
    await hall.ping("line-egov", OK, t0 + timedelta(seconds=100))
    # the switch: down 10:10-10:40; its kiosk fails behind it (UNREACHABLE) until 10:40
    await hall.ping("sw-1f", FAIL, t0 + timedelta(minutes=10))
    await hall.ping("kiosk-1f-01", FAIL, t0 + timedelta(minutes=10, seconds=5))
    assert hall.p.state.status("kiosk-1f-01") is DeviceStatus.UNREACHABLE
    await hall.ping("sw-1f", OK, t0 + timedelta(minutes=40))
    await hall.ping("kiosk-1f-01", OK, t0 + timedelta(minutes=40, seconds=5))
    # maintenance excluded: 10:30-10:40 of the switch's outage was a window
    store = astore.store
    store.add_window("device", "sw-1f", t0 + timedelta(minutes=30), t0 + timedelta(minutes=40),
                     "firmware", "li")
    # every incident the pipeline wrote names its cause check (the shape of the bug)
    assert all(i.check == "ping" for i in store.incidents())

    rep = build_report(store, "day", date(2025, 3, 3), Hall.of(inv),
                       now=t0 + timedelta(days=1))
    down = {r[0]: r for r in rep.section("downtime").rows}
    # device, name, class, floor, incidents, down min, unreachable min, availability %
    open_s = 9.5 * 3600  # Mon 08:30-18:00; the line is counted 24 h
    assert down["line-egov"][1:] == ["电子政务外网专线", Label("class", "line"), "2", 1,
                                     round(40 / 60, 1), 0.0, round((1 - 40 / 86400) * 100, 3)]
    sw_down = 20 * 60  # 10:10-10:30, the window's 10 min excluded
    assert down["sw-1f"][4:] == [1, 20.0, 0.0, round((1 - sw_down / (open_s - 600)) * 100, 3)]
    assert down["kiosk-1f-01"][4:] == [0, 0.0, 30.0, 100.0]  # behind its parent: shown apart
    lines = rep.section("lines").rows
    assert [(r[0], r[1], r[4], r[5]) for r in lines] == [
        ("line-egov", "电子政务外网专线", round(40 / 60, 1), "no reply")]
    assert lines[0][2] == t0 + timedelta(seconds=60)
    per_class = {r[0].key: r for r in rep.section("availability").rows}
    assert per_class["line"][2] < 100 and per_class["kiosk"][2] == 100.0
    assert per_class["kiosk"][5] == 30.0  # unreachable minutes per class
    # every device and class appears with its name; no row has an empty class
    md = render(rep, "md", "zh").decode()
    assert md.startswith("# 测试政务服务中心 运维报告(日报) 2025-03-03")
    assert "| line-egov | 电子政务外网专线 | 专线 | 2 | 1 | 0.7 | 0.0 | 99.954 |" in md
    assert "| 交换机 | 1 |" in md and "| 自助终端 | 1 | 100.0 | 0 | 0.0 | 30.0 |" in md
    for s in rep.sections:
        for row in s.rows:
            assert Label("class", "") not in row, (s.key, row)


async def test_an_ongoing_outage_counts_up_to_now(astore: AsyncStore) -> None:
    inv, t0 = inventory(), MONDAY_10
    hall = Hallway(inv, astore, t0)
    await hall.all_up(t0)
    await hall.ping("line-egov", FAIL, t0 + timedelta(minutes=1))
    rep = build_report(astore.store, "day", date(2025, 3, 3), Hall.of(inv),
                       now=t0 + timedelta(minutes=31))
    (line,) = rep.section("lines").rows
    assert line[3] == Label("text", "ongoing") and line[4] == 30.0
    assert "| 持续中 | 30.0 |" in render(rep, "md", "zh").decode()


def test_formats_and_languages() -> None:
    s = Store("sqlite://", timezone="Asia/Shanghai")
    for i, (cat, dev) in enumerate([("fault", "kiosk-1f-01"), ("fault", "kiosk-1f-01"),
                                    ("fault", "sw-1f"), ("inspection", None)]):
        s.create_ticket(NewTicket(category=cat, summary=f"t{i}", reporter="li", device_id=dev,
                                  device_class="kiosk" if dev else None), at=MONDAY_10)
    rep = build_report(s, "month", date(2025, 3, 1), Hall.of(inventory()),
                       now=MONDAY_10 + timedelta(days=40))
    zh = render(rep, "md", "zh").decode()
    assert "| 故障维修 | 3 | 0 | 0 |" in zh
    assert "| kiosk-1f-01 | 一楼自助终端1号 | 自助终端 | 2 | 0 |" in zh  # named, labelled
    assert "| 1 | 2025-03-03 10:00 | 故障维修 | 待处理 | kiosk-1f-01 |" in zh  # site time
    en = render(rep, "csv", "en")
    assert en.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    rows = list(csv.reader(io.StringIO(en.decode("utf-8-sig"))))
    assert ["fault", "3", "0", "0"] in rows and ["Tickets opened", "4", "0", "0"] in rows
    with pytest.raises(ValueError):
        render(rep, "pdf", "en")
    short = build_report(s, "month", date(2025, 3, 1), now=MONDAY_10, tickets=3)
    assert len(short.section("ticket_list").rows) == 3
    assert "1 more not listed" in render(short, "md", "en").decode()
    s.close()


def test_periods_cover_their_calendar() -> None:
    s = Store("sqlite://", timezone="Asia/Shanghai")
    bounds = {p: build_report(s, p, date(2025, 3, 3), now=MONDAY_10) for p in
              ("day", "week", "month", "quarter", "year")}
    assert [(r.start, r.end) for r in bounds.values()] == [
        (date(2025, 3, 3), date(2025, 3, 3)), (date(2025, 3, 3), date(2025, 3, 9)),
        (date(2025, 3, 1), date(2025, 3, 31)), (date(2025, 1, 1), date(2025, 3, 31)),
        (date(2025, 1, 1), date(2025, 12, 31))]
    prev = bounds["week"].section("summary").rows[1]
    assert prev[2:] == ["2025-02-24 – 2025-03-02", "2024-03-04 – 2024-03-10"]  # ISO week 10
    s.close()


HOSTILE = ['=HYPERLINK("http://127.0.0.1/x","click")', "=cmd|' /C calc'!A0", "+1+2", "-3",
           "@SUM(A1)", "\tx", "\rx"]


def test_no_cell_becomes_a_formula_and_control_characters_do_not_break_xlsx() -> None:
    """Issue 11 as found: a device id =HYPERLINK(...) became a live formula; a C0 control
    character in a ticket field broke every XLSX report of the period."""
    s = Store("sqlite://", timezone="Asia/Shanghai")
    for text in HOSTILE:
        s.create_ticket(NewTicket(category="fault", summary=text, reporter="li",
                                  device_id=text.strip()[:60] or "x", owner="科\x07室",
                                  assignee="王\x1b五"), at=MONDAY_10)
    rep = build_report(s, "month", date(2025, 3, 3), now=MONDAY_10 + timedelta(days=40))
    wb = load_workbook(io.BytesIO(render(rep, "xlsx", "zh")))
    texts = [c.value for ws in wb.worksheets for row in ws.iter_rows() for c in row
             if isinstance(c.value, str)]
    assert texts and not [v for v in texts if v.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert [c.data_type for ws in wb.worksheets for row in ws.iter_rows() for c in row
            if c.data_type == "f"] == []
    assert "科\\x07室" in texts and "'=cmd|' /C calc'!A0" in texts
    wb.close()
    text = render(rep, "csv", "en").decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [c for r in rows for c in r]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert "'=HYPERLINK(\"http://127.0.0.1/x\",\"click\")" in cells
    assert safe_text("-3") == "'-3" and safe_text("ok") == "ok"
    s.close()


def test_display_width_counts_chinese_double() -> None:
    assert display_width("专线") == 4 and display_width("ab") == 2
