"""Period reports (day, week, month, quarter, year) for the hall's management, as XLSX, Markdown
or CSV, in Chinese or English.

A report is data first (``Report``: titled sections of typed rows), rendered second, so the three
formats always carry the same figures. What a director reads, in order: key figures (this period
against the previous one and the same period last year), jobs by category / owning department /
assignee, MTTR per category, the most faulty devices by name, incidents and downtime,
availability per class and per floor, line outages, jobs per month, and the list of tickets.

The hall (``Hall``, from the inventory) gives names: the hall's own, each device's, each class's
label; its calendar and opening hours decide what time availability is counted over (see
monitor.tally and monitor.workdays). Without an inventory, devices known to the log are used
with their ids.

Every text cell of a CSV or XLSX export is neutralised against formula injection (OWASP: a cell
starting with =, +, -, @, tab or CR gets a leading apostrophe) and C0 control characters are
written as visible ``\\xNN`` escapes (XLSX cannot hold them; nothing is dropped).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from monitor.inventory import Inventory
from monitor.store import InvalidValue, Store, Ticket, schema
from monitor.store.engine import ALL_SITES
from monitor.store.localtime import date_key, local_midnight_utc, period_bounds, period_label
from monitor.store.models import CATEGORY_ZH
from monitor.tally import Availability, DeviceRef, availability, fold, mttr_sums, open_at, tally
from monitor.workdays import WorkCalendar

FORMATS = ("md", "csv", "xlsx")
LANGS = ("zh", "en")
LINE_CLASSES = ("line", "phone_line", "dedicated_line")
TICKET_LIST_MAX = 20_000  # rows in the ticket list; a longer period says how many were left out
MEDIA = {
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
STATUS_ZH = {"open": "待处理", "in_progress": "处理中", "resolved": "已解决", "closed": "已关闭"}

TEXT: dict[str, dict[str, str]] = {
    "title": {"zh": "运维报告", "en": "Maintenance report"},
    "day": {"zh": "日报", "en": "daily"}, "week": {"zh": "周报", "en": "weekly"},
    "month": {"zh": "月报", "en": "monthly"}, "quarter": {"zh": "季报", "en": "quarterly"},
    "year": {"zh": "年报", "en": "yearly"},
    "summary": {"zh": "关键指标", "en": "Key figures"},
    "jobs": {"zh": "按类别统计工单", "en": "Jobs by category"},
    "owners": {"zh": "按责任部门统计工单", "en": "Jobs by owning department"},
    "assignees": {"zh": "按处理人统计工单", "en": "Jobs by assignee"},
    "mttr": {"zh": "各类别平均修复时间", "en": "MTTR per category"},
    "top": {"zh": "故障最多的设备", "en": "Most faulty devices"},
    "downtime": {"zh": "故障与停机", "en": "Incidents and downtime"},
    "availability": {"zh": "各类设备可用率", "en": "Availability per class"},
    "floors": {"zh": "各楼层可用率", "en": "Availability per floor"},
    "lines": {"zh": "线路中断", "en": "Line outages"},
    "months": {"zh": "每月工单", "en": "Jobs per month"},
    "ticket_list": {"zh": "工单清单", "en": "Tickets"},
    "item": {"zh": "项目", "en": "Item"}, "value": {"zh": "本期", "en": "This period"},
    "previous": {"zh": "上期", "en": "Previous period"},
    "last_year": {"zh": "去年同期", "en": "Same period last year"},
    "category": {"zh": "类别", "en": "Category"}, "count": {"zh": "数量", "en": "Count"},
    "owner": {"zh": "责任部门", "en": "Owning department"},
    "assignee": {"zh": "处理人", "en": "Assignee"},
    "device": {"zh": "设备编号", "en": "Device"}, "name": {"zh": "设备名称", "en": "Name"},
    "class": {"zh": "设备类型", "en": "Class"}, "floor": {"zh": "楼层", "en": "Floor"},
    "devices": {"zh": "设备数", "en": "Devices"},
    "tickets": {"zh": "故障工单数", "en": "Fault tickets"},
    "incidents": {"zh": "故障次数", "en": "Incidents"},
    "down_min": {"zh": "停机(分钟)", "en": "Down (min)"},
    "unreachable_min": {"zh": "上级故障不可达(分钟)", "en": "Unreachable (min)"},
    "availability_pct": {"zh": "可用率(%)", "en": "Availability (%)"},
    "mtbf_h": {"zh": "平均无故障(小时)", "en": "MTBF (h)"},
    "mttr_h": {"zh": "平均修复(小时)", "en": "MTTR (h)"},
    "resolved_n": {"zh": "已解决数", "en": "Resolved"},
    "start": {"zh": "开始", "en": "Start"}, "end": {"zh": "结束", "en": "End"},
    "cause": {"zh": "原因", "en": "Cause"}, "month_col": {"zh": "月份", "en": "Month"},
    "id": {"zh": "工单号", "en": "Ticket"}, "opened_at": {"zh": "报修时间", "en": "Opened"},
    "status": {"zh": "状态", "en": "Status"}, "summary_col": {"zh": "摘要", "en": "Summary"},
    "resolved_at": {"zh": "解决时间", "en": "Resolved"},
    "resolution": {"zh": "处理结果", "en": "Resolution"},
    "opened": {"zh": "新建工单", "en": "Tickets opened"},
    "resolved": {"zh": "已解决工单", "en": "Tickets resolved"},
    "backlog": {"zh": "期末未完成工单", "en": "Open at period end"},
    "avail_all": {"zh": "设备可用率(%)", "en": "Device availability (%)"},
    "down_all": {"zh": "设备停机(分钟)", "en": "Device downtime (min)"},
    "incidents_all": {"zh": "设备故障次数", "en": "Device outages"},
    "mttr_all": {"zh": "工单平均修复(小时)", "en": "Ticket MTTR (h)"},
    "hall": {"zh": "服务大厅", "en": "Hall"},
    "period": {"zh": "统计周期", "en": "Period"}, "timezone": {"zh": "时区", "en": "Timezone"},
    "hours": {"zh": "可用率统计时段", "en": "Availability counted over"},
    "hours_open": {"zh": "工作日办公时间", "en": "opening hours on working days"},
    "hours_all": {"zh": "全天", "en": "24 h"},
    "ongoing": {"zh": "持续中", "en": "ongoing"},
    "none": {"zh": "(无)", "en": "(none)"},
    "not_listed": {"zh": "(未在清单中)", "en": "(not in inventory)"},
    "left_out": {"zh": "另有 {n} 条未列出", "en": "{n} more not listed"},
    "site": {"zh": "站点", "en": "Site"}, "sites": {"zh": "各站点关键指标", "en": "Sites"},
    "total": {"zh": "合计", "en": "Total"}, "all_sites": {"zh": "全部站点", "en": "All sites"},
}

# Excel number formats per column (the same rounding is applied to the values themselves).
NUMBER_FORMATS: dict[str, str] = {
    "count": "0", "value": "0.###", "previous": "0.###", "last_year": "0.###", "devices": "0",
    "tickets": "0", "incidents": "0", "resolved_n": "0", "id": "0",
    "down_min": "0.0", "unreachable_min": "0.0", "mtbf_h": "0.0", "mttr_h": "0.0",
    "availability_pct": "0.000",
    "start": "yyyy-mm-dd hh:mm", "end": "yyyy-mm-dd hh:mm", "opened_at": "yyyy-mm-dd hh:mm",
    "resolved_at": "yyyy-mm-dd hh:mm",
    "opened": "0", "resolved": "0", "backlog": "0", "mttr_all": "0.0", "avail_all": "0.000",
    "incidents_all": "0", "down_all": "0.0",
}


def t(key: str, lang: str) -> str:
    return TEXT.get(key, {}).get(lang, key)


# ---- the hall -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HallDevice:
    id: str
    name: str
    device_class: str
    floor: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Hall:
    """What a report needs from the inventory: names, labels, calendar and hours."""

    name: str = ""
    devices: tuple[HallDevice, ...] = ()
    class_labels: Mapping[str, str] = field(default_factory=dict)
    line_classes: frozenset[str] = frozenset(LINE_CLASSES)
    all_day_classes: frozenset[str] = frozenset(LINE_CLASSES)
    opening_hours: str | None = None
    calendar: WorkCalendar | None = None
    from_inventory: bool = False
    site: str = ""  # the inventory's site.id ("" for a hall built by hand)
    timezone: str = ""

    @classmethod
    def of(cls, inventory: Inventory) -> Hall:
        classes = inventory.device_classes()
        return cls(
            name=inventory.site.name,
            devices=tuple(HallDevice(
                d.id, d.name, d.class_,
                None if d.location.floor is None else str(d.location.floor), d.owner)
                for d in inventory.devices),
            class_labels={k: c.label for k, c in classes.items()},
            line_classes=frozenset(k for k, c in classes.items() if c.line),
            all_day_classes=frozenset(k for k, c in classes.items() if c.counts_all_day),
            opening_hours=inventory.site.opening_hours,
            calendar=WorkCalendar.of(inventory.site),
            from_inventory=True,
            site=inventory.site.id,
            timezone=inventory.site.timezone,
        )

    def profile(self) -> dict[str, Any]:
        """What another daemon needs to report on this hall (JSON; monitor.store.sites)."""
        cal = self.calendar or WorkCalendar()
        return {
            "name": self.name, "timezone": self.timezone,
            "opening_hours": self.opening_hours,
            "holidays": sorted(d.isoformat() for d in cal.holidays),
            "workdays": sorted(d.isoformat() for d in cal.workdays),
            "class_labels": dict(self.class_labels),
            "line_classes": sorted(self.line_classes),
            "all_day_classes": sorted(self.all_day_classes),
            "devices": [[d.id, d.name, d.device_class, d.floor, d.owner] for d in self.devices],
        }

    @classmethod
    def from_profile(cls, site: str, p: Mapping[str, Any]) -> Hall:
        """The hall a daemon registered (``profile``); a site that never registered: ids only."""
        if not p:
            return cls(site=site)
        return cls(
            name=p["name"],
            devices=tuple(HallDevice(*d) for d in p["devices"]),
            class_labels=dict(p["class_labels"]),
            line_classes=frozenset(p["line_classes"]),
            all_day_classes=frozenset(p["all_day_classes"]),
            opening_hours=p["opening_hours"],
            calendar=WorkCalendar(frozenset(map(date.fromisoformat, p["holidays"])),
                                  frozenset(map(date.fromisoformat, p["workdays"]))),
            from_inventory=True, site=site, timezone=p["timezone"],
        )


# ---- the data -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Label:
    """A cell rendered through a dictionary: kind 'text' (TEXT), 'category', 'class', 'status'."""

    kind: str
    key: str


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    columns: list[str]  # TEXT keys
    rows: list[list[Any]]
    left_out: int | None = None  # rows not listed (a very long ticket list)


@dataclass(frozen=True, slots=True)
class Report:
    period: str
    label: str
    start: date
    end: date
    timezone: str
    hall: str
    sections: list[Section]
    class_labels: Mapping[str, str] = field(default_factory=dict)
    site: str = ""  # the site reported on; "*" for every site (sections carry a site column)
    totals: Mapping[str, float] = field(default_factory=dict)  # raw sums (see _totals)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


def _same_period_last_year(start: date, period: str) -> date:
    if period == "week":
        y, w, _ = start.isocalendar()
        w = min(w, date(y - 1, 12, 28).isocalendar()[1])
        return date.fromisocalendar(y - 1, w, 1)
    try:
        return start.replace(year=start.year - 1)
    except ValueError:  # 29 February
        return start.replace(year=start.year - 1, day=28)


def _r(x: float, n: int) -> float:
    return round(x, n)


def build_report(store: Store, period: str, day: date, hall: Hall | None = None, *,
                 top: int = 10, now: datetime | None = None, tickets: int = TICKET_LIST_MAX,
                 devices: Iterable[DeviceRef] | None = None,
                 opening_hours: str | None = None) -> Report:
    """The report of the ``period`` containing local date ``day``. ``hall`` (from the inventory)
    names every device and class and makes availability cover devices that never failed."""
    hall = hall or Hall()
    if devices is not None:  # older callers: bare devices
        hall = Hall(devices=tuple(HallDevice(d.id, d.id, d.device_class, d.floor)
                                  for d in devices), opening_hours=opening_hours)
    start, end = period_bounds(day, period)
    prev_start, prev_end = period_bounds(start - timedelta(days=1), period)
    ly_start, ly_end = period_bounds(_same_period_last_year(start, period), period)
    devs = _devices(store, hall)
    known = {d.id: d for d in devs}
    refs = [DeviceRef(d.id, d.device_class, d.floor) for d in devs]

    def figures(a: date, b: date) -> dict[str, Any]:
        return _figures(store, hall, refs, a, b, now)

    cur, prev, ly = figures(start, end), figures(prev_start, prev_end), figures(ly_start, ly_end)
    per_dev, per_class = cur["availability"]
    sections = [
        Section("summary", ["item", "value", "previous", "last_year"], [
            [Label("text", "hall"), hall.name or "-", None, None],
            [Label("text", "period"), f"{start.isoformat()} – {end.isoformat()}",
             f"{prev_start.isoformat()} – {prev_end.isoformat()}",
             f"{ly_start.isoformat()} – {ly_end.isoformat()}"],
            *[[Label("text", k), cur[k], prev[k], ly[k]] for k in (
                "opened", "resolved", "backlog", "mttr_all", "avail_all", "incidents_all",
                "down_all")],
        ]),
        Section("jobs", ["category", "value", "previous", "last_year"], [
            [Label("category", c), cur["by_cat"].get(c, 0), prev["by_cat"].get(c, 0),
             ly["by_cat"].get(c, 0)] for c in store.categories]),
        Section("owners", ["owner", "count"], _grouped(store, start, end, "owner")),
        Section("assignees", ["assignee", "count"],
                _grouped(store, start, end, "assignee")),
        Section("mttr", ["category", "resolved_n", "mttr_h"], [
            [Label("category", c), n, _r(s / n / 3600, 1) if n else None]
            for c in store.categories for s, n in [cur["mttr"].get(c, (0.0, 0))]]),
        Section("top", ["device", "name", "class", "tickets", "incidents"],
                _top_devices(store, known, per_dev, start, end, top)),
        Section("downtime", ["device", "name", "class", "floor", "incidents", "down_min",
                             "unreachable_min", "availability_pct"], [
            [a.key, known[a.key].name, Label("class", known[a.key].device_class),
             known[a.key].floor or "", a.failures, _r(a.down_s / 60, 1),
             _r(a.unreachable_s / 60, 1), _r(a.ratio * 100, 3)]
            for a in sorted(per_dev, key=lambda a: (-a.down_s, -a.unreachable_s, a.key))
            if a.failures or a.down_s or a.unreachable_s]),
        Section("availability", ["class", "devices", "availability_pct", "incidents",
                                 "down_min", "unreachable_min", "mtbf_h"],
                _avail_rows(per_class, Counter(d.device_class for d in devs), "class")),
        Section("floors", ["floor", "devices", "availability_pct", "incidents", "down_min",
                           "unreachable_min", "mtbf_h"],
                _avail_rows(fold(per_dev, lambda k: known[k].floor or ""),
                            Counter(d.floor or "" for d in devs), "floor")),
        Section("lines", ["device", "name", "start", "end", "down_min", "cause"],
                _line_outages(store, hall, known, start, end, now)),
        Section("months", ["month_col", "count"], _months(store, start, end)),
    ]
    listed, total = _tickets(store, start, end, tickets)
    note = total - len(listed) or None
    sections.append(Section("ticket_list", [
        "id", "opened_at", "category", "status", "device", "name", "class", "floor", "owner",
        "assignee", "summary_col", "resolved_at", "resolution"], [
        [tk.id, tk.opened_at, Label("category", tk.category), Label("status", tk.status),
         tk.device_id or "", known[tk.device_id].name if tk.device_id in known else "",
         _ticket_class(tk, known),
         tk.floor or "", tk.owner or "", tk.assignee or "", tk.summary, tk.resolved_at,
         tk.resolution or ""] for tk in listed], note))
    return Report(period, period_label(start, period), start, end, store.tz.key, hall.name,
                  sections, dict(hall.class_labels), store.site, cur["sums"])


SITE_COLUMNS = ["site", "hall", "timezone", "opened", "resolved", "backlog", "mttr_all",
                "avail_all", "incidents_all", "down_all"]


def build_sites_report(store: Store, period: str, day: date, halls: Mapping[str, Hall], *,
                       top: int = 10, now: datetime | None = None,
                       tickets: int = TICKET_LIST_MAX) -> Report:
    """One report over the sites sharing the store (``halls``: site id -> its hall, as its
    daemon registered it). Each site is counted on its own: its rows, its timezone's local
    days, its calendar and opening hours. First section: each site's key figures and their
    totals (availability over the sum of every site's observed time); then every section of
    the single-site report, each row led by its site, so a device id used in two halls stays
    two rows and a spreadsheet filters by site. Times are each site's local time."""
    reports = [build_report(store.for_site(sid), period, day, hall, top=top, now=now,
                            tickets=tickets) for sid, hall in sorted(halls.items())]
    start, end = period_bounds(day, period)
    rows = [[r.site, r.hall or "-", r.timezone, *_key_figures(r.totals)] for r in reports]
    total: dict[str, float] = {}
    for r in reports:
        for k, v in r.totals.items():
            total[k] = total.get(k, 0) + v
    rows.append([Label("text", "total"), "", "", *_key_figures(total)])
    sections = [Section("sites", list(SITE_COLUMNS), rows)]
    for key in ([s.key for s in reports[0].sections] if reports else []):
        parts = [(r, r.section(key)) for r in reports]
        left = sum(s.left_out or 0 for _, s in parts)
        sections.append(Section(key, ["site", *parts[0][1].columns],
                                [[r.site, *(_local(v, r.timezone) for v in row)]
                                 for r, s in parts for row in s.rows], left or None))
    labels: dict[str, str] = {}
    for r in reports:
        labels.update(r.class_labels)
    zones = ", ".join(sorted({r.timezone for r in reports}))
    return Report(period, period_label(start, period), start, end, zones, "", sections, labels,
                  ALL_SITES, dict(total))


def report_for_site(store: Store, period: str, when: date, site: str | None,
                    own: Hall | None) -> Report:
    """The report of this store's site (``own``: its hall from the inventory), of another
    registered site, or of every site ("*"). InvalidValue when ``site`` never registered."""
    if site is None or site == store.site:
        if own is None and store.site != ALL_SITES:  # no inventory: the registered profile
            try:
                own = Hall.from_profile(store.site, store.site_profiles(store.site)[store.site])
            except InvalidValue:
                own = None
        return build_report(store, period, when, own)
    profiles = store.site_profiles(site)
    halls = {sid: Hall.from_profile(sid, p) for sid, p in profiles.items()}
    if site != ALL_SITES:
        return build_report(store.for_site(site), period, when, halls[site])
    for sid in store.sites():  # a site holding rows but never registered: ids only
        halls.setdefault(sid, Hall.from_profile(sid, {}))
    if own is not None:
        halls[store.site] = own  # this daemon's inventory is the freshest profile of its site
    return build_sites_report(store, period, when, halls)


def _key_figures(s: Mapping[str, float]) -> list[Any]:
    """opened, resolved, backlog, MTTR (h), availability (%), incidents, downtime (min)."""
    n, observed = s.get("mttr_n", 0), s.get("observed_s", 0.0)
    return [int(s.get("opened", 0)), int(s.get("resolved", 0)), int(s.get("backlog", 0)),
            _r(s.get("mttr_s", 0.0) / n / 3600, 1) if n else None,
            _r((1 - s.get("down_s", 0.0) / observed) * 100, 3) if observed else None,
            int(s.get("incidents", 0)), _r(s.get("down_s", 0.0) / 60, 1)]


def _local(v: Any, zone: str) -> Any:
    """A time cell as its site's local wall time (a report over sites has no one zone)."""
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(ZoneInfo(zone)).replace(tzinfo=None, second=0, microsecond=0)
    return v


def _ticket_class(tk: Ticket, known: Mapping[str, HallDevice]) -> Label | str:
    """The class a ticket names, else its device's; a ticket about no device has none."""
    if tk.device_class:
        return Label("class", tk.device_class)
    dev = known.get(tk.device_id or "")
    if dev is not None:
        return Label("class", dev.device_class)
    return Label("class", "") if tk.device_id else ""


def _devices(store: Store, hall: Hall) -> list[HallDevice]:
    """The inventory's devices, plus any device the log knows that the inventory does not
    (a removed device keeps its history; its class comes from its tickets)."""
    out = {d.id: d for d in hall.devices}
    T = schema.tickets
    with store.read() as conn:
        rows = conn.execute(select(T.c.device_id, func.max(T.c.device_class), func.max(T.c.floor))
                            .where(T.c.device_id.is_not(None), *store.of_site(T))
                            .group_by(T.c.device_id)).all()
        inc = conn.execute(select(schema.incidents.c.device_id).distinct()
                           .where(*store.of_site(schema.incidents))).scalars().all()
    for dev, cls, floor in rows:
        out.setdefault(dev, HallDevice(dev, "" if hall.from_inventory else dev, cls or "",
                                       floor))
    for dev in inc:
        out.setdefault(dev, HallDevice(dev, "" if hall.from_inventory else dev, ""))
    return sorted(out.values(), key=lambda d: d.id)


def _figures(store: Store, hall: Hall, refs: list[DeviceRef], start: date, end: date,
             now: datetime | None) -> dict[str, Any]:
    lo, hi = (local_midnight_utc(start, store.tz),
              local_midnight_utc(end + timedelta(days=1), store.tz))
    by_cat = Counter({r.group or "": r.count for r in tally(store, "year", start, end,
                                                                "category")})
    per_dev, per_class = availability(store, refs, start, end, hall.opening_hours, now=now,
                                      calendar=hall.calendar, all_day=hall.all_day_classes)
    sums = mttr_sums(store, start, end, "category")
    total_s, total_n = sum(s for s, _ in sums.values()), sum(n for _, n in sums.values())
    observed, down = sum(a.observed_s for a in per_dev), sum(a.down_s for a in per_dev)
    resolved, backlog = _resolved(store, lo, hi), open_at(store, hi)
    return {
        "by_cat": by_cat, "availability": (per_dev, per_class), "mttr": sums,
        "opened": sum(by_cat.values()),
        "resolved": resolved,
        "backlog": backlog,
        "mttr_all": _r(total_s / total_n / 3600, 1) if total_n else None,
        "avail_all": _r((1 - down / observed) * 100, 3) if observed else None,
        "incidents_all": sum(a.failures for a in per_dev),
        "down_all": _r(down / 60, 1),
        "sums": {"opened": sum(by_cat.values()), "resolved": resolved, "backlog": backlog,
                 "observed_s": observed, "down_s": down, "mttr_s": total_s, "mttr_n": total_n,
                 "incidents": sum(a.failures for a in per_dev)},
    }


def _grouped(store: Store, start: date, end: date, dim: str) -> list[list[Any]]:
    counts = Counter[str]()
    for r in tally(store, "year", start, end, dim):
        counts[r.group or ""] += r.count
    return [[k or Label("text", "none"), n] for k, n in
            sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _avail_rows(rows: list[Availability], devices: Counter[str], kind: str) -> list[list[Any]]:
    return [[Label("class", a.key) if kind == "class" else (a.key or Label("text", "none")),
             devices.get(a.key, 0), _r(a.ratio * 100, 3), a.failures, _r(a.down_s / 60, 1),
             _r(a.unreachable_s / 60, 1),
             None if a.mtbf_s is None else _r(a.mtbf_s / 3600, 1)] for a in rows]


def _resolved(store: Store, lo: datetime, hi: datetime) -> int:
    T = schema.tickets
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(T).where(
            T.c.resolved_at >= lo, T.c.resolved_at < hi, *store.of_site(T))).scalar_one())


