"""Every device recording of snmpsim-data through what a technician does with it in hallmon.

One snmpsim process serves all 116 recordings, each as its community ("UPS/eaton-93e-80"),
cut to the subtrees hallmon asks for (tests/agents/snmp.py ``cut``: the largest are ~200 MB).
Per recording:

1. discovery (monitor/discover.py: ``identify``, ``classify``, the tables of switches) proposes
   the class pinned in ``EXPECTED`` — the table reviewed by hand; ``None`` is the honest "no
   class fits" for servers, storage, BMCs, PDUs and the like;
2. every SNMP check of that class is polled (probe_call + evaluate, as the scheduler does):
   no probe error, the verdict pinned in ``EXPECTED`` (healthy unless the recording itself
   shows a fault), and every value read is the recording's own (Counter64, negative and huge
   integers, hex-encoded strings, CRLF files...).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from monitor import discover
from monitor.checks import probe_call
from monitor.cli import main
from monitor.conditions import evaluate
from monitor.inventory import BUILTIN_CLASSES, Inventory, SnmpCheck
from probes import snmp
from tests.agents.snmp import SIM_BIN, Agent, all_recordings, cut, read_recording, snmpsim_many
from tests.conftest import missing_tool

SW, RT, WLC, FW, UPS = "switch", "router", "wireless_controller", "firewall", "ups"
_NO_UPS_MIB = re.escape(
    "cannot evaluate UPS市电中断，电池供电中: output_source missing (noSuchInstance "
    "1.3.6.1.2.1.33.1.4.1.0); cannot evaluate UPS电池电量低: battery_status missing "
    "(noSuchInstance 1.3.6.1.2.1.33.1.2.1.0)")

# The H3C E528 recordings vary one CPU row at random (snmpsim's numeric module: 50 +- 50 %):
# healthy, or the condition saying that CPU and its value.
_H3C_CPU_VARIES = r"(交换机CPU使用率过高 \(h3c_cpu_percent\.30=(9[1-9]|100) > 90\))?"

# recording -> (proposed class, {check: verdict, a regular expression} for checks that fail or
# may fail; the others pass)
EXPECTED: dict[str, tuple[str | None, dict[str, str]]] = {
    # APC Web/SNMP cards of rack PDUs (PowerNet 318.1.3.4): not UPSes, no class for PDUs
    "UPS/apc-7902b": (None, {}),
    "UPS/apc-8641": (None, {}),
    "UPS/apc-8932": (None, {}),
    "UPS/eastpower-istars-swv053": (UPS, {}),  # UPS-MIB, enterprise 40614
    "UPS/eaton-93e-80": (UPS, {}),
    # the recording holds only Eaton's own MIB: the UPS check says what is missing
    "UPS/eaton-9px-partial": (UPS, {"ups": _NO_UPS_MIB}),
    "UPS/emerson-network-power": (None, {}),  # Emerson's own MIB only, no UPS-MIB
    # net-snmp sysObjectID; UPS-MIB says UPS5000; charge and minutes left -1 ("unknown")
    "UPS/huawei-gse200m": (UPS, {}),
    "UPS/ingrasys-power-switch": (UPS, {}),  # a Santak UPS behind an Ingrasys card
    "UPS/juniper-ac": (WLC, {}),  # filed under UPS/, but a Trapeze WLC (as juniper-wlc2800)
    "UPS/phoenixtec-power": (UPS, {}),  # blank UPS-MIB ident strings, battery status 2
    "UPS/vertiv-power": (None, {}),  # sysDescr "Uninitialized", Liebert MIB only
    "bmc/hp-onboard-administrator": (None, {}),
    "camera/hikvision": ("camera_hikvision", {}),
    "camera/hikvision-network-video-recorder": ("nvr", {}),
    "camera/samsung-ipolis": ("camera", {}),
    "camera/semac-ipcam-500": ("camera", {}),
    "camera/wds-ips-1022": (None, {}),  # an "IPSensor", not a camera
    "cloud/arista-dcs-7150s-52-cl": (SW, {}),
    "iot/geist-temperature-sensor": (None, {}),
    "network/appliance/cisco-controller": (WLC, {}),
    "network/appliance/cisco-ucs-6100": (SW, {}),  # NX-OS fabric interconnect
    "network/appliance/cisco-ucs-6100-k9": (SW, {}),
    "network/appliance/cisco-unknown-01": (RT, {}),  # IOS, no word of switching
    "network/appliance/empirical-hw-mgmt": (None, {}),  # Huawei iBMC
    "network/appliance/huawei-ism": (None, {}),  # storage manager
    "network/appliance/infosec-nsae-6500": (None, {}),
    "network/appliance/meru-networks-controller": (WLC, {}),
    "network/appliance/network-research-squid": (None, {}),  # no system group at all
    "network/appliance/nsfocus-ads": (None, {}),  # anti-DDoS appliance
    "network/appliance/tripplite-poweralert": (None, {}),  # transfer switch, no UPS values
    "network/appliance/ucdavis-sic": (None, {}),
    "network/appliance/vss-monitoring-optimizer-2400-span": (None, {}),
    "network/firewall/clavister-amaranten": (FW, {}),
    "network/firewall/fortinet-xcu": (FW, {}),
    "network/firewall/legend-holdings-firewall": (FW, {}),
    "network/firewall/legend-holdings-firewall-2": (FW, {}),
    "network/firewall/netentsec-ngfw": (FW, {}),
    "network/firewall/nsfocus-osms": (None, {}),  # ops audit; sysObjectID malformed (4.19849)
    "network/firewall/paloalto-pa-5000": (FW, {}),
    "network/firewall/sangfor-ad1800-fp2": (None, {}),  # Sangfor AD: a load balancer
    "network/firewall/sangfor-vad1": (None, {}),
    "network/firewall/topsec-ngfw4000-uf": (FW, {}),
    "network/firewall/venus-unknown-001": (FW, {}),
    "network/firewall/venus-vsos-v0600r0705b20180507": (FW, {}),
    "network/firewall/venus-vsos-v070060600": (FW, {}),
    "network/router/brocade-unknown-001": (SW, {}),  # Brocade FC: sysDescr is an address
    "network/router/cisco-unmarked-0": (RT, {}),
    "network/router/huawei-acu2": (WLC, {}),
    "network/router/huawei-s5720": (SW, {}),
    "network/router/huawei-unknown-001": (None, {}),  # empty sysDescr, 2011.2.89
    "network/router/huawei-unknown-002": (None, {}),
    "network/router/juniper-mx960-12-3r6-6": (RT, {}),
    "network/router/juniper-mx960-13-3r9-13": (RT, {}),
    "network/router/juniper-mx960-16-1r6-7-a": (RT, {}),
    "network/router/juniper-mx960-16-1r6-7-b": (RT, {}),
    "network/router/ruijie-n18010": (SW, {}),  # "Core Routing Switch"
    "network/router/vyatta-unknown": (RT, {}),
    "network/switch/bdcom-s5612": (SW, {}),
    "network/switch/brocade-ds-5100b": (SW, {}),
    "network/switch/brocade-fiber-channel": (SW, {}),
    "network/switch/brocade-icx6430-24": (SW, {}),
    "network/switch/cisco-c3560": (SW, {}),
    "network/switch/cisco-c3750": (SW, {}),
    "network/switch/cisco-n5000": (SW, {}),
    "network/switch/cisco-n5000-uk9": (SW, {}),
    "network/switch/cts-media-converter": (None, {}),
    "network/switch/dcrs-5980-28t-dc": (SW, {}),
    "network/switch/dcs-3726c": (SW, {}),
    "network/switch/dlink-des3038": (SW, {}),
    "network/switch/dlink-des3200": (SW, {}),
    "network/switch/dptech-dpx800-a5": (None, {}),  # "Conplat": a security gateway platform
    "network/switch/h3c-comware-7-1-075": (SW, {}),  # 65535 = "no sensor", not 65535 degrees
    "network/switch/h3c-comware-lsq1wcmd0": (WLC, {}),  # LSQ1WCMD0: a WX controller module
    "network/switch/h3c-comware-lsq1wcmd0-2509p61": (WLC, {}),
    "network/switch/h3c-e528-1": (SW, {"snmp": _H3C_CPU_VARIES}),
    "network/switch/h3c-e528-2": (SW, {"snmp": _H3C_CPU_VARIES}),
    "network/switch/h3c-wx6103": (WLC, {}),
    "network/switch/hpe-procurve-516733-b21": (SW, {}),
    "network/switch/huawei-s12704": (SW, {}),
    "network/switch/maipu-sm4200-16gef8ge-ac": (SW, {}),
    "network/switch/metel-poe-box": (None, {}),
    "network/switch/ruijie-s5750-24gt12sfp": (SW, {}),
    "network/switch/zte-zrx10": (SW, {}),
    "network/switch/zte-zxr10-5250": (SW, {}),
    "network/wifi/aruba-7010": (WLC, {}),
    "network/wifi/aruba-7020": (WLC, {}),
    "network/wifi/aruba-7210": (WLC, {}),
    "network/wifi/juniper-wlc2800": (WLC, {}),
    "network/wifi/ruckus-smartcell-gateway": (WLC, {}),
    "network/wifi/ruijie-m18000": (WLC, {}),  # "Wireless Switch Module"
    "network/wifi/sangfor-wac": (WLC, {}),
    "network/wifi/sangfor-wac-2": (WLC, {}),
    "network/wifi/ubiquiti-m5": (None, {}),  # an outdoor bridge/AP: no class for APs
    "os/linux/ibm-power-chrp": (None, {}),
    "os/linux/ibm-x3550-m3": (None, {}),
    "os/linux/netmanage": (None, {}),  # GBK and 0xff bytes in sysDescr
    "os/linux/sangfor": (FW, {}),  # "Linux AC": Sangfor's 上网行为管理
    "os/linux/slackware": (None, {}),
    "os/linux/unknown-001": (None, {}),
    "os/linux/unknown-002": (None, {}),
    "os/linux/unknown-003": (None, {}),
    "os/linux/unknown-004": (None, {}),
    "os/linux/unknown-005": (None, {}),
    "os/linux/unknown-006": (None, {}),
    "os/linux/unknown-007": (None, {}),
    "os/linux/unknown-008": (None, {}),
    "os/linux/zte-embsys-cgel": (None, {}),
    "os/windows/XP": ("kiosk", {}),
    "os/windows/server-2003-5-2": ("kiosk", {}),
    "storage/isilon-onefs": (None, {}),
    "storage/netapp-fas3270": (None, {}),
    "storage/netapp-ontap-8-2-3": (None, {}),
    "unclassified/01": (None, {}),
    "unclassified/02": (None, {}),  # no system group
    "unclassified/03": (None, {}),
}

_NUMERIC_TAGS = {"2", "65", "66", "67", "70"}  # Integer32, Counter32, Gauge32, TimeTicks, C64


def asked_oids() -> list[str]:
    """Every OID hallmon asks a device: discovery's and the built-in classes' checks."""
    oids = {discover.SYS_DESCR, discover.SYS_OBJECT_ID, discover.SYS_NAME,
            discover.HIK_MANUFACTURER, discover.IF_PHYS_ADDRESS, discover.LLDP_REM_CHASSIS,
            discover.LLDP_REM_SYS_NAME, discover.DOT1D_FDB_PORT, discover.DOT1Q_FDB_PORT,
            *(oid for oid, _, _ in discover.EVIDENCE)}
    for cls in BUILTIN_CLASSES.values():
        for check in cls.checks:
            if isinstance(check, SnmpCheck):
                oids |= {e.oid.lstrip(".") for e in (*check.oids.values(), *check.walks.values())}
    return sorted(oids)


def records(text: bytes) -> dict[str, tuple[str, str]]:
    out = {}
    for line in text.decode("utf-8", errors="replace").split("\n")[:-1]:  # not splitlines: \r
        oid, tag, value = line.split("|", 2)
        out[oid] = (tag, value.rstrip("\r"))
    return out


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Agent, dict[str, dict[str, tuple[str, str]]]]]:
    if not SIM_BIN.exists():
        missing_tool("snmpsim venv missing: make .venv-snmpsim/.installed")
    paths = all_recordings()
    oids = asked_oids()
    with ThreadPoolExecutor(2) as pool:  # bz2 decompression releases the GIL
        cuts = dict(zip(paths, pool.map(lambda p: cut(read_recording(p), oids), paths.values()),
                        strict=True))
    with snmpsim_many(cuts) as agent:
        yield agent, {name: records(text) for name, text in cuts.items()}


@pytest.fixture(autouse=True)
async def _engine() -> AsyncIterator[None]:
    yield
    await snmp.close()


# snmpsim answers a GETBULK in ~10 ms alone, but this machine's two cores are shared: waits
# are generous (a walk's request may wait its turn for seconds) and never part of a verdict.
WAIT = 10.0


def hall(agent: Agent, recording: str, cls: str | None = None) -> Inventory:
    snmp_checks = [c.name for c in BUILTIN_CLASSES[cls].checks
                   if isinstance(c, SnmpCheck)] if cls else []
    doc = {
        "site": {"name": "测试大厅"},
        "credentials": {"rec": {"version": "2c", "community": "${C}", "port": agent.port,
                                "timeout": f"{WAIT:g}s", "retries": 2}},
        "devices": [{"id": "dev", "name": "dev", "class": cls, "address": agent.host,
                     "credential": "rec",
                     "checks": {name: {"interval": "10m", "timeout": "5m"}
                                for name in snmp_checks}}] if cls else [],
    }
    return Inventory.model_validate(doc, context={"env": {"C": recording}})


def test_the_table_covers_every_recording(served: tuple[Agent, dict[str, object]]) -> None:
    """A new snmpsim-data release shows here: review its recordings, then pin them."""
    assert sorted(served[1]) == sorted(EXPECTED)


@pytest.mark.parametrize("recording", sorted(EXPECTED))
async def test_discovery_proposes_a_class(
    served: tuple[Agent, dict[str, dict[str, tuple[str, str]]]], recording: str,
) -> None:
    agent, recorded = served
    auth = discover.snmp_auth(hall(agent, recording).credentials["rec"])
    host = discover.Host(agent.host)
    await discover.identify(host, {"rec": auth}, agent.port, WAIT)
    assert host.credential == "rec", "every recording answers its community"
    tag, value = recorded[recording].get(discover.SYS_DESCR, ("", ""))
    if tag == "4x" and not re.fullmatch(r"([0-9a-fA-F]{2})*", value):
        value = ""  # juniper-ac: "4x|Juniper", not hex; snmpsim sends it empty
    assert bool(host.descr.strip()) == bool(value.strip()), host.descr
    discover.classify(host, [])
    if host.class_ in discover.SWITCHING:
        await discover.tables(host, auth, agent.port, WAIT)  # big FDB/LLDP tables: no crash
    assert host.class_ == EXPECTED[recording][0], host.reason or discover.said_by(host)


@pytest.mark.parametrize("recording", sorted(r for r, (cls, _) in EXPECTED.items() if cls))
async def test_the_class_checks_judge_the_recording(
    served: tuple[Agent, dict[str, dict[str, tuple[str, str]]]], recording: str,
) -> None:
    agent, recorded = served
    cls, failing = EXPECTED[recording]
    assert cls is not None
    inv = hall(agent, recording, cls)
    dev = inv.device("dev")
    polled = {}
    for check in inv.checks_for(dev):
        if not isinstance(check.spec, SnmpCheck):
            continue  # ping and TCP ports: nothing of the recording to read
        result = evaluate(check, await probe_call(inv, dev, check)())
        assert result.ok == (result.error is None)
        polled[check.name] = result.error or ""
        _same_values(check.spec, result.values, recorded[recording])
    assert set(failing) <= set(polled)
    for name, verdict in polled.items():
        assert re.fullmatch(failing.get(name, ""), verdict), (name, verdict)


def _same_values(spec: SnmpCheck, values: dict[str, float],
                 recorded: dict[str, tuple[str, str]]) -> None:
    """Each value read is the recording's number, scaled; walks read every numeric row."""
    for name, entry in spec.oids.items():
        tag, raw = recorded.get(entry.oid, ("", ""))
        if tag in _NUMERIC_TAGS and int(raw) in entry.absent:
            assert name not in values, f"{name}: {raw} means 'not measured'"
        elif tag in _NUMERIC_TAGS:
            assert values[name] == pytest.approx(int(raw) * entry.scale), name
    for name, entry in spec.walks.items():
        prefix = entry.oid + "."
        rows = {oid[len(prefix):]: int(raw) for oid, (tag, raw) in recorded.items()
                if oid.startswith(prefix) and tag in _NUMERIC_TAGS}
        varied = {oid[len(prefix):] for oid, (tag, _) in recorded.items()
                  if oid.startswith(prefix) and ":" in tag}  # snmpsim variation modules
        read = {key[len(name) + 1:]: v for key, v in values.items()
                if key.startswith(name + ".") and key[len(name) + 1:] not in varied}
        assert read == {k: v * entry.scale for k, v in rows.items()
                        if v not in entry.absent}, name


