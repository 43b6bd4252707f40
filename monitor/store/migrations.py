"""Versioned schema migrations: ordered functions, the applied version in ``schema_version``.

Add a migration by appending a function to MIGRATIONS; never edit a released one. On PostgreSQL an
advisory lock serialises pollers that start together against one database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, inspect, select, text

from monitor.store import schema
from monitor.store.models import StoreError


def _v1_initial(conn: Connection) -> None:
    schema.metadata.create_all(
        conn,
        tables=[
            schema.store_meta,
            schema.incidents,
            schema.tickets,
            schema.ticket_events,
            schema.ticket_tally,
            schema.maintenance_windows,
            schema.outbox,
        ],
    )


def _v2_pages_users(conn: Connection) -> None:
    """Sign-in accounts for the pages (issue 14)."""
    schema.metadata.create_all(conn, tables=[schema.users])


def _v3_truth_alerts_alert_state(conn: Connection) -> None:
    """The alert engine's state beside the outbox (issue 10: a restart must not lose pages)."""
    schema.metadata.create_all(conn, tables=[schema.alert_state])


def _v4_ha_pollers(conn: Connection) -> None:
    """Issue 17: the pollers' lease table; on PostgreSQL at most one open incident per device.

    Pollers sharing one PostgreSQL may both open an incident for a device during a hand-over;
    the partial unique index makes the database refuse the second, whose writer adopts the
    first (IncidentsMixin.open_incident). Incidents without a cause check (written by hand or by
    tests, not by the pipeline) are left out. Duplicates from before (two pollers in the field)
    are closed first, keeping each device's newest. SQLite has one writer: no race, no index.
    """
    schema.metadata.create_all(conn, tables=[schema.pollers])
    # outbox.claimed_until: a row handed to one poller (v1 builds it from today's table, which
    # already has the column; an older database gains it here).
    if "claimed_until" not in {c["name"] for c in inspect(conn).get_columns("outbox")}:
        conn.execute(text("ALTER TABLE outbox ADD COLUMN claimed_until TIMESTAMP"))
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text(
        "UPDATE incidents SET ended_at = (now() AT TIME ZONE 'UTC'), open_key = NULL "
        "WHERE ended_at IS NULL AND \"check\" IS NOT NULL AND id NOT IN ("
        " SELECT max(id) FROM incidents WHERE ended_at IS NULL AND \"check\" IS NOT NULL"
        " GROUP BY device_id)"))
    conn.execute(text(
        "CREATE UNIQUE INDEX ux_incidents_device_open ON incidents (device_id) "
        "WHERE ended_at IS NULL AND \"check\" IS NOT NULL"))


def _v5_sites(conn: Connection) -> None:
    """Issue 17: halls (sites) sharing one database. Every row the daemon writes gains ``site``
    (today's rows belong to the single site, "default"); keys unique per site instead of per
    database: open incidents, automatic tickets' incident keys, outbox keys, the engine state's
    name, pollers' ids, and PostgreSQL's one open incident per device becomes one per device of
    a site. The tally table is derived from the tickets: it is rebuilt with a site in its key
    (forgetting ``tally_version`` makes the store rebuild it on opening).

    SQLite holds one site per file: its old single-column UNIQUE constraints stay (dropping one
    means rebuilding the table) and still hold for that one site; a fresh file gets the per-site
    ones from v1. Self-contained: no table definition of schema.py is used (it may change)."""
    site = "'default'"
    for table in ("incidents", "tickets", "maintenance_windows", "outbox", "alert_state",
                  "pollers"):
        if "site" not in {c["name"] for c in inspect(conn).get_columns(table)}:
            conn.execute(text(
                f"ALTER TABLE {table} ADD COLUMN site VARCHAR(64) NOT NULL DEFAULT {site}"))
    conn.execute(text("DROP TABLE IF EXISTS ticket_tally"))
    tally = "CREATE TABLE ticket_tally (site VARCHAR(64) NOT NULL DEFAULT 'default', " \
        "dim VARCHAR(16) NOT NULL, day INTEGER NOT NULL, value VARCHAR(128) NOT NULL, " \
        "n INTEGER NOT NULL, PRIMARY KEY (site, dim, day, value))"
    conn.execute(text(tally + (" WITHOUT ROWID" if conn.dialect.name == "sqlite" else "")))
    conn.execute(text("DELETE FROM store_meta WHERE key = 'tally_version'"))
    if conn.dialect.name != "postgresql":
        return
    for table, old, new, cols in (
        ("incidents", "incidents_open_key_key", "ux_incidents_site_open_key", "site, open_key"),
        ("tickets", "tickets_incident_key_key", "ux_tickets_site_incident_key",
         "site, incident_key"),
        ("outbox", "outbox_key_key", "ux_outbox_site_key", "site, key"),
    ):
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {old}"))
        conn.execute(text(f"CREATE UNIQUE INDEX IF NOT EXISTS {new} ON {table} ({cols})"))
    for table, cols in (("alert_state", "site, name"), ("pollers", "site, id")):
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_pkey"))
        conn.execute(text(f"ALTER TABLE {table} ADD PRIMARY KEY ({cols})"))
    conn.execute(text("DROP INDEX IF EXISTS ux_incidents_device_open"))
    conn.execute(text(
        "CREATE UNIQUE INDEX ux_incidents_device_open ON incidents (site, device_id) "
        "WHERE ended_at IS NULL AND \"check\" IS NOT NULL"))


