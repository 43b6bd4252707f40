"""The inventory: what the hall has, how to reach it and what to check.

``inventory.yaml`` is edited by hand. Loading is strict and explains itself: every problem in the
file is reported at once as ``inventory.yaml:LINE:COL: devices[4].parent: unknown device
'sw-1f-b'`` and never as a traceback (see :mod:`monitor.inventory.load`). The models here are the
single source of the JSON Schema (``hallmon schema``) and of the defaults.

Secrets are written only as references, ``${ENV}`` (optionally ``${ENV:-default}``) or a
``*_file`` sibling key, resolved at load time and held as :class:`~pydantic.SecretStr`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from monitor.inventory.notifications import Notifications
from monitor.inventory.profiles import PROFILES

# --------------------------------------------------------------------------------------------
# Scalar types


class StrictModel(BaseModel):
    """Unknown keys are errors; a bare ``no`` or ``0123`` is never coerced into a string."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``"30s"``, ``"1m30s"``, ``"500ms"``, ``"4h"`` -> seconds; a bare number is an error."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"a duration needs a unit, like '30s' or '5m' (got {value!r})")
    text = value.strip()
    if not _DURATION_RE.match(text):
        raise ValueError(f"invalid duration {value!r}: use a number and a unit (ms, s, m, h, d)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"}),
]

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(
            f"invalid id {value!r}: use 1-63 lowercase ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (ids become Prometheus label values)"
        )
    return value


Id = Annotated[str, AfterValidator(_check_id)]
MetricName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=64)]


def _check_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    host = value.rstrip(".")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(
        re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label) for label in labels
    ):
        raise ValueError(f"invalid address {value!r}: expected an IPv4/IPv6 address or a hostname")
    if labels[-1].isdigit():
        # '127.020.1.10' is no hostname (a top-level label is never numeric), and the C resolver
        # would read '020' as octal 16: a different device than the one meant.
        raise ValueError(f"invalid address {value!r}: write an IPv4 address without leading zeros")
    return value


Address = Annotated[str, AfterValidator(_check_address)]
Port = Annotated[int, Field(ge=1, le=65535)]
Threshold = Annotated[int, Field(ge=1, le=100)]

# --------------------------------------------------------------------------------------------
# Secrets: references only


_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\}$")


def resolve_secret(value: object, info: ValidationInfo) -> SecretStr:
    """Resolve ``${ENV}`` / ``${ENV:-default}``; literal secrets in the file are rejected."""
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret must be a string reference like '${HALLMON_SNMP_COMMUNITY}'")
    match = _ENV_REF.match(value.strip())
    if not match:
        raise ValueError(
            "secrets are written as a reference, '${ENV_VAR}' (or '${ENV_VAR:-default}'), or "
            "with the '_file' form of this key; never as the literal value"
        )
    env: Mapping[str, str] = (info.context or {}).get("env", os.environ)
    name, default = match.group(1), match.group(2)
    if name in env:
        return SecretStr(env[name])
    if default is not None:
        return SecretStr(default)
    raise ValueError(f"environment variable {name} is not set")


def read_secret_file(value: object, info: ValidationInfo) -> SecretStr:
    """A ``*_file`` key: the secret is the file's content without the trailing newline."""
    if not isinstance(value, str) or not value:
        raise ValueError("a secret file must be a path string")
    base = Path((info.context or {}).get("base_dir", "."))
    path = base / value
    try:
        return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
    except OSError as exc:
        raise ValueError(f"cannot read secret file {value!r}: {exc.strerror}") from None


Secret = Annotated[
    SecretStr,
    BeforeValidator(resolve_secret),
    WithJsonSchema({"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-.*)?\}$"}),
]
SecretFile = Annotated[
    SecretStr, BeforeValidator(read_secret_file), WithJsonSchema({"type": "string"})
]


def _pick_secret(obj: BaseModel, key: str) -> SecretStr | None:
    direct: SecretStr | None = getattr(obj, key)
    from_file: SecretStr | None = getattr(obj, f"{key}_file")
    return direct if direct is not None else from_file


# --------------------------------------------------------------------------------------------
# Site, schedules and defaults

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_SPAN_RE = re.compile(
    r"^\s*(?:(?P<d1>[A-Za-z]{3})(?:-(?P<d2>[A-Za-z]{3}))?\s+)?"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$"
)


