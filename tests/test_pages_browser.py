"""The pages in a real headless Chromium against the real daemon (``hallmon run --mock``).

A technician on a phone-sized screen signs in, opens a ticket for a kiosk picked on the board,
starts it (the board's maintenance list shows it), resolves it. Meanwhile a wall-sized board
watches a device scripted down turn red within one interval + 5 s of the daemon seeing it. Every
request either browser made went to the daemon on 127.0.0.1 (DevTools network log), and the
Content-Security-Policy blocks an injected inline script and a request to another origin.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.agents.browser import Browser, chromium, found
from tests.agents.daemon import ROOT, HallmonProcess, node, small_inventory
from tests.conftest import missing_tool

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
INTERVAL = 1.0  # the inventory's polling interval (small_inventory's default "1s")
RED = "rgba(242, 73, 92, 1)"  # #F2495C, the dashboards' red
LOCAL_SCHEMES = {"data", "about", "blob", "chrome"}  # the browser's own pages, not the network


def _wait(what: str, within: float, probe, every: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll ``probe`` until truthy; a page in the middle of loading counts as "not yet"."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + within
    while True:
        try:
            value = probe()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


def _tile_class(b: Browser, device: str) -> str:
    from selenium.webdriver.common.by import By

    tile = b.driver.find_element(By.CSS_SELECTOR, f'a.t[href="/status/devices/{device}"]')
    return str(tile.get_attribute("class"))


def _text(b: Browser, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(b.driver.find_element(By.CSS_SELECTOR, css).text)


def _el(b: Browser, css: str):  # type: ignore[no-untyped-def]
    """The element, once the page in progress has it (bounded wait)."""
    from selenium.webdriver.common.by import By

    return _wait(css, 30, lambda: b.driver.find_element(By.CSS_SELECTOR, css))


def _only_the_daemon(b: Browser, port: int) -> None:
    for url in b.urls():
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES:
            continue
        assert (parts.scheme, parts.hostname, parts.port) == ("http", "127.0.0.1", port), url


@pytest.fixture
def browsers() -> tuple[str, str]:
    paths = found()
    if paths is None:
        missing_tool("chromium and chromium-driver (Debian packages) are needed")
    assert paths is not None
    return paths


def test_a_technician_story_on_a_phone_and_a_device_going_red_on_the_wall(
        tmp_path: Path, browsers: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    inv = small_inventory(
        [node("sw-1", "127.30.0.1", floor=1),
         node("kiosk-1", "127.30.1.1", parent="sw-1", public=True, public_name="自助终端 1 号"),
         node("kiosk-2", "127.30.1.2", parent="sw-1"),
         node("kiosk-3", "127.30.2.3", floor=2)],
        faults=[{"device": "kiosk-3", "at": "25s", "mode": "down"}])
    with HallmonProcess(tmp_path / "d", inv, autostart=False) as d:
        d.storage.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "monitor.cli", "users", "add", "li", "--role",
                        "technician", "--password-stdin", "--db", f"sqlite:///{d.db}"],
                       input=PASSWORD + "\n", text=True, check=True, cwd=ROOT, timeout=60)
        d.start()
        with chromium(tmp_path / "wall", size=(1920, 1080), paths=browsers) as wall, \
                chromium(tmp_path / "phone", phone=True, paths=browsers) as phone:
            wall.driver.get(f"{d.base}/status")
            assert "设备状态" in wall.driver.title

            # -- the phone: from the board to a ticket, one tap at a time
            phone.driver.get(f"{d.base}/status")
            assert phone.driver.execute_script("return window.innerWidth") == 390
            _el(phone, 'a.t[href="/status/devices/kiosk-2"]').click()
            _wait("the device page", 30,
                  lambda: phone.driver.current_url.endswith("/status/devices/kiosk-2"))
            _wait("the device up", 30, lambda: _text(phone, "#device-status") == "正常")
            _el(phone, "#new-ticket").click()
            _wait("the login page", 30, lambda: "/login" in phone.driver.current_url)
            _el(phone, "#name").send_keys("li")
            _el(phone, "#password").send_keys(PASSWORD)
            _el(phone, "#submit").click()
            _wait("the new-ticket form", 30,
                  lambda: phone.driver.current_url.endswith("/tickets/new?device=kiosk-2"))
            assert _el(phone, "#device_id option:checked").get_attribute("value") == "kiosk-2"
            _el(phone, "#summary").send_keys("触摸屏无响应")
            _el(phone, "#create").click()
            _wait("the ticket page", 30, lambda: "/tickets/" in phone.driver.current_url
                  and phone.driver.current_url.rsplit("/", 1)[1].isdigit())
            tid = phone.driver.current_url.rsplit("/", 1)[1]
            _wait("the new ticket open", 30, lambda: _text(phone, "#status") == "待处理")
            # every button is reachable without sideways scrolling, big enough for a thumb
            width = phone.driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390
            start = _el(phone, "#do-start")
            assert start.size["height"] >= 44 and start.size["width"] >= 300
            start.click()
            _wait("in progress", 30, lambda: _text(phone, "#status") == "处理中")

            # -- the wall board: the ticket in progress puts the kiosk in maintenance, with why
            _wait("the ticket on the board", 45,
                  lambda: f"#{tid} 触摸屏无响应" in _text(wall, "#maintenance")
                  and "s-m" in _tile_class(wall, "kiosk-2"))

            # -- resolve it from the phone
            _el(phone, "#resolution-text").send_keys("重新插拔数据线")
            _el(phone, "#do-resolve").click()
            _wait("resolved", 30, lambda: _text(phone, "#status") == "已解决")
            assert "重新插拔数据线" in _text(phone, "#resolution")
            trail = phone.driver.find_elements(By.CSS_SELECTOR, "#trail li")
            assert len(trail) == 3 and all(" li " in f" {e.text} " for e in trail)  # who did it
            _wait("the kiosk out of maintenance", 45,
                  lambda: "触摸屏无响应" not in _text(wall, "#maintenance"))

            # -- the scripted fault: red on the wall within one interval + 5 s
            first_look = _tile_class(wall, "kiosk-3")
            down_seen = _wait("the daemon to see kiosk-3 down", 60,
                              lambda: d.status("kiosk-3") == "down" and time.monotonic())
            if "s-d" not in first_look:  # the board showed it up before the daemon saw it down
                assert "s-u" in first_look
            red_seen = _wait("kiosk-3 red on the board", INTERVAL + 5,
                             lambda: "s-d" in _tile_class(wall, "kiosk-3") and time.monotonic(),
                             every=0.05)
            assert red_seen - down_seen <= INTERVAL + 5
            tile = wall.driver.find_element(By.CSS_SELECTOR,
                                            'a.t[href="/status/devices/kiosk-3"]')
            assert tile.value_of_css_property("background-color") == RED
            _wait("the incident listed with how long", 10,
                  lambda: "设备 kiosk-3 · 故障 · 已持续" in _text(wall, "#incidents"))

            # -- nothing but the daemon, and no CSP complaint from our own pages
            for b in (wall, phone):
                _only_the_daemon(b, d.port)
                assert not [m for m in b.console() if "Content Security Policy" in m]

            # -- the CSP holds: an injected inline script does not run, another origin is
            #    not fetched (a loopback address: even a broken CSP would stay on this machine)
            wall.driver.execute_script(
                "var s = document.createElement('script');"
                "s.textContent = 'window.__injected = 1';"
                "document.body.appendChild(s);")
            assert wall.driver.execute_script("return window.__injected") is None
            outcome = wall.driver.execute_async_script(
                "var done = arguments[0];"
                "fetch('http://127.0.0.2:9/x').then(function () { done('fetched'); },"
                " function () { done('blocked'); });")
            assert outcome == "blocked"
            violations = [m for m in wall.console() if "Content Security Policy" in m]
            assert any("script-src" in m for m in violations), violations
            assert any("connect-src" in m for m in violations), violations


def test_the_public_board_shows_only_public_devices_in_a_browser(
        tmp_path: Path, browsers: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    inv = small_inventory(
        [node("kiosk-1", "127.30.1.1", public=True, public_name="自助终端 1 号"),
         node("kiosk-2", "127.30.1.2")])
    with HallmonProcess(tmp_path / "d", inv) as d, \
            chromium(tmp_path / "lobby", size=(1280, 720), paths=browsers) as lobby:
        lobby.driver.get(f"{d.base}/status/public")
        tiles = lobby.driver.find_elements(By.CSS_SELECTOR, ".t")
        assert [t.find_element(By.TAG_NAME, "b").text for t in tiles] == ["自助终端 1 号"]
        _wait("in service", 30, lambda: "正常服务" in tiles[0].text)
        _only_the_daemon(lobby, d.port)
        assert not [m for m in lobby.console() if "Content Security Policy" in m]
