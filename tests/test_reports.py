"""Reports: the same figures in Markdown, CSV and XLSX, Chinese and English."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from openpyxl import load_workbook

from monitor.reports import build_report, render
from monitor.store import NewTicket, Store
from monitor.tally import DeviceRef

T = datetime(2025, 3, 3, 2, tzinfo=UTC)  # Monday 10:00 in Shanghai
DEVICES = [DeviceRef("line-telecom", "line", "1"), DeviceRef("kiosk-1", "kiosk", "1"),
           DeviceRef("kiosk-2", "kiosk", "1")]


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store("sqlite://", timezone="Asia/Shanghai")
    for i, (cat, dev) in enumerate([("fault", "kiosk-1"), ("fault", "kiosk-1"),
                                    ("fault", "kiosk-2"), ("inspection", None)]):
        s.create_ticket(NewTicket(category=cat, summary=f"t{i}", reporter="li", device_id=dev,
                                  device_class="kiosk" if dev else None), at=T)
    inc = s.open_incident("line-telecom", None, "down", "carrier cut", T)
    s.close_incident(inc, T + timedelta(minutes=30))
    yield s
    s.close()


def test_report_figures(store: Store) -> None:
    rep = build_report(store, "week", date(2025, 3, 5), DEVICES, now=T + timedelta(days=30))
    assert (rep.label, rep.start, rep.end) == ("2025-W10", date(2025, 3, 3), date(2025, 3, 9))
    sec = {s.key: s for s in rep.sections}
    assert dict(sec["jobs"].rows)["fault"] == 3
    assert sec["top"].rows[0] == ["kiosk-1", "kiosk", 2]
    assert sec["downtime"].rows == [["line-telecom", "line", 1, 30.0]]
    avail = {r[0]: r[1] for r in sec["availability"].rows}
    assert avail["kiosk"] == 100.0 and avail["line"] == round((1 - 30 / (7 * 1440)) * 100, 3)
    assert sec["lines"].rows[0][0] == "line-telecom" and sec["lines"].rows[0][3] == 30.0


def test_formats_and_languages(store: Store) -> None:
    rep = build_report(store, "month", date(2025, 3, 1), DEVICES, now=T + timedelta(days=40))
    zh = render(rep, "md", "zh").decode()
    assert zh.startswith("# 运维报告(月报) 2025-03") and "| 故障维修 | 3 |" in zh
    assert "| line-telecom | 2025-03-03 10:00 | 2025-03-03 10:30 | 30.0 | carrier cut |" in zh
    en = render(rep, "csv", "en")
    assert en.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    rows = list(csv.reader(io.StringIO(en.decode("utf-8-sig"))))
    assert ["fault", "3"] in rows and ["Tickets opened", "4"] in rows
    wb = load_workbook(io.BytesIO(render(rep, "xlsx", "zh")))
    assert wb.sheetnames == ["概况", "按类别统计工单", "故障最多的设备", "故障与停机",
                             "各类设备可用率", "线路中断"]
    assert [c.value for c in wb["按类别统计工单"][2]] == ["故障维修", 3]
    wb.close()
    with pytest.raises(ValueError):
        render(rep, "pdf", "en")


def test_periods_cover_their_calendar(store: Store) -> None:
    bounds = {p: build_report(store, p, date(2025, 3, 3), DEVICES) for p in
              ("day", "week", "month", "quarter", "year")}
    assert [(r.start, r.end) for r in bounds.values()] == [
        (date(2025, 3, 3), date(2025, 3, 3)), (date(2025, 3, 3), date(2025, 3, 9)),
        (date(2025, 3, 1), date(2025, 3, 31)), (date(2025, 1, 1), date(2025, 3, 31)),
        (date(2025, 1, 1), date(2025, 12, 31))]
