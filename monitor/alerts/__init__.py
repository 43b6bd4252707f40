"""Notifications: engine (what to say, when), outbox delivery, and one module per channel.

A new channel touches its own file, its config model in monitor/inventory/notifications.py and
one line in ``CHANNELS`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.alerts.alertmanager import Alertmanager
from monitor.alerts.base import AlertEvent, Channel, DeliveryResult, Location, Message
from monitor.alerts.delivery import Delivery, Outbox, RetryPolicy
from monitor.alerts.dingtalk import DingTalk
from monitor.alerts.email import Email
from monitor.alerts.engine import Engine
from monitor.alerts.feishu import Feishu
from monitor.alerts.webhook import Webhook
from monitor.alerts.wecom import WeCom
from monitor.inventory.notifications import Notifications

CHANNELS: dict[str, Callable[[str, Any], Channel]] = {
    "dingtalk": DingTalk,
    "wecom": WeCom,
    "feishu": Feishu,
    "email": Email,
    "webhook": Webhook,
    "alertmanager": Alertmanager,
}


def build_channels(config: Notifications) -> dict[str, Channel]:
    return {name: CHANNELS[cfg.type](name, cfg) for name, cfg in config.channels.items()}


def retry_policy(config: Notifications) -> RetryPolicy:
    d = config.delivery
    return RetryPolicy(d.max_attempts, d.backoff_initial, d.backoff_max)


def rate_limits(config: Notifications) -> dict[str, int]:
    return {name: cfg.rate_limit_per_minute for name, cfg in config.channels.items()}


__all__ = [
    "CHANNELS",
    "AlertEvent",
    "Channel",
    "Delivery",
    "DeliveryResult",
    "Engine",
    "Location",
    "Message",
    "Outbox",
    "RetryPolicy",
    "build_channels",
    "rate_limits",
    "retry_policy",
]
