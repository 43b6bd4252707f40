"""The portable ping3 backend gives the same result shape as the native engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from probes import icmp, icmp_ping3
from probes.icmp import IcmpConfig


@pytest.fixture(autouse=True)
async def _pool() -> AsyncIterator[None]:
    yield
    await icmp.close()  # also shuts the ping3 pool down
    icmp.configure()


async def test_ping3_loopback_has_the_native_fields() -> None:
    result = await icmp_ping3.probe("127.0.0.1", IcmpConfig(packets=2, interval=0.01))
    assert result.ok, result
    native = await icmp.probe("127.0.0.1", IcmpConfig(packets=2, interval=0.01))
    assert set(result.values) == set(native.values)
    assert result.values["packets_received"] == 2


async def test_backend_switch_dispatches_to_ping3() -> None:
    icmp.configure(backend="ping3")
    assert icmp.backend() == "ping3"
    result = await icmp.probe("127.0.0.1", IcmpConfig(packets=1))
    assert result.ok, result


async def test_ping3_unknown_name() -> None:
    result = await icmp_ping3.probe("no-such-device.invalid", IcmpConfig(packets=1))
    assert result.error == "name not resolved"
