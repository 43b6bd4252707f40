"""Scheduled reports, delivered: each report of the inventory's ``reports:`` schedule that is due
goes to its route's e-mail channels as an attachment and to its robot channels (DingTalk, WeCom,
Feishu) as a message with the key figures and a link to the full report.

Delivery is the alert outbox's: one outbox row per (report, channel) with the idempotency key
``report:<period>:<start>:<format>:<language>:<route>:<channel>``. The sender may run any number
of times, before and after a restart, at the due moment or long after: a report whose rows are
in the outbox is never built or enqueued again, so it is sent once (retried until it lands, like
every notification). Reports due while the daemon was stopped are caught up (for up to
``LOOKBACK_DAYS``), but never those due before the sender first ran on this store (recorded in
store_meta as ``reports_since``): a new installation does not send last week's reports.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, text

from monitor.alerts.base import Message
from monitor.inventory import Inventory
from monitor.reports import MEDIA, Hall, Report, build_report, render, t, title
from monitor.store import Store, schema
from monitor.store.migrations import PG_LOCK_ID
from monitor.store.schema import DEFAULT_SITE
from monitor.workdays import Due, WorkCalendar, due_reports

log = logging.getLogger("hallmon.reports")
LOOKBACK_DAYS = 7
REPORT_CHANNELS = ("email", "dingtalk", "wecom", "feishu")  # not webhooks/Alertmanager: no alert


def report_link(link_base: str | None, due: Due) -> str | None:
    if not link_base:
        return None
    s = due.schedule
    return (f"{link_base.rstrip('/')}/api/v1/reports/{due.period}?date={due.start.isoformat()}"
            f"&format={s.format}&lang={s.language}")


def key_figures(report: Report, lang: str) -> list[str]:
    """The summary's figures as lines: '新建工单：12（上期 9，去年同期 15）'."""
    out = []
    for row in report.section("summary").rows[2:]:
        name, cur, prev, last = t(row[0].key, lang), row[1], row[2], row[3]
        if lang == "zh":
            out.append(f"{name}：{_fmt(cur)}（上期 {_fmt(prev)}，去年同期 {_fmt(last)}）")
        else:
            out.append(f"{name}: {_fmt(cur)} (previous {_fmt(prev)}, last year {_fmt(last)})")
    return out


def _fmt(v: object) -> str:
    return "-" if v is None else str(v)


def report_message(report: Report, due: Due, data: bytes, channel: str, route: str,
                   link: str | None, now: datetime) -> Message:
    lang, fmt = due.schedule.language, due.schedule.format
    heading = title(report, lang)
    lines = key_figures(report, lang)
    more = ("完整报告" if lang == "zh" else "Full report")
    text = "\n".join([heading, "", *lines] + ([f"\n{more}: {link}"] if link else []))
    markdown = "\n".join([f"### {heading}", "", *(f"- {x}" for x in lines)]
                         + ([f"\n[{more}]({link})"] if link else []))
    name = f"hallmon-{report.period}-{report.label}.{fmt}"
    return Message(
        key=f"{due.key}:{channel}", route=route, kind="report", status="resolved",
        title=heading, text=text, markdown=markdown, created_at=now.isoformat(),
        attachments=({"filename": name, "content_type": MEDIA[fmt].split(";")[0],
                      "data": base64.b64encode(data).decode()},),
    )



def since_key(site: str) -> str:
    """The store_meta key of a site's ``reports_since``: a hall joining a shared database
    (issue 17) starts from its own first day, not from the first hall's. "default" keeps the
    key single-site stores have; a long site id is hashed to fit the 64-character key."""
    if site == DEFAULT_SITE:
        return "reports_since"
    key = f"reports_since@{site}"
    digest = hashlib.sha256(site.encode()).hexdigest()[:48]
    return key if len(key) <= 64 else "reports_since#" + digest

class ReportSender:
    """Enqueues the reports that are due; ``run_once`` is blocking (call it in a thread)."""

    def __init__(self, store: Store, inventory: Callable[[], Inventory],
                 clock: Callable[[], datetime], on_enqueued: Callable[[], None] = lambda: None,
                 interval: float = 30.0) -> None:
        self.store = store
        self.inventory = inventory
        self.clock = clock
        self.on_enqueued = on_enqueued
        self.interval = interval
        self.sent_total = 0

    def run_once(self) -> int:
        """Enqueue every report due by now (and not enqueued before); returns how many rows."""
        inv = self.inventory()
        now = self.clock()
        since = self._since(now)
        today = now.astimezone(inv.site.tz).date()
        routes = {r.name: r for r in inv.notifications.routes}
        added = 0
        cal = WorkCalendar.of(inv.site)
        for due in due_reports(inv.reports, inv.site, today - timedelta(days=LOOKBACK_DAYS),
                               today, cal):
            route = routes.get(due.schedule.route or "")
            if due.at > now or due.at < since or route is None:
                continue
            channels = [c for c in route.channels
                        if inv.notifications.channels[c].type in REPORT_CHANNELS]
            keys = {c: f"{due.key}:{c}" for c in channels}
            missing = [c for c in channels if not self._enqueued(keys[c])]
            if not missing:
                continue
            report = build_report(self.store, due.period, due.start, Hall.of(inv), now=now)
            data = render(report, due.schedule.format, due.schedule.language)
            link = report_link(inv.notifications.link_base, due)
            for c in missing:
                msg = report_message(report, due, data, c, route.name, link, now)
                added += self.store.enqueue(msg.key, c, msg.to_payload(), at=now)
            log.info("report %s %s due %s: enqueued for %s", due.period, due.start,
                     due.at.isoformat(), ", ".join(missing))
        if added:
            self.sent_total += added
            self.on_enqueued()
        return added

    def _since(self, now: datetime) -> datetime:
        meta = schema.store_meta
        with self.store.tx() as conn:
            if conn.dialect.name == "postgresql":  # pollers sharing the site start together
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_ID})
            key = since_key(self.store.write_site)
            got = conn.execute(select(meta.c.value).where(meta.c.key == key)
                               ).scalar_one_or_none()
            if got is None:
                conn.execute(meta.insert().values(key=key, value=now.isoformat()))
                return now
        return datetime.fromisoformat(got)

    def _enqueued(self, key: str) -> bool:
        with self.store.read() as conn:
            return conn.execute(select(schema.outbox.c.id).where(
                schema.outbox.c.key == key, *self.store.of_site(schema.outbox))).first() is not None

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("scheduled reports failed; trying again")
            await asyncio.sleep(self.interval)
