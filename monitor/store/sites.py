"""The sites sharing one database, each as its daemon last registered it (issue 17).

A daemon knows its own hall from its inventory, never another's; reports for another site, or
for every site, need that site's name, timezone, opening hours and working-day calendar. Each
daemon therefore writes its site's reporting profile here at start and on every good reload:
one row per site (``register_site``, an upsert), the profile itself as JSON (built and read by
monitor.reports; the store only keeps it), the columns a listing shows beside it so that
``GET /api/v1/sites`` never parses a profile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from monitor.store import schema
from monitor.store.engine import ALL_SITES, StoreBase, _checked_site
from monitor.store.models import InvalidValue

S = schema.sites


@dataclass(frozen=True, slots=True)
class SiteRow:
    id: str
    name: str
    timezone: str
    opening_hours: str | None
    devices: int
    updated_at: datetime


class SitesMixin(StoreBase):
    def register_site(self, name: str, timezone: str, opening_hours: str | None, devices: int,
                      profile: dict[str, Any]) -> None:
        """Record (or replace) this store's site's reporting profile."""
        site = self.write_site
        values = {"name": name, "timezone": timezone, "opening_hours": opening_hours,
                  "devices": devices, "profile": json.dumps(profile, ensure_ascii=False),
                  "updated_at": self.clock()}
        # UPDATE first, INSERT when absent: on PostgreSQL two pollers of one site may both
        # insert at once; the loser's primary-key error is retried as the update it is.
        try:
            with self.tx() as conn:
                if conn.execute(S.update().where(S.c.id == site).values(**values)).rowcount:
                    return
                conn.execute(S.insert().values(id=site, **values))
        except IntegrityError:
            with self.tx() as conn:
                conn.execute(S.update().where(S.c.id == site).values(**values))

    def list_sites(self) -> list[SiteRow]:
        """Every registered site (whatever this store's), by id; the profiles are not read."""
        with self.read() as conn:
            rows = conn.execute(select(S.c.id, S.c.name, S.c.timezone, S.c.opening_hours,
                                       S.c.devices, S.c.updated_at).order_by(S.c.id)).all()
        return [SiteRow(*r) for r in rows]

    def site_profiles(self, site: str) -> dict[str, dict[str, Any]]:
        """The registered profiles of ``site`` ("*": every site), by site id; InvalidValue
        naming ``site`` when a named site never registered."""
        site = _checked_site(site)
        with self.read() as conn:
            q = select(S.c.id, S.c.profile)
            if site != ALL_SITES:
                q = q.where(S.c.id == site)
            rows = conn.execute(q.order_by(S.c.id)).all()
        if site != ALL_SITES and not rows:
            raise InvalidValue(f"site {site!r} is not registered in this store (a site "
                               "registers when its daemon starts)")
        return {sid: json.loads(text) for sid, text in rows}
