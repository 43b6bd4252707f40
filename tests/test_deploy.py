"""The multi-site examples in ``deploy/`` (issue 17): every Prometheus file passes ``promtool``,
every Alertmanager file ``amtool``, every address is loopback or a placeholder; then the examples
themselves run on loopback, only their addresses, intervals and file paths substituted: two
hallmon daemons (two sites sharing a device id, down in both) scraped by two hall Prometheus
servers, a city Prometheus federating both, every Prometheus alerting two Alertmanagers
clustered on loopback (the rules' ``for:`` at 0 s), which page once per site; and a silence
made on one node holding on the other.

(The single-hall checks of ``deploy/prometheus.yml``, ``alertmanager.yml`` and the hallmon unit
live in tests/test_dashboards.py.)
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.agents.daemon import HallmonProcess, WebhookReceiver, node, small_inventory
from tests.agents.proc import free_port, http_ready, running
from tests.agents.prometheus import (
    PrometheusServer,
    config_addresses,
    prometheus_with_config,
)
from tests.conftest import require_tool
from tests.test_dashboards import DASHBOARDS, find_panel, interpolate
from tests.test_dashboards import unit_settings as unit_directives

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MULTISITE = DEPLOY / "multisite"
RULES = ROOT / "dashboards" / "rules" / "hallmon.rules.yml"
PROMETHEUS_FILES = sorted(DEPLOY.glob("**/prometheus*.yml"))
RULE_FILES = sorted(DEPLOY.glob("**/*.rules.yml"))
ALERTMANAGER_FILES = sorted(DEPLOY.glob("**/alertmanager*.yml"))
AM_UNIT = MULTISITE / "alertmanager.service"


def names(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


# ---- static checks ----------------------------------------------------------------------------
def test_the_multisite_files_are_found() -> None:
    # The globs below must not go quietly empty when a file is renamed.
    assert {p.name for p in PROMETHEUS_FILES} >= {"prometheus.yml", "prometheus-hall.yml",
                                                  "prometheus-city.yml"}
    assert {p.name for p in RULE_FILES} == {"city.rules.yml"}
    assert {p.name for p in ALERTMANAGER_FILES} == {"alertmanager.yml"}


@pytest.mark.parametrize("path", PROMETHEUS_FILES, ids=names(PROMETHEUS_FILES))
def test_promtool_check_config(path: Path) -> None:
    done = run(require_tool("promtool"), "check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_rules() -> None:
    done = run(require_tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", ALERTMANAGER_FILES, ids=names(ALERTMANAGER_FILES))
def test_amtool_check_config(path: Path) -> None:
    done = run(require_tool("amtool"), "check-config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def placeholder_or_loopback(host: str) -> bool:
    """127/8, ::1, unspecified (a bind address), localhost, or a reserved example name."""
    if host in ("", "localhost") or host.endswith((".example", ".example.org", "example.org")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


DEPLOY_TEXT_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", DEPLOY_TEXT_FILES, ids=names(DEPLOY_TEXT_FILES))
def test_every_address_is_loopback_or_a_placeholder(path: Path) -> None:
    # Network safety: an example copied as-is must never point at somebody's real host.
    text = path.read_text()
    for ip in re.findall(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])", text):
        assert placeholder_or_loopback(ip), f"{path.name}: {ip}"
    if path.suffix == ".yml" and path.name.startswith("prometheus"):
        for addr in config_addresses(yaml.safe_load(text)):
            assert placeholder_or_loopback(_host(addr)), f"{path.name}: {addr}"
    if path.suffix == ".service":
        for value in unit_directives(text).get("Environment", []):
            for assignment in shlex.split(value):
                host = assignment.partition("=")[2]
                if "." in host:  # a host name or address (PEER=...), not PYTHONUNBUFFERED=1
                    assert placeholder_or_loopback(host), f"{path.name}: {assignment}"


def test_every_prometheus_alerts_both_alertmanagers() -> None:
    for name in ("prometheus-hall.yml", "prometheus-city.yml"):
        config = yaml.safe_load((MULTISITE / name).read_text())
        (ams,) = config["alerting"]["alertmanagers"]
        (group,) = ams["static_configs"]
        assert len(set(group["targets"])) == 2, name


def test_the_city_federates_what_the_halls_scrape() -> None:
    hall = yaml.safe_load((MULTISITE / "prometheus-hall.yml").read_text())
    city = yaml.safe_load((MULTISITE / "prometheus-city.yml").read_text())
    (hall_job,) = hall["scrape_configs"]
    (fed,) = city["scrape_configs"]
    assert fed["metrics_path"] == "/federate" and fed["honor_labels"] is True
    assert fed["params"]["match[]"] == [f'{{job="{hall_job["job_name"]}"}}']
    # The hall's site is a target label, the city's per-hall groups name the same label.
    assert all("site" in g["labels"] for g in hall_job["static_configs"])
    assert all("site" in g["labels"] for g in fed["static_configs"])
    # The city does not evaluate hallmon's rules again (rule_files glob city*.yml only).
    assert city["rule_files"] == ["/etc/prometheus/rules/city*.yml"]


def route(config: Path, **labels: str) -> list[str]:
    done = run(require_tool("amtool"), "config", "routes", "test", f"--config.file={config}",
               *(f"{k}={v}" for k, v in labels.items()))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()


def test_alertmanager_routes_city_and_site_alerts() -> None:
    am = DEPLOY / "alertmanager.yml"
    assert route(am, alertname="HallmonFederationDown", severity="warning",
                 site="hall-b") == ["monitoring-admins"]
    assert route(am, alertname="HallDeviceDown", severity="critical", site="hall-b",
                 device="kiosk-1f-03") == ["hall-it-urgent"]
    assert "site" in yaml.safe_load(am.read_text())["route"]["group_by"]


# ---- the examples, run on loopback ------------------------------------------------------------
SITES = ("hall-a", "hall-b")
SHARED = "kiosk-1f-03"  # one device id both halls use (the overlapping id)


def hall_inventory(site: str, index: int) -> str:
    """Two mock devices; the one id both halls use is down from the start (a scripted fault)."""
    doc = yaml.safe_load(small_inventory([
        node(f"sw-{site}", f"127.31.{index}.1"),
        node(SHARED, f"127.31.{index}.2", parent=f"sw-{site}"),
    ], faults=[{"device": SHARED, "mode": "down", "at": 0}]))
    doc["site"]["id"] = site
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def fast(config: dict[str, Any], interval: str = "1s") -> dict[str, Any]:
    """The example with test-speed intervals (everything else as shipped)."""
    config = copy.deepcopy(config)
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    for job in config["scrape_configs"]:
        job.update(scrape_interval=interval, scrape_timeout=interval)
    return config


def with_alertmanagers(config: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    (ams,) = config["alerting"]["alertmanagers"]
    (group,) = ams["static_configs"]
    assert len(group["targets"]) == len(addresses)
    group["targets"] = addresses
    return config


def immediate_rules(tmp_path: Path) -> Path:
    """dashboards/rules/hallmon.rules.yml with every ``for:`` at 0s (a test cannot wait the
    minute HallDeviceDown rides out blips for); expressions and labels as shipped."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    path = tmp_path / "hallmon.rules.yml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True))
    return path


