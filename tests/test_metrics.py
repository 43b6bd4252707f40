"""/metrics from plain state: read back with registry.get_sample_value, checked by promtool."""

from __future__ import annotations

import asyncio
import math
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import (
    STATUSES,
    CachedRenderer,
    DeviceInfo,
    Snapshot,
    ValueSpec,
    device_rows,
    expose,
    make_registry,
    render,
    render_gzip,
)
from monitor.scheduler import DurationHistogram
from monitor.state import CheckPolicy, DeviceSpec, HallState
from monitor.store.aio import BatchSizes
from tests.conftest import require_tool

P = CheckPolicy()
INFO = {
    "sw-1f": DeviceInfo("switch", "一楼接入交换机", "1", "机房", "信息科", ""),
    "kiosk-1": DeviceInfo("kiosk", '自助终端 "1" \\ 号', "1", "大厅", "不动产中心", "sw-1f"),
    "printer-1": DeviceInfo("printer", "打印机", "2", "窗口区", "", "sw-1f"),
}
KINDS = {("sw-1f", "ping"): "icmp", ("kiosk-1", "ping"): "icmp", ("printer-1", "ping"): "icmp",
         ("printer-1", "snmp"): "snmp", ("sw-1f", "snmp"): "snmp"}
SPECS = {"toner_percent": ValueSpec(), "if_in_errors": ValueSpec("counter", "Inbound errors."),
         "if_oper_status": ValueSpec()}


class Source:
    """The lead's adapter in miniature: HallState + inventory labels + service counters."""

    def __init__(self) -> None:
        self.hall = HallState([
            DeviceSpec("sw-1f", None, "ping", {"ping": P, "snmp": P}),
            DeviceSpec("kiosk-1", "sw-1f", "ping", {"ping": P}),
            DeviceSpec("printer-1", "sw-1f", "ping", {"ping": P, "snmp": P}),
        ])
        self.info = dict(INFO)
        self.extra = Snapshot()
        self.calls = 0

    def snapshot(self) -> Snapshot:
        self.calls += 1
        rows = device_rows(self.hall, self.info, KINDS)
        return replace(self.extra, devices=rows, value_specs=SPECS)


def poll_all(src: Source) -> None:
    rtt = {"rtt_min_seconds": 0.0002, "rtt_avg_seconds": 0.0003, "rtt_max_seconds": 0.0004,
           "loss_ratio": 0.0}
    for dev in ("sw-1f", "kiosk-1", "printer-1"):
        src.hall.apply(dev, "ping", True, None, 1_700_000_000.0, rtt)
    src.hall.apply("printer-1", "snmp", True, None, 1_700_000_001.0,
                   {"toner_percent": 5.0, "if_in_errors": 7.0, "sysUpTime_raw": 1.0})
    src.hall.apply("sw-1f", "snmp", True, None, 1_700_000_001.0,
                   {"if_oper_status.1": 1.0, "if_oper_status.2": 2.0})


def test_every_known_series_exists_at_start_up_as_unknown() -> None:
    reg = make_registry(Source())
    get = reg.get_sample_value
    for status in STATUSES:
        want = 1.0 if status == "unknown" else 0.0
        assert get("hallmon_device_status",
                   {"device": "kiosk-1", "class": "kiosk", "status": status}) == want
    # Unknown is NaN, not 0: a restart must not look like an outage to `== 0` alert rules.
    for name, labels in [
        ("hallmon_device_up", {"device": "kiosk-1", "class": "kiosk"}),
        ("hallmon_check_up", {"device": "kiosk-1", "check": "ping"}),
        ("hallmon_device_last_poll_timestamp_seconds", {"device": "kiosk-1"}),
        ("hallmon_icmp_loss_ratio", {"device": "kiosk-1", "check": "ping"}),
    ]:
        value = get(name, labels)
        assert value is not None and math.isnan(value), name
    assert get("hallmon_check_flapping", {"device": "kiosk-1", "check": "ping"}) == 0.0
    assert get("hallmon_device_info", {
        "device": "kiosk-1", "class": "kiosk", "name": '自助终端 "1" \\ 号', "floor": "1",
        "area": "大厅", "owner": "不动产中心", "parent": "sw-1f"}) == 1.0


