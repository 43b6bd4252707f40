"""``/api/v1/devices``: pages, filters and detail read through the per-device indexes (issue 12)
give exactly what a scan of the whole inventory gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.api.devices import PAGE_MAX, SLICE
from monitor.app import Hall, Options
from monitor.inventory.index import DeviceIndex
from monitor.web import create_app
from tests.agents.daemon import NODE_CLASS

N = 2 * SLICE + 37  # more than one slice, not a multiple of one
TWO_CHECKS = {"label": "双检", "checks": [
    {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 1},
    {"name": "web", "kind": "tcp", "port": 80},
]}


def _device(i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"d-{i:04d}", "name": f"设备{i}",
                           "address": f"127.41.{i // 200}.{i % 200 + 1}",
                           "class": "twin" if i % 5 == 0 else "node",
                           "location": {"floor": 1 + i % 4, "area": "大厅"}}
    if i % 3:
        out["owner"] = f"o{i % 3}"
    return out


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Hall, httpx.AsyncClient]]:
    doc = {"site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
           "defaults": {"interval": "1s", "timeout": "500ms"},
           "classes": {"node": NODE_CLASS, "twin": TWO_CHECKS},
           "devices": [_device(i) for i in range(N)]}
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    hall = Hall(Options(inventory=inv_file, state_dir=tmp_path, mock=True))
    await hall.start()
    app = create_app(hall, site_name="测试大厅", store=hall.astore)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hallmon") as c:
            for _ in range(400):  # every device polled once (bounded: 20 s)
                if hall.ready:
                    break
                await asyncio.sleep(0.05)
            assert hall.ready
            yield hall, c
    finally:
        await hall.stop()


async def _get(c: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await c.get("/api/v1/devices", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_pages_join_to_the_whole_list_in_inventory_order(
    client: tuple[Hall, httpx.AsyncClient],
) -> None:
    hall, c = client
    whole = await _get(c)
    assert (whole["total"], whole["offset"], len(whole["devices"])) == (N, 0, N)
    assert [d["id"] for d in whole["devices"]] == [f"d-{i:04d}" for i in range(N)]
    joined: list[dict[str, Any]] = []
    for offset in range(0, N, 100):
        page = await _get(c, offset=offset, limit=100)
        assert (page["total"], page["offset"], page["limit"]) == (N, offset, 100)
        joined += page["devices"]
    assert [d["id"] for d in joined] == [d["id"] for d in whole["devices"]]
    assert (await _get(c, offset=N + 5))["devices"] == []
    row = whole["devices"][5]
    assert row["status"] == "up" and row["last_poll"] and row["since"]
    assert row["location"] == {"floor": 2, "area": "大厅", "window": None}
    for bad in ({"limit": 0}, {"limit": PAGE_MAX + 1}, {"offset": -1}):
        assert (await c.get("/api/v1/devices", params=bad)).status_code == 422


@pytest.mark.parametrize("filters", [
    {"floor": 2}, {"class": "twin"}, {"owner": "o1"}, {"floor": 3, "owner": "o2"},
    {"class": "twin", "floor": 1, "owner": "o1"}, {"floor": 9}, {"owner": "nobody"},
])
async def test_filters_match_a_scan_of_the_inventory(
    client: tuple[Hall, httpx.AsyncClient], filters: dict[str, Any],
) -> None:
    hall, c = client
    want = [d.id for d in hall.inventory.devices
            if d.location.floor == filters.get("floor", d.location.floor)
            and d.class_ == filters.get("class", d.class_)
            and d.owner == filters.get("owner", d.owner)]
    got = await _get(c, **filters)
    assert got["total"] == len(want)
    assert [d["id"] for d in got["devices"]] == want


async def test_status_filter_sees_the_state_now(client: tuple[Hall, httpx.AsyncClient]) -> None:
    hall, c = client
    await hall.pipeline.set_maintenance({"d-0003", "d-0010"})
    got = await _get(c, status="maintenance")
    assert [d["id"] for d in got["devices"]] == ["d-0003", "d-0010"]
    got = await _get(c, status="maintenance", floor=4)
    assert [d["id"] for d in got["devices"]] == ["d-0003"]
    up = await _get(c, status="up", limit=10, offset=2)
    assert up["total"] == N - 2 and len(up["devices"]) == 10


async def test_detail_lists_the_device_checks_and_404s(
    client: tuple[Hall, httpx.AsyncClient],
) -> None:
    hall, c = client
    r = await c.get("/api/v1/devices/d-0005")
    assert r.status_code == 200
    detail = r.json()
    assert [ch["name"] for ch in detail["checks"]] == ["ping", "web"]
    assert [ch["kind"] for ch in detail["checks"]] == ["icmp", "tcp"]
    assert all(ch["hard"] == "up" and ch["last"]["ok"] for ch in detail["checks"])
    r = await c.get("/api/v1/devices/nosuch")
    assert (r.status_code, r.json()["detail"]) == (404, "unknown device 'nosuch'")


def test_index_positions_intersect_buckets(tmp_path: Path) -> None:
    from monitor.inventory import Inventory

    doc = {"site": {"name": "x", "timezone": "Asia/Shanghai"},
           "classes": {"node": NODE_CLASS, "twin": TWO_CHECKS},
           "devices": [_device(i) for i in range(50)]}
    index = DeviceIndex(Inventory.model_validate(doc, context={"env": {}}))
    assert list(index.positions()) == list(range(50))
    assert list(index.positions(floor=2, owner="o1")) == [
        i for i in range(50) if 1 + i % 4 == 2 and i % 3 == 1]
    assert list(index.positions(device_class="nosuch")) == []
    dev = index.get("d-0010")
    assert dev is not None and index.get("nope") is None
    assert list(index.checks(dev)) == ["ping", "web"]
