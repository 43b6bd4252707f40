"""Composition root: builds everything from the inventory and owns the daemon's lifecycle.

    Hall.start():  inventory -> store (resume open incidents) -> pipeline -> alert engine and
                   delivery -> scheduler -> maintenance refresher -> reload triggers -> web
    Hall.stop():   web, scheduler (in-flight probes cancelled), alerts, probes, store — in that
                   order, so nothing writes to a closed store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from monitor import simulate
from monitor.alerts import Delivery, Engine, build_channels, rate_limits, retry_policy
from monitor.checks import probe_call
from monitor.ha import DEFAULT_HEARTBEAT, DEFAULT_LEASE, Lease, assignment, default_poller_id
from monitor.inventory import Inventory, ResolvedCheck, SnmpCheck
from monitor.inventory.reload import InventoryHolder, ReloadOutcome
from monitor.inventory.windows import active_window
from monitor.metrics import (
    CachedRenderer,
    DeviceInfo,
    PollerRow,
    Snapshot,
    ValueSpec,
    device_rows,
)
from monitor.pipeline import Pipeline
from monitor.push import Heartbeats
from monitor.receiver import TrapReceiver, passive
from monitor.relay import BeatRelay, TrapRelay
from monitor.report_delivery import ReportSender
from monitor.reports import Hall as ReportHall
from monitor.scheduler import ScheduledCheck, Scheduler
from monitor.store import Store, sqlite_url
from monitor.store.aio import AsyncStore
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
    local_trust: bool = True  # without tokens: operations from 127.0.0.1/::1 are trusted
    watch_interval: float = 5.0
    shard: tuple[int, int] | None = None  # (i, n): poll only devices hashed to shard i of n
    # Pollers sharing one PostgreSQL share the devices through leases (monitor/ha.py, issue 17).
    # None: on for PostgreSQL without --shard (a pinned shard is static), off for SQLite.
    ha: bool | None = None
    ha_lease: float = DEFAULT_LEASE
    ha_heartbeat: float = DEFAULT_HEARTBEAT
    poller_id: str | None = None
    pace: float | None = None  # the demo: poll every check at least this often (seconds)
    traps_listen: tuple[str, int] | None = None  # the trap receiver's UDP address (None: off)


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
    return {d.id for d in inventory.devices if active_window(inventory, d, now) is not None}


@functools.cache
def _libc() -> Any:
    """glibc's functions, or None elsewhere (musl, macOS, Windows: the tuning below is skipped).
    Loaded once: a CDLL per call (each reload) kept a handle and its function cache each time."""
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
    often. Called after start-up and after each reload (once the tasks the reload cancelled have
    finished). Unfreezes first: what was frozen and has since become cyclic garbage (the old
    inventory, finished tasks) is collected instead of pinned.
    """
    gc.unfreeze()
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
        self._settling: asyncio.Task[None] | None = None
        self._cancelled: list[asyncio.Task[Any]] = []  # by reloads, awaited before collecting
        self._stopping = asyncio.Event()
        self._seen: set[tuple[str, str]] = set()
        self._expected: set[tuple[str, str]] = set()  # checks of the first cycle (readiness)
        self.store: Store | None = None
        self.astore: AsyncStore | None = None
        self.pipeline: Pipeline
        self.scheduler: Scheduler
        self.engine: Engine | None = None
        self.delivery: Delivery | None = None
        self.reports: ReportSender | None = None
        self.traps: TrapReceiver | None = None  # inputs beside polling (docs/architecture.md)
        self.heartbeats: Heartbeats | None = None
        self._http: httpx.AsyncClient | None = None
        self._labels: tuple[dict[str, DeviceInfo], dict[tuple[str, str], str],
                            dict[str, ValueSpec]] = ({}, {}, {})
        self._tickets: dict[str, dict[str, int]] = {"open": {}, "total": {}}
        self.renderer = CachedRenderer(self)
        self.lease: Lease | None = None  # pollers sharing the site (issue 17)
        self.owned: set[str] | None = None  # the devices this poller polls (None: all)
        self.poller_id = options.poller_id or default_poller_id(options.listen)
        self._owners_cache: tuple[object, dict[str, int]] = (None, {})
        self._rebalancing = asyncio.Lock()

    @property
    def inventory(self) -> Inventory:
        return self.holder.current

    # -- building ------------------------------------------------------------------------------

    def scheduled_checks(self, inventory: Inventory) -> list[ScheduledCheck]:
        out = []
        for device in inventory.devices:
            if not in_shard(device.id, self.options.shard):
                continue
            if self.owned is not None and device.id not in self.owned:
                continue
            for check in inventory.checks_for(device):
                if passive(check):
                    continue  # push and trap checks: the device speaks first
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
                # Never read again once ready (a reload asks only while not ready): 10k keys
                # in two sets held ~1 MB for the daemon's lifetime.
                self._seen, self._expected = set(), set()
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
        owned = self.owned
        if owned is not None:  # each device is exported by the one poller that polls it
            info = {d: row for d, row in info.items() if d in owned}
        pollers = self.pollers()
        return Snapshot(
            devices=device_rows(self.pipeline.state, info, kinds),
            pollers=pollers,
            pollers_live=sum(p.role in ("self", "peer", "standalone") for p in pollers),
            value_specs=specs,
            tickets_open=self._tickets["open"],
            tickets_total=self._tickets["total"],
            tickets_resolved=self._tickets.get("resolved", {}),
            ticket_resolution_seconds=self._tickets.get("resolution_seconds", {}),
            notifications=sent,
            notification_failures=failed,
            poll_durations=dict(stats.durations),
            overdue_total=stats.overdue_total,
            probe_batches=stats.batches,
            probe_batched_checks=stats.batched,
            probe_errors=dict(stats.probe_errors),
            reload_successful=self.holder.last_reload_successful,
            reload_success_timestamp=self.holder.last_reload_success_time,
            **self._input_metrics(),
            **self._store_metrics(),
        )

    def _store_metrics(self) -> dict[str, Any]:
        astore = self.astore
        if astore is None:
            return {}
        return {"store_write_queue": astore.queued_writes,
                "store_write_oldest_seconds": astore.oldest_write_age(),
                "store_write_retries": dict(astore.retries),
                "store_writes": dict(astore.writes),
                "store_batch_writes": astore.batch_sizes.copy()}

    def _input_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        relayed: dict[tuple[str, str], int] = {}
        if self.traps is not None:
            out.update(traps_received=dict(self.traps.received),
                       traps_dropped=dict(self.traps.dropped),
                       trap_unknown_senders=self.traps.unknown_senders,
                       trap_events={"stored": self.traps.events_stored,
                                    "dropped": self.traps.events_dropped})
            relayed.update({("trap", d): n for d, n in self.traps.relayed.items()})
        if self.heartbeats is not None:
            out["heartbeats"] = dict(self.heartbeats.beats)
            relayed.update({("push", d): n for d, n in self.heartbeats.relayed.items()})
        if self.lease is not None:  # pollers sharing the site: every series from start-up
            out["relayed"] = relayed
        return out

    def pollers(self) -> list[PollerRow]:
        """The site's pollers as this one sees them now (metrics and ``/api/v1/pollers``).

        Leases are judged at the database's clock, estimated as the time of the last heartbeat
        read plus the time since: a poller cut off from its database sees its own lease run
        out too."""
        lease = self.lease
        if lease is None or lease.membership is None or lease.last_ok is None:
            n = len(self.inventory.devices) if self.owned is None else len(self.owned)
            return [PollerRow(self.poller_id, "standalone", n, None)]
        m = lease.membership
        now = m.now + timedelta(seconds=max(0.0, time.time() - lease.last_ok))
        owners = self._owner_counts(m.live)
        out = []
        for row in m.pollers:
            live = row.expires_at > now
            role = ("self" if row.id == self.poller_id else "peer") if live else "expired"
            out.append(PollerRow(row.id, role, owners.get(row.id, 0) if live else None,
                                 row.heartbeat_at.timestamp()))
        return out

    def _owner_counts(self, live: tuple[str, ...]) -> dict[str, int]:
        key = (live, id(self.inventory))
        if self._owners_cache[0] != key:
            counts: dict[str, int] = {}
            for p in assignment(self.inventory, live).values():
                counts[p] = counts.get(p, 0) + 1
            self._owners_cache = (key, counts)
        return self._owners_cache[1]

    async def render_metrics(self) -> bytes:
        return await self.renderer.render()

    async def render_metrics_gzip(self) -> bytes:
        return await self.renderer.render_gzip()

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
            if any(c.kind == "icmp" for c in inventory.all_checks()):
                # Loud at start-up, with both fixes, instead of every ping failing quietly.
                log.info("icmp: %s", icmp_probe.privileges())
        url = self.options.storage_url or default_storage_url(self.options.state_dir)
        self.store = Store(
            url, timezone=inventory.site.timezone, categories=inventory.tickets.categories,
            site=inventory.site.id,  # halls sharing one database keep apart (issue 17)
        )
        held = self.store.sites()
        if held and inventory.site.id not in held:  # a renamed hall would lose its history
            log.warning("site %r has no incidents or tickets in this store, which holds sites "
                        "%s: if this hall's history is under one of them (\"default\" before "
                        "site.id was set), set site.id back to it", inventory.site.id,
                        ", ".join(held))
        self.astore = AsyncStore(self.store)
        self._register_site(inventory)
        self.pipeline = Pipeline(
            inventory,
            store=self.astore,
            recheck=lambda dev: self.scheduler.request_recheck(dev),
            clock=time.time,
        )
        self.pipeline.poller_id = self.poller_id
        await self._join(inventory)
        # Held trap conditions first: a device whose link a trap reported down stays down.
        trap_held = await self._resume_traps(inventory)
        await self.pipeline.resume(self.owned, trap_held)
        await self._start_alerts(inventory)
        if self.options.mock:
            simulate.install(inventory)
        self._labels = self.metric_labels(inventory)
        checks = self.scheduled_checks(inventory)
        # Collect before the scheduler's clock starts: the full collection holds the loop
        # (~0.4 s at 10k devices) and made the earliest-splayed first runs overdue.
        _settle_gc()
        self.scheduler = Scheduler(checks, self._on_result, caps=self._caps(inventory),
                                   first_window=self._pace(inventory.defaults.interval),
                                   wake_grid=WAKE_GRID_SECONDS)
        self._expected = set(self.scheduler.checks)
        if not self._expected:  # a standby poller (the others own every device) is ready idle
            self.ready = True
        self.scheduler.start()
        gc.freeze()  # the scheduler's slots and tasks join the frozen objects (no collection)
        await self._start_inputs(inventory)
        self.holder.subscribe(self._apply_inventory)
        if self.lease is not None:
            self._spawn(self.lease.run())
            self._spawn(self._watch_peers())
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

    async def _start_inputs(self, inventory: Inventory) -> None:
        """Push heartbeats and (when an address is given) the trap receiver: their results
        enter through Pipeline.handle like polled ones."""
        handle = self.pipeline.handle
        self.heartbeats = Heartbeats(inventory, handle)
        if self.owned is not None:  # pollers sharing the site: beats go through the store
            assert self.astore is not None
            self.heartbeats.owned = self.owned
            self.heartbeats.relay = BeatRelay(self.astore, self.poller_id)
        self.heartbeats.start()
        if self.traps is not None and self.options.traps_listen is not None:
            await self.traps.start(*self.options.traps_listen)

    async def _resume_traps(self, inventory: Inventory) -> dict[tuple[str, str],
                                                                tuple[str, float]]:
        """The trap receiver (bound later, in _start_inputs) with its held conditions read
        back from the store; returns the trap checks they fail, for Pipeline.resume."""
        if self.options.traps_listen is None:
            return {}
        self.traps = TrapReceiver(inventory, self.pipeline.handle, self.recheck,
                                  store=self.astore)
        self.traps.owned = self.owned
        if self.owned is not None:  # pollers sharing the site: other devices' traps relayed
            assert self.astore is not None
            self.traps.relay = TrapRelay(self.astore, self.poller_id)
        return await self.traps.resume(self.owned)

    # -- pollers sharing the site (issue 17) -----------------------------------------------------

    def _ha_enabled(self) -> bool:
        assert self.store is not None
        if self.options.ha is not None:
            return self.options.ha
        return self.store.engine.dialect.name == "postgresql" and self.options.shard is None

    async def _join(self, inventory: Inventory) -> None:
        """Take a lease and this poller's share before resuming or polling anything."""
        assert self.store is not None and self.astore is not None
        if not self._ha_enabled():
            return
        self.lease = Lease(self.astore, self.poller_id, lease=self.options.ha_lease,
                           heartbeat=self.options.ha_heartbeat, on_change=self.rebalance)
        await self.lease.beat()
        # Each row goes out once across pollers, held while one poller sends it.
        self.store.outbox_claim_seconds = max(60.0, 2 * self.options.ha_lease)
        self.owned = self._share(inventory, self.lease.live)
        self.pipeline.owned = self.owned
        log.info("poller %s joined %d live poller(s): owns %d of %d devices", self.poller_id,
                 len(self.lease.live), len(self.owned), len(inventory.devices))

    def _share(self, inventory: Inventory, live: tuple[str, ...]) -> set[str]:
        """This poller's devices; every device's poller goes to the API and pages."""
        owners = assignment(inventory, live)
        self.pipeline.owners = owners
        return {d for d, p in owners.items() if p == self.poller_id}

    async def _watch_peers(self) -> None:
        """Pollers sharing the site: the other pollers' devices as the store knows them, read
        again every heartbeat (what ``/api/v1/devices`` and the pages show for them)."""
        while True:
            await self.refresh_peers()
            await asyncio.sleep(self.options.ha_heartbeat)

    async def refresh_peers(self) -> None:
        assert self.astore is not None and self.store is not None
        try:
            self.pipeline.peers = await self.astore.run(self.store.peer_view)
        except Exception as exc:  # the database away: keep the last view, say so once a beat
            log.warning("cannot read the other pollers' device statuses: %s", exc)

    async def rebalance(self, live: tuple[str, ...]) -> None:
        """The live pollers changed (or the inventory did): give away the devices another
        poller owns now, without resolving anything, and take over the new ones, resuming
        their open incidents first (so a device still down is not paged again)."""
        if self.owned is None:
            return
        async with self._rebalancing:
            await self._rebalance(live)

    async def _rebalance(self, live: tuple[str, ...]) -> None:
        assert self.owned is not None
        inventory = self.inventory
        new = self._share(inventory, live)
        old = self.owned & {d.id for d in inventory.devices}
        if new == self.owned:
            return
        released, taken = self.owned - new, new - old
        # Stop polling what goes before forgetting it; resume what comes before polling it.
        self.owned = self.pipeline.owned = old & new
        if self.heartbeats is not None:
            self.heartbeats.owned = self.owned
        self._cancelled += self.scheduler.replace(self.scheduled_checks(inventory))
        self.pipeline.release(released)
        held: dict[tuple[str, str], tuple[str, float]] = {}
        if self.traps is not None:  # their held trap conditions go and come with them
            self.traps.owned = self.owned
            self.traps.release(released)
            held = await self.traps.resume(taken)
        resumed = await self.pipeline.resume(taken, held)
        if self.engine is not None and taken:
            self.engine.resume(self.pipeline.resumed_events(taken), datetime.now(UTC))
        self.owned = self.pipeline.owned = new
        if self.traps is not None:
            self.traps.owned = new
        if self.heartbeats is not None:  # watching from each check's last beat anywhere
            self.heartbeats.owned = new
        self._cancelled += self.scheduler.replace(self.scheduled_checks(inventory))
        if not self.ready:
            self._expected = set(self.scheduler.checks)
            self._seen &= self._expected
        self.renderer = CachedRenderer(self)
        await self.refresh_peers()  # the devices given away: shown as their new poller records
        log.info("rebalanced over %d live poller(s): gave away %d devices, took %d "
                 "(%d open incidents resumed); owns %d", len(live), len(released), len(taken),
                 resumed, len(new))
        if taken:
            with contextlib.suppress(Exception):  # the 15 s refresh retries anyway
                await self.refresh_maintenance()

    async def _start_alerts(self, inventory: Inventory) -> None:
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
        # Pollers sharing one database keep their own engine state (what each has in hand).
        shard = self.options.shard
        state_name = "engine"
        if shard is not None:
            state_name = f"engine/shard-{shard[0]}-of-{shard[1]}"
        elif self.lease is not None:
            state_name = f"engine/{self.poller_id}"[:64]
        self.engine = Engine(
            cfg, self.store, now, tz=inventory.site.tz, on_enqueued=self.delivery.wake,
            state_name=state_name,
        )
        await self.engine.load()  # what the previous process had not yet sent
        self.engine.resume(self.pipeline.resumed_events(self.owned), now())
        self.pipeline.alerts = self.engine
        self._spawn(self.engine.run())
        self._spawn(self.delivery.run())
        # Scheduled reports ride the same outbox (sent once, across restarts).
        self.reports = ReportSender(self.store, lambda: self.inventory, now,
                                    on_enqueued=self.delivery.wake)
        self._spawn(self.reports.run())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def _register_site(self, inventory: Inventory) -> None:
        """This site's reporting profile in the store, where the other sites' daemons read it
        for reports across sites (issue 17). Queued: retried until it lands, never waited on."""
        profile = ReportHall.of(inventory).profile()
        site = inventory.site
        assert self.astore is not None and self.store is not None
        self.astore.queue(self.store.register_site, site.name, site.timezone,
                          site.opening_hours, len(inventory.devices), profile)

    def _apply_inventory(self, inventory: Inventory) -> None:
        """A good reload: swap the state's devices and the scheduler's checks."""
        self._register_site(inventory)
        self._labels = self.metric_labels(inventory)
        self.pipeline.use(inventory)
        if self.heartbeats is not None:
            self.heartbeats.use(inventory)
        if self.traps is not None:
            self.traps.use(inventory)
        if self.options.mock:
            simulate.install(inventory)
        self.scheduler.first_window = self._pace(inventory.defaults.interval)
        self._cancelled += self.scheduler.replace(self.scheduled_checks(inventory))
        if self.lease is not None:  # added devices get an owner, maybe this poller
            self._spawn(self.rebalance(self.lease.live))
        if not self.ready:
            self._expected = set(self.scheduler.checks)
            self._seen &= self._expected
        self.renderer = CachedRenderer(self)  # removed devices vanish from the next scrape
        if self._settling is None or self._settling.done():
            self._settling = asyncio.get_running_loop().create_task(self._settle())
        log.info("inventory reloaded: %d devices", len(inventory.devices))

    async def _settle(self) -> None:
        """Collect and freeze once the cancelled check tasks are gone: freezing while they
        were still unwinding pinned their frames (~6.5 MB per 200 reloads)."""
        while self._cancelled:
            tasks, self._cancelled = self._cancelled, []
            await asyncio.wait(tasks, timeout=30)
        _settle_gc()

    async def settled(self) -> None:
        """Wait for the collection after the last reload (tests)."""
        if self._settling is not None:
            await asyncio.shield(self._settling)

    async def reload(self) -> ReloadOutcome:
        outcome = await self.holder.areload()
        # A fresh render, so the scrape after `/-/reload` agrees with its answer (the cached
        # body may predate it by up to a second).
        self.renderer = CachedRenderer(self)
        return outcome

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
        if self.traps is not None:
            await self.traps.stop()
        if self.heartbeats is not None:
            await self.heartbeats.stop()
        if hasattr(self, "scheduler"):
            await self.scheduler.stop()
        settling = [self._settling] if self._settling is not None else []
        for task in [*self._tasks, *settling]:
            task.cancel()
        await asyncio.gather(*self._tasks, *settling, return_exceptions=True)
        self._tasks.clear()
        if self.engine is not None:
            # Events inside their group window and held messages go to the store, so the next
            # process tells them (a SIGTERM must not lose a page).
            await self.engine.flush()
        if self.lease is not None:  # a clean stop: the others take the devices at once
            try:
                await self.lease.leave()
            except Exception as exc:
                log.warning("could not give the lease back (%s): it runs out in %.0f s",
                            type(exc).__name__, self.lease.lease)
        if self._http is not None:
            await self._http.aclose()
        with contextlib.suppress(Exception):
            await close_all_probes()
        if self.astore is not None:
            await self.astore.aclose()
        log.info("stopped")