def _top_devices(store: Store, known: Mapping[str, HallDevice], per_dev: list[Availability],
                 start: date, end: date, top: int) -> list[list[Any]]:
    """Devices by fault tickets opened in the period, then by outages the daemon recorded."""
    T = schema.tickets
    with store.read() as conn:
        got: dict[str, int] = dict(conn.execute(
            select(T.c.device_id, func.count())
            .where(T.c.category == "fault", T.c.device_id.is_not(None), *store.of_site(T),
                   T.c.local_day.between(date_key(start), date_key(end)))
            .group_by(T.c.device_id)).all())
    outages = {a.key: a.failures for a in per_dev}
    ids = {d for d, n in got.items() if n} | {d for d, n in outages.items() if n}
    ranked = sorted(ids, key=lambda d: (-got.get(d, 0), -outages.get(d, 0), d))[:top]
    return [[d, known[d].name if d in known else "",
             Label("class", known[d].device_class if d in known else ""),
             int(got.get(d, 0)), outages.get(d, 0)] for d in ranked]


def _line_outages(store: Store, hall: Hall, known: Mapping[str, HallDevice], start: date,
                  end: date, now: datetime | None) -> list[list[Any]]:
    lo, hi = (local_midnight_utc(start, store.tz),
              local_midnight_utc(end + timedelta(days=1), store.tz))
    lines = {d for d, dev in known.items() if dev.device_class in hall.line_classes}
    out = []
    for i in sorted(store.incidents(since=lo, until=hi, limit=1_000_000),
                    key=lambda i: (i.started_at, i.device_id)):
        if i.device_id in lines and i.status == "down":
            stop = i.ended_at
            till = min(stop or (now or store.clock()), hi)
            mins = _r((till - max(i.started_at, lo)).total_seconds() / 60, 1)
            out.append([i.device_id, known[i.device_id].name, i.started_at,
                        stop or Label("text", "ongoing"), mins, i.cause])
    return out


