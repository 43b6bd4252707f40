"""``/api/v1/devices``: what the hall looks like now, one device in depth, re-check on demand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict

from monitor.api.auth import AUTH_RESPONSES, require, require_or_local
from monitor.inventory import Device, Inventory
from monitor.pipeline import Pipeline
from monitor.state import CheckState, DeviceStatus

router = APIRouter(
    prefix="/devices",
    tags=["devices"],
    responses=AUTH_RESPONSES,
    dependencies=[Depends(require("viewer"))],
)

StatusName = Literal["unknown", "maintenance", "unreachable", "down", "degraded", "up"]


class Hall(Protocol):
    """What these routes need from the daemon (``request.app.state.hall``)."""

    pipeline: Pipeline

    def recheck(self, device_id: str) -> bool: ...


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationOut(_Out):
    floor: int | None
    area: str | None
    window: str | None


class DeviceOut(_Out):
    id: str
    name: str
    device_class: str
    address: str
    location: LocationOut
    owner: str | None
    parent: str | None
    tags: list[str]
    status: StatusName
    cause: str
    last_poll: datetime | None
    since: datetime | None


class LastResultOut(_Out):
    ok: bool
    error: str | None
    values: dict[str, float]
    at: datetime


class CheckOut(_Out):
    name: str
    kind: str
    role: str
    interval_seconds: float
    hard: Literal["unknown", "up", "down"]
    soft: Literal["unknown", "up", "down"]
    flapping: bool
    flap_percent: float
    since: datetime | None
    last: LastResultOut | None


class IncidentOut(_Out):
    id: int
    check: str | None
    status: str
    cause: str
    started_at: datetime
    ended_at: datetime | None


class DeviceDetail(DeviceOut):
    checks: list[CheckOut]
    history: list[IncidentOut]


class DeviceList(_Out):
    total: int
    devices: list[DeviceOut]


class RecheckOut(_Out):
    device: str
    queued: bool


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _hall(request: Request) -> Hall:
    hall: Hall = request.app.state.hall
    return hall


def _device_out(pipeline: Pipeline, device: Device) -> DeviceOut:
    st, cause = pipeline.state.statuses.get(device.id, (DeviceStatus.UNKNOWN, "not yet polled"))
    checks = [pipeline.state.checks[k] for k in pipeline.state.checks if k[0] == device.id]
    polls = [c.last.at for c in checks if c.last is not None]
    loc = device.location
    return DeviceOut(
        id=device.id,
        name=device.name,
        device_class=device.class_,
        address=device.address,
        location=LocationOut(
            floor=loc.floor, area=loc.area, window=None if loc.window is None else str(loc.window)
        ),
        owner=device.owner,
        parent=device.parent,
        tags=list(device.tags),
        status=st.value,
        cause=cause,
        last_poll=_ts(max(polls) if polls else None),
        since=_ts(pipeline.state.since.get(device.id)),  # the device's own status change
    )


def _check_out(inventory: Inventory, device: Device, name: str, cs: CheckState) -> CheckOut:
    resolved = {c.name: c for c in inventory.checks_for(device)}[name]
    last = cs.last
    return CheckOut(
        name=name,
        kind=resolved.kind,
        role=resolved.role,
        interval_seconds=resolved.interval,
        hard=cs.hard.value,
        soft=cs.soft.value,
        flapping=cs.flapping,
        flap_percent=round(cs.flap_percent, 1),
        since=_ts(cs.since),
        last=None
        if last is None
        else LastResultOut(ok=last.ok, error=last.error, values=dict(last.values), at=_ts(last.at)),
    )


@router.get("", response_model=DeviceList, summary="Status of every device, with filters")
def list_devices(
    request: Request,
    device_class: Annotated[str | None, Query(alias="class")] = None,
    floor: int | None = None,
    status_: Annotated[StatusName | None, Query(alias="status")] = None,
    owner: str | None = None,
) -> Any:
    pipeline = _hall(request).pipeline
    out = []
    for device in pipeline.inventory.devices:
        if device_class is not None and device.class_ != device_class:
            continue
        if floor is not None and device.location.floor != floor:
            continue
        if owner is not None and device.owner != owner:
            continue
        row = _device_out(pipeline, device)
        if status_ is not None and row.status != status_:
            continue
        out.append(row)
    return DeviceList(total=len(out), devices=out)


def _find(pipeline: Pipeline, device_id: str) -> Device:
    try:
        return pipeline.inventory.device(device_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id!r}") from None


@router.get(
    "/{device_id}",
    response_model=DeviceDetail,
    responses={404: {"description": "No such device"}},
    summary="One device: its checks, their last results, and recent incidents",
)
async def get_device(request: Request, device_id: str) -> Any:
    pipeline = _hall(request).pipeline
    device = _find(pipeline, device_id)
    base = _device_out(pipeline, device)
    checks = [
        _check_out(pipeline.inventory, device, name, cs)
        for (dev, name), cs in pipeline.state.checks.items()
        if dev == device_id
    ]
    history: list[IncidentOut] = []
    if pipeline.store is not None:
        for inc in await pipeline.store.incidents(device_id=device_id, limit=20):
            history.append(
                IncidentOut(
                    id=inc.id,
                    check=inc.check,
                    status=inc.status,
                    cause=inc.cause,
                    started_at=inc.started_at,
                    ended_at=inc.ended_at,
                )
            )
    return DeviceDetail(**base.model_dump(), checks=checks, history=history)


@router.post(
    "/{device_id}/recheck",
    response_model=RecheckOut,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_or_local("technician"))],
    responses={404: {"description": "No such device"}},
    summary="Run every check of a device now",
)
async def recheck(request: Request, device_id: str) -> Any:  # on the loop: it starts tasks
    hall = _hall(request)
    _find(hall.pipeline, device_id)
    return RecheckOut(device=device_id, queued=hall.recheck(device_id))
