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
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.inventory import BUILTIN_CLASSES, SnmpCheck
from monitor.metrics import CheckRow, DeviceRow, Snapshot, ValueSpec, expose
from tests.agents.proc import free_port, http_ready, running
from tests.agents.prometheus import PrometheusServer, PromQLError, prometheus_with_config
from tests.conftest import missing_tool, require_tool

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
    ("hallmon-overview", "楼层/区域状态"),  # status grid
    ("hallmon-overview", "全部设备状态"),
    ("hallmon-overview", "异常设备清单"),  # devices not up
    ("hallmon-overview", "待处理工单（按类别）"),  # tickets
    ("hallmon-overview", "监控服务"),
    ("hallmon-overview", "存储写入积压"),  # the store's write queue (0 in the demo: still data)
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


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_dashboard_links_carry_the_chosen_site_device_and_time(name: str) -> None:
    # From the overview to the device detail and back, the site/device picked stays picked.
    links = DASHBOARDS[name]["links"]
    assert links
    for link in links:
        assert link["type"] == "dashboards" and link["tags"] == ["hallmon"]
        assert link["includeVars"] is True and link["keepTime"] is True, link["title"]


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


# ---- sites (issue 17): one set of dashboards over every hall ---------------------------------
SITE_VAR = "label_values(hallmon_build_info, site)"
# A selector of one of hallmon's series (or their `up`), with its label matchers if any.
SELECTOR = re.compile(r"\b(hallmon_\w+|up)\b(?!\s*\()(\{[^}]*\})?")


def selectors(expr: str) -> list[str]:
    """The selectors of ``expr`` as written (found with string contents masked, so that
    ``status="up"`` is no selector of ``up``)."""
    masked = _STRINGS.sub(lambda m: m.group()[0] + "x" * (len(m.group()) - 2) + m.group()[-1],
                          expr)
    return [expr[m.start():m.end()] for m in SELECTOR.finditer(masked)]


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_every_dashboard_has_the_site_variable_all_by_default(name: str) -> None:
    variables = DASHBOARDS[name]["templating"]["list"]
    # Right after the datasource: every other variable's query narrows by it.
    site = variables[1]
    assert site["name"] == "site" and site["type"] == "query"
    assert variable_query(site) == site["definition"] == SITE_VAR
    assert site["multi"] is True and site["includeAll"] is True
    assert site["allValue"] == ".*"  # also matches a Prometheus that sets no site label
    assert site["current"]["value"] == ["$__all"]


@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_every_hallmon_selector_narrows_by_site(name: str) -> None:
    dash = DASHBOARDS[name]
    exprs = [(q.panel, q.expr) for q in queries(dash)]
    exprs += [(f"variable ${v['name']}", variable_query(v)) for v in dash["templating"]["list"]
              if v["type"] == "query" and v["name"] != "site"]
    for where, expr in exprs:
        found = selectors(expr)
        assert found, f"{where}: no hallmon selector in {expr!r}"
        for sel in found:
            assert 'site=~"$site"' in sel, f"{where}: {sel}"
        # Device ids are unique per site only: whatever matches or groups by device must
        # carry the site too, or two halls' kiosk-1f-03 merge (or a join fails many-to-many).
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {x.strip() for x in clause.split(",")}
            assert "device" not in labels or "site" in labels, f"{where}: ({clause})"


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


