"""``hallmon store copy SRC DST``: the log from one database to another (SQLite -> PostgreSQL)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_store_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("store", help="the log's database")
    sub = p.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    cp = sub.add_parser(
        "copy", help="copy the whole log into a fresh database (SQLite -> PostgreSQL)",
        description="Copy every ticket, event, incident, window and outbox row from SRC to the "
        "empty database DST, ids kept. Stop the daemon first. Example: hallmon store copy "
        "sqlite:///state/hallmon.db postgresql://hallmon@db.example/hallmon",
    )
    cp.add_argument("src", help="SQLAlchemy URL of the store to copy (sqlite:///path)")
    cp.add_argument("dst", help="SQLAlchemy URL of a fresh database (postgresql://...)")
    cp.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from monitor.store import Store, StoreError
    from monitor.store.copy import copy_store

    try:
        src_url = make_url(args.src)
    except ArgumentError:
        print(f"hallmon store copy: source: not a database URL: {args.src!r}", file=sys.stderr)
        return 1
    if src_url.drivername.startswith("sqlite") and src_url.database not in (None, "", ":memory:"):
        if not Path(src_url.database).is_file():  # opening it would create an empty one
            print(f"hallmon store copy: source: no such SQLite file: {src_url.database}",
                  file=sys.stderr)
            return 1
    try:
        src = Store(args.src)
    except StoreError as exc:
        print(f"hallmon store copy: source: {exc}", file=sys.stderr)
        return 1
    try:
        dst = Store(args.dst)
    except StoreError as exc:
        src.close()
        print(f"hallmon store copy: destination: {exc}", file=sys.stderr)
        return 1
    try:
        counts = copy_store(src, dst, lambda table, n: print(f"{table}: {n} rows"))
    except StoreError as exc:
        print(f"hallmon store copy: {exc}", file=sys.stderr)
        return 1
    finally:
        src.close()
        dst.close()
    print(f"copied {sum(counts.values())} rows")
    return 0