def hall_config(site: str, poller: str, rules: Path, alertmanagers: list[str]
                ) -> dict[str, Any]:
    config = fast(yaml.safe_load((MULTISITE / "prometheus-hall.yml").read_text()))
    (job,) = config["scrape_configs"]
    (group,) = job["static_configs"]
    group["targets"] = [poller]
    group["labels"]["site"] = site
    config["rule_files"] = [str(rules)]  # the real rules: a rule Prometheus rejects fails here
    return with_alertmanagers(config, alertmanagers)


def city_config(halls: dict[str, str], alertmanagers: list[str]) -> dict[str, Any]:
    config = fast(yaml.safe_load((MULTISITE / "prometheus-city.yml").read_text()))
    (job,) = config["scrape_configs"]
    assert len(job["static_configs"]) == len(halls)
    for group, (site, address) in zip(job["static_configs"], halls.items(), strict=True):
        group["targets"] = [address]
        group["labels"]["site"] = site
    config["rule_files"] = [str(MULTISITE / "city.rules.yml")]
    return with_alertmanagers(config, alertmanagers)


def address(server: PrometheusServer) -> str:
    return server.url.removeprefix("http://")


def wait_until(probe: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.2)


def series(prom: PrometheusServer, expr: str) -> list[dict[str, str]]:
    return [r["metric"] for r in prom.query(expr)["result"]]


