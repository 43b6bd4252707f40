"""The trap receiver on loopback: real net-snmp ``snmptrap``/``snmpinform`` (v1, v2c, v3 authPriv,
inform) from device addresses (``--clientaddr``) into a real pipeline; unknown senders, bad
communities and malformed datagrams are counted, never raised; a fuzz of the datagram path."""

from __future__ import annotations

import asyncio
import shlex
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.inventory import Inventory
from monitor.inventory.profiles import LINK_DOWN, LINK_UP, UPS_TRAP_ON_BATTERY
from monitor.pipeline import Pipeline
from monitor.receiver import TrapReceiver
from monitor.state import DeviceStatus
from tests.conftest import require_tool
from tests.test_pipeline import OK, Recorder, check

ENV = {"TRAP_COMMUNITY": "hall-traps", "V3_AUTH": "auth-pass-123", "V3_PRIV": "priv-pass-123"}
HALL = {
    "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
    "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 3,
                 "success_threshold": 2},
    "credentials": {
        "traps": {"version": "2c", "community": "${TRAP_COMMUNITY}"},
        "hall-v3": {"version": 3, "user": "monitor", "auth": "sha256", "auth_key": "${V3_AUTH}",
                    "priv": "aes", "priv_key": "${V3_PRIV}"},
    },
    "devices": [
        {"id": "sw-1f", "name": "一楼交换机", "class": "switch", "address": "127.33.0.1"},
        {"id": "kiosk-1", "name": "自助终端1号", "class": "kiosk", "address": "127.33.0.11"},
        {"id": "ups-1", "name": "机房UPS", "class": "ups", "address": "127.33.0.40"},
        {"id": "nvr-1", "name": "硬盘录像机", "class": "nvr", "address": "127.33.0.50"},
    ],
}
V3 = ["-v", "3", "-u", "monitor", "-l", "authPriv", "-a", "SHA-256", "-A", ENV["V3_AUTH"],
      "-x", "AES", "-X", ENV["V3_PRIV"]]


