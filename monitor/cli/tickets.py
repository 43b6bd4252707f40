"""`hallmon tickets ...` and `hallmon report ...` for technicians at a terminal.

Both work straight on the store (``--db``, default $HALLMON_DB or the daemon's default
sqlite:///state/hallmon.db): no daemon needs to be running. Each sub-command sets
``args.func(args) -> int`` (exit status).
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

from monitor.store import NewTicket, Store, StoreError, Ticket, sqlite_url
from monitor.store.csvio import parse_tickets_csv

DEFAULT_DB = sqlite_url()  # the daemon's default log (state/hallmon.db)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=os.environ.get("HALLMON_DB", DEFAULT_DB),
                   help="store URL (sqlite:///path or postgresql://...); env HALLMON_DB")
    p.add_argument("--timezone", default=None,
                   help="site timezone (IANA); default: the one the database remembers")


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


def _open_store(args: argparse.Namespace) -> Store | None:
    """The store, or None once the reason it cannot be opened is printed (the caller exits 2)."""
    try:
        return Store(args.db, timezone=args.timezone)
    except StoreError as exc:
        print(f"hallmon: {exc}", file=sys.stderr)
        return None


def _line(t: Ticket) -> str:
    return (f"#{t.id:<6} {t.status:<11} {t.category:<12} {t.opened_at:%Y-%m-%d %H:%M}Z "
            f"{t.device_id or '-':<16} {t.assignee or '-':<10} {t.summary}")


def _jsonable(obj: Any) -> Any:
    return obj.isoformat() if isinstance(obj, datetime | date) else str(obj)


def run_tickets(args: argparse.Namespace) -> int:
    actor = args.actor or os.environ.get("HALLMON_USER") or getpass.getuser()
    store = _open_store(args)
    if store is None:
        return 2
    try:
        return _dispatch(store, args, actor)
    except StoreError as exc:
        print(f"hallmon: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _dispatch(store: Store, args: argparse.Namespace, actor: str) -> int:
    cmd = args.tickets_command
    out = sys.stdout
    if cmd == "add":
        t = store.create_ticket(NewTicket(
            category=args.category, summary=args.summary, reporter=actor,
            device_id=args.device, device_class=getattr(args, "class"), floor=args.floor,
            owner=args.owner, assignee=args.assignee))
        print(_line(t), file=out)
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
                print(_line(t), file=out)
            print(f"({len(page)} of {total})", file=out)
    elif cmd == "show":
        t = store.get_ticket(args.id)
        events = store.ticket_events(args.id)
        if args.json:
            json.dump({"ticket": asdict(t), "events": [asdict(e) for e in events]}, out,
                      default=_jsonable, ensure_ascii=False, indent=1)
            print(file=out)
        else:
            print(_line(t), file=out)
            for e in events:
                change = f"{e.old or ''} -> {e.new or ''}" if e.kind != "comment" else ""
                print(f"  {e.at:%Y-%m-%d %H:%M}Z {e.actor:<10} {e.kind:<8} {change} "
                      f"{e.note or ''}".rstrip(), file=out)
    elif cmd in ("start", "resolve", "close", "reopen"):
        t = store.transition(args.id, args.to, actor, args.note,
                             resolution=getattr(args, "resolution", None))
        print(_line(t), file=out)
    elif cmd == "comment":
        store.comment(args.id, actor, args.text)
        print(f"#{args.id}: comment added", file=out)
    elif cmd == "import":
        rows = parse_tickets_csv(args.file.read_bytes(), store.tz, store.categories, actor)
        ids = store.import_tickets(rows, actor=actor)
        lock = store.last_import_lock_seconds or 0.0
        print(f"imported {len(ids)} tickets from {args.file} (write lock held {lock:.2f} s)",
              file=out)
    return 0


def add_report_command(subparsers: Any) -> None:
    """Register ``report`` on the main parser's sub-parsers."""
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
    _common(p)
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from monitor.reports import build_report, render

    if args.format == "xlsx" and args.output is None:
        print("hallmon: --format xlsx needs --output FILE", file=sys.stderr)
        return 2
    store = _open_store(args)
    if store is None:
        return 2
    try:
        day = args.date or datetime.now(store.tz).date()
        data = render(build_report(store, args.period, day), args.format, args.lang)
    finally:
        store.close()
    if args.output is None:
        sys.stdout.write(data.decode("utf-8"))
    else:
        args.output.write_bytes(data)
    return 0
