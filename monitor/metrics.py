"""/metrics: a custom collector that builds fresh families from a snapshot at scrape time.

Like client_python's ProcessCollector: inputs come from the constructor (a ``MetricsSource``),
never the global registry, never long-lived label children (they leak removed devices), no
``_created`` series. A removed device vanishes with the next scrape because nothing remembers it.

Decisions (and why):

- Unknown is NaN, not 0: ``hallmon_device_up``, ``hallmon_check_up`` and the poll/change
  timestamps exist from start-up (every known series at once) but hold NaN until the first
  hard state, so ``== 0`` alerts do not fire on a restart. The status one-hot says "unknown".
- ICMP round-trip times are one family, ``hallmon_icmp_rtt_seconds{device,check,stat}`` with
  stat = min|avg|max (as blackbox's ``phase`` label): one name for dashboards and rules, and
  the probe's multi-packet statistics are not a histogram. NaN when there was no reply.
- SNMP values are named by the class profile: value ``toner_percent`` ->
  ``hallmon_snmp_toner_percent{device,check}``; a counter spec adds ``_total``; walked values
  (``if_oper_status.3``) carry the walk index as label ``index``. Values without a spec are
  not exported (metric names never come from device data).
- Rendering 10k devices takes a few hundred ms of CPU: ``render_gzip`` runs it in steps on
  the event loop, compressing as it goes, and ``CachedRenderer`` shares one render between
  concurrent scrapes.
"""

from __future__ import annotations

import asyncio
import math
import platform
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.state import CheckState, CheckStatus, DeviceStatus, HallState

_NO_VALUES: Mapping[str, float] = MappingProxyType({})
STATUSES: tuple[str, ...] = tuple(s.value for s in DeviceStatus)
RTT_STATS: tuple[tuple[str, str], ...] = (
    ("min", "rtt_min_seconds"), ("avg", "rtt_avg_seconds"), ("max", "rtt_max_seconds"),
)
LOSS_VALUE = "loss_ratio"


# --- the snapshot: plain data the lead adapts the real state to ---------------------------------


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """How one SNMP value is exposed (from the class profile's OID spec)."""

    type: Literal["gauge", "counter"] = "gauge"
    help: str = ""


class CheckRow(NamedTuple):
    name: str
    kind: str  # "icmp" -> rtt/loss families; "snmp" -> named values; others: up/flapping only
    up: bool | None  # hard state; None while unknown
    flapping: bool = False
    values: Mapping[str, float] = _NO_VALUES


class DeviceRow(NamedTuple):
    id: str
    device_class: str
    status: str  # a DeviceStatus value
    up: bool | None  # reachability hard state; None while unknown
    name: str = ""
    floor: str = ""
    area: str = ""
    owner: str = ""
    parent: str = ""
    last_poll: float | None = None  # unix seconds
    last_change: float | None = None
    checks: Sequence[CheckRow] = ()


class PollerRow(NamedTuple):
    """One poller of the site as this poller sees it (issue 17)."""

    poller: str
    role: str  # self | peer | expired | standalone
    devices_owned: int | None  # None: expired
    last_heartbeat: float | None  # unix seconds; None: standalone


