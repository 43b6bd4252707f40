"""Discovery: find the devices of a subnet, guess what they are and where they hang, propose.

``hallmon discover CIDR...`` runs, in order:

1. an ICMP sweep of every address (the native engine, one packet, paced by it);
2. on every answer, an SNMP GET of sysDescr, sysObjectID, sysName (plus a few vendor OIDs for
   devices that do not fill the system group, e.g. Hikvision cameras) with each credential in
   turn, the first that answers wins;
3. on SNMP devices, walks of ifPhysAddress (their MACs) and, on switches and routers, of the
   LLDP neighbour table and the bridge forwarding tables (BRIDGE-MIB and Q-BRIDGE-MIB);
4. TCP fingerprints where SNMP says nothing: RTSP 554 (a camera), raw printing 9100 (a printer);
5. the class from a rule table (enterprise number, sysDescr pattern, vendor OID), which the
   inventory's ``discovery.rules`` extend (theirs first);
6. the parent: switches are joined by their LLDP neighbour tables and hung from the root (the
   inventory's switch without a parent, else the switch with most neighbours); an end device
   hangs from the switch that learned its MAC on the port with the fewest MACs (its access
   port).

Nothing is written here: the result is a :class:`Proposal` that the CLI turns into a diff of the
inventory (comments and order kept) and writes only with ``--write``. Devices of the inventory
inside the scanned networks that did not answer are listed, never deleted.

Polite by construction: private and loopback networks only unless ``allow_public``; at most
``max_hosts`` addresses; SNMP and TCP with bounded concurrency and per-request timeouts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor.checks import snmp_auth
from monitor.inventory import Device, DiscoveryRule, Inventory
from probes import icmp, tcp
from probes import snmp as snmp_probe
from probes.result import ProbeResult

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
HIK_MANUFACTURER = "1.3.6.1.4.1.39165.1.6.0"  # HIK-DEVICE-MIB: "Hikvision" on their cameras
IF_PHYS_ADDRESS = "1.3.6.1.2.1.2.2.1.6"
LLDP_REM_CHASSIS = "1.0.8802.1.1.2.1.4.1.1.5"
LLDP_REM_SYS_NAME = "1.0.8802.1.1.2.1.4.1.1.9"
DOT1D_FDB_PORT = "1.3.6.1.2.1.17.4.3.1.2"  # index: the MAC's six bytes
DOT1Q_FDB_PORT = "1.3.6.1.2.1.17.7.1.2.2.1.2"  # index: VLAN, then the MAC's six bytes

TCP_FINGERPRINTS: tuple[tuple[int, str, str], ...] = (
    (554, "camera", "answers RTSP on TCP 554"),
    (9100, "printer", "answers raw printing on TCP 9100"),
)

# Built-in rules, most specific first: (enterprise OID prefix or "", sysDescr regex or "", class).
# The enterprise numbers are IANA's; the descriptions are what these vendors' agents say.
BUILTIN_RULES: tuple[DiscoveryRule, ...] = tuple(
    DiscoveryRule.model_validate({"object_id": oid, "descr": descr, "class": cls, "vendor": vendor})
    for oid, descr, cls, vendor in (
        ("1.3.6.1.4.1.39165", "", "camera_hikvision", "Hikvision"),
        ("1.3.6.1.4.1.50001", "", "nvr", "Hikvision"),
        ("", r"(?i)hikvision.*(nvr|video recorder)|\bDS-[79]\d{3}", "nvr", "Hikvision"),
        ("", r"(?i)hikvision", "camera_hikvision", "Hikvision"),
        ("1.3.6.1.4.1.1004849", r"(?i)nvr|recorder", "nvr", "Dahua"),
        ("1.3.6.1.4.1.1004849", "", "camera", "Dahua"),
        ("", r"(?i)\buniview\b|\bIPC\d", "camera", "Uniview"),
        ("", r"(?i)novastar", "led_controller", "NovaStar"),
        ("1.3.6.1.4.1.2011.2.23", "", "switch", "Huawei"),
        ("1.3.6.1.4.1.2011.2.279", "", "switch", "Huawei"),
        ("1.3.6.1.4.1.25506", "", "switch", "H3C"),
        ("1.3.6.1.4.1.4881", "", "switch", "Ruijie"),
        ("1.3.6.1.4.1.11.2.3.7.11", "", "switch", "HPE ProCurve"),
        ("1.3.6.1.4.1.11", r"(?i)laserjet|jetdirect|officejet", "printer", "HP"),
        ("1.3.6.1.4.1.1602", "", "printer", "Canon"),
        ("1.3.6.1.4.1.1347", "", "printer", "Kyocera"),
        ("1.3.6.1.4.1.318", "", "ups", "APC"),
        ("1.3.6.1.4.1.534", "", "ups", "Eaton"),
        ("1.3.6.1.4.1.705", "", "ups", "Eaton/MGE"),
        ("", r"(?i)santak|eaton", "ups", "Santak/Eaton"),
        ("1.3.6.1.4.1.9", r"(?i)switch|catalyst|C3750|C3560", "switch", "Cisco"),
        ("1.3.6.1.4.1.9", "", "router", "Cisco"),
        ("1.3.6.1.4.1.311", "", "kiosk", "Microsoft Windows"),
    )
)

SWITCHING = frozenset({"switch", "router"})


@dataclass
class Host:
    """What one answering address told us."""

    address: str
    credential: str | None = None
    descr: str = ""
    object_id: str = ""
    sys_name: str = ""
    vendor_hint: str = ""
    open_ports: tuple[int, ...] = ()
    macs: set[str] = field(default_factory=set)
    neighbours: set[str] = field(default_factory=set)  # LLDP: remote sysName or chassis MAC
    fdb: dict[str, int] = field(default_factory=dict)  # MAC -> bridge port
    class_: str | None = None
    reason: str = ""
    parent: str | None = None  # an address (a found host) or an inventory device id
    parent_reason: str = ""


@dataclass
class Proposal:
    hosts: list[Host]  # answered and identified
    alive_unidentified: list[str]  # answered ping, nothing else said what it is
    vanished: list[Device]  # inventory devices inside the networks that did not answer
    scanned: int = 0


class DiscoveryError(ValueError):
    """Bad request: a network too large, public without leave, an unknown credential."""


def addresses(networks: Sequence[str], *, allow_public: bool, max_hosts: int) -> list[str]:
    out: list[str] = []
    for cidr in networks:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise DiscoveryError(f"{cidr!r} is not a network (CIDR such as 127.0.0.0/28)") from exc
        if not allow_public and not (net.is_private or net.is_loopback):
            raise DiscoveryError(
                f"{net} is public address space: discovery scans only private and loopback "
                "networks unless --allow-public is given"
            )
        hosts = [str(a) for a in (net.hosts() if net.num_addresses > 2 else net)]
        out += hosts
        if len(out) > max_hosts:
            raise DiscoveryError(
                f"{len(out)}+ addresses to scan, more than --max-hosts {max_hosts}: "
                "scan smaller networks or raise the limit"
            )
    return list(dict.fromkeys(out))


def classify(host: Host, rules: Iterable[DiscoveryRule]) -> None:
    """Set host.class_ and host.reason from the first rule that matches."""
    for rule in rules:
        oid_ok = not rule.object_id or (
            host.object_id == rule.object_id or host.object_id.startswith(rule.object_id + ".")
        )
        text = f"{host.descr} {host.vendor_hint}".strip()
        descr_ok = not rule.descr or re.search(rule.descr, text) is not None
        if oid_ok and descr_ok and (rule.object_id or rule.descr):
            why = []
            if rule.object_id:
                why.append(f"sysObjectID {host.object_id} is under {rule.object_id}")
            if rule.descr:
                shown = text if len(text) <= 60 else text[:57] + "..."
                why.append(f"description {shown!r} matches /{rule.descr}/")
            host.class_ = rule.class_
            host.reason = f"{rule.vendor or 'rule'}: " + " and ".join(why)
            return
    for port, cls, said in TCP_FINGERPRINTS:
        if port in host.open_ports:
            host.class_, host.reason = cls, said
            return


def _mac(raw: bytes) -> str | None:
    return ":".join(f"{b:02x}" for b in raw) if len(raw) == 6 and any(raw) else None


def mac_from_text(text: str) -> str | None:
    """An OctetString MAC as the SNMP probe returns it (UTF-8 else Latin-1, trailing NULs cut)."""
    for codec in ("utf-8", "latin-1"):
        try:
            raw = text.encode(codec)
        except UnicodeEncodeError:
            continue
        if len(raw) <= 6:
            return _mac(raw.ljust(6, b"\0"))
    return None


def mac_from_index(index: str) -> str | None:
    parts = index.split(".")[-6:]
    if len(parts) != 6 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return _mac(bytes(int(p) for p in parts))


async def _snmp(address: str, auth: snmp_probe.SnmpAuth, port: int, wait: float,
                oids: Sequence[tuple[str, str]] = (), walks: Sequence[tuple[str, str]] = (),
                ) -> ProbeResult:
    config = snmp_probe.SnmpConfig(
        auth=auth, port=port, timeout=wait, retries=1,
        oids=tuple(snmp_probe.OidSpec(n, o, parse="text") for n, o in oids),
        walks=tuple(snmp_probe.OidSpec(n, o, parse="text") for n, o in walks),
    )
    return await snmp_probe.probe(address, config)


async def identify(host: Host, credentials: Mapping[str, snmp_probe.SnmpAuth], port: int,
                   wait: float) -> None:
    """SNMP system group with each credential in turn; the first that answers is the device's."""
    for name, auth in credentials.items():
        result = await _snmp(host.address, auth, port, wait, oids=(
            ("descr", SYS_DESCR), ("object_id", SYS_OBJECT_ID), ("name", SYS_NAME),
            ("hik", HIK_MANUFACTURER)))
        if not result.ok:
            continue
        host.credential = name
        host.descr = result.texts.get("descr", "")
        host.object_id = result.texts.get("object_id", "").lstrip(".")
        host.sys_name = result.texts.get("name", "")
        host.vendor_hint = result.texts.get("hik", "")
        macs = await _snmp(host.address, auth, port, wait, walks=(("mac", IF_PHYS_ADDRESS),))
        host.macs = {m for t in macs.texts.values() if (m := mac_from_text(t))}
        return


