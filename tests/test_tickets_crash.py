"""kill -9 in the middle of a burst of ticket writes loses no acknowledged ticket (SQLite, WAL,
synchronous=FULL). The writer is this file run as a script: it prints each ticket id only after
its transaction committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent


def writer(url: str) -> None:
    from monitor.store import NewTicket, Store

    store = Store(url, timezone="Asia/Shanghai")
    for i in range(100_000):  # bounded; the test kills us long before
        t = store.create_ticket(NewTicket(category="fault", summary=f"burst {i}", reporter="w",
                                          device_id=f"dev-{i % 7}", assignee="zhang"))
        if i % 3 == 0:
            store.transition(t.id, "in_progress", "zhang")
        print(t.id, flush=True)


def test_kill_9_loses_no_acknowledged_ticket(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    proc = subprocess.Popen([sys.executable, __file__, url], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(acked) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        rest = proc.stdout.read()  # ids acknowledged between our last read and the kill
        proc.stdout.close()
    acked += [int(x) for x in rest.split()]
    assert len(acked) >= 300, "writer too slow or died"

    from monitor.store import Store
    from monitor.tally import tally

    store = Store(url)
    try:
        with store.read() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
            ids = set(conn.execute(text("SELECT id FROM tickets")).scalars())
        total = len(ids)
        assert set(acked) <= ids
        assert total - len(acked) <= 1  # at most the one committed but not yet printed
        for tid in acked[-5:]:
            assert store.ticket_events(tid)[0].kind == "created"
        # the tally table committed with its tickets
        from datetime import date

        year = tally(store, "year", date(2000, 1, 1), date(2999, 12, 31))
        assert sum(r.count for r in year) == total
    finally:
        store.close()


if __name__ == "__main__":
    writer(sys.argv[1])