class HistogramLike(Protocol):
    """``counts`` per bucket, non-cumulative, one more than ``bounds`` (the last is +Inf).
    ``monitor.scheduler.DurationHistogram`` fits."""

    @property
    def bounds(self) -> Sequence[float]: ...
    @property
    def counts(self) -> Sequence[int]: ...
    @property
    def sum(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    devices: Sequence[DeviceRow] = ()
    value_specs: Mapping[str, ValueSpec] = field(default_factory=dict)
    tickets_open: Mapping[str, int] = field(default_factory=dict)  # by category, all listed
    tickets_total: Mapping[str, int] = field(default_factory=dict)
    # Entries into "resolved" and the sum of their resolved_at - opened_at, by category
    # (Store.ticket_counts()["resolved"] and ["resolution_seconds"]): MTTR over any range is
    # increase(seconds) / increase(resolved).
    tickets_resolved: Mapping[str, int] = field(default_factory=dict)
    ticket_resolution_seconds: Mapping[str, float] = field(default_factory=dict)
    notifications: Mapping[str, int] = field(default_factory=dict)  # by channel, all listed
    notification_failures: Mapping[str, int] = field(default_factory=dict)
    poll_durations: Mapping[str, HistogramLike] = field(default_factory=dict)  # by kind
    overdue_total: int = 0
    probe_errors: Mapping[str, int] = field(default_factory=dict)  # by kind
    reload_successful: bool = True
    reload_success_timestamp: float | None = None
    # Inputs beside polling: traps by (device, trap OID or "other", matched|unmatched), traps
    # dropped by reason, traps from addresses of no device, push beats by (device, check).
    traps_received: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    traps_dropped: Mapping[str, int] = field(default_factory=dict)
    trap_unknown_senders: int = 0
    # Trap events written to the store, and those dropped before (too many waiting: a flood,
    # the database away); both 0 without a store.
    trap_events: Mapping[str, int] = field(
        default_factory=lambda: {"stored": 0, "dropped": 0})
    heartbeats: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # Pollers sharing a site: push beats and traps relayed through the store, by (input,
    # direction): "out" received here for another poller's device, "in" applied here.
    relayed: Mapping[tuple[str, str], int] = field(default_factory=dict)
    pollers: Sequence[PollerRow] = ()
    pollers_live: int | None = None  # None: not reported (tests' bare snapshots)
    # The store's write queue (issue 10.3: incident and ticket writes are queued and retried
    # while the database is locked or away): writes waiting, the oldest one's age, retries by
    # kind of error and writes done by outcome, every kind and outcome listed from start-up.
    store_write_queue: int = 0
    store_write_oldest_seconds: float = 0.0
    store_write_retries: Mapping[str, int] = field(default_factory=dict)
    store_writes: Mapping[str, int] = field(default_factory=dict)
    # Group commit: the writes of each batch the queue committed (AsyncStore.batch_sizes);
    # None without a store.
    store_batch_writes: HistogramLike | None = None
    # Batched probe runs (ICMP: a wake-up's due checks go to the engine as one batch) and the
    # checks they carried (SchedulerStats.batches, .batched).
    probe_batches: int = 0
    probe_batched_checks: int = 0


class MetricsSource(Protocol):
    def snapshot(self) -> Snapshot: ...


# --- the exposition text: one fast pass over the snapshot -----------------------------------------

# name -> (type, help). The one place a family is described: ``expose`` writes from it and the
# collector parses ``expose``'s output, so the two can never disagree.
FAMILIES: dict[str, tuple[str, str]] = {
    "hallmon_device_up": ("gauge", "1 if the device's reachability check is hard up, 0 if "
                          "down, NaN until known."),
    "hallmon_device_status": ("gauge", "Device status, one-hot (maintenance > unreachable > "
                              "down > degraded > up; unknown until the first hard state)."),
    "hallmon_device_info": ("gauge", "Device metadata from the inventory."),
    "hallmon_device_last_poll_timestamp_seconds": (
        "gauge", "When the device's last probe result arrived (NaN: never)."),
    "hallmon_device_last_change_timestamp_seconds": (
        "gauge", "When the device's status last changed (NaN: not since start-up)."),
    "hallmon_check_up": ("gauge", "1 if the check is hard up, 0 if down, NaN until known."),
    "hallmon_check_flapping": ("gauge", "1 while the check is flapping (Nagios percent state "
                               "change over the last 21 results)."),
    "hallmon_icmp_rtt_seconds": ("gauge", "ICMP round-trip time of the last probe, by stat "
                                 "(min, avg, max; NaN: no reply)."),
    "hallmon_icmp_loss_ratio": ("gauge", "Share of the last probe's ICMP echo requests left "
                                "unanswered."),
    "hallmon_tickets_open": ("gauge", "Maintenance tickets not yet resolved, by category."),
    "hallmon_tickets_total": ("counter", "Maintenance tickets opened, by category."),
    "hallmon_tickets_resolved_total": ("counter", "Maintenance ticket resolutions, by category "
                                       "(a reopened ticket counts again when resolved again)."),
    "hallmon_ticket_resolution_seconds_total": (
        "counter", "Sum of resolved minus opened time over those resolutions, by category."),
    "hallmon_notifications_total": ("counter", "Notifications sent, by channel."),
    "hallmon_notification_failures_total": ("counter", "Notification deliveries that failed, "
                                            "by channel."),
    "hallmon_probe_errors_total": ("counter", "Probe calls that raised instead of returning a "
                                   "result, by probe kind."),
    "hallmon_checks_overdue_total": ("counter", "Check runs that started late (late runs are "
                                     "counted, never skipped)."),
    "hallmon_poll_duration_seconds": ("histogram", "Duration of probe calls, by probe kind."),
    "hallmon_probe_batches_total": ("counter", "Batched probe runs: the due checks of a "
                                    "batched kind (ICMP) woken together go to its engine as "
                                    "one batch."),
    "hallmon_probe_batched_checks_total": ("counter", "Checks those batches carried (divided "
                                           "by hallmon_probe_batches_total: the mean batch "
                                           "size)."),
    "hallmon_config_last_reload_successful": ("gauge", "1 if the last inventory (re)load "
                                              "succeeded."),
    "hallmon_config_last_reload_success_timestamp_seconds": (
        "gauge", "When the inventory was last loaded successfully."),
    "hallmon_build_info": ("gauge", "hallmon's version and Python."),
    "hallmon_traps_received_total": ("counter", "SNMP notifications from inventory devices, by "
                                     "device, trap OID (\"other\" when no rule names it) and "
                                     "outcome (matched a rule or not)."),
    "hallmon_traps_dropped_total": ("counter", "SNMP notifications dropped, by reason "
                                    "(malformed, bad_community, rate_limited, queue_full, "
                                    "v3_rejected, no_v3_user, not_owned: another poller of "
                                    "the site polls the device, relay_full: too many "
                                    "waiting to be relayed to it, relay_expired: relayed "
                                    "but claimed by no poller in time, duplicate: received "
                                    "here and through another poller)."),
    "hallmon_trap_events_total": ("counter", "Trap events (event rules) by outcome: stored "
                                  "(written to the store's history) or dropped (too many "
                                  "waiting for the store: a flood, the database away)."),
    "hallmon_trap_unknown_senders_total": ("counter", "SNMP notifications from addresses of no "
                                           "inventory device."),
    "hallmon_push_heartbeats_total": ("counter", "Push heartbeats received, by device and "
                                      "check."),
    "hallmon_inputs_relayed_total": ("counter", "Pollers sharing a site: push beats and traps "
                                     "relayed through the store, by input (push, trap) and "
                                     "direction (out: received here for another poller's "
                                     "device; in: another poller's, applied here)."),
    "hallmon_poller_info": ("gauge", "Pollers of the site with a lease row (issue 17); role "
                            "self, peer (lease live) or expired; standalone without leases."),
    "hallmon_poller_devices_owned": ("gauge", "Devices each live poller owns under the "
                                     "current assignment."),
    "hallmon_poller_live": ("gauge", "Pollers of the site holding a live lease, as this poller "
                            "sees them (0: not even its own, the database is out of reach)."),
    "hallmon_poller_last_heartbeat_timestamp_seconds": (
        "gauge", "When each poller last renewed its lease (the database's clock)."),
    "hallmon_store_write_queue": ("gauge", "Incident and ticket writes queued for the store "
                                  "and not yet landed (they wait while the database is locked "
                                  "or away, and are retried until they land)."),
    "hallmon_store_write_oldest_seconds": ("gauge", "How long the oldest queued store write has "
                                           "waited (0: none queued)."),
    "hallmon_store_write_retries_total": ("counter", "Queued store writes tried again after a "
                                          "database error, by kind (locked: another writer "
                                          "holds the database; connection: the server is "
                                          "away; other)."),
    "hallmon_store_writes_total": ("counter", "Queued store writes done, by outcome (ok: "
                                   "landed; failed: dropped, an error no retry can help)."),
    "hallmon_store_batch_writes": ("histogram", "Queued store writes per committed "
                                   "transaction (group commit; a write alone is 1, at most "
                                   "64): _count is the transactions, _sum their writes."),
}
_ONE, _ZERO, _NAN = "1", "0", "NaN"
# Per status: the six one-hot line endings, built once.
_ONEHOT: dict[str, tuple[str, ...]] = {
    cur: tuple(f',status="{s}"}} {_ONE if s == cur else _ZERO}\n' for s in STATUSES)
    for cur in STATUSES
}


def _esc(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return v


def _num(v: float | None) -> str:
    if v is None or v != v:
        return _NAN
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _flag(v: bool | None) -> str:
    return _NAN if v is None else (_ONE if v else _ZERO)


def _head(name: str, out: list[str], type_: str | None = None, help_: str | None = None) -> None:
    t, h = FAMILIES.get(name, (type_ or "gauge", help_ or ""))
    h = h.replace("\\", "\\\\").replace("\n", "\\n")
    out.append(f"# HELP {name} {h}\n# TYPE {name} {t}\n")


# Devices per flush: each family's lines become UTF-8 bytes (and go to the sink) this often, so
# the render's transient strings stay small (10k devices: ~100k line strings joined at once lifted
# RSS by ~35 MB per scrape, and freed small strings left pymalloc arenas pinned).
_FLUSH_EVERY = 500
# Devices per step of a render on the event loop (~5 ms at 10k devices' worth of series).
_SLICE = 100

Sink = Callable[[bytes], object]


def _fam_device_up(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        out.append(f'hallmon_device_up{{device="{_esc(d.id)}",class="{_esc(d.device_class)}"}} '
                   f"{_flag(d.up)}\n")


def _fam_status(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        prefix = f'hallmon_device_status{{device="{_esc(d.id)}",class="{_esc(d.device_class)}"'
        out.append("".join([prefix + end for end in _ONEHOT[d.status]]))


def _fam_info(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        out.append(f'hallmon_device_info{{device="{_esc(d.id)}",class="{_esc(d.device_class)}",'
                   f'name="{_esc(d.name)}",floor="{_esc(d.floor)}",area="{_esc(d.area)}",'
                   f'owner="{_esc(d.owner)}",parent="{_esc(d.parent)}"}} 1\n')


def _fam_poll(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        out.append(f'hallmon_device_last_poll_timestamp_seconds{{device="{_esc(d.id)}"}} '
                   f"{_num(d.last_poll)}\n")


def _fam_change(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        out.append(f'hallmon_device_last_change_timestamp_seconds{{device="{_esc(d.id)}"}} '
                   f"{_num(d.last_change)}\n")


def _fam_check_up(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        dev = _esc(d.id)
        for c in d.checks:
            out.append(f'hallmon_check_up{{device="{dev}",check="{_esc(c.name)}"}} '
                       f"{_flag(c.up)}\n")


def _fam_flapping(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        dev = _esc(d.id)
        for c in d.checks:
            out.append(f'hallmon_check_flapping{{device="{dev}",check="{_esc(c.name)}"}} '
                       f"{_ONE if c.flapping else _ZERO}\n")


def _fam_rtt(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        dev = _esc(d.id)
        for c in d.checks:
            if c.kind == "icmp":
                cl = f'device="{dev}",check="{_esc(c.name)}"'
                values = c.values
                for stat, key in RTT_STATS:
                    out.append(f'hallmon_icmp_rtt_seconds{{{cl},stat="{stat}"}} '
                               f"{_num(values.get(key))}\n")


def _fam_loss(rows: Sequence[DeviceRow], out: list[str]) -> None:
    for d in rows:
        dev = _esc(d.id)
        for c in d.checks:
            if c.kind == "icmp":
                out.append(f'hallmon_icmp_loss_ratio{{device="{dev}",check="{_esc(c.name)}"}} '
                           f"{_num(c.values.get(LOSS_VALUE))}\n")


# The per-device families in exposition order, each written by its own pass over the rows.
_DEVICE_FAMILIES: tuple[tuple[str, Callable[[Sequence[DeviceRow], list[str]], None]], ...] = (
    ("hallmon_device_up", _fam_device_up),
    ("hallmon_device_status", _fam_status),
    ("hallmon_device_info", _fam_info),
    ("hallmon_device_last_poll_timestamp_seconds", _fam_poll),
    ("hallmon_device_last_change_timestamp_seconds", _fam_change),
    ("hallmon_check_up", _fam_check_up),
    ("hallmon_check_flapping", _fam_flapping),
    ("hallmon_icmp_rtt_seconds", _fam_rtt),
    ("hallmon_icmp_loss_ratio", _fam_loss),
)


def expose(snap: Snapshot, version: str = __version__) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of a snapshot.

    Written for speed (10k devices, ~180k series): lines are f-strings collected per family and
    encoded every ``_FLUSH_EVERY`` devices; written for memory too: see ``_expose_steps``.
    """
    out: list[bytes] = []
    for _ in _expose_steps(snap, version, out.append):
        pass
    return b"".join(out)


def _expose_steps(snap: Snapshot, version: str, sink: Sink,
                  release_rows: bool = False) -> Iterator[None]:
    """``expose`` in steps of ``_SLICE`` devices (a yield between steps), the text handed to
    ``sink`` in order, a chunk at a time. ``render`` runs it on the event loop.

    One pass over the rows per family, so each family's text goes to the sink as it is made
    and is never held whole: ``render``'s sink is a gzip stream, so the 13 MB of text of 10k
    devices never exist at once (bench/memory.py: the render's transient was the daemon's
    peak). Only the SNMP value families (few devices, names known late) are buffered.

    ``release_rows`` (the caller owns the snapshot and its list of rows): the last pass drops
    each row from the list once read (10k devices: ~5 MB of rows)."""
    rows = snap.devices
    owned: list[DeviceRow | None] | None = (
        cast("list[DeviceRow | None]", rows) if release_rows and isinstance(rows, list) else None
    )
    specs = snap.value_specs
    head: list[str] = []
    lines: list[str] = []
    for name, write in _DEVICE_FAMILIES:
        _head(name, head)
        sink("".join(head).encode())
        head.clear()
        for start in range(0, len(rows), _SLICE):
            write(rows[start:start + _SLICE], lines)
            if (start + _SLICE) % _FLUSH_EVERY == 0:
                sink("".join(lines).encode())
                lines.clear()
            yield
        sink("".join(lines).encode())
        lines.clear()
    named: dict[str, list[str]] = {}
    for n, d in enumerate(rows, 1):
        if owned is not None:
            owned[n - 1] = None  # d keeps it alive while it is read
        dev = _esc(d.id)
        for c in d.checks:
            if c.kind == "snmp" and c.values:
                _snmp_lines(named, specs, f'device="{dev}",check="{_esc(c.name)}"', c.values)
        if n % _SLICE == 0:
            yield
    for name in sorted(named):
        spec = specs[name.removeprefix("hallmon_snmp_").removesuffix("_total")]
        _head(name, head, spec.type, spec.help or "SNMP value from the device class profile.")
        sink("".join(head).encode())
        head.clear()
        family = named.pop(name)
        sink("".join(family).encode())
        del family
    _service(snap, version, head)
    sink("".join(head).encode())


def _snmp_lines(named: dict[str, list[str]], specs: Mapping[str, ValueSpec], cl: str,
                values: Mapping[str, float]) -> None:
    for key, value in values.items():
        base, dot, index = key.partition(".")
        spec = specs.get(base)
        if spec is None:
            continue  # metric names never come from device data
        name = f"hallmon_snmp_{base}_total" if spec.type == "counter" else f"hallmon_snmp_{base}"
        labels = f'{cl},index="{_esc(index)}"' if dot else cl
        named.setdefault(name, []).append(f"{name}{{{labels}}} {_num(value)}\n")


def _pollers(snap: Snapshot, out: list[str]) -> None:
    if snap.pollers_live is None:
        return
    _head("hallmon_poller_live", out)
    out.append(f"hallmon_poller_live {snap.pollers_live}\n")
    _head("hallmon_poller_info", out)
    for p in snap.pollers:
        out.append(f'hallmon_poller_info{{poller="{_esc(p.poller)}",role="{_esc(p.role)}"}} 1\n')
    _head("hallmon_poller_devices_owned", out)
    for p in snap.pollers:
        if p.devices_owned is not None:
            out.append(f'hallmon_poller_devices_owned{{poller="{_esc(p.poller)}"}} '
                       f"{p.devices_owned}\n")
    _head("hallmon_poller_last_heartbeat_timestamp_seconds", out)
    for p in snap.pollers:
        if p.last_heartbeat is not None:
            out.append(f'hallmon_poller_last_heartbeat_timestamp_seconds{{poller='
                       f'"{_esc(p.poller)}"}} {_num(p.last_heartbeat)}\n')


def _service(snap: Snapshot, version: str, out: list[str]) -> None:
    for name, label, data in (
        ("hallmon_tickets_open", "category", snap.tickets_open),
        ("hallmon_tickets_total", "category", snap.tickets_total),
        ("hallmon_tickets_resolved_total", "category", snap.tickets_resolved),
        ("hallmon_ticket_resolution_seconds_total", "category", snap.ticket_resolution_seconds),
        ("hallmon_notifications_total", "channel", snap.notifications),
        ("hallmon_notification_failures_total", "channel", snap.notification_failures),
        ("hallmon_probe_errors_total", "kind", snap.probe_errors),
    ):
        _head(name, out)
        out += [f'{name}{{{label}="{_esc(k)}"}} {_num(data[k])}\n' for k in sorted(data)]
    _head("hallmon_checks_overdue_total", out)
    out.append(f"hallmon_checks_overdue_total {_num(snap.overdue_total)}\n")
    name = "hallmon_poll_duration_seconds"
    _head(name, out)
    for kind in sorted(snap.poll_durations):
        _histogram(name, f'kind="{_esc(kind)}"', snap.poll_durations[kind], out)
    for name, value in (("hallmon_probe_batches_total", snap.probe_batches),
                        ("hallmon_probe_batched_checks_total", snap.probe_batched_checks)):
        _head(name, out)
        out.append(f"{name} {value}\n")
    _head("hallmon_config_last_reload_successful", out)
    out.append(f"hallmon_config_last_reload_successful {_flag(snap.reload_successful)}\n")
    _head("hallmon_config_last_reload_success_timestamp_seconds", out)
    out.append("hallmon_config_last_reload_success_timestamp_seconds "
               f"{_num(snap.reload_success_timestamp)}\n")
    _inputs(snap, out)
    _pollers(snap, out)
    _store(snap, out)
    _head("hallmon_build_info", out)
    out.append(f'hallmon_build_info{{version="{_esc(version)}",'
               f'python="{platform.python_version()}"}} 1\n')


def _histogram(name: str, labels: str, h: HistogramLike, out: list[str]) -> None:
    """One histogram's series (``labels``: its own, rendered, "" for none)."""
    sep = "," if labels else ""
    acc = 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        acc += n
        out.append(f'{name}_bucket{{{labels}{sep}le="{_num(bound)}"}} {acc}\n')
    total = sum(h.counts)
    out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {total}\n')
    braces = f"{{{labels}}}" if labels else ""
    out.append(f"{name}_sum{braces} {_num(h.sum)}\n")
    out.append(f"{name}_count{braces} {total}\n")


def _store(snap: Snapshot, out: list[str]) -> None:
    _head("hallmon_store_write_queue", out)
    out.append(f"hallmon_store_write_queue {snap.store_write_queue}\n")
    _head("hallmon_store_write_oldest_seconds", out)
    out.append(f"hallmon_store_write_oldest_seconds {_num(snap.store_write_oldest_seconds)}\n")
    for name, label, data in (
        ("hallmon_store_write_retries_total", "kind", snap.store_write_retries),
        ("hallmon_store_writes_total", "outcome", snap.store_writes),
    ):
        _head(name, out)
        out += [f'{name}{{{label}="{_esc(k)}"}} {data[k]}\n' for k in sorted(data)]
    _head("hallmon_store_batch_writes", out)
    if snap.store_batch_writes is not None:
        _histogram("hallmon_store_batch_writes", "", snap.store_batch_writes, out)


def _inputs(snap: Snapshot, out: list[str]) -> None:
    name = "hallmon_traps_received_total"
    _head(name, out)
    out += [f'{name}{{device="{_esc(d)}",oid="{_esc(o)}",outcome="{_esc(r)}"}} {n}\n'
            for (d, o, r), n in sorted(snap.traps_received.items())]
    name = "hallmon_traps_dropped_total"
    _head(name, out)
    out += [f'{name}{{reason="{_esc(r)}"}} {n}\n' for r, n in sorted(snap.traps_dropped.items())]
    _head("hallmon_trap_unknown_senders_total", out)
    out.append(f"hallmon_trap_unknown_senders_total {snap.trap_unknown_senders}\n")
    name = "hallmon_trap_events_total"
    _head(name, out)
    out += [f'{name}{{outcome="{o}"}} {n}\n' for o, n in sorted(snap.trap_events.items())]
    name = "hallmon_push_heartbeats_total"
    _head(name, out)
    out += [f'{name}{{device="{_esc(d)}",check="{_esc(c)}"}} {n}\n'
            for (d, c), n in sorted(snap.heartbeats.items())]
    if snap.relayed:
        name = "hallmon_inputs_relayed_total"
        _head(name, out)
        out += [f'{name}{{input="{_esc(i)}",direction="{_esc(d)}"}} {n}\n'
                for (i, d), n in sorted(snap.relayed.items())]


# --- the prometheus_client side -------------------------------------------------------------------


class HallCollector(Collector):
    """Fresh families per collect, parsed from ``expose`` (one renderer, one truth). For a
    private ``CollectorRegistry(auto_describe=False)``, never the global one; /metrics serves
    ``expose`` directly (``render``), which is several times faster than generate_latest."""

    def __init__(self, source: MetricsSource, version: str = __version__) -> None:
        self.source = source
        self.version = version

    def collect(self) -> Iterator[Metric]:
        text = expose(self.source.snapshot(), self.version).decode()
        yield from text_string_to_metric_families(text)


def make_registry(source: MetricsSource) -> CollectorRegistry:
    """A private registry holding only the hall collector (tests, ad-hoc tools)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HallCollector(source))
    return registry


# --- rendering off the event loop ---------------------------------------------------------------

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_text(source: MetricsSource) -> bytes:
    return expose(source.snapshot())


async def render_gzip(source: MetricsSource) -> bytes:
    """Snapshot, then the text gzip-compressed (level 1) in steps of ``_SLICE`` devices on the
    event loop, yielding to polling between steps.

    Compressed as it is made: 10k devices' 13 MB of text become ~1 MB and the text is never
    held whole (bench/memory.py: the render's transient set the daemon's peak RSS). Prometheus
    asks for gzip on every scrape; a client that does not gets ``CachedRenderer.render``.

    Not a worker thread: the poll loop releases the GIL on every socket call (each ICMP
    send and receive) and then waits up to the switch interval (5 ms) to get it back from a
    thread that renders, so a 10k-device render in a thread stretched probe batches past
    their timeouts (bench/daemon.py, issue 12). Steps cost the same CPU and hold the loop
    a few milliseconds at a time."""
    snap = source.snapshot()
    await asyncio.sleep(0)
    packer = zlib.compressobj(1, zlib.DEFLATED, _GZIP_WBITS)
    out: list[bytes] = []

    def sink(chunk: bytes) -> None:
        packed = packer.compress(chunk)
        if packed:
            out.append(packed)

    for _ in _expose_steps(snap, __version__, sink, release_rows=True):  # a snapshot of its own
        await asyncio.sleep(0)
    out.append(packer.flush())
    return b"".join(out)


_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip member (header mtime 0), as ``gzip.compress``


async def render(source: MetricsSource) -> bytes:
    """``render_gzip``'s text, plain."""
    return zlib.decompress(await render_gzip(source), _GZIP_WBITS)


class CachedRenderer:
    """One render shared by concurrent scrapes and reused for ``max_age`` seconds: an HA pair
    of Prometheus servers scraping 10k devices costs one render, not two. The body is held
    gzip-compressed (10k devices: ~1 MB instead of 13 MB)."""

    def __init__(self, source: MetricsSource, max_age: float = 1.0) -> None:
        self.source = source
        self.max_age = max_age
        self._body = b""
        self._at = -math.inf
        self._inflight: asyncio.Future[bytes] | None = None

    async def render(self) -> bytes:
        """The plain text (for clients that do not accept gzip)."""
        return zlib.decompress(await self.render_gzip(), _GZIP_WBITS)

    async def render_gzip(self) -> bytes:
        if time.monotonic() - self._at < self.max_age:
            return self._body
        if self._inflight is None:
            self._body = b""  # stale: let it go before the next one is built
            self._inflight = asyncio.ensure_future(render_gzip(self.source))
            try:
                self._body = await asyncio.shield(self._inflight)
                self._at = time.monotonic()
            finally:
                self._inflight = None
            # Between scrapes (15-60 s) the body is dead weight.
            asyncio.get_running_loop().call_later(self.max_age, self._forget)
            return self._body
        return await asyncio.shield(self._inflight)

    def _forget(self) -> None:
        if time.monotonic() - self._at >= self.max_age:
            self._body = b""


# --- an adapter from HallState ------------------------------------------------------------------


class DeviceInfo(NamedTuple):
    """What the inventory knows of a device, for labels (the lead fills it from Device)."""

    device_class: str
    name: str = ""
    floor: str = ""
    area: str = ""
    owner: str = ""
    parent: str = ""


def device_rows(hall: HallState, info: Mapping[str, DeviceInfo],
                kinds: Mapping[tuple[str, str], str]) -> list[DeviceRow]:
    """Rows for every device of ``hall``. Safe to call from the render thread while the loop
    keeps applying results: it works on C-level copies of the state dicts (atomic under the
    GIL) whose values are immutable."""
    checks = dict(hall.checks)
    statuses = dict(hall.statuses)
    since = dict(hall.since)
    per_device: dict[str, list[tuple[str, CheckState]]] = {}
    for (dev, name), st in checks.items():
        per_device.setdefault(dev, []).append((name, st))
    rows = []
    for dev, spec in list(hall.devices.items()):
        meta = info.get(dev)
        if meta is None or dev not in statuses:
            continue
        check_rows = []
        last_poll: float | None = None
        reach_up: bool | None = None
        for name, state in per_device.get(dev, ()):
            up = None if state.hard is CheckStatus.UNKNOWN else state.hard is CheckStatus.UP
            last = state.last
            if last is not None and (last_poll is None or last.at > last_poll):
                last_poll = last.at
            if name == spec.reachability:
                reach_up = up
            check_rows.append(CheckRow(name, kinds.get((dev, name), ""), up, state.flapping,
                                       last.values if last is not None else _NO_VALUES))
        rows.append(DeviceRow(
            id=dev, device_class=meta.device_class, status=statuses[dev][0].value, up=reach_up,
            name=meta.name, floor=meta.floor, area=meta.area, owner=meta.owner,
            parent=meta.parent, last_poll=last_poll, last_change=since.get(dev),
            checks=check_rows,
        ))
    return rows


__all__ = [
    "CachedRenderer",
    "CheckRow",
    "DeviceInfo",
    "DeviceRow",
    "HallCollector",
    "HistogramLike",
    "MetricsSource",
    "Snapshot",
    "ValueSpec",
    "device_rows",
    "make_registry",
    "render",
    "render_gzip",
    "render_text",
    "expose",
    "CONTENT_TYPE",
    "FAMILIES",
]
