"""``hallmon users add|passwd|disable|enable|list``: the accounts that sign in to the pages.

Passwords are read from the terminal (twice, not echoed) or, with ``--password-stdin``, as the
first line of standard input (scripts); never from the command line, where ``ps`` shows them.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from monitor.cli.tickets import DEFAULT_DB
from monitor.store import Store, StoreError
from monitor.store.users import ROLES


def add_users_commands(subparsers: Any) -> None:
    users = subparsers.add_parser("users", help="sign-in accounts of the pages (/tickets...)")
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=os.environ.get("HALLMON_DB", DEFAULT_DB),
                       help="store URL (sqlite:///path or postgresql://...); env HALLMON_DB")
        p.set_defaults(func=run_users)

    add = sub.add_parser("add", help="add an account")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    common(add)
    passwd = sub.add_parser("passwd", help="set a new password (ends the user's sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    common(passwd)
    for verb, text in (("disable", "disable an account (ends its sessions)"),
                       ("enable", "enable a disabled account")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("name")
        common(p)
    role = sub.add_parser("role", help="change an account's role (ends its sessions)")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    common(role)
    common(sub.add_parser("list", help="list accounts"))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise StoreError("the two passwords differ")
    return first


def run_users(args: argparse.Namespace) -> int:
    try:
        store = Store(args.db)
    except StoreError as exc:
        print(f"hallmon: {exc}", file=sys.stderr)
        return 2
    try:
        action = args.users_command
        if action == "list":
            for u in store.users():
                print(f"{u.name}\t{u.role}\t{'disabled' if u.disabled else 'active'}")
            return 0
        if action == "add":
            user = store.add_user(args.name, args.role, _password(args))
        elif action == "passwd":
            user = store.set_password(args.name, _password(args))
        elif action == "role":
            user = store.set_role(args.name, args.role)
        else:
            user = store.set_disabled(args.name, action == "disable")
        state = "disabled" if user.disabled else "active"
        print(f"{action}: {user.name} ({user.role}, {state})")
        return 0
    except (StoreError, EOFError) as exc:
        print(f"hallmon users {args.users_command}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
