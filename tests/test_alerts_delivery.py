"""Outbox delivery: retry with backoff, dead letter, pacing, order; and end to end with the
engine against DingTalk/WeCom-like servers, including a robot API down for five minutes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import SecretStr

from monitor.alerts import build_channels, rate_limits, retry_policy
from monitor.alerts.base import AlertEvent, DeliveryResult, Location, Message
from monitor.alerts.delivery import Delivery, RetryPolicy
from monitor.alerts.dingtalk import DingTalk
from monitor.alerts.engine import Engine
from monitor.inventory.notifications import DingTalkChannel, Notifications
from tests.agents.vendors import VendorServer
from tests.test_alerts_outbox import MemoryOutbox

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
S = timedelta(seconds=1)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Scripted:
    """A channel answering from a script: the seam we own, no HTTP."""

    def __init__(self, name: str, *answers: DeliveryResult) -> None:
        self.name = name
        self.answers = list(answers)
        self.got: list[str] = []

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult:
        self.got.append(message.key)
        return self.answers.pop(0) if self.answers else DeliveryResult.success()


def _payload(key: str) -> dict[str, object]:
    return Message(key=key, route="it", kind="notice", status="firing", title="t", text="x",
                   markdown="x", created_at=T0.isoformat()).to_payload()


async def test_retry_with_exponential_backoff_then_success() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    outbox.enqueue("k1/dt", "dt", _payload("k1"))
    fail = DeliveryResult.failure("HTTP 503")
    channel = Scripted("dt", fail, fail, fail)
    async with httpx.AsyncClient() as client:
        delivery = Delivery(outbox, {"dt": channel}, client, clock, RetryPolicy(5, 2.0, 300.0))
        waits = []
        for _ in range(3):
            await delivery.run_once()
            item = outbox.items[1]
            waits.append((item.next_attempt_at - clock.now).total_seconds())
            assert await delivery.run_once() == 0  # not due before its backoff
            clock.now = item.next_attempt_at
        await delivery.run_once()
    assert waits == [2.0, 4.0, 8.0]
    assert outbox.outbox_counts() == {"pending": 0, "sent": 1, "dead": 0}
    assert delivery.stats["dt"].sent == 1 and delivery.stats["dt"].failures == 3


async def test_dead_letter_after_max_attempts_and_at_once_for_permanent_errors() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    outbox.enqueue("k1/dt", "dt", _payload("k1"))
    outbox.enqueue("k2/wc", "wc", _payload("k2"))
    dt = Scripted("dt", *[DeliveryResult.failure("HTTP 503")] * 3)
    wc = Scripted("wc", DeliveryResult.failure("errcode 93000: invalid webhook url", False))
    async with httpx.AsyncClient() as client:
        delivery = Delivery(outbox, {"dt": dt, "wc": wc}, client, clock, RetryPolicy(3, 1, 1))
        for _ in range(5):
            await delivery.run_once()
            clock.now += 2 * S
    assert outbox.outbox_counts() == {"pending": 0, "sent": 0, "dead": 2}
    assert outbox.items[1].attempts == 3 and outbox.items[2].attempts == 1
    assert delivery.stats["dt"].dead == 1 and delivery.stats["wc"].dead == 1


async def test_pacing_keeps_the_excess_due_without_counting_an_attempt() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    for i in range(3):
        outbox.enqueue(f"k{i}/dt", "dt", _payload(f"k{i}"))
    channel = Scripted("dt")
    async with httpx.AsyncClient() as client:
        delivery = Delivery(outbox, {"dt": channel}, client, clock, rate_limits={"dt": 2})
        await delivery.run_once()
        assert channel.got == ["k0", "k1"] and outbox.items[3].attempts == 0
        clock.now += 61 * S
        await delivery.run_once()
    assert channel.got == ["k0", "k1", "k2"]


async def test_a_failure_holds_back_the_rest_of_that_channel_only() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    outbox.enqueue("a1/dt", "dt", _payload("a1"))
    outbox.enqueue("a2/dt", "dt", _payload("a2"))
    outbox.enqueue("b1/wc", "wc", _payload("b1"))
    dt, wc = Scripted("dt", DeliveryResult.failure("HTTP 502")), Scripted("wc")
    async with httpx.AsyncClient() as client:
        await Delivery(outbox, {"dt": dt, "wc": wc}, client, clock).run_once()
    assert dt.got == ["a1"] and wc.got == ["b1"]  # a2 waits so order is kept


async def test_stored_errors_never_carry_the_token() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    outbox.enqueue("k/dt", "dt", _payload("k"))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused: {request.url}", request=request)

    cfg = DingTalkChannel(type="dingtalk", secret=SecretStr("SECs"),
                          webhook=SecretStr("https://oapi.dingtalk.com/robot/send?access_token=T0K"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        await Delivery(outbox, {"dt": DingTalk("dt", cfg)}, client, clock).run_once()
    error = outbox.items[1].error or ""
    assert error.startswith("ConnectError") and "T0K" not in error and "sign=" not in error


def _hall(server: VendorServer) -> Notifications:
    return Notifications.model_validate({
        "channels": {
            "dt": {"type": "dingtalk", "webhook": server.dingtalk_url, "secret": "SEC1"},
            "wc": {"type": "wecom", "webhook": server.wecom_url},
        },
        "routes": [
            {"name": "it", "channels": ["dt"], "group_wait": "5s"},
            {"name": "owners", "match": {"classes": ["kiosk"]}, "channels": ["wc"],
             "group_wait": "5s"},
        ],
    })


def _event(device: str, status: str, at: datetime, previous: str = "up") -> AlertEvent:
    is_switch = device.startswith("sw")
    return AlertEvent(device, f"设备{device}", "switch" if is_switch else "kiosk",
                      status, previous, at, location=Location(1, "大厅"),  # type: ignore[arg-type]
                      parent=None if is_switch else "sw-1f-a", incident_id=1 if is_switch else None)


async def _run_for(engine: Engine, delivery: Delivery, clock: Clock, seconds: int) -> None:
    for _ in range(seconds):
        await engine.tick()
        await delivery.run_once()
        clock.now += S


async def test_floor_switch_outage_end_to_end_with_robot_api_down_for_five_minutes() -> None:
    clock = Clock()
    with VendorServer(token="tok", secret="SEC1", clock=lambda: clock.now.timestamp(),
                      sign_clock=time.time) as server:
        cfg = _hall(server)
        outbox = MemoryOutbox()
        async with httpx.AsyncClient() as client:
            channels = build_channels(cfg)
            delivery = Delivery(outbox, channels, client, clock, retry_policy(cfg),
                                rate_limits=rate_limits(cfg))
            engine = Engine(cfg, outbox, clock, on_enqueued=delivery.wake)

            server.down = True
            engine.submit(_event("sw-1f-a", "down", clock.now))
            for k in ("kiosk-01", "kiosk-02", "kiosk-03"):
                engine.submit(_event(k, "unreachable", clock.now))
            await _run_for(engine, delivery, clock, 300)  # five minutes of robot outage
            assert server.keys() == [] and outbox.outbox_counts()["pending"] == 2
            assert server.hits > 10  # it kept trying, backing off

            server.down = False
            engine.submit(_event("sw-1f-a", "up", clock.now, "down"))
            for k in ("kiosk-01", "kiosk-02", "kiosk-03"):
                engine.submit(_event(k, "up", clock.now, "unreachable"))
            await _run_for(engine, delivery, clock, 400)

    dt, wc = server.bodies("dingtalk"), server.bodies("wecom")
    assert [b["markdown"]["title"][:12] for b in dt] == ["[hallmon] 故障", "[hallmon] 恢复"]
    assert "设备kiosk-03" in dt[0]["markdown"]["text"]
    assert len(wc) == 2 and "不可达" in wc[0]["markdown"]["content"]
    assert len(server.keys()) == len(set(server.keys())) == 4  # once each
    assert outbox.outbox_counts() == {"pending": 0, "sent": 4, "dead": 0}


async def test_the_loops_deliver_on_real_time_with_a_tiny_window() -> None:
    with VendorServer(token="tok", secret="SEC1") as server:
        cfg = _hall(server).model_copy(update={"routes": [
            _hall(server).routes[0].model_copy(update={"group_wait": 0.05})]})
        outbox = MemoryOutbox()
        now = lambda: datetime.now(UTC)  # noqa: E731
        async with httpx.AsyncClient() as client:
            delivery = Delivery(outbox, build_channels(cfg), client, now, poll_interval=5.0)
            engine = Engine(cfg, outbox, now, on_enqueued=delivery.wake)
            tasks = [asyncio.create_task(engine.run()), asyncio.create_task(delivery.run())]
            try:
                engine.submit(_event("sw-1f-a", "down", now()))
                for _ in range(500):  # bounded: 5 s at most
                    if outbox.outbox_counts()["sent"]:
                        break
                    await asyncio.sleep(0.01)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    assert outbox.outbox_counts()["sent"] == 1  # woken at once: well before the 5 s poll


async def test_a_recovery_waits_behind_its_failed_outage_notice_across_a_restart() -> None:
    """Issue 10, point 4: the DOWN fails once; the RECOVERED, enqueued while the DOWN waits
    for its retry, must not go first, not even from a new Delivery (a restarted process)."""
    outbox, clock = MemoryOutbox(), Clock()
    outbox.enqueue("down/dt", "dt", _payload("down"))
    first = Scripted("dt", DeliveryResult.failure("HTTP 503"))
    async with httpx.AsyncClient() as client:
        await Delivery(outbox, {"dt": first}, client, clock).run_once()
        outbox.enqueue("up/dt", "dt", _payload("up"))
        clock.now += S
        again = Scripted("dt")
        restarted = Delivery(outbox, {"dt": again}, client, clock)
        await restarted.run_once()
        assert again.got == []  # the DOWN's retry is 2 s out: the RECOVERED waits too
        clock.now += 2 * S
        await restarted.run_once()
    assert first.got == ["down"] and again.got == ["down", "up"]