def test_values_after_a_poll() -> None:
    src = Source()
    poll_all(src)
    get = make_registry(src).get_sample_value
    assert get("hallmon_device_up", {"device": "printer-1", "class": "printer"}) == 1.0
    assert get("hallmon_device_status",
               {"device": "printer-1", "class": "printer", "status": "up"}) == 1.0
    assert get("hallmon_icmp_rtt_seconds",
               {"device": "sw-1f", "check": "ping", "stat": "avg"}) == 0.0003
    assert get("hallmon_icmp_loss_ratio", {"device": "sw-1f", "check": "ping"}) == 0.0
    assert get("hallmon_snmp_toner_percent", {"device": "printer-1", "check": "snmp"}) == 5.0
    assert get("hallmon_snmp_if_in_errors_total", {"device": "printer-1", "check": "snmp"}) == 7
    assert get("hallmon_snmp_if_oper_status",
               {"device": "sw-1f", "check": "snmp", "index": "2"}) == 2.0
    assert get("hallmon_snmp_sysUpTime_raw", {"device": "printer-1", "check": "snmp"}) is None
    assert get("hallmon_device_last_poll_timestamp_seconds", {"device": "printer-1"}) == \
        1_700_000_001.0
    assert get("hallmon_device_last_change_timestamp_seconds", {"device": "sw-1f"}) == \
        1_700_000_000.0


def test_a_removed_device_vanishes() -> None:
    src = Source()
    reg = make_registry(src)
    labels = {"device": "kiosk-1", "class": "kiosk", "status": "unknown"}
    assert reg.get_sample_value("hallmon_device_status", labels) == 1.0
    src.hall.replace([DeviceSpec("sw-1f", None, "ping", {"ping": P})], 1.0)
    assert reg.get_sample_value("hallmon_device_status", labels) is None
    assert reg.get_sample_value("hallmon_check_up", {"device": "kiosk-1", "check": "ping"}) \
        is None


def test_self_metrics() -> None:
    src = Source()
    hist = DurationHistogram()
    for seconds in (0.0005, 0.002, 0.002, 20.0):
        hist.observe(seconds)
    src.extra = Snapshot(
        tickets_open={"fault": 2, "inspection": 0}, tickets_total={"fault": 513},
        tickets_resolved={"fault": 511, "inspection": 0},
        ticket_resolution_seconds={"fault": 1_839_600, "inspection": 0},
        notifications={"dingtalk": 4}, notification_failures={"dingtalk": 1},
        poll_durations={"icmp": hist}, overdue_total=3, probe_errors={"snmp": 2},
        probe_batches=40, probe_batched_checks=8_000,
        reload_successful=False, reload_success_timestamp=1_700_000_000.0,
    )
    get = make_registry(src).get_sample_value
    assert get("hallmon_tickets_open", {"category": "inspection"}) == 0
    assert get("hallmon_tickets_total", {"category": "fault"}) == 513
    assert get("hallmon_tickets_resolved_total", {"category": "fault"}) == 511
    assert get("hallmon_tickets_resolved_total", {"category": "inspection"}) == 0
    assert get("hallmon_ticket_resolution_seconds_total", {"category": "fault"}) == 1_839_600
    assert get("hallmon_notifications_total", {"channel": "dingtalk"}) == 4
    assert get("hallmon_notification_failures_total", {"channel": "dingtalk"}) == 1
    assert get("hallmon_checks_overdue_total") == 3
    assert get("hallmon_probe_errors_total", {"kind": "snmp"}) == 2
    assert get("hallmon_probe_batches_total") == 40
    assert get("hallmon_probe_batched_checks_total") == 8_000
    assert get("hallmon_poll_duration_seconds_bucket", {"kind": "icmp", "le": "0.001"}) == 1
    assert get("hallmon_poll_duration_seconds_bucket", {"kind": "icmp", "le": "0.0025"}) == 3
    assert get("hallmon_poll_duration_seconds_bucket", {"kind": "icmp", "le": "+Inf"}) == 4
    assert get("hallmon_poll_duration_seconds_count", {"kind": "icmp"}) == 4
    assert get("hallmon_poll_duration_seconds_sum", {"kind": "icmp"}) == pytest.approx(20.0045)
    assert get("hallmon_config_last_reload_successful") == 0
    assert get("hallmon_config_last_reload_success_timestamp_seconds") == 1_700_000_000
    families = {f.name: f for f in text_string_to_metric_families(expose(src.snapshot())
                                                                  .decode())}
    (build,) = families["hallmon_build_info"].samples
    assert build.labels["version"] and build.labels["python"].count(".") == 2