class Hall:
    def __init__(self) -> None:
        self.inventory = Inventory.model_validate(HALL, context={"env": ENV})
        self.alerts = Recorder()
        self.pipeline = Pipeline(self.inventory, alerts=self.alerts, clock=time.time)
        self.rechecks: list[str] = []
        self.receiver = TrapReceiver(self.inventory, self.pipeline.handle, self.rechecks.append)

    @property
    def port(self) -> int:
        assert self.receiver.address is not None
        return self.receiver.address[1]

    async def up(self, *devices: str) -> None:
        for dev in devices:
            await self.pipeline.handle(check(self.inventory, dev, "ping"), OK)

    async def send(self, source: str, *args: str, tool: str = "snmptrap") -> int:
        proc = await asyncio.create_subprocess_exec(
            require_tool(tool), f"--clientaddr={source}", *args[:-1],
            f"127.0.0.1:{self.port}", *shlex.split(args[-1]),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode is not None
        return proc.returncode


async def until(cond: Callable[[], bool], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def hall() -> AsyncIterator[Hall]:
    h = Hall()
    await h.receiver.start("127.0.0.1", 0)
    yield h
    await h.receiver.stop()


async def test_v2c_link_down_and_up_from_a_switch(hall: Hall) -> None:
    await hall.up("sw-1f")
    assert await hall.send("127.33.0.1", "-v", "2c", "-c", "hall-traps",
                           f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.7 i 7") == 0
    await until(lambda: hall.pipeline.state.status("sw-1f") is DeviceStatus.DEGRADED, "degraded")
    assert hall.rechecks == ["sw-1f"]
    assert hall.receiver.received == {("sw-1f", LINK_DOWN, "matched"): 1}
    await hall.send("127.33.0.1", "-v", "2c", "-c", "hall-traps",
                    f"'' {LINK_UP} 1.3.6.1.2.1.2.2.1.1.7 i 7")
    await until(lambda: hall.pipeline.state.status("sw-1f") is DeviceStatus.UP, "up again")
    assert hall.alerts.statuses() == [("sw-1f", "degraded"), ("sw-1f", "up")]


async def test_v1_trap_mapped_by_agent_addr(hall: Hall) -> None:
    """A v1 trap relayed from another address names its device in agent-addr."""
    await hall.up("ups-1")
    await hall.send("127.33.9.9", "-v", "1", "-c", "hall-traps",
                    "1.3.6.1.2.1.33.2 127.33.0.40 6 1 ''")  # upsTraps.0.1 = upsTrapOnBattery
    await until(lambda: hall.pipeline.state.status("ups-1") is DeviceStatus.DEGRADED, "degraded")
    assert hall.receiver.received == {("ups-1", UPS_TRAP_ON_BATTERY, "matched"): 1}
    assert hall.alerts.statuses() == [("ups-1", "degraded")]


async def test_v3_auth_priv_trap(hall: Hall) -> None:
    await hall.up("kiosk-1")
    assert await hall.send("127.33.0.11", *V3, "-e", "0x8000000001020311",
                           f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.1 i 1") == 0
    await until(lambda: hall.pipeline.state.status("kiosk-1") is DeviceStatus.DOWN, "down")
    assert hall.alerts.statuses() == [("kiosk-1", "down")]


async def test_v3_from_an_unknown_address_never_reaches_pysnmp(hall: Hall) -> None:
    await hall.send("127.33.7.7", *V3, "-e", "0x8000000001020313", f"'' {LINK_DOWN}")
    await until(lambda: hall.receiver.unknown_senders == 1, "unknown v3 sender")
    assert hall.receiver.received == {} and "v3_rejected" not in hall.receiver.dropped


async def test_v3_below_auth_priv_is_refused(hall: Hall) -> None:
    await hall.up("kiosk-1")
    args = ["-v", "3", "-u", "monitor", "-l", "authNoPriv", "-a", "SHA-256", "-A", ENV["V3_AUTH"],
            "-e", "0x8000000001020312"]
    await hall.send("127.33.0.11", *args, f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.1 i 1")
    await until(lambda: hall.receiver.dropped.get("v3_rejected", 0) == 1, "v3 rejected")
    assert hall.pipeline.state.status("kiosk-1") is DeviceStatus.UP


async def test_informs_are_acknowledged_v2c_and_v3(hall: Hall) -> None:
    await hall.up("nvr-1", "sw-1f")
    # snmpinform exits 0 only after our Response (with -r 0 -t 5 a lost ack is a failure)
    assert await hall.send("127.33.0.50", "-v", "2c", "-c", "hall-traps", "-r", "0", "-t", "5",
                           f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.2 i 2", tool="snmpinform") == 0
    assert await hall.send("127.33.0.1", *V3, "-r", "1", "-t", "5",
                           f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.9 i 9", tool="snmpinform") == 0
    await until(lambda: hall.pipeline.state.status("nvr-1") is DeviceStatus.DOWN, "nvr down")
    await until(lambda: hall.pipeline.state.status("sw-1f") is DeviceStatus.DEGRADED, "sw")


async def test_unknown_senders_and_bad_communities_are_counted(
        hall: Hall, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        await hall.send("127.33.7.7", "-v", "2c", "-c", "hall-traps", f"'' {LINK_DOWN}")
    await hall.send("127.33.0.1", "-v", "2c", "-c", "guessed", f"'' {LINK_DOWN}")
    await until(lambda: hall.receiver.unknown_senders == 3, "3 unknown")
    await until(lambda: hall.receiver.dropped.get("bad_community") == 1, "bad community")
    assert hall.receiver.received == {}
    unknown_lines = [r for r in caplog.records if "no device has this address" in r.message]
    assert len(unknown_lines) == 1  # rate-limited: one line a minute
    assert "guessed" not in caplog.text and "hall-traps" not in caplog.text


async def test_a_chatty_device_is_bounded(hall: Hall) -> None:
    """Per-device budget (20/s, burst 40): 200 traps at once are mostly dropped, counted."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.33.0.1", 0))
    data = _datagram()
    for _ in range(200):
        sock.sendto(data, ("127.0.0.1", hall.port))
    sock.close()
    await until(lambda: sum(hall.receiver.received.values())
                + hall.receiver.dropped.get("rate_limited", 0) == 200, "all 200 counted")
    assert sum(hall.receiver.received.values()) <= 45


def _datagram(community: bytes = b"hall-traps") -> bytes:
    from tests.test_snmp_trap import _v2_trap

    return _v2_trap([("1.3.6.1.2.1.2.2.1.1.3", 0x02, 3)], community)


@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200),
                      st.tuples(st.integers(0, 120), st.integers(0, 255)).map(
                          lambda m: _flip(_datagram(), *m))),
       sender=st.sampled_from(["127.33.0.1", "127.33.7.7", "::ffff:127.33.0.40"]))
def test_fuzz_datagrams_never_raise(data: bytes, sender: str) -> None:
    """Malformed or odd datagrams from known and unknown senders: counted, never raised. The
    receiver's own exception guard is bypassed (``_datagram``) so a bug would surface here."""
    receiver = _FUZZ_RECEIVER
    receiver._datagram(data, (sender, 40000))
    assert "error" not in receiver.dropped


def _flip(data: bytes, pos: int, byte: int) -> bytes:
    out = bytearray(data)
    out[pos % len(out)] = byte
    return bytes(out)


def _fuzz_receiver() -> TrapReceiver:
    inv = Inventory.model_validate(HALL, context={"env": ENV})

    async def handle(*_: object) -> None:
        return None

    return TrapReceiver(inv, handle, lambda d: None, max_per_second=1e9,
                        per_device_per_second=1e9, v3_per_second=1e9)


_FUZZ_RECEIVER = _fuzz_receiver()


def test_receiver_bind_error_names_the_problem() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]

        async def main() -> None:
            h = Hall()
            with pytest.raises(OSError):
                await h.receiver.start("127.0.0.1", port)

        asyncio.run(main())



def test_input_metrics_are_promtool_clean() -> None:
    """The trap and heartbeat families, with samples, pass ``promtool check metrics``."""
    import subprocess

    from monitor.metrics import Snapshot, expose

    snap = Snapshot(traps_received={("sw-1f", LINK_DOWN, "matched"): 2,
                                    ("sw-1f", "other", "unmatched"): 1},
                    traps_dropped={"malformed": 3, "rate_limited": 4}, trap_unknown_senders=5,
                    heartbeats={("kiosk-1", "app"): 6})
    text = expose(snap)
    assert 'hallmon_traps_received_total{device="sw-1f",oid="other",outcome="unmatched"} 1' \
        in text.decode()
    assert "hallmon_trap_unknown_senders_total 5" in text.decode()
    proc = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, proc.stderr.decode()


async def test_reload_forgets_removed_devices(hall: Hall) -> None:
    await hall.up("sw-1f")
    await hall.send("127.33.0.1", "-v", "2c", "-c", "hall-traps",
                    f"'' {LINK_DOWN} 1.3.6.1.2.1.2.2.1.1.7 i 7")
    await until(lambda: "sw-1f" in hall.receiver.book.holds, "held")
    smaller = {**HALL, "devices": HALL["devices"][1:]}  # type: ignore[index]
    inv = Inventory.model_validate(smaller, context={"env": ENV})
    hall.pipeline.use(inv)
    hall.receiver.use(inv)
    assert hall.receiver.book.holds == {} and hall.receiver.received == {}
    await hall.send("127.33.0.1", "-v", "2c", "-c", "hall-traps", f"'' {LINK_UP}")
    await until(lambda: hall.receiver.unknown_senders == 1, "now an unknown sender")
