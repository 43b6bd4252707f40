"""Maintenance windows made through the API (recurring ones live in the inventory)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.models import InvalidValue, MaintenanceWindow, NotFound

W = schema.maintenance_windows
SELECTORS = ("device", "class", "floor")


def _window(row: Row[Any]) -> MaintenanceWindow:
    return MaintenanceWindow(**{k: v for k, v in row._mapping.items() if k != "site"})


class WindowsMixin(StoreBase):
    def add_window(self, selector: str, value: str, starts_at: datetime, ends_at: datetime,
                   reason: str, created_by: str) -> MaintenanceWindow:
        if selector not in SELECTORS:
            raise InvalidValue(f"selector must be one of {', '.join(SELECTORS)}")
        start, end = self._now(starts_at), self._now(ends_at)
        if end <= start:
            raise InvalidValue("a maintenance window must end after it starts")
        with self.tx() as conn:
            wid = conn.execute(W.insert().values(
                site=self.write_site, selector=selector, value=value, starts_at=start,
                ends_at=end, reason=reason,
                created_by=created_by, created_at=self.clock(),
            ).returning(W.c.id)).scalar_one()
            return _window(conn.execute(select(W).where(W.c.id == wid)).one())

    def delete_window(self, window_id: int) -> None:
        with self.tx() as conn:
            if conn.execute(delete(W).where(W.c.id == window_id, *self.of_site(W))
                            ).rowcount == 0:
                raise NotFound(f"maintenance window {window_id} not found")

    def active_windows(self, now: datetime) -> list[MaintenanceWindow]:
        at = self._now(now)
        with self.read() as conn:
            rows = conn.execute(select(W).where(W.c.starts_at <= at, W.c.ends_at > at,
                                                *self.of_site(W))
                                .order_by(W.c.id))
            return [_window(r) for r in rows]

    def windows(self, *, include_past: bool = False, now: datetime | None = None,
                limit: int = 500) -> list[MaintenanceWindow]:
        """Current and future windows (all with include_past), soonest first."""
        stmt = select(W).where(*self.of_site(W)).order_by(W.c.starts_at, W.c.id).limit(limit)
        if not include_past:
            stmt = stmt.where(W.c.ends_at > self._now(now))
        with self.read() as conn:
            return [_window(r) for r in conn.execute(stmt)]
