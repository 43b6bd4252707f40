"""The status board: ``/status`` (staff) and ``/status/public`` (the lobby screen).

The hall by floor and area as in the inventory, one tile per device in the dashboards' colours.
The page polls ``data.json`` every few seconds: one character per tile (``STATUS_CHARS``) in page
order, the counts, and (staff only) the open incidents and the devices in maintenance. The
layout is built once per inventory; a request reads ``HallState.statuses`` once per tile and the
pipeline's open incidents (O(devices) dictionary reads, no scan of devices x checks). The page
itself is rendered in a worker thread from a snapshot taken on the loop.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from monitor.inventory import Device, Inventory
from monitor.inventory.windows import active_window
from monitor.pages import i18n, render
from monitor.pages.session import astore, signed_in
from monitor.pipeline import INCIDENT_STATUSES, Pipeline
from monitor.state import DeviceStatus

STATUS_CHARS = {"up": "u", "degraded": "g", "maintenance": "m", "unreachable": "r",
                "down": "d", "unknown": "n"}
CHAR_STATUS = {c: s for s, c in STATUS_CHARS.items()}
REFRESH_MS = 2000
REASONS_TTL = 5.0  # seconds the maintenance reasons (two store reads) are reused
MAX_LISTED = 100  # incidents / devices in maintenance listed by name; the rest are counted


@dataclass(frozen=True, slots=True)
class Tile:
    i: int  # position in the status string
    id: str
    name: str
    title: str


@dataclass(frozen=True, slots=True)
class Area:
    name: str | None
    tiles: tuple[Tile, ...]


@dataclass(frozen=True, slots=True)
class Floor:
    floor: int | None
    areas: tuple[Area, ...]


@dataclass(frozen=True, slots=True)
class Layout:
    floors: tuple[Floor, ...]
    ids: tuple[str, ...]
    gen: str  # changes when the layout does: the page reloads itself


def build_layout(devices: Iterable[Device]) -> Layout:
    """Floors ascending (no floor last); areas and devices in inventory order."""
    floors: dict[int | None, dict[str | None, list[Device]]] = {}
    for d in devices:
        floors.setdefault(d.location.floor, {}).setdefault(d.location.area, []).append(d)
    order = sorted(floors, key=lambda f: (f is None, f or 0))
    ids: list[str] = []
    out = []
    for f in order:
        areas = []
        for area, members in floors[f].items():
            tiles = []
            for d in members:
                tiles.append(Tile(len(ids), d.id, d.name, f"{d.id} · {d.class_}"))
                ids.append(d.id)
            areas.append(Area(area, tuple(tiles)))
        out.append(Floor(f, tuple(areas)))
    digest = hashlib.sha256()
    for fl in out:
        for ar in fl.areas:
            for t in ar.tiles:
                digest.update(f"{fl.floor}\0{ar.name}\0{t.id}\0{t.name}\n".encode())
    return Layout(tuple(out), tuple(ids), digest.hexdigest()[:16])


def public_devices(inventory: Inventory) -> list[Device]:
    """Only what the inventory marks public, under its public name."""
    return [d.model_copy(update={"name": d.public_name or d.name})
            for d in inventory.devices if d.public]


def layout_for(request: Request, inventory: Inventory, public: bool) -> Layout:
    """Cached per inventory object (a reload makes a new one)."""
    attr = "pages_public_layout" if public else "pages_layout"
    cached = getattr(request.app.state, attr, None)
    if cached is not None and cached[0] is inventory:
        return cached[1]
    layout = build_layout(public_devices(inventory) if public else inventory.devices)
    setattr(request.app.state, attr, (inventory, layout))
    return layout


def status_string(pipeline: Pipeline, ids: Iterable[str]) -> str:
    if pipeline.owned is not None:  # pollers sharing the site: the others' as the store knows
        return "".join(STATUS_CHARS[pipeline.status_of(i)[0].value] for i in ids)
    statuses = pipeline.state.statuses
    unknown = (DeviceStatus.UNKNOWN, "")
    return "".join(STATUS_CHARS[statuses.get(i, unknown)[0].value] for i in ids)


def counts(s: str) -> dict[str, int]:
    return {status: s.count(c) for status, c in STATUS_CHARS.items()}


def incidents(pipeline: Pipeline, lang: str, now: float) -> list[dict[str, Any]]:
    """Open incidents: the devices down or degraded first (the causes), then those unreachable
    behind them; longest first; at most MAX_LISTED (a core switch down makes thousands)."""
    open_ = open_incidents(pipeline)
    names = {d.id: d.name for d in pipeline.inventory.devices} if open_ else {}
    out = []
    ordered = sorted(open_.items(), key=lambda kv: (kv[1][0] is DeviceStatus.UNREACHABLE,
                                                    kv[1][2]))
    for dev, (status, cause, started) in ordered[:MAX_LISTED]:
        out.append({"id": dev, "name": names.get(dev, dev), "status": status.value,
                    "word": i18n.STATUS_WORDS[lang][status.value], "cause": cause,
                    "for": i18n.duration(now - started, lang)})
    return out


def open_incidents(pipeline: Pipeline) -> dict[str, tuple[DeviceStatus, str, float]]:
    """(status, cause, start) of each device in an incident: this poller's own, and with
    pollers sharing the site the others' devices as the store knows them."""
    out = {}
    for dev, inc in pipeline.incidents.items():
        status, cause = pipeline.state.statuses.get(dev, (inc.status, ""))
        out[dev] = (status, cause, inc.started_at)
    if pipeline.owned is not None:
        for dev, known in pipeline.peers.items():
            if dev in pipeline.owned or dev in out or dev not in pipeline.owners:
                continue
            status = DeviceStatus(known.status)
            if status in INCIDENT_STATUSES:
                out[dev] = (status, known.cause, known.since.timestamp())
    return out