@dataclass(frozen=True, slots=True)
class Span:
    """Days of week (0 = Monday) and a local time range; ``end <= start`` crosses midnight."""

    days: frozenset[int]
    start: time
    end: time

    def contains(self, local: datetime) -> bool:
        t = local.time()
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= t < self.end
        # crosses midnight: the part after midnight belongs to the previous day's span
        if t >= self.start:
            return local.weekday() in self.days
        return t < self.end and (local.weekday() - 1) % 7 in self.days


def parse_schedule(text: str) -> tuple[Span, ...]:
    """``"Mon-Fri 08:30-18:00, Sat 09:00-12:00"`` or ``"22:00-07:00"`` (every day)."""
    spans = []
    for part in text.split(","):
        m = _SPAN_RE.match(part)
        if not m:
            raise ValueError(
                f"invalid schedule {part.strip()!r}: expected like 'Mon-Fri 08:30-18:00' "
                "or '22:00-07:00'"
            )
        d1, d2 = m.group("d1"), m.group("d2")
        if d1 is None:
            days = frozenset(range(7))
        else:
            try:
                a = _DAYS.index(d1.lower())
                b = _DAYS.index((d2 or d1).lower())
            except ValueError:
                raise ValueError(f"invalid day in {part.strip()!r}: use Mon..Sun") from None
            days = frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))
        h1, m1, h2, m2 = (int(m.group(k)) for k in ("h1", "m1", "h2", "m2"))
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError(f"invalid time in {part.strip()!r}")
        end = time(0, 0) if h2 == 24 else time(h2, m2)
        spans.append(Span(days, time(h1, m1), end))
    return tuple(spans)


def _check_schedule(value: str) -> str:
    parse_schedule(value)
    return value


Schedule = Annotated[str, AfterValidator(_check_schedule)]


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name like 'Asia/Shanghai'"
        ) from None
    return value


class SiteCalendar(StrictModel):
    """Overrides of the national working-day calendar (``chinesecalendar``): days the package
    does not know yet, or that the hall decides otherwise."""

    holidays: list[Annotated[date, Field(strict=False)]] = Field(
        [], description="Extra days off (YYYY-MM-DD)")
    workdays: list[Annotated[date, Field(strict=False)]] = Field(
        [], description="Extra working days, e.g. a make-up Saturday (YYYY-MM-DD)")

    @model_validator(mode="after")
    def _disjoint(self) -> SiteCalendar:
        both = sorted(set(self.holidays) & set(self.workdays))
        if both:
            raise ValueError(
                "a day cannot be both a holiday and a workday: "
                + ", ".join(d.isoformat() for d in both))
        return self


class Site(StrictModel):
    # Which hall this is, when several share one database (issue 17): every stored row carries
    # it. Optional: a hall alone on its store keeps "default", the site its rows had before.
    id: Id = Field("default", description="Site id, unique among the halls sharing a database")
    name: str
    timezone: Annotated[str, AfterValidator(_check_timezone)] = "Asia/Shanghai"
    opening_hours: Schedule | None = None
    calendar: SiteCalendar = SiteCalendar()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Defaults(StrictModel):
    interval: Duration = 30.0
    timeout: Duration = 5.0
    failure_threshold: Threshold = 3
    success_threshold: Threshold = 2
    flap_high_percent: Annotated[float, Field(gt=0, le=100)] = 50.0
    flap_low_percent: Annotated[float, Field(gt=0, le=100)] = 25.0

    @model_validator(mode="after")
    def _order(self) -> Defaults:
        if self.timeout >= self.interval:
            raise ValueError("timeout must be shorter than interval")
        if self.flap_low_percent >= self.flap_high_percent:
            raise ValueError("flap_low_percent must be below flap_high_percent")
        return self


ProbeKind = Literal["icmp", "snmp", "tcp", "http", "mock"]


class Polling(StrictModel):
    """Engine-wide knobs."""

    icmp_backend: Literal["auto", "native", "ping3"] = "auto"
    icmp_pacing_per_second: Annotated[int, Field(ge=0)] = 2000
    snmp_max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 100
    concurrency: dict[ProbeKind, Annotated[int, Field(ge=1)]] = {
        "icmp": 10000,
        "snmp": 100,
        "tcp": 500,
        "http": 50,
        "mock": 100000,
    }


# --------------------------------------------------------------------------------------------
# Credentials (SNMP)


