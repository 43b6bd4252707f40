"""Ticket API: real FastAPI app over a SQLite file store; auth, validation, 409s, tally, reports
(schemathesis over the whole document: tests/test_api_contract.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from monitor.api import limits
from monitor.api import reports as reports_api
from monitor.api import tickets as tickets_api
from monitor.api.auth import AUTH_RESPONSES, Auth, AuthError, Principal, require
from monitor.store import AsyncStore, Store

TOKENS = {"viewer": "v" * 20, "technician": "t" * 20, "admin": "a" * 20}


def auth_header(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def make_app(db: Path | None, open_reads: bool = False) -> FastAPI:
    """The routers as the lead mounts them; ``db=None`` builds the app for its OpenAPI only."""
    app = FastAPI(title="hallmon-test")
    limits.install(app, max_body_bytes=tickets_api.MAX_BODY)
    if db is not None:
        app.state.store = AsyncStore(Store(f"sqlite:///{db}", timezone="Asia/Shanghai"))
    app.state.auth = Auth([(f"{r}-user", r, tok) for r, tok in TOKENS.items()],
                          open_reads=open_reads)
    for r in (tickets_api.router, tickets_api.windows_router, reports_api.router):
        app.include_router(r, prefix="/api/v1")

    @app.post("/-/reload", responses=AUTH_RESPONSES)
    async def reload(_: Principal = Depends(require("admin"))) -> dict[str, str]:  # noqa: B008
        return {"status": "ok"}

    return app


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(tmp_path / "api.db")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hallmon") as c:
        yield c
    await app.state.store.aclose()


async def test_auth_roles(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/tickets")).status_code == 401
    r = await client.get("/api/v1/tickets", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/api/v1/tickets", headers=auth_header("viewer"))).status_code == 200
    body = {"category": "fault", "summary": "LED dark"}
    r = await client.post("/api/v1/tickets", json=body, headers=auth_header("viewer"))
    assert r.status_code == 403 and "needs technician" in r.json()["detail"]
    r = await client.post("/api/v1/tickets", json=body, headers=auth_header("technician"))
    assert r.status_code == 201 and r.json()["reporter"] == "technician-user"
    assert (await client.post("/-/reload", headers=auth_header("technician"))).status_code == 403
    assert (await client.post("/-/reload", headers=auth_header("admin"))).status_code == 200


async def test_open_reads(tmp_path: Path) -> None:
    app = make_app(tmp_path / "o.db", open_reads=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://h") as c:
        assert (await c.get("/api/v1/tickets")).status_code == 200
        r = await c.post("/api/v1/tickets", json={"category": "fault", "summary": "x"})
        assert r.status_code == 401
    await app.state.store.aclose()


async def test_ticket_story_over_http(client: httpx.AsyncClient) -> None:
    tech, view = auth_header("technician"), auth_header("viewer")
    r = await client.post("/api/v1/tickets", headers=tech, json={
        "category": "line", "summary": "专线中断", "device_id": "line-telecom",
        "device_class": "line", "floor": "2"})
    tid = r.json()["id"]
    r = await client.post(f"/api/v1/tickets/{tid}/transitions", headers=tech,
                          json={"to": "closed", "note": "x"})
    assert r.status_code == 200  # open -> closed is allowed (duplicates)
    r = await client.post(f"/api/v1/tickets/{tid}/transitions", headers=tech,
                          json={"to": "resolved"})
    assert r.status_code == 409
    assert r.json()["detail"] == (f"ticket {tid} is closed: cannot move to resolved "
                                  "(allowed: open)")
    r = await client.patch(f"/api/v1/tickets/{tid}", headers=tech, json={"assignee": "张"})
    assert r.json()["assignee"] == "张"
    r = await client.post(f"/api/v1/tickets/{tid}/comments", headers=tech, json={"text": "ok"})
    assert r.status_code == 201 and r.json()["kind"] == "comment"
    detail = (await client.get(f"/api/v1/tickets/{tid}", headers=view)).json()
    assert [e["kind"] for e in detail["events"]] == ["created", "status", "assigned", "comment"]
    assert (await client.get("/api/v1/tickets/999", headers=view)).status_code == 404
    r = await client.post("/api/v1/tickets", headers=tech,
                          json={"category": "coffee", "summary": "x"})
    assert r.status_code == 422 and "unknown category" in r.json()["detail"][0]["msg"]
    r = await client.post("/api/v1/tickets", headers=tech,
                          json={"category": "fault", "summary": "x", "colour": "red"})
    assert r.status_code == 422
    page = (await client.get("/api/v1/tickets?limit=1&category=line", headers=view)).json()
    assert page["total"] == 1 and page["limit"] == 1
    assert (await client.get("/api/v1/tickets?limit=501", headers=view)).status_code == 422
    tally = (await client.get("/api/v1/tickets/tally", headers=view,
                              params={"period": "year", "group_by": "category"})).json()
    assert tally["total"] == 1 and tally["rows"][0]["group"] == "line"
    tally = (await client.get("/api/v1/tickets/tally", headers=view, params={
        "period": "year", "group_by": "floor", "category": "fault"})).json()
    assert tally["total"] == 0


async def test_body_limit(client: httpx.AsyncClient) -> None:
    big = {"category": "fault", "summary": "x" * 3000, "device_id": "d" * 100}
    r = await client.post("/api/v1/tickets", headers=auth_header("technician"),
                          content=b'{"category": "fault", "summary": "' + b"x" * 70000 + b'"}')
    assert r.status_code == 413
    assert (await client.post("/api/v1/tickets", headers=auth_header("technician"),
                              json=big)).status_code == 201


async def test_windows_and_reports(client: httpx.AsyncClient) -> None:
    tech = auth_header("technician")
    r = await client.post("/api/v1/maintenance-windows", headers=tech, json={
        "selector": "floor", "value": "2", "starts_at": "2030-01-01T08:00:00+08:00",
        "duration_minutes": 90, "reason": "weekly line maintenance"})
    assert r.status_code == 201 and r.json()["ends_at"].startswith("2030-01-01T01:30:00")
    wid = r.json()["id"]
    r = await client.post("/api/v1/maintenance-windows", headers=tech, json={
        "selector": "floor", "value": "2", "starts_at": "2030-01-01T08:00:00Z", "reason": "x"})
    assert r.status_code == 422
    assert len((await client.get("/api/v1/maintenance-windows", headers=tech)).json()) == 1
    r = await client.delete(f"/api/v1/maintenance-windows/{wid}", headers=tech)
    assert r.status_code == 403
    r = await client.delete(f"/api/v1/maintenance-windows/{wid}", headers=auth_header("admin"))
    assert r.status_code == 204
    r = await client.get("/api/v1/reports/month", headers=tech,
                         params={"date": "2025-03-05", "format": "csv", "lang": "en"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "Jobs by category" in r.text
    r = await client.get("/api/v1/reports/year", headers=tech, params={"format": "xlsx"})
    assert r.content[:2] == b"PK"  # a zip container


def test_tokens_file_errors_never_echo_tokens(tmp_path: Path) -> None:
    f = tmp_path / "tokens.yaml"
    f.write_text("tokens:\n  - {name: a, role: root, token: supersecretvalue123}\n")
    f.chmod(0o600)
    with pytest.raises(AuthError) as err:
        Auth.from_file(f)
    assert "supersecretvalue123" not in str(err.value) and "tokens.0.role" in str(err.value)
    f.write_text("tokens:\n  - {name: a, role: admin, token: supersecretvalue123}\n")
    auth = Auth.from_file(f)
    assert "supersecret" not in repr(auth)
    assert auth.identify("supersecretvalue123") == Principal("a", "admin")


SECRET = "s3cret-token-value-0123"


@pytest.mark.parametrize(("text", "mode", "why"), [
    (f"tokens:\n  - {{name: a, role: admin, token: {SECRET}}}\n", 0o644,
     "readable or writable by other users (mode 644): chmod 600"),
    (f"tokens:\n  - {{name: a, role: admin, token: {SECRET}}}\n", 0o622, "chmod 600"),
    ("", 0o600, "empty: no tokens"),
    ("# nobody yet\n", 0o600, "empty: no tokens"),
    ("tokens: []\n", 0o600, "tokens: List should have at least 1 item"),
    (f"tokens:\n  - {{name: a, role: viewer, token: {SECRET}}}\n"
     f"  - {{name: b, role: admin, token: {SECRET}}}\n", 0o600,
     "tokens.1 ('b') has the same token as tokens.0 ('a')"),
    (f"tokens:\n  - {{name: a, role: admin, token: ' {SECRET}'}}\n", 0o600,
     "token of 'a' has spaces"),
    (f"tokens:\n  - {{name: a, role: admin, token: '{SECRET} '}}\n", 0o600,
     "token of 'a' has spaces"),
    (f"tokens:\n  - {{name: a, role: admin, token: '{SECRET[:8]} {SECRET[8:]}'}}\n", 0o600,
     "token of 'a' has spaces"),
    (f"tokens:\n  - {{name: a, role: admin, token: '{SECRET}令牌'}}\n", 0o600,
     "outside printable ASCII"),
])
def test_tokens_file_refused_as_sshd_refuses_keys(tmp_path: Path, text: str, mode: int,
                                                  why: str) -> None:
    """Found: each of these was accepted silently (a padded token could never match)."""
    f = tmp_path / "tokens.yaml"
    f.write_text(text, encoding="utf-8")
    f.chmod(mode)
    with pytest.raises(AuthError) as err:
        Auth.from_file(f)
    assert why in str(err.value) and str(f) in str(err.value)
    assert SECRET not in str(err.value) and SECRET[:8] not in str(err.value)


def test_a_token_file_must_be_private_too(tmp_path: Path) -> None:
    secret = tmp_path / "admin.token"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)
    f = tmp_path / "tokens.yaml"
    f.write_text(f"tokens:\n  - {{name: ops, role: admin, token_file: {secret}}}\n")
    f.chmod(0o600)
    with pytest.raises(AuthError, match="admin.token is readable or writable by other users"):
        Auth.from_file(f)
    secret.chmod(0o400)
    assert Auth.from_file(f).identify(SECRET) == Principal("ops", "admin")


# The schemathesis run over the whole OpenAPI document (these routes included, with and without
# tokens) is tests/test_api_contract.py.


async def test_a_plain_store_is_wrapped_once(tmp_path: Path) -> None:
    app = make_app(None)
    app.state.store = Store(f"sqlite:///{tmp_path / 'plain.db'}")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://h") as c:
        for _ in range(2):
            r = await c.get("/api/v1/tickets", headers=auth_header("viewer"))
            assert r.status_code == 200
    wrapped = app.state.tickets_astore
    assert wrapped.store is app.state.store
    await wrapped.aclose()
    app2 = make_app(None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2),
                                 base_url="http://h") as c:
        r = await c.get("/api/v1/tickets", headers=auth_header("viewer"))
        assert r.status_code == 503


async def test_a_manual_ticket_names_a_device_of_the_inventory(tmp_path: Path) -> None:
    """Issue 10.11: with the daemon's inventory, POST /api/v1/tickets refuses a misspelt
    device (with a suggestion) and fills in the device's class, floor and owner."""
    from types import SimpleNamespace

    from monitor.inventory import Inventory

    app = make_app(tmp_path / "api.db")
    app.state.hall = SimpleNamespace(inventory=Inventory.model_validate({
        "site": {"name": "大厅"},
        "devices": [{"id": "kiosk-1f-01", "name": "一楼自助终端1号", "class": "kiosk",
                     "address": "127.20.1.11", "location": {"floor": 1}, "owner": "政务办",
                     "credential": "ro"}],
        "credentials": {"ro": {"version": "2c", "community": "${C:-public}"}},
    }, context={"env": {}}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hallmon") as c:
        bad = await c.post("/api/v1/tickets", headers=auth_header("technician"), json={
            "category": "fault", "summary": "黑屏", "device_id": "kiosk-1f-1"})
        assert bad.status_code == 422
        assert bad.json()["detail"] == [{
            "loc": ["body", "device_id"], "type": "value_error",
            "msg": "unknown device 'kiosk-1f-1' (did you mean 'kiosk-1f-01'?)"}]
        ok = await c.post("/api/v1/tickets", headers=auth_header("technician"), json={
            "category": "fault", "summary": "黑屏", "device_id": "kiosk-1f-01"})
        assert ok.status_code == 201, ok.text
        body = ok.json()
        assert (body["device_class"], body["floor"], body["owner"]) == ("kiosk", "1", "政务办")
    await app.state.store.aclose()
