"""Leases of the pollers that share one database (issue 17): the database is the arbiter.

Each poller upserts its row with ``expires_at = db_now + lease`` every heartbeat; the live set is
the rows not expired at the database's clock. Reading the time from the database (PostgreSQL's
``clock_timestamp()``) rather than from each machine keeps pollers whose clocks disagree in
agreement. A clean stop deletes the row, so the others rebalance at their next heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, select, text

from monitor.store import schema
from monitor.store.engine import StoreBase

P = schema.pollers

# Rows expired this long ago are forgotten (kept until then for the API: "who died when").
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class PollerRow:
    id: str
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    info: str


@dataclass(frozen=True, slots=True)
class Membership:
    """What one heartbeat read: the database's time and every poller's row."""

    now: datetime
    pollers: tuple[PollerRow, ...]

    @property
    def live(self) -> tuple[str, ...]:
        return tuple(sorted(p.id for p in self.pollers if p.expires_at > self.now))


def db_now(conn: Connection, clock: Callable[[], datetime]) -> datetime:
    """The database's time (PostgreSQL's ``clock_timestamp()``); SQLite lives on this machine:
    its clock is ours (``clock``)."""
    if conn.dialect.name == "postgresql":
        got: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        return got.astimezone(UTC)
    return clock()


class PollersMixin(StoreBase):
    def _db_now(self, conn: Connection) -> datetime:
        return db_now(conn, self.clock)

    def heartbeat(self, poller_id: str, lease: float, info: str = "") -> Membership:
        """Renew this poller's lease (joining if new); return the membership as of now."""
        site = self.write_site
        with self.tx() as conn:
            now = self._db_now(conn)
            values = {"heartbeat_at": now, "expires_at": now + timedelta(seconds=lease),
                      "info": info}
            if conn.execute(P.update().where(P.c.site == site, P.c.id == poller_id)
                            .values(**values)).rowcount == 0:
                if conn.dialect.name == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert

                    conn.execute(insert(P).values(site=site, id=poller_id, started_at=now,
                                                  **values)
                                 .on_conflict_do_update(index_elements=[P.c.site, P.c.id],
                                                        set_=values))
                else:
                    conn.execute(P.insert().values(site=site, id=poller_id, started_at=now,
                                                   **values))
            conn.execute(delete(P).where(P.c.expires_at < now - FORGET_AFTER))
            return Membership(now, self._rows(conn, site))

    def leave(self, poller_id: str) -> None:
        """A clean stop: the others take this poller's devices at their next heartbeat."""
        with self.tx() as conn:
            conn.execute(delete(P).where(P.c.site == self.write_site, P.c.id == poller_id))

    def membership(self) -> Membership:
        with self.read() as conn:
            return Membership(self._db_now(conn), self._rows(conn, self.site))

    @staticmethod
    def _rows(conn: Connection, site: str) -> tuple[PollerRow, ...]:
        """The pollers of ``site`` (a hall's leases never count another hall's pollers)."""
        stmt = select(*[c for c in P.c if c.name != "site"]).order_by(P.c.id)
        if site != "*":
            stmt = stmt.where(P.c.site == site)
        return tuple(PollerRow(**dict(r._mapping)) for r in conn.execute(stmt))
