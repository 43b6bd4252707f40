"""The maintenance log's store: tickets, ticket events, incidents, maintenance windows, outbox.

``Store(url, timezone=..., categories=...)`` is synchronous (SQLAlchemy Core 2); the event loop
uses ``AsyncStore(store)``, which runs every call on one dedicated thread.
"""

from __future__ import annotations

from pathlib import Path

from monitor.store.aio import AsyncStore
from monitor.store.device_status import DeviceStatusMixin, KnownStatus
from monitor.store.incidents import IncidentsMixin
from monitor.store.models import (
    DEFAULT_CATEGORIES,
    TICKET_STATUSES,
    TRANSITIONS,
    Incident,
    InvalidTransition,
    InvalidValue,
    MaintenanceWindow,
    NewTicket,
    NotFound,
    OutboxItem,
    StoreError,
    Ticket,
    TicketEvent,
    TimezoneMismatch,
)
from monitor.store.outbox import OutboxMixin
from monitor.store.pollers import PollersMixin
from monitor.store.relay import BeatRow, RelayedTrap, RelayMixin
from monitor.store.sites import SiteRow, SitesMixin
from monitor.store.tickets import TicketsMixin
from monitor.store.traps import HoldRow, TrapEventRow, TrapsMixin
from monitor.store.users import User, UsersMixin
from monitor.store.windows import WindowsMixin

# The daemon (`hallmon run --storage.path`) and the technicians' CLI (`hallmon tickets --db`)
# must find the same log by default.
DEFAULT_STATE_DIR = "state"


def sqlite_url(state_dir: str | Path = DEFAULT_STATE_DIR) -> str:
    return f"sqlite:///{Path(state_dir) / 'hallmon.db'}"


class Store(TicketsMixin, IncidentsMixin, WindowsMixin, OutboxMixin, UsersMixin, PollersMixin,
            SitesMixin, DeviceStatusMixin, TrapsMixin, RelayMixin):
    """SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://...``), migrated on open."""


__all__ = [
    "TimezoneMismatch",
    "DEFAULT_STATE_DIR",
    "sqlite_url",
    "DEFAULT_CATEGORIES",
    "TICKET_STATUSES",
    "TRANSITIONS",
    "AsyncStore",
    "Incident",
    "InvalidTransition",
    "KnownStatus",
    "InvalidValue",
    "MaintenanceWindow",
    "NewTicket",
    "NotFound",
    "OutboxItem",
    "SiteRow",
    "Store",
    "StoreError",
    "Ticket",
    "TicketEvent",
    "User",
    "HoldRow",
    "TrapEventRow",
    "BeatRow",
    "RelayedTrap",
]