async def tables(host: Host, auth: snmp_probe.SnmpAuth, port: int, wait: float) -> None:
    """A switch's LLDP neighbours and forwarding table."""
    lldp = await _snmp(host.address, auth, port, wait,
                       walks=(("name", LLDP_REM_SYS_NAME), ("chassis", LLDP_REM_CHASSIS)))
    for key, text in lldp.texts.items():
        if key.startswith("name.") and text:
            host.neighbours.add(text)
        elif key.startswith("chassis.") and (mac := mac_from_text(text)):
            host.neighbours.add(mac)
    for oid in (DOT1D_FDB_PORT, DOT1Q_FDB_PORT):
        fdb = await _snmp(host.address, auth, port, wait, walks=(("fdb", oid),))
        for key, text in fdb.texts.items():
            mac = mac_from_index(key.partition(".")[2])
            if mac and text.isdigit():
                host.fdb[mac] = int(text)


async def fingerprint(host: Host, wait: float) -> None:
    found = []
    for port, _cls, _why in TCP_FINGERPRINTS:
        result = await tcp.probe(host.address, tcp.TcpConfig(port=port, timeout=wait))
        if result.ok:
            found.append(port)
    host.open_ports = tuple(found)


def assign_parents(hosts: Sequence[Host], inventory: Inventory) -> None:
    """Switches by LLDP from a root; end devices by the access port that learned their MAC."""
    switches = [h for h in hosts if h.class_ in SWITCHING]
    known = {d.address: d for d in inventory.devices}
    # Who is who on LLDP: a switch is named by its sysName and by its MACs.
    names: dict[str, Host] = {}
    for s in switches:
        for label in (s.sys_name, *s.macs):
            if label:
                names[label] = s
    links: dict[str, set[str]] = {s.address: set() for s in switches}
    for s in switches:
        for label in s.neighbours:
            other = names.get(label)
            if other is not None and other is not s:
                links[s.address].add(other.address)
                links[other.address].add(s.address)
    roots = [s for s in switches if s.address in known and known[s.address].parent is None]
    by_links = sorted(switches, key=lambda s: (-len(links[s.address]), s.address))
    pending = [roots[0] if roots else by_links[0]] if switches else []
    seen = {p.address for p in pending}
    while pending:
        here = pending.pop(0)
        for addr in sorted(links[here.address] - seen):
            child = next(s for s in switches if s.address == addr)
            child.parent = here.address
            child.parent_reason = (
                f"LLDP: {here.sys_name or here.address} and {child.sys_name or child.address} "
                f"are neighbours; {here.address} is nearer the root")
            seen.add(addr)
            pending.append(child)
    for h in hosts:
        if h.class_ in SWITCHING or not h.macs:
            continue
        best: tuple[int, str, Host, str, int] | None = None
        for s in switches:
            for mac in h.macs:
                port = s.fdb.get(mac)
                if port is None:
                    continue
                on_port = sum(1 for p in s.fdb.values() if p == port)
                if best is None or (on_port, s.address) < best[:2]:
                    best = (on_port, s.address, s, mac, port)
        if best is not None:
            on_port, _, s, mac, port = best
            h.parent = s.address
            h.parent_reason = (f"MAC {mac} learned on {s.sys_name or s.address} port {port} "
                               f"({on_port} MAC{'s' if on_port != 1 else ''} on that port)")


