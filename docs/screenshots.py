"""Screenshots of the pages for the README: the board on a wall screen and on a phone, the public
board, and a ticket page on a phone (docs/screenshots/*.png).

The shipped hall (inventory.yaml) runs with mock probes and its scripted faults (the daemon as
``hallmon demo`` runs it, polling every second) on 127.0.0.1; a technician account and a ticket
with some history are put in its store first. Chromium is the system's, headless.

    .venv/bin/python docs/screenshots.py [--wait 45]

``--wait``: seconds of the scripted day to let pass first (the switch fails at 20 s, the camera
at 40 s). Nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.store import NewTicket, Store, sqlite_url  # noqa: E402
from tests.agents.browser import chromium  # noqa: E402
from tests.agents.daemon import HallmonProcess  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
PASSWORD = "screenshot-only-password"
# The daemon as `hallmon demo` runs it (Options.pace = 1 s), on the given state directory.
RUNNER = """
import asyncio, sys
from pathlib import Path
from monitor.app import Options
from monitor.cli.run import serve
from monitor.logs import setup
setup("info", "logfmt")
inv, port, state = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
options = Options(inventory=Path(inv), listen=f"127.0.0.1:{port}", state_dir=state, mock=True,
                  pace=1.0)
sys.exit(asyncio.run(serve(options, ("127.0.0.1", port))))
"""


class DemoProcess(HallmonProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", RUNNER, str(self.inventory), str(self.port),
                str(self.storage)]


def prepare(state: Path) -> int:
    state.mkdir(parents=True, exist_ok=True)
    store = Store(sqlite_url(state), timezone="Asia/Shanghai")
    try:
        store.add_user("li", "technician", PASSWORD)
        t = store.create_ticket(NewTicket(
            category="fault", summary="一楼自助终端3号触摸屏无响应，群众无法取号",
            reporter="前台王敏",
            device_id="kiosk-1f-03", device_class="kiosk", floor="1", assignee="li"))
        store.transition(t.id, "in_progress", "li", "已到现场")
        store.comment(t.id, "li", "触摸屏排线松动，已重新插好，观察中")
        return t.id
    finally:
        store.close()


def shoot(wait: float) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="hallmon-shots-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):
        work = Path(tmp)
        d = DemoProcess(work / "d", (ROOT / "inventory.yaml").read_text(encoding="utf-8"),
                        autostart=False, ready_within=90)
        with d:
            tid = prepare(d.storage)
            d.start()
            time.sleep(wait)
            with chromium(work / "wall", size=(1920, 1080)) as wall:
                wall.driver.get(f"{d.base}/status")
                time.sleep(3)
                made.append(OUT / "board-wall.png")
                wall.driver.save_screenshot(str(made[-1]))
                wall.driver.get(f"{d.base}/status/public")
                time.sleep(1)
                made.append(OUT / "board-public.png")
                wall.driver.save_screenshot(str(made[-1]))
            with chromium(work / "phone", phone=True, pixel_ratio=1.5) as phone:
                phone.driver.get(f"{d.base}/status")
                time.sleep(2)
                made.append(OUT / "board-phone.png")
                phone.driver.save_screenshot(str(made[-1]))
                phone.driver.get(f"{d.base}/login?next=/tickets/{tid}")
                phone.driver.find_element("id", "name").send_keys("li")
                phone.driver.find_element("id", "password").send_keys(PASSWORD)
                phone.driver.find_element("id", "submit").click()
                time.sleep(2)
                made.append(OUT / "ticket-phone.png")
                phone.driver.save_screenshot(str(made[-1]))
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wait", type=float, default=45.0)
    args = ap.parse_args()
    for path in shoot(min(max(args.wait, 0.0), 600.0)):
        # 8-colour-ish PNGs keep the repository small (optipng/pngquant when installed)
        for tool in (["pngquant", "--force", "--ext", ".png", "64"], ["optipng", "-quiet", "-o2"]):
            with contextlib.suppress(FileNotFoundError, subprocess.CalledProcessError):
                subprocess.run([*tool, str(path)], check=True, timeout=120)
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
