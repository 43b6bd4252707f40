"""``/api/v1/tickets``, ``/api/v1/tickets/tally`` and ``/api/v1/maintenance-windows``.

The routes use the AsyncStore at ``request.app.state.store`` (see ``get_store``) and the Auth at
``request.app.state.auth``. Reads need the viewer role (open if ``Auth.open_reads``); writes need
technician; deleting a maintenance window needs admin.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from monitor import tally as tally_mod
from monitor.api.auth import AUTH_RESPONSES, ErrorOut, Principal, require
from monitor.store import (
    AsyncStore,
    InvalidTransition,
    InvalidValue,
    NewTicket,
    NotFound,
    Store,
)
from monitor.store.models import StoreError

log = logging.getLogger("hallmon.api")

MAX_BODY = 64 * 1024
# No NUL (PostgreSQL text refuses it) and bounded lengths everywhere.
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00]+$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[^\x00]+$")]
EARLIEST, LATEST = date(1971, 1, 1), date(2999, 12, 31)


def _iso_only(value: Any) -> Any:
    """Accept ISO 8601 text only (pydantic would also take 1700000000 as a timestamp)."""
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        return value
    if isinstance(value, date):
        return value
    raise ValueError("expected an ISO 8601 date/time such as 2025-03-07T09:30:00+08:00")


def _sane_instant(value: datetime) -> datetime:
    """Within the years of EARLIEST..LATEST (year 0001 at +08:00 overflowed converting to UTC)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc.date() <= LATEST:
        raise ValueError(f"date/time must be within {EARLIEST}..{LATEST}")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_sane_instant)]
IsoDate = Annotated[date, BeforeValidator(_iso_only)]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
Status = Literal["open", "in_progress", "resolved", "closed"]
SITE_PATTERN = r"^(\*|[a-z0-9][a-z0-9._-]{0,63})$"
Period = Literal["day", "week", "month", "quarter", "year"]
GroupBy = Literal["category", "class", "floor", "owner", "assignee", "status"]


def get_store(request: Request) -> AsyncStore:
    """The AsyncStore at ``app.state.store`` (preferred: the daemon's own, one writer thread).
    A plain Store there is wrapped once, on its own thread, and kept at app.state."""
    state = request.app.state
    store = getattr(state, "store", None)
    if isinstance(store, AsyncStore):
        return store
    if isinstance(store, Store):
        wrapped = getattr(state, "tickets_astore", None)
        if wrapped is None or wrapped.store is not store:
            wrapped = state.tickets_astore = AsyncStore(store)
        return wrapped
    raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "ticket store not available")


async def limit_body(request: Request) -> None:
    """413 for bodies over MAX_BODY, whether or not Content-Length was sent. (FastAPI reads the
    body before dependencies run; to refuse a huge chunked body before buffering it, the app
    also mounts limits.RequestLimits.)"""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_BODY} bytes")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_BODY} bytes")


def sane_date(d: date, field: str) -> date:
    """Dates far outside the log's life would overflow timezone arithmetic: refuse them."""
    if not EARLIEST <= d <= LATEST:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["query", field], "msg": f"date must be within {EARLIEST}..{LATEST}",
             "type": "value_error"}])
    return d


