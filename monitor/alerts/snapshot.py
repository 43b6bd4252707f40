"""The engine's state as JSON, so that a restart resumes from the store, never from memory.

What must survive a restart (kill -9 or SIGTERM) is what is due but not yet in the outbox: events
waiting for their group window, messages held by quiet hours or a rate limit, and what each route
is paging about (so its recovery is told). The engine writes this snapshot in the same
transaction as the messages it enqueues (``Outbox.commit``), so the two always agree.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from monitor.alerts.base import AlertEvent, Location
from monitor.alerts.message import Firing

VERSION = 1


def _time(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _parse(at: str | None) -> datetime | None:
    return None if at is None else datetime.fromisoformat(at)


def event_out(e: AlertEvent) -> dict[str, Any]:
    out = asdict(e)
    out["since"] = e.since.isoformat()
    out["opened_at"] = _time(e.opened_at)
    return out


def event_in(d: dict[str, Any]) -> AlertEvent:
    fields = dict(d)
    fields["location"] = Location(**fields["location"])
    fields["since"] = datetime.fromisoformat(fields["since"])
    fields["opened_at"] = _parse(fields.get("opened_at"))
    return AlertEvent(**fields)


def firing_out(f: Firing) -> dict[str, Any]:
    return {"event": event_out(f.event), "children": [event_out(c) for c in f.children]}


def firing_in(d: dict[str, Any]) -> Firing:
    return Firing(event_in(d["event"]), tuple(event_in(c) for c in d["children"]))


time_out = _time
time_in = _parse
