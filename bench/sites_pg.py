"""Many halls on one PostgreSQL (issue 17): store writes, lease traffic and incident-write latency.

What is real: one PostgreSQL server (tests/agents/postgres.py, initdb in a temp dir, loopback,
``fsync=off`` like every test server here, so commit latency is CPU and locking, not a disk);
per poller, everything the daemon does with the database: its own ``Store(site=...)`` with its
own engine and connection pool, the ``AsyncStore`` writer thread, the ``Pipeline`` (state,
incidents, automatic tickets), the ``Lease`` heartbeat loop and rebalancing (monitor/ha.py,
store/pollers.py), the alert ``Engine`` (outbox rows and its state snapshot in one transaction)
and the ``Delivery`` worker (outbox claims ``FOR UPDATE SKIP LOCKED``), posting every page to a
real webhook receiver on loopback (tests/agents/daemon.py).

What is simulated: the devices, by the mock probe (probes/mock.py) scripted through
monitor/simulate.py from each hall's ``simulation:`` faults (no packet leaves the process); and
the scheduler, replaced by a plain sweep that polls each poller's own devices once per
``--interval`` in ten slices (its cost is bench/core_overhead.py's, not the database's). A
poller here is not a process: ``--processes`` worker processes each run a share of the halls,
every poller of a hall in the same process, each poller with its own Store, threads and tasks.

The model: ``--sites`` halls, each of ``--devices`` devices (one check each, a ping) hanging
below access switches of 50 (the topology roots the leases spread; the device ids are the same
in every hall, the overlap of issue 17), each hall watched by ``--pollers`` pollers sharing it
by leases. During the run
``--fault-rate`` of each hall's devices (switches included: their devices go unreachable) fail
at a random time in the first half of the run, for 2 to 6 poll intervals; some are still down
at the end. Every outage is an incident opened (and closed), a ticket opened (and resolved),
pages through the outbox. At the default 2 % (2,000 of 100,000 devices, plus the devices below
the failed switches, within a minute at 100 halls) a city would be having a very bad day: the
numbers are a storm, not a quiet hour.

The figures:
- ``writes_per_s`` (INSERT/UPDATE/DELETE) and ``statements_per_s`` (all) by kind of store work
  (lease, incidents, tickets, tally, outbox, savepoints), counted by an SQLAlchemy
  ``before_cursor_execute`` hook on every poller's engine; ``commits_per_s``; ``rows_per_s``:
  rows inserted/updated/deleted per table as PostgreSQL counted them (``pg_stat_user_tables``,
  reset when polling starts). All over the window from the start of polling to the end of the
  drain.
- ``lease``: lease statements (and writes) per second in total and per poller (min/max),
  heartbeats and statements per heartbeat, live leases sampled every second (min/max), and
  hand-overs after the start (nobody dies here: a live poller must never lose its devices).
- ``incident_write_ms``: p50/p99/max from the moment the pipeline saw the transition (the probe
  result; it queues the write in the same step) to the moment the committed write was reported
  back to the event loop, for opening and closing incidents; ``ticket_write_ms`` the same for
  tickets; ``incident_in_store_ms`` the store call alone on the writer thread (the rest is the
  wait behind the poller's earlier writes and for the event loop).
- ``pg_connections``: the most client connections seen at once (sampled every second);
  ``pollers_cpu_s``/``postgres_cpu_s``: CPU of the worker processes and of PostgreSQL over the
  window; ``idle_select1_ms``: an idle client's ``SELECT 1`` (a saturated machine shows here).
- ``checks_per_s`` polled, and ``late_slices``: sweep slices that began after their time (a
  worker process fell behind: its CPU, not the database, was the limit then).

Correctness, checked at the end after the writes and pages are drained: every device the
pollers hold in a fault has exactly one open incident of its hall, and no other device has one;
incidents only for devices that hall's faults touched (a hall's rows never mix with another's,
though they share ids); every outbox row sent, none dead, each received by the webhook once
(no page lost, none twice); at most one automatic ticket per incident.

    .venv/bin/python bench/sites_pg.py          # 10 halls x 1,000 devices, 60 s (~75 s in all)
    .venv/bin/python bench/sites_pg.py --sites 100 --duration 120 --interval 30  # issue 17's scale

At 100 halls on a 2-core machine the pollers' own CPU (100,000 mock checks and 200 pollers'
threads in ``--processes`` Python processes beside PostgreSQL) is what the latency measures, and
the run ends over the latency budget (README, *How far one database goes*); the database's load
and the correctness checks are what that scale shows.

Loopback only; bounded in count (sites, devices, faults) and time (``--duration`` plus a
bounded start and drain). One JSON line at the end; exit 1 over budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import event  # noqa: E402

from monitor import simulate  # noqa: E402
from monitor.alerts import Delivery, Engine, build_channels, rate_limits, retry_policy  # noqa: E402
from monitor.ha import DEFAULT_HEARTBEAT, DEFAULT_LEASE, Lease, assignment  # noqa: E402
from monitor.inventory import Inventory  # noqa: E402
from monitor.inventory.load import parse_inventory  # noqa: E402
from monitor.pipeline import INCIDENT_STATUSES, Pipeline  # noqa: E402
from monitor.store import Store  # noqa: E402
from monitor.store.aio import AsyncStore  # noqa: E402
from probes.mock import MockConfig, MockController  # noqa: E402
from tests.agents.daemon import NODE_CLASS, WebhookReceiver, node  # noqa: E402
from tests.agents.postgres import postgres_server  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")

BEATS, COMMITS = "~heartbeats", "~commits"  # counted beside the statement kinds
SLICES = 10  # a sweep polls a tenth of a poller's devices every tenth of an interval
START_TIMEOUT = 300.0  # every poller opened its store and joined (100 halls: ~30-60 s)
DRAIN_TIMEOUT = 60.0  # queued writes landed and every page sent, after the run
BUDGET_P99_MS = 250.0
BUDGET_LEASE_PER_BEAT = 6  # statements of one heartbeat (store/pollers.py: 4, 5 on joining)
BUDGET_LEASE_SPREAD = 1.5  # the busiest poller's lease traffic over the quietest's


@dataclass(frozen=True)
class Plan:
    sites: int = 10
    devices: int = 1000
    pollers: int = 2
    duration: float = 60.0
    interval: float = 10.0
    fault_rate: float = 0.02
    lease: float = DEFAULT_LEASE
    heartbeat: float = DEFAULT_HEARTBEAT
    processes: int = 2
    seed: int = 1
    group: int = 50  # devices per access switch (a topology root: the unit the leases spread)


def site_id(i: int) -> str:
    return f"hall-{i:03d}"


def device_id(j: int) -> str:
    return f"dev-{j:04d}"  # the same ids in every hall (issue 17's overlap)


def parent_of(j: int, group: int) -> int | None:
    return None if j % group == 0 else j - j % group


def faults(plan: Plan, site: int) -> list[dict[str, Any]]:
    """The hall's scripted outages: ``fault_rate`` of its devices, in the run's first half."""
    rng = random.Random(f"{plan.seed}:{site}")
    n = max(1, round(plan.devices * plan.fault_rate))
    out = []
    for j in sorted(rng.sample(range(plan.devices), min(n, plan.devices))):
        at = max(0.1, rng.uniform(0, plan.duration / 2))  # "0.0s" is refused: must be > 0
        out.append({"device": device_id(j), "mode": "down", "at": f"{at:.1f}s",
                    "duration": f"{rng.uniform(2, 6) * plan.interval:.1f}s"})
    return out


def touched(plan: Plan, site: int) -> set[str]:
    """Devices the hall's faults may put in an incident: the faulted and, below a faulted
    switch, its devices (unreachable)."""
    out = set()
    for f in faults(plan, site):
        j = int(f["device"].removeprefix("dev-"))
        out.add(f["device"])
        if parent_of(j, plan.group) is None:
            out |= {device_id(k) for k in range(j + 1, min(j + plan.group, plan.devices))}
    return out


def hook_env(site: int) -> str:
    return f"HALLMON_BENCH_HOOK_{site}"  # secrets are references in an inventory


def inventory_text(plan: Plan, site: int) -> str:
    devices = []
    for j in range(plan.devices):
        up = parent_of(j, plan.group)
        devices.append(node(device_id(j), f"127.77.{j // 250}.{j % 250 + 1}",
                            parent=None if up is None else device_id(up)))
    doc: dict[str, Any] = {
        "site": {"id": site_id(site), "name": f"大厅 {site}", "timezone": "Asia/Shanghai"},
        "defaults": {"interval": f"{plan.interval:g}s",
                     "timeout": f"{min(1.0, plan.interval / 2) * 1000:.0f}ms",
                     "failure_threshold": 2, "success_threshold": 2},
        "classes": {"node": NODE_CLASS},
        "devices": devices,
        "notifications": {
            "language": "en",
            "channels": {"hook": {"type": "webhook", "url": f"${{{hook_env(site)}}}"}},
            "routes": [{"name": "it", "channels": ["hook"], "group_wait": "2s"}],
            "delivery": {"poll_interval": "1s", "backoff_initial": "1s"},
        },
        "tickets": {"auto": [{"when": ["down"], "delay": 0}]},
        "simulation": {"seed": plan.seed, "faults": faults(plan, site)},
    }
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


# ---- one worker process: some halls, all their pollers ----------------------------------------


KINDS = (("pollers", "lease"), ("clock_timestamp", "lease"), ("ticket_tally", "tally"),
         ("outbox", "outbox"), ("alert_state", "outbox"), ("incidents", "incidents"),
         ("ticket", "tickets"))
WRITES = ("insert", "update", "delete")


def kind_of(statement: str) -> str:
    """Which store work a statement is (by the table it names); a write's kind ends ":w"."""
    s = statement.lower().lstrip()
    if s.startswith(("savepoint", "release")):
        return "savepoint"  # inside an incident's or a ticket's transaction
    kind = next((k for word, k in KINDS if word in s), "ping" if s == "select 1" else "other")
    return f"{kind}:w" if s.startswith(WRITES) else kind