def test_store_write_queue_metrics() -> None:
    src = Source()
    get = make_registry(src).get_sample_value
    # A bare snapshot: an empty queue, not "unknown" (nothing waits until a write is queued).
    assert get("hallmon_store_write_queue") == 0
    assert get("hallmon_store_write_oldest_seconds") == 0
    batches = BatchSizes()
    for writes in (1, 1, 3, 64, 36):  # two writes alone, then group commits
        batches.observe(writes)
    src.extra = Snapshot(
        store_write_queue=7, store_write_oldest_seconds=42.5,
        store_write_retries={"locked": 3, "connection": 11, "other": 0},
        store_writes={"ok": 104, "failed": 1}, store_batch_writes=batches,
    )
    assert get("hallmon_store_write_queue") == 7
    assert get("hallmon_store_write_oldest_seconds") == 42.5
    assert get("hallmon_store_write_retries_total", {"kind": "connection"}) == 11
    assert get("hallmon_store_write_retries_total", {"kind": "other"}) == 0  # listed at 0
    assert get("hallmon_store_writes_total", {"outcome": "ok"}) == 104
    assert get("hallmon_store_writes_total", {"outcome": "failed"}) == 1
    # Group commit: five transactions, 105 writes; the cumulative buckets up to BATCH_MAX.
    assert get("hallmon_store_batch_writes_count") == 5
    assert get("hallmon_store_batch_writes_sum") == 105
    assert [get("hallmon_store_batch_writes_bucket", {"le": le}) for le in (
        "1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "+Inf")] == [2, 2, 3, 3, 3, 3, 5, 5]
    types = {f.name: f.type for f in text_string_to_metric_families(
        expose(src.snapshot()).decode()) if f.name.startswith("hallmon_store_")}
    assert types == {"hallmon_store_write_queue": "gauge",
                     "hallmon_store_write_oldest_seconds": "gauge",
                     "hallmon_store_write_retries": "counter", "hallmon_store_writes": "counter",
                     "hallmon_store_batch_writes": "histogram"}


def test_never_the_global_registry_and_no_created_series() -> None:
    src = Source()
    poll_all(src)
    text = expose(src.snapshot()).decode()
    assert "_created" not in text
    assert not [m for m in REGISTRY.collect() if m.name.startswith("hallmon_")]


def test_promtool_check_metrics_is_clean() -> None:
    promtool = require_tool("promtool")
    src = Source()
    poll_all(src)
    hist = DurationHistogram()
    hist.observe(0.003)
    batches = BatchSizes()
    batches.observe(3)
    src.extra = Snapshot(tickets_open={"fault": 1}, tickets_total={"fault": 1},
                         tickets_resolved={"fault": 1}, ticket_resolution_seconds={"fault": 60},
                         notifications={"email": 1}, notification_failures={"email": 0},
                         poll_durations={"icmp": hist}, probe_errors={"icmp": 0},
                         store_write_queue=2, store_write_oldest_seconds=1.5,
                         store_write_retries={"locked": 1}, store_writes={"ok": 3},
                         store_batch_writes=batches, probe_batches=2, probe_batched_checks=9)
    proc = subprocess.run([promtool, "check", "metrics"], input=expose(src.snapshot()),
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, proc.stderr.decode()


async def test_render_is_off_loop_and_cached_renders_are_shared() -> None:
    src = Source()
    assert (await render(src)).startswith(b"# HELP hallmon_device_up")
    cached = CachedRenderer(src, max_age=3600)
    src.calls = 0
    bodies = await asyncio.gather(*(cached.render() for _ in range(5)))
    assert src.calls == 1 and len(set(bodies)) == 1
    await cached.render()
    assert src.calls == 1  # still fresh
    fresh = CachedRenderer(src, max_age=0)
    await fresh.render()
    await fresh.render()
    assert src.calls == 3


async def test_a_render_lets_its_rows_go_and_says_what_expose_says() -> None:
    """render() drops each row of its own snapshot once written (the render's memory peak,
    bench/memory.py); the text is the same as expose() of an equal snapshot, and a snapshot
    the caller keeps (expose) is left whole."""
    src = Source()
    poll_all(src)
    kept = src.snapshot()
    text = expose(kept)
    assert all(row is not None for row in kept.devices)  # expose() never touches its input
    taken: list[Snapshot] = []

    class Recording(Source):
        def snapshot(self) -> Snapshot:
            snap = super().snapshot()
            taken.append(snap)
            return snap

    rec = Recording()
    poll_all(rec)
    assert await render(rec) == text
    assert len(taken[0].devices) == 3 and all(row is None for row in taken[0].devices)


class ManySource:
    """2,000 devices with an ICMP check each and an SNMP check on every fifth."""

    def __init__(self, n: int = 2000) -> None:
        specs = [DeviceSpec(f"dev-{i:05d}", None, "ping",
                            {"ping": P} | ({"snmp": P} if i % 5 == 0 else {}))
                 for i in range(n)]
        self.hall = HallState(specs)
        self.info = {s.id: DeviceInfo("kiosk", f"终端{i}", "1", "大厅", "", "")
                     for i, s in enumerate(specs)}
        self.kinds = {(s.id, c): ("icmp" if c == "ping" else "snmp")
                      for s in specs for c in s.checks}
        rtt = {"rtt_min_seconds": 0.0002, "rtt_avg_seconds": 0.0003, "rtt_max_seconds": 0.0004,
               "loss_ratio": 0.0}
        for i, spec in enumerate(specs):
            self.hall.apply(spec.id, "ping", i % 7 != 0, None, 1_700_000_000.0, rtt)
            if "snmp" in spec.checks:
                self.hall.apply(spec.id, "snmp", True, None, 1_700_000_000.0,
                                {"toner_percent": 40.0, "if_in_errors": 3.0})
        self.calls = 0

    def snapshot(self) -> Snapshot:
        self.calls += 1
        return Snapshot(devices=device_rows(self.hall, self.info, self.kinds), value_specs=SPECS)


async def test_the_render_is_compressed_as_it_is_made_and_never_held_whole() -> None:
    """bench/memory.py found the /metrics render to be the daemon's peak (the whole text, its
    chunks and a copy at once). The text goes to the sink a bounded piece at a time, and the
    gzip body is exactly expose()'s text."""
    import gzip

    from monitor.metrics import _expose_steps

    src = ManySource()
    text = expose(src.snapshot())
    pieces: list[int] = []
    for _ in _expose_steps(src.snapshot(), "test", lambda b: pieces.append(len(b))):
        pass
    assert sum(pieces) > 500_000
    assert max(pieces) < sum(pieces) // 8, max(pieces)  # 500 devices of one family at most
    packed = await render_gzip(src)
    assert gzip.decompress(packed) == text and len(packed) < len(text) // 5
    # The cached body is the compressed one, shared by concurrent scrapes; plain clients get
    # it decompressed.
    cached = CachedRenderer(src, max_age=3600)
    src.calls = 0
    bodies = await asyncio.gather(*(cached.render_gzip() for _ in range(3)))
    assert src.calls == 1 and len(set(bodies)) == 1
    assert await cached.render() == text and src.calls == 1
