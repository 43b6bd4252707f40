"""kill -9 during delivery, then restart: nothing lost, at most one duplicate, same key.

The delivery worker runs in a child process (this file run as a module) over the real store
(monitor/store, SQLite in WAL mode). The robot server holds the first request, so the kill lands
while a message is on the wire and not yet marked sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import SecretStr

from monitor.alerts.base import Message
from monitor.alerts.delivery import Delivery
from monitor.alerts.dingtalk import DingTalk
from monitor.inventory.notifications import DingTalkChannel
from monitor.store import Store
from tests.agents.proc import stop
from tests.agents.vendors import VendorServer

ROOT = Path(__file__).resolve().parent.parent


def _worker(db: Path, url: str) -> None:
    async def main() -> None:
        cfg = DingTalkChannel(type="dingtalk", webhook=SecretStr(url), timeout=30.0)
        async with httpx.AsyncClient() as client:
            delivery = Delivery(_store(db), {"dt": DingTalk("dt", cfg)}, client,
                                lambda: datetime.now(UTC), poll_interval=0.05)
            await delivery.run()

    asyncio.run(main())


def _store(db: Path) -> Store:
    return Store(f"sqlite:///{db}")


def _start(db: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.test_alerts_crash", str(db), url],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_kill_9_during_delivery_then_restart(tmp_path: Path) -> None:
    db, log = tmp_path / "outbox.db", tmp_path / "worker.log"
    outbox = _store(db)
    keys = [f"it:notice:{i}" for i in range(5)]
    for key in keys:
        message = Message(key=key, route="it", kind="notice", status="firing", title=key,
                          text=key, markdown=key, created_at=datetime.now(UTC).isoformat())
        assert outbox.enqueue(f"{key}/dt", "dt", message.to_payload())

    hold = threading.Event()
    with VendorServer(token="t", hold=hold) as server:
        first = _start(db, server.dingtalk_url, log)
        try:
            assert server.arrived.wait(20), log.read_text()
            os.kill(first.pid, signal.SIGKILL)  # the first message is on the wire
            first.wait(5)
        finally:
            stop(first, within=5)
        server.hold = None
        hold.set()
        assert outbox.outbox_counts()["sent"] == 0

        second = _start(db, server.dingtalk_url, log)
        try:
            deadline = time.monotonic() + 20
            while outbox.outbox_counts()["sent"] < len(keys) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop(second, within=5)
        arrived = [r.key for r in server.received]

    counts = outbox.outbox_counts()
    outbox.close()
    assert counts == {"pending": 0, "sent": 5, "dead": 0}, log.read_text()
    assert arrived[0] == keys[0]  # the one killed on the wire
    assert set(arrived) == set(keys)  # nothing lost
    duplicates = [k for k in keys if arrived.count(k) > 1]
    assert len(arrived) <= len(keys) + 1 and duplicates in ([], [keys[0]])


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2])
