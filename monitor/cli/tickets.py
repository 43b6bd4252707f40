"""`hallmon tickets ...` and `hallmon report ...` for technicians at a terminal.

Both work straight on the store (``--db``, default $HALLMON_DB or the daemon's default
sqlite:///state/hallmon.db): no daemon needs to be running. Each sub-command sets
``args.func(args) -> int`` (exit status).

The inventory (``--inventory``, default ./inventory.yaml when present) gives the site's
timezone (``--timezone`` overrides it), the devices a manual ticket may name (with their class,
floor and owner), and the names, calendar and schedule of reports. Times are printed site-local.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from monitor.cli import DEFAULT_INVENTORY
from monitor.inventory import Inventory
from monitor.inventory.load import InventoryError, load_inventory
from monitor.store import InvalidValue, NewTicket, Store, StoreError, Ticket, sqlite_url
from monitor.store.csvio import decode_csv, parse_tickets_csv

DEFAULT_DB = sqlite_url()  # the daemon's default log (state/hallmon.db)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=os.environ.get("HALLMON_DB", DEFAULT_DB),
                   help="store URL (sqlite:///path or postgresql://...); env HALLMON_DB")
    p.add_argument("--inventory", type=Path, default=None,
                   help=f"the hall's inventory (default: ./{DEFAULT_INVENTORY} when present)")
    p.add_argument("--timezone", default=None,
                   help="site timezone (IANA); default: the inventory's site.timezone, else the "
                   "one the database remembers")
    p.add_argument("--change-timezone", action="store_true",
                   help="the site really moved: recompute every local day in --timezone")


def _inventory(args: argparse.Namespace) -> Inventory | None | bool:
    """The inventory named or found; None without one; False once its problems are printed."""
    path = args.inventory
    if path is None:
        path = Path(DEFAULT_INVENTORY)
        if not path.exists():
            return None
    try:
        return load_inventory(path)
    except InventoryError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return False
    except OSError as exc:
        print(f"hallmon: {path}: {exc.strerror}", file=sys.stderr)
        return False


def _actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as", dest="actor", default=None, help="who does this (default: login)")


def add_tickets_commands(subparsers: Any) -> None:
    """Register ``tickets`` on the main parser's sub-parsers."""
    p = subparsers.add_parser("tickets", help="maintenance tickets")
    sub = p.add_subparsers(dest="tickets_command", required=True, metavar="COMMAND")
    add = sub.add_parser("add", help="open a ticket")
    add.add_argument("--category", required=True)
    add.add_argument("--summary", required=True)
    for opt in ("device", "class", "floor", "owner", "assignee"):
        add.add_argument(f"--{opt}", default=None)
    lst = sub.add_parser("list", help="list tickets, newest first")
    for opt in ("status", "category", "device", "assignee"):
        lst.add_argument(f"--{opt}", default=None)
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--offset", type=int, default=0)
    lst.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one ticket with its audit trail")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    for name, to, helptext in [("start", "in_progress", "start work (device in maintenance)"),
                               ("resolve", "resolved", "mark fixed"),
                               ("close", "closed", "close"),
                               ("reopen", "open", "reopen")]:
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("id", type=int)
        sp.add_argument("--note", default=None)
        if name == "resolve":
            sp.add_argument("--resolution", required=True)
        sp.set_defaults(to=to)
    com = sub.add_parser("comment", help="add a comment")
    com.add_argument("id", type=int)
    com.add_argument("text")
    imp = sub.add_parser("import", help="import a CSV log (all rows or none)")
    imp.add_argument("file", type=Path)
    for sp in sub.choices.values():
        _common(sp)
        _actor(sp)
        sp.set_defaults(func=run_tickets)