class SnmpCredential(StrictModel):
    """SNMP v1/v2c community or v3 USM user. Auth/priv protocols are always named explicitly."""

    version: Annotated[
        Literal["1", "2c", "3"],
        BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
        WithJsonSchema({"enum": ["1", "2c", "3", 1, 3]}),
    ]
    community: Secret | None = None
    community_file: SecretFile | None = None
    user: str | None = None
    auth: Literal["sha", "sha224", "sha256", "sha384", "sha512"] | None = None
    auth_key: Secret | None = None
    auth_key_file: SecretFile | None = None
    priv: Literal["aes", "aes128", "aes192", "aes256"] | None = None
    priv_key: Secret | None = None
    priv_key_file: SecretFile | None = None
    port: Port = 161
    timeout: Duration = 1.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1

    @model_validator(mode="after")
    def _complete(self) -> SnmpCredential:
        if self.version in ("1", "2c"):
            if self.community is None and self.community_file is None:
                raise ValueError(f"SNMP v{self.version} needs 'community' or 'community_file'")
            if self.user or self.auth or self.priv:
                raise ValueError(f"SNMP v{self.version} takes no user/auth/priv (those are v3)")
            return self
        missing = [k for k in ("user", "auth", "priv") if getattr(self, k) is None]
        if missing:
            raise ValueError(
                "SNMP v3 needs user, auth (sha, sha224, sha256, sha384, sha512) and priv "
                f"(aes, aes192, aes256) named explicitly; missing: {', '.join(missing)}"
            )
        for key in ("auth_key", "priv_key"):
            if _pick_secret(self, key) is None:
                raise ValueError(f"SNMP v3 needs '{key}' or '{key}_file'")
        if self.community is not None:
            raise ValueError("SNMP v3 takes no community")
        return self

    @property
    def community_secret(self) -> SecretStr | None:
        return _pick_secret(self, "community")

    @property
    def auth_secret(self) -> SecretStr | None:
        return _pick_secret(self, "auth_key")

    @property
    def priv_secret(self) -> SecretStr | None:
        return _pick_secret(self, "priv_key")


# --------------------------------------------------------------------------------------------
# Checks


class Condition(StrictModel):
    """A health condition on a probe value; when it holds, the check counts as failed (DEGRADED).

    ``value`` names a numeric value of the probe result (``toner_percent``, ``loss_ratio``...), or a
    walked table column with ``*`` for "any row" (``if_oper_status.*``).
    """

    value: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.(\*|[0-9.]+))?$")]
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    threshold: float
    message: str
    severity: Literal["warning", "critical"] = "warning"


class CheckBase(StrictModel):
    name: Id
    role: Literal["reachability", "health"] = "health"
    interval: Duration | None = None
    timeout: Duration | None = None
    failure_threshold: Threshold | None = None
    success_threshold: Threshold | None = None
    conditions: list[Condition] = []
    enabled: bool = True


class IcmpCheck(CheckBase):
    kind: Literal["icmp"]
    packets: Annotated[int, Field(ge=1, le=20)] = 3
    packet_interval: Duration = 0.05


class OidSpec(StrictModel):
    oid: Annotated[str, Field(pattern=r"^\.?1(\.\d+)+$")]
    type: Literal["gauge", "counter"] = "gauge"
    parse: Literal["auto", "number", "text"] = "auto"
    scale: float = 1.0
    help: str = ""
    absent: list[float] = Field(
        [], description="Raw values that mean 'not measured' (H3C: temperature 65535 on an "
        "entity without a sensor): such a row is left out, as if the device had not sent it")


def _oid_shorthand(value: object) -> object:
    return {"oid": value} if isinstance(value, str) else value


OidEntry = Annotated[OidSpec, BeforeValidator(_oid_shorthand)]


class Ratio(StrictModel):
    """A value derived from two others: ``scale * numerator / denominator`` (toner percent)."""

    numerator: MetricName
    denominator: MetricName
    scale: float = 100.0


class SnmpCheck(CheckBase):
    """One GET of ``oids`` per interval; ``walks`` are table columns (give tables their own,
    slower check rather than walking every cycle)."""

    kind: Literal["snmp"]
    oids: dict[MetricName, OidEntry] = {}
    walks: dict[MetricName, OidEntry] = {}
    ratios: dict[MetricName, Ratio] = {}
    port: Port | None = None