@dataclass
class Counts:
    """What one worker measured (picklable: sent back to the main process)."""

    statements: dict[str, Counter[str]] = field(default_factory=dict)  # poller -> kind -> n
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failed_writes: int = 0
    handovers: int = 0  # rebalances after every poller joined (nobody died: must be 0)
    checks: int = 0
    late_slices: int = 0  # sweep slices that began after their time (the worker fell behind)
    in_fault: dict[str, list[str]] = field(default_factory=dict)  # site -> devices
    undrained: int = 0
    in_store: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu_s: float = 0.0  # this worker's CPU (every thread) from "go" to its report


class TimedStore(AsyncStore):
    """The AsyncStore, timing each queued write from its queueing (the transition) to the
    moment its commit is known on the event loop, and the store call itself on the writer
    thread (the transaction; the rest is waiting behind the poller's earlier writes and for
    the event loop)."""

    def __init__(self, store: Store, counts: Counts) -> None:
        super().__init__(store)
        self.counts = counts

    def queue(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        started = time.perf_counter()
        name = getattr(fn, "__name__", "write").lstrip("_")
        in_store = self.counts.in_store[name]

        def timed() -> R:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                in_store.append(time.perf_counter() - began)

        done = super().queue(timed)

        def landed(f: asyncio.Future[R]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.counts.failed_writes += 1
            else:
                self.counts.latency[name].append(time.perf_counter() - started)

        done.add_done_callback(landed)
        return done


def count_statements(store: Store, into: Counter[str]) -> None:
    lock = threading.Lock()  # the store thread and the to_thread workers share the engine

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        kind = kind_of(statement)
        with lock:
            into[kind] += 1
            if "clock_timestamp" in statement:  # one per heartbeat (store/pollers.py)
                into[BEATS] += 1

    @event.listens_for(store.engine, "commit")
    def _commit(_conn: Any) -> None:
        with lock:
            into[COMMITS] += 1


class Poller:
    """One poller of one hall: what the daemon's Hall wires for the database, nothing else."""

    def __init__(self, plan: Plan, inv: Inventory, mock: MockController, url: str, name: str,
                 counts: Counts) -> None:
        self.plan, self.inv, self.mock, self.name, self.counts = plan, inv, mock, name, counts
        self.store = Store(url, timezone=inv.site.timezone, categories=inv.tickets.categories,
                           site=inv.site.id)
        counts.statements[name] = Counter()
        count_statements(self.store, counts.statements[name])
        self.astore = TimedStore(self.store, counts)
        self.pipeline = Pipeline(inv, store=self.astore, clock=time.time)
        self.lease = Lease(self.astore, name, lease=plan.lease, heartbeat=plan.heartbeat,
                           on_change=self.rebalance)
        self.owned: set[str] = set()
        self.tasks: list[asyncio.Task[Any]] = []
        self.http = httpx.AsyncClient()
        # What ``hallmon run --mock`` asks the mock probe (monitor/checks.py probe_call), from
        # this hall's own controller: halls in one process keep their scripts apart.
        self.checks = [(c, d.address, MockConfig(check=c.name, kind=c.kind,
                                                 values=dict(simulate.healthy_values(c))))
                       for d in inv.devices for c in inv.checks_for(d)]

    async def join(self) -> None:
        """As Hall._join and _start_alerts (monitor/app.py) once every peer has a lease."""
        self.store.outbox_claim_seconds = max(60.0, 2 * self.plan.lease)
        self.owned = self.share(self.lease.live)
        self.pipeline.owned = self.owned
        await self.pipeline.resume(self.owned)
        cfg = self.inv.notifications
        now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731
        self.delivery = Delivery(self.store, build_channels(cfg), self.http, now,
                                 policy=retry_policy(cfg),
                                 poll_interval=cfg.delivery.poll_interval,
                                 rate_limits=rate_limits(cfg))
        self.engine = Engine(cfg, self.store, now, tz=self.inv.site.tz,
                             on_enqueued=self.delivery.wake, state_name=f"engine/{self.name}")
        await self.engine.load()
        self.engine.resume(self.pipeline.resumed_events(self.owned), now())
        self.pipeline.alerts = self.engine
        loop = asyncio.get_running_loop()
        for coro in (self.engine.run(), self.delivery.run(), self.lease.run()):
            self.tasks.append(loop.create_task(coro))

    def share(self, live: Sequence[str]) -> set[str]:
        return {d for d, p in assignment(self.inv, live).items() if p == self.name}

    async def rebalance(self, live: tuple[str, ...]) -> None:
        """As Hall._rebalance: release what goes, resume what comes."""
        new = self.share(live)
        if new == self.owned:
            return
        self.counts.handovers += 1
        released, taken = self.owned - new, new - self.owned
        self.owned = self.pipeline.owned = self.owned & new
        self.pipeline.release(released)
        await self.pipeline.resume(taken)
        self.engine.resume(self.pipeline.resumed_events(taken), datetime.now(UTC))
        self.owned = self.pipeline.owned = new

    async def sweep(self, stop_at: float) -> None:
        """Poll every owned check once per interval, a slice every interval / SLICES."""
        step = self.plan.interval / SLICES
        k = 0
        began = time.monotonic()
        while time.monotonic() < stop_at:
            mine = [x for x in self.checks if x[0].device_id in self.owned]
            for c, address, config in mine[k % SLICES::SLICES]:
                result = await self.mock.probe(address, config)
                await self.pipeline.handle(c, result)
                self.counts.checks += 1
            k += 1
            wait = began + k * step - time.monotonic()
            if wait < 0:
                self.counts.late_slices += 1
            await asyncio.sleep(max(0.0, wait))

    def quiet(self) -> bool:
        return self.astore.queued_writes == 0 and not self.pipeline._ticket_tasks

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.lease.leave()
        await self.http.aclose()
        await self.astore.aclose()


async def run_halls(plan: Plan, sites: list[int], url: str, hook_url: str,
                    ready: Any, go: Any) -> Counts:
    counts = Counts()
    # asyncio.to_thread (the engine's commits, delivery's claims) shares the loop's executor:
    # as many threads as a daemon per poller would have to itself, near enough.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=min(256, 4 + 3 * plan.pollers * len(sites))))
    halls: dict[int, tuple[Inventory, MockController, list[Poller]]] = {}
    for s in sites:
        os.environ[hook_env(s)] = f"{hook_url}/{site_id(s)}"
        inv = parse_inventory(inventory_text(plan, s))
        mock = MockController(seed=plan.seed)
        pollers = [Poller(plan, inv, mock, url, f"{site_id(s)}/p{k}", counts)
                   for k in range(plan.pollers)]
        halls[s] = (inv, mock, pollers)
    everyone = [p for _, _, ps in halls.values() for p in ps]
    for _ in range(2):  # twice: the second beat of each sees every peer of its hall
        for p in everyone:
            await p.lease.beat()
    for p in everyone:
        await p.join()
    ready.put(os.getpid())
    if not await asyncio.to_thread(go.wait, START_TIMEOUT):
        raise SystemExit("the main process never said go")
    for per in counts.statements.values():
        per.clear()  # the window starts here (the main process reset PostgreSQL's counts too)
    cpu0 = time.process_time()
    stop_at = time.monotonic() + plan.duration
    for inv, mock, _ in halls.values():
        simulate.install(inv, mock)  # the faults' times count from here
    await asyncio.gather(*(p.sweep(stop_at) for p in everyone))
    await drain(everyone, counts)
    counts.cpu_s = time.process_time() - cpu0
    for inv, _, pollers in halls.values():
        sid = inv.site.id
        counts.in_fault[sid] = sorted(d for p in pollers for d in p.owned
                                      if p.pipeline.state.status(d) in INCIDENT_STATUSES)
    for p in everyone:
        await p.close()
    return counts


async def drain(pollers: list[Poller], counts: Counts) -> None:
    """Until every queued write landed and every outbox row of these halls is sent, three
    checks in a row (the engine's group window is 2 s). Bounded by DRAIN_TIMEOUT."""
    calm, deadline = 0, time.monotonic() + DRAIN_TIMEOUT
    by_site = {p.inv.site.id: p for p in pollers}
    while calm < 3 and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        pending = 0
        for p in by_site.values():
            pending += (await p.astore.outbox_counts())["pending"]
        calm = calm + 1 if pending == 0 and all(p.quiet() for p in pollers) else 0
    counts.undrained = sum(p.astore.queued_writes for p in pollers)


def worker(plan: Plan, sites: list[int], url: str, hook_url: str, ready: Any, go: Any,
           results: Any) -> None:
    try:
        results.put(("ok", asyncio.run(run_halls(plan, sites, url, hook_url, ready, go))))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


# ---- the main process: the database, the receiver, the verdict ---------------------------------


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def ms(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": round(pct(xs, 0.5) * 1000, 1),
            "p99": round(pct(xs, 0.99) * 1000, 1), "max": round(max(xs, default=0) * 1000, 1)}


def per_s(counts: Counter[str], window: float) -> dict[str, float]:
    return {k: round(n / window, 1) for k, n in sorted(counts.items())}


def dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


TICK = os.sysconf("SC_CLK_TCK")


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds (user + system) of this server's processes alive now: the postmaster and its
    children (the backends; other PostgreSQL servers on the machine are not counted)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == postmaster or int(fields[1]) == postmaster:
                total += int(fields[11]) + int(fields[12])
    return total / TICK


def postmaster_of(url: str) -> int:
    with psycopg.connect(dsn(url), autocommit=True) as c:
        row = c.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])


