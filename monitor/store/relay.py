"""Push beats and traps that reach a poller other than their device's owner (several pollers of
one site, issue 17; the daemon's side is monitor/relay.py).

``push_beats``: each push check's last beat, upserted by whichever poller received it, at the
database's clock (the receiver's queue delay taken off), so that pollers whose clocks disagree
agree on when a kiosk last called. ``beats_since`` reads the rows of the last seconds with the
database's time read in the same connection; the reader turns ``at`` into its own clock as
``local_now - (db_now - at)``.

``trap_relay``: traps of a device whose owner is another poller, inserted by the receiver and
claimed by the owner with DELETE ... RETURNING (PostgreSQL hands each row to one claimer:
a row deleted by another transaction meanwhile is not returned). Rows nobody claimed within
``max_age`` (their device left the inventory) are purged by the claimers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.pollers import db_now

B = schema.push_beats
T = schema.trap_relay


@dataclass(frozen=True, slots=True)
class BeatRow:
    device_id: str
    check: str
    at: datetime  # the database's clock
    status: str  # "up" | "down"
    message: str
    poller: str


@dataclass(frozen=True, slots=True)
class RelayedTrap:
    id: int
    device_id: str
    trap_oid: str
    uptime: int | None
    varbinds: str  # JSON
    received_at: datetime  # the database's clock
    poller: str


class RelayMixin(StoreBase):
    # -- push beats --------------------------------------------------------------------------

    def record_beats(self, poller: str,
                     beats: Sequence[tuple[str, str, str, str, float]]) -> int:
        """Upsert (device, check, status, message, age) rows: each check's beat received
        ``age`` seconds ago (its wait in the write queue), stamped at the database's clock."""
        if not beats:
            return 0
        site = self.write_site
        with self.tx() as conn:
            now = db_now(conn, self.clock)
            values = [{"site": site, "device_id": d, "check_name": c,
                       "at": now - timedelta(seconds=max(0.0, age)), "status": s,
                       "message": m[:2000], "poller": poller} for d, c, s, m, age in beats]
            ins = (postgresql.insert(B) if conn.dialect.name == "postgresql"
                   else sqlite.insert(B))
            conn.execute(ins.on_conflict_do_update(
                index_elements=[B.c.site, B.c.device_id, B.c.check_name],
                set_={k: ins.excluded[k] for k in ("at", "status", "message", "poller")}),
                values)
        return len(values)

    def beats_since(self, after: datetime | None, overlap: float
                    ) -> tuple[datetime, list[BeatRow]]:
        """(the database's time now, the site's beats stamped after ``after - overlap``; with
        ``after`` None, after ``now - overlap``). The overlap re-reads the last seconds: a row
        stamped before the previous read may commit after it (the reader skips what it saw)."""
        with self.read() as conn:
            now = db_now(conn, self.clock)
            since = (now if after is None else after) - timedelta(seconds=overlap)
            rows = [BeatRow(*r) for r in conn.execute(
                select(B.c.device_id, B.c.check_name, B.c.at, B.c.status, B.c.message,
                       B.c.poller).where(*self.of_site(B), B.c.at > since)
                .order_by(B.c.at))]
        return now, rows

    # -- traps ---------------------------------------------------------------------------------

    def relay_traps(self, poller: str,
                    traps: Sequence[tuple[str, str, int | None, str, float]]) -> int:
        """Insert (device, trap_oid, uptime, varbinds JSON, age) rows for the owners to claim."""
        if not traps:
            return 0
        site = self.write_site
        with self.tx() as conn:
            now = db_now(conn, self.clock)
            conn.execute(T.insert(), [
                {"site": site, "device_id": d, "trap_oid": o[:256], "uptime": u,
                 "varbinds": v, "received_at": now - timedelta(seconds=max(0.0, age)),
                 "poller": poller} for d, o, u, v, age in traps])
        return len(traps)

    def claim_traps(self, mine: Callable[[str], bool], max_age: float, limit: int = 1000
                    ) -> tuple[datetime, list[RelayedTrap], int]:
        """Take the relayed traps of the devices ``mine`` accepts (oldest first, at most
        ``limit``) and purge rows older than ``max_age`` seconds. Returns (the database's time,
        the traps claimed, rows purged). One statement when nothing waits."""
        with self.tx() as conn:
            now = db_now(conn, self.clock)
            waiting = conn.execute(select(T.c.id, T.c.device_id, T.c.received_at)
                                   .where(*self.of_site(T)).order_by(T.c.id).limit(limit))
            cutoff = now - timedelta(seconds=max_age)
            ids, stale = [], False
            for row_id, device, at in waiting:
                if at < cutoff:
                    stale = True
                elif mine(device):
                    ids.append(row_id)
            claimed: list[RelayedTrap] = []
            if ids:
                got = conn.execute(delete(T).where(T.c.id.in_(ids)).returning(
                    T.c.id, T.c.device_id, T.c.trap_oid, T.c.uptime, T.c.varbinds,
                    T.c.received_at, T.c.poller))
                claimed = sorted((RelayedTrap(*r) for r in got), key=lambda t: t.id)
            purged = 0
            if stale:
                purged = conn.execute(delete(T).where(
                    *self.of_site(T), T.c.received_at < cutoff)).rowcount
        return now, claimed, int(purged)
