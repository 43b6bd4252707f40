"""Tables of the maintenance log (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Times are stored as naive UTC (`UTCDateTime`) so that both back ends compare and sort them the same
way; Python code only ever sees timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in the database; naive input is a bug and is refused."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"timezone-aware datetime required, got {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite raw text from a hand-written query
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

# The hall a row belongs to (issue 17: halls share one PostgreSQL; ids are unique per site). A
# store is opened for one site and filters every query by it (engine.py); single-site stores and
# SQLite files hold "default" unless the inventory names the site.
DEFAULT_SITE = "default"


def site_column() -> Column[str]:
    return Column("site", String(64), nullable=False, server_default=DEFAULT_SITE)


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", UTCDateTime, nullable=False),
)

# Key/value facts about the database itself (the site timezone its local-date columns use).
store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    site_column(),
    Column("device_id", String(128), nullable=False),
    Column("check", String(128), nullable=True),  # NULL: the device as a whole
    Column("status", String(16), nullable=False),
    Column("cause", Text, nullable=False, default=""),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    # "device|check|status" while open, NULL once closed: UNIQUE per site makes open_incident
    # idempotent even with two pollers racing on one PostgreSQL (NULLs never collide).
    Column("open_key", String(300), nullable=True),
    UniqueConstraint("site", "open_key", name="ux_incidents_site_open_key"),
    Index("ix_incidents_device_open", "device_id", "ended_at"),
    Index("ix_incidents_started", "started_at"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    site_column(),
    Column("device_id", String(128), nullable=True),
    # Denormalised at creation: the inventory may change later, the log must not.
    Column("device_class", String(64), nullable=True),
    Column("floor", String(32), nullable=True),
    Column("owner", String(128), nullable=True),
    Column("category", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("resolution", Text, nullable=True),
    Column("reporter", String(128), nullable=False),
    Column("assignee", String(128), nullable=True),
    Column("source", String(16), nullable=False),  # manual | auto | import
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=True),
    Column("incident_key", String(300), nullable=True),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    # The site-local calendar day the ticket was opened, as YYYYMMDD (see localtime.py).
    Column("local_day", Integer, nullable=False),
    Index("ix_tickets_status", "status"),
    Index("ix_tickets_device", "device_id"),
    Index("ix_tickets_local_day", "local_day"),
    Index("ix_tickets_opened", "opened_at"),
    UniqueConstraint("site", "incident_key", name="ux_tickets_site_incident_key"),
)

# The site, every tally dimension of a ticket, then its local day: a tally over three dimensions
# or more (two filters and a grouping, ...) seeks the filters' values in it, listing the sites
# ("*") and the values of the columns before them (tally.py), and reads only the matching
# entries, never the tickets (covering: plain columns, as SQLite 3.40 reads an indexed
# expression from the table). Site first: one hall's entries are one range of it; then
# low-cardinality columns first keep those lists short.
TICKET_DIMS_ORDER = ("status", "category", "floor", "device_class", "owner", "assignee")
TICKET_DIMS_INDEX = Index("ix_tickets_dims", tickets.c.site,
                          *[tickets.c[c] for c in TICKET_DIMS_ORDER], tickets.c.local_day)

ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # created | status | assigned | comment | edit
    Column("field", String(32), nullable=True),
    Column("old", Text, nullable=True),
    Column("new", Text, nullable=True),
    Column("note", Text, nullable=True),
    Index("ix_ticket_events_ticket", "ticket_id", "id"),
)

# Per-day, per-dimension ticket counts kept in step with `tickets` in the same transaction, so
# a tally over a million tickets reads a few thousand rows (see tally.py).
ticket_tally = Table(
    "ticket_tally",
    metadata,
    # site, dim first: a tally reads one site's dimension over a day range, a contiguous range.
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),
    Column("dim", String(16), primary_key=True),  # all | category | class | floor | ...
    Column("day", Integer, primary_key=True),  # local_day of the tickets counted
    Column("value", String(128), primary_key=True),  # "" stands for NULL
    Column("n", Integer, nullable=False),
    sqlite_with_rowid=False,  # the primary key is the table: a range read is one sequential scan
)

# Per-site, per-day counts of ticket pairs, both ways round: (dim=value, by_dim=by_value) for
# every two tally dimensions, kept in step with `tickets` like ticket_tally, so "floor 3 by
# category" or "faults on floor 3" read a few thousand rows instead of a million tickets (see
# tally.py).
ticket_pairs = Table(
    "ticket_pairs",
    metadata,
    # a filter dim=value grouped by by_dim is one contiguous key range over the days of a site
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),
    Column("dim", String(16), primary_key=True),
    Column("value", String(128), primary_key=True),  # "" stands for NULL
    Column("by_dim", String(16), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("by_value", String(128), primary_key=True),
    Column("n", Integer, nullable=False),
    sqlite_with_rowid=False,
)

maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    site_column(),
    Column("selector", String(16), nullable=False),  # device | class | floor
    Column("value", String(128), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_windows_span", "ends_at", "starts_at"),
)

# Sign-in accounts of the pages (monitor/pages). ``password`` is a scrypt hash (users.py), never
# the password; ``epoch`` is bumped by passwd/disable so every earlier session cookie stops working.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # viewer | technician | admin
    Column("password", Text, nullable=False),
    Column("disabled", Integer, nullable=False, default=0),
    Column("epoch", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    site_column(),
    Column("key", String(300), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("status", String(8), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    # Held by one poller until then (issue 17: pollers sharing one PostgreSQL send a row once).
    Column("claimed_until", UTCDateTime, nullable=True),
    Index("ix_outbox_due", "status", "next_attempt_at"),
    UniqueConstraint("site", "key", name="ux_outbox_site_key"),
)

# The alert engine's state (events inside their group window, held messages, what each route
# pages about), written with the outbox rows it goes with: a restart resumes from it.
alert_state = Table(
    "alert_state",
    metadata,
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),  # JSON, see monitor/alerts/snapshot.py
    Column("updated_at", UTCDateTime, nullable=False),
)

# High availability (issue 17): one row per poller of the site, its lease on a share of the
# devices. Times come from the database's own clock (see pollers.py), so pollers on machines whose
# clocks disagree still agree on who is live.
pollers = Table(
    "pollers",
    metadata,
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),  # leases per site
    Column("id", String(128), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("info", Text, nullable=False, default=""),  # host and pid, for people
)

# The sites sharing the database (issue 17), each as its daemon last registered it: the
# reporting profile (JSON, see monitor.reports.Hall.profile) and what a listing shows.
sites = Table(
    "sites",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("opening_hours", Text, nullable=True),
    Column("devices", Integer, nullable=False),
    Column("profile", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Each device's status as the poller polling it last recorded it (issue 17): the other pollers
# of the site show it from here. One row per device, written on status changes only.
device_status = Table(
    "device_status",
    metadata,
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),
    Column("device_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("cause", Text, nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("poller", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Trap conditions held until their clearing trap (issue 16), per site and device: a restart or
# a poller taking the device over resumes them (monitor/receiver.py). One row per (rule,
# instance) holding; written when a condition is set, renewed, cleared or runs out.
trap_holds = Table(
    "trap_holds",
    metadata,
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),
    Column("device_id", String(128), primary_key=True),
    Column("rule", String(128), primary_key=True),
    Column("instance", String(256), primary_key=True),
    Column("kind", String(16), nullable=False),  # "degraded" | "down"
    Column("message", Text, nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("until", UTCDateTime, nullable=False),
)

# What devices told by trap (``event`` rules): the history /api/v1/events reads. Bounded by
# count and age per site (TrapsMixin.add_trap_events prunes as it writes).
trap_events = Table(
    "trap_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    site_column(),
    Column("device_id", String(128), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("trap_oid", String(256), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_trap_events_site_device", "site", "device_id", "id"),
    Index("ix_trap_events_site_at", "site", "at"),
    Index("ix_trap_events_site_id", "site", "id"),
)

# Devices that speak first, with several pollers of a site (monitor/relay.py): a push beat or a
# trap reaches whichever poller the device calls, not always the device's owner.
# Each push check's last beat, as whichever poller received it recorded it (the database's
# clock): the owner reads the beats of the last seconds back, a poller taking a device over
# watches from its last beat. One row per check; the push token is never stored.
push_beats = Table(
    "push_beats",
    metadata,
    Column("site", String(64), primary_key=True, server_default=DEFAULT_SITE),
    Column("device_id", String(128), primary_key=True),
    Column("check_name", String(128), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("status", String(8), nullable=False),  # "up" | "down"
    Column("message", Text, nullable=False),
    Column("poller", String(128), nullable=False),  # who received it
    Index("ix_push_beats_site_at", "site", "at"),
)

# Traps received by a poller that does not own their device, waiting for the owner to claim
# them (DELETE ... RETURNING: each is applied once). Short-lived: rows older than a bound are
# purged, and each poller relays at most a bounded rate.
trap_relay = Table(
    "trap_relay",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    site_column(),
    Column("device_id", String(128), nullable=False),
    Column("trap_oid", String(256), nullable=False),
    Column("uptime", Integer, nullable=True),  # sysUpTime of the notification (v1/v2c)
    Column("varbinds", Text, nullable=False),  # JSON, see monitor/relay.py
    Column("received_at", UTCDateTime, nullable=False),
    Column("poller", String(128), nullable=False),  # who received it
    Index("ix_trap_relay_site_id", "site", "id"),
    Index("ix_trap_relay_site_received", "site", "received_at"),
)
