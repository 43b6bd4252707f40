"""Without ICMP privileges the daemon says so at start-up, with both fixes, and stops.

As found (issue 13, following the getting-started guide as an unprivileged user): every ping
failed with "permission denied (ping3 needs a raw or ping socket)" while the daemon looked
healthy, and the message naming the fixes never reached anyone. Reproduced for real: the daemon
runs in a network namespace of ours whose `net.ipv4.ping_group_range` admits nobody, with
CAP_NET_RAW dropped from its bounding set (`setpriv`), so neither a raw nor a ping socket opens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.netns import namespace
from tests.conftest import missing_tool

ROOT = Path(__file__).resolve().parent.parent

INVENTORY = """\
site: {name: 测试大厅, timezone: Asia/Shanghai}
defaults: {interval: 5s, timeout: 1s}
classes:
  pingable: {label: 只做ping, checks: [{name: ping, kind: icmp, role: reachability}]}
devices:
  - {id: kiosk-1, name: 一号终端, class: pingable, address: 127.0.0.1}
"""


@pytest.fixture
def unprivileged(tmp_path: Path) -> list[str]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("setpriv"):
        missing_tool("root, iproute2 and setpriv (util-linux) are needed")
    return ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"]


def _run(netns: str, argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    cmd = ["ip", "netns", "exec", netns, *argv, sys.executable, "-m", "monitor.cli"]
    return subprocess.run(
        [*cmd, "run", f"--inventory={inventory}", f"--storage.path={tmp_path / 'state'}",
         "--web.listen-address=127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def test_no_icmp_socket_stops_the_daemon_with_both_fixes(
    unprivileged: list[str], tmp_path: Path
) -> None:
    with namespace(["net.ipv4.ping_group_range=1 0"]) as ns:
        proc = _run(ns, unprivileged, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "cannot open an ICMP socket" in proc.stderr
    assert "CAP_NET_RAW" in proc.stderr and "ping_group_range" in proc.stderr


def test_probe_names_the_fix_instead_of_a_bare_permission_error(
    unprivileged: list[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    with namespace(["net.ipv4.ping_group_range=1 0"]) as ns:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, *unprivileged, sys.executable, "-m", "monitor.cli",
             "probe", "kiosk-1", "--inventory", str(inventory)],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "cannot open an ICMP socket" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_the_start_up_log_says_which_socket_is_used(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("ip"):
        missing_tool("root and iproute2 are needed")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    from probes import icmp

    assert icmp.privileges().startswith("native engine, raw socket")