def _open_store(args: argparse.Namespace, inventory: Inventory | None) -> Store | None:
    """The store, or None once the reason it cannot be opened is printed (the caller exits 2).
    Its zone: --timezone, else the inventory's, else the one it remembers."""
    zone = args.timezone or (inventory.site.timezone if inventory is not None else None)
    kwargs: dict[str, Any] = {}
    if inventory is not None:
        kwargs["categories"] = inventory.tickets.categories
        kwargs["site"] = inventory.site.id  # the hall's own tickets on a shared database
    try:
        return Store(args.db, timezone=zone, change_timezone=args.change_timezone, **kwargs)
    except StoreError as exc:
        print(f"hallmon: {exc}", file=sys.stderr)
        return None


def _inventory_and_store(args: argparse.Namespace) -> tuple[Inventory | None, Store] | int:
    """The inventory (if any) and the store opened in its zone; else the exit code, once the
    reason is printed (1: the inventory has problems, 2: the store cannot be opened)."""
    inventory = _inventory(args)
    if inventory is False:
        return 1
    assert not isinstance(inventory, bool)
    store = _open_store(args, inventory)
    return 2 if store is None else (inventory, store)


def _local(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _line(t: Ticket, tz: ZoneInfo) -> str:
    return (f"#{t.id:<6} {t.status:<11} {t.category:<12} {_local(t.opened_at, tz)} "
            f"{t.device_id or '-':<16} {t.assignee or '-':<10} {t.summary}")


def _jsonable(obj: Any) -> Any:
    return obj.isoformat() if isinstance(obj, datetime | date) else str(obj)


def run_tickets(args: argparse.Namespace) -> int:
    actor = args.actor or os.environ.get("HALLMON_USER") or getpass.getuser()
    opened = _inventory_and_store(args)
    if isinstance(opened, int):
        return opened
    inventory, store = opened
    try:
        return _dispatch(store, args, actor, inventory)
    except StoreError as exc:
        print(f"hallmon: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _dispatch(store: Store, args: argparse.Namespace, actor: str,
              inventory: Inventory | None) -> int:
    cmd = args.tickets_command
    out = sys.stdout
    tz = store.tz
    if cmd == "add":
        fields = {"device_class": getattr(args, "class"), "floor": args.floor,
                  "owner": args.owner}
        if args.device is not None and inventory is not None:
            try:
                known = inventory.ticket_device(args.device)
            except ValueError as exc:
                print(f"hallmon: --device: {exc}", file=sys.stderr)
                return 1
            fields = {k: fields[k] or v for k, v in known.items()}
        t = store.create_ticket(NewTicket(
            category=args.category, summary=args.summary, reporter=actor,
            device_id=args.device, assignee=args.assignee, **fields))
        print(_line(t, tz), file=out)
    elif cmd == "list":
        page, total = store.list_tickets(limit=args.limit, offset=args.offset,
                                         status=args.status, category=args.category,
                                         device_id=args.device, assignee=args.assignee)
        if args.json:
            json.dump({"total": total, "items": [asdict(t) for t in page]}, out,
                      default=_jsonable, ensure_ascii=False, indent=1)
            print(file=out)
        else:
            for t in page:
                print(_line(t, tz), file=out)
            print(f"({len(page)} of {total})", file=out)
    elif cmd == "show":
        t = store.get_ticket(args.id)
        events = store.ticket_events(args.id)
        if args.json:
            json.dump({"ticket": asdict(t), "events": [asdict(e) for e in events]}, out,
                      default=_jsonable, ensure_ascii=False, indent=1)
            print(file=out)
        else:
            print(_line(t, tz), file=out)
            for e in events:
                change = f"{e.old or ''} -> {e.new or ''}" if e.kind != "comment" else ""
                print(f"  {_local(e.at, tz)} {e.actor:<10} {e.kind:<8} {change} "
                      f"{e.note or ''}".rstrip(), file=out)
    elif cmd in ("start", "resolve", "close", "reopen"):
        t = store.transition(args.id, args.to, actor, args.note,
                             resolution=getattr(args, "resolution", None))
        print(_line(t, tz), file=out)
    elif cmd == "comment":
        store.comment(args.id, actor, args.text)
        print(f"#{args.id}: comment added", file=out)
    elif cmd == "import":
        if not store.timezone_recorded:
            print("hallmon: the site's timezone is unknown, and the CSV's times are site-local: "
                  "give --inventory (site.timezone) or --timezone", file=sys.stderr)
            return 1
        text, encoding = decode_csv(args.file.read_bytes())
        rows = parse_tickets_csv(text, store.tz, store.categories, actor)
        ids = store.import_tickets(rows, actor=actor)
        lock = store.last_import_lock_seconds or 0.0
        print(f"imported {len(ids)} tickets from {args.file} (read as {encoding}), write lock "
              f"held {lock:.2f} s", file=out)
    return 0


def add_report_command(subparsers: Any) -> None:
    """Register ``report`` (and ``report schedule``) on the main parser's sub-parsers."""
    from monitor.reports import FORMATS, LANGS

    p = subparsers.add_parser("report", help="maintenance report for a period")
    p.add_argument("--period", choices=("day", "week", "month", "quarter", "year"),
                   default="month")
    p.add_argument("--date", type=date.fromisoformat, default=None,
                   help="any day inside the period (default: today, site time)")
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument("--lang", choices=LANGS, default="zh")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="file to write (default: stdout; xlsx needs a file)")
    p.add_argument("--site", default=None,
                   help="another hall sharing the database, or '*' for every hall, each "
                        "with the profile its daemon registered (default: this hall)")
    _common(p)
    p.set_defaults(func=run_report)
    sub = p.add_subparsers(dest="report_command", metavar="COMMAND")
    sched = sub.add_parser("schedule", help="list the reports due between two dates (sends "
                           "nothing)")
    sched.add_argument("--from", dest="start", type=date.fromisoformat, required=True)
    sched.add_argument("--to", dest="end", type=date.fromisoformat, required=True)
    sched.add_argument("--inventory", type=Path, default=argparse.SUPPRESS,
                       help=f"default: ./{DEFAULT_INVENTORY} when present")
    sched.set_defaults(func=run_schedule)


