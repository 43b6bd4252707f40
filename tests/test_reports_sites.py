"""Reports across sites (issue 17): two halls share one database, in different timezones, with
different opening hours and working-day calendars, and both have a ``kiosk-1f-03``.

Found as: reports were built for the running daemon's own site only (its calendar, hours and
zone); another hall's could not be had, nor one over every hall. Each daemon now registers its
site's reporting profile in the store; a report for ``site=<id>`` uses that site's profile and
``site=*`` counts each site on its own. Every figure checked here is compared with a direct
count over the stored rows (tickets by their opening instant in the site's own zone; downtime as
the incidents clipped to the site's opening hours on its working days, listed by hand below).
Outages are seeded by running the real pipeline at a driven clock, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
import yaml
from openpyxl import load_workbook

from monitor.api.auth import Auth
from monitor.cli import main
from monitor.inventory import Inventory
from monitor.pipeline import Pipeline
from monitor.reports import Hall, Label, build_report, build_sites_report, render
from monitor.store import NewTicket, Store, schema
from monitor.store.aio import AsyncStore
from monitor.tally import tally
from monitor.web import create_app
from tests.conftest import Clock
from tests.test_pipeline import FAIL, OK, check

KIOSK, PRINTER = "kiosk-1f-03", "prn-1f-01"
WEEK = (date(2025, 3, 3), date(2025, 3, 9))  # Mon..Sun; the report asks for the week of 03-05


@dataclass(frozen=True)
class Site:
    id: str
    zone: str
    hours: str
    open_at: time
    close_at: time
    holidays: tuple[str, ...]
    workdays: tuple[str, ...]
    working_days: tuple[date, ...]  # of WEEK, worked out by hand (national calendar + overrides)


SITES = {
    # Shanghai, Mon-Fri 08:30-18:00, Tuesday 2025-03-04 a day off of its own
    "hall-a": Site("hall-a", "Asia/Shanghai", "Mon-Fri 08:30-18:00", time(8, 30), time(18),
                   ("2025-03-04",), (), tuple(date(2025, 3, d) for d in (3, 5, 6, 7))),
    # Berlin (UTC+1 in March), Mon-Sat 09:00-17:00, Saturday 2025-03-08 a make-up working day
    "hall-b": Site("hall-b", "Europe/Berlin", "Mon-Sat 09:00-17:00", time(9), time(17),
                   (), ("2025-03-08",), tuple(date(2025, 3, d) for d in range(3, 9))),
}

# (device, local start, minutes down) per site, in the site's own zone
OUTAGES = {
    "hall-a": [(KIOSK, datetime(2025, 3, 3, 10, 0), 30),   # inside hours: 30
               (KIOSK, datetime(2025, 3, 4, 10, 0), 20),   # its own day off: 0
               (PRINTER, datetime(2025, 3, 5, 17, 50), 20)],  # 10 before closing
    "hall-b": [(KIOSK, datetime(2025, 3, 3, 8, 50), 30),   # 20 after opening
               (KIOSK, datetime(2025, 3, 8, 10, 0), 15)],  # the make-up Saturday: 15
}
# One instant, two local days: Sunday 21:00 in Berlin (this week), Monday 04:00 in Shanghai (next)
LATE_SUNDAY = datetime(2025, 3, 9, 20, 0, tzinfo=UTC)


def inventory(site: Site) -> Inventory:
    return Inventory.model_validate(inventory_doc(site), context={"env": {}})


def inventory_doc(site: Site) -> dict[str, object]:
    return {
        "site": {"id": site.id, "name": f"大厅 {site.id}", "timezone": site.zone,
                 "opening_hours": site.hours,
                 "calendar": {"holidays": list(site.holidays), "workdays": list(site.workdays)}},
        "defaults": {"interval": "10s", "timeout": "2s", "failure_threshold": 1,
                     "success_threshold": 1},
        "credentials": {"ro": {"version": "2c", "community": "${COMMUNITY:-public}"}},
        "devices": [
            {"id": KIOSK, "name": f"{site.id} 自助终端3号", "class": "kiosk",
             "address": "127.20.1.13", "credential": "ro"},
            {"id": PRINTER, "name": f"{site.id} 打印机", "class": "printer",
             "address": "127.20.1.31", "credential": "ro"},
        ],
        "tickets": {"auto": [{"classes": ["kiosk"], "when": ["down"]}]},
    }


async def seed(url: str, site: Site) -> AsyncStore:
    """The site's daemon side: its store, its registration, its outages through the pipeline."""
    inv = inventory(site)
    tz = ZoneInfo(site.zone)
    first = datetime(2025, 3, 2, 12, 0, tzinfo=tz)
    clock = Clock(first.timestamp())  # the pipeline's and the store's (tickets' opening time)
    store = Store(url, timezone=site.zone, site=site.id,
                  clock=lambda: datetime.fromtimestamp(clock.now, UTC))
    store.register_site(inv.site.name, site.zone, site.hours, len(inv.devices),
                        Hall.of(inv).profile())
    astore = AsyncStore(store)
    p = Pipeline(inv, store=astore, clock=clock)

    async def ping(device: str, result: object, at: datetime) -> None:
        clock.now = at.timestamp()
        await p.handle(check(inv, device, "ping"), result)  # type: ignore[arg-type]
        for task in list(p._ticket_tasks.values()):
            await task
        await astore.drain()

    for dev in (KIOSK, PRINTER):
        await ping(dev, OK, first)
    for dev, start, minutes in OUTAGES[site.id]:
        at = start.replace(tzinfo=tz)
        await ping(dev, FAIL, at)
        await ping(dev, OK, at + timedelta(minutes=minutes))
    store.create_ticket(NewTicket(summary="late call", category="other", reporter="t",
                                  device_id=KIOSK), at=LATE_SUNDAY)
    clock.now = datetime(2025, 3, 20, tzinfo=UTC).timestamp()  # the week is over when asked
    return astore


