"""Import last year's paper log from CSV: every bad row reported by line number, nothing kept
unless every row is good (the caller inserts the parsed rows in one transaction).

Columns (header row required, UTF-8, optional BOM; order free; unknown columns are an error):
opened_at (required), category (required; key or Chinese label), summary (required), reporter,
device_id, device_class, floor, owner, assignee, status (default: closed if closed_at, resolved if
resolved_at, else open), resolved_at, closed_at, resolution. Times: ISO 8601; without an offset
they are site-local ("2025-03-07 09:30" or "2025-03-07", which means local midnight).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.store.models import CATEGORY_ZH, TICKET_STATUSES, NewTicket, StoreError

COLUMNS = ("opened_at", "category", "summary", "reporter", "device_id", "device_class", "floor",
           "owner", "assignee", "status", "resolved_at", "closed_at", "resolution")
REQUIRED = ("opened_at", "category", "summary")
TIMES = ("opened_at", "resolved_at", "closed_at")


class CsvErrors(StoreError):
    def __init__(self, errors: list[str]) -> None:
        shown = errors[:50] + ([f"... and {len(errors) - 50} more"] if len(errors) > 50 else [])
        super().__init__("nothing imported:\n" + "\n".join(shown))
        self.errors = errors


def _time(text: str, tz: ZoneInfo) -> datetime:
    at = datetime.fromisoformat(text.strip())
    return (at if at.tzinfo else at.replace(tzinfo=tz)).astimezone(UTC)


def _row(raw: dict[str, str], tz: ZoneInfo, categories: Sequence[str],
         actor: str) -> NewTicket:
    """One row or ValueError('field: why')."""
    vals: dict[str, Any] = {k: (v or "").strip() or None for k, v in raw.items()}
    for k in REQUIRED:
        if not vals.get(k):
            raise ValueError(f"{k}: required")
    by_label = {v: k for k, v in CATEGORY_ZH.items()}
    cat = by_label.get(vals["category"], vals["category"])
    if cat not in categories:
        raise ValueError(f"category: unknown {vals['category']!r} (one of {', '.join(categories)})")
    vals["category"] = cat
    for k in TIMES:
        if vals.get(k):
            try:
                vals[k] = _time(vals[k], tz)
            except ValueError:
                raise ValueError(f"{k}: not a date/time: {vals[k]!r}") from None
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
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
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