async def discover(
    networks: Sequence[str], inventory: Inventory, credential_names: Sequence[str], *,
    port: int = 161, wait: float = 1.0, concurrency: int = 32, allow_public: bool = False,
    max_hosts: int = 4096,
) -> Proposal:
    targets = addresses(networks, allow_public=allow_public, max_hosts=max_hosts)
    creds: dict[str, snmp_probe.SnmpAuth] = {}
    for name in credential_names or list(inventory.credentials):
        if name not in inventory.credentials:
            raise DiscoveryError(f"unknown credential {name!r} (the inventory has: "
                                 f"{', '.join(sorted(inventory.credentials)) or 'none'})")
        creds[name] = snmp_auth(inventory.credentials[name])
    swept = await icmp.sweep(targets, icmp.IcmpConfig(packets=1, timeout=wait))
    alive = [Host(a) for a, r in zip(targets, swept, strict=True) if r.ok]
    gate = asyncio.Semaphore(concurrency)

    async def look(host: Host) -> None:
        async with gate:
            await identify(host, creds, port, wait)
            if host.credential is None:
                await fingerprint(host, wait)

    await asyncio.gather(*(look(h) for h in alive))
    rules = [*inventory.discovery.rules, *BUILTIN_RULES]
    for h in alive:
        classify(h, rules)
    found = [h for h in alive if h.class_ is not None]

    async def walk_tables(host: Host) -> None:
        async with gate:
            await tables(host, creds[host.credential or ""], port, wait)

    await asyncio.gather(*(walk_tables(h) for h in found
                           if h.class_ in SWITCHING and h.credential is not None))
    assign_parents(found, inventory)
    nets = [ipaddress.ip_network(n, strict=False) for n in networks]
    answered = {h.address for h in alive}
    vanished = [
        d for d in inventory.devices
        if _in(d.address, nets) and d.address not in answered
    ]
    unidentified = [h.address for h in alive if h.class_ is None]
    return Proposal(found, unidentified, vanished, len(targets))


def _in(address: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in nets)
