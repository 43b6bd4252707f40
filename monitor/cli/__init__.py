"""The ``hallmon`` command: one argparse parser, one sub-command group per area.

Each area exposes ``add_<area>_commands(subparsers)``, which adds its sub-commands and sets
``func`` (taking the parsed ``args``, returning the exit code) with ``parser.set_defaults``.
Heavy imports happen inside ``func`` so that ``hallmon check`` stays quick.

Exit codes: 0 fine, 1 the inventory (or the job) has problems, 2 wrong usage (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitor.inventory import Inventory, SnmpCredential
from monitor.inventory.load import InventoryError, load_inventory, schema_json

Subparsers = Any  # argparse's _SubParsersAction is private; this is what add_*_commands receive
DEFAULT_INVENTORY = "inventory.yaml"


# --------------------------------------------------------------------------------------------
# check


def add_check_commands(subparsers: Subparsers) -> None:
    check = subparsers.add_parser(
        "check",
        help="validate an inventory and print a summary (exit 1 on problems)",
        description="Validate an inventory file: print a summary, or every problem as "
        "FILE:LINE:COL: PATH: MESSAGE, and exit 1.",
    )
    check.add_argument("file", nargs="?", default=DEFAULT_INVENTORY, help="default: %(default)s")
    check.add_argument("--lang", choices=["en", "zh"], default="en",
                       help="language of the problems (the site's: zh for 中文)")
    check.set_defaults(func=run_check)

    schema = subparsers.add_parser(
        "schema",
        help="write the inventory's JSON Schema (for editors)",
        description="Write the JSON Schema of inventory.yaml; editors pick it up through the "
        "'# yaml-language-server: $schema=./inventory.schema.json' first line.",
    )
    schema.add_argument(
        "-o", "--output", default="inventory.schema.json", help="'-' for stdout (%(default)s)"
    )
    schema.set_defaults(func=run_schema)


def run_check(args: argparse.Namespace) -> int:
    try:
        inventory = load_inventory(args.file, lang=args.lang)
    except InventoryError as exc:
        for problem in exc.problems:
            print(problem.describe(), file=sys.stderr)
        n = len(exc.problems)
        if args.lang == "zh":
            print(f"{args.file}: {n} 个问题", file=sys.stderr)
        else:
            print(f"{args.file}: {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    print(summary(inventory))
    return 0


def run_schema(args: argparse.Namespace) -> int:
    text = schema_json()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


def _credential_line(name: str, cred: SnmpCredential) -> str:
    # Secrets are never shown, resolved or not: only that there is one.
    if cred.version == "3":
        return (
            f"  {name}: SNMPv3 user={cred.user} auth={cred.auth} auth_key=<secret> "
            f"priv={cred.priv} priv_key=<secret> port={cred.port}"
        )
    return f"  {name}: SNMPv{cred.version} community=<secret> port={cred.port}"


def summary(inventory: Inventory) -> str:
    """What staff want to see after an edit: counts by class and floor, checks, credentials."""
    devices = inventory.devices
    by_class = Counter(d.class_ for d in devices)
    by_floor = Counter(
        f"{d.location.floor}F" if d.location.floor is not None else "no floor" for d in devices
    )
    checks = list(inventory.all_checks())
    by_kind = Counter(c.kind for c in checks)
    site = inventory.site
    lines = [
        f"site: {site.name} ({site.timezone})",
        f"devices: {len(devices)}",
        f"  by class: {_counts(by_class)}",
        f"  by floor: {_counts(by_floor)}",
        f"checks: {len(checks)} ({_counts(by_kind)})",
        f"credentials: {len(inventory.credentials)}",
        *(_credential_line(n, c) for n, c in sorted(inventory.credentials.items())),
        f"maintenance windows: {len(inventory.maintenance)}",
        f"ticket auto-rules: {len(inventory.tickets.auto)}",
    ]
    if inventory.simulation is not None:
        lines.append(f"simulation faults: {len(inventory.simulation.faults)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The parser

# Every area's sub-commands. The lead adds the others here, in this order, as they land:
#   add_run_commands (run), add_demo_commands (demo), add_probe_commands (probe),
#   add_tickets_commands (tickets), add_report_commands (report), add_notify_commands (notify).
def add_run_commands(subparsers: Subparsers) -> None:
    from monitor.cli.run import add_run_commands as add

    add(subparsers)


def add_notify_commands(subparsers: Subparsers) -> None:
    from monitor.cli.notify import add_notify_commands as add

    add(subparsers, load=lambda path: load_inventory(path).notifications)


def add_tickets_commands(subparsers: Subparsers) -> None:
    from monitor.cli.tickets import add_report_command, add_tickets_commands

    add_tickets_commands(subparsers)
    add_report_command(subparsers)


def add_discover_commands(subparsers: Subparsers) -> None:
    from monitor.cli.discover import add_discover_commands as add

    add(subparsers)


def add_users_commands(subparsers: Subparsers) -> None:
    from monitor.cli.users import add_users_commands as add

    add(subparsers)


def add_store_commands(subparsers: Subparsers) -> None:
    from monitor.cli.store import add_store_commands as add

    add(subparsers)


COMMAND_GROUPS: list[Callable[[Subparsers], None]] = [
    add_check_commands,
    add_run_commands,
    add_tickets_commands,
    add_notify_commands,
    add_discover_commands,
    add_users_commands,
    add_store_commands,
    # LEAD: add the other areas' add_*_commands here.
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallmon",
        description="Network and device monitoring and maintenance log for a service hall.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`hallmon report schedule ... | head`): stop quietly, as cat does.
        # stdout goes to /dev/null so the interpreter's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code

