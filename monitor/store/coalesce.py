"""Coalesced: changes that pile up between writes and land in ONE queued write.

Some state changes faster than it needs writing: each device's latest status for the pollers
sharing the site (the pipeline), each device's held trap conditions and every trap event (the
trap receiver). A change comes with a transition or a trap, on the event loop; a transaction
per change would pile up behind a busy store. Instead the changes wait here (``put``: the
latest value per key; ``append``: every value, in order) and one write is queued through
``AsyncStore.queue`` while none is waiting; when it runs, on the store thread, it takes
everything pending at that moment and hands it to ``write``.

What becomes of what a write took, by what the queue does with the write (see aio.py):

- it lands: counted in ``written``;
- the database failed it in a way the queue retries (a lock, the server away), or a later write
  of its group commit failed and the batch was rolled back (``Store.on_rollback``): it goes back
  in front of what came since, unless a newer value of the same key replaced it; the queue's
  next try of the same write takes it all again;
- the database refused its data, or ``write`` raised anything else (a bug): what it took is
  dropped, counted in ``dropped`` and logged (the queue drops the write and logs why; a bug of
  SQLAlchemy's in a group commit has the queue run it again alone, with what came since).

With ``linger``, the write is queued that many seconds after the first change instead of at
once, so changes that come one by one (kiosks beating) share it; ``flush`` queues it at once (a
stop: the store's drain takes it).

At most ``limit`` keys wait (None: no bound): a new key beyond it is dropped and counted, and
what a failed write puts back is cut to it, the oldest kept. So with ``append`` every value is
counted once, in ``written`` or in ``dropped``, whatever the database does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError

from monitor.store.aio import AsyncStore, refused

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """Values waiting for one queued ``write(pending)`` on ``store`` (``pending``: key -> value,
    oldest key first). ``write`` runs on the store thread inside the queue's transaction; it
    may register its own ``Store.on_rollback`` for what else it changes in memory."""

    def __init__(self, store: AsyncStore, write: Callable[[dict[K, V]], object], *,
                 limit: int | None = None, linger: float = 0.0) -> None:
        self.store = store
        self.write = write
        self.limit = limit
        self.linger = linger
        self._timer: asyncio.TimerHandle | None = None  # a lingering write, not yet queued
        self.written = 0  # values landed (committed)
        self.dropped = 0  # values never written: over ``limit``, refused, or a bug
        self._pending: dict[K, V] = {}
        self._queued = False  # a write is queued that has not yet taken ``_pending``
        self._lock = threading.Lock()  # filled on the event loop, taken on the store thread
        self._seq = itertools.count()  # the keys of ``append``

    def __len__(self) -> int:
        """Values waiting for the write."""
        return len(self._pending)

    def put(self, key: K, value: V) -> bool:
        """``value`` is ``key``'s latest: written by the next write (replacing one still
        waiting). On the event loop. False: dropped and counted (``limit`` keys wait)."""
        with self._lock:
            if (self.limit is not None and key not in self._pending
                    and len(self._pending) >= self.limit):
                self.dropped += 1
                return False
            self._pending[key] = value
            queue, self._queued = not self._queued, True
        if queue and self.linger > 0:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self.flush)
        elif queue:
            self.store.queue(self._write)
        return True

    def flush(self) -> None:
        """Queue a lingering write now (its timer calls this too)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.store.queue(self._write)

    def append(self: Coalesced[int, V], value: V) -> bool:
        """``value`` written after every value appended before it (none replaces another)."""
        return self.put(next(self._seq), value)

    def discard(self, keys: Iterable[K]) -> None:
        """Forget what waits for ``keys`` (another poller owns those devices now: a write still
        waiting must not undo what their new owner writes)."""
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)

    def _write(self) -> None:
        """The queued write, on the store thread."""
        with self._lock:
            taken, self._pending, self._queued = self._pending, {}, False
        if not taken:
            return  # discarded, or landed with a try before (the queue retried both)
        try:
            self.write(taken)
        except Exception as exc:
            if isinstance(exc, DBAPIError) and not refused(exc):
                self._put_back(taken)  # the queue tries this write again
            else:
                with self._lock:
                    self.dropped += len(taken)
                log.warning("%s: %d value(s) dropped with their write", self._name, len(taken))
            raise
        with self._lock:
            self.written += len(taken)

        def undo() -> None:  # its group commit was rolled back: the queue runs it again
            with self._lock:
                self.written -= len(taken)
            self._put_back(taken)

        self.store.store.on_rollback(undo)

    def _put_back(self, taken: dict[K, V]) -> None:
        """``taken`` did not land: back in front of what came since, where no newer value of
        the same key replaced it; beyond ``limit``, the newest are dropped and counted."""
        with self._lock:
            waiting = {**taken, **self._pending}  # taken's keys first; newer values win
            if self.limit is not None and len(waiting) > self.limit:
                self.dropped += len(waiting) - self.limit
                waiting = dict(itertools.islice(waiting.items(), self.limit))
            self._pending = waiting
            self._queued = True  # the queue's next try of this write takes it

    @property
    def _name(self) -> str:
        write = self.write  # a function or method, else a callable object: its class
        return str(getattr(write, "__qualname__", None) or type(write).__qualname__)

    def __repr__(self) -> str:
        return f"<Coalesced {self._name}: {len(self._pending)} waiting>"
