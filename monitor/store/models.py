"""Plain frozen values handed out by the store (rows never leak past it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from monitor.inventory import DEFAULT_CATEGORIES as DEFAULT_CATEGORIES  # one list
from monitor.inventory.models import CATEGORY_ZH as CATEGORY_ZH
from monitor.inventory.models import category_key as category_key

TicketStatus = Literal["open", "in_progress", "resolved", "closed"]
IncidentStatus = Literal["down", "degraded", "unreachable", "flapping"]
OutboxStatus = Literal["pending", "sent", "dead"]
Selector = Literal["device", "class", "floor"]

TICKET_STATUSES: tuple[str, ...] = ("open", "in_progress", "resolved", "closed")
INCIDENT_STATUSES: tuple[str, ...] = ("down", "degraded", "unreachable", "flapping")

# Allowed ticket transitions. open -> closed covers duplicates and mistaken tickets; resolved and
# closed tickets are reopened to "open" (the audit trail keeps the earlier resolution).
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"in_progress", "resolved", "closed"}),
    "in_progress": frozenset({"open", "resolved"}),
    "resolved": frozenset({"closed", "open"}),
    "closed": frozenset({"open"}),
}


class StoreError(Exception):
    """Base class of the store's own, expected errors (the API maps them to 4xx)."""


class NotFound(StoreError):
    pass


class InvalidTransition(StoreError):
    def __init__(self, ticket_id: int, current: str, to: str) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none"
        super().__init__(
            f"ticket {ticket_id} is {current}: cannot move to {to} (allowed: {allowed})"
        )
        self.ticket_id, self.current, self.to = ticket_id, current, to


class InvalidValue(StoreError):
    pass


class TimezoneMismatch(StoreError):
    def __init__(self, stored: str, wanted: str) -> None:
        super().__init__(
            f"the store's tickets are in site time {stored}, not {wanted}: check the "
            f"inventory's site.timezone (or --timezone); if the site really moved, open the "
            f"store once with --change-timezone to recompute every local day in {wanted}")
        self.stored, self.wanted = stored, wanted


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    device_id: str
    check: str | None
    status: str
    cause: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    device_id: str | None
    device_class: str | None
    floor: str | None
    owner: str | None
    category: str
    status: str
    summary: str
    resolution: str | None
    reporter: str
    assignee: str | None
    source: str
    incident_id: int | None
    incident_key: str | None
    opened_at: datetime
    updated_at: datetime
    started_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TicketEvent:
    id: int
    ticket_id: int
    at: datetime
    actor: str
    kind: str
    field: str | None
    old: str | None
    new: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: int
    selector: str
    value: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    key: str
    channel: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewTicket:
    """Everything a caller supplies to create a ticket (also one parsed CSV row)."""

    category: str
    summary: str
    reporter: str
    device_id: str | None = None
    device_class: str | None = None
    floor: str | None = None
    owner: str | None = None
    assignee: str | None = None
    status: str = "open"
    resolution: str | None = None
    source: str = "manual"
    incident_id: int | None = None
    incident_key: str | None = None
    opened_at: datetime | None = None
    started_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