class TcpCheck(CheckBase):
    kind: Literal["tcp"]
    port: Port


class HttpCheck(CheckBase):
    kind: Literal["http"]
    url: str = Field(description="May contain {address}; e.g. 'http://{address}:8080/health'")
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = []
    body_match: str | None = None
    verify_tls: bool = True


class MockCheck(CheckBase):
    kind: Literal["mock"]
    values: dict[MetricName, float] = {}


# --------------------------------------------------------------------------------------------
# Trap rules and push checks: what a device's own words mean


_NUMERIC_OID = re.compile(r"^[0-2](\.\d+)+$")


def _check_oid(value: str) -> str:
    value = value.lstrip(".")
    if not _NUMERIC_OID.match(value):
        raise ValueError(f"expected a numeric OID like 1.3.6.1.6.3.1.1.5.3, got {value!r} "
                         "(MIB names are not loaded)")
    return value


TrapOid = Annotated[
    str, AfterValidator(_check_oid),
    WithJsonSchema({"type": "string", "pattern": r"^\.?[0-2](\.\d+)+$"}),
]
TRAP_CHECK = "traps"  # the health check that degraded trap rules hold
TRAP_DOWN_CHECK = "traps-down"  # the check that down trap rules hold (counts like reachability)


class VarBindCondition(StrictModel):
    """A var-bind of the trap (at ``oid`` or a row below it) compared with ``value``: numbers
    with any operator, text (and OID values) with ``==``/``!=``. A missing var-bind fails."""

    oid: TrapOid
    op: Literal["<", "<=", ">", ">=", "==", "!="] = "=="
    value: Annotated[float | str, Field(union_mode="left_to_right")]

    @model_validator(mode="after")
    def _text_ops(self) -> VarBindCondition:
        if isinstance(self.value, str) and self.op not in ("==", "!="):
            raise ValueError("text values compare with '==' or '!=' only")
        return self


class TrapMatch(StrictModel):
    oid: TrapOid
    when: list[VarBindCondition] = []


TrapMatchEntry = Annotated[TrapMatch, BeforeValidator(_oid_shorthand)]


class TrapRule(StrictModel):
    """Trap OID (+ var-bind conditions) -> what it means for the device that sent it.

    ``recheck``: poll the device now; ``event``: an event in its history; ``degraded``/``down``:
    the device is DEGRADED/DOWN until a ``cleared_by`` trap (same ``instance``) or until ``hold``
    passes without the trap again. ``also_recheck`` polls the device now as well."""

    name: Id
    oid: TrapOid
    when: list[VarBindCondition] = []
    action: Literal["recheck", "event", "degraded", "down"]
    message: str
    instance: TrapOid | None = Field(
        None, description="var-bind telling occurrences apart (e.g. ifIndex)"
    )
    cleared_by: list[TrapMatchEntry] = []
    hold: Duration = 3600.0
    also_recheck: bool = False

    @model_validator(mode="after")
    def _holds_only(self) -> TrapRule:
        if self.action in ("recheck", "event") and (self.cleared_by or self.instance):
            raise ValueError(f"'cleared_by' and 'instance' belong to degraded/down rules, "
                             f"not {self.action!r}")
        return self


