"""The inventory's ``notifications:`` section: channels (by name) and routes to them.

Secrets (robot webhook URLs carrying tokens, signing secrets, SMTP passwords) arrive here already
resolved from ``${ENV}`` / ``*_file`` references by the inventory loader, as SecretStr.

```yaml
notifications:
  language: zh
  link_base: http://127.0.0.1:10025/status/devices/   # device id is appended (the device page)
  channels:
    it-group: {type: dingtalk, webhook: ${HALLMON_DINGTALK_URL}, secret: ${HALLMON_DINGTALK_SECRET}}
    am: {type: alertmanager, url: http://127.0.0.1:9093}
  routes:
    - {name: it, channels: [it-group], group_wait: 30s, repeat_interval: 4h,
       quiet_hours: {start: "22:00", end: "07:30"}}
    - {name: kiosks, match: {classes: [kiosk]}, channels: [am]}
```
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """'30s', '5m', '4h', '1d', '250ms' -> seconds; numbers pass through as seconds."""
    if isinstance(value, str):
        found = _DURATION.match(value.strip())
        if not found:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 4h)")
        return float(found.group(1)) * _UNIT[found.group(2)]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _parse_clock(value: object) -> object:
    # YAML reads 22:00 unquoted as a sexagesimal int (1320): insist on a quoted "HH:MM".
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not a time of day: {value!r} (use \"HH:MM\")") from exc
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
ClockTime = Annotated[time, BeforeValidator(_parse_clock)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ChannelBase(_Strict):
    # Vendor robots allow 20 messages a minute; above that the engine aggregates instead of
    # dropping. 0 means no limit.
    rate_limit_per_minute: int = Field(default=0, ge=0)
    timeout: Seconds = 10.0


class DingTalkChannel(_ChannelBase):
    type: Literal["dingtalk"]
    webhook: SecretStr
    secret: SecretStr | None = None
    at_mobiles: list[str] = []
    rate_limit_per_minute: int = Field(default=20, ge=0)


class WeComChannel(_ChannelBase):
    type: Literal["wecom"]
    webhook: SecretStr
    msgtype: Literal["markdown", "text"] = "markdown"
    # Only the text message type can @ people by mobile number.
    mention_mobiles: list[str] = []
    rate_limit_per_minute: int = Field(default=20, ge=0)


class FeishuChannel(_ChannelBase):
    type: Literal["feishu"]
    webhook: SecretStr
    secret: SecretStr | None = None
    rate_limit_per_minute: int = Field(default=100, ge=0)


class EmailChannel(_ChannelBase):
    type: Literal["email"]
    host: str
    port: int = Field(default=465, gt=0, lt=65536)
    # tls: implicit TLS (SMTPS, port 465); starttls: upgrade on 587; none: loopback relays only.
    security: Literal["tls", "starttls", "none"] = "tls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    recipients: list[str] = Field(min_length=1)
    ca_file: str | None = None


class WebhookChannel(_ChannelBase):
    type: Literal["webhook"]
    url: SecretStr


class AlertmanagerChannel(_ChannelBase):
    type: Literal["alertmanager"]
    url: str
    # Alertmanager resolves an alert that is not re-sent before its endsAt: re-send well inside.
    resend_interval: Seconds = Field(default=60.0, gt=0, le=60.0)


Channel = Annotated[
    DingTalkChannel
    | WeComChannel
    | FeishuChannel
    | EmailChannel
    | WebhookChannel
    | AlertmanagerChannel,
    Field(discriminator="type"),
]


class RouteMatch(_Strict):
    """Empty lists match everything; a route matches when every non-empty list matches."""

    classes: list[str] = []
    floors: list[int] = []
    owners: list[str] = []
    devices: list[str] = []
    severities: list[Literal["critical", "warning"]] = []


class QuietHours(_Strict):
    """Messages created inside [start, end) in the site's timezone wait until ``end``."""

    start: ClockTime
    end: ClockTime
    timezone: str = "Asia/Shanghai"


class Route(_Strict):
    name: str = Field(min_length=1)
    match: RouteMatch = RouteMatch()
    channels: list[str] = Field(min_length=1)
    group_wait: Seconds = 30.0
    repeat_interval: Seconds = 4 * 3600.0
    send_resolved: bool = True
    quiet_hours: QuietHours | None = None


class Delivery(_Strict):
    """Outbox worker policy: exponential backoff from ``backoff_initial`` up to ``backoff_max``;
    after ``max_attempts`` failures the item is dead-lettered (shown by the API and metrics)."""

    max_attempts: int = Field(default=12, ge=1)
    backoff_initial: Seconds = 2.0
    backoff_max: Seconds = 300.0
    poll_interval: Seconds = 1.0


class Notifications(_Strict):
    language: Literal["zh", "en"] = "zh"
    link_base: str | None = None
    channels: dict[str, Channel] = {}
    routes: list[Route] = []
    delivery: Delivery = Delivery()

    @model_validator(mode="after")
    def _routes_name_known_channels(self) -> Notifications:
        problems = []
        names = [r.name for r in self.routes]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"duplicate route name {dup!r}")
        for i, route in enumerate(self.routes):
            for ch in route.channels:
                if ch not in self.channels:
                    problems.append(f"routes[{i}].channels: unknown channel {ch!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