def _alert_labels(name: str) -> dict[str, str]:
    """The labels an alert of dashboards/rules carries (alertname + its static labels)."""
    for path in sorted((ROOT / "dashboards" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    return {"alertname": name, **rule.get("labels", {})}
    raise AssertionError(f"no alert {name} in dashboards/rules")


@pytest.mark.parametrize(("alert", "receiver"), [
    # The monitor's own alerts go to whoever runs the monitor (the example's comment), even
    # when critical: HallmonDown used to match the severity route first and page the hall.
    ("HallmonDown", "monitoring-admins"),
    ("HallmonPollStale", "monitoring-admins"),
    ("HallmonConfigReloadFailed", "monitoring-admins"),
    ("HallmonNotificationsFailing", "monitoring-admins"),
    ("HallmonStoreBacklog", "monitoring-admins"),
])
def test_example_alertmanager_routes_hallmon_alerts_to_admins(alert: str, receiver: str) -> None:
    amtool = require_tool("amtool")
    labels = [f"{k}={v}" for k, v in _alert_labels(alert).items()]
    out = subprocess.run([amtool, "config", "routes", "test",
                          f"--config.file={DEPLOY / 'alertmanager.yml'}", *labels],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == [receiver], (labels, out.stdout)


def test_example_alertmanager_routes_critical_device_alerts_to_urgent() -> None:
    amtool = require_tool("amtool")
    labels = {**_alert_labels("HallDeviceDown"), "device": "sw-1"}
    assert labels["severity"] == "critical"
    out = subprocess.run([amtool, "config", "routes", "test",
                          f"--config.file={DEPLOY / 'alertmanager.yml'}",
                          *(f"{k}={v}" for k, v in labels.items())],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["hall-it-urgent"], out.stdout + out.stderr


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
    # raw ICMP, and UDP 162 for traps (issue 16): nothing more
    assert unit["AmbientCapabilities"] == ["CAP_NET_RAW CAP_NET_BIND_SERVICE"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_RAW CAP_NET_BIND_SERVICE"]
    assert "--traps.listen-address" in unit["ExecStart"][0].split()
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


# ---- the real demo --------------------------------------------------------------------------
@dataclass
class Demo:
    address: str
    client: httpx.Client

    def exposition(self) -> str:
        resp = self.client.get(f"http://{self.address}/metrics")
        resp.raise_for_status()
        return resp.text


def _hallmon_bin() -> str:
    exe = Path(sys.executable).with_name("hallmon")
    if not exe.exists():
        missing_tool("hallmon console script not installed (pip install -e .)")
    return str(exe)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``hallmon demo`` on a free loopback port, ready; stopped at teardown."""
    address = f"127.0.0.1:{free_port()}"
    workdir = tmp_path_factory.mktemp("demo")
    argv = [_hallmon_bin(), "demo", "--inventory", str(ROOT / "inventory.yaml"),
            "--web.listen-address", address]
    with httpx.Client(timeout=10) as client, running(
        argv, what="hallmon demo", log=workdir / "demo.log", cwd=workdir,
        ready=http_ready(client, f"http://{address}/-/ready"),
    ):
        yield Demo(address, client)


def exposed_names(text: str) -> set[str]:
    """Sample names, plus the names of declared families without samples yet (a counter by
    channel before any channel is configured still names the series it will have)."""
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def profile_exposition() -> str:
    """hallmon's real renderer over one device of every built-in class, every check known and
    every value its profile declares present: all the names hallmon can expose."""
    specs: dict[str, ValueSpec] = {}
    devices = []
    for cls_name, cls in BUILTIN_CLASSES.items():
        rows = []
        for check in cls.checks:
            values: dict[str, float] = {}
            if isinstance(check, SnmpCheck):
                for table, suffix in ((check.oids, ""), (check.walks, ".1")):
                    for name, oid in table.items():
                        specs[name] = ValueSpec(oid.type)
                        values[name + suffix] = 1.0
                for name in check.ratios:
                    specs[name] = ValueSpec("gauge")
                    values[name] = 50.0
            rows.append(CheckRow(check.name, check.kind, True, False, values))
        devices.append(DeviceRow(f"dev-{cls_name}", cls_name, "up", True, checks=rows))
    snap = Snapshot(devices=devices, value_specs=specs, tickets_open={"fault": 1},
                    tickets_total={"fault": 1}, tickets_resolved={"fault": 1},
                    ticket_resolution_seconds={"fault": 60}, notifications={"webhook": 1},
                    notification_failures={"webhook": 0},
                    poll_durations={"icmp": _Histogram()})
    return expose(snap).decode()


@dataclass
class _Histogram:
    bounds: tuple[float, ...] = (0.1, 1.0)
    counts: tuple[int, ...] = (1, 0, 0)
    sum: float = 0.05


def dashboard_metric_names() -> set[tuple[str, str, str]]:
    """(dashboard uid, where, metric name) for every query and variable selector."""
    exprs = [(q.dashboard, q.panel, q.expr) for d in DASHBOARDS.values() for q in queries(d)]
    for d in DASHBOARDS.values():
        for v in d["templating"]["list"]:
            m = LABEL_VALUES.match(variable_query(v)) if v["type"] == "query" else None
            if m and m["sel"]:
                exprs.append((d["uid"], f"variable ${v['name']}", m["sel"]))
    return {(uid, where, name) for uid, where, expr in exprs for name in metric_names(expr)}


def test_every_metric_a_dashboard_uses_is_exposed() -> None:
    exposed = exposed_names(profile_exposition()) | PROMETHEUS_SYNTHETIC
    missing = {f"{uid} / {where}: {name}" for uid, where, name in dashboard_metric_names()
               if name not in exposed}
    assert not missing, "\n".join(sorted(missing))


def test_the_demo_exposes_what_the_dashboards_use(demo: Demo) -> None:
    # SNMP values depend on the vendor (Huawei/H3C CPU...) and the simulated hall need not
    # populate each; the profile rendering above covers them. Everything else must be live.
    exposed = exposed_names(demo.exposition()) | PROMETHEUS_SYNTHETIC
    missing = {f"{uid} / {where}: {name}" for uid, where, name in dashboard_metric_names()
               if name not in exposed and not name.startswith("hallmon_snmp_")}
    assert not missing, "\n".join(sorted(missing))


# ---- live: every query through a real Prometheus --------------------------------------------
SCRAPE_SECONDS = 15
INCIDENT = 'hallmon_device_status{status=~"down|degraded|unreachable"} == 1'
WINDOW = "20s"  # what $__range stands for: the whole scraped history


def builtins() -> dict[str, str]:
    # Grafana's macros at a 1 s scrape interval ($__rate_interval = 4 x scrape interval).
    return {"__rate_interval": "5s", "__interval": "1s", "__interval_ms": "1000",
            "__range": WINDOW, "__range_s": WINDOW[:-1], "__range_ms": f"{WINDOW[:-1]}000"}


def interpolate(text: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {text!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)


# A single-valued variable gets the first value for which this query returns data, so the
# drill-down shows a device that has RTT and checks.
PREFER = {"device": 'hallmon_icmp_rtt_seconds{device="%s"}'}


def resolve_variables(prom: PrometheusServer, dash: dict[str, Any], *, all_values: bool,
                      fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Values as Grafana would give them: "All" (its allValue) for multi-value variables when
    ``all_values``, else real values read through the variable's own label_values query;
    ``fixed`` ones as given (a person's pick, e.g. one site)."""
    values = builtins()
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        if fixed and var["name"] in fixed:
            values[var["name"]] = fixed[var["name"]]
            continue
        m = LABEL_VALUES.match(variable_query(var))
        assert m, var["name"]
        sel = interpolate(m["sel"], values) if m["sel"] else None
        found = prom.label_values(m["label"], sel)
        assert found, f"{dash['uid']}: variable ${var['name']} has no values"
        if all_values and var.get("includeAll"):
            values[var["name"]] = var.get("allValue") or "|".join(map(re.escape, found))
            continue
        prefer = PREFER.get(var["name"])
        pick = next((v for v in found if prefer and prom.query(prefer % v)["result"]),
                    found[0])
        values[var["name"]] = pick
    return values


# The demo is scraped as two halls (the `site` target label, as deploy/prometheus.yml sets it):
# every device id then exists in both sites, the overlap of issue 17 (kiosk-1f-03 in two halls).
SITES = ("hall-a", "hall-b")


def two_site_scrape_config(address: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "hallmon", "scrape_interval": "1s", "scrape_timeout": "1s",
            "static_configs": [{"targets": [address], "labels": {"site": site}}
                               for site in SITES],
        }],
    }


@pytest.fixture(scope="module")
def prom(demo: Demo) -> Iterator[PrometheusServer]:
    binary = require_tool("prometheus")
    with prometheus_with_config(binary, two_site_scrape_config(demo.address)) as server:
        for site in SITES:
            server.wait_for_samples(f'hallmon_build_info{{job="hallmon", site="{site}"}}', 15)
        # A real scrape history for rate() and *_over_time(), and the scripted day far enough
        # along that devices are down/degraded (the demo's first faults land ~20 s in).
        time.sleep(SCRAPE_SECONDS)
        server.wait_for_samples(INCIDENT, timeout=30)
        yield server


def run_all(prom: PrometheusServer, dash: dict[str, Any], values: dict[str, str]
            ) -> dict[str, bool]:
    """Run every query of ``dash``; panel title -> whether any of its queries returned data."""
    end = time.time()
    has_data: dict[str, bool] = {}
    for q in queries(dash):
        expr = interpolate(q.expr, values)
        try:
            if q.instant:
                result = prom.query(expr, at=end)["result"]
            else:
                result = prom.query_range(expr, end - SCRAPE_SECONDS, end, 1)["result"]
        except PromQLError as exc:
            raise AssertionError(f"{q.dashboard} / {q.panel}: {exc}") from None
        has_data[q.panel] = has_data.get(q.panel, False) or bool(result)
    return has_data


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_every_query_runs_and_core_panels_have_data(prom: PrometheusServer, name: str) -> None:
    dash = DASHBOARDS[name]
    # As the wall screen opens it ("All" everywhere): core panels must show data.
    has_data = run_all(prom, dash, resolve_variables(prom, dash, all_values=True))
    empty = sorted(title for uid, title in CORE_PANELS if uid == dash["uid"]
                   and not has_data[title])
    assert not empty, f"{dash['uid']}: core panels without data: {empty}"
    # With one real value per variable: every query must still parse and run.
    run_all(prom, dash, resolve_variables(prom, dash, all_values=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_UIDS))
def test_one_site_picked_core_panels_still_have_data(prom: PrometheusServer, name: str) -> None:
    dash = DASHBOARDS[name]
    site_var = LABEL_VALUES.match(SITE_VAR)
    assert site_var and sorted(prom.label_values("site", site_var["sel"])) == sorted(SITES)
    has_data = run_all(prom, dash, resolve_variables(prom, dash, all_values=True,
                                                     fixed={"site": SITES[1]}))
    empty = sorted(title for uid, title in CORE_PANELS if uid == dash["uid"]
                   and not has_data[title])
    assert not empty, f"{dash['uid']}: core panels without data for one site: {empty}"


def grid_rows(prom: PrometheusServer, site: str) -> list[tuple[str, str]]:
    dash = DASHBOARDS["hall-overview.json"]
    grid = find_panel(dash, "全部设备状态")
    values = resolve_variables(prom, dash, all_values=True, fixed={"site": site})
    result = prom.query(interpolate(grid["targets"][0]["expr"], values))["result"]
    return sorted((r["metric"]["site"], r["metric"]["device"]) for r in result)


def test_the_device_grid_shows_each_site_apart(prom: PrometheusServer) -> None:
    # All sites: every device once per site (the same ids in both halls neither merge nor
    # break the join); one site: exactly that site's devices.
    every = grid_rows(prom, ".*")
    devices = sorted({d for _, d in every})
    assert every == sorted((s, d) for s in SITES for d in devices)
    assert grid_rows(prom, SITES[0]) == [(SITES[0], d) for d in devices]


# The status encoding every status panel uses (see the panels' descriptions): severity order.
STATUS_CODES = {"unknown": -1, "up": 0, "maintenance": 1, "degraded": 2, "unreachable": 3,
                "down": 4}
STATUS_TEXTS = {"unknown": "无数据", "up": "正常", "maintenance": "维护中", "degraded": "降级",
                "unreachable": "不可达", "down": "故障"}


def find_panel(dash: dict[str, Any], title: str) -> dict[str, Any]:
    (hit,) = [p for p in panels(dash) if p["title"] == title and p["type"] != "row"]
    return hit


def test_status_encoding_agrees_with_the_one_hot_status(prom: PrometheusServer) -> None:
    dash = DASHBOARDS["hall-overview.json"]
    grid = find_panel(dash, "全部设备状态")
    values = resolve_variables(prom, dash, all_values=True)
    now = time.time()
    codes = {(r["metric"]["site"], r["metric"]["device"]): float(r["value"][1]) for r in
             prom.query(interpolate(grid["targets"][0]["expr"], values), at=now)["result"]}
    statuses = {(r["metric"]["site"], r["metric"]["device"]): r["metric"]["status"] for r in
                prom.query("hallmon_device_status == 1", at=now)["result"]}
    assert codes and set(codes) == set(statuses)
    assert {d: STATUS_CODES[s] for d, s in statuses.items()} == codes
    assert set(statuses.values()) - {"up", "unknown"}, "the demo should show some incident"
    # ... and the panel's value mappings turn each code into its Chinese text.
    mapping = grid["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {s: mapping[str(c)]["text"] for s, c in STATUS_CODES.items()} == STATUS_TEXTS


# Device-detail panels that must show data for a device of the class (demo hall, healthy values).
CLASS_PANELS = [("printer", "碳粉余量"), ("ups", "UPS 电池电量"), ("nvr", "录像机硬盘状态"),
                ("switch", "端口流量"), ("kiosk", "CPU 使用率")]


@pytest.mark.parametrize(("device_class", "title"), CLASS_PANELS)
def test_device_detail_shows_the_class_values(prom: PrometheusServer, device_class: str,
                                              title: str) -> None:
    dash = DASHBOARDS["device-detail.json"]
    # Some device of the class must show it (those behind the demo's dead switch do not).
    devices = prom.label_values("device", f'hallmon_device_info{{class="{device_class}"}}')
    one = {**dash, "panels": [find_panel(dash, title)], "annotations": {"list": []}}
    shown = [d for d in devices
             if run_all(prom, one, {**builtins(), "site": SITES[0], "class": device_class,
                                    "device": d})[title]]
    assert shown, f"{title} shows no data for any {device_class} ({devices})"
