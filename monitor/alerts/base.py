"""The values that flow through notifications and the one interface every channel implements.

AlertEvent (pipeline -> engine) -> Message (engine -> outbox, stored as a dict) -> channel.send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx

Status = Literal["down", "degraded", "unreachable", "flapping", "up", "maintenance", "unknown"]
Severity = Literal["critical", "warning"]
MessageKind = Literal["notice", "repeat", "digest", "test", "report"]

# Statuses that page (the device itself is the problem). "unreachable" rides in its parent's
# message and "maintenance" is silent: the state layer has already decided the suppression.
FIRING: frozenset[str] = frozenset({"down", "degraded", "flapping"})


@dataclass(frozen=True, slots=True)
class Location:
    floor: int | None = None
    area: str | None = None
    window: str | None = None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One hard device-status transition, submitted by the pipeline."""

    device_id: str
    name: str
    device_class: str
    status: Status
    previous: Status
    since: datetime  # aware
    cause: str = ""
    location: Location = field(default_factory=Location)
    owner: str | None = None
    parent: str | None = None
    incident_id: int | None = None
    severity: Severity = "critical"
    # When the incident this event belongs to began: its identity, known at once (the store's
    # row id may land later, see Pipeline's write queue) and the same after a restart.
    opened_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.since.tzinfo is None:
            raise ValueError("AlertEvent.since must be timezone-aware")


@dataclass(frozen=True, slots=True)
class AlertItem:
    """One device's alert inside a message, shaped for Alertmanager and webhook receivers."""

    device_id: str
    status: Literal["firing", "resolved"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str  # RFC 3339
    ends_at: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification. ``key`` is the idempotency key (stable across re-sends)."""

    key: str
    route: str
    kind: MessageKind
    status: Literal["firing", "resolved"]
    title: str
    text: str
    markdown: str
    created_at: str  # RFC 3339
    alerts: tuple[AlertItem, ...] = ()
    # Files for channels that carry them (e-mail): {"filename", "content_type", "data" (base64)}.
    attachments: tuple[Mapping[str, str], ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Message:
        fields = dict(data)
        fields["alerts"] = tuple(
            AlertItem(**{**a, "labels": dict(a["labels"]), "annotations": dict(a["annotations"])})
            for a in data.get("alerts", ())
        )
        fields["attachments"] = tuple(dict(a) for a in data.get("attachments", ()))
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    error: str | None = None
    # False for errors a retry cannot fix (bad token, malformed request): dead-letter at once.
    retryable: bool = True

    @classmethod
    def success(cls) -> DeliveryResult:
        return cls(True)

    @classmethod
    def failure(cls, error: str, retryable: bool = True) -> DeliveryResult:
        return cls(False, error, retryable)


class Channel(Protocol):
    """One configured destination. Implementations hold their secrets as SecretStr."""

    name: str

    async def send(self, message: Message, client: httpx.AsyncClient) -> DeliveryResult: ...


_QUERY = re.compile(r"\?[^\s'\"]*")
_KEYED_PATH = re.compile(r"(/(?:robot/send|hook|bot/v2/hook|cgi-bin/webhook/send))[^\s'\"?]*")


def truncate_bytes(text: str, limit: int) -> str:
    """Cut to ``limit`` UTF-8 bytes on a character boundary (vendors count bytes, not chars)."""
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


def redact(text: str) -> str:
    """Strip query strings (access_token=, key=, sign=) and tokens in robot URL paths."""
    return _KEYED_PATH.sub(r"\1/<secret>", _QUERY.sub("?<secret>", text))


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: Any,
    key: str,
    seconds: float,
) -> httpx.Response | DeliveryResult:
    """POST JSON; transport problems become a redacted failure, never an exception with a URL."""
    try:
        return await client.post(
            url, json=body, headers={"Idempotency-Key": key}, timeout=seconds
        )
    except httpx.HTTPError as exc:
        return DeliveryResult.failure(f"{type(exc).__name__}: {redact(str(exc))}")


def vendor_result(
    response: httpx.Response, code_field: str, msg_field: str, permanent: frozenset[int]
) -> DeliveryResult:
    """Robots answer HTTP 200 with an error code in the body: only code 0 is a success."""
    if response.status_code >= 400:
        return DeliveryResult.failure(
            f"HTTP {response.status_code}", retryable=response.status_code >= 429
        )
    try:
        body = response.json()
        code = int(body.get(code_field, -1))
    except (ValueError, AttributeError, TypeError):
        return DeliveryResult.failure(f"HTTP {response.status_code}: not a JSON vendor reply")
    if code == 0:
        return DeliveryResult.success()
    text = redact(str(body.get(msg_field, "")))[:200]
    return DeliveryResult.failure(f"{code_field} {code}: {text}", retryable=code not in permanent)
