"""``/status/devices/{id}``: one device for a person (the page ``notifications.link_base`` points
robot messages at): its status and why, its checks' last results, its open tickets and recent
incidents, and a button to open a ticket. Reads only this device's checks (keys from the
inventory), never a scan of every check."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from monitor.pages import i18n, render
from monitor.pages.board import STATUS_CHARS, allowed
from monitor.pages.session import astore, signed_in
from monitor.pipeline import Pipeline


async def device_page(request: Request) -> Response:
    if not await allowed(request):
        return render.redirect(f"/login?next={request.url.path}")
    pipeline: Pipeline = request.app.state.hall.pipeline
    device_id = str(request.path_params.get("device_id", ""))
    user = await signed_in(request)
    try:
        device = pipeline.inventory.device(device_id)
    except KeyError:
        t = i18n.translator(i18n.pick(request))
        return render.page(request, "message.html", {
            "message": t("field_error", field="device", msg=f"unknown device {device_id!r}")},
            status=404, user=user)
    lang = i18n.pick(request)
    status, cause, since = pipeline.status_of(device.id)  # another poller's: as stored
    checks = []
    elsewhere = pipeline.owned is not None and device.id not in pipeline.owned
    for check in () if elsewhere else pipeline.inventory.checks_for(device):
        cs = pipeline.state.checks.get((device.id, check.name))
        last = None if cs is None else cs.last
        checks.append({"name": check.name, "kind": check.kind, "role": check.role,
                       "hard": "unknown" if cs is None else cs.hard.value,
                       "ok": None if last is None else last.ok,
                       "error": None if last is None else last.error,
                       "ago": None if last is None else i18n.duration(time.time() - last.at,
                                                                        lang)})
    tickets, incidents = [], []
    store = astore(request)
    if store is not None:
        open_, _ = await store.run(store.store.list_tickets, device_id=device.id, limit=50)
        tickets = [t for t in open_ if t.status in ("open", "in_progress")]
        incidents = await store.incidents(device_id=device.id, limit=10)
    parent = None
    if device.parent is not None:
        try:
            parent = pipeline.inventory.device(device.parent)
        except KeyError:
            parent = None
    return render.page(request, "device.html", {
        "d": device, "status": status.value, "char": STATUS_CHARS[status.value], "cause": cause,
        "for": None if since is None else i18n.duration(time.time() - since, lang),
        "checks": checks, "tickets": tickets, "incidents": incidents, "parent": parent,
        "poller": None if pipeline.owned is None else pipeline.owners.get(device.id),
        "chars": STATUS_CHARS}, user=user)
