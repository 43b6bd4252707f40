"""SNMP benchmark: 10,000 devices, one 4-OID GET each, against net-snmp snmpd on loopback,
at the default in-flight cap (100); beside prometheus-snmp-exporter on the same agent.

v2c runs on the fast path (probes/snmp_ber.py + probes/snmp_udp.py); ``--v3-devices`` also
times v3 authPriv (SHA/AES), which stays on pysnmp: the "before" cost of every GET.

The "devices" are 100 loopback addresses (127.13.0.1-100) served by one snmpd, 100 GETs each.
Run: .venv/bin/python bench/snmp_get.py [--devices 10000] [--exporter-scrapes 2000]
                                        [--v3-devices 1000]
Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _snmp_exporter import installed, scrape_all  # noqa: E402
from _verdict import finish  # noqa: E402

from probes import snmp  # noqa: E402
from probes.snmp import OidSpec, SnmpAuth, SnmpConfig  # noqa: E402
from tests.agents.snmp import SNMPD_USERS, snmpd_agent  # noqa: E402

ADDRESSES = [f"127.13.0.{i}" for i in range(1, 101)]
OIDS = (
    OidSpec("uptime_seconds", "1.3.6.1.2.1.1.3.0", scale=0.01),
    OidSpec("services", "1.3.6.1.2.1.1.7.0"),
    OidSpec("if_number", "1.3.6.1.2.1.2.1.0"),
    OidSpec("snmp_in_pkts", "1.3.6.1.2.1.11.1.0"),
)


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def ours(devices: int, port: int, auth: SnmpAuth) -> dict[str, float]:
    config = SnmpConfig(auth, port=port, oids=OIDS,
                        timeout=2.0, retries=0)  # no retries: a lost reply shows as a failure
    targets = [ADDRESSES[i % len(ADDRESSES)] for i in range(devices)]
    await asyncio.gather(*(snmp.probe(t, config) for t in ADDRESSES))  # engine + LCD warm-up
    engine = snmp._engines[asyncio.get_running_loop()]
    c0, t0 = cpu(), time.perf_counter()
    results = await asyncio.gather(*(snmp.probe(t, config) for t in targets))
    wall, used = time.perf_counter() - t0, cpu() - c0
    stray = engine.fast.stray
    await snmp.close()
    bad = [r for r in results if not r.ok or len(r.values) != 4]
    return {"devices": devices, "wall_s": wall, "cpu_s": used,
            "cpu_ms_per_get": used / devices * 1000, "lost": len(bad),
            "stray_replies": stray, "in_flight_cap": 100}


def v3_auth() -> SnmpAuth:
    user, _, auth_key, _, priv_key = SNMPD_USERS[0]  # SHA + AES
    return SnmpAuth("3", user=user, auth_protocol="sha", auth_key=auth_key,
                    priv_protocol="aes", priv_key=priv_key)


async def exporter(scrapes: int, port: int) -> dict[str, float] | dict[str, str]:
    if not installed():
        return {"skipped": "prometheus-snmp-exporter not installed"}
    run = await scrape_all([ADDRESSES[i % len(ADDRESSES)] for i in range(scrapes)], port,
                           in_flight=50)
    return {"scrapes": scrapes, "wall_s": run.wall_s, "exporter_cpu_s": run.cpu_s,
            "cpu_ms_per_get": run.cpu_s / scrapes * 1000, "failures": run.failures}


async def main(devices: int, scrapes: int, v3_devices: int) -> None:
    with snmpd_agent(ADDRESSES) as agent:
        mine = await ours(devices, agent.port, SnmpAuth("2c", community=agent.community))
        v3 = await ours(v3_devices, agent.port, v3_auth()) if v3_devices else {}
        theirs = await exporter(scrapes, agent.port)
    print(f"hallmon snmp probe v2c (fast path): {devices} devices x 1 GET (4 OIDs): "
          f"wall {mine['wall_s']:.2f} s, "
          f"cpu {mine['cpu_s']:.2f} s = {mine['cpu_ms_per_get']:.3f} ms/GET, "
          f"lost {int(mine['lost'])}, stray {int(mine['stray_replies'])} (cap 100 in flight)")
    if v3:
        print(f"hallmon snmp probe v3 authPriv (pysnmp): {v3_devices} devices: "
              f"wall {v3['wall_s']:.2f} s, cpu {v3['cpu_s']:.2f} s = "
              f"{v3['cpu_ms_per_get']:.3f} ms/GET, lost {int(v3['lost'])}")
    if "cpu_ms_per_get" in theirs:
        print(f"snmp_exporter 0.21: {scrapes} scrapes: exporter cpu "
              f"{theirs['exporter_cpu_s']:.2f} s = {theirs['cpu_ms_per_get']:.3f} ms/GET "
              "(HTTP + SNMP), "
              f"failures {theirs['failures']}")
    else:
        print(f"snmp_exporter: {theirs}")
    budgets = {
        # The fast path must stay cheaper per GET than the Go exporter (today 6-12x cheaper).
        "hallmon_cheaper_per_get_than_snmp_exporter":
            mine["cpu_ms_per_get"] < theirs.get("cpu_ms_per_get", float("inf")),
        "hallmon_lost_under_0.5%": mine["lost"] <= 0.005 * devices,
    }
    finish("snmp_get", {"hallmon": mine, "hallmon_v3": v3, "snmp_exporter": theirs}, budgets)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--exporter-scrapes", type=int, default=2000)
    parser.add_argument("--v3-devices", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.exporter_scrapes, args.v3_devices))