def run_schedule(args: argparse.Namespace) -> int:
    """One line per report due: ``day 2021-01-04 due 2021-01-04 18:00 xlsx zh``."""
    from monitor.store.localtime import period_label
    from monitor.workdays import WorkCalendar, due_reports

    inventory = _inventory(args)
    if inventory is False:
        return 1
    if inventory is None:
        print(f"hallmon: the schedule needs the inventory (--inventory, or ./{DEFAULT_INVENTORY})",
              file=sys.stderr)
        return 1
    assert not isinstance(inventory, bool)
    if args.end < args.start:
        print("hallmon: --to is before --from", file=sys.stderr)
        return 2
    cal = WorkCalendar.of(inventory.site)
    unknown = cal.unknown_years(range(args.start.year, args.end.year + 1))
    if unknown:
        print(f"hallmon: the national calendar does not know {', '.join(map(str, unknown))} "
              "yet: Monday-Friday assumed there, plus site.calendar overrides", file=sys.stderr)
    for due in due_reports(inventory.reports, inventory.site, args.start, args.end, cal):
        s = due.schedule
        print(f"{due.period} {period_label(due.start, due.period)} due {due.at:%Y-%m-%d %H:%M} "
              f"{s.format} {s.language}" + (f" -> {s.route}" if s.route else ""))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from monitor.reports import Hall, render, report_for_site

    if args.format == "xlsx" and args.output is None:
        print("hallmon: --format xlsx needs --output FILE", file=sys.stderr)
        return 2
    opened = _inventory_and_store(args)
    if isinstance(opened, int):
        return opened
    inventory, store = opened
    try:
        day = args.date or datetime.now(store.tz).date()
        hall = Hall.of(inventory) if inventory is not None else None
        try:
            report = report_for_site(store, args.period, day, args.site, hall)
        except InvalidValue as exc:
            print(f"hallmon: --site: {exc}", file=sys.stderr)
            return 2
        data = render(report, args.format, args.lang)
    finally:
        store.close()
    if args.output is None:
        sys.stdout.write(data.decode("utf-8"))
    else:
        args.output.write_bytes(data)
    return 0