def _check_token(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 16:
        raise ValueError("a push token needs at least 16 characters (it is the only key to the "
                         "URL): `python3 -c 'import secrets; print(secrets.token_urlsafe())'`")
    return value


class PushCheck(CheckBase):
    """The device calls ``/api/v1/push/{token}`` (GET or POST, optional ``status``/``msg``) at
    least every ``expect_every``; a beat missing for ``expect_every + grace`` fails the check."""

    kind: Literal["push"]
    expect_every: Duration
    # One missed deadline is the failure (grace is the tolerance); one beat is the recovery.
    failure_threshold: Threshold | None = 1
    success_threshold: Threshold | None = 1
    grace: Duration = 30.0
    token: Annotated[Secret, AfterValidator(_check_token)] | None = None
    token_file: Annotated[SecretFile, AfterValidator(_check_token)] | None = None

    @model_validator(mode="after")
    def _one_token(self) -> PushCheck:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("a push check needs exactly one of 'token' or 'token_file'")
        return self

    @property
    def token_secret(self) -> SecretStr:
        secret = _pick_secret(self, "token")
        assert secret is not None
        return secret


class TrapCheck(CheckBase):
    """Internal (never written in the inventory): the check that trap conditions hold."""

    kind: Literal["trap"]
    marks: Literal["degraded", "down"] = "degraded"


TRAP_CHECKS = {
    "degraded": TrapCheck(name=TRAP_CHECK, kind="trap", marks="degraded",
                          failure_threshold=1, success_threshold=1),
    "down": TrapCheck(name=TRAP_DOWN_CHECK, kind="trap", marks="down",
                      failure_threshold=1, success_threshold=1),
}
PASSIVE_KINDS = frozenset({"push", "trap"})  # checks no scheduler polls: the device speaks

Check = Annotated[
    IcmpCheck | SnmpCheck | TcpCheck | HttpCheck | MockCheck | PushCheck,
    Field(discriminator="kind"),
]


class CheckOverride(StrictModel):
    """Per-device tweaks of a class check, by check name."""

    interval: Duration | None = None
    timeout: Duration | None = None
    failure_threshold: Threshold | None = None
    success_threshold: Threshold | None = None
    port: Port | None = None
    enabled: bool | None = None
    conditions: list[Condition] | None = None


class DeviceClass(StrictModel):
    """A device-class profile: which checks a kiosk, camera, switch... gets (see classes.py)."""

    label: str
    checks: list[Check]
    line: bool = Field(False, description="A dedicated line: outages are reported as line outages")
    all_day: bool | None = Field(
        None, description="Availability counted over 24 h on every day, not over opening hours "
        "on working days (default: true for lines)")

    @property
    def counts_all_day(self) -> bool:
        return self.line if self.all_day is None else self.all_day
    trap_rules: list[TrapRule] = []

    @model_validator(mode="after")
    def _one_reachability(self) -> DeviceClass:
        reach = [c.name for c in self.checks if c.role == "reachability"]
        if len(reach) != 1:
            raise ValueError(
                f"a class needs exactly one check with role 'reachability' (has {len(reach)})"
            )
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate check names: {', '.join(dupes)}")
        return self


# --------------------------------------------------------------------------------------------
# Maintenance, tickets, simulation


class MaintenanceWindow(StrictModel):
    """One-off (start/end) or recurring (schedule) maintenance; tracked, never paged.

    At the top level a window selects devices, classes or floors; under a device it is that
    device's own.
    """

    reason: str
    start: Annotated[datetime, Field(strict=False)] | None = None
    end: Annotated[datetime, Field(strict=False)] | None = None
    schedule: Schedule | None = None
    devices: list[Id] = []
    classes: list[str] = []
    floors: list[int] = []

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceWindow:
        one_off = self.start is not None or self.end is not None
        if one_off == (self.schedule is not None):
            raise ValueError("give either start and end, or a schedule")
        if one_off and (self.start is None or self.end is None):
            raise ValueError("a one-off window needs both start and end")
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


# The hall's job categories (fault, preventive maintenance, line/network, access enrolment,
# installation, relocation, inspection, other); the store and the reports use the same tuple.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "fault",
    "preventive",
    "line",
    "enrolment",
    "installation",
    "relocation",
    "inspection",
    "other",
)
CATEGORY_ZH: dict[str, str] = {
    "fault": "故障维修",
    "preventive": "预防性维护",
    "line": "线路网络",
    "enrolment": "门禁录入",
    "installation": "安装",
    "relocation": "迁移",
    "inspection": "巡检",
    "other": "其他",
}
_CATEGORY_BY_LABEL = {label: key for key, label in CATEGORY_ZH.items()}


def category_key(value: str) -> str:
    """The category key of a key or of its Chinese label ("故障维修" -> "fault"); anything else
    unchanged (then refused, naming the known keys). Wherever a category is accepted: the
    inventory's ticket rules, the API, the CLI and CSV imports (the last three via the store)."""
    return _CATEGORY_BY_LABEL.get(value.strip(), value) if isinstance(value, str) else value


class AutoTicketRule(StrictModel):
    classes: list[str] = Field([], description="Empty: every class")
    when: list[Literal["down", "degraded"]] = ["down"]
    delay: Duration | Literal[0] = 0
    category: str = "fault"
    assignee: str | None = None
    auto_resolve: bool = True

    @field_validator("category", mode="before")
    @classmethod
    def _category_label(cls, value: Any) -> Any:
        return category_key(value)


