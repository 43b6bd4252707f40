"""Pages for people who never open Grafana, rendered by hallmon itself (Jinja2, no other host).

    /status, /status/public     the status board (staff; the lobby screen) and their data.json
    /status/devices/{id}        one device (robot messages link here: notifications.link_base)
    /tickets ...                the technicians' ticket pages (sign-in: /login, /logout)
    /docs                       the API reference, offline
    /static/...                 the pages' own CSS and script (package data)

``install(app)`` adds them to the FastAPI app (monitor/web.py calls it). The board reads the
hall (``app.state.hall.pipeline``), the rest the store (``app.state.store``), as the API does.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from monitor.pages import board, device, docs, render, tickets
from monitor.store import StoreError

Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(endpoint: Endpoint) -> Endpoint:
    """A store that cannot be reached is a 503 page, not a stack trace."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except StoreError as exc:
            return render.page(request, "message.html", {"message": str(exc)}, status=503)

    return wrapper


async def _status(request: Request) -> Response:
    return await board.board_page(request, public=False)


async def _status_public(request: Request) -> Response:
    return await board.board_page(request, public=True)


async def _status_data(request: Request) -> Response:
    return await board.board_data(request, public=False)


async def _status_public_data(request: Request) -> Response:
    return await board.board_data(request, public=True)


ROUTES: list[tuple[str, Endpoint, list[str]]] = [
    ("/status", _status, ["GET"]),
    ("/status/data.json", _status_data, ["GET"]),
    ("/status/public", _status_public, ["GET"]),
    ("/status/public/data.json", _status_public_data, ["GET"]),
    ("/status/devices/{device_id}", device.device_page, ["GET"]),
    ("/login", tickets.login_form, ["GET"]),
    ("/login", tickets.login, ["POST"]),
    ("/logout", tickets.logout, ["POST"]),
    ("/tickets", tickets.list_page, ["GET"]),
    ("/tickets/new", tickets.new_page, ["GET"]),
    ("/tickets/new", tickets.create, ["POST"]),
    ("/tickets/{ticket_id}", tickets.show, ["GET"]),
    ("/tickets/{ticket_id}/transition", tickets.transition, ["POST"]),
    ("/tickets/{ticket_id}/comment", tickets.comment, ["POST"]),
    ("/docs", docs.docs_page, ["GET"]),
]


def install(app: FastAPI) -> None:
    router = APIRouter()
    for path, endpoint, methods in ROUTES:
        router.add_route(path, _guarded(endpoint), methods=methods, include_in_schema=False)
    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("monitor.pages", "static")]), name="static")
