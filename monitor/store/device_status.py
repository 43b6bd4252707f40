"""Each device's status as the poller that polls it last recorded it (issue 17).

Pollers sharing a site each poll a share of the devices; the others' API and pages show those
devices as the store knows them. The owner writes a row per device status *change* (batched by
the pipeline through its queued writes: O(transitions), never O(polls)); ``peer_view`` reads the
site's rows and its open incidents (an open incident wins: its status and start).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from monitor.store import schema
from monitor.store.engine import StoreBase

DS = schema.device_status
I = schema.incidents  # noqa: E741


@dataclass(frozen=True, slots=True)
class KnownStatus:
    status: str  # a DeviceStatus value
    cause: str
    since: datetime
    poller: str  # who recorded it ("" for an open incident read without a record)


class DeviceStatusMixin(StoreBase):
    def record_statuses(self, poller: str, rows: Iterable[tuple[str, str, str, datetime]]
                        ) -> int:
        """Upsert (device, status, cause, since) rows for this site, one transaction."""
        site, now = self.write_site, self.clock()
        values = [{"site": site, "device_id": d, "status": s, "cause": c[:2000], "since": at,
                   "poller": poller, "updated_at": now} for d, s, c, at in rows]
        if not values:
            return 0
        with self.tx() as conn:
            ins = (postgresql.insert(DS) if conn.dialect.name == "postgresql"
                   else sqlite.insert(DS))
            conn.execute(ins.on_conflict_do_update(
                index_elements=[DS.c.site, DS.c.device_id],
                set_={k: ins.excluded[k] for k in ("status", "cause", "since", "poller",
                                                   "updated_at")}), values)
        return len(values)

    def peer_view(self) -> dict[str, KnownStatus]:
        """Every device of this site as the store knows it: its open device-level incident
        (status, cause, start), else its last recorded status. O(devices of the site)."""
        with self.read() as conn:
            out = {d: KnownStatus(s, c, since, p) for d, s, c, since, p in conn.execute(
                select(DS.c.device_id, DS.c.status, DS.c.cause, DS.c.since, DS.c.poller)
                .where(*self.of_site(DS)))}
            for d, s, c, since in conn.execute(
                    select(I.c.device_id, I.c.status, I.c.cause, I.c.started_at)
                    .where(I.c.ended_at.is_(None), I.c.check.is_not(None), *self.of_site(I))
                    .order_by(I.c.id)):
                rec = out.get(d)
                out[d] = KnownStatus(s, c, since, rec.poller if rec is not None else "")
        return out