_WHEN_RE = re.compile(r"^(closing|([01]\d|2[0-3]):[0-5]\d)$")


def _check_when(value: str) -> str:
    if not _WHEN_RE.match(value):
        raise ValueError(f"invalid time {value!r}: 'closing' or a local time like '09:00'")
    return value


class ReportSchedule(StrictModel):
    """One scheduled report. Due on working days only: a day's report on that day, a week's on
    the first working day of the next week, a month's (quarter's, year's) on the first working
    day after it."""

    period: Literal["day", "week", "month", "quarter", "year"]
    when: Annotated[str, AfterValidator(_check_when)] | None = Field(
        None, description="'closing' (the day's closing time) or 'HH:MM' local; default: "
        "closing for daily reports, 09:00 for the others")
    format: Literal["xlsx", "md", "csv"] = "xlsx"
    language: Literal["zh", "en"] = "zh"
    route: str | None = Field(None, description="notifications route to deliver to")

    @property
    def at(self) -> str:
        return self.when or ("closing" if self.period == "day" else "09:00")


DEFAULT_REPORTS: tuple[ReportSchedule, ...] = tuple(
    ReportSchedule(period=p) for p in ("day", "week", "month", "quarter"))


class TicketPolicy(StrictModel):
    categories: list[Id] = list(DEFAULT_CATEGORIES)
    auto: list[AutoTicketRule] = []


class Fault(StrictModel):
    """A scripted fault of the simulated hall (``hallmon demo`` / ``--mock``)."""

    device: Id
    at: Duration | Literal[0] = 0
    duration: Duration | None = None
    mode: Literal["down", "timeout", "slow", "flap", "values"]
    check: Id | None = None
    values: dict[MetricName, float] = {}


class Simulation(StrictModel):
    seed: int = 0
    faults: list[Fault] = []


# --------------------------------------------------------------------------------------------
# Devices and the inventory


class Location(StrictModel):
    floor: int | None = None
    area: str | None = None
    window: Annotated[int | str, Field(union_mode="left_to_right")] | None = None


class Device(StrictModel):
    id: Id
    name: str
    class_: str = Field(alias="class")
    address: Address
    location: Location = Location()
    owner: str | None = None
    parent: Id | None = None
    tags: list[str] = []
    credential: str | None = None
    snmp_port: Port | None = None
    checks: dict[Id, CheckOverride] = {}
    extra_checks: list[Check] = []
    maintenance: list[MaintenanceWindow] = []
    public: bool = Field(False, description="Shown on the public board (/status/public)")
    public_name: str | None = Field(
        None, min_length=1, max_length=64,
        description="Name on the public board (default: name), e.g. '自助终端 3 号'")
    trap_rules: list[TrapRule] = Field([], description="added to the class's; same name replaces")

    @field_validator("maintenance")
    @classmethod
    def _no_selectors(cls, windows: list[MaintenanceWindow]) -> list[MaintenanceWindow]:
        for w in windows:
            if w.devices or w.classes or w.floors:
                raise ValueError("a device's own window takes no devices/classes/floors selector")
        return windows


@dataclass(frozen=True, slots=True)
class ResolvedCheck:
    """A check with class profile, device overrides and defaults applied."""

    device_id: str
    spec: IcmpCheck | SnmpCheck | TcpCheck | HttpCheck | MockCheck | PushCheck | TrapCheck
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    conditions: tuple[Condition, ...]
    port: int | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def key(self) -> tuple[str, str]:
        return (self.device_id, self.spec.name)


class DiscoveryRule(StrictModel):
    """``hallmon discover``: a device whose sysObjectID lies under ``object_id`` and/or whose
    sysDescr matches the regular expression ``descr`` is proposed as ``class``."""

    object_id: Annotated[str, Field(pattern=r"^$|^\d+(\.\d+)+$")] = ""
    descr: str = ""
    class_: str = Field(alias="class")
    vendor: str = ""

    @model_validator(mode="after")
    def _something_to_match(self) -> DiscoveryRule:
        if not self.object_id and not self.descr:
            raise ValueError("a discovery rule needs object_id, descr or both")
        if self.descr:
            try:
                re.compile(self.descr)
            except re.error as exc:
                raise ValueError(f"descr is not a regular expression: {exc}") from None
        return self