def _query_names(dependant: Any) -> Iterator[str]:
    yield from (p.alias for p in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


async def forbid_unknown_query(request: Request) -> None:
    """Unknown or repeated query parameters are mistakes (a misspelt filter must not silently
    list everything). Linear in the number of keys (a count per key, one pass), and that number
    is bounded before routing (limits.RequestLimits)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = set(_query_names(dependant))
    counts = Counter(k for k, _ in request.query_params.multi_items())
    problems = [(k, "unknown query parameter") for k in sorted(counts.keys() - known)]
    # Every parameter here is a single value: a repeated one would silently keep the last.
    problems += [(k, "given more than once") for k, n in sorted(counts.items()) if n > 1]
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["query", name], "msg": msg, "type": "value_error"}
            for name, msg in problems[:20]])


StoreDep = Annotated[AsyncStore, Depends(get_store)]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Technician = Annotated[Principal, Depends(require("technician"))]
Admin = Annotated[Principal, Depends(require("admin"))]


class ValidationOut(BaseModel):
    detail: list[dict[str, Any]]


ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    400: {"model": ErrorOut, "description": "Body is not valid JSON"},
    404: {"model": ErrorOut, "description": "No such ticket or window"},
    413: {"model": ErrorOut, "description": "Request body too large"},
    422: {"model": ValidationOut, "description": "Invalid input"},
    503: {"model": ErrorOut, "description": "The ticket store is not available"},
}


@contextmanager
def store_errors() -> Iterator[None]:
    """The store's expected errors as HTTP answers (422 keeps FastAPI's validation shape)."""
    try:
        yield
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except InvalidTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except (InvalidValue, StoreError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from None


# ---- models ---------------------------------------------------------------------------------
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketIn(_In):
    category: Name
    summary: Text
    device_id: Name | None = None
    device_class: Name | None = None
    floor: Name | None = None
    owner: Name | None = None
    assignee: Name | None = None


class TicketPatch(_In):
    summary: Text | None = None
    category: Name | None = None
    assignee: Name | None = None
    resolution: Text | None = None
    device_id: Name | None = None
    device_class: Name | None = None
    floor: Name | None = None
    owner: Name | None = None


class TransitionIn(_In):
    to: Status
    note: Text | None = None
    resolution: Text | None = None


class CommentIn(_In):
    text: Text


class _Out(BaseModel):
    @classmethod
    def of(cls, row: object) -> Self:
        """The API shape of a store row (a dataclass with the same field names)."""
        return cls.model_validate(row, from_attributes=True)


class TicketOut(_Out):
    id: int
    device_id: str | None
    device_class: str | None
    floor: str | None
    owner: str | None
    category: str
    status: Status
    summary: str
    resolution: str | None
    reporter: str
    assignee: str | None
    source: str
    incident_id: int | None
    opened_at: datetime
    updated_at: datetime
    started_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None


class EventOut(_Out):
    id: int
    at: datetime
    actor: str
    kind: str
    field: str | None
    old: str | None
    new: str | None
    note: str | None


class TicketDetailOut(BaseModel):
    ticket: TicketOut
    events: list[EventOut]


class TicketPageOut(BaseModel):
    items: list[TicketOut]
    total: int
    limit: int
    offset: int


class TallyRowOut(BaseModel):
    period: str
    group: str | None
    count: int


class TallyOut(BaseModel):
    period: Period
    start: date
    end: date
    group_by: GroupBy | None
    total: int
    rows: list[TallyRowOut]


class WindowIn(_In):
    selector: Literal["device", "class", "floor"]
    value: Name
    starts_at: IsoDatetime
    ends_at: IsoDatetime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 366)
    reason: Text


class WindowOut(_Out):
    id: int
    selector: str
    value: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


# ---- tickets --------------------------------------------------------------------------------
GUARDS = [Depends(forbid_unknown_query)]
router = APIRouter(prefix="/tickets", tags=["tickets"], responses=ERRORS, dependencies=GUARDS)


@router.get("", summary="List tickets, newest first")
async def list_tickets(
    store: StoreDep, _: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    category: Annotated[Name | None, Query()] = None,
    device_id: Annotated[Name | None, Query()] = None,
    device_class: Annotated[Name | None, Query()] = None,
    floor: Annotated[Name | None, Query()] = None,
    owner: Annotated[Name | None, Query()] = None,
    assignee: Annotated[Name | None, Query()] = None,
    source: Annotated[Literal["manual", "auto", "import"] | None, Query()] = None,
    opened_from: Annotated[IsoDatetime | None, Query()] = None,
    opened_to: Annotated[IsoDatetime | None, Query()] = None,
) -> TicketPageOut:
    with store_errors():
        page, total = await store.run(
            store.store.list_tickets, limit=limit, offset=offset, opened_from=opened_from,
            opened_to=opened_to, status=status_, category=category, device_id=device_id,
            device_class=device_class, floor=floor, owner=owner, assignee=assignee,
            source=source)
    return TicketPageOut(items=[TicketOut.of(t) for t in page], total=total, limit=limit,
                         offset=offset)


@router.post("", status_code=201, summary="Open a ticket", dependencies=[Depends(limit_body)])
async def create_ticket(request: Request, body: TicketIn, store: StoreDep,
                        who: Technician) -> TicketOut:
    """With the daemon's inventory at hand, ``device_id`` must be one of its devices, and the
    ticket takes the device's class, floor and owner (fields given in the body win)."""
    fields = body.model_dump()
    inventory = getattr(getattr(request.app.state, "hall", None), "inventory", None)
    if body.device_id is not None and inventory is not None:
        try:
            known = inventory.ticket_device(body.device_id)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body", "device_id"], "msg": str(exc), "type": "value_error"}]) from None
        fields.update({k: fields[k] or v for k, v in known.items()})
    with store_errors():
        t = await store.create_ticket(NewTicket(reporter=who.name, **fields))
    return TicketOut.of(t)