def _months(store: Store, start: date, end: date) -> list[list[Any]]:
    counts = {r.period: r.count for r in tally(store, "month", start, end)}
    out, d = [], start.replace(day=1)
    while d <= end:
        label = f"{d.year}-{d.month:02d}"
        out.append([label, counts.get(label, 0)])
        d = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return out


def _tickets(store: Store, start: date, end: date, limit: int) -> tuple[list[Ticket], int]:
    """The period's tickets, oldest first (the newest ``limit`` of a longer list)."""
    page, total = store.list_tickets(
        limit=limit, opened_from=local_midnight_utc(start, store.tz),
        opened_to=local_midnight_utc(end + timedelta(days=1), store.tz))
    return sorted(page, key=lambda tk: (tk.opened_at, tk.id)), total


# ---- rendering ----------------------------------------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_C0 = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def safe_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text: C0 controls as visible escapes, and a
    leading apostrophe before =, +, -, @, tab or CR (OWASP CSV injection)."""
    text = _C0.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _label(v: Label, report: Report, lang: str) -> str:
    if v.kind == "category":
        return CATEGORY_ZH.get(v.key, v.key) if lang == "zh" else v.key
    if v.kind == "status":
        return STATUS_ZH.get(v.key, v.key) if lang == "zh" else v.key
    if v.kind == "class":
        if not v.key:
            return t("not_listed", lang)
        return report.class_labels.get(v.key, v.key) if lang == "zh" else v.key
    return t(v.key, lang)


def _value(v: Any, report: Report, lang: str) -> Any:
    """A cell as the spreadsheet gets it: numbers stay numbers, times become site-local naive
    datetimes, everything else text."""
    if isinstance(v, Label):
        return _label(v, report, lang)
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(ZoneInfo(report.timezone)).replace(tzinfo=None, second=0,
                                                                microsecond=0)
    return v


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def _note(s: Section, lang: str) -> str:
    return t("left_out", lang).format(n=s.left_out)


def _table(report: Report, s: Section, lang: str) -> tuple[list[str], list[list[Any]]]:
    return [t(c, lang) for c in s.columns], [[_value(v, report, lang) for v in r] for r in s.rows]


def title(report: Report, lang: str) -> str:
    sep = "" if lang == "zh" else " "
    name = t("all_sites", lang) if report.site == ALL_SITES else report.hall
    hall = f"{name} " if name else ""
    return f"{hall}{t('title', lang)}{sep}({t(report.period, lang)}) {report.label}"


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


def _md_cell(v: Any) -> str:
    return _C0.sub(lambda m: f"\\x{ord(m.group()):02x}", _text(v)).replace("|", "\\|") \
        .replace("\n", " ")


def _markdown(report: Report, lang: str) -> str:
    out = [f"# {title(report, lang)}", ""]
    for s in report.sections:
        head, rows = _table(report, s, lang)
        out += [f"## {t(s.key, lang)}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        out += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in rows]
        if s.left_out:
            out += ["", _note(s, lang)]
        out.append("")
    return "\n".join(out)


def _csv(report: Report, lang: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([safe_text(title(report, lang))])
    for s in report.sections:
        head, rows = _table(report, s, lang)
        w.writerow([])
        w.writerow([t(s.key, lang)])
        w.writerow(head)
        w.writerows([safe_text(_text(v)) if not isinstance(v, int | float) else v
                     for v in r] for r in rows)
        if s.left_out:
            w.writerow([_note(s, lang)])
    return buf.getvalue()


def display_width(text: str) -> int:
    """Columns a text takes in a spreadsheet: Chinese (wide) characters count two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _xlsx(report: Report, lang: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    bold, head_fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    heading = title(report, lang)
    for s in report.sections:
        ws = wb.create_sheet(t(s.key, lang)[:31])
        head, rows = _table(report, s, lang)
        ws.append([safe_text(f"{heading} — {t(s.key, lang)}")])
        ws["A1"].font = Font(bold=True, size=14)
        ws.append(head)
        for c in ws[2]:
            c.font, c.fill = bold, head_fill
            c.alignment = Alignment(vertical="center")
        for r in rows:
            ws.append([safe_text(v) if isinstance(v, str) else v for v in r])
        if s.left_out:
            ws.append([_note(s, lang)])
        ws.freeze_panes = "A3"  # title and header stay in view
        for j, col in enumerate(s.columns, start=1):
            fmt = NUMBER_FORMATS.get(col)
            cells = [r[j - 1] for r in rows]
            width = max([display_width(head[j - 1])]
                        + [display_width(_text(v)) for v in cells[:2000]])
            if fmt and fmt.startswith("yyyy"):
                width = max(width, 16)
            ws.column_dimensions[get_column_letter(j)].width = min(width + 2, 60)
            if fmt:
                for i in range(3, 3 + len(rows)):
                    ws.cell(row=i, column=j).number_format = fmt
        if s.columns[0] == "site":  # a report over sites: one chart per site would mislead
            continue
        if s.key == "months" and rows:
            _chart(ws, BarChart(), Reference, t(s.key, lang), 2, len(rows), t("count", lang))
        if s.key == "availability" and rows:
            _chart(ws, BarChart(), Reference, t(s.key, lang), 3, len(rows),
                   t("availability_pct", lang))
    wb.properties.title = heading
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _chart(ws: Any, chart: Any, ref: Any, name: str, value_col: int, n: int,
           axis: str) -> None:
    """A bar chart of one value column against the first column, right of the table."""
    chart.title, chart.y_axis.title = name, axis
    chart.add_data(ref(ws, min_col=value_col, min_row=2, max_row=2 + n), titles_from_data=True)
    chart.set_categories(ref(ws, min_col=1, min_row=3, max_row=2 + n))
    chart.width, chart.height = 18, 9
    ws.add_chart(chart, f"{_col_letter(ws.max_column + 2)}3")


def _col_letter(n: int) -> str:
    from openpyxl.utils import get_column_letter

    return str(get_column_letter(n))

