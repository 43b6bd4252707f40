"""The pages through HTTP (in process, the real Hall on mock probes and a real store): sign-in,
CSRF, throttling, the ticket forms, the board and its data, the public board, offline /docs.
Browser-driven stories are in test_pages_browser.py."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from monitor.app import Hall, Options
from monitor.pages import board
from monitor.pages.render import CSP
from monitor.pages.session import LoginThrottle, read_session
from monitor.state import DeviceStatus
from monitor.store import InvalidValue, NotFound, Store
from monitor.store.users import verify_password
from tests.agents.daemon import NODE_CLASS
from tests.conftest import Clock

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"

HALL = {
    "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
    "classes": {"node": NODE_CLASS},
    "devices": [
        {"id": "kiosk-1", "name": "一楼自助终端1号", "class": "node", "address": "127.20.1.21",
         "location": {"floor": 1, "area": "大厅"}, "public": True, "public_name": "自助终端 1 号"},
        {"id": "kiosk-2", "name": "一楼自助终端2号", "class": "node", "address": "127.20.1.22",
         "location": {"floor": 1, "area": "大厅"}},
        {"id": "cam-2", "name": "二楼摄像机", "class": "node", "address": "127.20.2.21",
         "location": {"floor": 2, "area": "机房"},
         "maintenance": [{"reason": "更换镜头", "schedule": "Mon-Sun 00:00-24:00"}]},
    ],
}


# ---- the store's accounts ----------------------------------------------------------------------

def test_accounts_hash_passwords_and_end_sessions_on_change(store: Store) -> None:
    user = store.add_user("li", "technician", PASSWORD)
    assert user.password.startswith("scrypt$32768$8$1$") and PASSWORD not in user.password
    assert PASSWORD not in repr(user) and user.password not in repr(user)
    assert verify_password(PASSWORD, user.password)
    assert not verify_password("wrong password", user.password)
    assert not verify_password(PASSWORD, "garbage")
    with pytest.raises(InvalidValue, match="exists already"):
        store.add_user("li", "viewer", PASSWORD)
    with pytest.raises(InvalidValue, match="role must be one of"):
        store.add_user("wang", "root", PASSWORD)
    with pytest.raises(InvalidValue, match="user name"):
        store.add_user("bad name", "viewer", PASSWORD)
    with pytest.raises(InvalidValue, match="password must be 8"):
        store.add_user("wang", "viewer", "short")
    with pytest.raises(NotFound):
        store.set_password("nobody", PASSWORD)
    assert store.set_password("li", "another password").epoch == 1
    assert store.set_disabled("li").disabled and store.get_user("li").epoch == 2  # type: ignore[union-attr]
    key = store.session_key()
    assert len(key) == 32 and store.session_key() == key  # made once, kept


def test_users_cli(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hallmon.db'}"

    def hallmon(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor.cli", "users", *args, "--db", db],
                              input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)

    r = hallmon("add", "li", "--role", "technician", "--password-stdin", stdin=PASSWORD + "\n")
    assert (r.returncode, r.stdout) == (0, "add: li (technician, active)\n")
    assert PASSWORD not in r.stdout + r.stderr
    r = hallmon("add", "li", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 1 and "user 'li' exists already" in r.stderr
    r = hallmon("passwd", "li", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "password must be 8 to 1024 characters" in r.stderr
    assert hallmon("disable", "li").returncode == 0
    assert hallmon("list").stdout == "li\ttechnician\tdisabled\n"
    r = hallmon("disable", "nobody")
    assert r.returncode == 1 and "user 'nobody' not found" in r.stderr
    s = Store(db)
    try:
        user = s.get_user("li")
        assert user is not None and user.disabled and verify_password(PASSWORD, user.password)
    finally:
        s.close()


def test_login_throttle_counts_failures_per_name_and_per_client() -> None:
    clock = Clock(0.0)
    th = LoginThrottle(per_name=5, per_client=20, window=900, clock=clock)
    for _ in range(5):
        assert th.wait("li", "127.0.0.1") == 0
        th.failed("li", "127.0.0.1")
    assert th.wait("li", "127.0.0.2") == 900  # the name is locked from every address
    assert th.wait("wang", "127.0.0.1") == 0
    clock.now = 899.0
    assert th.wait("LI", "127.0.0.3") == 1
    clock.now = 900.0
    assert th.wait("li", "127.0.0.1") == 0
    for i in range(20):
        th.failed(f"n{i}", "127.0.0.9")
    assert th.wait("someone-else", "127.0.0.9") == 900  # one address spraying names


# ---- the app in process ------------------------------------------------------------------------

@pytest.fixture
async def hall(tmp_path: Path) -> AsyncIterator[Hall]:
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(yaml.safe_dump(HALL, allow_unicode=True), encoding="utf-8")
    h = Hall(Options(inventory=inv_file, state_dir=tmp_path, mock=True, pace=0.2))
    await h.start()
    try:
        for _ in range(200):  # the mock hall answers at once; wait for the first hard states
            if h.pipeline.state.status("kiosk-2") is DeviceStatus.UP:
                break
            await asyncio.sleep(0.05)
        assert h.store is not None
        h.store.add_user("li", "technician", PASSWORD)
        h.store.add_user("zhao", "viewer", PASSWORD)
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def client(hall: Hall) -> AsyncIterator[httpx.AsyncClient]:
    from monitor.web import create_app

    app = create_app(hall, site_name="测试大厅", store=hall.astore)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hallmon") as c:
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


async def sign_in(c: httpx.AsyncClient, name: str, password: str = PASSWORD,
                  nxt: str = "/tickets") -> httpx.Response:
    page = await c.get(f"/login?next={nxt}")
    return await c.post("/login", data={"csrf": csrf_of(page.text), "next": nxt, "name": name,
                                        "password": password})


async def test_sign_in_sets_a_signed_httponly_samesite_cookie(client: httpx.AsyncClient,
                                                              hall: Hall) -> None:
    assert (await client.get("/tickets")).headers["location"] == "/login?next=/tickets"
    r = await client.get("/tickets?status=open&mine=1")
    assert r.headers["location"] == "/login?next=/tickets%3Fstatus%3Dopen%26mine%3D1"
    r = await sign_in(client, "li", "wrong password")
    assert r.status_code == 401 and "用户名或密码错误" in r.text
    assert "hallmon_session" not in client.cookies
    r = await sign_in(client, "li", nxt="/tickets?status=open")
    assert (r.status_code, r.headers["location"]) == (303, "/tickets?status=open")
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("hallmon_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie
    assert PASSWORD not in cookie
    page = await client.get("/tickets")
    assert page.status_code == 200 and "li" in page.text
    assert page.headers["content-security-policy"] == CSP
    # a tampered cookie is no session
    value = client.cookies["hallmon_session"]
    assert hall.store is not None
    assert read_session(hall.store.session_key(), value, 0) is not None
    client.cookies.set("hallmon_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert (await client.get("/tickets")).status_code == 303


async def test_login_needs_its_csrf_token_and_refuses_other_origins(
        client: httpx.AsyncClient) -> None:
    await client.get("/login")
    r = await client.post("/login", data={"name": "li", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403 and "hallmon_session" not in client.cookies
    page = await client.get("/login")
    r = await client.post("/login", headers={"Origin": "http://evil.invalid"},
                          data={"name": "li", "password": PASSWORD, "csrf": csrf_of(page.text)})
    assert r.status_code == 403 and "hallmon_session" not in client.cookies


async def test_login_is_throttled_after_five_failures(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await sign_in(client, "li", "wrong password")).status_code == 401
    r = await sign_in(client, "li")  # the right password, but too late
    assert r.status_code == 429 and "失败次数过多" in r.text
    assert (await sign_in(client, "zhao")).status_code == 303  # another name from here


async def test_ticket_forms_write_through_the_store_with_an_audit_trail(
        client: httpx.AsyncClient, hall: Hall) -> None:
    await sign_in(client, "li")
    form = await client.get("/tickets/new?device=kiosk-2")
    assert '<option value="kiosk-2" selected>' in form.text
    token = csrf_of(form.text)
    r = await client.post("/tickets/new", data={"device_id": "kiosk-2", "category": "fault",
                                                "summary": "触摸屏无响应"})
    assert r.status_code == 403  # no CSRF token
    r = await client.post("/tickets/new", data={"csrf": token, "device_id": "kiosk-9",
                                                "category": "fault", "summary": "x"})
    assert r.status_code == 422 and "device_id：unknown device &#39;kiosk-9&#39;" in r.text
    r = await client.post("/tickets/new", data={"csrf": token, "device_id": "kiosk-2",
                                                "category": "fault", "summary": ""})
    assert r.status_code == 422 and "summary：必填" in r.text
    r = await client.post("/tickets/new", data={"csrf": token, "device_id": "kiosk-2",
                                                "category": "fault", "summary": "触摸屏无响应"})
    assert r.status_code == 303
    tid = int(r.headers["location"].rsplit("/", 1)[1])
    assert hall.astore is not None
    t = await hall.astore.get_ticket(tid)
    assert (t.device_id, t.device_class, t.floor, t.reporter, t.assignee) == (
        "kiosk-2", "node", "1", "li", None)
    for data in ({"to": "in_progress"}, {"to": "resolved", "resolution": "重启后恢复"}):
        r = await client.post(f"/tickets/{tid}/transition", data={"csrf": token, **data})
        assert r.status_code == 303
        # started: in maintenance at once, not at the daemon's next refresh (up to 15 s)
        in_maintenance = hall.pipeline.state.status("kiosk-2") is DeviceStatus.MAINTENANCE
        assert in_maintenance == (data["to"] == "in_progress")
    r = await client.post(f"/tickets/{tid}/transition", data={"csrf": token, "to": "in_progress"})
    assert r.status_code == 409 and "cannot move to in_progress" in r.text
    assert (await client.post(f"/tickets/{tid}/comment",
                              data={"csrf": token, "text": "已通知厂家"})).status_code == 303
    page = await client.get(f"/tickets/{tid}")
    assert "重启后恢复" in page.text and "已通知厂家" in page.text
    kinds = [e.kind for e in await hall.astore.ticket_events(tid)]
    assert kinds == ["created", "status", "status", "comment"]
    for path in ("/login", "/status", "/status/public", "/status/devices/kiosk-2", "/docs",
                 "/tickets", "/tickets/new", f"/tickets/{tid}", "/tickets/999999"):
        r = await client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        # nothing inline: no style attribute, no inline script, no on... handler
        assert not re.search(r"<[^>]*\s(style|on[a-z]+)=|<script>", r.text), path
    listed = await client.get("/tickets?status=resolved&device_id=kiosk-2")
    assert f'href="/tickets/{tid}"' in listed.text
    assert f'href="/tickets/{tid}"' not in (await client.get("/tickets?status=open")).text


async def test_a_viewer_reads_but_cannot_write_and_a_disabled_account_is_out(
        client: httpx.AsyncClient, hall: Hall) -> None:
    await sign_in(client, "zhao")
    assert (await client.get("/tickets")).status_code == 200
    assert (await client.get("/tickets/new")).status_code == 403
    token = csrf_of((await client.get("/tickets")).text)  # the sign-out form's
    r = await client.post("/tickets/new", data={"csrf": token, "category": "fault",
                                                "summary": "x"})
    assert r.status_code == 403
    assert hall.store is not None
    hall.store.set_disabled("zhao")
    assert (await client.get("/tickets")).status_code == 303  # the session ended at once


async def test_the_board_shows_the_hall_by_floor_and_area(client: httpx.AsyncClient,
                                                          hall: Hall) -> None:
    hall.pipeline.state.statuses["kiosk-2"] = (DeviceStatus.DOWN, "no reply")
    await hall.refresh_maintenance()
    page = await client.get("/status")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    html = page.text
    heads = re.findall(r"<h[23]>([^<]+)</h[23]>", html)
    assert heads == ["当前故障", "维护中的设备", "1 楼", "大厅", "2 楼", "机房"]
    assert re.search(r'class="t s-d"[^>]*><b>一楼自助终端2号</b>', html)
    assert " style=" not in html and "<script>" not in html  # nothing inline (the CSP)
    assert '<a href="/status/devices/cam-2">二楼摄像机</a> · 更换镜头' in html
    data = (await client.get("/status/data.json")).json()
    assert data["s"] == "udm" and data["counts"]["down"] == 1
    english = await client.get("/status?lang=en")
    assert "Devices in maintenance" in english.text and ">down<" in english.text
    assert english.cookies.get("hallmon_lang") == "en"
    assert "Devices in maintenance" in (await client.get("/status")).text  # remembered
    assert data["maintenance"] == [{"id": "cam-2", "name": "二楼摄像机", "why": "更换镜头"}]


async def test_a_device_page_for_robot_message_links(client: httpx.AsyncClient,
                                                    hall: Hall) -> None:
    assert hall.astore is not None
    from monitor.store import NewTicket

    t = await hall.astore.create_ticket(NewTicket(category="fault", summary="屏幕花屏",
                                                  reporter="王敏", device_id="kiosk-2"))
    page = await client.get("/status/devices/kiosk-2")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "一楼自助终端2号" in page.text and f'href="/tickets/{t.id}"' in page.text
    assert "<b>ping</b> (icmp, reachability)" in page.text
    assert 'href="/tickets/new?device=kiosk-2"' in page.text
    missing = await client.get("/status/devices/kiosk-9")
    assert missing.status_code == 404 and "unknown device &#39;kiosk-9&#39;" in missing.text


async def test_a_big_outage_lists_the_causes_first_and_counts_the_rest(
        client: httpx.AsyncClient, hall: Hall) -> None:
    from monitor.pipeline import OpenIncident

    for i in range(150):  # a core switch down: its children unreachable (since before it)
        hall.pipeline.incidents[f"pc-{i}"] = OpenIncident(i, DeviceStatus.UNREACHABLE, "ping",
                                                          1000.0 + i)
    hall.pipeline.incidents["sw-core"] = OpenIncident(999, DeviceStatus.DOWN, "ping", 2000.0)
    data = (await client.get("/status/data.json")).json()
    assert len(data["incidents"]) == board.MAX_LISTED and data["incidents_total"] == 151
    assert [i["id"] for i in data["incidents"][:2]] == ["sw-core", "pc-0"]
    assert "<li class=\"none\">+51</li>" in (await client.get("/status")).text


async def test_the_public_board_shows_only_public_devices(client: httpx.AsyncClient) -> None:
    html = (await client.get("/status/public")).text
    assert "自助终端 1 号" in html
    assert "一楼自助终端2号" not in html and "二楼摄像机" not in html and "kiosk-2" not in html
    data = (await client.get("/status/public/data.json")).json()
    assert set(data) == {"gen", "s", "counts", "at"} and len(data["s"]) == 1


async def test_with_closed_reads_the_board_needs_a_session_and_tokens_still_work(
        hall: Hall) -> None:
    from monitor.api.auth import Auth
    from monitor.web import create_app

    token = "ops-token-0123456789abcdef"
    app = create_app(hall, site_name="测试大厅", store=hall.astore,
                     auth_=Auth([("ops", "admin", token)], open_reads=False))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hallmon") as c:
        assert (await c.get("/status")).headers["location"] == "/login?next=/status"
        assert (await c.get("/status/data.json")).status_code == 401
        assert (await c.get("/status/devices/kiosk-2")).status_code == 303
        assert (await c.get("/status/public")).status_code == 200  # the lobby's, always open
        assert (await c.get("/api/v1/devices")).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await c.get("/api/v1/devices", headers=bearer)).json()["total"] == 3
        r = await c.post("/api/v1/tickets", headers=bearer,
                         json={"category": "fault", "summary": "经 API 创建"})
        assert r.status_code == 201
        await sign_in(c, "zhao")
        assert (await c.get("/status")).status_code == 200
        assert len((await c.get("/status/data.json")).json()["s"]) == 3
        assert "经 API 创建" in (await c.get("/tickets")).text


async def test_docs_are_served_from_the_package(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
    assert "/api/v1/tickets/{ticket_id}/transitions" in r.text and "TicketOut" in r.text
    assert not re.search(r'(src|href)="(https?:)?//', r.text)  # nothing from another host
    assert (await client.get("/static/board.js")).status_code == 200


def test_layout_keeps_inventory_order_within_floors() -> None:
    from monitor.inventory import Device

    def dev(i: str, floor: int | None, area: str | None) -> Device:
        return Device.model_validate({"id": i, "name": i, "class": "k", "address": "127.0.0.1",
                                      "location": {"floor": floor, "area": area}})

    layout = board.build_layout([dev("a", 2, "x"), dev("b", None, None), dev("c", 1, "y"),
                                 dev("d", 2, "w"), dev("e", 2, "x")])
    assert [(f.floor, [(a.name, [t.id for t in a.tiles]) for a in f.areas])
            for f in layout.floors] == [
        (1, [("y", ["c"])]), (2, [("x", ["a", "e"]), ("w", ["d"])]), (None, [(None, ["b"])])]
    assert layout.ids == ("c", "a", "e", "d", "b")
    assert board.build_layout([dev("a", 1, "x")]).gen != board.build_layout(
        [dev("a", 2, "x")]).gen
