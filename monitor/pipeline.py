"""The whole flow of one probe result, in one place.

    result -> conditions (conditions.evaluate) -> state (HallState.apply, pure)
           -> incidents (store) -> notifications (alert engine) -> tickets (store, per policy)

The pipeline is the single writer of the hall state. It never blocks the event loop: the store is
an AsyncStore (one writer thread) and the alert engine's ``submit`` only queues. Its incident and
ticket writes go through the store's write queue (``AsyncStore.queue``): an alert never waits
for them and never depends on them succeeding; they land in order, retried while the database
is locked (a long import) or away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from monitor.alerts.base import AlertEvent
from monitor.alerts.base import Location as AlertLocation
from monitor.conditions import evaluate
from monitor.inventory import Device, Inventory, ResolvedCheck
from monitor.inventory.index import DeviceIndex
from monitor.state import (
    CheckPolicy,
    CheckState,
    CheckStatus,
    DeviceSpec,
    DeviceStatus,
    DeviceTransition,
    HallState,
    Transition,
    restored,
)
from monitor.store.aio import AsyncStore
from monitor.store.coalesce import Coalesced
from monitor.store.device_status import KnownStatus
from monitor.store.models import NewTicket
from probes.result import ProbeResult

log = logging.getLogger("hallmon.pipeline")

# Device statuses that are an incident while they last.
INCIDENT_STATUSES = frozenset(
    {DeviceStatus.DOWN, DeviceStatus.DEGRADED, DeviceStatus.UNREACHABLE}
)


class AlertSink(Protocol):
    def submit(self, event: AlertEvent) -> None: ...


def device_specs(inventory: Inventory) -> list[DeviceSpec]:
    """What the state layer needs: each device's checks with their soft/hard policies."""
    d = inventory.defaults
    # Devices of one class mostly carry the same policies: one shared (read-only) mapping per
    # distinct set, not a dict and policies per device (10k devices: ~1.75 MB).
    shared: dict[tuple[tuple[str, int, int], ...], dict[str, CheckPolicy]] = {}
    # The same for the name sets: an empty frozenset built from a generator is a new 216-byte
    # object each time (two per device: ~4 MB at 10k devices).
    names: dict[frozenset[str], frozenset[str]] = {}
    specs = []
    for device in inventory.devices:
        checks = inventory.checks_for(device)
        reach = next((c.name for c in checks if c.role == "reachability"), checks[0].name)
        key = tuple((c.name, c.failure_threshold, c.success_threshold) for c in checks)
        policies = shared.get(key)
        if policies is None:
            policies = shared[key] = {
                c.name: CheckPolicy(
                    failure_threshold=c.failure_threshold,
                    success_threshold=c.success_threshold,
                    flap_high=d.flap_high_percent,
                    flap_low=d.flap_low_percent,
                )
                for c in checks
            }
        down = frozenset(c.name for c in checks if getattr(c.spec, "marks", None) == "down")
        held = frozenset(c.name for c in checks if c.kind == "trap")
        down, held = names.setdefault(down, down), names.setdefault(held, held)
        specs.append(
            DeviceSpec(id=device.id, parent=device.parent, reachability=reach, checks=policies,
                       down_checks=down, held_checks=held)
        )
    return specs


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class OpenIncident:
    id: int
    status: DeviceStatus
    check: str | None
    started_at: float


def ticket_key(device: str, inc: OpenIncident) -> str:
    # Unique per incident: two pollers sharing one database never open two tickets.
    return f"incident:{inc.id}" if inc.id else f"{device}:{inc.started_at:.0f}"


@dataclass(frozen=True, slots=True)
class Outage:
    """One device's time away from UP, across every status it passes (down -> degraded ->
    unreachable ...): its automatic ticket is keyed by the first incident and resolved only when
    the device is UP again, not when the incident it was opened for gives way to the next."""

    first: OpenIncident  # the outage's first incident: its ticket is keyed by it
    started_at: float
    auto_resolve: bool = True  # the ticket rule's ``auto_resolve``: False leaves it to people
    known_key: str | None = None  # after a restart: the open ticket's own key

    def ticket_key(self, device: str) -> str:
        """Read on the store thread, after the first incident's queued write gave it its id."""
        return self.known_key or ticket_key(device, self.first)


