"""The engine as stories: grouping, one notice per incident, repeats, recovery, suppression,
quiet hours, rate limits. The clock is driven: ``plan(now)`` is called at chosen instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.alerts.base import AlertEvent, Location, Message
from monitor.alerts.engine import Engine
from monitor.inventory.notifications import Notifications
from tests.test_alerts_outbox import MemoryOutbox

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai, a working morning
S = timedelta(seconds=1)

CHANNELS = {
    "dt": {"type": "dingtalk", "webhook": "http://127.0.0.1:1/robot/send?access_token=t"},
    "wc": {"type": "wecom", "webhook": "http://127.0.0.1:1/cgi-bin/webhook/send?key=k"},
    "am": {"type": "alertmanager", "url": "http://127.0.0.1:1"},
}


def config(**route: Any) -> Notifications:
    routes = [
        {"name": "it", "channels": ["dt"], "group_wait": 5.0, "repeat_interval": 3600.0, **route},
        {"name": "kiosk-owners", "match": {"classes": ["kiosk"]}, "channels": ["wc"],
         "group_wait": 5.0, "repeat_interval": 3600.0},
    ]
    return Notifications.model_validate({"channels": CHANNELS, "routes": routes,
                                         "link_base": "http://hall/api/v1/devices/"})


def ev(device: str, status: str, at: datetime, previous: str = "up", cls: str = "kiosk",
       parent: str | None = "sw-1f-a", incident: int | None = None) -> AlertEvent:
    return AlertEvent(device, f"设备{device}", cls, status, previous, at,  # type: ignore[arg-type]
                      "3 次 ICMP 无响应" if status == "down" else "", Location(1, "大厅"),
                      "不动产中心", parent, incident)


def switch(status: str, at: datetime, previous: str = "up") -> AlertEvent:
    return ev("sw-1f-a", status, at, previous, cls="switch", parent="sw-core", incident=1)


class Clock:
    """The engine's clock; tests move it before submitting (the group window opens then)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


KIOSKS = ["kiosk-1f-01", "kiosk-1f-02", "kiosk-1f-03"]


