"""docs/getting-started.md, followed as written, so the guide cannot rot.

The guide's files (fenced blocks marked ``file=NAME``), its snmpd command line and its community
are read from the page; only the two loopback ports are swapped for free ones, so the test can
run beside other agents. Then, as the guide says: ``hallmon check``, ``hallmon probe sw-lab``,
``hallmon run`` until ready with the device up in /metrics, and snmpd stopped: degraded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agents.daemon import parse_metrics
from tests.agents.proc import free_port, http_ready, running, stop, tail, wait_ready
from tests.agents.snmp import Agent, answers
from tests.conftest import require_tool

pytestmark = pytest.mark.slow  # up to the 30 s port walk of the guide, then 3 failed polls

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs/getting-started.md"
GUIDE_SNMP_PORT = "16161"
DEVICE = "sw-lab"


def guide_files(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r"^```\w+ file=(\S+)\n(.*?)^```$", text, re.M | re.S)}


def guide_snmpd_command(text: str, workdir: Path) -> tuple[dict[str, str], list[str]]:
    """The sh block that starts snmpd: (environment assignments, argv), $PWD = ``workdir``."""
    for block in re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command.replace("$PWD", str(workdir)), comments=True)
            env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
            argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
            if argv[:1] == ["snmpd"]:
                return env, argv
    raise AssertionError("no snmpd command line in the guide")


def guide_export(text: str, name: str) -> str:
    m = re.search(rf"^export {name}=(\S+)$", text, re.M)
    assert m, f"the guide exports no {name}"
    return m[1]


def guide_output(text: str, command: str) -> list[str]:
    """The output block the guide shows after the sh block ending in ``command``, up to its
    "..." line."""
    m = re.search(rf"^{re.escape(command)}\n```\n\n```\n(.*?)^```$", text, re.M | re.S)
    assert m, f"the guide shows no output of {command!r}"
    lines = m[1].splitlines()
    return lines[:lines.index("...")] if "..." in lines else lines


def hallmon() -> list[str]:
    script = Path(sys.executable).with_name("hallmon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], subprocess.Popen[bytes]]]:
    snmpd = require_tool("snmpd", "/usr/sbin/snmpd")
    text = GUIDE.read_text(encoding="utf-8")
    files = guide_files(text)
    assert set(files) == {"snmpd.conf", "inventory.yaml"}, files.keys()
    port = str(free_port("127.0.0.1", udp=True))
    for name, body in files.items():
        assert GUIDE_SNMP_PORT in body, f"{name}: the guide's port moved; update this test"
        (tmp_path / name).write_text(body.replace(GUIDE_SNMP_PORT, port), encoding="utf-8")
    for line in text.splitlines():  # the guide's `mkdir -p DIR` lines
        if line.startswith("mkdir -p "):
            (tmp_path / line.split()[2]).mkdir(parents=True, exist_ok=True)
    env_add, argv = guide_snmpd_command(text, tmp_path)
    argv[0] = snmpd
    community = guide_export(text, "HALLMON_SNMP_COMMUNITY")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HALLMON_SNMP_COMMUNITY": community}
    with running(argv, what="snmpd", log=tmp_path / "snmpd.log",
                 ready=answers(Agent("127.0.0.1", int(port), community)),
                 env={**os.environ, **env_add}, cwd=tmp_path) as agent:
        yield tmp_path, env, agent


def test_the_guide_polls_a_real_snmpd(
    lab: tuple[Path, dict[str, str], subprocess.Popen[bytes]],
) -> None:
    work, env, snmpd = lab

    check = subprocess.run([*hallmon(), "check"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("inventory.yaml: OK\n"), check.stdout
    assert "community=<secret>" in check.stdout
    assert env["HALLMON_SNMP_COMMUNITY"] not in check.stdout + check.stderr
    port = re.search(r"port: (\d+)", (work / "inventory.yaml").read_text())[1]  # type: ignore[index]
    shown = guide_output(GUIDE.read_text(encoding="utf-8"), "hallmon check")
    printed = check.stdout.replace(f"port={port}", f"port={GUIDE_SNMP_PORT}").splitlines()
    assert printed[:len(shown)] == shown, "the guide's `hallmon check` output"

    probe = subprocess.run([*hallmon(), "probe", DEVICE, "--json"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    results = {c["check"]: c for c in json.loads(probe.stdout)["checks"]}
    assert set(results) == {"ping", "snmp", "ports"}
    assert all(c["ok"] for c in results.values()), results
    assert results["snmp"]["values"]["sys_uptime_seconds"] > 0
    assert results["ports"]["values"], "no interfaces walked"

    listen = f"127.0.0.1:{free_port()}"
    log = work / "hallmon.log"
    argv = [*hallmon(), "run", "--inventory", "inventory.yaml", "--storage.path", "state",
            f"--web.listen-address={listen}"]
    with httpx.Client(base_url=f"http://{listen}", timeout=10) as http, \
            running(argv, what="hallmon", log=log, within=30, cwd=work, env=env,
                    ready=lambda: _answers(http)) as daemon:
        # ready once every check ran once: the guide's 30 s port walk is the longest
        wait_ready(daemon, http_ready(http, f"http://{listen}/-/ready"), what="hallmon ready",
                   log=log, within=90, every=0.5)

        def sample(name: str, **labels: str) -> float | None:
            for got, value in parse_metrics(http.get("/metrics").text).get(name, []):
                if all(got.get(k) == v for k, v in labels.items()):
                    return value
            return None

        assert sample("hallmon_device_up", device=DEVICE) == 1, tail(log)
        assert sample("hallmon_device_status", device=DEVICE, status="up") == 1
        assert sample("hallmon_check_up", device=DEVICE, check="snmp") == 1
        uptime = sample("hallmon_snmp_sys_uptime_seconds", device=DEVICE, check="snmp")
        assert uptime is not None and uptime > 0

        # "Now stop snmpd": the device still answers ping, so it is degraded, not down
        stop(snmpd)
        wait_ready(daemon, lambda: sample("hallmon_device_status", device=DEVICE,
                                          status="degraded") == 1,
                   what="sw-lab degraded", log=log, within=60, every=0.5)
        assert sample("hallmon_check_up", device=DEVICE, check="snmp") == 0
        assert sample("hallmon_check_up", device=DEVICE, check="ping") == 1
    assert daemon.returncode == 0, tail(log)
    assert env["HALLMON_SNMP_COMMUNITY"] not in log.read_text()


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/-/healthy").status_code == 200
    except httpx.TransportError:
        return False