class Pipeline:
    """Applies results; records incidents; submits alerts; opens and resolves tickets."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        store: AsyncStore | None = None,
        alerts: AlertSink | None = None,
        recheck: Callable[[str], None] = lambda device: None,
        clock: Callable[[], float],
    ) -> None:
        self.inventory = inventory
        self.state = HallState(device_specs(inventory))
        self.store = store
        self.alerts = alerts
        self.recheck = recheck
        self.clock = clock
        self.incidents: dict[str, OpenIncident] = {}
        self.outages: dict[str, Outage] = {}
        self.results_total = 0
        self.transitions_total = 0
        self._devices: dict[str, Device] = {d.id: d for d in inventory.devices}
        self.index = DeviceIndex(inventory)  # the API's look-ups (O(result) routes)
        self._ticket_tasks: dict[str, asyncio.Task[None]] = {}
        # The devices this poller owns when pollers share the site (None: all; issue 17).
        self.owned: set[str] | None = None
        # Pollers sharing the site (issue 17): this one's name, who polls each device, and the
        # others' devices as the store knows them (refreshed by the daemon, see status_of).
        self.poller_id = ""
        self.owners: Mapping[str, str] = {}
        self.peers: Mapping[str, KnownStatus] = {}
        # Status changes to record, by device: one queued write records them all (_record).
        self._changes: Coalesced[str, tuple[str, str, datetime]] | None = (
            None if store is None else Coalesced(store, self._record_changes))

    # -- lifecycle ---------------------------------------------------------------------------

    async def resume(self, devices: Iterable[str] | None = None,
                     held: Mapping[tuple[str, str], tuple[str, float]] | None = None) -> int:
        """After a restart: devices resume their last known status from the open incidents,
        so a device still down produces no second "down". Returns the number resumed.

        ``devices``: only these (a poller sharing the site resumes the devices it owns, at
        start and when it takes devices over; issue 17). ``held``: the trap checks that held
        conditions still fail, (device, check) -> (error, since) (TrapReceiver.resume): they
        resume DOWN as well, so a device whose link a trap reported down stays down when its
        ping answers after the restart (its incident was opened for the ping)."""
        if self.store is None:
            return 0
        only = None if devices is None else set(devices)
        before = len(self.incidents)
        states: dict[tuple[str, str], CheckState] = {}
        unticketed: list[str] = []
        tickets = await self.store.open_auto_tickets()
        for inc in await self.store.open_incidents():
            if inc.device_id not in self._devices or inc.check is None:
                continue
            if only is not None and inc.device_id not in only:
                continue
            key = (inc.device_id, inc.check)
            if key not in self.state.checks:
                continue
            since = inc.started_at.timestamp()
            reach = self.state.devices[inc.device_id].reachability
            cause = inc.cause
            if inc.check != reach:  # degraded: the device's "rtsp: refused" is rtsp's "refused"
                cause = cause.removeprefix(f"{inc.check}: ")
                # It was reachable: resume it DEGRADED now (and since then), not "unknown" until
                # its first ping.
                states.setdefault((inc.device_id, reach), restored(
                    CheckStatus.UP, since, self.state.policy((inc.device_id, reach))))
            states[key] = restored(CheckStatus.DOWN, since, self.state.policy(key), cause)
            opened = self.incidents[inc.device_id] = OpenIncident(
                inc.id, DeviceStatus(inc.status), inc.check, since
            )
            # The outage goes on: its ticket (opened for an earlier incident of it, maybe) is
            # the one to resolve when the device is back.
            if inc.device_id not in tickets:
                unticketed.append(inc.device_id)
            known, ticket_since = tickets.get(
                inc.device_id, (ticket_key(inc.device_id, opened), since))
            self.outages[inc.device_id] = Outage(opened, min(since, ticket_since),
                                                 self._auto_resolve(inc.device_id), known)
        for key, (error, since) in (held or {}).items():
            if key in self.state.checks and (only is None or key[0] in only):
                states[key] = restored(CheckStatus.DOWN, since, self.state.policy(key), error)
        self.state.restore(states, self.state.maintenance, self.clock())
        for dev in unticketed:
            # Its automatic ticket was still waiting for the rule's delay when the poller that
            # watched it stopped or handed it over: open it here, when the delay is over.
            status = self.state.status(dev)
            await self._ticket(DeviceTransition(dev, DeviceStatus.UNKNOWN, status,
                                                self.outages[dev].started_at,
                                                self.state.statuses[dev][1], notify=False))
        resumed = len(self.incidents) - before
        log.info("resumed %d open incidents from the store", resumed)
        return resumed

    def release(self, devices: Iterable[str]) -> None:
        """Another poller owns these devices now (issue 17): forget them without resolving or
        closing anything; their new owner resumes their open incidents and tickets. The alert
        engine stops paging about them without a recovery notice (status "unknown")."""
        now = self.clock()
        states: dict[tuple[str, str], CheckState] = {}
        gone = set(devices) & set(self._devices)
        for dev in gone:
            inc = self.incidents.pop(dev, None)
            if inc is not None:
                self._submit(self._devices[dev], "unknown", inc.status.value, now,
                             "handed over to another poller")
            self.outages.pop(dev, None)
            pending = self._ticket_tasks.pop(dev, None)
            if pending is not None:
                pending.cancel()
            for name in self.state.devices[dev].checks:
                states[(dev, name)] = CheckState()
        self.state.pending -= gone
        self.state.restore(states, self.state.maintenance - gone, now)

    def resumed_events(self, devices: Iterable[str] | None = None) -> list[AlertEvent]:
        """The open incidents as the alert engine's events (see Engine.resume)."""
        only = None if devices is None else set(devices)
        out = []
        for dev, inc in self.incidents.items():
            if only is not None and dev not in only:
                continue
            device = self._devices.get(dev)
            if device is not None:
                out.append(self._event(device, inc.status.value, "up", inc.started_at,
                                       self.state.statuses[dev][1]))
        return out

    def use(self, inventory: Inventory) -> None:
        """A reload: keep the states of unchanged checks; removed devices vanish."""
        old = self._devices
        self.inventory = inventory
        self._devices = {d.id: d for d in inventory.devices}
        self.index = DeviceIndex(inventory)
        now = self.clock()
        moved = self.state.replace(device_specs(inventory), now)
        for dev in list(self.incidents):
            if dev not in self._devices:
                self._removed(old[dev], self.incidents.pop(dev), now)
        self._spawn_effects(moved, None)

    def _removed(self, device: Device, inc: OpenIncident, now: float) -> None:
        """A device removed while in an incident: the incident ends now (else it stays open in
        the store for ever) and the alert engine stops paging about it. Status 'unknown' ends
        the engine's paging without a recovery notice: nobody saw it recover."""
        self._submit(device, "unknown", inc.status.value, now, "removed from the inventory")
        self.outages.pop(device.id, None)
        pending = self._ticket_tasks.pop(device.id, None)  # no delayed ticket for it either
        if pending is not None:
            pending.cancel()
        if self.store is not None:
            self.store.queue(self._close_incident, inc, _utc(now))

    # -- the flow ----------------------------------------------------------------------------

    async def handle(self, check: ResolvedCheck, result: ProbeResult) -> None:
        """Apply one probe result (the scheduler's ``on_result``)."""
        if check.device_id not in self._devices:
            return  # a result for a device removed by a reload while it was polled
        if self.owned is not None and check.device_id not in self.owned:
            return  # ... or handed over to another poller meanwhile (issue 17)
        result = evaluate(check, result)
        now = self.clock()
        update = self.state.apply(
            check.device_id, check.name, result.ok, result.error, now, result.values
        )
        self.results_total += 1
        for dev in update.recheck:
            self.recheck(dev)
        if not result.ok and check.role == "reachability":
            # Is it the device or the path to it? Ask the parent now rather than in 30 s.
            parent = self._devices[check.device_id].parent
            if parent is not None and parent in self._devices:
                self.recheck(parent)
        if update.check is not None or update.devices:
            await self._effects(update.devices, check, update.check)

    async def set_maintenance(self, devices: Iterable[str]) -> None:
        """Make exactly ``devices`` be in maintenance (windows and in-progress tickets)."""
        wanted = set(devices) & set(self._devices)
        if self.owned is not None:  # another poller's devices are its business (issue 17)
            wanted &= self.owned
        now = self.clock()
        moved: list[DeviceTransition] = []
        for dev in sorted(wanted ^ self.state.maintenance):
            moved.extend(self.state.set_maintenance(dev, dev in wanted, now))
        if moved:
            await self._effects(tuple(moved), None, None)

    def _spawn_effects(self, moved: tuple[DeviceTransition, ...], check: Transition | None) -> None:
        if moved:
            asyncio.get_running_loop().create_task(self._effects(moved, None, check))

    async def _effects(
        self,
        moved: tuple[DeviceTransition, ...],
        check: ResolvedCheck | None,
        transition: Transition | None,
    ) -> None:
        if transition is not None and check is not None:
            if transition.flap_started or transition.flap_stopped:
                await self._flapping(check, transition)
        for t in moved:
            self.transitions_total += 1
            # The first UP of every device at start-up is noise; real changes are news.
            first_up = t.from_ is DeviceStatus.UNKNOWN and t.to is DeviceStatus.UP
            level = logging.DEBUG if first_up else logging.INFO
            log.log(level, "device %s: %s -> %s (%s)", t.device, t.from_.value, t.to.value,
                    t.cause)
            await self._incident(t, check)
            self._record(t)
            self._alert(t)
            await self._ticket(t)

    async def _incident(
        self, t: DeviceTransition, check: ResolvedCheck | None
    ) -> OpenIncident | None:
        """Close the incident the device left, open the one it entered; return the closed.
        The writes are queued (see the module's doc): the state and the alert go on at once."""
        old = self.incidents.get(t.device)
        if old is not None and old.status is not t.to:
            del self.incidents[t.device]
            if self.store is not None:
                self.store.queue(self._close_incident, old, _utc(t.at))
        else:
            old = None
        if t.to in INCIDENT_STATUSES and t.device not in self.incidents:
            cause_check = self._cause_check(t, check)
            inc = self.incidents[t.device] = OpenIncident(0, t.to, cause_check, t.at)
            if self.store is not None:
                self.store.queue(self._open_incident, t.device, inc, t.cause)
            if t.device not in self.outages:
                self.outages[t.device] = Outage(inc, t.at)
        return old

    def _record(self, t: DeviceTransition) -> None:
        """Pollers sharing the site: the new status goes to the store for the others to show.
        Changes pile up and one queued write records them all (its device's latest)."""
        if self._changes is not None and self.owned is not None:
            self._changes.put(t.device, (t.to.value, t.cause, _utc(t.at)))

    def _record_changes(self, changes: dict[str, tuple[str, str, datetime]]) -> None:
        assert self.store is not None
        self.store.store.record_statuses(self.poller_id, [(d, *v) for d, v in changes.items()])

    def status_of(self, device: str) -> tuple[DeviceStatus, str, float | None]:
        """(status, cause, since) of a device: this poller's state for its own devices; for
        another poller's, what the store knows (its open incident, else the status its poller
        last recorded), as of the daemon's last refresh."""
        if self.owned is None or device in self.owned:
            st, cause = self.state.statuses.get(device, (DeviceStatus.UNKNOWN, "not yet polled"))
            return st, cause, self.state.since.get(device)
        known = self.peers.get(device)
        if known is None:
            owner = self.owners.get(device)
            return (DeviceStatus.UNKNOWN,
                    f"polled by {owner}, no status recorded yet" if owner else "not yet polled",
                    None)
        return DeviceStatus(known.status), known.cause, known.since.timestamp()

    # Run on the store thread, in the order queued: an incident's id is known to every write
    # queued after its opening (its close, its ticket).
    def _open_incident(self, device: str, inc: OpenIncident, cause: str) -> None:
        assert self.store is not None
        store = self.store.store
        inc.id = store.open_incident(device, inc.check, inc.status.value, cause,
                                     _utc(inc.started_at))
        # In a group commit rolled back, that id was never committed: 0 again until retried.
        store.on_rollback(lambda: setattr(inc, "id", 0))

    def _close_incident(self, inc: OpenIncident, at: datetime) -> None:
        assert self.store is not None
        if inc.id:
            self.store.store.close_incident(inc.id, at)

    def _cause_check(self, t: DeviceTransition, check: ResolvedCheck | None) -> str | None:
        """The check whose failure explains the status (restored as DOWN after a restart)."""
        spec = self.state.devices[t.device]
        if t.to is DeviceStatus.DEGRADED:
            failing = [
                name
                for name in spec.checks
                if name != spec.reachability
                and self.state.checks[(t.device, name)].hard is CheckStatus.DOWN
            ]
            return failing[0] if failing else (check.name if check else None)
        return spec.reachability

    async def _flapping(self, check: ResolvedCheck, t: Transition) -> None:
        device = self._devices[check.device_id]
        log.info("check %s/%s: %s", check.device_id, check.name, t.cause)
        status = "flapping" if t.flap_started else self.state.status(device.id).value
        self._submit(device, status, "flapping" if t.flap_stopped else "up", t.at, t.cause)

    def _alert(self, t: DeviceTransition) -> None:
        # Silent moves still go to the engine when they explain a group (unreachable children).
        if not t.notify and t.to is not DeviceStatus.UNREACHABLE:
            return
        if t.from_ is DeviceStatus.UNKNOWN and t.to is DeviceStatus.UP:
            return
        self._submit(self._devices[t.device], t.to.value, t.from_.value, t.at, t.cause)

    def _submit(self, device: Device, status: str, previous: str, at: float, cause: str) -> None:
        if self.alerts is not None:
            self.alerts.submit(self._event(device, status, previous, at, cause))

    def _event(
        self, device: Device, status: str, previous: str, at: float, cause: str
    ) -> AlertEvent:
        inc = self.incidents.get(device.id)
        loc = device.location
        return AlertEvent(
            device_id=device.id,
            name=device.name,
            device_class=device.class_,
            status=status,  # type: ignore[arg-type]
            previous=previous,  # type: ignore[arg-type]
            since=_utc(at),
            cause=cause,
            location=AlertLocation(
                loc.floor, loc.area, None if loc.window is None else str(loc.window)
            ),
            owner=device.owner,
            parent=device.parent,
            incident_id=(inc.id or None) if inc else None,
            severity="critical" if status == "down" else "warning",
            opened_at=_utc(inc.started_at) if inc else None,
        )

    # -- tickets -----------------------------------------------------------------------------

    async def _ticket(self, t: DeviceTransition) -> None:
        if self.store is None:
            return
        device = self._devices[t.device]
        if t.to is DeviceStatus.UP:
            outage = self.outages.pop(t.device, None)
            pending = self._ticket_tasks.pop(t.device, None)
            if pending is not None:
                pending.cancel()
            if outage is not None and outage.auto_resolve:
                await self._resolve_ticket(device, t, outage)
            return
        if t.to not in (DeviceStatus.DOWN, DeviceStatus.DEGRADED):
            return
        inc = self.incidents.get(t.device)
        outage = self.outages.get(t.device)
        if inc is None or outage is None:
            return
        for rule in self.inventory.tickets.auto:
            if rule.classes and device.class_ not in rule.classes:
                continue
            if t.to.value not in rule.when:
                continue
            self.outages[t.device] = outage = dataclasses.replace(
                outage, auto_resolve=rule.auto_resolve)
            new = NewTicket(
                category=rule.category,
                summary=f"{device.name}（{device.id}）{_STATUS_ZH[t.to]}：{t.cause}",
                reporter="hallmon",
                device_id=device.id,
                device_class=device.class_,
                floor=None if device.location.floor is None else str(device.location.floor),
                owner=device.owner,
                assignee=rule.assignee,
                source="auto",
            )
            # Counted from the status change: a poller taking the device over (or restarted)
            # waits only for what is left of the delay.
            delay = max(0.0, t.at + float(rule.delay) - self.clock())
            task = asyncio.get_running_loop().create_task(
                self._open_ticket_later(t.device, t.to, delay, inc, outage, new)
            )
            self._ticket_tasks[t.device] = task
            return

    def _auto_resolve(self, device_id: str) -> bool:
        """After a restart: the ``auto_resolve`` of the rule that would ticket this device."""
        cls = self._devices[device_id].class_
        rules = self.inventory.tickets.auto
        return next((r.auto_resolve for r in rules if not r.classes or cls in r.classes), True)

    async def _open_ticket_later(
        self, device: str, status: DeviceStatus, delay: float, inc: OpenIncident,
        outage: Outage, new: NewTicket,
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        self._ticket_tasks.pop(device, None)
        if self.state.status(device) is not status or self.store is None:
            return
        self.store.queue(self._auto_ticket, device, inc, outage, new)

    def _auto_ticket(self, device: str, inc: OpenIncident, outage: Outage,
                     new: NewTicket) -> None:
        """On the store thread, after the incidents' own writes (their ids are known): one
        ticket per outage, whatever status it passes."""
        assert self.store is not None
        key = outage.ticket_key(device)
        ticket, created = self.store.store.auto_ticket(
            key, replace(new, incident_id=inc.id or None, incident_key=key))
        if created:
            log.info("ticket #%d opened for %s (%s)", ticket.id, device, key)

    async def _resolve_ticket(self, device: Device, t: DeviceTransition, outage: Outage) -> None:
        assert self.store is not None
        minutes = (t.at - outage.started_at) / 60
        resolution = (f"设备已自动恢复，故障持续 {minutes:.1f} 分钟 / "
                      f"recovered after {minutes:.1f} min")
        self.store.queue(self._resolve_auto_ticket, device.id, outage, resolution)

    def _resolve_auto_ticket(self, device: str, outage: Outage, resolution: str) -> None:
        assert self.store is not None
        ticket = self.store.store.resolve_auto_ticket(outage.ticket_key(device), resolution)
        if ticket is not None:
            log.info("ticket #%d auto-resolved for %s", ticket.id, device)


_STATUS_ZH = {
    DeviceStatus.DOWN: "故障",
    DeviceStatus.DEGRADED: "降级",
    DeviceStatus.UNREACHABLE: "不可达",
    DeviceStatus.MAINTENANCE: "维护中",
    DeviceStatus.UP: "正常",
    DeviceStatus.UNKNOWN: "未知",
}
