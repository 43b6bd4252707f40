"""``hallmon store copy SRC DST``: move a hall's log from SQLite to PostgreSQL (issue 17).

Every table of the store, parents before children, rows as they are (ids kept, so tickets keep
their numbers and their incidents); PostgreSQL's id sequences are then moved past the copied
ids. The destination must be empty (a fresh database): copying into a log that already holds
rows would mix two halls. Not copied: the pollers' leases (pollers join afresh), live state
(device statuses, relayed beats and traps) and the schema version (the destination is migrated
by opening it). Stop the daemon first: rows written during
the copy may be missed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Integer, func, select, text

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.models import InvalidValue

# live state, not history (the relay tables: beats and traps in flight between pollers)
SKIP = frozenset({"schema_version", "pollers", "device_status", "push_beats", "trap_relay"})
BATCH = 2000


def _tables() -> list[str]:
    return [t.name for t in schema.metadata.sorted_tables if t.name not in SKIP]


def copy_store(src: StoreBase, dst: StoreBase,
               progress: Callable[[str, int], None] = lambda table, n: None) -> dict[str, int]:
    """Copy every row of ``src`` into the empty ``dst``; returns rows copied per table."""
    with dst.read() as conn:
        held = [name for name in _tables() if name != "store_meta" and conn.execute(
            select(func.count()).select_from(schema.metadata.tables[name])).scalar_one()]
    if held:
        raise InvalidValue(f"the destination store is not empty (rows in {', '.join(held)}): "
                           "copy into a fresh database")
    counts: dict[str, int] = {}
    with src.read() as s, dst.tx() as d:
        for name in _tables():
            table = schema.metadata.tables[name]
            if name == "store_meta":  # facts the fresh store wrote on opening: the source's win
                d.execute(table.delete())
            n = 0
            rows = s.execute(select(table)).mappings()
            while batch := rows.fetchmany(BATCH):
                d.execute(table.insert(), [dict(r) for r in batch])
                n += len(batch)
            counts[name] = n
            progress(name, n)
        if d.dialect.name == "postgresql":
            _advance_sequences(d)
    return counts


def _advance_sequences(conn: Connection) -> None:
    """Ids were copied as they were: the next id must come after them."""
    for name in _tables():
        table = schema.metadata.tables[name]
        col = table.c.get("id")
        if col is None or not isinstance(col.type, Integer) or not col.autoincrement:
            continue
        conn.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
            f"COALESCE((SELECT max(id) FROM {name}), 0) + 1, false)"))
