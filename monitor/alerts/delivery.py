"""Outbox worker: at-least-once delivery with retry, exponential backoff and a dead letter.

The engine writes every message to the outbox first; this worker reads what is due, sends it
through its channel and records the outcome. A crash between "sent" and "marked sent" re-sends
the item after restart with the same idempotency key (at most one duplicate per crash).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from monitor.alerts.base import Channel, DeliveryResult, Message, redact

log = logging.getLogger(__name__)


class OutboxItem(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def attempts(self) -> int: ...


class Outbox(Protocol):
    """The store's outbox table (monitor/store); an in-memory one serves the tests.

    ``due`` keeps order: per channel, items in the order enqueued, up to the first one that is
    not due yet (a failed item waiting for its retry holds back the rest of its channel)."""

    def enqueue(self, key: str, channel: str, payload: dict[str, Any]) -> bool: ...
    def commit(self, rows: list[tuple[str, str, dict[str, Any]]], state: str,
               name: str = ...) -> int:
        """Enqueue ``rows`` (key, channel, payload) in order and save the engine's ``state``
        under ``name`` (one per poller), all in one transaction; the number of rows new."""
        ...
    def alert_state(self, name: str = ...) -> str | None:
        """The engine state saved under ``name`` by the last ``commit``."""
        ...
    def due(self, now: datetime, limit: int) -> list[Any]: ...
    def mark_sent(self, id: int, at: datetime) -> None: ...
    def mark_failed(
        self, id: int, error: str, next_attempt_at: datetime, dead: bool
    ) -> None: ...
    def outbox_counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 12
    backoff_initial: float = 2.0
    backoff_max: float = 300.0

    def backoff(self, attempts: int) -> timedelta:
        """Delay after the ``attempts``-th failure (1-based): 2, 4, 8 ... capped."""
        return timedelta(seconds=min(self.backoff_max,
                                     self.backoff_initial * 2 ** max(0, attempts - 1)))


@dataclass
class ChannelStats:
    """Per channel, for hallmon_notifications_total (= attempts) and
    hallmon_notification_failures_total (= failures); dead letters are in outbox_counts()."""

    sent: int = 0
    failures: int = 0
    dead: int = 0

    @property
    def attempts(self) -> int:
        return self.sent + self.failures


class Delivery:
    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, Channel],
        client: httpx.AsyncClient,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        batch: int = 100,
        poll_interval: float = 1.0,
        rate_limits: Mapping[str, int] | None = None,
    ) -> None:
        self._outbox = outbox
        self._channels = channels
        self._client = client
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._batch = batch
        self._poll = poll_interval
        self._wake = asyncio.Event()
        # Pace each robot (N per minute) so a backlog after an outage is not answered with
        # "sending too fast"; items over the pace simply stay due (no attempt is counted).
        self._limits = dict(rate_limits or {})
        self._recent: dict[str, deque[datetime]] = {}
        # Read by metrics: hallmon_notifications_total / hallmon_notification_failures_total.
        self.stats: dict[str, ChannelStats] = {name: ChannelStats() for name in channels}

    def wake(self) -> None:
        """The engine calls this after enqueueing: deliver now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Send everything due now; one channel's items in order, channels in parallel."""
        items = await asyncio.to_thread(self._outbox.due, self._clock(), self._batch)
        by_channel: dict[str, list[Any]] = {}
        for item in items:
            by_channel.setdefault(item.channel, []).append(item)
        await asyncio.gather(*(self._send_all(ch, its) for ch, its in by_channel.items()))
        return len(items)

    async def _send_all(self, channel_name: str, items: list[Any]) -> None:
        # ``due`` hands each channel's items in order, none past one that waits for its retry;
        # after a retryable failure that item is the channel's head (its retry time is stored,
        # so the hold outlives a restart) and the rest of the channel waits behind it.
        channel = self._channels.get(channel_name)
        for item in items:
            if channel is None:
                result = DeliveryResult.failure(f"channel {channel_name!r} is not configured",
                                                retryable=False)
            elif not self._paced(channel_name):
                break
            else:
                result = await self._send_one(channel, item)
            await self._record(channel_name, item, result)
            if not result.ok and result.retryable:
                break  # keep order: the rest of this channel waits for the retry

    def _paced(self, channel_name: str) -> bool:
        limit = self._limits.get(channel_name, 0)
        if not limit:
            return True
        now = self._clock()
        recent = self._recent.setdefault(channel_name, deque())
        while recent and recent[0] <= now - timedelta(minutes=1):
            recent.popleft()
        if len(recent) >= limit:
            return False
        recent.append(now)
        return True

    async def _send_one(self, channel: Channel, item: Any) -> DeliveryResult:
        try:
            return await channel.send(Message.from_payload(item.payload), self._client)
        except Exception as exc:  # a channel bug must not stop the others
            log.exception("channel %s raised", channel.name)
            return DeliveryResult.failure(f"{type(exc).__name__}: {redact(str(exc))}")

    async def _record(self, channel_name: str, item: Any, result: DeliveryResult) -> None:
        now = self._clock()
        stats = self.stats.setdefault(channel_name, ChannelStats())
        if result.ok:
            stats.sent += 1
            await asyncio.to_thread(self._outbox.mark_sent, item.id, now)
            return
        stats.failures += 1
        attempts = item.attempts + 1
        dead = not result.retryable or attempts >= self._policy.max_attempts
        stats.dead += dead
        error = redact(result.error or "unknown error")
        retry_at = now + self._policy.backoff(attempts)
        log.warning("notification %s via %s failed (attempt %d%s): %s", item.key,
                    channel_name, attempts, ", dead letter" if dead else "", error)
        await asyncio.to_thread(self._outbox.mark_failed, item.id, error, retry_at, dead)

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("outbox delivery failed; retrying")
            self._wake.clear()
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
