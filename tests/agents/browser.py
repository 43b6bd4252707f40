"""Headless Debian Chromium driven through chromedriver (selenium), with its network log.

    with chromium(tmp_path / "wall", size=(1920, 1080)) as b:    # or phone=True
        b.driver.get(url)
        b.urls()            # every URL the browser requested so far (DevTools network log)
        b.console()         # console messages (CSP violations show up here)

Nothing is downloaded: the system's /usr/bin/chromium and /usr/bin/chromedriver are used, with a
fresh profile and every background service off (no update checks, no sync, no metrics).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
         "--no-default-browser-check", "--disable-dev-shm-usage", "--lang=zh-CN")
PHONE = {"width": 390, "height": 844, "pixelRatio": 3.0}  # a common phone's CSS viewport


def found() -> tuple[str, str] | None:
    """(chromium, chromedriver) if both are installed."""
    browser = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    driver = shutil.which("chromedriver") or (CHROMEDRIVER if Path(CHROMEDRIVER).exists()
                                              else None)
    return (browser, driver) if browser and driver else None


@dataclass
class Browser:
    driver: Any
    _network: list[dict[str, Any]] = field(default_factory=list)
    _console: list[str] = field(default_factory=list)

    def _drain(self) -> None:
        for entry in self.driver.get_log("performance"):
            self._network.append(json.loads(entry["message"])["message"])
        self._console += [e["message"] for e in self.driver.get_log("browser")]

    def urls(self) -> list[str]:
        self._drain()
        return [m["params"]["request"]["url"] for m in self._network
                if m.get("method") == "Network.requestWillBeSent"]

    def console(self) -> list[str]:
        self._drain()
        return list(self._console)


@contextmanager
def chromium(profile: Path, *, phone: bool = False, size: tuple[int, int] = (1280, 900),
             paths: tuple[str, str] | None = None, pixel_ratio: float | None = None
             ) -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = paths or found() or (CHROMIUM, CHROMEDRIVER)
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    if phone:
        metrics = {**PHONE, **({"pixelRatio": pixel_ratio} if pixel_ratio else {})}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(profile / "chromedriver.log"))
    drv = webdriver.Chrome(options=options, service=service)
    try:
        drv.set_page_load_timeout(60)
        yield Browser(drv)
    finally:
        drv.quit()