def sample(url: str, stop: threading.Event, seen: list[tuple[float, int, int, float]],
           rtt: list[float], postmaster: int) -> None:
    """Every second: (time, client connections, live leases, PostgreSQL's CPU so far), and
    the round trip of one ``SELECT 1`` from this idle process (how long the machine makes a
    query wait that has no queue of its own: a loaded CPU shows here)."""
    with psycopg.connect(dsn(url), autocommit=True) as c:
        while not stop.wait(1.0):
            began = time.perf_counter()
            c.execute("SELECT 1").fetchone()
            rtt.append(time.perf_counter() - began)
            row = c.execute("SELECT (SELECT count(*) FROM pg_stat_activity "
                            "WHERE backend_type = 'client backend'), (SELECT count(*) FROM "
                            "pollers WHERE expires_at > clock_timestamp())").fetchone()
            if row:
                seen.append((time.perf_counter(), int(row[0]), int(row[1]),
                             postgres_cpu(postmaster)))


@dataclass
class Outcome:
    """What the run saw; ``summarise`` reads the database beside it."""

    plan: Plan
    url: str
    got: list[Counts]
    received: Counter[tuple[str, str | None]]  # (request path, Idempotency-Key) -> times
    window: float  # seconds from "go" to the last worker's report
    start_s: float  # seconds to open every store and join every lease
    connections: int  # the most client connections at once
    live: list[int]  # live leases, sampled every second while polling
    postgres_cpu_s: float  # PostgreSQL's CPU from "go" to the last sample (backends alive)
    idle_rtt: list[float]  # SELECT 1 round trips from the main process, one a second


