"""Composition root: builds everything from the inventory and owns the daemon's lifecycle.

    Hall.start():  inventory -> store (resume open incidents) -> pipeline -> alert engine and
                   delivery -> scheduler -> maintenance refresher -> reload triggers -> web
    Hall.stop():   web, scheduler (in-flight probes cancelled), alerts, probes, store — in that
                   order, so nothing writes to a closed store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from monitor import simulate
from monitor.alerts import Delivery, Engine, build_channels, rate_limits, retry_policy
from monitor.checks import probe_call
from monitor.inventory import Inventory, ResolvedCheck, SnmpCheck, parse_schedule
from monitor.inventory.reload import InventoryHolder, ReloadOutcome
from monitor.metrics import (
    CachedRenderer,
    DeviceInfo,
    Snapshot,
    ValueSpec,
    device_rows,
)
from monitor.pipeline import Pipeline
from monitor.scheduler import ScheduledCheck, Scheduler
from monitor.store import Store, sqlite_url
from monitor.store.aio import AsyncStore
from monitor.tally import DeviceRef
from probes import close_all as close_all_probes
from probes import icmp as icmp_probe
from probes.result import ProbeResult

log = logging.getLogger("hallmon")

MAINTENANCE_REFRESH_SECONDS = 15.0
# Checks due within this step start together (Scheduler wake_grid): one wake-up and one ICMP
# batch per step instead of per check (10k devices at 30 s: ~120 checks per wake-up).
WAKE_GRID_SECONDS = 0.25


@dataclass
class Options:
    inventory: Path
    listen: str = "127.0.0.1:10025"
    storage_url: str | None = None
    state_dir: Path | None = None
    mock: bool = False
    tokens_file: Path | None = None
    open_reads: bool = True
    watch_interval: float = 5.0
    shard: tuple[int, int] | None = None  # (i, n): poll only devices hashed to shard i of n
    pace: float | None = None  # the demo: poll every check at least this often (seconds)


def default_storage_url(state_dir: Path | None) -> str:
    base = state_dir or Path(tempfile.gettempdir()) / "hallmon"
    base.mkdir(parents=True, exist_ok=True)
    return sqlite_url(base)


def in_shard(device_id: str, shard: tuple[int, int] | None) -> bool:
    """Stable across restarts and machines (not Python's salted hash)."""
    if shard is None:
        return True
    import hashlib

    i, n = shard
    digest = hashlib.sha256(device_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % n == i


def maintenance_from_inventory(inventory: Inventory, now: datetime) -> set[str]:
    """Devices inside a one-off or recurring window of the inventory at ``now``."""
    tz = inventory.site.tz
    local = now.astimezone(tz)
    out: set[str] = set()
    for device in inventory.devices:
        windows = [(w, True) for w in device.maintenance]
        windows += [
            (w, device.id in w.devices
             or device.class_ in w.classes
             or device.location.floor in w.floors)
            for w in inventory.maintenance
        ]
        for w, selected in windows:
            if not selected:
                continue
            if w.schedule is not None:
                active = any(span.contains(local) for span in parse_schedule(w.schedule))
            else:
                assert w.start is not None and w.end is not None
                start = w.start if w.start.tzinfo else w.start.replace(tzinfo=tz)
                end = w.end if w.end.tzinfo else w.end.replace(tzinfo=tz)
                active = start <= now < end
            if active:
                out.add(device.id)
                break
    return out


def _libc() -> Any:
    """glibc's functions, or None elsewhere (musl, macOS, Windows: the tuning below is skipped)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # the process' own symbols: libc's, without a library search
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError, TypeError):
        return None


def _fixed_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold after the first big free.

    By default glibc lifts the threshold to the size of any mmapped block once it is freed, so
    every later /metrics body (10k devices: ~12 MB) and the inventory loader's buffers land in
    the heap, which is rarely given back: measured (bench/memory.py) ~8 MB lower peak at
    start-up and ~15 MB lower RSS after scrapes with a fixed 128 KiB threshold.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def _trim_heap() -> None:
    """Give the freed heap back to the system: loading 10k devices builds ~1M transient YAML
    nodes and dicts; once they are collected glibc keeps ~9 MB of it resident otherwise."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def _settle_gc() -> None:
    """Move the long-lived objects (inventory, state, scheduler) out of the collector's sight.

    With Python's default thresholds the cyclic GC rescans them constantly and takes 30-40 % of
    the CPU at 10k devices (bench/core_overhead.py): freeze them and collect young objects less
    often. Called after start-up and after each reload.
    """
    gc.collect()
    _trim_heap()
    gc.set_threshold(50_000, 20, 10)
    gc.freeze()


class Hall:
    """The running daemon. Tests build one with a ManualClock-free configuration and call
    ``start``/``stop``; the CLI wraps it in ``serve``."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.holder = InventoryHolder(options.inventory)
        self.started_at = time.time()
        self.ready = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._seen: set[tuple[str, str]] = set()
        self._expected: set[tuple[str, str]] = set()  # checks of the first cycle (readiness)
        self.store: Store | None = None
        self.astore: AsyncStore | None = None
        self.pipeline: Pipeline
        self.scheduler: Scheduler
        self.engine: Engine | None = None
        self.delivery: Delivery | None = None
        self._http: httpx.AsyncClient | None = None
        self._labels: tuple[dict[str, DeviceInfo], dict[tuple[str, str], str],
                            dict[str, ValueSpec]] = ({}, {}, {})
        self._tickets: dict[str, dict[str, int]] = {"open": {}, "total": {}}
        self.renderer = CachedRenderer(self)

    @property
    def inventory(self) -> Inventory:
        return self.holder.current

    # -- building ------------------------------------------------------------------------------

    def scheduled_checks(self, inventory: Inventory) -> list[ScheduledCheck]:
        out = []
        for device in inventory.devices:
            if not in_shard(device.id, self.options.shard):
                continue
            for check in inventory.checks_for(device):
                call = probe_call(
                    inventory,
                    device,
                    check,
                    mock=self.options.mock,
                    mock_values=simulate.healthy_values(check),
                )
                out.append(
                    ScheduledCheck(
                        key=check.key,
                        device_id=device.id,
                        kind="mock" if self.options.mock else check.kind,
                        interval=self._pace(check.interval),
                        timeout=min(check.timeout, self._pace(check.interval) * 0.8),
                        call=call,
                        context=check,
                    )
                )
        return out

    def _pace(self, interval: float) -> float:
        return interval if self.options.pace is None else min(interval, self.options.pace)

    async def _on_result(
        self, sc: ScheduledCheck, result: ProbeResult, started: float, finished: float
    ) -> None:
        check: ResolvedCheck = sc.context
        await self.pipeline.handle(check, result)
        if not self.ready:
            self._seen.add(sc.key)
            # Not len(self.scheduler.checks): that property builds a dict of every check, and
            # once per result it made the first cycle O(N^2) (10k devices: checks ran 37 s late).
            if len(self._seen) >= len(self._expected):
                self.ready = True
                log.info("first cycle complete: ready")

    # -- metrics (read at scrape time, in the render thread) ---------------------------------

    @staticmethod
    def metric_labels(
        inventory: Inventory,
    ) -> tuple[dict[str, DeviceInfo], dict[tuple[str, str], str], dict[str, ValueSpec]]:
        """Per inventory (rebuilt on reload): device labels, check kinds, SNMP value specs."""
        info, kinds, specs = {}, {}, {}
        for d in inventory.devices:
            loc = d.location
            info[d.id] = DeviceInfo(
                d.class_, d.name, "" if loc.floor is None else str(loc.floor),
                loc.area or "", d.owner or "", d.parent or "",
            )
            for c in inventory.checks_for(d):
                kinds[c.key] = c.kind
                if isinstance(c.spec, SnmpCheck):
                    for name, oid in {**c.spec.oids, **c.spec.walks}.items():
                        specs[name] = ValueSpec(oid.type, oid.help)
                    for name in c.spec.ratios:
                        specs.setdefault(name, ValueSpec("gauge", ""))
        return info, kinds, specs

    def snapshot(self) -> Snapshot:
        info, kinds, specs = self._labels
        stats = self.scheduler.stats
        sent: dict[str, int] = {}
        failed: dict[str, int] = {}
        if self.delivery is not None:
            for name, st in self.delivery.stats.items():
                sent[name], failed[name] = st.attempts, st.failures
        return Snapshot(
            devices=device_rows(self.pipeline.state, info, kinds),
            value_specs=specs,
            tickets_open=self._tickets["open"],
            tickets_total=self._tickets["total"],
            tickets_resolved=self._tickets.get("resolved", {}),
            ticket_resolution_seconds=self._tickets.get("resolution_seconds", {}),
            notifications=sent,
            notification_failures=failed,
            poll_durations=dict(stats.durations),
            overdue_total=stats.overdue_total,
            probe_errors=dict(stats.probe_errors),
            reload_successful=self.holder.last_reload_successful,
            reload_success_timestamp=self.holder.last_reload_success_time,
        )

    async def render_metrics(self) -> bytes:
        return await self.renderer.render()

    def _caps(self, inventory: Inventory) -> dict[str, int]:
        return {str(kind): cap for kind, cap in inventory.polling.concurrency.items()}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        _fixed_mmap_threshold()
        inventory = self.holder.load()
        if not self.options.mock:
            icmp_probe.configure(
                backend=inventory.polling.icmp_backend,
                pacing_per_second=inventory.polling.icmp_pacing_per_second,
            )
        url = self.options.storage_url or default_storage_url(self.options.state_dir)
        self.store = Store(
            url, timezone=inventory.site.timezone, categories=inventory.tickets.categories
        )
        self.astore = AsyncStore(self.store)
        self.pipeline = Pipeline(
            inventory,
            store=self.astore,
            recheck=lambda dev: self.scheduler.request_recheck(dev),
            clock=time.time,
        )
        await self.pipeline.resume()
        self._start_alerts(inventory)
        if self.options.mock:
            simulate.install(inventory)
        self._labels = self.metric_labels(inventory)
        checks = self.scheduled_checks(inventory)
        # Collect before the scheduler's clock starts: the full collection holds the loop
        # (~0.4 s at 10k devices) and made the earliest-splayed first runs overdue.
        _settle_gc()
        self.scheduler = Scheduler(checks, self._on_result, caps=self._caps(inventory),
                                   wake_grid=WAKE_GRID_SECONDS)
        self._expected = set(self.scheduler.checks)
        self.scheduler.start()
        gc.freeze()  # the scheduler's slots and tasks join the frozen objects (no collection)
        self.holder.subscribe(self._apply_inventory)
        self._spawn(self._refresh_maintenance())
        self._spawn(self.holder.watch(self.options.watch_interval))
        loop = asyncio.get_running_loop()
        self.holder.bind_loop(loop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self.holder.install_sighup(loop)
        log.info(
            "polling %d checks of %d devices (%s probes)",
            len(self.scheduler.checks),
            len(inventory.devices),
            "mock" if self.options.mock else "live",
        )

    def _start_alerts(self, inventory: Inventory) -> None:
        assert self.store is not None
        cfg = inventory.notifications
        if not cfg.channels:
            return
        self._http = httpx.AsyncClient()
        now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731
        self.delivery = Delivery(
            self.store,
            build_channels(cfg),
            self._http,
            now,
            policy=retry_policy(cfg),
            poll_interval=cfg.delivery.poll_interval,
            rate_limits=rate_limits(cfg),
        )
        self.engine = Engine(
            cfg, self.store, now, tz=inventory.site.tz, on_enqueued=self.delivery.wake
        )
        self.engine.resume(self.pipeline.resumed_events(), now())
        self.pipeline.alerts = self.engine
        self._spawn(self.engine.run())
        self._spawn(self.delivery.run())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def _apply_inventory(self, inventory: Inventory) -> None:
        """A good reload: swap the state's devices and the scheduler's checks."""
        self._labels = self.metric_labels(inventory)
        self.pipeline.use(inventory)
        if self.options.mock:
            simulate.install(inventory)
        self.scheduler.replace(self.scheduled_checks(inventory))
        if not self.ready:
            self._expected = set(self.scheduler.checks)
            self._seen &= self._expected
        self.renderer = CachedRenderer(self)  # removed devices vanish from the next scrape
        _settle_gc()
        log.info("inventory reloaded: %d devices", len(inventory.devices))

    async def reload(self) -> ReloadOutcome:
        outcome = await self.holder.areload()
        # A fresh render, so the scrape after `/-/reload` agrees with its answer (the cached
        # body may predate it by up to a second).
        self.renderer = CachedRenderer(self)
        return outcome

    def report_devices(self) -> list[DeviceRef]:
        """The inventory's devices for availability in reports (devices that never failed
        count too)."""
        return [
            DeviceRef(d.id, d.class_, None if d.location.floor is None else str(d.location.floor))
            for d in self.inventory.devices
        ]

    def recheck(self, device_id: str) -> bool:
        try:
            self.scheduler.request_recheck(device_id)
        except KeyError:
            return False
        return True

    async def refresh_maintenance(self, now: datetime | None = None) -> set[str]:
        """Put exactly these devices in maintenance: inside an inventory window, inside an API
        window, or with a ticket in progress. Returns them."""
        assert self.astore is not None
        now = now or datetime.now(UTC)
        devices = maintenance_from_inventory(self.inventory, now)
        devices |= await self.astore.devices_in_progress()
        for w in await self.astore.active_windows(now):
            devices |= self._selected(w.selector, w.value)
        await self.pipeline.set_maintenance(devices)
        self._tickets = await self.astore.ticket_counts()
        return devices

    async def _refresh_maintenance(self) -> None:
        while True:
            try:
                await self.refresh_maintenance()
            except Exception:  # keep refreshing; one bad cycle must not end maintenance
                log.exception("maintenance refresh failed")
            await asyncio.sleep(MAINTENANCE_REFRESH_SECONDS)

    def _selected(self, selector: str, value: str) -> set[str]:
        devices = self.inventory.devices
        if selector == "device":
            return {d.id for d in devices if d.id == value}
        if selector == "class":
            return {d.id for d in devices if d.class_ == value}
        if selector == "floor":
            return {d.id for d in devices if str(d.location.floor) == value}
        return set()

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            self.holder.uninstall_sighup(asyncio.get_running_loop())
        if hasattr(self, "scheduler"):
            await self.scheduler.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()
        with contextlib.suppress(Exception):
            await close_all_probes()
        if self.astore is not None:
            await self.astore.aclose()
        log.info("stopped")
