"""Trap conditions held until their clear, and the trap event history (issue 16), per site.

The trap receiver keeps both in memory and writes them through the store's write queue, never
waiting on it: a device's holds are rewritten as a whole when one changes (few rows: one per
rule and instance holding); events are inserted in batches and pruned to the retention as they
are written. At start (and when a poller takes devices over) the receiver reads the holds back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from monitor.store import schema
from monitor.store.engine import StoreBase

H = schema.trap_holds
E = schema.trap_events

EVENTS_KEPT = 100_000  # per site: the newest are kept ...
EVENTS_MAX_AGE = timedelta(days=90)  # ... and none older than this


@dataclass(frozen=True, slots=True)
class HoldRow:
    device_id: str
    rule: str
    instance: str
    kind: str  # "degraded" | "down"
    message: str
    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class TrapEventRow:
    id: int
    device_id: str
    rule: str
    message: str
    trap_oid: str
    at: datetime


class TrapsMixin(StoreBase):
    def save_trap_holds(self, holds: Mapping[str, Sequence[HoldRow]]) -> int:
        """Replace the held conditions of each device given (an empty list: none holds)."""
        site = self.write_site
        rows = [{"site": site, "device_id": h.device_id, "rule": h.rule,
                 "instance": h.instance[:256], "kind": h.kind, "message": h.message[:2000],
                 "since": h.since, "until": h.until}
                for held in holds.values() for h in held]
        with self.tx() as conn:
            for device in holds:
                conn.execute(delete(H).where(H.c.site == site, H.c.device_id == device))
            if rows:
                conn.execute(H.insert(), rows)
        return len(rows)

    def trap_holds(self, devices: Iterable[str] | None = None) -> list[HoldRow]:
        """This site's held conditions (of ``devices`` only, when given)."""
        stmt = select(H.c.device_id, H.c.rule, H.c.instance, H.c.kind, H.c.message, H.c.since,
                      H.c.until).where(*self.of_site(H)).order_by(H.c.device_id, H.c.rule,
                                                                  H.c.instance)
        only = None if devices is None else set(devices)
        with self.read() as conn:
            return [HoldRow(*r) for r in conn.execute(stmt)
                    if only is None or r.device_id in only]

    def add_trap_events(self, events: Sequence[tuple[str, str, str, str, datetime]], *,
                        prune: bool = True, keep: int = EVENTS_KEPT,
                        max_age: timedelta = EVENTS_MAX_AGE) -> int:
        """Insert (device, rule, message, trap_oid, at) rows, then (``prune``) cut this site's
        history to the newest ``keep`` and to ``max_age``. Returns the rows pruned. Pruning
        by count walks ``keep`` index entries: the receiver asks for it every few hundred
        events, not on every write."""
        site = self.write_site
        with self.tx() as conn:
            if events:
                conn.execute(E.insert(), [
                    {"site": site, "device_id": d, "rule": r, "message": m[:2000],
                     "trap_oid": o[:256], "at": at} for d, r, m, o, at in events])
            if not prune:
                return 0
            pruned = conn.execute(delete(E).where(
                E.c.site == site, E.c.at < self.clock() - max_age)).rowcount
            cut = conn.execute(select(E.c.id).where(E.c.site == site).order_by(E.c.id.desc())
                               .offset(keep).limit(1)).scalar()
            if cut is not None:
                pruned += conn.execute(delete(E).where(E.c.site == site,
                                                       E.c.id <= cut)).rowcount
        return int(pruned)

    def trap_events(self, device: str | None = None, before: int | None = None,
                    limit: int = 100) -> list[TrapEventRow]:
        """This site's trap events, newest first: ``limit`` of them with ids below ``before``
        (the previous page's last id). O(limit) through the (site, device_id, id) index."""
        stmt = select(E.c.id, E.c.device_id, E.c.rule, E.c.message, E.c.trap_oid, E.c.at).where(
            *self.of_site(E))
        if device is not None:
            stmt = stmt.where(E.c.device_id == device)
        if before is not None:
            stmt = stmt.where(E.c.id < before)
        with self.read() as conn:
            return [TrapEventRow(*r) for r in conn.execute(
                stmt.order_by(E.c.id.desc()).limit(limit))]
