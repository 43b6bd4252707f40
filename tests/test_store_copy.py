"""``hallmon store copy``: a hall's log moved from SQLite to a fresh PostgreSQL, row for row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from monitor.cli import main
from monitor.store import HoldRow, NewTicket, Store, schema
from monitor.store.copy import SKIP

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def _fill(s: Store) -> None:
    inc = s.open_incident("kiosk-1f-03", "ping", "down", "no reply", T0)
    for i in range(5):
        t = s.create_ticket(NewTicket(category="fault", summary=f"屏幕黑屏 {i}", reporter="li",
                                      device_id="kiosk-1f-03", device_class="kiosk", floor="1"),
                            at=T0 + timedelta(hours=i))
        s.comment(t.id, "li", "已报修")
        if i % 2:
            s.transition(t.id, "in_progress", "wang", at=T0 + timedelta(hours=i, minutes=5))
    s.auto_ticket(f"incident:{inc}", NewTicket(category="fault", summary="auto", reporter="hallmon",
                                               source="auto", incident_id=inc,
                                               incident_key=f"incident:{inc}"), at=T0)
    s.close_incident(inc, T0 + timedelta(hours=1))
    s.add_window("floor", "2", T0, T0 + timedelta(hours=2), "换线", "admin")
    s.enqueue("inc-1:hook", "hook", {"text": "故障"}, at=T0)
    s.save_trap_holds({"sw-1f": [HoldRow("sw-1f", "link-down", "24", "degraded", "端口断开",
                                         T0, T0 + timedelta(hours=1))]})
    s.add_trap_events([("sw-1f", "cold-start", "设备重新启动", "1.3.6.1.6.3.1.1.5.1", T0)],
                      prune=False)


def _dump(s: Store) -> dict[str, list[dict[str, Any]]]:
    out = {}
    with s.read() as conn:
        for t in schema.metadata.sorted_tables:
            if t.name not in SKIP:
                rows = conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()
                out[t.name] = [dict(r) for r in rows]
    return out


def test_copy_sqlite_to_postgres_keeps_every_row_and_id(tmp_path: Path, pg_server: Any,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    src_url, dst_url = f"sqlite:///{tmp_path / 'hall.db'}", pg_server.new_database()
    src = Store(src_url, timezone="Asia/Shanghai")
    _fill(src)
    want = _dump(src)
    src.close()
    assert sum(map(len, want.values())) > 20

    assert main(["store", "copy", src_url, dst_url]) == 0
    assert "tickets: 6 rows" in capsys.readouterr().out

    dst = Store(dst_url)
    try:
        assert _dump(dst) == want
        assert str(dst.tz) == "Asia/Shanghai"  # the site's zone came along
        # New rows get new ids after the copied ones (the sequences moved on).
        t = dst.create_ticket(NewTicket(category="fault", summary="新", reporter="li"))
        assert t.id == max(r["id"] for r in want["tickets"]) + 1
        dst.add_trap_events([("sw-1f", "warm-start", "设备重新启动", "1.3.6.1.6.3.1.1.5.2", T0)],
                            prune=False)  # T0 is older than the events kept
        assert [e.id for e in dst.trap_events()] == [2, 1]
        assert [h.rule for h in dst.trap_holds()] == ["link-down"]
    finally:
        dst.close()

    # A second copy into the same (now full) database is refused, naming the tables.
    assert main(["store", "copy", src_url, dst_url]) == 1
    err = capsys.readouterr().err
    assert "destination store is not empty" in err and "tickets" in err


def test_copy_from_a_missing_sqlite_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    assert main(["store", "copy", f"sqlite:///{missing}", f"sqlite:///{tmp_path / 'b.db'}"]) == 1
    assert not missing.exists()  # not created empty
