"""Discovery benchmark: `hallmon discover` of a /20 with 50 answering hosts, beside fping + snmpget.

The /20 lives in a network namespace of our own (root + iproute2), so nothing leaves this
machine: 50 addresses of 127.88.0.0/20 are the namespace's own (they answer ICMP; nothing
listens on SNMP or the fingerprint ports), the rest of the /20 is routed to a veth pair inside
the namespace, where neighbour resolution fails, so they stay silent as absent hosts on a real
LAN do. Both contenders run inside the namespace:

- hallmon: `hallmon discover 127.88.0.0/20` (sweep, one SNMP credential per answering host,
  TCP fingerprints), dry run;
- anchor: `fping -a -r0 -i 1 -t T -g 127.88.0.0/20` (1 ms between sends: as polite), then
  `snmpget` of the system group on every answering host (one process each, as a shell loop
  would), in the same run.

Budget: discover's wall time <= 2x the anchor's + 2 s (it does more per host: fingerprints),
and never more than 15 s. Prints figures, then one JSON line; exits 1 over budget.

Run: .venv/bin/python bench/discover.py [--answering 50] [--timeout 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NET = "127.88.0.0/20"
NS = f"hallmon-bench-disc-{os.getpid()}"

INVENTORY = """\
site: {name: bench, timezone: Asia/Shanghai}
credentials:
  v2c: {version: 2c, community: "${HM_BENCH_COMMUNITY:-public}"}
devices: []
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)


def in_ns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NS, *argv]


def setup(answering: int) -> list[str]:
    sh("ip", "netns", "add", NS)
    steps = [
        "ip link set lo up",
        "ip addr del 127.0.0.1/8 dev lo",
        "ip addr add 127.0.0.1/32 dev lo",
        "ip link add v0 type veth peer name v1",
        "ip link set v0 up",
        "ip link set v1 up",
        "sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.v0.route_localnet=1",
        f"ip route add {NET} dev v0",
    ]
    alive = [f"127.88.{i // 200}.{i % 200 * 1 + 10}" for i in range(answering)]
    steps += [f"ip addr add {a}/32 dev lo" for a in alive]
    sh(*in_ns("sh", "-c", " && ".join(steps)))
    return alive


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0, proc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answering", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"bench": "discover", "ok": False, "error": "needs root"}))
        return 1
    alive = setup(args.answering)
    try:
        work = Path(tempfile.mkdtemp(prefix="hallmon-bench-disc-"))
        inventory = work / "inventory.yaml"
        inventory.write_text(INVENTORY)
        hallmon = [sys.executable, "-m", "monitor.cli", "discover", NET, "--inventory",
                   str(inventory), "--timeout", str(args.timeout), "--max-hosts", "5000"]
        ours, proc = timed(in_ns(*hallmon))
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            return 1
        summary = next(line for line in proc.stdout.splitlines() if line.startswith("scanned"))
        ms = int(args.timeout * 1000)
        script = (f"fping -a -r0 -i 1 -t {ms} -g {NET} 2>/dev/null | while read h; do "
                  f"snmpget -v2c -c public -r0 -t {args.timeout} $h 1.3.6.1.2.1.1.1.0 "
                  "1.3.6.1.2.1.1.2.0 1.3.6.1.2.1.1.5.0 >/dev/null 2>&1 & done; wait")
        anchor, _ = timed(in_ns("sh", "-c", script))
        fping_only, fp = timed(in_ns("fping", "-a", "-r0", "-i", "1", "-t", str(ms), "-g", NET))
        found = len(fp.stdout.split())
    finally:
        sh("ip", "netns", "del", NS, check=False)
    budget = min(15.0, 2 * anchor + 2)
    ok = ours <= budget and f"{len(alive)} answered ping only" in summary
    print(f"hallmon discover {NET}: {ours:.2f} s ({summary})")
    print(f"fping + snmpget: {anchor:.2f} s (fping alone {fping_only:.2f} s, {found} alive)")
    print(json.dumps({"bench": "discover", "network": NET, "answering": len(alive),
                      "discover_wall_s": round(ours, 3), "anchor_wall_s": round(anchor, 3),
                      "fping_wall_s": round(fping_only, 3), "ratio": round(ours / anchor, 2),
                      "budget_s": round(budget, 2), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