def test_hallmon_discover_says_why_or_what_the_device_said(
    served: tuple[Agent, dict[str, object]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI end to end on 127.0.0.1: a UPS on a Linux card is proposed for its UPS-MIB
    answer; an APC rack PDU is not proposed, and what it said is shown instead of "ping only"."""
    agent, _ = served
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "site: {name: 测试大厅, timezone: Asia/Shanghai}\ncredentials:\n"
        "  ups: {version: 2c, community: '${HM_UPS}'}\n"
        "  pdu: {version: 2c, community: '${HM_PDU}'}\n", encoding="utf-8")
    monkeypatch.setenv("HM_UPS", "UPS/huawei-gse200m")
    monkeypatch.setenv("HM_PDU", "UPS/apc-8932")
    argv = ["discover", f"{agent.host}/32", "--inventory", str(inventory),
            "--snmp-port", str(agent.port), "--timeout", "2"]
    assert main([*argv, "--credential", "ups"]) == 0
    out = capsys.readouterr().out
    assert "scanned 1 addresses: 1 identified" in out
    assert "new ups-dumsys-57 127.0.0.1: discovered " in out
    assert "class ups (answers UPS-MIB upsIdentModel 'UPS5000')" in out
    assert main([*argv, "--credential", "pdu"]) == 0
    out = capsys.readouterr().out
    assert "0 identified, 0 answered ping only, 1 answered SNMP but fit no class" in out
    assert ("answered SNMP, no class fits (not proposed; add it by hand or a discovery rule): "
            "127.0.0.1: sysObjectID 1.3.6.1.4.1.318.1.3.4.6, sysDescr 'APC Web/SNMP Management "
            "Card (MB:v4.1.0 PF:v6.7.2 PN:apc_hw05_aos_6...'") in out
    assert "nothing to change" in out  # was: a diff adding "devices: []"
    assert "UPS/apc-8932" not in out + inventory.read_text(), "the community is a secret"


async def test_a_chinese_sysname_in_gbk_is_read_as_chinese() -> None:
    """A Chinese device named at a GBK console sends its sysName in GBK bytes: discovery names
    it "一楼接入交换机". netmanage's sysDescr (GBK "中文" and a lone 0xff, no one encoding) is
    shown as the probe read it."""
    if not SIM_BIN.exists():
        missing_tool("snmpsim venv missing: make .venv-snmpsim/.installed")
    paths = all_recordings()
    h3c = cut(read_recording(paths["network/switch/h3c-e528-2"]), asked_oids())
    named = h3c.replace(b"1.3.6.1.2.1.1.5.0|4|DUMSYS-01",
                        b"1.3.6.1.2.1.1.5.0|4x|" + "一楼接入交换机".encode("gbk").hex().encode())
    assert named != h3c
    netmanage = cut(read_recording(paths["os/linux/netmanage"]), asked_oids())
    with snmpsim_many({"h3c": named, "netmanage": netmanage}) as agent:
        found = []
        for community in ("h3c", "netmanage"):
            host = discover.Host(agent.host)
            auth = discover.snmp_auth(hall(agent, community).credentials["rec"])
            await discover.identify(host, {"rec": auth}, agent.port, WAIT)
            found.append(host)
    assert found[0].sys_name == "一楼接入交换机"
    assert found[1].descr == "Dummy System\r\nChinese: \xd6\xd0\xce\xc4\r\nNon-ASCII: \xff"