# ---- the Alertmanager cluster -----------------------------------------------------------------
PEER_TIMEOUT = "5s"  # the unit's 15 s, shortened: how long the second node waits for the first


def unit_argv(binary: str, workdir: Path, config: Path, web: str, cluster: str,
              peer: str) -> list[str]:
    """ExecStart of deploy/multisite/alertmanager.service with this node's loopback addresses.
    Every flag of the unit must be one this function knows, so the example cannot drift."""
    unit = unit_directives(AM_UNIT.read_text())
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "prometheus-alertmanager"
    replace = {
        "--config.file": str(config),
        "--storage.path": str(workdir / "data"),
        "--web.listen-address": web,
        "--cluster.listen-address": cluster,
        "--cluster.peer": peer,
        "--cluster.peer-timeout": PEER_TIMEOUT,
    }
    out = [binary]
    for arg in argv[1:]:
        flag, _, _ = arg.partition("=")
        assert flag in replace, f"{AM_UNIT.name}: flag {flag} unknown to this test"
        out.append(f"{flag}={replace.pop(flag)}")
    assert not replace, f"{AM_UNIT.name} lacks {sorted(replace)}"
    return out + ["--log.level=warn"]


def cluster_config(webhook: str) -> str:
    """deploy/alertmanager.yml with every receiver on the loopback webhook, and the route's
    group_wait shortened; routing, grouping and receivers' names as shipped."""
    config = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    config["route"]["group_wait"] = "1s"
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
    return yaml.safe_dump(config)


def am_status(client: httpx.Client, base: str) -> dict[str, Any]:
    status: dict[str, Any] = client.get(f"{base}/api/v2/status").json()["cluster"]
    return status


@contextmanager
def am_cluster(tmp_path: Path, webhook: str) -> Iterator[list[str]]:
    """Two nodes of the example unit, peered on 127.0.0.1, settled; their base URLs."""
    binary = require_tool("prometheus-alertmanager", "alertmanager")
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "alertmanager.yml"
    config.write_text(cluster_config(webhook))
    webs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    gossip = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    bases = [f"http://{w}" for w in webs]
    with httpx.Client(timeout=5) as client, ExitStack() as stack:
        for i in range(2):
            workdir = tmp_path / f"am-{i}"
            workdir.mkdir()
            argv = unit_argv(binary, workdir, config, webs[i], gossip[i], gossip[1 - i])
            stack.enter_context(running(argv, what=f"alertmanager {i}", log=workdir / "am.log",
                                        ready=http_ready(client, f"{bases[i]}/-/ready")))
        # Peered and settled (a node holds its notifications until the gossip settles).
        wait_until(lambda: all(
            am_status(client, b)["status"] == "ready" and len(am_status(client, b)["peers"]) == 2
            for b in bases), 90, "two ready peers on both nodes")
        yield bases


def device_alert(site: str) -> dict[str, Any]:
    return {"labels": {"alertname": "HallDeviceDown", "severity": "critical", "job": "hallmon",
                       "site": site, "device": SHARED, "class": "kiosk", "status": "down"},
            "annotations": {"summary": f"设备故障 {SHARED} (kiosk)"}}


@pytest.mark.slow
def test_a_silence_made_on_one_node_holds_on_the_other(tmp_path: Path) -> None:
    with WebhookReceiver() as hook, am_cluster(tmp_path, hook.url) as (one, other), \
            httpx.Client(timeout=5) as client:
        now = time.time()
        silence = {"matchers": [{"name": "site", "value": "hall-b", "isRegex": False}],
                   "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
                   "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
                   "createdBy": "test", "comment": "hall-b maintenance"}
        made = client.post(f"{one}/api/v2/silences", json=silence)
        assert made.status_code == 200, made.text
        silence_id = made.json()["silenceID"]

        def gossiped() -> bool:
            found = client.get(f"{other}/api/v2/silences").json()
            return any(s["id"] == silence_id and s["status"]["state"] == "active" for s in found)

        wait_until(gossiped, 30, "the silence on the other node")
        # An alert of the silenced site posted to the OTHER node only stays quiet; hall-a pages.
        alerts = [device_alert(site) for site in SITES]
        assert client.post(f"{other}/api/v2/alerts", json=alerts).status_code == 200
        wait_until(lambda: hook.bodies(), 30, "hall-a's page")
        time.sleep(3)  # group_wait 1 s: hall-b's page, were it not silenced, would be here
        assert [b["groupLabels"]["site"] for b in hook.bodies()] == ["hall-a"]