@pytest.fixture
async def halls(url: str) -> AsyncIterator[dict[str, Store]]:
    stores = {sid: await seed(url, s) for sid, s in SITES.items()}
    yield {sid: st.store for sid, st in stores.items()}
    for st in stores.values():
        await st.aclose()


# ---- the direct count: raw rows, hand-listed working days --------------------------------------
def week_utc(site: Site) -> tuple[datetime, datetime]:
    tz = ZoneInfo(site.zone)
    return (datetime.combine(WEEK[0], time(), tz).astimezone(UTC),
            datetime.combine(WEEK[1] + timedelta(days=1), time(), tz).astimezone(UTC))


def open_spans(site: Site) -> list[tuple[datetime, datetime]]:
    tz = ZoneInfo(site.zone)
    return [(datetime.combine(d, site.open_at, tz).astimezone(UTC),
             datetime.combine(d, site.close_at, tz).astimezone(UTC)) for d in site.working_days]


def direct(store: Store, site: Site) -> dict[str, object]:
    """Tickets opened in the site's week, and per device: down seconds inside its opening
    hours and down incidents started in the week, straight from the rows."""
    lo, hi = week_utc(site)
    T, incidents = schema.tickets, schema.incidents
    with store.engine.connect() as conn:
        tickets = conn.execute(sa.select(sa.func.count()).select_from(T).where(
            T.c.site == site.id, T.c.opened_at >= lo, T.c.opened_at < hi)).scalar_one()
        rows = conn.execute(sa.select(incidents.c.device_id, incidents.c.started_at,
                                      incidents.c.ended_at).where(
            incidents.c.site == site.id, incidents.c.status == "down")).all()
    down: dict[str, float] = {KIOSK: 0.0, PRINTER: 0.0}
    failures: dict[str, int] = {KIOSK: 0, PRINTER: 0}
    for dev, start, end in rows:
        failures[dev] += lo <= start < hi
        for a, b in open_spans(site):
            down[dev] += max(0.0, (min(end, b) - max(start, a)).total_seconds())
    observed = sum((b - a).total_seconds() for a, b in open_spans(site))
    return {"tickets": tickets, "down": down, "failures": failures, "observed": observed}