def run(plan: Plan, pg_url: str) -> Outcome:
    """Run the plan against the (empty) database at ``pg_url``. The bench's core: the smoke
    test (tests/test_bench_sites_pg.py) runs it on a tiny plan."""
    Store(pg_url, timezone="Asia/Shanghai").close()  # migrate once, before the crowd
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    with WebhookReceiver() as hook:
        procs = [ctx.Process(target=worker, daemon=True,
                             args=(plan, list(range(i, plan.sites, plan.processes)), pg_url,
                                   hook.url, ready, go, results))
                 for i in range(min(plan.processes, plan.sites))]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        try:
            wait_for(ready, len(procs), START_TIMEOUT, procs, results)
            start_s = time.perf_counter() - t0
            with psycopg.connect(dsn(pg_url), autocommit=True) as c:
                c.execute("SELECT pg_stat_reset()")
            stop, seen = threading.Event(), list[tuple[float, int, int, float]]()
            postmaster = postmaster_of(pg_url)
            cpu0 = postgres_cpu(postmaster)
            rtt: list[float] = []
            sampler = threading.Thread(target=sample,
                                       args=(pg_url, stop, seen, rtt, postmaster))
            sampler.start()
            started = time.perf_counter()
            go.set()
            got: list[Counts] = []
            try:
                got = wait_for(results, len(procs), plan.duration + DRAIN_TIMEOUT + 120, procs,
                               results)
            finally:
                window = time.perf_counter() - started
                stop.set()
                sampler.join(10)
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        received = Counter(zip(hook.paths, hook.keys, strict=True))
    time.sleep(0.5)  # the workers' backends exited and flushed their statistics
    # Leases while every poller polls (they leave, cleanly, at the end).
    live = [n for t, _, n, _ in seen if started + 1 < t < started + plan.duration]
    return Outcome(plan, pg_url, got, received, window, start_s,
                   max((n for _, n, _, _ in seen), default=0), live,
                   max((cpu for *_, cpu in seen), default=cpu0) - cpu0, rtt)


