"""Discovery of a small hall on loopback, served by snmpsim recordings of real devices.

The hall: the core switch (H3C E528 recording, already in the inventory), an access switch (the
second H3C E528 recording), a Hikvision NVR, a Hikvision camera, an APC card, and a printer that
answers only raw printing on TCP 9100. Two recordings had to point at each other, so this test
serves edited copies (and says so): the access switch's LLDP neighbour row names the core
(sysName DUMSYS-02) instead of the switch it was recorded beside, and both switches' Q-BRIDGE
forwarding tables learn the APC card's MAC (28:29:86:54:4f:45, from its own ifPhysAddress): on
the access switch's port 5 alone, on the core's uplink port 24 among others.
"""

from __future__ import annotations

import bz2
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.discover import DiscoveryError, addresses, mac_from_index, mac_from_text
from monitor.inventory.load import load_inventory
from tests.agents.netns import sparse_namespace
from tests.agents.proc import free_port
from tests.agents.snmp import recording_path, snmpsim_agent
from tests.conftest import missing_tool

DATA = Path(__file__).parent / "data" / "discovery"
APC_MAC = "28:29:86:54:4f:45"
Q_FDB = "1.3.6.1.2.1.17.7.1.2.2.1.2.1." + ".".join(str(int(b, 16)) for b in APC_MAC.split(":"))
LLDP_NAME_ROW = "1.0.8802.1.1.2.1.4.1.1.9.1169175.24.1"


def _raw(path: Path) -> bytes:
    return bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()


def _edited(source: Path, replace: dict[str, str], add: list[str]) -> bytes:
    lines = []
    for line in _raw(source).decode("utf-8", "replace").splitlines():
        oid = line.split("|", 1)[0]
        lines.append(replace.get(oid, line))
    lines += add
    lines.sort(key=lambda row: tuple(int(x) for x in row.split("|", 1)[0].split(".")))
    return ("\n".join(lines) + "\n").encode()


@contextlib.contextmanager
def tcp_listener(host: str, port: int) -> Iterator[None]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(8)
        yield


@pytest.fixture(scope="module")
def hall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    try:
        recording_path("hikvision")
    except FileNotFoundError:
        missing_tool("snmpsim venv missing: make .venv-snmpsim/.installed")
    base = recording_path("hikvision").parents[1]
    core = base / "network/switch/h3c-e528-1.snmprec.bz2"
    access = base / "network/switch/h3c-e528-2.snmprec.bz2"
    port = free_port("127.77.0.1", udp=True)
    agents = [
        ("127.77.0.1", _edited(core, {}, [f"{Q_FDB}|2|24"])),
        ("127.77.0.2", _edited(access, {LLDP_NAME_ROW: f"{LLDP_NAME_ROW}|4|DUMSYS-02"},
                               [f"{Q_FDB}|2|5"])),
        ("127.77.0.3", _raw(base / "camera/hikvision-network-video-recorder.snmprec.bz2")),
        ("127.77.0.4", _raw(base / "camera/hikvision.snmprec.bz2")),
        ("127.77.0.5", _raw(base / "UPS/apc-8932.snmprec")),
    ]
    work = tmp_path_factory.mktemp("discovery")
    inventory = work / "inventory.yaml"
    inventory.write_text((DATA / "inventory.yaml").read_text().replace("PORT", str(port)))
    with contextlib.ExitStack() as stack:
        for host, records in agents:
            stack.enter_context(snmpsim_agent("rec", host, records=records, community="public",
                                              port=port))
        stack.enter_context(tcp_listener("127.77.0.6", 9100))
        yield inventory, port