def downtime(rows: list[list[object]]) -> dict[tuple[object, ...], tuple[object, ...]]:
    """A downtime section by its key (site and device, or device): incidents, down min, %."""
    return {tuple(r[:-7]): (r[-4], r[-3], r[-1]) for r in rows}


def expected_downtime(ref: dict[str, object]) -> dict[str, tuple[object, ...]]:
    down, failures = ref["down"], ref["failures"]
    assert isinstance(down, dict) and isinstance(failures, dict)
    observed = ref["observed"]
    assert isinstance(observed, float)
    return {d: (failures[d], round(down[d] / 60, 1), round((1 - down[d] / observed) * 100, 3))
            for d in down if down[d] or failures[d]}


def test_the_seeding_is_what_the_scenario_says(halls: dict[str, Store]) -> None:
    """The reference itself, checked against the story (so a wrong reference cannot pass)."""
    a, b = (direct(halls[s], SITES[s]) for s in ("hall-a", "hall-b"))
    assert a["down"] == {KIOSK: 30 * 60, PRINTER: 10 * 60}
    assert b["down"] == {KIOSK: 35 * 60, PRINTER: 0.0}
    assert a["failures"] == {KIOSK: 2, PRINTER: 1} and b["failures"] == {KIOSK: 2, PRINTER: 0}
    assert a["tickets"] == 2 and b["tickets"] == 3  # the late call is in B's week only


def test_a_named_sites_report_counts_on_its_own_profile(halls: dict[str, Store]) -> None:
    for sid, site in SITES.items():
        ref = direct(halls[sid], site)
        # read through hall A's store, as hall A's daemon serves ``site=<id>``
        view = halls["hall-a"].for_site(sid)
        assert view.tz.key == site.zone
        profile = view.site_profiles(sid)[sid]
        rep = build_report(view, "week", date(2025, 3, 5), Hall.from_profile(sid, profile))
        assert (rep.start, rep.end, rep.timezone, rep.site) == (*WEEK, site.zone, sid)
        summary = {r[0].key: r[1] for r in rep.section("summary").rows
                   if isinstance(r[0], Label)}
        assert summary["opened"] == ref["tickets"]
        got = downtime(rep.section("downtime").rows)
        assert got == {(d,): v for d, v in expected_downtime(ref).items()}
        assert len(rep.section("ticket_list").rows) == ref["tickets"]
        # the same as the site's own daemon builds it from its inventory
        own = build_report(halls[sid], "week", date(2025, 3, 5), Hall.of(inventory(site)))
        assert render(own, "csv", "en") == render(rep, "csv", "en")


def test_a_report_over_every_site_keeps_each_site_apart(halls: dict[str, Store]) -> None:
    every = halls["hall-a"].for_site("*")
    profiles = every.site_profiles("*")
    assert sorted(profiles) == ["hall-a", "hall-b"]
    rep = build_sites_report(every, "week", date(2025, 3, 5),
                             {s: Hall.from_profile(s, p) for s, p in profiles.items()})
    refs = {sid: direct(halls[sid], site) for sid, site in SITES.items()}
    # the key figures: one row per site, then the totals
    rows = {r[0] if isinstance(r[0], str) else "total": r for r in rep.section("sites").rows}
    assert [rows[s][2] for s in SITES] == ["Asia/Shanghai", "Europe/Berlin"]
    for sid in SITES:
        assert rows[sid][3] == refs[sid]["tickets"]
    assert rows["total"][3] == sum(r["tickets"] for r in refs.values())  # type: ignore[misc]
    down = sum(sum(r["down"].values()) for r in refs.values())  # type: ignore[attr-defined]
    observed = sum(r["observed"] * 2 for r in refs.values())  # type: ignore[operator]
    assert rows["total"][7] == round((1 - down / observed) * 100, 3)  # two devices a site
    assert rows["total"][9] == round(down / 60, 1)
    # availability keyed by (site, device): kiosk-1f-03 is two rows, each on its own hours
    got = downtime(rep.section("downtime").rows)
    assert got == {(sid, d): v for sid in SITES
                   for d, v in expected_downtime(refs[sid]).items()}
    assert (("hall-a", KIOSK) in got) and (("hall-b", KIOSK) in got)
    tickets = rep.section("ticket_list").rows
    assert {s: sum(r[0] == s for r in tickets) for s in SITES} == {
        s: refs[s]["tickets"] for s in SITES}
    # every section carries the site column; per-class rows stay per site
    assert all(s.columns[0] == "site" for s in rep.sections[1:])
    assert {(r[0], r[1].key) for r in rep.section("availability").rows} == {
        (s, c) for s in SITES for c in ("kiosk", "printer")}


