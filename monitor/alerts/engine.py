"""The notification engine: route, group, de-duplicate, repeat, resolve, hold and aggregate.

``submit(event)`` is sync and cheap (the pipeline calls it on every hard transition). The work
happens in ``plan(now)``: a synchronous step over the engine's state that returns the messages to
write to the outbox; ``tick()`` writes them (off the event loop) and wakes the delivery worker;
``run()`` is a thin loop around ``tick()``. Tests call ``plan``/``tick`` with a driven clock.

Why the decisions are here and not in channels: grouping and rate limiting must see every
message a route produces, and the outbox must hold a message before anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from monitor.alerts.base import FIRING, AlertEvent, Message
from monitor.alerts.delivery import Outbox
from monitor.alerts.message import (
    Firing,
    Group,
    Recovery,
    Style,
    event_identity,
    merge,
    message_key,
    render,
)
from monitor.inventory.notifications import AlertmanagerChannel, Notifications, QuietHours, Route

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)


@dataclass
class _Paging:
    firing: Firing
    notified_at: datetime
    repeats: int = 0


@dataclass
class _RouteState:
    pending: dict[str, AlertEvent] = field(default_factory=dict)
    opened_at: datetime | None = None
    paging: dict[str, _Paging] = field(default_factory=dict)
    orphans_told: dict[str, AlertEvent] = field(default_factory=dict)
    refreshed_at: dict[str, datetime] = field(default_factory=dict)


def route_matches(route: Route, event: AlertEvent) -> bool:
    m = route.match
    return (
        (not m.classes or event.device_class in m.classes)
        and (not m.floors or event.location.floor in m.floors)
        and (not m.owners or event.owner in m.owners)
        and (not m.devices or event.device_id in m.devices)
        and (not m.severities or event.severity in m.severities)
    )


def in_quiet_hours(quiet: QuietHours | None, now: datetime) -> bool:
    if quiet is None:
        return False
    local: time = now.astimezone(ZoneInfo(quiet.timezone)).time()
    if quiet.start <= quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end  # spans midnight


class Engine:
    def __init__(
        self,
        config: Notifications,
        outbox: Outbox,
        clock: Callable[[], datetime],
        tz: tzinfo | None = None,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._clock = clock
        self._style = Style(config.language, tz or ZoneInfo("Asia/Shanghai"), config.link_base)
        self._on_enqueued = on_enqueued
        self._inbox: deque[tuple[datetime, AlertEvent]] = deque()
        self._routes = {r.name: _RouteState() for r in config.routes}
        self._held: dict[tuple[str, str], list[Message]] = {}
        self._sent: dict[str, deque[datetime]] = {c: deque() for c in config.channels}
        self._wake = asyncio.Event()
        # Machine receivers must be told again and again that an alert still fires.
        self._refresh = {
            name: timedelta(seconds=ch.resend_interval)
            for name, ch in config.channels.items()
            if isinstance(ch, AlertmanagerChannel)
        }

    # -- input ------------------------------------------------------------------------------
    def submit(self, event: AlertEvent) -> None:
        """Queue one hard transition; never blocks, never raises for routing problems."""
        self._inbox.append((self._clock(), event))  # the group window opens at submission
        self._wake.set()

    # -- decisions (sync, no I/O) ------------------------------------------------------------
    def plan(self, now: datetime) -> list[tuple[str, Message]]:
        """Advance every route to ``now``; return (channel, message) pairs to enqueue."""
        self._absorb()
        out: list[tuple[str, Message]] = []
        for route in self._config.routes:
            state = self._routes[route.name]
            for message in self._route_messages(route, state, now):
                out += self._gate(route, message, now, route.channels)
            out += self._refreshes(route, state, now)
            out += self._release(route, now)
        return out

    def resume(self, events: Iterable[AlertEvent], now: datetime) -> None:
        """After a restart: the incidents still open were paged by the previous process.
        Page about them no more, but remember them, so their recovery is still told."""
        ordered = sorted(events, key=lambda e: e.status == "unreachable")  # parents first
        for route in self._config.routes:
            state = self._routes[route.name]
            firing = {}
            children = []
            for e in ordered:
                if not route_matches(route, e):
                    continue
                if e.status in FIRING:
                    firing[e.device_id] = Firing(e)
                    state.paging[e.device_id] = _Paging(Firing(e), now)
                elif e.status == "unreachable":
                    children.append(e)
            self._attach(state, firing, children)

    def firing(self, route: str) -> dict[str, Firing]:
        """What a route currently pages about (device id -> Firing), for the API and tests."""
        return {d: p.firing for d, p in self._routes[route].paging.items()}

    def _absorb(self) -> None:
        while self._inbox:
            submitted, event = self._inbox.popleft()
            for route in self._config.routes:
                if route_matches(route, event):
                    state = self._routes[route.name]
                    # Latest status per device wins inside the window (down then
                    # unreachable = a child of a dead parent).
                    state.pending[event.device_id] = event
                    state.opened_at = state.opened_at or submitted

    def _route_messages(self, route: Route, state: _RouteState, now: datetime) -> list[Message]:
        messages = []
        due = state.opened_at is not None and (
            now >= state.opened_at + timedelta(seconds=route.group_wait)
        )
        if due:
            events = list(state.pending.values())
            state.pending.clear()
            state.opened_at = None
            group = self._group(route, state, events, now)
            if group:
                parts = [f"{k}:{event_identity(e)}:{e.status}" for k, e in _group_events(group)]
                messages.append(self._render(route, "notice", parts, group, now))
        repeats = self._repeats(route, state, now)
        if repeats:
            parts = [f"{event_identity(f.event)}@{state.paging[f.event.device_id].repeats}"
                     for f in repeats.repeats]
            messages.append(self._render(route, "repeat", parts, repeats, now))
        return messages

    def _render(
        self, route: Route, kind: str, parts: list[str], group: Group, now: datetime
    ) -> Message:
        key = message_key(route.name, kind, parts)
        return render(route.name, "notice" if kind == "notice" else "repeat", key, group,
                      self._style, now)

    def _group(
        self, route: Route, state: _RouteState, events: list[AlertEvent], now: datetime
    ) -> Group:
        firing: dict[str, Firing] = {}
        recoveries: list[Recovery] = []
        superseded: list[Recovery] = []
        children: list[AlertEvent] = []
        for e in sorted(events, key=lambda e: (e.since, e.device_id)):
            paging = state.paging.get(e.device_id)
            if e.status in FIRING:
                if paging and event_identity(paging.firing.event) == event_identity(e):
                    continue  # the same incident again: one notice per incident
                if (paging and e.device_id not in firing
                        and paging.firing.event.status != e.status):
                    # Told before under another alert name: resolve that alert.
                    superseded.append(Recovery(e, paging.firing))
                firing[e.device_id] = Firing(e)
                state.paging[e.device_id] = _Paging(Firing(e), now)
            elif e.status == "unreachable":
                if paging:  # it was paging alone; now it is a child of a dead parent
                    del state.paging[e.device_id]
                children.append(e)
            elif paging:  # up, maintenance, unknown: this incident is over
                del state.paging[e.device_id]
                if e.status == "up" and route.send_resolved:
                    recoveries.append(Recovery(e, paging.firing))
            elif e.device_id in state.orphans_told and e.status == "up" and route.send_resolved:
                # Told "unreachable behind its parent" on this route: tell it is back too.
                recoveries.append(Recovery(e, Firing(state.orphans_told[e.device_id])))
            if e.status != "unreachable":
                state.orphans_told.pop(e.device_id, None)
        orphans = self._attach(state, firing, children)
        return Group(tuple(firing.values()), tuple(orphans), (), tuple(recoveries),
                     tuple(superseded))

    def _attach(
        self, state: _RouteState, firing: dict[str, Firing], children: list[AlertEvent]
    ) -> list[AlertEvent]:
        """Children ride in their parent's message; those whose parent this route does not page
        make one summary line, told once per outage."""
        orphans = []
        for child in children:
            parent = child.parent or ""
            if parent in firing:
                firing[parent] = replace(firing[parent],
                                         children=(*firing[parent].children, child))
                state.paging[parent].firing = firing[parent]
            elif parent in state.paging:
                p = state.paging[parent]
                p.firing = replace(p.firing, children=(*p.firing.children, child))
            elif child.device_id not in state.orphans_told:
                state.orphans_told[child.device_id] = child
                orphans.append(child)
        return orphans

    def _repeats(self, route: Route, state: _RouteState, now: datetime) -> Group:
        every = timedelta(seconds=route.repeat_interval)
        due = []
        for paging in state.paging.values():
            if every and now >= paging.notified_at + every:
                paging.notified_at = now
                paging.repeats += 1
                due.append(paging.firing)
        return Group(repeats=tuple(due))

    def _refreshes(
        self, route: Route, state: _RouteState, now: datetime
    ) -> list[tuple[str, Message]]:
        out = []
        for channel in route.channels:
            every = self._refresh.get(channel)
            if every is None:
                continue
            if not state.paging:
                state.refreshed_at.pop(channel, None)  # the next incident starts a new cadence
                continue
            last = state.refreshed_at.get(channel)
            if last is not None and now < last + every:
                continue
            state.refreshed_at[channel] = now
            if last is None:
                continue  # the notice itself was the first push
            group = Group(repeats=tuple(p.firing for p in state.paging.values()))
            parts = [event_identity(f.event) for f in group.repeats] + [now.isoformat()]
            key = message_key(route.name, f"refresh-{channel}", parts)
            out.append((channel, render(route.name, "repeat", key, group, self._style, now)))
        return out

    # -- gates: quiet hours and rate limits hold messages; nothing is dropped -----------------
    def _gate(
        self, route: Route, message: Message, now: datetime, channels: Iterable[str]
    ) -> list[tuple[str, Message]]:
        out = []
        for channel in channels:
            if channel in self._refresh and message.kind == "notice":
                self._routes[route.name].refreshed_at.setdefault(channel, now)
            if channel in self._refresh and message.kind == "repeat":
                continue  # machine receivers get their own cadence (_refreshes)
            held = self._held.get((route.name, channel))
            if held or not self._open(route, channel, now):
                self._held.setdefault((route.name, channel), []).append(message)
                continue
            out.append(self._take(channel, message, now))
        return out

    def _open(self, route: Route, channel: str, now: datetime) -> bool:
        if channel not in self._refresh and in_quiet_hours(route.quiet_hours, now):
            return False
        limit = self._config.channels[channel].rate_limit_per_minute
        sent = self._sent[channel]
        while sent and sent[0] <= now - RATE_WINDOW:
            sent.popleft()
        return not limit or len(sent) < limit

    def _take(self, channel: str, message: Message, now: datetime) -> tuple[str, Message]:
        self._sent[channel].append(now)
        return channel, message

    def _release(self, route: Route, now: datetime) -> list[tuple[str, Message]]:
        out = []
        for channel in route.channels:
            held = self._held.get((route.name, channel))
            if held and self._open(route, channel, now):
                del self._held[(route.name, channel)]
                digest = merge(route.name, held, self._config.language, now)
                out.append(self._take(channel, digest, now))
        return out

    # -- I/O --------------------------------------------------------------------------------
    async def tick(self) -> int:
        """Plan at the clock's now and write the messages to the outbox (before delivery)."""
        pairs = self.plan(self._clock())
        if pairs:
            await asyncio.to_thread(self._enqueue_all, pairs)
            if self._on_enqueued:
                self._on_enqueued()
        return len(pairs)

    def _enqueue_all(self, pairs: list[tuple[str, Message]]) -> None:
        for channel, message in pairs:
            self._outbox.enqueue(f"{message.key}/{channel}", channel, message.to_payload())

    def next_wait(self, now: datetime, cap: float = 1.0) -> float:
        """Seconds until the earliest group window closes, at most ``cap``."""
        waits = [cap]
        for route in self._config.routes:
            opened = self._routes[route.name].opened_at
            if opened is not None:
                end = opened + timedelta(seconds=route.group_wait)
                waits.append((end - now).total_seconds())
        return max(0.0, min(waits))

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a broken outbox must not kill notifications for good
                log.exception("notification engine tick failed; retrying")
            self._wake.clear()
            wait = self.next_wait(self._clock())
            if self._inbox:
                continue
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass


def _group_events(group: Group) -> list[tuple[str, AlertEvent]]:
    return (
        [("f", f.event) for f in group.firing]
        + [("c", c) for f in group.firing for c in f.children]
        + [("o", e) for e in group.orphans]
        + [("r", r.event) for r in group.recoveries]
    )
