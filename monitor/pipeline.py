"""The whole flow of one probe result, in one place.

    result -> conditions (classes.evaluate) -> state (HallState.apply, pure)
           -> incidents (store) -> notifications (alert engine) -> tickets (store, per policy)

The pipeline is the single writer of the hall state. It never blocks the event loop: the store is
an AsyncStore (one writer thread) and the alert engine's ``submit`` only queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from monitor.alerts.base import AlertEvent
from monitor.alerts.base import Location as AlertLocation
from monitor.conditions import evaluate
from monitor.inventory import Device, Inventory, ResolvedCheck
from monitor.inventory.index import DeviceIndex
from monitor.state import (
    CheckPolicy,
    CheckStatus,
    DeviceSpec,
    DeviceStatus,
    DeviceTransition,
    HallState,
    Transition,
    restored,
)
from monitor.store.aio import AsyncStore
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
        specs.append(
            DeviceSpec(id=device.id, parent=device.parent, reachability=reach, checks=policies)
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
        self.results_total = 0
        self.transitions_total = 0
        self._devices: dict[str, Device] = {d.id: d for d in inventory.devices}
        self.index = DeviceIndex(inventory)  # the API's look-ups (O(result) routes)
        self._ticket_tasks: dict[str, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def resume(self) -> int:
        """After a restart: devices resume their last known status from the open incidents,
        so a device still down produces no second "down". Returns the number resumed."""
        if self.store is None:
            return 0
        states = {}
        for inc in await self.store.open_incidents():
            if inc.device_id not in self._devices or inc.check is None:
                continue
            key = (inc.device_id, inc.check)
            if key not in self.state.checks:
                continue
            since = inc.started_at.timestamp()
            states[key] = restored(CheckStatus.DOWN, since, self.state.policy(key))
            self.incidents[inc.device_id] = OpenIncident(
                inc.id, DeviceStatus(inc.status), inc.check, since
            )
        self.state.restore(states, self.state.maintenance, self.clock())
        log.info("resumed %d open incidents from the store", len(self.incidents))
        return len(self.incidents)

    def resumed_events(self) -> list[AlertEvent]:
        """The open incidents as the alert engine's events (see Engine.resume)."""
        out = []
        for dev, inc in self.incidents.items():
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
        pending = self._ticket_tasks.pop(device.id, None)  # no delayed ticket for it either
        if pending is not None:
            pending.cancel()
        if self.store is not None:
            task = asyncio.get_running_loop().create_task(
                self.store.close_incident(inc.id, _utc(now))
            )
            self._closing.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._closing.discard)

    # -- the flow ----------------------------------------------------------------------------

    async def handle(self, check: ResolvedCheck, result: ProbeResult) -> None:
        """Apply one probe result (the scheduler's ``on_result``)."""
        if check.device_id not in self._devices:
            return  # a result for a device removed by a reload while it was polled
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
            closed = await self._incident(t, check)
            self._alert(t)
            await self._ticket(t, closed)

    async def _incident(
        self, t: DeviceTransition, check: ResolvedCheck | None
    ) -> OpenIncident | None:
        """Close the incident the device left, open the one it entered; return the closed."""
        old = self.incidents.get(t.device)
        if old is not None and old.status is not t.to:
            del self.incidents[t.device]
            if self.store is not None:
                await self.store.close_incident(old.id, _utc(t.at))
        else:
            old = None
        if t.to in INCIDENT_STATUSES and t.device not in self.incidents:
            cause_check = self._cause_check(t, check)
            inc_id = 0
            if self.store is not None:
                inc_id = await self.store.open_incident(
                    t.device, cause_check, t.to.value, t.cause, _utc(t.at)
                )
            self.incidents[t.device] = OpenIncident(inc_id, t.to, cause_check, t.at)
        return old

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
            incident_id=inc.id if inc else None,
            severity="critical" if status == "down" else "warning",
        )

    # -- tickets -----------------------------------------------------------------------------

    @staticmethod
    def _ticket_key(device: str, inc: OpenIncident) -> str:
        # Unique per incident: two pollers sharing one database never open two tickets.
        return f"incident:{inc.id}" if inc.id else f"{device}:{inc.started_at:.0f}"

    async def _ticket(self, t: DeviceTransition, closed: OpenIncident | None) -> None:
        if self.store is None:
            return
        device = self._devices[t.device]
        if closed is not None and t.to is DeviceStatus.UP:
            pending = self._ticket_tasks.pop(t.device, None)
            if pending is not None:
                pending.cancel()
            await self._resolve_ticket(device, t, closed)
            return
        if t.to not in (DeviceStatus.DOWN, DeviceStatus.DEGRADED):
            return
        inc = self.incidents.get(t.device)
        if inc is None:
            return
        for rule in self.inventory.tickets.auto:
            if rule.classes and device.class_ not in rule.classes:
                continue
            if t.to.value not in rule.when:
                continue
            key = self._ticket_key(t.device, inc)
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
                incident_id=inc.id or None,
                incident_key=key,
            )
            task = asyncio.get_running_loop().create_task(
                self._open_ticket_later(t.device, t.to, float(rule.delay), key, new)
            )
            self._ticket_tasks[t.device] = task
            return

    async def _open_ticket_later(
        self, device: str, status: DeviceStatus, delay: float, key: str, new: NewTicket
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self.state.status(device) is not status or self.store is None:
            return
        ticket, created = await self.store.auto_ticket(key, new)
        if created:
            log.info("ticket #%d opened for %s (%s)", ticket.id, device, key)
        self._ticket_tasks.pop(device, None)

    async def _resolve_ticket(
        self, device: Device, t: DeviceTransition, closed: OpenIncident
    ) -> None:
        assert self.store is not None
        minutes = (t.at - closed.started_at) / 60
        ticket = await self.store.resolve_auto_ticket(
            self._ticket_key(device.id, closed),
            f"设备已自动恢复，故障持续 {minutes:.1f} 分钟 / recovered after {minutes:.1f} min",
        )
        if ticket is not None:
            log.info("ticket #%d auto-resolved for %s", ticket.id, device.id)


_STATUS_ZH = {
    DeviceStatus.DOWN: "故障",
    DeviceStatus.DEGRADED: "降级",
    DeviceStatus.UNREACHABLE: "不可达",
    DeviceStatus.MAINTENANCE: "维护中",
    DeviceStatus.UP: "正常",
    DeviceStatus.UNKNOWN: "未知",
}