def test_the_spreadsheet_and_csv_carry_the_site(halls: dict[str, Store]) -> None:
    every = halls["hall-b"].for_site("*")
    rep = build_sites_report(every, "week", date(2025, 3, 5), {
        s: Hall.from_profile(s, p) for s, p in every.site_profiles("*").items()})
    text = render(rep, "csv", "en").decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["All sites Maintenance report (weekly) 2025-W10"]
    head = lines.index(["Incidents and downtime"]) + 1
    assert lines[head][:3] == ["Site", "Device", "Name"]
    assert {tuple(r[:2]) for r in lines[head + 1:head + 4]} == {
        ("hall-a", KIOSK), ("hall-a", PRINTER), ("hall-b", KIOSK)}
    wb = load_workbook(io.BytesIO(render(rep, "xlsx", "zh")))
    ws = wb["故障与停机"]
    assert [c.value for c in ws[2]][:2] == ["站点", "设备编号"]
    assert {(r[0], r[1]) for r in ws.iter_rows(min_row=3, values_only=True)} == {
        ("hall-a", KIOSK), ("hall-a", PRINTER), ("hall-b", KIOSK)}
    # times are each site's own wall time: B's Saturday outage at 10:00 Berlin
    ws = wb["工单清单"]
    opened = {(r[0], r[2]) for r in ws.iter_rows(min_row=3, values_only=True)}
    assert ("hall-b", datetime(2025, 3, 8, 10, 0)) in opened
    assert ("hall-a", datetime(2025, 3, 3, 10, 0)) in opened


async def test_the_api_reports_a_site_or_every_site_and_lists_the_sites(
    halls: dict[str, Store],
) -> None:
    """Hall A's daemon answers for hall B and for every hall; hall B's profile is the one B
    registered (A does not know B's calendar)."""
    inv_a = inventory(SITES["hall-a"])
    astore = AsyncStore(halls["hall-a"])
    app = create_app(SimpleNamespace(inventory=inv_a, ready=True), site_name="hall A",
                     store=astore, auth_=Auth(open_reads=True))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hall") as client:
            r = await client.get("/api/v1/sites")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["site"] == "hall-a"
            assert [(s["id"], s["timezone"], s["opening_hours"], s["devices"], s["this"])
                    for s in body["sites"]] == [
                ("hall-a", "Asia/Shanghai", "Mon-Fri 08:30-18:00", 2, True),
                ("hall-b", "Europe/Berlin", "Mon-Sat 09:00-17:00", 2, False)]

            async def report(**params: str) -> httpx.Response:
                return await client.get("/api/v1/reports/week", params={
                    "date": "2025-03-05", "format": "csv", "lang": "en", **params})

            r = await report(site="hall-b")
            assert r.status_code == 200, r.text
            assert "hall-b" in r.headers["content-disposition"]
            ref_b = build_report(halls["hall-b"], "week", date(2025, 3, 5),
                                 Hall.of(inventory(SITES["hall-b"])))
            assert r.content == render(ref_b, "csv", "en")
            mine = await report()
            ref_a = build_report(halls["hall-a"], "week", date(2025, 3, 5), Hall.of(inv_a))
            assert mine.content == render(ref_a, "csv", "en")
            every = await report(site="*")
            assert every.status_code == 200 and "all-sites" in every.headers[
                "content-disposition"]
            assert every.content.decode("utf-8-sig").startswith("All sites")
            r = await report(site="nowhere")  # well-formed, never registered
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["query", "site"]
            assert "'nowhere' is not registered" in r.json()["detail"][0]["msg"]
            r = await report(site="Hall B")
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "site"]
    finally:
        await astore.aclose()


