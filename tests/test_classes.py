"""Built-in class profiles against recordings of real devices (snmpsim on loopback).

What a technician gets from `classes.py` for a Hikvision camera, a Hikvision NVR and a Huawei
S5720 switch: the profile's OIDs are answered by the real device's recording, vendor strings are
parsed, and the conditions judge the healthy devices healthy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import pytest

from monitor.checks import probe_call
from monitor.conditions import evaluate, failed_conditions
from monitor.inventory import BUILTIN_CLASSES, Condition, Inventory, ResolvedCheck
from probes import snmp
from probes.result import ProbeResult
from tests.agents.snmp import SIM_BIN, Agent, recording, snmpsim_agent
from tests.conftest import missing_tool

DEVICES = {  # device id -> (class, recording)
    "cam-1f-01": ("camera_hikvision", "hikvision"),
    "nvr-01": ("nvr", "hikvision-nvr"),
    "sw-2f-core": ("switch", "huawei-s5720"),
}


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, Agent]]:
    if not SIM_BIN.exists():
        missing_tool("snmpsim venv missing: make .venv-snmpsim/.installed")
    with ExitStack() as stack:
        yield {dev: stack.enter_context(snmpsim_agent(rec)) for dev, (_, rec) in DEVICES.items()}


@pytest.fixture(autouse=True)
async def _engine() -> AsyncIterator[None]:
    yield
    await snmp.close()


def hall(agents: dict[str, Agent]) -> Inventory:
    """One credential per recording: snmpsim picks the recording by community."""
    doc = {
        "site": {"name": "测试大厅"},
        "credentials": {
            dev: {"version": "2c", "community": f"${{C_{i}}}", "port": agents[dev].port}
            for i, dev in enumerate(DEVICES)
        },
        "devices": [
            {"id": dev, "name": dev, "class": cls, "address": agents[dev].host, "credential": dev}
            for dev, (cls, _) in DEVICES.items()
        ],
    }
    env = {f"C_{i}": agents[dev].community for i, dev in enumerate(DEVICES)}
    return Inventory.model_validate(doc, context={"env": env})


async def run(inv: Inventory, device: str, check: str) -> ProbeResult:
    dev = inv.device(device)
    resolved = next(c for c in inv.checks_for(dev) if c.name == check)
    return evaluate(resolved, await probe_call(inv, dev, resolved)())


async def test_hikvision_camera_reports_cpu_and_memory_percent(
    agents: dict[str, Agent],
) -> None:
    result = await run(hall(agents), "cam-1f-01", "hik")
    assert result.ok, result
    # the recording says "52 PERCENT" and "75 PERCENT"
    assert recording("hikvision")["1.3.6.1.4.1.39165.1.7.0"][1] == "35322050455243454e54"
    assert result.values == {"cpu_percent": 52.0, "memory_percent": 75.0}


async def test_nvr_disks_are_healthy_in_the_recording(agents: dict[str, Agent]) -> None:
    result = await run(hall(agents), "nvr-01", "disks")
    assert result.ok, result
    assert result.values == {"disk_status.1.0": 0.0}


async def test_huawei_switch_ports_and_uptime(agents: dict[str, Agent]) -> None:
    inv = hall(agents)
    ports = await run(inv, "sw-2f-core", "ports")
    assert ports.ok, ports
    values = ports.values
    oper = {k: v for k, v in values.items() if k.startswith("if_oper_status.")}
    recorded = {oid for oid in recording("huawei-s5720") if oid.startswith("1.3.6.1.2.1.2.2.1.8.")}
    assert len(oper) == len(recorded) > 10
    assert set(oper.values()) <= {1.0, 2.0, 3.0, 5.0, 6.0, 7.0}
    assert any(k.startswith("if_hc_in_octets.") for k in values)
    health = await run(inv, "sw-2f-core", "snmp")
    assert health.ok, health
    assert health.values["sys_uptime_seconds"] > 0


@pytest.mark.parametrize(
    ("values", "failed"),
    [
        ({"toner_percent": 5.0}, ["碳粉不足10% (toner_percent=5 < 10)"]),
        ({"toner_percent": 10.0}, []),
        ({"cover_status": 3.0}, ["打印机盖板打开 (cover_status=3 == 3)"]),
        ({}, []),  # nothing reported: no verdict
    ],
)
def test_printer_conditions(values: dict[str, float], failed: list[str]) -> None:
    checks = {c.name: c for c in BUILTIN_CLASSES["printer"].checks}
    assert failed_conditions(checks["supplies"].conditions, values) == failed


def test_a_table_condition_holds_when_any_row_does() -> None:
    cond = Condition(value="disk_status.*", op="!=", threshold=0, message="录像机硬盘异常")
    assert failed_conditions([cond], {"disk_status.1": 0.0, "disk_status.2": 0.0}) == []
    assert failed_conditions([cond], {"disk_status.1": 0.0, "disk_status.2": 3.0}) == [
        "录像机硬盘异常 (disk_status.2=3 != 0)"
    ]


def _resolved(cls: str, check: str) -> ResolvedCheck:
    inv = Inventory.model_validate({
        "site": {"name": "测试大厅"},
        "credentials": {"ro": {"version": "2c", "community": "${C}"}},
        "devices": [{"id": "d", "name": "d", "class": cls, "address": "127.20.9.9",
                     "credential": "ro"}],
    }, context={"env": {"C": "public"}})
    return next(c for c in inv.checks_for(inv.device("d")) if c.name == check)


@pytest.mark.parametrize(
    ("values", "errors", "verdict"),
    [
        pytest.param({"supply_level": -3, "supply_max": 100, "cover_status": 4}, {}, None,
                     id="toner 'some remains' (-3): unknown, not missing"),
        pytest.param({"supply_max": 100, "cover_status": 4},
                     {"supply_level": "noSuchInstance 1.3.6.1.2.1.43.11.1.1.9.1.1"},
                     "cannot evaluate 碳粉不足10%: toner_percent missing "
                     "(noSuchInstance 1.3.6.1.2.1.43.11.1.1.9.1.1)",
                     id="toner level missing: says so, never passes"),
        pytest.param({"supply_level": 50, "supply_max": 100}, {},
                     "cannot evaluate 打印机盖板打开: cover_status missing",
                     id="cover status missing"),
    ],
)
def test_a_condition_that_cannot_be_evaluated_fails_its_check(
    values: dict[str, float], errors: dict[str, str], verdict: str | None,
) -> None:
    check = _resolved("printer", "supplies")
    result = evaluate(check, ProbeResult.success(0.01, values, None, errors))
    assert (result.error if not result.ok else None) == verdict


def test_an_empty_vendor_table_is_fine_unless_its_walk_failed() -> None:
    check = _resolved("switch", "snmp")  # Huawei and H3C tables: a switch has one of them
    huawei = {"sys_uptime_seconds": 9.0, "huawei_cpu_percent.1": 12.0}
    assert evaluate(check, ProbeResult.success(0.01, huawei)).ok
    broken = evaluate(check, ProbeResult.success(
        0.01, huawei, None, {"h3c_cpu_percent": "error-status genErr"}))
    assert not broken.ok
    assert broken.error == ("cannot evaluate 交换机CPU使用率过高: h3c_cpu_percent.* missing "
                            "(error-status genErr)")
