"""``/api/v1/sites``: the sites sharing this database, as their daemons registered them (issue
17). One row per site (never its devices): O(sites)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from monitor.api.auth import AUTH_RESPONSES, require
from monitor.api.tickets import GUARDS, StoreDep

router = APIRouter(
    prefix="/sites",
    tags=["sites"],
    responses=AUTH_RESPONSES,
    dependencies=[Depends(require("viewer")), *GUARDS],
)


class SiteOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    timezone: str
    opening_hours: str | None
    devices: int
    registered_at: datetime  # when its daemon last registered it (start or reload)
    this: bool  # the site of the daemon answering


class SiteList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str  # the answering daemon's
    sites: list[SiteOut]


@router.get("", response_model=SiteList, summary="Sites sharing the database")
async def list_sites(store: StoreDep) -> Any:
    own = store.store.site
    rows = await store.run(store.store.list_sites)
    return SiteList(site=own, sites=[SiteOut(
        id=r.id, name=r.name, timezone=r.timezone, opening_hours=r.opening_hours,
        devices=r.devices, registered_at=r.updated_at, this=r.id == own) for r in rows])
