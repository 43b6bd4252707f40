"""Inputs beside polling: ``/api/v1/push/{token}`` (heartbeats) and ``/api/v1/events`` (what
devices told us by trap).

The push URL carries its own secret (the token), like Uptime Kuma's push monitors: no API
token is needed, an unknown token is a 404, and the token is never logged or echoed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict

from monitor.api.auth import AUTH_RESPONSES, require

push_router = APIRouter(prefix="/push", tags=["inputs"])
events_router = APIRouter(
    prefix="/events", tags=["inputs"], responses=AUTH_RESPONSES,
    dependencies=[Depends(require("viewer"))],
)


class PushOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    device: str
    check: str


class EventOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int | None = None  # the store's (None: a receiver without a store); see ``before``
    device: str
    rule: str
    message: str
    trap_oid: str
    at: datetime


async def _push(request: Request, token: str, status: str | None, msg: str | None) -> PushOut:
    beats = getattr(request.app.state.hall, "heartbeats", None)
    check = None if beats is None else await beats.beat(token, status, msg)
    if check is None:
        raise HTTPException(404, "no push check has this token")
    return PushOut(ok=True, device=check.device_id, check=check.name)


Status = Annotated[Literal["up", "down"] | None, Query(description="default: up")]
Msg = Annotated[str | None, Query(max_length=1000, description="shown when status=down")]


@push_router.get("/{token}", response_model=PushOut, summary="A heartbeat (GET)",
                 responses={404: {"description": "No push check has this token"}})
async def push_get(request: Request, token: str, status: Status = None,
                   msg: Msg = None) -> Any:
    return await _push(request, token, status, msg)


@push_router.post("/{token}", response_model=PushOut, summary="A heartbeat (POST)",
                  responses={404: {"description": "No push check has this token"}})
async def push_post(request: Request, token: str, status: Status = None,
                    msg: Msg = None) -> Any:
    return await _push(request, token, status, msg)


EVENTS_PAGE_MAX = 1000


@events_router.get("", response_model=list[EventOut],
                   summary="Trap events, a page of the newest (oldest first within the page)")
async def events(
    request: Request,
    device: str | None = None,
    before: Annotated[int | None, Query(ge=1, description="Only events with ids below this "
                                        "(the first id of the previous page)")] = None,
    limit: Annotated[int, Query(ge=1, le=EVENTS_PAGE_MAX, description="Events per page")] = 100,
) -> Any:
    """Read from the store (kept across restarts, pruned to the retention; O(limit)); a
    receiver without a store serves the last events it holds in memory."""
    receiver = getattr(request.app.state.hall, "traps", None)
    if receiver is None:
        return []
    if receiver.store is not None:
        store = receiver.store
        rows = await store.run(store.store.trap_events, device, before, limit)
        return [EventOut(id=r.id, device=r.device_id, rule=r.rule, message=r.message,
                         trap_oid=r.trap_oid, at=r.at) for r in reversed(rows)]
    kept = [e for e in receiver.events if device is None or e.device == device]
    return [
        EventOut(device=e.device, rule=e.rule, message=e.message, trap_oid=e.trap_oid,
                 at=datetime.fromtimestamp(e.at, UTC))
        for e in kept[-limit:]
    ]