@router.get("/tally", summary="Count tickets by period (site-local) and one dimension")
async def tally(
    store: StoreDep, _: Viewer,
    period: Period = "month",
    start: Annotated[IsoDate | None, Query(alias="from")] = None,
    end: Annotated[IsoDate | None, Query(alias="to")] = None,
    group_by: GroupBy | None = None,
    category: Annotated[Name | None, Query()] = None,
    device_class: Annotated[Name | None, Query()] = None,
    floor: Annotated[Name | None, Query()] = None,
    owner: Annotated[Name | None, Query()] = None,
    assignee: Annotated[Name | None, Query()] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    site: Annotated[str | None, Query(pattern=SITE_PATTERN, max_length=64)] = None,
) -> TallyOut:
    """``from``/``to`` are local dates, inclusive; default: the current year. Filters narrow the
    tickets counted (equality; each filter's groups partition the unfiltered total). ``site``:
    another hall sharing the database, or ``*`` for every hall (default: this hall)."""
    today = datetime.now(store.store.tz).date()
    lo = sane_date(start or date(today.year, 1, 1), "from")
    hi = sane_date(end or date(today.year, 12, 31), "to")
    if hi < lo or (hi - lo) > timedelta(days=366 * 50):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["query", "to"], "msg": "need from <= to within 50 years",
             "type": "value_error"}])
    with store_errors():
        filters = {k: v for k, v in {"category": category, "class": device_class,
                                         "floor": floor, "owner": owner, "assignee": assignee,
                                         "status": status_}.items() if v is not None}
        of = store.store if site is None else store.store.for_site(site)
        rows = await store.run(tally_mod.tally, of, period, lo, hi, group_by, filters)
    return TallyOut(period=period, start=lo, end=hi, group_by=group_by,
                    total=sum(r.count for r in rows),
                    rows=[TallyRowOut(period=r.period, group=r.group, count=r.count)
                          for r in rows])


@router.get("/{ticket_id}", summary="One ticket with its audit trail")
async def show_ticket(ticket_id: Id, store: StoreDep, _: Viewer) -> TicketDetailOut:
    with store_errors():
        t = await store.get_ticket(ticket_id)
        events = await store.ticket_events(ticket_id)
    return TicketDetailOut(ticket=TicketOut.of(t), events=[EventOut.of(e) for e in events])


@router.patch("/{ticket_id}", summary="Edit fields (status changes go through transitions)",
              dependencies=[Depends(limit_body)])
async def update_ticket(ticket_id: Id, body: TicketPatch, store: StoreDep,
                        who: Technician) -> TicketOut:
    with store_errors():
        t = await store.update_ticket(ticket_id, who.name, body.model_dump(exclude_unset=True))
    return TicketOut.of(t)