def by_route(pairs: list[tuple[str, Message]]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for _channel, message in pairs:
        out.setdefault(message.route, []).append(message)
    return out


def test_floor_switch_outage_is_one_grouped_message_per_route_then_one_recovery() -> None:
    clock = Clock()
    engine = Engine(config(), MemoryOutbox(), clock=clock)
    engine.submit(switch("down", T0))
    for k in KIOSKS:
        engine.submit(ev(k, "unreachable", T0 + S))
    assert engine.plan(T0 + 2 * S) == []  # inside group_wait: nothing yet
    sent = by_route(engine.plan(T0 + 6 * S))
    [it], [owners] = sent["it"], sent["kiosk-owners"]
    assert it.status == "firing" and "设备sw-1f-a" in it.title and "+3" in it.title
    assert all(f"设备{k}" in it.text for k in KIOSKS)
    assert [a.labels["device"] for a in it.alerts] == ["sw-1f-a"]  # children do not page
    assert "设备sw-1f-a" not in owners.title and "sw-1f-a" in owners.text  # parent named
    assert all(f"设备{k}" in owners.text for k in KIOSKS)
    assert engine.plan(T0 + 60 * S) == []

    back = clock.now = T0 + 12 * 60 * S
    engine.submit(switch("up", back, "down"))
    for k in KIOSKS:
        engine.submit(ev(k, "up", back + S, "unreachable"))
    sent = by_route(engine.plan(back + 10 * S))
    [it], [owners] = sent["it"], sent["kiosk-owners"]
    assert it.status == "resolved" and "12分钟" in it.title
    assert owners.status == "resolved" and all(f"设备{k}" in owners.text for k in KIOSKS)
    assert engine.plan(back + 3600 * S) == []  # nothing fires: no repeats


def test_one_notice_per_incident_and_repeats_while_firing() -> None:
    engine = Engine(config(), MemoryOutbox(), clock=lambda: T0)
    engine.submit(ev("kiosk-1f-01", "down", T0, incident=5))
    engine.plan(T0)
    assert len(engine.plan(T0 + 5 * S)) == 2  # it + kiosk-owners
    engine.submit(ev("kiosk-1f-01", "down", T0, incident=5))  # re-submitted: same incident
    assert engine.plan(T0 + 20 * S) == []
    repeats = engine.plan(T0 + 3605 * S)
    assert [m.kind for _, m in repeats] == ["repeat", "repeat"]
    assert "仍未恢复" in repeats[0][1].title
    assert engine.plan(T0 + 3700 * S) == []
    assert len(engine.plan(T0 + 7205 * S)) == 2


def test_maintenance_is_silent_and_ends_an_incident_without_a_recovery() -> None:
    clock = Clock()
    engine = Engine(config(), MemoryOutbox(), clock=clock)
    engine.submit(ev("kiosk-1f-01", "maintenance", T0))
    assert engine.plan(T0 + 10 * S) == []
    clock.now = T0 + 10 * S
    engine.submit(ev("kiosk-1f-02", "down", T0 + 10 * S))
    engine.plan(T0 + 10 * S)
    assert len(engine.plan(T0 + 15 * S)) == 2
    clock.now = T0 + 20 * S
    engine.submit(ev("kiosk-1f-02", "maintenance", T0 + 20 * S, "down"))
    engine.plan(T0 + 20 * S)
    assert engine.plan(T0 + 25 * S) == []
    assert engine.firing("it") == {}


def test_flapping_pages_once() -> None:
    engine = Engine(config(), MemoryOutbox(), clock=lambda: T0)
    engine.submit(ev("kiosk-1f-01", "flapping", T0, incident=9))
    engine.plan(T0)
    [(_, first), _] = engine.plan(T0 + 5 * S)
    assert "频繁抖动" in first.title and first.alerts[0].labels["alertname"] == "HallDeviceFlapping"
    engine.submit(ev("kiosk-1f-01", "flapping", T0, incident=9))
    assert engine.plan(T0 + 10 * S) == []


def test_quiet_hours_defer_and_aggregate_never_drop() -> None:
    night = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    engine = Engine(config(quiet_hours={"start": "22:00", "end": "07:30"}), MemoryOutbox(),
                    clock=lambda: night)
    engine.submit(ev("kiosk-1f-01", "down", night, cls="camera"))
    engine.plan(night)
    assert engine.plan(night + 5 * S) == []
    engine.submit(ev("kiosk-1f-01", "up", night + 600 * S, "down", cls="camera"))
    engine.plan(night + 600 * S)
    assert engine.plan(night + 605 * S) == []
    morning = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # 07:30 next day in Shanghai
    assert engine.plan(morning - S) == []
    [(channel, digest)] = engine.plan(morning)
    assert channel == "dt" and digest.kind == "digest"
    assert "故障" in digest.text and "恢复" in digest.text


def test_rate_limit_aggregates_the_excess_into_one_message() -> None:
    engine = Engine(config(group_wait=0.0), MemoryOutbox(), clock=lambda: T0)
    sent: list[tuple[str, Message]] = []
    for i in range(25):  # 25 separate outages inside one minute, camera class: route "it" only
        at = T0 + i * 2 * S
        engine.submit(ev(f"cam-{i:02}", "down", at, cls="camera"))
        sent += engine.plan(at)
    assert len(sent) == 20  # DingTalk allows 20 a minute
    assert engine.plan(T0 + 59 * S) == []
    [(_, digest)] = engine.plan(T0 + 61 * S)
    assert digest.kind == "digest" and "汇总 5 条" in digest.title
    named = {a.labels["device"] for _, m in [*sent, ("dt", digest)] for a in m.alerts}
    assert named == {f"cam-{i:02}" for i in range(25)}


def test_alertmanager_is_refreshed_every_minute_and_resolved() -> None:
    clock = Clock()
    engine = Engine(config(channels=["dt", "am"]), MemoryOutbox(), clock=clock)
    engine.submit(ev("cam-1", "down", T0, cls="camera"))
    engine.plan(T0)
    assert sorted(c for c, _ in engine.plan(T0 + 5 * S)) == ["am", "dt"]
    assert engine.plan(T0 + 30 * S) == []
    refreshes = [engine.plan(T0 + (5 + 60 * n) * S) for n in (1, 2, 3)]
    assert all([c for c, _ in r] == ["am"] for r in refreshes)
    assert len({r[0][1].key for r in refreshes}) == 3  # each push its own outbox row
    clock.now = T0 + 200 * S
    engine.submit(ev("cam-1", "up", T0 + 200 * S, "down", cls="camera"))
    engine.plan(T0 + 200 * S)
    resolved = engine.plan(T0 + 205 * S)
    assert sorted(c for c, _ in resolved) == ["am", "dt"]
    assert resolved[0][1].alerts[0].status == "resolved"
    assert engine.plan(T0 + 400 * S) == []


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_messages_carry_name_class_location_owner_since_cause_and_link(lang: str) -> None:
    cfg = config().model_copy(update={"language": lang})
    engine = Engine(cfg, MemoryOutbox(), clock=lambda: T0)
    engine.submit(ev("kiosk-1f-03", "down", T0))
    engine.plan(T0)
    [(_, m), _] = engine.plan(T0 + 65 * S)
    for part in ["设备kiosk-1f-03", "kiosk", "大厅", "不动产中心", "10:00:00",
                 "3 次 ICMP 无响应", "http://hall/api/v1/devices/kiosk-1f-03"]:
        assert part in m.text, part
    assert ("1分钟" if lang == "zh" else "1m") in m.text


async def test_tick_writes_the_outbox_before_delivery_with_stable_keys() -> None:
    outbox = MemoryOutbox()
    woken: list[int] = []
    now = [T0]
    engine = Engine(config(group_wait=0.0), outbox, clock=lambda: now[0],
                    on_enqueued=lambda: woken.append(1))
    engine.submit(ev("cam-1", "down", T0, cls="camera", incident=3))
    assert await engine.tick() == 1
    assert woken == [1]
    [item] = outbox.items.values()
    assert item.key.startswith("it:notice:") and item.key.endswith("/dt")
    assert Message.from_payload(item.payload).alerts[0].labels["device"] == "cam-1"


def test_down_giving_way_to_degraded_resolves_the_down_alert() -> None:
    """Issue 10, point 5: a camera DOWN, then DEGRADED (another incident) without passing UP:
    the DOWN alert must resolve for Alertmanager and webhook receivers (their alert names
    differ per status), while the chat message tells the new status only."""
    clock = Clock()
    engine = Engine(config(channels=["dt", "am"]), MemoryOutbox(), clock=clock)
    engine.submit(ev("cam-1", "down", T0, cls="camera", incident=7))
    engine.plan(T0)
    engine.plan(T0 + 5 * S)
    later = clock.now = T0 + 100 * S
    engine.submit(ev("cam-1", "degraded", later, "down", cls="camera", incident=8))
    engine.plan(later)
    sent = dict(engine.plan(later + 5 * S))
    alerts = {(a.labels["alertname"], a.status) for a in sent["am"].alerts}
    assert alerts == {("HallDeviceDown", "resolved"), ("HallDeviceDegraded", "firing")}
    ended = next(a for a in sent["am"].alerts if a.status == "resolved")
    assert ended.ends_at == later.isoformat()
    assert "恢复" not in sent["dt"].title  # the chat says "degraded", not "recovered"

    # Both within one group window: the DOWN was never told, so nothing to resolve.
    engine2 = Engine(config(channels=["am"]), MemoryOutbox(), clock=Clock())
    engine2.submit(ev("cam-2", "down", T0, cls="camera", incident=9))
    engine2.submit(ev("cam-2", "degraded", T0 + S, "down", cls="camera", incident=10))
    engine2.plan(T0)
    [(_, only)] = engine2.plan(T0 + 6 * S)
    assert [(a.labels["alertname"], a.status) for a in only.alerts] == [
        ("HallDeviceDegraded", "firing")]


# ---- issue 10: short outages are told; nothing due is lost by a restart or a failed write ----


def test_a_down_that_recovers_inside_the_group_window_is_still_told() -> None:
    clock = Clock()
    engine = Engine(config(), MemoryOutbox(), clock=clock)
    engine.submit(ev("kiosk-1f-01", "down", T0))
    clock.now = T0 + 4 * S
    engine.submit(ev("kiosk-1f-01", "up", T0 + 4 * S, "down"))
    sent = by_route(engine.plan(T0 + 6 * S))
    [it] = sent["it"]
    assert it.kind == "notice" and it.title == "[hallmon] 故障4秒，已恢复：设备kiosk-1f-01"
    assert "3 次 ICMP 无响应" in it.text  # the cause of the short outage
    [item] = it.alerts
    assert (item.status, item.starts_at, item.ends_at) == (
        "resolved", T0.isoformat(), (T0 + 4 * S).isoformat())
    assert engine.firing("it") == {} and engine.plan(T0 + 3700 * S) == []


def test_down_up_down_inside_one_window_tells_both_and_pages_the_second() -> None:
    cfg = config().model_copy(update={"language": "en"})
    clock = Clock()
    engine = Engine(cfg, MemoryOutbox(), clock=clock)
    for i, (status, prev) in enumerate([("down", "up"), ("up", "down"), ("down", "up")]):
        engine.submit(ev("kiosk-1f-01", status, T0 + i * S, prev))
    [(_, it), _] = engine.plan(T0 + 6 * S)
    assert it.title.startswith("[hallmon] DOWN：")
    assert "DOWN 1s, RECOVERED" in it.text
    assert [a.status for a in it.alerts] == ["firing", "resolved"]
    assert list(engine.firing("it")) == ["kiosk-1f-01"]


def test_a_child_back_up_inside_the_window_is_not_listed_behind_its_parent() -> None:
    engine = Engine(config(), MemoryOutbox(), clock=lambda: T0)
    engine.submit(switch("down", T0))
    engine.submit(ev("kiosk-1f-01", "unreachable", T0 + S))
    engine.submit(ev("kiosk-1f-02", "unreachable", T0 + S))
    engine.submit(ev("kiosk-1f-02", "up", T0 + 2 * S, "unreachable"))
    [it] = by_route(engine.plan(T0 + 6 * S))["it"]
    assert "设备kiosk-1f-01" in it.text and "设备kiosk-1f-02" not in it.text


async def test_a_new_engine_resumes_the_window_the_held_messages_and_the_paging() -> None:
    night = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai: quiet hours
    cfg = config(quiet_hours={"start": "22:00", "end": "07:30"})
    outbox, clock = MemoryOutbox(), Clock(night)
    first = Engine(cfg, outbox, clock=clock)
    first.submit(ev("cam-1", "down", night, cls="camera"))
    clock.now = night + 10 * S
    await first.tick()  # the notice is held (quiet hours)
    first.submit(ev("cam-2", "down", clock.now, cls="camera"))
    await first.tick()  # cam-2 waits in its group window
    assert outbox.items == {}

    second = Engine(cfg, outbox, clock=clock)  # a restart
    assert await second.load() is True
    clock.now = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # 07:30: quiet hours end
    assert await second.tick() == 1
    [item] = outbox.items.values()
    digest = Message.from_payload(item.payload)
    assert {a.labels["device"] for a in digest.alerts} == {"cam-1", "cam-2"}
    assert set(second.firing("it")) == {"cam-1", "cam-2"}
    # The paging survived too: the recovery is told after yet another restart.
    third = Engine(cfg, outbox, clock=clock)
    await third.load()
    third.submit(ev("cam-1", "up", clock.now, "down", cls="camera"))
    clock.now += 6 * S
    await third.tick()
    last = Message.from_payload(list(outbox.items.values())[-1].payload)
    assert last.status == "resolved" and last.alerts[0].labels["device"] == "cam-1"


async def test_resume_pages_an_open_incident_the_snapshot_never_knew() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    first = Engine(config(group_wait=0.0), outbox, clock=clock)
    await first.tick()  # an (empty) snapshot exists
    second = Engine(config(group_wait=0.0), outbox, clock=clock)
    await second.load()
    second.resume([ev("cam-9", "down", T0 - 60 * S, cls="camera")], T0)
    assert await second.tick() == 1  # written but never told: told now
    third = Engine(config(group_wait=0.0), outbox, clock=clock)
    await third.load()
    third.resume([ev("cam-9", "down", T0 - 60 * S, cls="camera")], T0)
    assert await third.tick() == 0  # told once: not again


async def test_a_failed_outbox_write_is_retried_in_order_and_nothing_is_lost() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    engine = Engine(config(group_wait=0.0), outbox, clock=clock)
    outbox.fail_commits = 2  # the database is locked for two ticks
    engine.submit(ev("cam-1", "down", T0, cls="camera"))
    with pytest.raises(RuntimeError):
        await engine.tick()
    clock.now += S
    engine.submit(ev("cam-1", "up", clock.now, "down", cls="camera"))
    with pytest.raises(RuntimeError):
        await engine.tick()
    assert await engine.tick() == 2
    kinds = [Message.from_payload(i.payload).status for i in outbox.items.values()]
    assert kinds == ["firing", "resolved"]


async def test_an_idle_tick_writes_nothing() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    engine = Engine(config(), outbox, clock=clock)
    engine.submit(ev("cam-1", "down", T0, cls="camera"))
    await engine.tick()  # the window opens: its event is written down
    written = outbox.commits
    assert written == 1 and outbox.items == {}
    for _ in range(3):
        clock.now += S
        await engine.tick()
    assert outbox.commits == written  # nothing changed, nothing rewritten
    clock.now = T0 + 6 * S
    assert await engine.tick() == 1 and outbox.commits == written + 1
