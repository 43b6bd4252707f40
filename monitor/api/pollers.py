"""``/api/v1/pollers``: the site's pollers, their leases and shares (issue 17)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from monitor.api.auth import AUTH_RESPONSES, require
from monitor.metrics import PollerRow

router = APIRouter(
    prefix="/pollers",
    tags=["pollers"],
    responses=AUTH_RESPONSES,
    dependencies=[Depends(require("viewer"))],
)


class Hall(Protocol):
    poller_id: str

    def pollers(self) -> list[PollerRow]: ...


class PollerOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    role: str  # self | peer | expired | standalone
    devices_owned: int | None
    last_heartbeat: datetime | None


class PollerList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    poller: str  # the one answering
    live: int
    pollers: list[PollerOut]


@router.get("", response_model=PollerList, summary="Pollers of the site and their leases")
def list_pollers(request: Request) -> Any:
    hall: Hall = request.app.state.hall
    rows = hall.pollers()
    return PollerList(
        poller=hall.poller_id,
        live=sum(r.role != "expired" for r in rows),
        pollers=[PollerOut(
            id=r.poller, role=r.role, devices_owned=r.devices_owned,
            last_heartbeat=None if r.last_heartbeat is None
            else datetime.fromtimestamp(r.last_heartbeat, UTC),
        ) for r in rows],
    )
