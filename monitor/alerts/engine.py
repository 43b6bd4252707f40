"""The notification engine: route, group, de-duplicate, repeat, resolve, hold and aggregate.

``submit(event)`` is sync and cheap (the pipeline calls it on every hard transition). The work
happens in ``plan(now)``: a synchronous step over the engine's state that returns the messages to
write to the outbox; ``tick()`` writes them (off the event loop) and wakes the delivery worker;
``run()`` is a thin loop around ``tick()``. Tests call ``plan``/``tick`` with a driven clock.

Nothing due lives only in memory: ``tick()`` writes the messages together with a snapshot of the
engine's state (events inside their group window, held messages, what each route pages about) in
one transaction, and ``load()`` resumes from it after a restart. A write that fails (a locked
database) is kept and retried on the next tick, in order; the decisions already taken stand.

Why the decisions are here and not in channels: grouping and rate limiting must see every
message a route produces, and the outbox must hold a message before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from monitor.alerts import snapshot as snap
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
    # Every event of the window, per device in the order they happened (a DOWN that recovers
    # inside the window must still be told, so the latest status cannot simply win).
    pending: dict[str, list[AlertEvent]] = field(default_factory=dict)
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
        state_name: str = "engine",
    ) -> None:
        self._config = config
        self._state_name = state_name  # pollers sharing one database keep their own state
        self._outbox = outbox
        self._clock = clock
        self._style = Style(config.language, tz or ZoneInfo("Asia/Shanghai"), config.link_base)
        self._on_enqueued = on_enqueued
        self._inbox: deque[tuple[datetime, AlertEvent]] = deque()
        self._routes = {r.name: _RouteState() for r in config.routes}
        self._held: dict[tuple[str, str], list[Message]] = {}
        self._sent: dict[str, deque[datetime]] = {c: deque() for c in config.channels}
        self._wake = asyncio.Event()
        self._unwritten: list[tuple[str, Message]] = []  # planned, not yet in the outbox
        self._saved: str | None = None  # the snapshot last written
        self._loaded = False  # a snapshot was found by load()
        # The state changed since the last snapshot: a snapshot is written only then (at 10k
        # devices paging it is megabytes of JSON; an idle tick must not rebuild it).
        self._dirty = True
        self._commit_lock = asyncio.Lock()
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
        self._dirty |= bool(self._inbox)
        self._absorb()
        out: list[tuple[str, Message]] = []
        for route in self._config.routes:
            state = self._routes[route.name]
            for message in self._route_messages(route, state, now):
                out += self._gate(route, message, now, route.channels)
            out += self._refreshes(route, state, now)
            out += self._release(route, now)
        self._dirty |= bool(out)
        return out

    async def load(self) -> bool:
        """Resume the state written by the previous process; False if there is none."""
        text = await asyncio.to_thread(self._outbox.alert_state, self._state_name)
        if text:
            self.restore(json.loads(text))
            self._saved = text
        return self._loaded

    def resume(self, events: Iterable[AlertEvent], now: datetime) -> None:
        """After a restart, with the incidents still open. With the previous process' snapshot
        (``load``), an open incident it never knew of (the process died between the incident
        and the snapshot) is paged now: at most one duplicate, never a loss. Without one (a
        store from before snapshots) they are taken as paged, so their recovery is still told."""
        ordered = sorted(events, key=lambda e: e.status == "unreachable")  # parents first
        if self._loaded:
            for e in ordered:
                if (e.status in FIRING or e.status == "unreachable") and not self._knows(e):
                    log.info("open incident of %s was never told: paging it now", e.device_id)
                    self._inbox.append((now, e))
            return
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

    def _knows(self, e: AlertEvent) -> bool:
        """Does any route that matches ``e`` hold it (pending, paging, a child, told orphan)?"""
        for route in self._config.routes:
            if not route_matches(route, e):
                continue
            state = self._routes[route.name]
            dev = e.device_id
            if dev in state.pending or dev in state.paging or dev in state.orphans_told:
                return True
            if any(c.device_id == dev for p in state.paging.values() for c in p.firing.children):
                return True
        return False

    def firing(self, route: str) -> dict[str, Firing]:
        """What a route currently pages about (device id -> Firing), for the API and tests."""
        return {d: p.firing for d, p in self._routes[route].paging.items()}

    def _absorb(self) -> None:
        while self._inbox:
            submitted, event = self._inbox.popleft()
            for route in self._config.routes:
                if route_matches(route, event):
                    state = self._routes[route.name]
                    state.pending.setdefault(event.device_id, []).append(event)
                    state.opened_at = state.opened_at or submitted

    def _route_messages(self, route: Route, state: _RouteState, now: datetime) -> list[Message]:
        messages = []
        due = state.opened_at is not None and (
            now >= state.opened_at + timedelta(seconds=route.group_wait)
        )
        if due:
            self._dirty = True  # the window's events leave it, told or not
            events = [e for evs in state.pending.values() for e in evs]
            state.pending.clear()
            state.opened_at = None
            group = self._group(route, state, events, now)
            if group:
                parts = [f"{k}:{event_identity(e)}:{e.status}" for k, e in _group_events(group)]
                messages.append(self._render(route, "notice", parts, group, now))
        repeats = self._repeats(route, state, now)
        if repeats:
            self._dirty = True
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
        children: dict[str, AlertEvent] = {}
        # Stable sort: one device's events keep the order they happened in.
        for e in sorted(events, key=lambda e: e.since):
            paging = state.paging.get(e.device_id)
            if e.status != "unreachable":
                children.pop(e.device_id, None)  # no longer behind a dead parent
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
                firing.pop(e.device_id, None)  # not told yet: its parent's outage explains it
                children[e.device_id] = e
            elif paging:  # up, maintenance, unknown: this incident is over
                del state.paging[e.device_id]
                untold = firing.pop(e.device_id, None) is not None
                if e.status == "up" and (route.send_resolved or untold):
                    recoveries.append(Recovery(e, paging.firing, untold=untold))
            elif e.device_id in state.orphans_told and e.status == "up" and route.send_resolved:
                # Told "unreachable behind its parent" on this route: tell it is back too.
                recoveries.append(Recovery(e, Firing(state.orphans_told[e.device_id])))
            if e.status != "unreachable":
                state.orphans_told.pop(e.device_id, None)
        orphans = self._attach(state, firing, list(children.values()))
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
        """Plan at the clock's now; write the messages and the engine's state to the outbox in
        one transaction (before delivery). A failed write is kept and retried next tick, so a
        locked database delays messages but never loses or reorders them."""
        async with self._commit_lock:
            self._unwritten += self.plan(self._clock())
            if not self._unwritten and not self._dirty:
                return 0
            self._dirty = False
            state = json.dumps(self.dump(), ensure_ascii=False, sort_keys=True)
            if not self._unwritten and state == self._saved:
                return 0
            pairs = list(self._unwritten)
            rows = [(f"{m.key}/{channel}", channel, m.to_payload()) for channel, m in pairs]
            try:
                await asyncio.to_thread(self._outbox.commit, rows, state, self._state_name)
            except BaseException:
                self._dirty = True  # write it again next tick
                raise
            del self._unwritten[: len(pairs)]
            self._saved = state
        if pairs and self._on_enqueued:
            self._on_enqueued()
        return len(pairs)

    async def flush(self) -> None:
        """On a clean stop: take in what was submitted and write everything down."""
        try:
            await self.tick()
        except Exception:
            log.exception("notification engine: final write failed; %d message(s) unwritten",
                          len(self._unwritten))

    # -- the snapshot (see monitor/alerts/snapshot.py) ------------------------------------------
    def dump(self) -> dict[str, Any]:
        """What the next process needs to go on where this one stops (JSON-ready)."""
        routes = {}
        for name, st in self._routes.items():
            routes[name] = {
                "pending": {d: [snap.event_out(e) for e in evs] for d, evs in st.pending.items()},
                "opened_at": snap.time_out(st.opened_at),
                "paging": {d: {"firing": snap.firing_out(p.firing),
                               "notified_at": p.notified_at.isoformat(), "repeats": p.repeats}
                           for d, p in st.paging.items()},
                "orphans_told": {d: snap.event_out(e) for d, e in st.orphans_told.items()},
                "refreshed_at": {c: t.isoformat() for c, t in st.refreshed_at.items()},
            }
        return {
            "version": snap.VERSION,
            "inbox": [[t.isoformat(), snap.event_out(e)] for t, e in self._inbox],
            "routes": routes,
            "held": [[r, c, [m.to_payload() for m in ms]] for (r, c), ms in self._held.items()],
            "sent": {c: [t.isoformat() for t in ts] for c, ts in self._sent.items() if ts},
        }

    def restore(self, data: dict[str, Any]) -> None:
        """The inverse of ``dump``; routes and channels no longer configured are dropped."""
        if data.get("version") != snap.VERSION:
            log.warning("notification state of an unknown version ignored")
            return
        for t, e in data["inbox"]:
            self._inbox.append((datetime.fromisoformat(t), snap.event_in(e)))
        for name, st in data["routes"].items():
            state = self._routes.get(name)
            if state is None:
                continue
            state.pending = {d: [snap.event_in(e) for e in evs]
                             for d, evs in st["pending"].items()}
            state.opened_at = snap.time_in(st["opened_at"])
            state.paging = {d: _Paging(snap.firing_in(p["firing"]),
                                       datetime.fromisoformat(p["notified_at"]), p["repeats"])
                            for d, p in st["paging"].items()}
            state.orphans_told = {d: snap.event_in(e) for d, e in st["orphans_told"].items()}
            state.refreshed_at = {c: datetime.fromisoformat(t)
                                  for c, t in st["refreshed_at"].items()}
        for route, channel, messages in data["held"]:
            if route in self._routes and channel in self._config.channels:
                self._held[(route, channel)] = [Message.from_payload(m) for m in messages]
        for channel, times in data["sent"].items():
            if channel in self._sent:
                self._sent[channel].extend(datetime.fromisoformat(t) for t in times)
        self._loaded = True

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
