"""Prometheus alert rules: promtool must accept them and their unit tests must pass; every
alert has a story (not yet within `for:`, fires, resolves)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_tool

RULES = Path(__file__).resolve().parent.parent / "dashboards" / "rules"
EXPECTED = {
    "HallDeviceDown", "HallDeviceDegraded", "HallLineLoss", "HallDeviceFlapping", "HallmonDown",
    "HallmonConfigReloadFailed", "HallmonPollStale", "HallmonNotificationsFailing",
    "HallmonNoLivePoller", "HallmonStoreBacklog",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    done = _promtool("check", "rules", *map(str, sorted(RULES.glob("*.yml"))))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules() -> None:
    done = _promtool("test", "rules", *map(str, sorted((RULES / "tests").glob("*.yml"))))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_not_yet_a_firing_and_a_resolved_case() -> None:
    rules = yaml.safe_load((RULES / "hallmon.rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == EXPECTED
    cases: dict[str, list[tuple[str, bool]]] = {}
    for path in (RULES / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(
                    (str(case["eval_time"]), bool(case.get("exp_alerts"))))
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name} needs a for: to ride out blips"
        fired = [firing for _, firing in cases.get(name, [])]
        assert fired[:1] == [False] and True in fired and fired[-1] is False, (name, fired)