def _v6_crosssite_sites(conn: Connection) -> None:
    """Issue 17: the sites sharing the database, each with the reporting profile its daemon
    registered (reports for another site or every site need its calendar and hours).
    Self-contained: plain DDL, the same on SQLite and PostgreSQL."""
    conn.execute(text(
        "CREATE TABLE IF NOT EXISTS sites (id VARCHAR(64) NOT NULL PRIMARY KEY, "
        "name TEXT NOT NULL, timezone VARCHAR(64) NOT NULL, opening_hours TEXT, "
        "devices INTEGER NOT NULL, profile TEXT NOT NULL, updated_at TIMESTAMP NOT NULL)"))


def _v7_crosssite_device_status(conn: Connection) -> None:
    """Issue 17: each device's status as its poller last recorded it, for the other pollers of
    the site to show. Self-contained plain DDL (SQLite and PostgreSQL)."""
    conn.execute(text(
        "CREATE TABLE IF NOT EXISTS device_status (site VARCHAR(64) NOT NULL DEFAULT 'default',"
        " device_id VARCHAR(128) NOT NULL, status VARCHAR(16) NOT NULL, cause TEXT NOT NULL,"
        " since TIMESTAMP NOT NULL, poller VARCHAR(128) NOT NULL,"
        " updated_at TIMESTAMP NOT NULL, PRIMARY KEY (site, device_id))"))


def _v8_tally2_pairs(conn: Connection) -> None:
    """Issue 12: every tally the API offers within 200 ms at 1M tickets. Per-site, per-day pair
    counts (``ticket_pairs``, derived from the tickets: dropped, made and filled here) answer one
    filter grouped by another dimension and two filters; the dims index (site first) answers
    three dimensions and more. Self-contained: no table definition of schema.py is used."""
    conn.execute(text("DROP TABLE IF EXISTS ticket_pairs"))
    conn.execute(text(
        "CREATE TABLE ticket_pairs (site VARCHAR(64) DEFAULT 'default' NOT NULL, "
        "dim VARCHAR(16) NOT NULL, value VARCHAR(128) NOT NULL, by_dim VARCHAR(16) NOT NULL, "
        "day INTEGER NOT NULL, by_value VARCHAR(128) NOT NULL, n INTEGER NOT NULL, "
        "PRIMARY KEY (site, dim, value, by_dim, day, by_value))"
        + (" WITHOUT ROWID" if conn.dialect.name == "sqlite" else "")))
    # a new database has it already (v1 builds today's tickets table)
    conn.execute(text(
        "CREATE INDEX IF NOT EXISTS ix_tickets_dims ON tickets (site, status, category, floor, "
        "device_class, owner, assignee, local_day)"))
    # the tally dimensions and their columns as of this version (tickets.TALLY_DIMS)
    dims = {"category": "category", "class": "device_class", "floor": "floor",
            "owner": "owner", "assignee": "assignee", "status": "status"}
    for a, col_a in dims.items():
        for b, col_b in dims.items():
            if a != b:
                conn.execute(text(
                    "INSERT INTO ticket_pairs (site, dim, value, by_dim, day, by_value, n) "
                    f"SELECT site, :a, coalesce({col_a}, ''), :b, local_day, "
                    f"coalesce({col_b}, ''), count(*) FROM tickets GROUP BY site, "
                    f"coalesce({col_a}, ''), local_day, coalesce({col_b}, '')"), {"a": a, "b": b})