# ---- the whole layout -------------------------------------------------------------------------
def page_keys(hook: WebhookReceiver, alertname: str) -> list[tuple[str, str, str, int]]:
    return sorted((b["receiver"], b["groupLabels"]["site"], b["groupLabels"]["device"],
                   len(b["alerts"])) for b in hook.bodies()
                  if b["groupLabels"].get("alertname") == alertname)


@pytest.mark.slow
@pytest.mark.timeout(240)  # ~47 s here: 2 daemons, 3 Prometheus, 2 Alertmanagers settling
def test_the_city_layout_on_loopback(tmp_path: Path) -> None:
    """Two halls (kiosk-1f-03 down in both) -> their Prometheus servers -> the city's, by
    federation; every Prometheus alerting both clustered Alertmanagers -> one page per site."""
    binary = require_tool("prometheus")
    rules = immediate_rules(tmp_path)
    with WebhookReceiver() as hook, am_cluster(tmp_path / "am", hook.url) as am_bases, \
            ExitStack() as stack:
        ams = [b.removeprefix("http://") for b in am_bases]
        halls: dict[str, str] = {}
        for i, site in enumerate(SITES):
            daemon = stack.enter_context(HallmonProcess(tmp_path / site, hall_inventory(site, i)))
            prom = stack.enter_context(prometheus_with_config(
                binary, hall_config(site, daemon.base.removeprefix("http://"), rules, ams)))
            # The hall's own Prometheus already has the site (a target label, not external).
            prom.wait_for_samples(f'hallmon_device_up{{site="{site}", device="{SHARED}"}}', 30)
            halls[site] = address(prom)
        city = stack.enter_context(prometheus_with_config(binary, city_config(halls, ams)))
        shared = f'hallmon_device_up{{device="{SHARED}"}}'
        wait_until(lambda: len(series(city, shared)) == 2, 60, "both sites' kiosk at the city")

        # Each site's series carry their own site, the hall's job and poller (honor_labels).
        pollers = {}
        for got in series(city, shared):
            assert got["job"] == "hallmon" and "exported_job" not in got, got
            pollers[got["site"]] = got["instance"]
        assert set(pollers) == set(SITES)
        assert len(set(pollers.values())) == 2
        for site in SITES:
            (only,) = series(city, f'hallmon_device_up{{device="sw-{site}"}}')
            assert only["site"] == site
        wait_until(lambda: {m["site"] for m in series(city, 'up{job="hallmon"} == 1')}
                   == set(SITES), 30, "both halls' up at the city")
        feds = {m["site"] for m in series(city, 'up{job="hallmon-federate"} == 1')}
        assert feds == set(SITES)
        # Nothing but hallmon's job comes across (match[] = {job="hallmon"}).
        assert {m["job"] for m in series(city, '{job!="hallmon-federate", __name__=~".+"}')} \
            == {"hallmon"}

        # The overview's device grid at the city: each site's kiosk once, none merged.
        grid = find_panel(DASHBOARDS["hall-overview.json"], "全部设备状态")
        expr = interpolate(grid["targets"][0]["expr"], {
            "site": ".*", "job": ".*", "class": ".*", "floor": ".*", "device": ".*"})
        rows = series(city, expr)
        assert sorted((m["site"], m["device"]) for m in rows) == sorted(
            [(s, SHARED) for s in SITES] + [(s, f"sw-{s}") for s in SITES])

        # Pages: each hall's Prometheus sent its kiosk's HallDeviceDown to both nodes; the
        # cluster pages once per site (the later node waits PEER_TIMEOUT, then stays quiet).
        wait_until(lambda: len(page_keys(hook, "HallDeviceDown")) >= 2, 60, "the pages")
        time.sleep(3 * float(PEER_TIMEOUT.removesuffix("s")))
        assert page_keys(hook, "HallDeviceDown") == [
            ("hall-it-urgent", site, SHARED, 1) for site in SITES], hook.bodies()