class Discovery(StrictModel):
    """Rules tried before the built-in ones (monitor/discover.py)."""

    rules: list[DiscoveryRule] = []


class Inventory(StrictModel):
    site: Site
    defaults: Defaults = Defaults()
    polling: Polling = Polling()
    credentials: dict[Id, SnmpCredential] = {}
    classes: dict[Id, DeviceClass] = {}
    devices: list[Device] = []
    maintenance: list[MaintenanceWindow] = []
    notifications: Notifications = Notifications()
    tickets: TicketPolicy = TicketPolicy()
    reports: list[ReportSchedule] = list(DEFAULT_REPORTS)
    simulation: Simulation | None = None
    discovery: Discovery = Discovery()

    # ---- lookups (built-in classes merged with the file's) ----

    def device_classes(self) -> dict[str, DeviceClass]:
        return {**BUILTIN_CLASSES, **self.classes}

    def device(self, device_id: str) -> Device:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def ticket_device(self, device_id: str) -> dict[str, str | None]:
        """A ticket's device fields (class, floor, owner) from the inventory; ValueError
        "unknown device 'kisok-1' (did you mean 'kiosk-1'?)" for a device it does not have."""
        try:
            d = self.device(device_id)
        except KeyError:
            import difflib

            close = difflib.get_close_matches(device_id, [x.id for x in self.devices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown device {device_id!r}{hint}") from None
        return {"device_class": d.class_,
                "floor": None if d.location.floor is None else str(d.location.floor),
                "owner": d.owner}

    def checks_for(self, device: Device) -> list[ResolvedCheck]:
        cls = self.device_classes()[device.class_]
        resolved = []
        for spec in [*cls.checks, *device.extra_checks]:
            o = device.checks.get(spec.name, CheckOverride())
            enabled = o.enabled if o.enabled is not None else spec.enabled
            if not enabled:
                continue
            port = o.port or getattr(spec, "port", None)
            if spec.kind == "snmp" and port is None:
                cred = self.credentials.get(device.credential or "")
                port = device.snmp_port or (cred.port if cred else 161)
            resolved.append(
                ResolvedCheck(
                    device_id=device.id,
                    spec=spec,
                    interval=spec.expect_every if isinstance(spec, PushCheck)
                    else o.interval or spec.interval or self.defaults.interval,
                    timeout=o.timeout or spec.timeout or self.defaults.timeout,
                    failure_threshold=o.failure_threshold
                    or spec.failure_threshold
                    or self.defaults.failure_threshold,
                    success_threshold=o.success_threshold
                    or spec.success_threshold
                    or self.defaults.success_threshold,
                    conditions=tuple(o.conditions if o.conditions is not None else spec.conditions),
                    port=port,
                )
            )
        if self._has_traps(device):
            resolved.extend(self._trap_checks(device))
        return resolved

    def _has_traps(self, device: Device) -> bool:
        return bool(device.trap_rules) or bool(self.device_classes()[device.class_].trap_rules)

    def traps_for(self, device: Device) -> list[TrapRule]:
        """The device's trap rules: its class's, then its own (same name replaces)."""
        cls = self.device_classes()[device.class_]
        if not device.trap_rules:
            return cls.trap_rules
        own = {r.name for r in device.trap_rules}
        return [*(r for r in cls.trap_rules if r.name not in own), *device.trap_rules]

    def _trap_checks(self, device: Device) -> list[ResolvedCheck]:
        """One extra check per kind of held trap condition the device's rules can set."""
        marks = {r.action for r in self.traps_for(device)} & {"degraded", "down"}
        return [
            ResolvedCheck(device.id, TRAP_CHECKS[m], self.defaults.interval,
                          self.defaults.timeout, 1, 1, (), None)
            for m in ("degraded", "down") if m in marks
        ]

    def all_checks(self) -> Iterator[ResolvedCheck]:
        for device in self.devices:
            yield from self.checks_for(device)


# The built-in device-class profiles (plain data in monitor.inventory.profiles), validated once.
BUILTIN_CLASSES: dict[str, DeviceClass] = {
    name: DeviceClass.model_validate(profile, strict=False) for name, profile in PROFILES.items()
}


def schema() -> dict[str, Any]:
    """JSON Schema of inventory.yaml (for editors: yaml-language-server modeline)."""
    doc = Inventory.model_json_schema(by_alias=True)
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "hallmon inventory"
    return doc
