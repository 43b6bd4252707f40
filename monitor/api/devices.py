"""``/api/v1/devices``: what the hall looks like now, one device in depth, re-check on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, TypeAdapter

from monitor.api.auth import AUTH_RESPONSES, require, require_or_local
from monitor.inventory import Device, ResolvedCheck
from monitor.inventory.index import DeviceIndex
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
    # The poller that polls it (pollers sharing a site, issue 17; this one's name otherwise).
    # Another poller's device shows the status the store knows: its open incident, else what
    # that poller last recorded (read again every heartbeat); no last_poll, no checks.
    poller: str | None


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
    offset: int
    limit: int
    devices: list[DeviceOut]


class ElsewhereOut(_Out):
    detail: str
    poller: str | None  # the poller that polls the device: ask it


class RecheckOut(_Out):
    device: str
    queued: bool


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _hall(request: Request) -> Hall:
    hall: Hall = request.app.state.hall
    return hall


# A page is at most this many devices (the default is a whole hall of ordinary size); a route
# serializes this many devices per turn of the event loop, so polling never waits behind a
# request for more than a few milliseconds (issue 12: the whole list at 10k devices took ~4 s of
# CPU in a worker thread that held the GIL, and answering devices went DOWN).
PAGE_DEFAULT = 1000
PAGE_MAX = 5000
SLICE = 200
_SCAN = 2000  # status look-ups per turn of the loop (a dict get each)
_NOT_POLLED = (DeviceStatus.UNKNOWN, "not yet polled")
_ROWS: TypeAdapter[list[DeviceOut]] = TypeAdapter(list[DeviceOut])


def _poller(pipeline: Pipeline, device_id: str) -> str | None:
    if pipeline.owned is None:
        return pipeline.poller_id or None
    return pipeline.owners.get(device_id)


def _status(pipeline: Pipeline, device_id: str) -> DeviceStatus:
    if pipeline.owned is None or device_id in pipeline.owned:
        return pipeline.state.statuses.get(device_id, _NOT_POLLED)[0]
    return pipeline.status_of(device_id)[0]


def _device_out(pipeline: Pipeline, device: Device) -> DeviceOut:
    """One device's row: O(its checks), read through the state's per-device spec."""
    state = pipeline.state
    st, cause, since = pipeline.status_of(device.id)
    spec = state.devices.get(device.id)
    last_poll = None
    if spec is not None:
        for name in spec.checks:
            cs = state.checks.get((device.id, name))
            if cs is not None and cs.last is not None and (
                    last_poll is None or cs.last.at > last_poll):
                last_poll = cs.last.at
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
        last_poll=_ts(last_poll),
        since=_ts(since),  # the device's own status change
        poller=_poller(pipeline, device.id),
    )


def _check_out(resolved: ResolvedCheck, cs: CheckState) -> CheckOut:
    last = cs.last
    return CheckOut(
        name=resolved.name,
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


async def _with_status(
    pipeline: Pipeline, index: DeviceIndex, positions: Sequence[int], wanted: DeviceStatus
) -> list[int]:
    """The positions whose device is in ``wanted`` now, scanned in slices."""
    devices = index.devices
    out: list[int] = []
    for start in range(0, len(positions), _SCAN):
        out.extend(
            i
            for i in positions[start : start + _SCAN]
            if _status(pipeline, devices[i].id) is wanted
        )
        if start + _SCAN < len(positions):
            await asyncio.sleep(0)
    return out


@router.get("", response_model=DeviceList, summary="Status of the devices, with filters, by page")
async def list_devices(
    request: Request,
    device_class: Annotated[str | None, Query(alias="class")] = None,
    floor: int | None = None,
    status_: Annotated[StatusName | None, Query(alias="status")] = None,
    owner: str | None = None,
    offset: Annotated[int, Query(ge=0, description="Matching devices to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="Devices per page")] = PAGE_DEFAULT,
) -> Any:
    """``total`` counts every matching device; ``devices`` holds ``limit`` of them from
    ``offset`` on, in inventory order. Costs the page (and, with ``status``, the devices the
    other filters leave), never the whole hall: it runs on the event loop in short slices."""
    pipeline = _hall(request).pipeline
    index = pipeline.index  # this request's view, even if a reload swaps it meanwhile
    positions = index.positions(device_class=device_class, floor=floor, owner=owner)
    if status_ is not None:
        positions = await _with_status(pipeline, index, positions, DeviceStatus(status_))
    total = len(positions)
    page = positions[offset : offset + limit]
    parts: list[bytes] = []
    for start in range(0, len(page), SLICE):
        if start:
            await asyncio.sleep(0)  # let the poll loop in between slices
        rows = [_device_out(pipeline, index.devices[i]) for i in page[start : start + SLICE]]
        parts.append(_ROWS.dump_json(rows)[1:-1])  # without the brackets: joined below
    head = b'{"total":%d,"offset":%d,"limit":%d,"devices":[' % (total, offset, limit)
    return Response(head + b",".join(parts) + b"]}", media_type="application/json")


def _find(pipeline: Pipeline, device_id: str) -> Device:
    device = pipeline.index.get(device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown device {device_id!r}")
    return device


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
    resolved = pipeline.index.checks(device)
    spec = pipeline.state.devices.get(device_id)
    if pipeline.owned is not None and device_id not in pipeline.owned:
        spec = None  # another poller's checks: their results are on that poller
    checks = []
    for name in sorted(spec.checks) if spec is not None else ():
        cs = pipeline.state.checks.get((device_id, name))
        if cs is not None and name in resolved:
            checks.append(_check_out(resolved[name], cs))
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
    responses={404: {"description": "No such device"},
               409: {"model": ElsewhereOut, "description": "Another poller polls the device"}},
    summary="Run every check of a device now",
)
async def recheck(request: Request, device_id: str) -> Any:  # on the loop: it starts tasks
    hall = _hall(request)
    pipeline = hall.pipeline
    _find(pipeline, device_id)
    if pipeline.owned is not None and device_id not in pipeline.owned:
        owner = pipeline.owners.get(device_id)
        return JSONResponse(ElsewhereOut(
            detail=f"device {device_id!r} is polled by poller {owner!r}, not by this one "
                   f"({pipeline.poller_id!r}): ask that poller to re-check it",
            poller=owner).model_dump(), status_code=status.HTTP_409_CONFLICT)
    return RecheckOut(device=device_id, queued=hall.recheck(device_id))
