"""The technicians' pages: ``/tickets`` (list, filters), ``/tickets/new``, ``/tickets/{id}`` with
its audit trail and the forms to start, comment, resolve, close and reopen; ``/login``,
``/logout``. Writes go through the same store functions as ``/api/v1/tickets``."""

from __future__ import annotations

import contextlib
import logging
import time
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from monitor.inventory import Device
from monitor.pages import i18n, render
from monitor.pages.board import layout_for
from monitor.pages.session import (
    PRE_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    LoginThrottle,
    SignedIn,
    astore,
    check_password,
    client_of,
    login_token,
    same_origin,
    session_key,
    set_cookie,
    sign_session,
    signed_in,
    tokens_equal,
)
from monitor.store import AsyncStore, NewTicket, StoreError
from monitor.store.models import TICKET_STATUSES, TRANSITIONS

log = logging.getLogger("hallmon.pages")

PAGE_SIZE = 25
MAX_SUMMARY, MAX_NAME = 4000, 128
FILTERS = ("status", "category", "device_id", "floor", "assignee")
# The buttons a ticket page offers, by target status: (word, needs a resolution text).
ACTIONS = {"in_progress": "start", "resolved": "resolve", "closed": "close", "open": "reopen"}


def _safe_next(value: str | None) -> str:
    """Only a local path (never //host or a scheme): no open redirect after login."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/tickets"


def throttle(request: Request) -> LoginThrottle:
    th: LoginThrottle | None = getattr(request.app.state, "pages_throttle", None)
    if th is None:
        th = request.app.state.pages_throttle = LoginThrottle()
    return th


def _store(request: Request) -> AsyncStore:
    store = astore(request)
    if store is None:
        raise StoreError("the ticket store is not available")
    return store


# ---- sign-in ------------------------------------------------------------------------------------

async def login_form(request: Request, error: str | None = None, status: int = 200,
                     name: str = "") -> Response:
    token, fresh = await login_token(request)
    response = render.page(request, "login.html", {
        "error": error, "next": _safe_next(request.query_params.get("next")), "name": name,
        "csrf": token}, status=status)
    if fresh is not None:
        set_cookie(request, response, PRE_COOKIE, fresh, 3600, samesite="strict")
    return response


async def login(request: Request) -> Response:
    t = i18n.translator(i18n.pick(request))
    f = await render.form(request)
    name, password = f.get("name", "")[:MAX_NAME], f.get("password", "")
    want, fresh = await login_token(request)
    if fresh is not None or not same_origin(request) or not tokens_equal(f.get("csrf"), want):
        return await login_form(request, t("bad_csrf"), 403, name)
    th = throttle(request)
    wait = th.wait(name, client_of(request))
    if wait > 0:
        return await login_form(request, t("throttled", m=max(1, round(wait / 60))), 429, name)
    user = await check_password(_store(request), name, password)
    if user is None:
        th.failed(name, client_of(request))
        return await login_form(request, t("bad_login"), 401, name)
    th.succeeded(name)
    key = await session_key(request)
    assert key is not None
    response = render.redirect(_safe_next(f.get("next")))
    set_cookie(request, response, SESSION_COOKIE, sign_session(key, user, time.time()),
               SESSION_SECONDS)
    response.delete_cookie(PRE_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    who = await signed_in(request)
    f = await render.form(request)
    if who is not None and (not same_origin(request) or not tokens_equal(f.get("csrf"),
                                                                         who.csrf)):
        return _refuse(request, who, "bad_csrf")
    response = render.redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _refuse(request: Request, who: SignedIn | None, key: str) -> Response:
    t = i18n.translator(i18n.pick(request))
    return render.page(request, "message.html", {"message": t(key)}, status=403, user=who)


async def _need(request: Request, role: str) -> SignedIn | Response:
    """The signed-in user with at least ``role``; else the login page or a 403."""
    who = await signed_in(request)
    if who is None:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return render.redirect(f"/login?next={quote(nxt, safe='/')}")
    if not who.may(role):
        return _refuse(request, who, "forbidden")
    return who


async def _posted(request: Request, role: str) -> tuple[SignedIn, dict[str, str]] | Response:
    """A form POST: signed in with ``role``, same origin, the session's CSRF token."""
    who = await _need(request, role)
    if isinstance(who, Response):
        return who
    f = await render.form(request)
    if not same_origin(request) or not tokens_equal(f.get("csrf"), who.csrf):
        return _refuse(request, who, "bad_csrf")
    return who, f


# ---- tickets ------------------------------------------------------------------------------------

