"""Push heartbeats: DOWN within expect_every + grace after the beats stop, UP on the next beat;
the HTTP route (GET and POST, status and msg); tokens are secrets (never logged or shown)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from monitor.inventory import Inventory
from monitor.pipeline import Pipeline
from monitor.push import Heartbeats
from monitor.state import DeviceStatus
from monitor.web import create_app
from tests.conftest import Clock
from tests.test_pipeline import OK, Recorder, check

T0 = 1_750_000_000.0
TOKEN = "kiosk-3f-queue-9f2b7c1d4e"
OTHER = "display-2f-0a1b2c3d4e5f6a7b"
HALL = {
    "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
    "classes": {
        "kiosk_app": {"label": "自助终端应用", "checks": [
            {"name": "heartbeat", "kind": "push", "role": "reachability",
             "expect_every": "1m", "grace": "30s", "token": "${KIOSK_TOKEN}"}]},
    },
    "devices": [
        {"id": "kiosk-3f", "name": "三楼自助终端", "class": "kiosk_app", "address": "127.20.3.1"},
        {"id": "display-2f", "name": "二楼叫号屏", "class": "queue_display",
         "address": "127.20.2.1",
         "extra_checks": [{"name": "app", "kind": "push", "expect_every": "30s",
                           "token_file": "display.token"}]},
    ],
}


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    base = tmp_path
    (base / "display.token").write_text(OTHER + "\n")
    return Inventory.model_validate(
        HALL, context={"env": {"KIOSK_TOKEN": TOKEN}, "base_dir": str(base)})


def _setup(inventory: Inventory) -> tuple[Clock, Recorder, Pipeline, Heartbeats]:
    clock, alerts = Clock(T0), Recorder()
    p = Pipeline(inventory, alerts=alerts, clock=clock)
    return clock, alerts, p, Heartbeats(inventory, p.handle, clock)


async def test_down_within_expect_every_plus_grace_and_up_on_the_next_beat(
        inventory: Inventory) -> None:
    clock, alerts, p, beats = _setup(inventory)
    assert await beats.beat(TOKEN) is not None
    assert p.state.status("kiosk-3f") is DeviceStatus.UP
    clock.now = T0 + 60 + 30  # exactly expect_every + grace after the beat: still in time
    await beats.expire()  # (the display's check, which never beat, fails here)
    assert p.state.status("kiosk-3f") is DeviceStatus.UP
    assert beats.next_wait(1.0) == pytest.approx(0.01)  # the daemon wakes right after +90 s
    clock.now = T0 + 90.01
    assert await beats.expire() == 1
    assert p.state.status("kiosk-3f") is DeviceStatus.DOWN
    assert p.state.statuses["kiosk-3f"][1] == "no heartbeat for 90s"
    assert beats.next_wait(1.0) == 1.0  # nothing pending but the next beat
    clock.now += 120
    assert await beats.expire() == 0  # one failure per silence, not one per second
    clock.now += 5
    await beats.beat(TOKEN)
    assert p.state.status("kiosk-3f") is DeviceStatus.UP
    assert alerts.statuses() == [("kiosk-3f", "down"), ("kiosk-3f", "up")]
    assert beats.beats[("kiosk-3f", "heartbeat")] == 2


async def test_never_beating_goes_down_from_start_up(inventory: Inventory) -> None:
    clock, _, p, beats = _setup(inventory)
    clock.now = T0 + 91
    assert await beats.expire() == 2  # both push checks
    assert p.state.status("kiosk-3f") is DeviceStatus.DOWN


async def test_status_down_and_message(inventory: Inventory) -> None:
    clock, alerts, p, beats = _setup(inventory)
    await p.handle(check(inventory, "display-2f", "ping"), OK)
    await beats.beat(OTHER, "down", "打印模块卡纸")
    assert p.state.status("display-2f") is DeviceStatus.DEGRADED
    assert alerts.events[-1].cause == "app: reported down: 打印模块卡纸"


async def test_reload_keeps_the_last_beat(inventory: Inventory) -> None:
    clock, _, p, beats = _setup(inventory)
    clock.now = T0 + 10
    await beats.beat(TOKEN)
    clock.now = T0 + 70
    assert await beats.expire() == 1  # the display: never beat since start-up (T0 + 60)
    clock.now = T0 + 80
    beats.use(inventory)  # a reload: neither clock restarts
    clock.now = T0 + 101
    assert await beats.expire() == 1  # the kiosk, 91 s after its beat; the display not again


async def test_http_route_get_post_and_unknown_token(
        inventory: Inventory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock, alerts, p, beats = _setup(inventory)

    class Hall:
        heartbeats = beats
        traps = None
        ready = True

    app = create_app(Hall(), site_name="测试大厅")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hall") as client:
        r = await client.get(f"/api/v1/push/{TOKEN}")
        assert (r.status_code, r.json()) == (200, {"ok": True, "device": "kiosk-3f",
                                                   "check": "heartbeat"})
        r = await client.post(f"/api/v1/push/{TOKEN}", params={"status": "down", "msg": "蓝屏"})
        assert r.status_code == 200
        assert p.state.status("kiosk-3f") is DeviceStatus.DOWN
        r = await client.get("/api/v1/push/not-a-token-at-all-123")
        assert r.status_code == 404 and "not-a-token" not in r.text
        r = await client.get(f"/api/v1/push/{TOKEN}", params={"status": "sideways"})
        assert r.status_code == 422 and TOKEN not in r.text
        assert (await client.get("/api/v1/events")).json() == []
    ours = "".join(r.getMessage() for r in caplog.records if r.name != "httpx")  # httpx: client
    assert ours and TOKEN not in ours
    assert TOKEN not in repr(beats) and TOKEN not in repr(inventory)


def test_tokens_are_validated() -> None:
    from monitor.inventory.load import InventoryError, parse_inventory

    text = (
        "site: {name: t}\n"
        "classes:\n"
        "  app: {label: a, checks: [{name: hb, kind: push, role: reachability,"
        " expect_every: 1m, token: '${SHORT}'}]}\n"
        "devices:\n"
        "  - {id: a, name: A, class: app, address: 127.20.0.1}\n"
    )
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "t.yaml", env={"SHORT": "abc"})
    message = str(caught.value)
    assert "at least 16 characters" in message and "abc" not in message
    literal = text.replace("'${SHORT}'", "kiosk-secret-token-123456")
    with pytest.raises(InventoryError) as caught:
        parse_inventory(literal, "t.yaml", env={})
    assert "reference" in str(caught.value) and "kiosk-secret-token-123456" not in str(
        caught.value)
