"""Incidents: hard non-up periods of a device (check NULL) or of one of its checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.exc import IntegrityError

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.models import INCIDENT_STATUSES, Incident, InvalidValue, NotFound

I = schema.incidents  # noqa: E741 - the table, named like the others
COLUMNS = [c for c in I.c if c.name not in ("open_key", "site")]


def _incident(row: Row[Any]) -> Incident:
    return Incident(**{c.name: row._mapping[c.name] for c in COLUMNS})


def open_key(device_id: str, check: str | None, status: str) -> str:
    return f"{device_id}|{check or ''}|{status}"


class IncidentsMixin(StoreBase):
    def open_incident(self, device_id: str, check: str | None, status: str, cause: str,
                      started_at: datetime) -> int:
        """Id of the open incident of (device, check, status), created if there is none."""
        if status not in INCIDENT_STATUSES:
            raise InvalidValue(f"unknown incident status {status!r}")
        key = open_key(device_id, check, status)
        site = self.write_site
        mine = I.c.site == site
        with self.tx() as conn:
            found = conn.execute(select(I.c.id).where(mine, I.c.open_key == key)
                                 ).scalar_one_or_none()
            if found is not None:
                return int(found)
            try:
                with conn.begin_nested():
                    return int(conn.execute(I.insert().values(
                        site=site, device_id=device_id, check=check, status=status, cause=cause,
                        started_at=self._now(started_at), open_key=key,
                    ).returning(I.c.id)).scalar_one())
            except IntegrityError:  # another poller opened it between our select and insert
                found = conn.execute(select(I.c.id).where(mine, I.c.open_key == key)
                                     ).scalar_one_or_none()
                if found is None:
                    # ... or opened another one for this device (a hand-over between pollers:
                    # one open incident per device, ux_incidents_device_open): adopt it.
                    found = conn.execute(select(I.c.id).where(
                        mine, I.c.device_id == device_id, I.c.ended_at.is_(None),
                        I.c.check.is_not(None))).scalar_one()
                return int(found)

    def close_incident(self, incident_id: int, ended_at: datetime) -> None:
        """Close an incident (closing a closed one keeps its first end time)."""
        mine = I.c.site == self.write_site  # another hall's incident is never closed from here
        with self.tx() as conn:
            res = conn.execute(update(I).where(mine, I.c.id == incident_id,
                                               I.c.ended_at.is_(None))
                               .values(ended_at=self._now(ended_at), open_key=None))
            if res.rowcount == 0 and conn.execute(
                select(I.c.id).where(mine, I.c.id == incident_id)
            ).first() is None:
                raise NotFound(f"incident {incident_id} not found")

    def open_incidents(self) -> list[Incident]:
        with self.read() as conn:
            rows = conn.execute(select(*COLUMNS).where(I.c.ended_at.is_(None), *self.of_site(I))
                                .order_by(I.c.id))
            return [_incident(r) for r in rows]

    def incidents(self, device_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, limit: int = 1000) -> list[Incident]:
        """Incidents overlapping [since, until), newest first."""
        conds = self.of_site(I)
        if device_id is not None:
            conds.append(I.c.device_id == device_id)
        if since is not None:
            conds.append((I.c.ended_at.is_(None)) | (I.c.ended_at > self._now(since)))
        if until is not None:
            conds.append(I.c.started_at < self._now(until))
        with self.read() as conn:
            rows = conn.execute(select(*COLUMNS).where(*conds)
                                .order_by(I.c.started_at.desc(), I.c.id.desc()).limit(limit))
            return [_incident(r) for r in rows]
