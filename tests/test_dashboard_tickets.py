"""The maintenance dashboard's resolved-ticket and MTTR panels, evaluated by promtool over
synthetic counter histories (deterministic: promtool's own clock, no scraping, no sleeping);
and the store's counters rendered by the real exposition."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from monitor.metrics import Snapshot, make_registry
from monitor.store import NewTicket, Store
from tests.conftest import require_tool

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "maintenance.json"
# Hourly samples over 8 days. fault: one ticket resolved after 2 h (counted at hour 25), then
# one after 5 h (hour 50); inspection: nothing resolved ever (its series exist from start-up).
SERIES = [
    ('hallmon_tickets_resolved_total{category="fault"}', "0+0x24 1+0x24 2+0x150"),
    ('hallmon_ticket_resolution_seconds_total{category="fault"}', "0+0x24 7200+0x24 25200+0x150"),
    ('hallmon_tickets_resolved_total{category="inspection"}', "0+0x198"),
    ('hallmon_ticket_resolution_seconds_total{category="inspection"}', "0+0x198"),
]


def panel_expr(title: str, range_: str) -> str:
    """A panel's query as Grafana would send it with every site and category selected."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (panel,) = [p for p in dash["panels"] if p["title"] == title]
    expr: str = panel["targets"][0]["expr"]
    return (expr.replace("$site", ".*").replace("$category", ".*")
            .replace("$__range", range_))


def promtool_eval(tmp_path: Path, cases: list[dict[str, Any]]) -> None:
    promtool = require_tool("promtool")
    tests = {"rule_files": [], "evaluation_interval": "1h", "tests": [{
        "interval": "1h",
        "input_series": [{"series": s, "values": v} for s, v in SERIES],
        "promql_expr_test": cases,
    }]}
    path = tmp_path / "panels_test.yml"
    path.write_text(yaml.safe_dump(tests, allow_unicode=True), encoding="utf-8")
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_resolved_and_mttr_panels_are_exact(tmp_path: Path) -> None:
    promtool_eval(tmp_path, [
        # "今日完成" on day 2 (range = that day): the resolution counted at hour 25.
        {"expr": panel_expr("今日完成", "1d"), "eval_time": "48h",
         "exp_samples": [{"labels": "{}", "value": 1}]},
        {"expr": panel_expr("本周完成", "7d"), "eval_time": "168h",
         "exp_samples": [{"labels": "{}", "value": 2}]},
        # A day without resolutions reads 0, not "no data".
        {"expr": panel_expr("今日完成", "1d"), "eval_time": "120h",
         "exp_samples": [{"labels": "{}", "value": 0}]},
        # MTTR = (2 h + 5 h) / 2 = 3.5 h over the week.
        {"expr": panel_expr("平均修复时长", "7d"), "eval_time": "168h",
         "exp_samples": [{"labels": "{}", "value": 12600}]},
        # Nothing resolved in the range: no value (Grafana shows noValue), never NaN or +Inf.
        {"expr": panel_expr("平均修复时长", "1d"), "eval_time": "120h", "exp_samples": []},
        {"expr": panel_expr("平均修复时长趋势（按类别，7天滚动）", ""), "eval_time": "168h",
         "exp_samples": [{"labels": '{category="fault"}', "value": 12600}]},
        {"expr": panel_expr("每日完成工单（按类别）", ""), "eval_time": "48h",
         "exp_samples": [{"labels": '{category="fault"}', "value": 1},
                         {"labels": '{category="inspection"}', "value": 0}]},
    ])


class Fixed:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def snapshot(self) -> Snapshot:
        return self.snap


def test_store_counts_render_as_the_resolution_counters(tmp_path: Path) -> None:
    """The lead's wiring in miniature: ticket_counts() keys -> Snapshot fields -> /metrics."""
    t0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
    store = Store(f"sqlite:///{tmp_path / 'hallmon.db'}", timezone="Asia/Shanghai")
    t = store.create_ticket(NewTicket(category="fault", summary="printer jam", reporter="li"),
                            at=t0)
    store.transition(t.id, "resolved", "wang", at=t0 + timedelta(minutes=90))
    counts = store.ticket_counts()
    store.close()
    snap = Snapshot(tickets_open=counts["open"], tickets_total=counts["total"],
                    tickets_resolved=counts["resolved"],
                    ticket_resolution_seconds=counts["resolution_seconds"])
    get = make_registry(Fixed(snap)).get_sample_value
    assert get("hallmon_tickets_resolved_total", {"category": "fault"}) == 1
    assert get("hallmon_ticket_resolution_seconds_total", {"category": "fault"}) == 5400
    assert get("hallmon_tickets_resolved_total", {"category": "inspection"}) == 0
