"""``hallmon discover`` and ``hallmon inventory import``: propose inventory entries, as a diff.

Both print what they found and the unified diff of inventory.yaml; ``--write`` writes it, and
only if the new file passes ``hallmon check``. Nothing is ever deleted: devices that did not
answer are listed for a person to decide.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

from monitor.inventory import Inventory
from monitor.inventory.assets import snmp_checks
from monitor.inventory.edit import Addition, Change, apply, diff, write_checked
from monitor.inventory.load import InventoryError, load_inventory


def add_discover_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "discover",
        help="sweep networks, identify devices by SNMP/TCP, propose inventory additions",
        description="ICMP sweep, then SNMP sysObjectID/sysDescr/sysName with each credential, "
        "TCP fingerprints, LLDP and bridge tables for parents. Prints a diff of the inventory; "
        "--write applies it if the result passes 'hallmon check'.",
    )
    p.add_argument("networks", nargs="+", metavar="CIDR")
    p.add_argument("--credential", action="append", default=[], metavar="NAME",
                   help="inventory credential to try (repeatable; default: all of them)")
    p.add_argument("--inventory", default="inventory.yaml")
    p.add_argument("--snmp-port", type=int, default=161)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    p.add_argument("--max-hosts", type=int, default=4096)
    p.add_argument("--allow-public", action="store_true",
                   help="allow scanning public address space (refused otherwise)")
    p.add_argument("--write", action="store_true", help="write the proposed inventory")
    p.set_defaults(func=run_discover)

    inv = subparsers.add_parser("inventory", help="inventory tools")
    isub = inv.add_subparsers(dest="inventory_command", metavar="COMMAND", required=True)
    imp = isub.add_parser(
        "import", help="propose inventory entries from the asset spreadsheet (CSV/XLSX)",
        description="Columns named in the first row, English or Chinese (编号, 名称, 设备类型, "
        "IP地址, 楼层, 区域, 窗口, 责任部门, 上级设备). Rows whose address the inventory "
        "already has are skipped.")
    imp.add_argument("file", type=Path)
    imp.add_argument("--inventory", default="inventory.yaml")
    imp.add_argument("--credential", metavar="NAME",
                     help="credential for SNMP-polled devices whose row names none")
    imp.add_argument("--write", action="store_true")
    imp.set_defaults(func=run_import)


def _load(path: str) -> tuple[Inventory, str] | None:
    try:
        return load_inventory(path), Path(path).read_text(encoding="utf-8")
    except InventoryError as exc:
        print(exc, file=sys.stderr)
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def _finish(path: str, old: str, new: str, write: bool) -> int:
    if new == old:
        print("nothing to change")
        return 0
    print(diff(old, new, path), end="")
    if not write:
        print("\n(dry run: nothing written; --write applies it)")
        return 0
    try:
        write_checked(Path(path), new)
    except InventoryError as exc:
        print(f"not written, the result would not pass 'hallmon check':\n{exc}", file=sys.stderr)
        return 1
    print(f"\nwritten: {path}")
    return 0


def run_discover(args: argparse.Namespace) -> int:
    from monitor.discover import DiscoveryError, discover
    from probes import close_all

    loaded = _load(args.inventory)
    if loaded is None:
        return 1
    inventory, old = loaded

    async def go() -> Any:
        try:
            return await discover(
                args.networks, inventory, args.credential, port=args.snmp_port,
                wait=args.timeout, allow_public=args.allow_public, max_hosts=args.max_hosts)
        finally:
            await close_all()

    try:
        proposal = asyncio.run(go())
    except DiscoveryError as exc:
        print(f"hallmon discover: {exc}", file=sys.stderr)
        return 2
    known = {d.address: d for d in inventory.devices}
    ids = {d.id for d in inventory.devices}
    id_of = {d.address: d.id for d in inventory.devices}
    for h in proposal.hosts:  # ids first: parents may be new devices too
        if h.address not in known:
            label = _slug(h.sys_name) or h.address.replace(".", "-")
            base = f"{h.class_}-{label}".replace("_", "-")
            new_id, n = base[:63], 2
            while new_id in ids:
                new_id, n = f"{base[:60]}-{n}", n + 1
            ids.add(new_id)
            id_of[h.address] = new_id
    additions, changes = [], []
    today = date.today().isoformat()
    print(f"scanned {proposal.scanned} addresses: {len(proposal.hosts)} identified, "
          f"{len(proposal.alive_unidentified)} answered ping only, "
          f"{len(proposal.vanished)} inventory devices did not answer")
    for h in proposal.hosts:
        parent = id_of.get(h.parent) if h.parent else None
        if h.address in known:
            d = known[h.address]
            if parent and parent != d.parent and parent != d.id:
                changes.append(Change(d.id, "parent", parent, h.parent_reason))
                print(f"  change {d.id}: parent {d.parent} -> {parent} ({h.parent_reason})")
            continue
        entry: dict[str, Any] = {"id": id_of[h.address],
                                 "name": h.sys_name or f"{h.class_} {h.address}",
                                 "class": h.class_, "address": h.address}
        if parent:
            entry["parent"] = parent
        why = f"discovered {today}: class {h.class_} ({h.reason})"
        if h.credential:
            entry["credential"] = h.credential
            if args.snmp_port != 161:
                entry["snmp_port"] = args.snmp_port
        else:  # the class polls SNMP but no credential answered: those checks off, said why
            off = snmp_checks(inventory, h.class_ or "")
            if off:
                entry["checks"] = {name: {"enabled": False} for name in off}
                why += f"; no credential answered SNMP, so {', '.join(off)} off"
        if h.parent_reason:
            why += f"; parent {parent}: {h.parent_reason}"
        additions.append(Addition(entry, why))
        print(f"  new {entry['id']} {h.address}: {why}")
    for address in proposal.alive_unidentified:
        print(f"  answered ping only (not proposed): {address}")
    for d in proposal.vanished:
        print(f"  did not answer (kept; remove by hand if it is gone): {d.id} {d.address}")
    return _finish(args.inventory, old, apply(old, additions, changes), args.write)


def run_import(args: argparse.Namespace) -> int:
    from monitor.inventory.assets import AssetError, entries

    loaded = _load(args.inventory)
    if loaded is None:
        return 1
    inventory, old = loaded
    try:
        if args.credential and args.credential not in inventory.credentials:
            print(f"unknown credential {args.credential!r}", file=sys.stderr)
            return 1
        rows, used = entries(args.file, inventory, args.credential)
    except (AssetError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.file}: read as {used}; {len(rows)} new devices")
    additions = [Addition(row, f"imported from {args.file.name}") for row in rows]
    return _finish(args.inventory, old, apply(old, additions), args.write)
