"""The scripted mock probe: phases by elapsed time and call count, seeded flapping, bounded
call history, run-time changes; reached through the registry like any probe."""

from __future__ import annotations

import asyncio

import pytest

from probes import PROBES, mock
from probes.mock import MockConfig, MockController, Phase
from tests.conftest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctl(clock: Clock) -> MockController:
    return MockController(clock=clock, seed=7)


async def test_unscripted_target_is_up_with_config_and_kind_values(ctl: MockController) -> None:
    result = await ctl.probe("127.20.0.1", MockConfig(kind="icmp", values={"extra": 1.0}))
    assert result.ok
    assert result.values["loss_ratio"] == 0.0 and result.values["extra"] == 1.0


async def test_phases_follow_the_injected_clock(ctl: MockController, clock: Clock) -> None:
    ctl.script("t", [Phase("up"), Phase("down", at=60, error="no reply"), Phase("up", at=120)])
    config = MockConfig()
    story = []
    for t in (0, 59, 60, 119, 120):
        clock.now = 1000.0 + t
        story.append((await ctl.probe("t", config)).ok)
    assert story == [True, True, False, False, True]


async def test_phases_by_call_count(ctl: MockController) -> None:
    ctl.script("t", [Phase("up"), Phase("down", at_call=2), Phase("up", at_call=5)])
    oks = [(await ctl.probe("t", MockConfig())).ok for _ in range(6)]
    assert oks == [True, True, False, False, False, True]


async def test_values_phase_and_per_check_program(ctl: MockController) -> None:
    ctl.set("printer", "up", check="toner", values={"toner_percent": 5})
    toner = await ctl.probe("printer", MockConfig(check="toner", values={"toner_percent": 80}))
    ping = await ctl.probe("printer", MockConfig(check="ping", values={"toner_percent": 80}))
    assert toner.values["toner_percent"] == 5
    assert ping.values["toner_percent"] == 80


async def test_timeout_mode_is_cancelled_by_the_callers_deadline(ctl: MockController) -> None:
    ctl.set("t", "timeout")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await ctl.probe("t", MockConfig())


async def test_slow_mode_answers_after_its_delay(ctl: MockController) -> None:
    ctl.set("t", "slow", delay=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await ctl.probe("t", MockConfig())
    assert result.ok and loop.time() - start >= 0.045


async def test_flap_is_seeded_and_reproducible(clock: Clock) -> None:
    runs = []
    for _ in range(2):
        ctl = MockController(clock=clock, seed=42)
        ctl.set("t", "flap", flap_ratio=0.5)
        runs.append([(await ctl.probe("t", MockConfig())).ok for _ in range(40)])
    assert runs[0] == runs[1]
    assert 5 < sum(runs[0]) < 35  # both states occur
    other = MockController(clock=clock, seed=43)
    other.set("t", "flap")
    assert [(await other.probe("t", MockConfig())).ok for _ in range(40)] != runs[0]


async def test_calls_are_recorded_in_a_bounded_ring(clock: Clock) -> None:
    ctl = MockController(clock=clock, history=5)
    for i in range(12):
        await ctl.probe(f"127.20.0.{i}", MockConfig(check="ping"))
    assert len(ctl.calls) == 5
    assert [c.target for c in ctl.calls] == [f"127.20.0.{i}" for i in range(7, 12)]
    assert ctl.calls[-1].config.check == "ping" and ctl.calls[-1].time == clock.now
    assert ctl.calls_to("127.20.0.11")[0].target == "127.20.0.11"


async def test_runtime_changes_and_clear(ctl: MockController) -> None:
    ctl.set("t", "down")
    assert not (await ctl.probe("t", MockConfig())).ok
    ctl.clear("t")
    assert (await ctl.probe("t", MockConfig())).ok
    ctl.set("t", "down", error="timeout")
    assert (await ctl.probe("t", MockConfig())).error == "timeout"
    ctl.clear()
    assert not ctl.calls and (await ctl.probe("t", MockConfig())).ok


async def test_registry_entry_uses_the_global_controller(clock: Clock) -> None:
    mock.MOCK.reset(clock=clock, seed=1)
    try:
        mock.MOCK.set("127.20.9.9", "down")
        result = await PROBES["mock"]("127.20.9.9", MockConfig(kind="icmp"))
        assert not result.ok and result.error == "no reply"
        assert mock.MOCK.calls[-1].target == "127.20.9.9"
    finally:
        mock.MOCK.reset()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mock mode"):
        Phase("sideways")  # type: ignore[arg-type]


def test_registry_has_every_kind() -> None:
    assert set(PROBES) == {"icmp", "snmp", "tcp", "http", "mock"}
