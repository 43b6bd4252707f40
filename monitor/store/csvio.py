"""Import last year's paper log from CSV: every bad row reported by line number, nothing kept
unless every row is good (the caller inserts the parsed rows in one transaction).

Encoding: UTF-8 (with or without BOM) or GB18030, which includes GBK (what Excel writes on
Chinese Windows for "CSV (逗号分隔)"); ``decode_csv`` says which it read.

Columns (header row required; order free; unknown columns are an error), each also by its Chinese
name (HEADER_ZH): opened_at (required), category (required; key or Chinese label), summary
(required), reporter, device_id, device_class, floor, owner, assignee, status (default: closed if
closed_at, resolved if resolved_at, else open), resolved_at, closed_at, resolution. Times: ISO
8601 or as Excel writes them ("2025/3/7 9:30", "2025/3/7"); without an offset they are site-local
("2025-03-07 09:30" or "2025-03-07", which means local midnight).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.store.models import TICKET_STATUSES, NewTicket, StoreError, category_key

COLUMNS = ("opened_at", "category", "summary", "reporter", "device_id", "device_class", "floor",
           "owner", "assignee", "status", "resolved_at", "closed_at", "resolution")
REQUIRED = ("opened_at", "category", "summary")
TIMES = ("opened_at", "resolved_at", "closed_at")
# Chinese column names as a clerk would type them (several per column where offices differ).
HEADER_ZH: dict[str, str] = {
    "开单时间": "opened_at", "报修时间": "opened_at", "登记时间": "opened_at",
    "类别": "category", "分类": "category", "工单类别": "category",
    "摘要": "summary", "故障描述": "summary", "问题描述": "summary", "内容": "summary",
    "报修人": "reporter", "登记人": "reporter",
    "设备编号": "device_id", "设备ID": "device_id",
    "设备类别": "device_class", "设备类型": "device_class",
    "楼层": "floor", "负责人": "owner", "责任人": "owner",
    "处理人": "assignee", "维修人": "assignee",
    "状态": "status", "解决时间": "resolved_at", "修复时间": "resolved_at",
    "关闭时间": "closed_at", "处理结果": "resolution", "解决办法": "resolution",
}
STATUS_ZH = {"待处理": "open", "处理中": "in_progress", "已解决": "resolved", "已关闭": "closed"}
ENCODINGS = (("utf-8", "UTF-8"), ("gb18030", "GB18030/GBK"))
# What Excel writes for a date/time cell in a Chinese locale: 2025/3/7 9:30 (seconds optional).
_EXCEL_TIME = re.compile(
    r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")


class CsvErrors(StoreError):
    def __init__(self, errors: list[str]) -> None:
        shown = errors[:50] + ([f"... and {len(errors) - 50} more"] if len(errors) > 50 else [])
        super().__init__("nothing imported:\n" + "\n".join(shown))
        self.errors = errors


def decode_csv(data: bytes) -> tuple[str, str]:
    """(text, the encoding it was read as): UTF-8 with BOM, UTF-8, else GB18030 (a superset of
    GBK and GB2312). Neither: CsvErrors naming the line of the first byte that fits neither."""
    if data.startswith(b"\xef\xbb\xbf"):
        encodings: tuple[tuple[str, str], ...] = (("utf-8-sig", "UTF-8 (BOM)"),)
    else:
        encodings = ENCODINGS
    last: UnicodeDecodeError | None = None
    for codec, name in encodings:
        try:
            return data.decode(codec), name
        except UnicodeDecodeError as exc:
            last = exc  # the widest encoding's complaint is the one to show
    assert last is not None
    line = data.count(b"\n", 0, last.start) + 1
    raise CsvErrors([f"line {line}: byte {data[last.start]:#04x} fits neither UTF-8 nor "
                     "GB18030/GBK: save the file as 'CSV UTF-8' in Excel"])


def _time(text: str, tz: ZoneInfo) -> datetime:
    text = text.strip()
    excel = _EXCEL_TIME.fullmatch(text)
    if excel:
        y, mo, d, h, mi, sec = (int(g) if g else 0 for g in excel.groups())
        at = datetime(y, mo, d, h, mi, sec)
    else:
        at = datetime.fromisoformat(text)
    return (at if at.tzinfo else at.replace(tzinfo=tz)).astimezone(UTC)


def _row(raw: dict[str, str], tz: ZoneInfo, categories: Sequence[str],
         actor: str) -> NewTicket:
    """One row or ValueError('field: why')."""
    vals: dict[str, Any] = {k: (v or "").strip() or None for k, v in raw.items()}
    for k in REQUIRED:
        if not vals.get(k):
            raise ValueError(f"{k}: required")
    cat = category_key(vals["category"])
    if cat not in categories:
        raise ValueError(f"category: unknown {vals['category']!r} (one of {', '.join(categories)})")
    vals["category"] = cat
    for k in TIMES:
        if vals.get(k):
            try:
                vals[k] = _time(vals[k], tz)
            except (ValueError, OverflowError):
                raise ValueError(f"{k}: not a date/time: {vals[k]!r}") from None
    if vals.get("status") in STATUS_ZH:
        vals["status"] = STATUS_ZH[vals["status"]]
    status = vals.get("status") or (
        "closed" if vals.get("closed_at") else "resolved" if vals.get("resolved_at") else "open")
    if status not in TICKET_STATUSES:
        raise ValueError(f"status: unknown {status!r} (one of {', '.join(TICKET_STATUSES)})")
    for k in ("resolved_at", "closed_at"):
        if vals.get(k) and vals[k] < vals["opened_at"]:
            raise ValueError(f"{k}: before opened_at")
    vals["status"] = status
    vals["reporter"] = vals.get("reporter") or actor
    return NewTicket(source="import", **vals)


def parse_tickets_csv(data: str | bytes, tz: ZoneInfo, categories: Sequence[str],
                      actor: str = "import") -> list[NewTicket]:
    """Parse every row; raise CsvErrors listing ``line N: field: why`` for all bad rows."""
    text = decode_csv(data)[0] if isinstance(data, bytes) else data.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames:
        reader.fieldnames = [HEADER_ZH.get(h.strip(), h.strip()) for h in reader.fieldnames]
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in COLUMNS]
    missing = [h for h in REQUIRED if h not in header]
    if unknown or missing or not header:
        why = []
        if unknown:
            why.append(f"unknown columns {', '.join(unknown)} (known: {', '.join(COLUMNS)})")
        if missing or not header:
            why.append(f"missing columns {', '.join(missing or REQUIRED)}")
        raise CsvErrors([f"line 1: {w}" for w in why])
    rows: list[NewTicket] = []
    errors: list[str] = []
    for raw in reader:
        if None in raw:
            errors.append(f"line {reader.line_num}: more fields than the header")
            continue
        try:
            rows.append(_row(raw, tz, categories, actor))
        except ValueError as exc:
            errors.append(f"line {reader.line_num}: {exc}")
    if errors:
        raise CsvErrors(errors)
    return rows