async def apply_maintenance(request: Request) -> None:
    """A window added or deleted, or a ticket moved to or out of in_progress, changes which
    devices are in maintenance: apply it before answering, not at the daemon's next refresh
    (up to 15 s later, while a device already failing could still be paged). The write has
    landed either way, so a failure here is logged and left to that refresh."""
    refresh = getattr(getattr(request.app.state, "hall", None), "refresh_maintenance", None)
    if refresh is None:  # an app without a daemon behind it (tests of the routes alone)
        return
    try:
        await refresh()
    except Exception:
        log.exception("applying maintenance after %s %s failed; the next refresh will",
                      request.method, request.url.path)


@router.post("/{ticket_id}/transitions", summary="Move a ticket to another status",
             dependencies=[Depends(limit_body)],
             responses={409: {"model": ErrorOut, "description": "Transition not allowed"}})
async def transition(request: Request, ticket_id: Id, body: TransitionIn, store: StoreDep,
                     who: Technician) -> TicketOut:
    with store_errors():
        t = await store.transition(ticket_id, body.to, who.name, body.note,
                                   resolution=body.resolution)
    await apply_maintenance(request)
    return TicketOut.of(t)


@router.post("/{ticket_id}/comments", status_code=201, summary="Comment on a ticket",
             dependencies=[Depends(limit_body)])
async def comment(ticket_id: Id, body: CommentIn, store: StoreDep, who: Technician) -> EventOut:
    with store_errors():
        e = await store.comment(ticket_id, who.name, body.text)
    return EventOut.of(e)


# ---- maintenance windows ------------------------------------------------------------------------
windows_router = APIRouter(prefix="/maintenance-windows", tags=["maintenance"],
                           responses=ERRORS, dependencies=GUARDS)


@windows_router.get("", summary="Current and future maintenance windows")
async def list_windows(store: StoreDep, _: Viewer, include_past: bool = False
                       ) -> list[WindowOut]:
    ws = await store.run(store.store.windows, include_past=include_past)
    return [WindowOut.of(w) for w in ws]


def _unknown_selection(request: Request, selector: str, value: str) -> str | None:
    """Why a window's device, class or floor is none of the daemon's inventory (None: it is,
    or there is no inventory at hand)."""
    inventory = getattr(getattr(request.app.state, "hall", None), "inventory", None)
    if inventory is None:
        return None
    devices = inventory.devices
    if selector == "floor":
        floors = sorted({d.location.floor for d in devices if d.location.floor is not None})
        if value in {str(f) for f in floors}:
            return None
        return f"unknown floor {value!r} (the inventory has {', '.join(map(str, floors))})"
    known = [d.id for d in devices] if selector == "device" else sorted(
        inventory.device_classes())
    if value in known:
        return None
    import difflib

    close = difflib.get_close_matches(value, known, n=1)
    return f"unknown {selector} {value!r}" + (f" (did you mean '{close[0]}'?)" if close else "")


@windows_router.post("", status_code=201, summary="Add a window (end or duration)",
                     dependencies=[Depends(limit_body)])
async def add_window(request: Request, body: WindowIn, store: StoreDep,
                     who: Technician) -> WindowOut:
    if (body.ends_at is None) == (body.duration_minutes is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["body"], "msg": "give exactly one of ends_at or duration_minutes",
             "type": "value_error"}])
    problem = _unknown_selection(request, body.selector, body.value)
    if problem:  # a typo would put nothing in maintenance, and the device would be paged
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["body", "value"], "msg": problem, "type": "value_error"}])
    try:
        ends = body.ends_at or body.starts_at + timedelta(minutes=body.duration_minutes or 0)
    except OverflowError:
        ends = datetime.max.replace(tzinfo=body.starts_at.tzinfo)
    with store_errors():
        w = await store.run(store.store.add_window, body.selector, body.value, body.starts_at,
                            ends, body.reason, who.name)
    await apply_maintenance(request)
    return WindowOut.of(w)


@windows_router.delete("/{window_id}", status_code=204, summary="Delete a window",
                       response_class=Response)
async def delete_window(request: Request, window_id: Id, store: StoreDep, _: Admin) -> Response:
    with store_errors():
        await store.run(store.store.delete_window, window_id)
    await apply_maintenance(request)
    return Response(status_code=204)
