"""Hostile and clumsy HTTP input (issue 11), each as it was found, against the daemon's own app
(monitor.web.create_app) served by uvicorn on 127.0.0.1: request limits before any work, 405
``Allow``, and the 500s found by hand (PATCH null/blank summary, lone surrogates, year 0001)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from monitor.api.auth import Auth
from monitor.store import AsyncStore, Store
from monitor.web import create_app

TECH = {"Authorization": "Bearer " + "t" * 20}


class _Hall:
    ready = True

    async def render_metrics(self) -> bytes:
        return b"# nothing\n"

    async def render_metrics_gzip(self) -> bytes:
        raise AssertionError("not called here")

    async def reload(self) -> Any:
        raise AssertionError("not called here")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    store = AsyncStore(Store(f"sqlite:///{tmp_path_factory.mktemp('lim') / 'l.db'}",
                             timezone="Asia/Shanghai"))
    app = create_app(_Hall(), site_name="测试大厅", store=store,
                     auth_=Auth([("tech", "technician", "t" * 20)]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield "127.0.0.1", server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(timeout=20)
    store._pool.submit(store.store.close).result(timeout=20)
    store._pool.shutdown(wait=True)


def url(live: tuple[str, int], path: str) -> str:
    return f"http://{live[0]}:{live[1]}{path}"


def test_thirty_thousand_query_keys_refused_before_any_work(live: tuple[str, int]) -> None:
    """Found: 30,000 keys took 8 s in forbid_unknown_query and /-/healthy waited behind it."""
    query = "&".join(f"k{i}=1" for i in range(30_000))
    r = httpx.get(url(live, f"/api/v1/tickets?{query[:4000]}"), headers=TECH, timeout=30)
    assert r.status_code == 414 and "query parameters" in r.json()["detail"]
    conn = http.client.HTTPConnection(*live, timeout=30)  # httpx refuses such a long URL
    try:
        conn.request("GET", f"/api/v1/tickets?{query}", headers=TECH)
        resp = conn.getresponse()
        assert resp.status in (414, 431) or resp.status == 400, resp.status
    finally:
        conn.close()
    assert httpx.get(url(live, "/-/healthy"), timeout=30).text == "Healthy.\n"
    # Under the bound, the check still names each mistake once.
    r = httpx.get(url(live, "/api/v1/tickets?limit=1&limit=2&colour=red&b=1"), headers=TECH)
    assert r.status_code == 422
    assert [(d["loc"][1], d["msg"]) for d in r.json()["detail"]] == [
        ("b", "unknown query parameter"), ("colour", "unknown query parameter"),
        ("limit", "given more than once")]


def test_too_many_headers_refused(live: tuple[str, int]) -> None:
    headers = {f"x-h{i}": "v" for i in range(200)}
    r = httpx.get(url(live, "/-/healthy"), headers=headers)
    assert r.status_code == 431
    r = httpx.get(url(live, "/-/healthy"), headers={"x-big": "v" * 17000})
    assert r.status_code in (400, 431)  # uvicorn's parser or ours, never a stall


def test_chunked_ten_megabytes_gets_413(live: tuple[str, int]) -> None:
    """Found: a chunked 10 MB body got 400 ("error parsing the body"), not 413."""

    def chunks() -> Iterator[bytes]:
        yield b'{"category": "fault", "summary": "'
        for _ in range(160):  # 160 x 64 KB = 10 MB; the server stops reading after 64 KB
            yield b"x" * 65536
        yield b'"}'

    conn = http.client.HTTPConnection(*live, timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/tickets")
        for k, v in {**TECH, "Content-Type": "application/json",
                     "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            for c in chunks():
                conn.send(b"%x\r\n%s\r\n" % (len(c), c))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read the answer
        resp = conn.getresponse()
        assert resp.status == 413
    finally:
        conn.close()
    with socket.create_connection(live, timeout=30) as s:
        s.sendall(b"POST /api/v1/tickets HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{}")
        assert s.recv(64).startswith(b"HTTP/1.1 413 ")


def test_405_allow_lists_every_method(live: tuple[str, int]) -> None:
    """Found: ``Allow: GET`` on /api/v1/tickets, which also takes POST."""
    r = httpx.put(url(live, "/api/v1/tickets"), headers=TECH)
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}
    r = httpx.delete(url(live, "/api/v1/tickets/1"), headers=TECH)
    assert set(r.headers["allow"].split(", ")) == {"GET", "PATCH"}


def _ticket(live: tuple[str, int]) -> int:
    r = httpx.post(url(live, "/api/v1/tickets"), headers=TECH,
                   json={"category": "fault", "summary": "叫号机黑屏"})
    assert r.status_code == 201
    return int(r.json()["id"])


@pytest.mark.parametrize("summary", [None, "", "   ", "\u3000"])
def test_patch_refuses_null_and_blank_summary(live: tuple[str, int], summary: Any) -> None:
    """Found: {"summary": null} was a 500; a blank one was stored (refused on create)."""
    tid = _ticket(live)
    r = httpx.patch(url(live, f"/api/v1/tickets/{tid}"), headers=TECH, json={"summary": summary})
    assert r.status_code == 422, r.text
    r = httpx.patch(url(live, f"/api/v1/tickets/{tid}"), headers=TECH, json={"category": None})
    assert r.status_code == 422, r.text
    r = httpx.post(url(live, "/api/v1/tickets"), headers=TECH,
                   json={"category": "fault", "summary": summary})
    assert r.status_code == 422, r.text
    got = httpx.get(url(live, f"/api/v1/tickets/{tid}"), headers=TECH).json()
    assert got["ticket"]["summary"] == "叫号机黑屏"


@pytest.mark.parametrize("body", [
    b'{"category": "fault", "summary": "\\ud800"}',
    b'{"category": "fault", "summary": "x", "floor": "' + b"\\udc80" * 200 + b'"}',
    b'{"category": "\\ud83d", "summary": "x"}',
    b'{"category": "fault", "summary": "x", "colour\\ud800": 1}',
])
def test_lone_surrogate_is_a_422(live: tuple[str, int], body: bytes) -> None:
    """Found: the 422 handler failed to encode a lone surrogate it echoed back (500)."""
    r = httpx.post(url(live, "/api/v1/tickets"), headers={**TECH, "Content-Type":
                   "application/json"}, content=body)
    assert r.status_code == 422, r.text
    r.json()


@pytest.mark.parametrize("starts", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_window_in_year_one_is_a_422(live: tuple[str, int], starts: str) -> None:
    """Found: a window starting in year 0001 overflowed converting to UTC (500)."""
    r = httpx.post(url(live, "/api/v1/maintenance-windows"), headers=TECH, json={
        "selector": "floor", "value": "2", "starts_at": starts, "duration_minutes": 60,
        "reason": "x"})
    assert r.status_code == 422, r.text
    assert "starts_at" in r.json()["detail"][0]["loc"]


def test_slow_sender_does_not_stall_others(live: tuple[str, int]) -> None:
    """A body trickling in holds its own request only: /-/healthy answers meanwhile."""
    with socket.create_connection(live, timeout=30) as s:
        s.sendall(b"POST /api/v1/tickets HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"Content-Type: application/json\r\n\r\n{")
        assert httpx.get(url(live, "/-/healthy"), timeout=30).status_code == 200


def test_schema_documents_the_refusals(tmp_path: Path) -> None:
    """413 is documented on every route with a body (schemathesis checks status codes)."""
    app = create_app(_Hall(), site_name="x")
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)


class _ReloadHall(_Hall):
    def __init__(self) -> None:
        self.reloads = 0

    async def reload(self) -> Any:
        from types import SimpleNamespace
        self.reloads += 1
        return SimpleNamespace(ok=True, changed=False, problems=[])


@pytest.mark.parametrize(("local_trust", "status"), [(True, 200), (False, 403)])
async def test_loopback_trust_can_be_turned_off(local_trust: bool, status: int) -> None:
    """Found: without a tokens file, /-/reload trusts any caller from 127.0.0.1 — which is
    every client of a reverse proxy on the same machine. --auth.no-local-trust refuses it."""
    hall = _ReloadHall()
    app = create_app(hall, site_name="x", local_trust=local_trust)
    proxied = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))  # as nginx connects
    async with httpx.AsyncClient(transport=proxied, base_url="http://h") as c:
        r = await c.post("/-/reload")
    assert r.status_code == status, r.text
    assert hall.reloads == (1 if local_trust else 0)
    if not local_trust:
        assert "--auth.tokens-file" in r.json()["detail"]


def test_no_local_trust_flag_reaches_the_options() -> None:
    from monitor.cli import build_parser
    args = build_parser().parse_args(["run", "--auth.no-local-trust"])
    assert args.local_trust is False
    assert build_parser().parse_args(["run"]).local_trust is True


def test_chinese_category_labels_in_the_api(live: tuple[str, int]) -> None:
    """Category labels as the hall says them (故障维修) wherever the API takes a category."""
    r = httpx.post(url(live, "/api/v1/tickets"), headers=TECH,
                   json={"category": "巡检", "summary": "二楼弱电间巡检"})
    assert r.status_code == 201 and r.json()["category"] == "inspection"
    tid = r.json()["id"]
    r = httpx.patch(url(live, f"/api/v1/tickets/{tid}"), headers=TECH,
                    json={"category": "预防性维护"})
    assert r.status_code == 200 and r.json()["category"] == "preventive"
    page = httpx.get(url(live, "/api/v1/tickets"), headers=TECH,
                     params={"category": "预防性维护"}).json()
    assert [t["id"] for t in page["items"]] == [tid]
    tally = httpx.get(url(live, "/api/v1/tickets/tally"), headers=TECH,
                      params={"category": "预防性维护", "period": "year"}).json()
    assert tally["total"] == 1
