"""AsyncStore: the store's methods as coroutines, run on ONE dedicated thread.

One thread means one writer (SQLite's own rule) and an event loop that never blocks on the
database. Reads share the thread: they are short, and ordering them after earlier writes is what
callers expect.

``queue(fn, ...)`` is for writes nobody may wait on (the pipeline's incidents and tickets: a page
must never wait for, or depend on, a store write). Queued writes run in order. Group commit: the
writes waiting at the head of the queue (up to ``BATCH_MAX``, for up to ``BATCH_SECONDS`` of
work) run in ONE transaction (``Store.batch``), every ``Store.tx()`` of theirs a SAVEPOINT of it,
and commit once; a switch failure's ~50 incident opens were 50 transactions one after another
(issue 17). Each write's future gets its result only after that commit. A write alone (nothing
behind it, or a method marked ``@alone``: its own connections or in-memory state) runs exactly
as before, in its own transaction(s).

A write that fails for a reason of the database's (locked by a long import, connection lost)
rolls its whole batch back; the batch is retried, in order, until it lands, and the writes
behind it wait, so they land in the order they happened. Whatever a write keeps in memory of
a rolled-back batch is taken back by what it registered with ``Store.on_rollback`` (an incident's
id). A write the database refuses for its data (a constraint, a bad value: ``refused()``), or one
that raises anything else (a bug), gets the same answer every time: only its own savepoint is
rolled back, it is logged, counted as failed and dropped, and the rest of its batch commits; it
cannot hold back the writes behind it for good.

What an operator needs to see of that queue (``hallmon_store_write_*`` on /metrics) is kept here
as plain counters read at scrape time: how many writes wait and since when, every retry by the
kind of error (a bounded set, ``RETRY_KINDS``; a batch retried counts each of its writes), every
write by outcome, and the writes of each batch committed (``hallmon_store_batch_writes``: how
well group commit batches, and whether batches fill up to ``BATCH_MAX``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from monitor.store.engine import is_alone
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
log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds between tries of a queued write that failed
# Queued writes committed together at most (group commit). A switch failure queues ~50 incident
# opens at once; 64 takes them in one transaction, and bounds how much one retry re-does.
BATCH_MAX = 64
# ... and for at most this long: a batch commits once its writes have run this long (every
# write's result waits for its batch's commit, so the first must not wait for the 64th's work).
BATCH_SECONDS = 0.05
# Buckets of the writes per committed batch (hallmon_store_batch_writes), up to BATCH_MAX.
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64)

# Why a queued write was tried again. A bounded set: the label of hallmon_store_write_retries_total
# (never the driver's message, which may name hosts, users or values).
RETRY_KINDS: tuple[str, ...] = ("locked", "connection", "other")
WRITE_OUTCOMES: tuple[str, ...] = ("ok", "failed")
# SQLSTATEs of PostgreSQL that mean "wait and try again": lock_not_available, deadlock_detected,
# serialization_failure; class 08 (connection exception) and 57P0x (the server shutting down or
# starting up, "the database system is starting up" after a restart) mean the server is away.
_PG_LOCKED = {"55P03", "40P01", "40001"}
_PG_AWAY = {"57P01", "57P02", "57P03"}
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6  # primary result codes (the low byte of extended ones)


def retry_kind(exc: DBAPIError) -> str:
    """``locked``: another writer holds the database (SQLite busy/locked behind a long import,
    a PostgreSQL lock wait, deadlock or serialization failure); ``connection``: the server is
    away (refused, dropped, shutting down, starting up); ``other``: any other database error.
    Decided by error codes, never by message text (a value in a message could say "locked")."""
    orig = exc.orig
    state = getattr(orig, "sqlstate", None)  # psycopg; None when no server answered
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if state in _PG_LOCKED or (
            sqlite_code is not None and sqlite_code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)):
        return "locked"
    if exc.connection_invalidated or state in _PG_AWAY or (state or "").startswith("08"):
        return "connection"
    if state is None and sqlite_code is None and isinstance(exc, OperationalError):
        return "connection"  # psycopg: refused or dropped before the server said anything
    return "other"


def refused(exc: DBAPIError) -> bool:
    """The database refused the write's data (a constraint, a value out of range or of the
    wrong type): trying it again gets the same answer, so retrying would only hold back every
    write queued behind it. PostgreSQL SQLSTATE classes 22 and 23; SQLite's IntegrityError and
    DataError (SQLAlchemy maps the driver's exceptions to these classes for both)."""
    state = getattr(exc.orig, "sqlstate", None) or ""
    return isinstance(exc, IntegrityError | DataError) or state[:2] in ("22", "23")


@dataclass(slots=True)
class BatchSizes:
    """Writes per committed batch, as a histogram the metrics render: ``counts`` per bucket of
    ``bounds`` (non-cumulative, the last for +Inf), ``sum`` the writes. A write alone is a batch
    of one."""

    bounds: tuple[float, ...] = BATCH_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    sum: float = 0.0

    def observe(self, writes: int) -> None:
        self.counts[bisect_left(self.bounds, writes)] += 1  # buckets are "le"
        self.sum += writes

    def copy(self) -> BatchSizes:
        """A copy that the store thread does not change while it is rendered."""
        return BatchSizes(self.bounds, list(self.counts), self.sum)


class AsyncStore:
    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic,
                 batch: int = BATCH_MAX, batch_seconds: float = BATCH_SECONDS) -> None:
        self.store = store
        self.clock = clock  # ages of queued writes, length of a batch (tests inject one)
        # Group commit: at most this many queued writes per transaction (1: one each), run
        # for at most about this long.
        self.batch_max = max(1, batch)
        self._singles = 0  # writes to run one at a time (a batch failed, not by a retry kind)
        self.batch_seconds = batch_seconds
        # Batches of queued writes landed (committed; a write alone is one), by the writes
        # that ran in each (those dropped as refused included: their batch went on).
        self.batch_sizes = BatchSizes()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hallmon-store")
        # (write, its future, when it was queued by ``clock``)
        self._writes: deque[tuple[Callable[[], Any], asyncio.Future[Any], float]] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Queued writes tried again after a database error, by RETRY_KINDS; queued writes done,
        # by WRITE_OUTCOMES ("failed": dropped, an error no retry can help).
        self.retries: dict[str, int] = dict.fromkeys(RETRY_KINDS, 0)
        self.writes: dict[str, int] = dict.fromkeys(WRITE_OUTCOMES, 0)

    @property
    def batches(self) -> int:
        return sum(self.batch_sizes.counts)

    @property
    def write_retries(self) -> int:
        return sum(self.retries.values())

    @property
    def queued_writes(self) -> int:
        return len(self._writes)

    def oldest_write_age(self) -> float:
        """Seconds the oldest queued write has waited (0 with none queued). Safe from any
        thread: a deque's ``[0]`` is atomic under the GIL, and IndexError means empty."""
        try:
            queued_at = self._writes[0][2]
        except IndexError:
            return 0.0
        return max(0.0, self.clock() - queued_at)

    def queue(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Run ``fn`` on the store thread after every write queued before it, retrying it on a
        database error until it lands (unless the database refuses its data: ``refused``).
        Returns at once; the future holds its result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._writes.append((functools.partial(fn, *args, **kwargs), done, self.clock()))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all())
        return done

    async def drain(self, within: float | None = None) -> bool:
        """Wait until every queued write has landed; False if ``within`` seconds passed first."""
        async def landed() -> None:
            while self._writes:
                await asyncio.wait([self._writes[-1][1]])

        try:
            async with asyncio.timeout(within):
                await landed()
        except TimeoutError:
            return False
        return True

    def _next_batch(self) -> list[Callable[[], Any]]:
        """The writes at the head of the queue that go into one transaction: up to
        ``batch_max``, stopping before a write marked ``alone`` (which goes by itself)."""
        batch: list[Callable[[], Any]] = []
        limit = 1 if self._singles else self.batch_max
        for fn, _, _ in self._writes:
            if len(batch) >= limit or (is_alone(fn) and batch):
                break
            batch.append(fn)
            if is_alone(fn):
                break
        return batch

    def _run_batch(self, batch: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """On the store thread: the writes in one transaction, each store call of theirs in a
        savepoint of its own (``Store.tx``), one commit for all. A write that raises for itself
        (a bug, data the database refuses) has its savepoint rolled back, as its own transaction
        would have been, and is reported as (False, error); a database error of any other kind
        (a lock, a lost connection), or SQLAlchemy's own (the connection may be unusable), rolls
        the whole transaction back and propagates (every write is tried again)."""
        outcomes: list[tuple[bool, Any]] = []
        store = self.store

        def attempt(write: Callable[[], Any]) -> None:
            try:
                outcomes.append((True, write()))
            except DBAPIError as exc:
                if not refused(exc):
                    raise
                outcomes.append((False, exc))
            except Exception as exc:
                if isinstance(exc, SQLAlchemyError) and len(batch) > 1:
                    raise  # the batch's connection may be unusable: then all one at a time
                outcomes.append((False, exc))

        if len(batch) == 1:  # alone: its own transaction(s), as the write wrote them
            attempt(batch[0])
        else:
            # Each Store.tx() of a write is a SAVEPOINT of the batch's transaction.
            until = self.clock() + self.batch_seconds
            with store.batch():
                for fn in batch:
                    attempt(fn)
                    if self.clock() >= until:
                        break  # commit what ran: the first write must not wait for the 64th
        self.batch_sizes.observe(len(outcomes))
        return outcomes

    async def _write_all(self) -> None:
        delay = RETRY_FIRST
        while self._writes:
            batch = self._next_batch()
            try:
                outcomes = await self.run(self._run_batch, batch)
            except DBAPIError as exc:
                if refused(exc):  # at commit (a deferred check): which write? one at a time
                    if len(batch) == 1:
                        self._singles = max(0, self._singles - 1)
                        self._drop(exc, batch[0])
                    else:
                        self._singles = len(batch)
                    continue
                kind = retry_kind(exc)  # locked, busy, connection lost: the writes are fine
                self.retries[kind] += len(batch)
                log.warning("store write failed (%s, %s); retrying %d in %.1f s, %d queued",
                            kind, type(exc.orig).__name__, len(batch), delay,
                            len(self._writes))
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            except Exception as exc:  # failed outside any write (at commit): a bug
                if len(batch) == 1:
                    self._singles = max(0, self._singles - 1)
                    self._drop(exc, batch[0])
                    continue
                self._singles = len(batch)  # find the culprit: these one at a time
                log.error("store batch of %d failed (%s); writing one at a time", len(batch),
                          exc)
                continue
            # Committed: only now do the futures learn their results, in order.
            delay = RETRY_FIRST
            self._singles = max(0, self._singles - len(outcomes))
            for fn, (ok, value) in zip(batch, outcomes, strict=False):  # those that ran
                if not ok:
                    self._drop(value, fn)
                    continue
                self.writes["ok"] += 1
                _, done, _ = self._writes.popleft()
                if not done.done():
                    done.set_result(value)

    def _drop(self, exc: Exception, fn: Callable[[], Any]) -> None:
        """The head write can never land: log it (by name: its arguments may be long), count
        it as failed, hand its error to whoever awaits it, and go on with the writes behind."""
        what = getattr(getattr(fn, "func", fn), "__qualname__", "write")
        log.error("store write %s dropped: %s", what, exc, exc_info=exc)
        self.writes["failed"] += 1
        _, done, _ = self._writes.popleft()
        if not done.done():
            done.set_exception(exc)
            done.exception()  # retrieved: nobody has to await it

    def __repr__(self) -> str:
        return f"<AsyncStore {self.store!r}>"

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run any callable (usually a Store method) on the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def aclose(self, within: float = 5.0) -> None:
        """Finish queued work (queued writes: at most ``within`` seconds), then dispose of the
        engine."""
        if not await self.drain(within):
            log.error("%d store write(s) not landed at shutdown", len(self._writes))
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
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
