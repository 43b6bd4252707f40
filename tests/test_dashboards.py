"""Grafana dashboards: structure, metric names against hallmon's real exposition, and every panel
query run by a real Prometheus scraping ``hallmon demo``.

Structural rules (docs: dashboards/README section of the main README): fixed uids, ``id: null``,
no ``__inputs`` / ``${DS_...}`` imports, one ``datasource`` variable used by every panel, target,
query variable and annotation; Chinese titles with English descriptions; refresh 30s,
Asia/Shanghai.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
EXPECTED_UIDS = {
    "hall-overview.json": "hallmon-overview",
    "device-detail.json": "hallmon-device",
    "lines.json": "hallmon-lines",
    "maintenance.json": "hallmon-maintenance",
}
DS = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTIN_DS = {"type": "grafana", "uid": "-- Grafana --"}
# Series Prometheus itself adds to every target: not hallmon's to expose.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Panels that must return data from the demo (dashboard uid, panel title).
CORE_PANELS = {
    ("hallmon-overview", "设备状态（按楼层/区域）"),  # status grid
    ("hallmon-overview", "异常设备清单"),  # devices not up
    ("hallmon-overview", "待处理工单（按类别）"),  # tickets
    ("hallmon-overview", "监控服务"),
    ("hallmon-device", "当前状态"),
    ("hallmon-device", "往返时延"),  # RTT
    ("hallmon-device", "各检查项状态"),
    ("hallmon-lines", "丢包率"),
    ("hallmon-maintenance", "待处理工单"),
}
CJK = re.compile(r"[\u4e00-\u9fff]")


# ---- reading dashboards ---------------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


DASHBOARDS = {p.name: load(p) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


@dataclass(frozen=True)
class Query:
    dashboard: str  # uid
    panel: str  # title, "variable $x" or "annotation x"
    expr: str
    instant: bool


def queries(dash: dict[str, Any]) -> list[Query]:
    """Every PromQL expression of a dashboard: panel targets and annotations."""
    uid = dash["uid"]
    out = [Query(uid, p["title"], t["expr"], bool(t.get("instant")) and not t.get("range"))
           for p in panels(dash) for t in p.get("targets", [])]
    out += [Query(uid, f"annotation {a['name']}", a["expr"], False)
            for a in dash["annotations"]["list"] if a.get("expr")]
    return out


def variable_query(var: dict[str, Any]) -> str:
    q = var["query"]
    return str(q["query"] if isinstance(q, dict) else q)


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<sel>.+),\s*)?(?P<label>\w+)\)$", re.S)


# ---- PromQL: the metric names an expression uses --------------------------------------------
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (a small lexer, enough for dashboards):
    drop strings, Grafana variables, label matchers, grouping clauses and ranges; what is left
    that is an identifier not followed by "(" and not a keyword is a metric name."""
    s = _STRINGS.sub('""', expr)
    s = re.sub(r"\$\{?\w+\}?", "1", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = _GROUPING.sub(" ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?\b", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if m.group() in _KEYWORDS or re.match(r"\s*\(", s[m.end():]):
            continue
        names.add(m.group())
    return names


def test_metric_names_lexer() -> None:
    assert metric_names('sum by (device) (rate(a_total{x=~"$v", y="b c"}[$__rate_interval]))'
                        ' * on (device) group_left (name) max by (device, name) (info)'
                        ' or vector(0)') == {"a_total", "info"}
    assert metric_names("time() - max(ts{job=~\"$job\"} > 0) * 1000") == {"ts"}
    assert metric_names("up{job=\"x\"} == bool 1 unless absent(m offset 1d)") == {"up", "m"}


# ---- structure ------------------------------------------------------------------------------
def test_expected_dashboards_with_fixed_unique_uids() -> None:
    assert {name: d["uid"] for name, d in DASHBOARDS.items()} == EXPECTED_UIDS
    assert len({d["uid"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_dashboard_conventions(name: str) -> None:
    dash = DASHBOARDS[name]
    text = (DASHBOARD_DIR / name).read_text(encoding="utf-8")
    assert dash["id"] is None
    assert "__inputs" not in dash and "__requires" not in dash
    assert "${DS_" not in text and "$DS_" not in text
    assert dash["refresh"] == "30s"
    assert dash["timezone"] == "Asia/Shanghai"
    assert dash["schemaVersion"] >= 39
    assert CJK.search(dash["title"])
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DS, var["name"]
            assert LABEL_VALUES.match(variable_query(var)), var["name"]
    for ann in dash["annotations"]["list"]:
        assert ann["datasource"] in (DS, GRAFANA_BUILTIN_DS), ann["name"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_every_panel_and_target_uses_the_datasource_variable(name: str) -> None:
    for p in panels(DASHBOARDS[name]):
        assert CJK.search(p["title"]), p["title"]
        if p["type"] == "row":
            assert not p.get("targets")
            continue
        assert p.get("description"), f"{p['title']}: English description missing"
        assert p.get("datasource") == DS, p["title"]
        for t in p.get("targets", []):
            assert t.get("datasource") == DS, f"{p['title']} {t.get('refId')}"
            assert t.get("expr"), f"{p['title']} {t.get('refId')}: empty query"


def test_grid_positions_do_not_overlap() -> None:
    for dash in DASHBOARDS.values():
        cells: set[tuple[int, int]] = set()
        for p in panels(dash):
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, p["title"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{dash['uid']}: {p['title']} overlaps"
            cells |= mine


def test_provisioning_points_at_the_dashboards() -> None:
    prov = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "dashboards.yml").read_text())
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    ds = yaml.safe_load((DASHBOARD_DIR / "provisioning" / "datasources.yml").read_text())
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]


# ---- deploy/ examples ------------------------------------------------------------------------
DEPLOY = ROOT / "deploy"


def test_example_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hallmon"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:10025"]


def test_example_alertmanager_config_is_valid() -> None:
    amtool = require_tool("amtool")
    out = subprocess.run([amtool, "check-config", str(DEPLOY / "alertmanager.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def unit_settings(text: str) -> dict[str, list[str]]:
    """systemd unit directives (repeatable, so a list per key); comments and sections dropped."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened_and_not_root() -> None:
    unit = unit_settings((DEPLOY / "hallmon.service").read_text())
    assert unit["DynamicUser"] == ["yes"] or unit.get("User", ["root"]) != ["root"]
    assert unit["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("StateDirectory", "hallmon"), ("RestrictSUIDSGID", "yes")]:
        assert unit.get(key) == [value], key
    assert "run" in unit["ExecStart"][0].split()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # Optional extra: systemd-analyze is not among CI's packages; the test above always runs.
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (optional)")
    text = (DEPLOY / "hallmon.service").read_text()
    unit = tmp_path / "hallmon.service"
    # verify insists that ExecStart exists: point it at a binary that does.
    unit.write_text(text.replace("/usr/local/bin/hallmon", "/bin/true"))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