def test_a_site_registers_again_with_its_new_profile(url: str) -> None:
    site = SITES["hall-a"]
    store = Store(url, timezone=site.zone, site=site.id)
    try:
        inv = inventory(site)
        for n in (2, 1):  # a reload removed a device
            devices = inv.devices[:n]
            store.register_site("A", site.zone, site.hours, len(devices), {"n": n})
        (row,) = store.list_sites()
        assert (row.id, row.name, row.devices) == ("hall-a", "A", 1)
        assert store.site_profiles("hall-a") == {"hall-a": {"n": 1}}
    finally:
        store.close()


def test_two_sites_in_two_zones_keep_their_own_local_days(url: str) -> None:
    """One database, two zones: each site's tickets get their own zone's local day, and a site
    joining in another zone is not refused (it was: the zone was one per database)."""
    a = Store(url, timezone="Asia/Shanghai", site="hall-a")
    a.create_ticket(NewTicket(summary="a", category="fault", reporter="t"), at=LATE_SUNDAY)
    b = Store(url, timezone="Europe/Berlin", site="hall-b")
    b.create_ticket(NewTicket(summary="b", category="fault", reporter="t"), at=LATE_SUNDAY)
    try:
        with a.engine.connect() as conn:
            days = dict(conn.execute(sa.select(schema.tickets.c.site,
                                               schema.tickets.c.local_day)).all())
        assert days == {"hall-a": 20250310, "hall-b": 20250309}
        reopened = Store(url, site="hall-b")  # no zone given: the one hall B recorded
        assert reopened.tz.key == "Europe/Berlin"
        assert a.for_site("hall-b").tz.key == "Europe/Berlin"
        reopened.rebuild_tally()  # hall B's tally only, in B's zone
        reopened.close()
        c = Store(url, site="hall-c")  # no zone given, none recorded: the database's first
        c.create_ticket(NewTicket(summary="c", category="fault", reporter="t"), at=LATE_SUNDAY)
        c.close()
        with a.engine.begin() as conn:  # an older tally table: every site's is rebuilt
            conn.execute(sa.delete(schema.store_meta).where(
                schema.store_meta.c.key == "tally_version"))
        Store(url, timezone="Europe/Berlin", site="hall-b").close()
        with a.engine.connect() as conn:
            days = dict(conn.execute(sa.select(schema.tickets.c.site,
                                               schema.tickets.c.local_day)).all())
        assert days == {"hall-a": 20250310, "hall-b": 20250309, "hall-c": 20250310}
        per_site = {st.site: sum(r.count for r in tally(st, "day", date(2025, 3, 9),
                                                         date(2025, 3, 10)))
                    for st in (a, b, a.for_site("hall-c"))}
        assert per_site == {"hall-a": 1, "hall-b": 1, "hall-c": 1}
    finally:
        a.close()
        b.close()


def test_the_cli_reports_another_hall_and_every_hall(
    halls: dict[str, Store], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """``hallmon report --site``: hall A's technician, with A's inventory, asks for B's week
    and for every hall's; the same bytes as B's own report and the API's."""
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump(inventory_doc(SITES["hall-a"]), allow_unicode=True),
                   encoding="utf-8")
    db = halls["hall-a"].url
    common = ["--period", "week", "--date", "2025-03-05", "--format", "csv", "--lang", "en",
              "--db", db, "--inventory", str(inv)]
    out = tmp_path / "b.csv"
    assert main(["report", *common, "--site", "hall-b", "-o", str(out)]) == 0
    ref = build_report(halls["hall-b"], "week", date(2025, 3, 5),
                       Hall.of(inventory(SITES["hall-b"])))
    assert out.read_bytes() == render(ref, "csv", "en")
    assert main(["report", *common, "--site", "*", "-o", str(out)]) == 0
    assert out.read_bytes().decode("utf-8-sig").startswith("All sites")
    assert main(["report", *common, "--site", "nowhere"]) == 2
    assert "--site: site 'nowhere' is not registered" in capsys.readouterr().err