def _v9_trapstore_holds_events(conn: Connection) -> None:
    """Issue 16 follow-up: held trap conditions (resumed after a restart or a hand-over) and
    the trap event history, per site. Self-contained plain DDL (SQLite and PostgreSQL)."""
    conn.execute(text(
        "CREATE TABLE IF NOT EXISTS trap_holds (site VARCHAR(64) NOT NULL DEFAULT 'default',"
        " device_id VARCHAR(128) NOT NULL, rule VARCHAR(128) NOT NULL,"
        " instance VARCHAR(256) NOT NULL, kind VARCHAR(16) NOT NULL, message TEXT NOT NULL,"
        " since TIMESTAMP NOT NULL, until TIMESTAMP NOT NULL,"
        " PRIMARY KEY (site, device_id, rule, instance))"))
    key = ("SERIAL PRIMARY KEY" if conn.dialect.name == "postgresql"
           else "INTEGER PRIMARY KEY AUTOINCREMENT")
    conn.execute(text(
        f"CREATE TABLE IF NOT EXISTS trap_events (id {key},"
        " site VARCHAR(64) NOT NULL DEFAULT 'default', device_id VARCHAR(128) NOT NULL,"
        " rule VARCHAR(128) NOT NULL, message TEXT NOT NULL, trap_oid VARCHAR(256) NOT NULL,"
        " at TIMESTAMP NOT NULL)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_trap_events_site_device"
                      " ON trap_events (site, device_id, id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_trap_events_site_at"
                      " ON trap_events (site, at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_trap_events_site_id"
                      " ON trap_events (site, id)"))


def _v10_hainputs_relay(conn: Connection) -> None:
    """Devices that speak first, with several pollers of a site: each push check's last beat
    (``push_beats``, read back by the device's owner and by a poller taking it over) and traps
    waiting for their device's owner (``trap_relay``). Self-contained plain DDL (SQLite and
    PostgreSQL)."""
    conn.execute(text(
        "CREATE TABLE IF NOT EXISTS push_beats (site VARCHAR(64) NOT NULL DEFAULT 'default',"
        " device_id VARCHAR(128) NOT NULL, check_name VARCHAR(128) NOT NULL,"
        " at TIMESTAMP NOT NULL, status VARCHAR(8) NOT NULL, message TEXT NOT NULL,"
        " poller VARCHAR(128) NOT NULL, PRIMARY KEY (site, device_id, check_name))"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_push_beats_site_at"
                      " ON push_beats (site, at)"))
    key = ("SERIAL PRIMARY KEY" if conn.dialect.name == "postgresql"
           else "INTEGER PRIMARY KEY AUTOINCREMENT")
    conn.execute(text(
        f"CREATE TABLE IF NOT EXISTS trap_relay (id {key},"
        " site VARCHAR(64) NOT NULL DEFAULT 'default', device_id VARCHAR(128) NOT NULL,"
        " trap_oid VARCHAR(256) NOT NULL, uptime INTEGER, varbinds TEXT NOT NULL,"
        " received_at TIMESTAMP NOT NULL, poller VARCHAR(128) NOT NULL)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_trap_relay_site_id"
                      " ON trap_relay (site, id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_trap_relay_site_received"
                      " ON trap_relay (site, received_at)"))


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial, _v2_pages_users, _v3_truth_alerts_alert_state, _v4_ha_pollers, _v5_sites,
    _v6_crosssite_sites, _v7_crosssite_device_status, _v8_tally2_pairs,
    _v9_trapstore_holds_events, _v10_hainputs_relay,
]
LATEST = len(MIGRATIONS)
PG_LOCK_ID = 0x4A11_304E  # arbitrary constant shared by every hallmon process


def current_version(conn: Connection) -> int:
    schema.schema_version.create(conn, checkfirst=True)
    return int(conn.execute(select(func.coalesce(func.max(schema.schema_version.c.version), 0)))
               .scalar_one())


def migrate(engine: Engine) -> int:
    """Bring the database to LATEST; returns the version found before migrating."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_ID})
        found = current_version(conn)
        if found > LATEST:
            # a StoreError: the daemon and the CLI print it as one line and exit, no traceback
            raise StoreError(
                f"database schema version {found} is newer than this hallmon ({LATEST}): "
                "upgrade hallmon instead of downgrading the database"
            )
        for version in range(found + 1, LATEST + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(
                schema.schema_version.insert().values(version=version, applied_at=datetime.now(UTC))
            )
        return found
