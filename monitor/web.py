"""The HTTP face of the daemon: ``/metrics``, ``/-/*`` lifecycle endpoints, ``/api/v1``.

One FastAPI app; the routers live in :mod:`monitor.api`. The hall (``app.state.hall``) is what
the routes read; the store (``app.state.store``) is what the ticket routes use.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict

from monitor import __version__, pages
from monitor.api import auth, devices, inputs, limits, pollers, reports, sites, tickets
from monitor.api.auth import Auth

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class WebHall(Protocol):
    ready: bool

    async def render_metrics(self) -> bytes: ...
    async def render_metrics_gzip(self) -> bytes: ...

    async def reload(self) -> Any: ...



class ReloadOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    changed: bool
    problems: list[str]


lifecycle = APIRouter(tags=["lifecycle"])
MAX_BODY_BYTES = 64 * 1024  # tickets and windows are small; refuse anything larger early


@lifecycle.get("/-/healthy", response_class=PlainTextResponse, summary="The process is up")
def healthy() -> str:
    return "Healthy.\n"


@lifecycle.get(
    "/-/ready",
    response_class=PlainTextResponse,
    responses={503: {"description": "Inventory not loaded or first cycle not done"}},
    summary="Inventory loaded and every check has run once",
)
def ready(request: Request) -> Response:
    if request.app.state.hall.ready:
        return PlainTextResponse("Ready.\n")
    return PlainTextResponse("Not ready: first polling cycle in progress.\n", status_code=503)


@lifecycle.post(
    "/-/reload",
    response_model=ReloadOut,
    responses={
        401: {"description": "Missing or bad token"},
        403: {"description": "Token lacks the admin role, or a remote caller without tokens"},
        422: {"description": "The inventory has problems; the previous one stays in force"},
    },
    summary="Reload inventory.yaml (keeps the last good one on failure)",
    dependencies=[Depends(auth.require_or_local("admin"))],
)
async def reload(request: Request) -> Any:
    hall: WebHall = request.app.state.hall
    outcome = await hall.reload()
    body = ReloadOut(
        ok=outcome.ok, changed=outcome.changed, problems=[str(p) for p in outcome.problems]
    )
    if not outcome.ok:
        # 422 as a number: Starlette renamed the constant (a DeprecationWarning under pytest).
        raise HTTPException(422, body.model_dump())
    return body


@lifecycle.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    hall: WebHall = request.app.state.hall
    if _accepts_gzip(request.headers.get("accept-encoding")):
        # Held and sent compressed (10k devices: 13 MB of text -> ~1 MB); Prometheus asks for
        # gzip on every scrape.
        packed = await hall.render_metrics_gzip()
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Response(packed, media_type=CONTENT_TYPE_LATEST, headers=headers)
    body = await hall.render_metrics()
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Vary": "Accept-Encoding"})


def _accepts_gzip(header: str | None) -> bool:
    """``gzip`` (or ``*``) listed in Accept-Encoding and not refused with ``q=0``."""
    for part in (header or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.replace(" ", "").lower()
        if not q.startswith("q=") or _q(q[2:]) > 0:
            return True
    return False


def _q(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 1.0


_LINKS = [
    ("/status", "Status board / 设备状态"),
    ("/tickets", "Tickets / 维修工单"),
    ("/metrics", "Prometheus metrics"),
    ("/api/v1/devices", "Devices and their status"),
    ("/api/v1/tickets", "Maintenance tickets"),
    ("/api/v1/tickets/tally?period=month", "Ticket tally by month"),
    ("/docs", "API documentation (OpenAPI)"),
    ("/-/healthy", "Health"),
    ("/-/ready", "Readiness"),
]


@lifecycle.get("/", response_class=HTMLResponse, include_in_schema=False)
def landing(request: Request) -> str:
    site = html.escape(request.app.state.site_name)
    items = "".join(f'<li><a href="{u}">{html.escape(t)}</a></li>' for u, t in _LINKS)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>hallmon — {site}</title>"
        f"</head><body><h1>hallmon {__version__}</h1><p>{site}</p><ul>{items}</ul>"
        "</body></html>"
    )


_ERROR_SCHEMA = {"type": "object", "properties": {"detail": {"type": "string"}},
                 "required": ["detail"]}
# Operations on the daemon itself (auth.require_or_local): without a tokens file, a caller on this
# machine needs no token.
LOCAL_OPERATIONS = frozenset({("/-/reload", "post"),
                              ("/api/v1/devices/{device_id}/recheck", "post")})


def _document_app_wide(app: FastAPI) -> None:
    """What the OpenAPI document cannot learn from the routes: the refusals of the request
    limits in front of every route (414, 431; 413 where a body is taken), and when a bearer
    token is optional: reads with open reads (every GET route needs the viewer role, which
    anyone has then), and the local operations without a tokens file. (FastAPI documents every
    HTTPBearer dependency as required.)"""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        open_reads = app.state.auth.open_reads
        local = not app.state.auth_configured and app.state.local_trust
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                for code, why in limits.REFUSALS.items():
                    if code != 413 or "requestBody" in op:
                        responses.setdefault(str(code), {"description": why, "content": {
                            "application/json": {"schema": _ERROR_SCHEMA}}})
                if "security" in op and ((method == "get" and open_reads)
                                         or (local and (path, method) in LOCAL_OPERATIONS)):
                    op["security"] = [*op["security"], {}]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    hall: Any,
    *,
    site_name: str,
    store: Any = None,
    auth_: Auth | None = None,
    extra_routers: Sequence[APIRouter] = (),
    local_trust: bool = True,
) -> FastAPI:
    """``store``: the AsyncStore the ticket routes use; ``auth_``: tokens and roles (None: the
    API is read-only and open, and ``/-/reload`` is accepted from this machine only, or from
    nobody with ``local_trust=False``)."""
    app = FastAPI(
        title="hallmon",
        version=__version__,
        description="Device status, maintenance tickets and tallies of the service hall.",
        docs_url=None,  # monitor/pages serves /docs from the package (FastAPI's loads a CDN)
        redoc_url=None,
    )
    limits.install(app, max_body_bytes=MAX_BODY_BYTES)
    app.state.hall = hall
    app.state.site_name = site_name
    app.state.store = store
    app.state.auth = auth_ or Auth(open_reads=True)
    app.state.auth_configured = auth_ is not None
    app.state.local_trust = local_trust
    _document_app_wide(app)
    app.include_router(lifecycle)
    for router in (
        devices.router,
        tickets.router,
        tickets.windows_router,
        reports.router,
        inputs.push_router,
        inputs.events_router,
        pollers.router,
        sites.router,
        *extra_routers,
    ):
        app.include_router(router, prefix="/api/v1")
    pages.install(app)
    return app