async def list_page(request: Request) -> Response:
    who = await _need(request, "viewer")
    if isinstance(who, Response):
        return who
    q = request.query_params
    filters = {k: q.get(k) or None for k in FILTERS}
    if filters["status"] not in (None, *TICKET_STATUSES):
        filters["status"] = None
    if q.get("mine"):
        filters["assignee"] = who.name
    try:
        offset = max(0, min(int(q.get("offset", "0")), 2**31))
    except ValueError:
        offset = 0
    store = _store(request)
    clipped = {k: (v[:MAX_NAME] if v else None) for k, v in filters.items()}
    rows, total = await store.run(lambda: store.store.list_tickets(
        limit=PAGE_SIZE, offset=offset, opened_from=None, opened_to=None, **clipped))
    keep = {k: v for k, v in filters.items() if v}

    def page_url(off: int) -> str:
        return "/tickets?" + urlencode({**keep, "offset": off})

    return render.page(request, "tickets.html", {
        "rows": rows, "total": total, "filters": filters, "statuses": TICKET_STATUSES,
        "categories": store.store.categories, "offset": offset, "size": PAGE_SIZE,
        "prev_url": page_url(max(0, offset - PAGE_SIZE)) if offset else None,
        "next_url": page_url(offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None,
        "names": _device_names(request),
    }, user=who)


def _devices(request: Request) -> list[Device]:
    hall = getattr(request.app.state, "hall", None)
    pipeline = getattr(hall, "pipeline", None)
    return list(pipeline.inventory.devices) if pipeline is not None else []


def _device_names(request: Request) -> dict[str, str]:
    return {d.id: d.name for d in _devices(request)}


async def new_page(request: Request, who: SignedIn | None = None, error: str | None = None,
                   values: dict[str, str] | None = None) -> Response:
    if who is None:
        got = await _need(request, "technician")
        if isinstance(got, Response):
            return got
        who = got
    store = _store(request)
    v = values or {"device_id": request.query_params.get("device", "")}
    pipeline = request.app.state.hall.pipeline
    return render.page(request, "ticket_new.html", {
        "layout": layout_for(request, pipeline.inventory, public=False),
        "categories": store.store.categories,
        "v": v, "error": error}, status=422 if error else 200, user=who)


async def create(request: Request) -> Response:
    got = await _posted(request, "technician")
    if isinstance(got, Response):
        return got
    who, f = got
    t = i18n.translator(i18n.pick(request))
    store = _store(request)
    device_id = f.get("device_id") or None
    device = None
    if device_id is not None:
        with contextlib.suppress(KeyError):
            device = request.app.state.hall.pipeline.inventory.device(device_id)
    problem = None
    if device_id is not None and device is None:
        problem = t("field_error", field="device_id", msg=f"unknown device {device_id!r}")
    elif not f.get("summary"):
        problem = t("field_error", field="summary", msg=t("required"))
    elif len(f["summary"]) > MAX_SUMMARY or "\x00" in f["summary"]:
        problem = t("field_error", field="summary", msg=f"at most {MAX_SUMMARY} characters")
    elif f.get("category") not in store.store.categories:
        problem = t("field_error", field="category", msg=f"not one of {store.store.categories}")
    if problem is not None:
        return await new_page(request, who, problem, f)
    loc = device.location if device is not None else None
    try:
        ticket = await store.create_ticket(NewTicket(
            category=f["category"], summary=f["summary"], reporter=who.name,
            device_id=device_id, device_class=device.class_ if device else None,
            floor=None if loc is None or loc.floor is None else str(loc.floor),
            owner=device.owner if device else None,
            assignee=(f.get("assignee") or None) and f["assignee"][:MAX_NAME]))
    except StoreError as exc:
        return await new_page(request, who, str(exc), f)
    return render.redirect(f"/tickets/{ticket.id}")


def _ticket_id(request: Request) -> int | None:
    raw = request.path_params.get("ticket_id", "")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**31 else None


async def show(request: Request, who: SignedIn | None = None, error: str | None = None
               ) -> Response:
    if who is None:
        got = await _need(request, "viewer")
        if isinstance(got, Response):
            return got
        who = got
    tid = _ticket_id(request)
    store = _store(request)
    try:
        if tid is None:
            raise StoreError("no such ticket")
        ticket = await store.get_ticket(tid)
        events = await store.ticket_events(tid)
    except StoreError as exc:
        return render.page(request, "message.html", {"message": str(exc)}, status=404,
                           user=who)
    actions = [(to, "back_to_open" if (ticket.status, to) == ("in_progress", "open")
                else ACTIONS[to])
               for to in ("in_progress", "resolved", "closed", "open")
               if to in TRANSITIONS[ticket.status]]
    return render.page(request, "ticket.html", {
        "tk": ticket, "events": events, "actions": actions, "error": error,
        "device_name": _device_names(request).get(ticket.device_id or "", "")},
        status=409 if error else 200, user=who)


async def transition(request: Request) -> Response:
    got = await _posted(request, "technician")
    if isinstance(got, Response):
        return got
    who, f = got
    tid = _ticket_id(request)
    to = f.get("to", "")
    if tid is None or to not in TICKET_STATUSES:
        return await show(request, who, f"to: expected one of {', '.join(TICKET_STATUSES)}")
    try:
        await _store(request).transition(tid, to, who.name, (f.get("note") or None),
                                         resolution=f.get("resolution") or None)
    except StoreError as exc:
        return await show(request, who, str(exc))
    # to or out of in_progress: its device's maintenance applies now, not at the next
    # refresh (as the API's transitions do; monitor/api/tickets.py apply_maintenance)
    try:
        await request.app.state.hall.refresh_maintenance()
    except Exception:
        log.exception("applying maintenance after ticket #%d failed; the next refresh will", tid)
    return render.redirect(f"/tickets/{tid}")


async def comment(request: Request) -> Response:
    got = await _posted(request, "technician")
    if isinstance(got, Response):
        return got
    who, f = got
    tid = _ticket_id(request)
    text = f.get("text", "")
    if tid is None or not text or len(text) > MAX_SUMMARY:
        t = i18n.translator(i18n.pick(request))
        return await show(request, who, t("field_error", field="text", msg=t("required")))
    try:
        await _store(request).comment(tid, who.name, text)
    except StoreError as exc:
        return await show(request, who, str(exc))
    return render.redirect(f"/tickets/{tid}")
