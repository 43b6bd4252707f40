"""``/api/v1/reports/{period}``: the same reports as ``hallmon report`` (md, csv, xlsx; zh, en).

With the daemon's hall at ``app.state.hall`` (its ``inventory``), every device and class is
named, availability covers devices that never failed, and it is counted over the site's opening
hours on its working days (24 h for line classes).

``site``: another hall sharing the database, reported on with the profile its daemon registered
(monitor.store.sites: its name, devices, timezone, opening hours and calendar), or ``*`` for one
report over every site, each counted on its own (see reports.build_sites_report).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from monitor.api.tickets import ERRORS, GUARDS, SITE_PATTERN, IsoDate, StoreDep, Viewer, sane_date
from monitor.inventory import Inventory
from monitor.reports import MEDIA, Hall, render, report_for_site
from monitor.store import InvalidValue
from monitor.store.engine import ALL_SITES

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
    site: Annotated[str | None, Query(pattern=SITE_PATTERN, max_length=64)] = None,
) -> Response:
    """``date``: any local date inside the period (default: today, site time). ``site``:
    another hall sharing the database, or ``*`` for every hall (default: this hall)."""
    when = sane_date(day or datetime.now(store.store.tz).date(), "date")
    inventory = getattr(getattr(request.app.state, "hall", None), "inventory", None)
    hall = Hall.of(inventory) if isinstance(inventory, Inventory) else None
    try:
        rep = await store.run(report_for_site, store.store, period, when, site, hall)
    except InvalidValue as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["query", "site"], "msg": str(exc), "type": "value_error"}]) from None
    data = await store.run(render, rep, format, lang)
    tag = "" if rep.site in ("", store.store.site) else \
        ("-all-sites" if rep.site == ALL_SITES else f"-{rep.site}")
    name = f"hallmon-{period}-{rep.label}{tag}.{format}"
    return Response(data, media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
