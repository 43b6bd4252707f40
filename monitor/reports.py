"""Period reports (day, week, month, quarter, year) as Markdown, CSV or XLSX, in Chinese or
English: jobs by category, top faulty devices, incidents and downtime, availability per class,
line outages.

A report is data first (``Report``: titled sections of rows), rendered second, so the three
formats always carry the same figures.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from monitor.store import Store, schema
from monitor.store.localtime import date_key, local_midnight_utc, period_bounds, period_label
from monitor.store.models import CATEGORY_ZH
from monitor.tally import DeviceRef, availability, backlog, tally

FORMATS = ("md", "csv", "xlsx")
LANGS = ("zh", "en")
LINE_CLASSES = ("line", "phone_line", "dedicated_line")

TEXT: dict[str, dict[str, str]] = {
    "title": {"zh": "运维报告", "en": "Maintenance report"},
    "day": {"zh": "日报", "en": "daily"}, "week": {"zh": "周报", "en": "weekly"},
    "month": {"zh": "月报", "en": "monthly"}, "quarter": {"zh": "季报", "en": "quarterly"},
    "year": {"zh": "年报", "en": "yearly"},
    "summary": {"zh": "概况", "en": "Summary"},
    "jobs": {"zh": "按类别统计工单", "en": "Jobs by category"},
    "top": {"zh": "故障最多的设备", "en": "Top faulty devices"},
    "downtime": {"zh": "故障与停机", "en": "Incidents and downtime"},
    "availability": {"zh": "各类设备可用率", "en": "Availability per class"},
    "lines": {"zh": "线路中断", "en": "Line outages"},
    "item": {"zh": "项目", "en": "Item"}, "value": {"zh": "数值", "en": "Value"},
    "category": {"zh": "类别", "en": "Category"}, "count": {"zh": "数量", "en": "Count"},
    "device": {"zh": "设备", "en": "Device"}, "class": {"zh": "类型", "en": "Class"},
    "tickets": {"zh": "工单数", "en": "Tickets"}, "incidents": {"zh": "故障次数",
                                                              "en": "Incidents"},
    "down_min": {"zh": "停机(分钟)", "en": "Down (min)"},
    "availability_pct": {"zh": "可用率(%)", "en": "Availability (%)"},
    "mtbf_h": {"zh": "平均无故障(小时)", "en": "MTBF (h)"},
    "start": {"zh": "开始", "en": "Start"}, "end": {"zh": "结束", "en": "End"},
    "cause": {"zh": "原因", "en": "Cause"},
    "opened": {"zh": "新建工单", "en": "Tickets opened"},
    "resolved": {"zh": "已解决工单", "en": "Tickets resolved"},
    "backlog": {"zh": "期末未完成工单", "en": "Open at period end"},
    "period": {"zh": "统计周期", "en": "Period"}, "timezone": {"zh": "时区", "en": "Timezone"},
    "ongoing": {"zh": "持续中", "en": "ongoing"},
}


def t(key: str, lang: str) -> str:
    if key in CATEGORY_ZH:
        return CATEGORY_ZH[key] if lang == "zh" else key
    return TEXT.get(key, {}).get(lang, key)


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    columns: list[str]  # TEXT keys
    rows: list[list[Any]]
    translate_first: bool = False  # first column holds TEXT/category keys


@dataclass(frozen=True, slots=True)
class Report:
    period: str
    label: str
    start: date
    end: date
    timezone: str
    sections: list[Section]


def build_report(store: Store, period: str, day: date, devices: Iterable[DeviceRef] | None = None,
                 opening_hours: str | None = None, top: int = 10,
                 line_classes: Iterable[str] = LINE_CLASSES, now: datetime | None = None
                 ) -> Report:
    """The report of the ``period`` containing local date ``day``. ``devices`` (from the
    inventory) make availability cover devices that never failed; without them, devices known
    to the log are used."""
    start, end = period_bounds(day, period)
    lo, hi = local_midnight_utc(start, store.tz), local_midnight_utc(end + timedelta(1), store.tz)
    devs = list(devices) if devices is not None else _known_devices(store)
    by_cat = Counter({r.group or "": r.count for r in tally(store, period, start, end,
                                                                "category")})
    per_dev, per_class = availability(store, devs, start, end, opening_hours, now=now)
    klass = {d.id: d.device_class for d in devs}
    sections = [
        Section("summary", ["item", "value"], [
            ["period", f"{start.isoformat()} – {end.isoformat()}"],
            ["timezone", store.tz.key],
            ["opened", sum(by_cat.values())],
            ["resolved", _resolved(store, lo, hi)],
            ["backlog", backlog(store, period, start, end)[-1][1]],
        ], translate_first=True),
        Section("jobs", ["category", "count"],
                [[c, by_cat.get(c, 0)] for c in store.categories], translate_first=True),
        Section("top", ["device", "class", "tickets"], _top_devices(store, start, end, top)),
        Section("downtime", ["device", "class", "incidents", "down_min"], [
            [a.key, klass.get(a.key, ""), a.failures, round(a.down_s / 60, 1)]
            for a in sorted(per_dev, key=lambda a: (-a.down_s, a.key)) if a.failures or a.down_s
        ]),
        Section("availability", ["class", "availability_pct", "incidents", "mtbf_h"], [
            [a.key, round(a.ratio * 100, 3), a.failures,
             None if a.mtbf_s is None else round(a.mtbf_s / 3600, 1)] for a in per_class
        ]),
        Section("lines", ["device", "start", "end", "down_min", "cause"],
                _line_outages(store, devs, set(line_classes), lo, hi)),
    ]
    return Report(period, period_label(start, period), start, end, store.tz.key, sections)


def _known_devices(store: Store) -> list[DeviceRef]:
    with store.read() as conn:
        T = schema.tickets
        rows = conn.execute(select(T.c.device_id, func.max(T.c.device_class), func.max(T.c.floor))
                            .where(T.c.device_id.is_not(None)).group_by(T.c.device_id)).all()
        seen = {r[0]: DeviceRef(r[0], r[1] or "", r[2]) for r in rows}
        inc = conn.execute(select(schema.incidents.c.device_id).distinct()).scalars().all()
    for dev in inc:
        seen.setdefault(dev, DeviceRef(dev, ""))
    return sorted(seen.values(), key=lambda d: d.id)


def _resolved(store: Store, lo: datetime, hi: datetime) -> int:
    T = schema.tickets
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(T).where(
            T.c.resolved_at >= lo, T.c.resolved_at < hi)).scalar_one())


def _top_devices(store: Store, start: date, end: date, top: int) -> list[list[Any]]:
    rows = tally(store, "year", start, end, "category")  # cheap guard: any faults at all?
    if not any(r.group == "fault" for r in rows):
        return []
    T = schema.tickets
    with store.read() as conn:
        got = conn.execute(
            select(T.c.device_id, func.max(T.c.device_class), func.count().label("n"))
            .where(T.c.category == "fault", T.c.device_id.is_not(None),
                   T.c.local_day.between(date_key(start), date_key(end)))
            .group_by(T.c.device_id).order_by(func.count().desc(), T.c.device_id).limit(top)
        ).all()
    return [[d, c or "", int(n)] for d, c, n in got]


def _line_outages(store: Store, devs: list[DeviceRef], classes: set[str], lo: datetime,
                  hi: datetime) -> list[list[Any]]:
    lines = {d.id for d in devs if d.device_class in classes}
    out = []
    for i in sorted(store.incidents(since=lo, until=hi, limit=100_000),
                    key=lambda i: i.started_at):
        if i.device_id in lines and i.check is None and i.status == "down":
            end = i.ended_at
            mins = None if end is None else round((end - i.started_at).total_seconds() / 60, 1)
            out.append([i.device_id, i.started_at, end or "ongoing", mins, i.cause])
    return out


# ---- rendering ----------------------------------------------------------------------------
def _cell(v: Any, report: Report, lang: str) -> Any:
    if isinstance(v, datetime):
        from zoneinfo import ZoneInfo

        return v.astimezone(ZoneInfo(report.timezone)).strftime("%Y-%m-%d %H:%M")
    if v == "ongoing":
        return t("ongoing", lang)
    return "" if v is None else v


def _table(report: Report, s: Section, lang: str) -> tuple[list[str], list[list[Any]]]:
    head = [t(c, lang) for c in s.columns]
    rows = [[t(r[0], lang) if s.translate_first else _cell(r[0], report, lang),
             *(_cell(v, report, lang) for v in r[1:])] for r in s.rows]
    return head, rows


def title(report: Report, lang: str) -> str:
    sep = "" if lang == "zh" else " "
    return f"{t('title', lang)}{sep}({t(report.period, lang)}) {report.label}"


def render(report: Report, fmt: str, lang: str) -> bytes:
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}")
    if fmt == "md":
        return _markdown(report, lang).encode()
    if fmt == "csv":
        return _csv(report, lang).encode("utf-8-sig")  # BOM: Excel opens Chinese CSV correctly
    if fmt == "xlsx":
        return _xlsx(report, lang)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")


def _markdown(report: Report, lang: str) -> str:
    out = [f"# {title(report, lang)}", ""]
    for s in report.sections:
        head, rows = _table(report, s, lang)
        out += [f"## {t(s.key, lang)}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        out += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def _csv(report: Report, lang: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([title(report, lang)])
    for s in report.sections:
        head, rows = _table(report, s, lang)
        w.writerow([])
        w.writerow([t(s.key, lang)])
        w.writerow(head)
        w.writerows(rows)
    return buf.getvalue()


def _xlsx(report: Report, lang: str) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for s in report.sections:
        ws = wb.create_sheet(t(s.key, lang)[:31])
        head, rows = _table(report, s, lang)
        ws.append(head)
        for r in rows:
            ws.append(r)
    wb.properties.title = title(report, lang)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
