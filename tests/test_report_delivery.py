"""Scheduled reports reach a real SMTP server (aiosmtpd) as an attachment and a robot (the
DingTalk-like capture server) as key figures with a link, once, across a restart at the moment
the report is due (issue 15). Each "process" is a fresh ReportSender and Delivery on the same
database; clocks are driven."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from openpyxl import load_workbook

from monitor.alerts import Delivery, build_channels
from monitor.inventory import Inventory
from monitor.inventory.load import parse_inventory
from monitor.report_delivery import ReportSender
from monitor.store import NewTicket, Store
from tests.agents.proc import free_port
from tests.agents.vendors import VendorServer

# Tuesday 2025-03-04 18:00 in Shanghai: the daily report of that day falls due (closing time)
DUE = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


class Inbox:
    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append(msg)
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def hall(smtp_port: int, ding_url: str) -> Inventory:
    """Through the loader, as the daemon reads it (channel secrets resolved from the env)."""
    return parse_inventory(yaml.safe_dump({
        "site": {"name": "测试政务服务中心", "timezone": "Asia/Shanghai",
                 "opening_hours": "Mon-Fri 08:30-18:00"},
        "devices": [{"id": "line-egov", "name": "电子政务外网专线", "class": "line",
                     "address": "127.20.0.4"}],
        "reports": [{"period": "day", "route": "management"},
                    {"period": "week", "route": "management", "format": "md"}],
        "notifications": {
            "link_base": "http://127.0.0.1:9108",
            "channels": {
                "mail": {"type": "email", "host": "127.0.0.1", "port": smtp_port,
                         "security": "none", "sender": "hallmon@hall.test",
                         "recipients": ["director@hall.test"], "timeout": "5s"},
                "ding": {"type": "dingtalk", "webhook": "${T_DING_URL}"},
            },
            "routes": [{"name": "management", "channels": ["mail", "ding"]}],
        },
    }, allow_unicode=True), env={"T_DING_URL": ding_url})


class Process:
    """What the daemon runs for reports: the sender and the outbox worker, on one store."""

    def __init__(self, db: str, inv: Inventory, now: datetime) -> None:
        self.now = now
        self.store = Store(db, timezone="Asia/Shanghai")
        self.sender = ReportSender(self.store, lambda: inv, lambda: self.now)
        self.inv = inv

    async def deliver(self) -> int:
        async with httpx.AsyncClient() as client:
            delivery = Delivery(self.store, build_channels(self.inv.notifications), client,
                                lambda: self.now)
            return await delivery.run_once()

    def close(self) -> None:
        self.store.close()


async def test_a_due_report_is_sent_once_across_a_restart(smtp: Any, tmp_path: Path) -> None:
    inbox, port = smtp
    db = f"sqlite:///{tmp_path / 'hall.db'}"
    with VendorServer(token="robot-token") as robots:
        inv = hall(port, robots.dingtalk_url)
        first = Process(db, inv, DUE - timedelta(minutes=1))
        first.store.create_ticket(NewTicket(category="fault", summary="专线中断", reporter="li",
                                            device_id="line-egov"), at=DUE - timedelta(hours=3))
        assert first.sender.run_once() == 0  # 17:59: not yet due (and nothing older is sent)
        first.now = DUE
        assert first.sender.run_once() == 2  # the daily report, to mail and robot
        first.close()  # killed at the due moment, before the outbox worker sent anything

        second = Process(db, inv, DUE)  # restarted at the same moment
        assert second.sender.run_once() == 0  # already in the outbox: not built again
        assert await second.deliver() == 2
        second.now = DUE + timedelta(minutes=5)
        assert second.sender.run_once() == 0 and await second.deliver() == 0
        second.close()

        third = Process(db, inv, DUE + timedelta(hours=1))  # and once more, later that day
        assert third.sender.run_once() == 0 and await third.deliver() == 0
        third.close()

        assert len(inbox.mails) == 1
        mail = inbox.mails[0]
        assert mail["Subject"] == "测试政务服务中心 运维报告(日报) 2025-03-04"
        (part,) = list(mail.iter_attachments())
        assert part.get_filename() == "hallmon-day-2025-03-04.xlsx"
        data = part.get_content()
        assert isinstance(data, bytes)
        wb = load_workbook(io.BytesIO(data))
        assert wb["关键指标"]["A1"].value.startswith("测试政务服务中心 运维报告(日报) 2025-03-04")
        assert [c.value for c in wb["关键指标"][5]][:2] == ["新建工单", 1]
        wb.close()
        body = mail.get_body(("plain",))
        assert body is not None and "新建工单：1（上期 0，去年同期 0）" in body.get_content()

        (ding,) = robots.bodies("dingtalk")
        text = ding["markdown"]["text"]
        assert ding["markdown"]["title"] == "测试政务服务中心 运维报告(日报) 2025-03-04"
        assert "- 新建工单：1（上期 0，去年同期 0）" in text
        assert ("[完整报告](http://127.0.0.1:9108/api/v1/reports/day?date=2025-03-04"
                "&format=xlsx&lang=zh)") in text


async def test_the_weekly_report_waits_for_the_first_working_day(smtp: Any,
                                                                 tmp_path: Path) -> None:
    inbox, port = smtp
    db = f"sqlite:///{tmp_path / 'hall.db'}"
    with VendorServer(token="robot-token") as robots:
        inv = hall(port, robots.dingtalk_url)
        # installed on Friday; stopped over the weekend; Monday 2025-03-10 09:00 Shanghai:
        # Friday's daily report is caught up, last week's report (md) is due, Monday's not yet
        p = Process(db, inv, datetime(2025, 3, 7, 1, 0, tzinfo=UTC))
        assert p.sender.run_once() == 0
        p.now = datetime(2025, 3, 10, 1, 0, tzinfo=UTC)
        assert p.sender.run_once() == 4
        keys = sorted(i.key for i in p.store.due(p.now, 100))
        assert [k for k in keys if k.startswith("report:week")] == [
            "report:week:2025-03-03:md:zh:management:ding",
            "report:week:2025-03-03:md:zh:management:mail"]
        assert [k for k in keys if k.startswith("report:day")] == [
            "report:day:2025-03-07:xlsx:zh:management:ding",
            "report:day:2025-03-07:xlsx:zh:management:mail"]
        await p.deliver()
        p.close()
    names = [next(iter(m.iter_attachments())).get_filename() for m in inbox.mails]
    assert "hallmon-week-2025-W10" + ".md" in names  # (split: not a document reference)


def test_the_daemon_sends_a_report_due_at_a_crash_once_after_restart(tmp_path: Path) -> None:
    """The real daemon: the report falls due while SMTP and the robot API are out; the daemon
    is killed (-9) right then; restarted with both back, it sends the report exactly once."""
    import time as wall
    from zoneinfo import ZoneInfo

    from tests.agents.daemon import HallmonProcess, node, small_inventory

    tz = ZoneInfo("Asia/Shanghai")
    now = datetime.now(tz)
    # the next whole minute at least 15 s away (the daemon is up and has run once by then)
    due = (now + timedelta(seconds=15)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    doc = yaml.safe_load(small_inventory([node("sw-1", "127.30.0.1")]))
    smtp_port = free_port()
    inbox = Inbox()
    with VendorServer(token="robot-token") as robots:
        robots.down = True
        doc["site"]["calendar"] = {"workdays": [due.date()]}  # due today, whatever the day
        doc["reports"] = [{"period": "day", "when": f"{due:%H:%M}", "route": "management"}]
        doc["notifications"] = {
            "channels": {
                "mail": {"type": "email", "host": "127.0.0.1", "port": smtp_port,
                         "security": "none", "sender": "hallmon@hall.test",
                         "recipients": ["director@hall.test"], "timeout": "2s"},
                "ding": {"type": "dingtalk", "webhook": "${T_DING_URL}"},
            },
            "routes": [{"name": "management", "channels": ["mail", "ding"]}],
            "delivery": {"backoff_initial": "1s", "backoff_max": "2s", "poll_interval": "1s"},
        }
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
        with HallmonProcess(tmp_path, text, env={"T_DING_URL": robots.dingtalk_url}) as d:
            d.wait_for(lambda: "report day" in d.log() and "enqueued" in d.log(),
                       (due - datetime.now(tz)).total_seconds() + 60, "the report enqueued")
            d.wait_for(lambda: robots.hits > 0, 20, "a first attempt at the robot")
            d.kill()  # at the due moment, nothing delivered
            assert inbox.mails == [] and robots.accepted == []
            robots.down = False
            controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
            controller.start()
            try:
                d.start()
                d.wait_for(lambda: len(inbox.mails) == 1 and len(robots.accepted) == 1, 60,
                           "the report on both channels")
                wall.sleep(3)  # the sender and the worker have run again since
                d.stop()
                d.start()  # and once more, a clean restart
                wall.sleep(3)
            finally:
                controller.stop()
        assert len(inbox.mails) == 1 and len(robots.accepted) == 1
        assert inbox.mails[0]["Subject"] == f"测试大厅 运维报告(日报) {due.date().isoformat()}"
        assert robots.accepted[0].body["markdown"]["title"] == inbox.mails[0]["Subject"]
