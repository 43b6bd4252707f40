"""``/api/v1/reports/{period}``: the same reports as ``hallmon report`` (md, csv, xlsx; zh, en).

With the daemon's hall at ``app.state.hall`` (its ``inventory``), every device and class is
named, availability covers devices that never failed, and it is counted over the site's opening
hours on its working days (24 h for line classes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from monitor.api.tickets import ERRORS, GUARDS, IsoDate, StoreDep, Viewer, sane_date
from monitor.inventory import Inventory
from monitor.reports import MEDIA, Hall, build_report, render

router = APIRouter(prefix="/reports", tags=["reports"], responses=ERRORS, dependencies=GUARDS)



@router.get(
    "/{period}",
    summary="Report of the period containing a date",
    response_class=Response,
    responses={200: {"description": "The report file",
                     "content": {m.split(";")[0]: {"schema": {"type": "string"}}
                                 for m in MEDIA.values()}}},
)
async def report(
    request: Request,
    store: StoreDep,
    _: Viewer,
    period: Literal["day", "week", "month", "quarter", "year"],
    day: Annotated[IsoDate | None, Query(alias="date")] = None,
    format: Literal["md", "csv", "xlsx"] = "md",
    lang: Literal["zh", "en"] = "zh",
) -> Response:
    """``date``: any local date inside the period (default: today, site time)."""
    when = sane_date(day or datetime.now(store.store.tz).date(), "date")
    inventory = getattr(getattr(request.app.state, "hall", None), "inventory", None)
    hall = Hall.of(inventory) if isinstance(inventory, Inventory) else None
    rep = await store.run(build_report, store.store, period, when, hall)
    data = await store.run(render, rep, format, lang)
    name = f"hallmon-{period}-{rep.label}.{format}"
    return Response(data, media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