def test_discover_proposes_classes_and_parents_then_writes_a_checked_inventory(
    hall: tuple[Path, int], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory, port = hall
    monkeypatch.setenv("HM_DISCOVERY_COMMUNITY", "public")
    before = inventory.read_text()
    argv = ["discover", "127.77.0.0/29", "--inventory", str(inventory),
            "--snmp-port", str(port), "--timeout", "0.5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert inventory.read_text() == before, "a dry run writes nothing"
    assert "scanned 6 addresses: 6 identified, 0 answered ping only" in out
    added = [line for line in out.splitlines() if line.startswith("+  - {")]
    by_address = {line.split("address: ")[1].split(",")[0].rstrip("}"): line for line in added}
    assert set(by_address) == {f"127.77.0.{n}" for n in range(2, 7)}
    assert "class: switch" in by_address["127.77.0.2"]
    assert "parent: sw-core" in by_address["127.77.0.2"]
    assert "class: nvr" in by_address["127.77.0.3"]
    access_id = by_address["127.77.0.2"].split("id: ")[1].split(",")[0]
    assert f"parent: {access_id}" in by_address["127.77.0.5"], "APC hangs from its access port"
    assert "class: camera_hikvision" in by_address["127.77.0.4"]
    assert "class: ups" in by_address["127.77.0.5"]
    assert "class: printer" in by_address["127.77.0.6"]
    assert "enabled: false" in by_address["127.77.0.6"], "no SNMP answered: its checks off"
    assert f"MAC {APC_MAC} learned on DUMSYS-01 port 5 (1 MAC on that port)" in out
    assert "LLDP: DUMSYS-02 and DUMSYS-01 are neighbours" in out

    assert main([*argv, "--write"]) == 0
    after = inventory.read_text()
    assert "# A small hall for the discovery test" in after and "# ---- 机房" in after
    assert after.startswith(before.rstrip("\n"))  # the person's lines untouched, additions after
    loaded = load_inventory(inventory)
    assert len(loaded.devices) == 6
    capsys.readouterr()
    assert main(argv) == 0
    assert "nothing to change" in capsys.readouterr().out  # a second run proposes nothing new


def test_public_space_and_huge_scans_are_refused() -> None:
    with pytest.raises(DiscoveryError, match="public address space"):
        addresses(["8.8.8.0/30"], allow_public=False, max_hosts=4096)
    with pytest.raises(DiscoveryError, match="--max-hosts"):
        addresses(["127.0.0.0/16"], allow_public=False, max_hosts=4096)
    with pytest.raises(DiscoveryError, match="not a network"):
        addresses(["127.0.0.300/32"], allow_public=False, max_hosts=4096)
    assert addresses(["127.1.0.0/30", "127.1.0.1/32"], allow_public=False, max_hosts=8) == [
        "127.1.0.1", "127.1.0.2"]


def test_macs_from_octet_strings_and_bridge_indexes() -> None:
    assert mac_from_text("\x38\x91\xd5\x30\x75\x79") == "38:91:d5:30:75:79"
    assert mac_from_text("") is None
    assert mac_from_index("1.40.41.134.84.79.69") == APC_MAC
    assert mac_from_index("1.2.3") is None


def test_inventory_import_reads_a_gbk_spreadsheet_with_chinese_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "# the hall\nsite: {name: 测试大厅, timezone: Asia/Shanghai}\n"
        "credentials:\n  v2c: {version: 2c, community: \"${HM_TEST_RO:-public-ro}\"}\ndevices:\n"
        "  - {id: sw-1f, name: 一楼交换机, class: switch, address: 127.78.0.1, credential: v2c}\n",
        encoding="utf-8")
    sheet = tmp_path / "assets.csv"
    sheet.write_bytes(
        "设备编号,设备名称,设备类型,IP地址,楼层,区域,窗口,责任部门,上级设备\r\n"
        "kiosk-1f-01,一楼自助终端1号,自助终端,127.78.0.11,1,一楼大厅,,不动产中心,sw-1f\r\n"
        ",叫号屏,queue_display,127.78.0.12,1,一楼大厅,3,,sw-1f\r\n"
        "sw-dup,重复的交换机,switch,127.78.0.1,1,,,,\r\n".encode("gb18030"))
    assert main(["inventory", "import", str(sheet), "--inventory", str(inventory),
                 "--credential", "v2c", "--write"]) == 0
    out = capsys.readouterr().out
    assert "read as gb18030; 2 new devices" in out
    loaded = load_inventory(inventory)
    kiosk = loaded.device("kiosk-1f-01")
    assert (kiosk.class_, kiosk.owner, kiosk.parent, kiosk.location.floor, kiosk.credential) == (
        "kiosk", "不动产中心", "sw-1f", 1, "v2c")
    assert loaded.device("queue-display-127-78-0-12").location.window == 3
    assert "# the hall" in inventory.read_text()


def test_inventory_import_names_every_bad_row(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("site: {name: 测试大厅, timezone: Asia/Shanghai}\n", encoding="utf-8")
    sheet = tmp_path / "assets.csv"
    sheet.write_text("名称,类型,IP地址,楼层\n打印机,printr,127.78.0.21,一楼\n叫号屏,queue_display,"
                     "not-an-ip,1\n", encoding="utf-8-sig")
    assert main(["inventory", "import", str(sheet), "--inventory", str(inventory)]) == 1
    err = capsys.readouterr().err
    assert "assets.csv:2: class: 'printr' is not a class (did you mean 'printer'?)" in err
    assert "assets.csv:2: floor: '一楼' is not a floor number" in err
    assert "assets.csv:3: address: 'not-an-ip' is not an IP address" in err


def test_devices_that_did_not_answer_are_listed_never_deleted(tmp_path: Path) -> None:
    """In a namespace of ours only two of 127.89.0.0/29 answer; the inventory's device at .5
    does not (absent as on a LAN: no neighbour answers). It is listed, and stays in the file."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        missing_tool("root and iproute2 are needed for a namespace")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "site: {name: 测试大厅, timezone: Asia/Shanghai}\ndevices:\n"
        "  - {id: phone-1, name: 一号电话, class: ip_phone, address: 127.89.0.2}\n"
        "  - {id: phone-gone, name: 搬走的电话, class: ip_phone, address: 127.89.0.5}\n",
        encoding="utf-8")
    before = inventory.read_text(encoding="utf-8")
    with sparse_namespace("127.89.0.0/29", ["127.89.0.2", "127.89.0.3"]) as ns:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "monitor.cli", "discover",
             "127.89.0.0/29", "--inventory", str(inventory), "--timeout", "0.5", "--write"],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scanned 6 addresses: 0 identified, 2 answered ping only, 1 inventory devices did " \
        "not answer" in proc.stdout
    assert "did not answer (kept; remove by hand if it is gone): phone-gone 127.89.0.5" in \
        proc.stdout
    assert "answered ping only (not proposed): 127.89.0.3" in proc.stdout
    assert inventory.read_text(encoding="utf-8") == before  # nothing deleted, nothing to add
