"""AsyncStore: the store's methods as coroutines, run on ONE dedicated thread.

One thread means one writer (SQLite's own rule) and an event loop that never blocks on the
database. Reads share the thread: they are short, and ordering them after earlier writes is what
callers expect.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from monitor.store.models import (
    Incident,
    MaintenanceWindow,
    NewTicket,
    OutboxItem,
    Ticket,
    TicketEvent,
)

if TYPE_CHECKING:
    from monitor.store import Store

P = ParamSpec("P")
R = TypeVar("R")


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hallmon-store")

    def __repr__(self) -> str:
        return f"<AsyncStore {self.store!r}>"

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run any callable (usually a Store method) on the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Finish queued work, then dispose of the engine."""
        await self.run(self.store.close)
        self._pool.shutdown(wait=True)

    # -- incidents
    async def open_incident(self, device_id: str, check: str | None, status: str, cause: str,
                            started_at: datetime) -> int:
        return await self.run(self.store.open_incident, device_id, check, status, cause,
                              started_at)

    async def close_incident(self, incident_id: int, ended_at: datetime) -> None:
        await self.run(self.store.close_incident, incident_id, ended_at)

    async def open_incidents(self) -> list[Incident]:
        return await self.run(self.store.open_incidents)

    async def incidents(self, device_id: str | None = None, since: datetime | None = None,
                        until: datetime | None = None, limit: int = 1000) -> list[Incident]:
        return await self.run(self.store.incidents, device_id, since, until, limit)

    # -- tickets
    async def create_ticket(self, new: NewTicket, *, at: datetime | None = None) -> Ticket:
        return await self.run(self.store.create_ticket, new, at=at)

    async def auto_ticket(self, incident_key: str, new: NewTicket, *,
                          at: datetime | None = None) -> tuple[Ticket, bool]:
        return await self.run(self.store.auto_ticket, incident_key, new, at=at)

    async def open_auto_tickets(self) -> dict[str, tuple[str, float]]:
        return await self.run(self.store.open_auto_tickets)

    async def resolve_auto_ticket(self, incident_key: str, resolution: str, *,
                                  at: datetime | None = None) -> Ticket | None:
        return await self.run(self.store.resolve_auto_ticket, incident_key, resolution, at=at)

    async def transition(self, ticket_id: int, to: str, actor: str, note: str | None = None, *,
                         resolution: str | None = None, at: datetime | None = None) -> Ticket:
        return await self.run(self.store.transition, ticket_id, to, actor, note,
                              resolution=resolution, at=at)

    async def update_ticket(self, ticket_id: int, actor: str, changes: Mapping[str, Any]
                            ) -> Ticket:
        return await self.run(self.store.update_ticket, ticket_id, actor, changes)

    async def comment(self, ticket_id: int, actor: str, note: str) -> TicketEvent:
        return await self.run(self.store.comment, ticket_id, actor, note)

    async def get_ticket(self, ticket_id: int) -> Ticket:
        return await self.run(self.store.get_ticket, ticket_id)

    async def ticket_events(self, ticket_id: int) -> list[TicketEvent]:
        return await self.run(self.store.ticket_events, ticket_id)

    async def import_tickets(self, rows: Iterable[NewTicket], *, actor: str = "import"
                             ) -> list[int]:
        return await self.run(self.store.import_tickets, list(rows), actor=actor)

    async def devices_in_progress(self) -> set[str]:
        return await self.run(self.store.devices_in_progress)

    async def ticket_counts(self) -> dict[str, dict[str, int]]:
        return await self.run(self.store.ticket_counts)

    # -- maintenance windows
    async def active_windows(self, now: datetime) -> list[MaintenanceWindow]:
        return await self.run(self.store.active_windows, now)

    # -- outbox
    async def enqueue(self, key: str, channel: str, payload: dict[str, Any]) -> bool:
        return await self.run(self.store.enqueue, key, channel, payload)

    async def due(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        return await self.run(self.store.due, now, limit)

    async def mark_sent(self, item_id: int, at: datetime) -> None:
        await self.run(self.store.mark_sent, item_id, at)

    async def mark_failed(self, item_id: int, error: str, next_attempt_at: datetime,
                          dead: bool = False) -> None:
        await self.run(self.store.mark_failed, item_id, error, next_attempt_at, dead)

    async def outbox_counts(self) -> dict[str, int]:
        return await self.run(self.store.outbox_counts)
