"""``hallmon notify test ROUTE``: send a test message through every channel of a route.

What staff run after adding a robot: it sends directly (not through the outbox) and reports
each channel's answer, so a wrong token or signing secret shows at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import yaml

from monitor.alerts import build_channels
from monitor.alerts.base import DeliveryResult
from monitor.alerts.message import Style, render_test
from monitor.inventory.notifications import Notifications

Loader = Callable[[Path], Notifications]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any) -> Any:
    """${ENV} references and ``*_file`` keys, as the inventory loader resolves them."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_file") and isinstance(item, str):
                out[key[: -len("_file")]] = Path(item).read_text().strip()
            else:
                out[key] = _expand(item)
        return out
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, str):
        def env(found: re.Match[str]) -> str:
            name = found.group(1)
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]
        return _ENV.sub(env, value)
    return value


def load_notifications(path: Path) -> Notifications:
    """Stand-alone reading of the inventory's ``notifications:`` section (the app passes the
    inventory loader instead)."""
    data = yaml.safe_load(path.read_text()) or {}
    return Notifications.model_validate(_expand(data.get("notifications") or {}))


def add_notify_commands(
    subparsers: argparse._SubParsersAction,
    load: Loader | None = None,
) -> None:
    notify = subparsers.add_parser("notify", help="notification tools")
    sub = notify.add_subparsers(dest="notify_command", required=True)
    test = sub.add_parser("test", help="send a test message through every channel of ROUTE")
    test.add_argument("route")
    # SUPPRESS: never clobber a global --inventory given to the main parser.
    test.add_argument("--inventory", type=Path, default=argparse.SUPPRESS,
                      help="inventory file (default: inventory.yaml)")
    test.set_defaults(func=lambda args: notify_test(args, load or load_notifications))


def notify_test(args: argparse.Namespace, load: Loader) -> int:
    path = Path(getattr(args, "inventory", None) or "inventory.yaml")
    try:
        config = load(path)
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}")
        return 2
    route = next((r for r in config.routes if r.name == args.route), None)
    if route is None:
        known = ", ".join(r.name for r in config.routes) or "none"
        print(f"unknown route {args.route!r} (routes: {known})")
        return 2
    results = asyncio.run(_send_test(config, route.name, route.channels))
    for name, result in results.items():
        print(f"{name}: {'ok' if result.ok else 'FAILED ' + (result.error or '')}")
    return 0 if all(r.ok for r in results.values()) else 1


async def _send_test(
    config: Notifications, route: str, channel_names: list[str]
) -> dict[str, DeliveryResult]:
    channels = build_channels(config)
    style = Style(config.language, ZoneInfo("Asia/Shanghai"), config.link_base)
    message = render_test(route, style, datetime.now(UTC))
    async with httpx.AsyncClient() as client:
        results = await asyncio.gather(
            *(channels[name].send(message, client) for name in channel_names))
    return dict(zip(channel_names, results, strict=True))