async def maintenance(request: Request, pipeline: Pipeline) -> list[dict[str, str]]:
    """The devices in maintenance with why: an inventory window, an API window, or a ticket in
    progress (store reads reused for REASONS_TTL seconds)."""
    devices = sorted(pipeline.state.maintenance)
    if not devices:
        return []
    cached = getattr(request.app.state, "pages_reasons", None)
    key = (tuple(devices), id(pipeline.inventory))
    if cached is not None and cached[0] == key and time.monotonic() - cached[1] < REASONS_TTL:
        return cached[2]
    now = datetime.now(UTC)
    inventory = pipeline.inventory
    by_id = {d.id: d for d in inventory.devices}
    reasons: dict[str, str] = {}
    for dev in devices:
        device = by_id.get(dev)
        window = None if device is None else active_window(inventory, device, now)
        if window is not None:
            reasons[dev] = window.reason
    store = astore(request)
    if store is not None and len(reasons) < len(devices):
        for w in await store.active_windows(now):
            for dev in devices:
                d = by_id.get(dev)
                if dev in reasons or d is None:
                    continue
                if (w.selector, w.value) in (("device", d.id), ("class", d.class_),
                                             ("floor", str(d.location.floor))):
                    reasons[dev] = w.reason
        page, _ = await store.run(store.store.list_tickets, status="in_progress", limit=500)
        for t in page:
            if t.device_id is not None and t.device_id not in reasons:
                reasons[t.device_id] = f"#{t.id} {t.summary}"
    out = [{"id": dev, "name": by_id[dev].name if dev in by_id else dev,
            "why": reasons.get(dev, "")} for dev in devices[:MAX_LISTED]]
    request.app.state.pages_reasons = (key, time.monotonic(), out)
    return out


async def allowed(request: Request) -> bool:
    """The staff board and device pages: open while API reads are open, else signed in."""
    auth = getattr(request.app.state, "auth", None)
    return bool(getattr(auth, "open_reads", False)) or await signed_in(request) is not None


async def snapshot(request: Request, public: bool) -> dict[str, Any]:
    pipeline: Pipeline = request.app.state.hall.pipeline
    layout = layout_for(request, pipeline.inventory, public)
    lang = i18n.pick(request)
    s = status_string(pipeline, layout.ids)
    now = datetime.now(pipeline.inventory.site.tz)
    data: dict[str, Any] = {"gen": layout.gen, "s": s, "counts": counts(s),
                            "at": now.isoformat(timespec="seconds")}
    if not public:
        data["incidents"] = incidents(pipeline, lang, time.time())
        data["incidents_total"] = len(open_incidents(pipeline))
        data["maintenance"] = await maintenance(request, pipeline)
        data["maintenance_total"] = len(pipeline.state.maintenance)
    return {"layout": layout, "data": data, "lang": lang}


def _words(lang: str, public: bool) -> dict[str, str]:
    words = i18n.STATUS_WORDS[lang]
    if not public:
        return {c: words[s] for s, c in STATUS_CHARS.items()}
    t = i18n.translator(lang)
    serving = {"up", "degraded"}
    return {c: words[s] if s == "unknown" else t("in_service" if s in serving
                                                    else "out_of_service")
            for s, c in STATUS_CHARS.items()}


async def board_page(request: Request, public: bool) -> Response:
    if not public and not await allowed(request):
        return render.redirect(f"/login?next={request.url.path}")
    snap = await snapshot(request, public)
    user = None if public else await signed_in(request)
    context = {"public": public, "layout": snap["layout"], "data": snap["data"],
               "chars": STATUS_CHARS, "classes": CHAR_STATUS,
               "words": _words(snap["lang"], public), "refresh_ms": REFRESH_MS,
               "data_url": request.url.path.rstrip("/") + "/data.json"}
    # The template walks every tile: off the loop (the snapshot above is all it reads).
    return await asyncio.to_thread(_rendered, request, context, user)


GZIP_MIN_BYTES = 32 * 1024


def _rendered(request: Request, context: dict[str, Any], user: Any) -> Response:
    """The page, gzipped when large and the browser takes gzip (10k devices: 1.5 MB of HTML,
    a phone on the hall's Wi-Fi should not wait for it)."""
    response = render.page(request, "board.html", context, user=user)
    accepts = "gzip" in request.headers.get("accept-encoding", "").lower()
    if accepts and len(response.body) >= GZIP_MIN_BYTES:
        response.body = gzip.compress(response.body, 1, mtime=0)
        response.headers["Content-Encoding"] = "gzip"
        response.headers["Content-Length"] = str(len(response.body))
    response.headers["Vary"] = "Accept-Encoding"
    return response


async def board_data(request: Request, public: bool) -> Response:
    if not public and not await allowed(request):
        return render.secure(JSONResponse({"detail": "sign in"}, status_code=401))
    snap = await snapshot(request, public)
    return render.secure(JSONResponse(snap["data"]))