def wait_for(q: Any, n: int, timeout: float, procs: list[Any], results: Any) -> list[Any]:
    """``n`` items from ``q``; a worker's error (on ``results``) or death ends the wait."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(got)} of {n} workers reported in {timeout:.0f} s")
        source = q
        try:
            item = q.get(timeout=1.0)
        except queue.Empty:
            item = None
        if item is None and q is not results:
            with contextlib.suppress(queue.Empty):
                item, source = results.get_nowait(), results
        if item is None:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit("a worker died")
            continue
        if source is results:
            status, item = item
            if status != "ok":
                raise SystemExit(f"a worker failed: {item}")
        got.append(item)
    return got


def merged(got: list[Counts]) -> Counts:
    out = Counts()
    for c in got:
        out.statements.update(c.statements)
        for k, v in c.latency.items():
            out.latency[k] += v
        out.failed_writes += c.failed_writes
        out.handovers += c.handovers
        out.checks += c.checks
        out.late_slices += c.late_slices
        out.in_fault.update(c.in_fault)
        out.undrained += c.undrained
        out.cpu_s += c.cpu_s
        for k, v in c.in_store.items():
            out.in_store[k] += v
    return out


def summarise(o: Outcome) -> dict[str, Any]:
    """The figures and the budgets (each True when met)."""
    plan, url, received, window, live = o.plan, o.url, o.received, o.window, o.live
    c = merged(o.got)
    with psycopg.connect(dsn(url), autocommit=True) as db:
        rows = {r[0]: (r[1], r[2], r[3]) for r in db.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables")}
        open_rows = db.execute("SELECT site, device_id, count(*) FROM incidents "
                               "WHERE ended_at IS NULL GROUP BY site, device_id").fetchall()
        incident_devices = db.execute("SELECT DISTINCT site, device_id FROM incidents").fetchall()
        outbox = db.execute("SELECT site, status, count(*) FROM outbox "
                            "GROUP BY site, status").fetchall()
        sent_keys = db.execute("SELECT site, key FROM outbox WHERE status = 'sent'").fetchall()
        tickets = db.execute("SELECT count(*), count(DISTINCT (site, incident_key)) "
                             "FROM tickets WHERE source = 'auto'").fetchone()
        incidents = db.execute("SELECT count(*), count(ended_at) FROM incidents").fetchone()
        ticket_mix = db.execute(
            "SELECT count(*) FROM tickets t JOIN incidents i ON i.id = t.incident_id "
            "WHERE i.site <> t.site OR i.device_id <> t.device_id").fetchone()
    assert tickets and incidents and ticket_mix

    # -- correctness
    open_by_site: dict[str, set[str]] = defaultdict(set)
    duplicate_open = 0
    for site, dev, n in open_rows:
        open_by_site[site].add(dev)
        duplicate_open += n > 1
    wrong_open = {s: sorted(set(devs) ^ open_by_site.get(s, set()))
                  for s, devs in c.in_fault.items()}
    wrong_open = {s: d for s, d in wrong_open.items() if d}
    expected = {site_id(i): touched(plan, i) for i in range(plan.sites)}
    foreign = sorted((s, d) for s, d in incident_devices if d not in expected.get(s, set()))
    status = Counter({(s, st): n for s, st, n in outbox})
    outbox_rows = sum(status.values())
    unsent = sum(n for (_s, st), n in status.items() if st != "sent")
    # The webhook's path names the hall, its Idempotency-Key the message (the outbox key
    # without its "/channel").
    want = Counter((f"/hook/{s}", k.rsplit("/", 1)[0]) for s, k in sent_keys)
    twice = sum(n - 1 for n in received.values() if n > 1)
    lost = sum((want - received).values())

    # -- figures
    stmts: Counter[str] = Counter()
    for per in c.statements.values():
        stmts.update(per)
    beats, commits = stmts.pop(BEATS, 0), stmts.pop(COMMITS, 0)
    reads: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    for k, n in stmts.items():
        if k.endswith(":w"):
            writes[k[:-2]] += n
        reads[k.removesuffix(":w")] += n
    lease_per_beat = (reads["lease"] / beats) if beats else 0.0
    lease_each = [(per["lease"] + per["lease:w"]) / window for per in c.statements.values()]
    table_rows = {t: round(sum(v) / window, 1) for t, v in sorted(rows.items()) if sum(v)}
    incident_lat = c.latency.get("open_incident", []) + c.latency.get("close_incident", [])
    ticket_lat = c.latency.get("auto_ticket", []) + c.latency.get("resolve_auto_ticket", [])
    figures: dict[str, Any] = {
        "plan": asdict(plan),
        "window_s": round(window, 1), "start_s": round(o.start_s, 1),
        "checks_per_s": round(c.checks / window, 1), "late_slices": c.late_slices,
        "writes_per_s": per_s(writes, window), "statements_per_s": per_s(reads, window),
        "commits_per_s": round(commits / window, 1), "rows_per_s": table_rows,
        "incidents": {"opened": incidents[0], "closed": incidents[1],
                      "open_at_end": len(open_rows)},
        "tickets_auto": tickets[0], "outbox_rows": outbox_rows, "pages_received":
            sum(received.values()),
        "lease": {
            "statements_per_s": round(reads["lease"] / window, 1),
            "writes_per_s": round(writes["lease"] / window, 1),
            "per_poller_per_s": {"min": round(min(lease_each, default=0), 2),
                                 "max": round(max(lease_each, default=0), 2)},
            "heartbeats": beats, "statements_per_heartbeat": round(lease_per_beat, 2),
            "pollers": len(c.statements),
            "live_leases": {"min": min(live, default=0), "max": max(live, default=0)},
            "handovers": c.handovers,
            "rows_written_per_s": table_rows.get("pollers", 0.0),
        },
        "incident_write_ms": ms(incident_lat), "ticket_write_ms": ms(ticket_lat),
        "incident_in_store_ms": ms(c.in_store.get("open_incident", [])
                                   + c.in_store.get("close_incident", [])),
        "pollers_cpu_s": round(c.cpu_s, 1), "postgres_cpu_s": round(o.postgres_cpu_s, 1),
        "failed_writes": c.failed_writes, "undrained_writes": c.undrained,
        "pg_connections": o.connections, "idle_select1_ms": ms(o.idle_rtt),
        "checks": {"open_incident_mismatch": wrong_open, "duplicate_open": duplicate_open,
                   "foreign_incidents": foreign[:10], "tickets_not_once": tickets[0] - tickets[1],
                   "tickets_mixed": ticket_mix[0], "outbox_unsent": unsent,
                   "pages_lost": lost, "pages_twice": twice},
    }
    budgets = {
        "incident_write_p99_under_250ms": figures["incident_write_ms"]["p99"] < BUDGET_P99_MS
        and len(incident_lat) > 0,
        "one_open_incident_per_device_in_fault": not wrong_open and duplicate_open == 0,
        "sites_apart": not foreign and ticket_mix[0] == 0,
        "tickets_once": tickets[0] == tickets[1] and tickets[0] > 0,
        "no_page_lost_or_twice": unsent == 0 and lost == 0 and twice == 0 and outbox_rows > 0,
        "no_write_lost": c.failed_writes == 0 and c.undrained == 0,
        "no_handover_without_a_death": c.handovers == 0,
        "every_lease_held": bool(live) and min(live) == max(live) == len(c.statements),
        # Each poller pays the same few statements per heartbeat, whatever the number of halls
        # and pollers: the total is linear in pollers.
        "lease_traffic_linear_in_pollers": beats > 0 and lease_per_beat <= BUDGET_LEASE_PER_BEAT
        and max(lease_each) <= BUDGET_LEASE_SPREAD * min(lease_each),
    }
    return {"figures": figures, "budgets": budgets}


def main() -> None:
    from _verdict import finish  # bench/ is on the path when run as a script

    d = Plan()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=d.sites)
    ap.add_argument("--devices", type=int, default=d.devices)
    ap.add_argument("--pollers", type=int, default=d.pollers, help="per site")
    ap.add_argument("--duration", type=float, default=d.duration, help="seconds of polling")
    ap.add_argument("--interval", type=float, default=d.interval)
    ap.add_argument("--fault-rate", type=float, default=d.fault_rate)
    ap.add_argument("--processes", type=int, default=d.processes)
    ap.add_argument("--heartbeat", type=float, default=d.heartbeat)
    ap.add_argument("--lease", type=float, default=d.lease)
    a = ap.parse_args()
    plan = Plan(sites=a.sites, devices=a.devices, pollers=a.pollers, duration=a.duration,
                interval=a.interval, fault_rate=a.fault_rate, processes=a.processes,
                heartbeat=a.heartbeat, lease=a.lease)
    # Each poller keeps a small pool (its writer thread, the engine's and delivery's threads).
    conns = 100 + 6 * plan.sites * plan.pollers
    with postgres_server(max_connections=conns) as server:
        got = summarise(run(plan, server.new_database()))
    f = got["figures"]
    print(f"{plan.sites} halls x {plan.devices} devices, {plan.pollers} pollers each, "
          f"{f['window_s']} s: writes/s {f['writes_per_s']}; lease {f['lease']}; incident "
          f"write {f['incident_write_ms']}; {f['pg_connections']} connections", file=sys.stderr)
    finish("sites_pg", f, got["budgets"])


if __name__ == "__main__":
    main()
