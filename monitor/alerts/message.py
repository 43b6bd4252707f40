"""Rendering: what the engine decided to say, in Chinese (default) or English.

Pure functions over values: the engine hands a ``Group`` and gets a ``Message`` back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from monitor.alerts.base import AlertEvent, AlertItem, Message, MessageKind

Lang = Literal["zh", "en"]

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "down": "故障",
        "degraded": "异常",
        "flapping": "频繁抖动",
        "unreachable": "不可达",
        "up": "恢复",
        "repeat": "仍未恢复",
        "class": "类别",
        "location": "位置",
        "owner": "负责人",
        "since": "开始",
        "lasted": "持续",
        "cause": "原因",
        "children": "连带不可达",
        "behind": "上级设备故障",
        "link": "详情",
        "floor": "{}楼",
        "window": "{}号窗口",
        "sep": "、",
        "and_more": "等 {} 台设备",
        "test": "测试消息：通知通道 {} 工作正常",
        "digest": "汇总 {} 条通知",
        "blip": "{}{}，已恢复",
    },
    "en": {
        "down": "DOWN",
        "degraded": "DEGRADED",
        "flapping": "FLAPPING",
        "unreachable": "UNREACHABLE",
        "up": "RECOVERED",
        "repeat": "STILL DOWN",
        "class": "class",
        "location": "location",
        "owner": "owner",
        "since": "since",
        "lasted": "lasted",
        "cause": "cause",
        "children": "unreachable behind it",
        "behind": "parent down",
        "link": "details",
        "floor": "floor {}",
        "window": "window {}",
        "sep": ", ",
        "and_more": "and {} more",
        "test": "Test message: route {} works",
        "digest": "digest of {} notifications",
        "blip": "{} {}, RECOVERED",
    },
}

ALERTNAMES = {
    "down": "HallDeviceDown",
    "degraded": "HallDeviceDegraded",
    "flapping": "HallDeviceFlapping",
    "unreachable": "HallDeviceUnreachable",
}


@dataclass(frozen=True, slots=True)
class Firing:
    """A device that pages, with the children that went unreachable behind it."""

    event: AlertEvent
    children: tuple[AlertEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Recovery:
    event: AlertEvent  # the transition to up (or maintenance)
    fired: Firing  # what it ends
    # The outage began and ended inside one group window: nobody was told it began, so the
    # recovery tells both ("DOWN 14s, recovered"), whatever the route's send_resolved says.
    untold: bool = False


@dataclass(frozen=True, slots=True)
class Group:
    """Everything one route says in one message."""

    firing: tuple[Firing, ...] = ()
    orphans: tuple[AlertEvent, ...] = ()  # unreachable, parent not paged on this route
    repeats: tuple[Firing, ...] = ()
    recoveries: tuple[Recovery, ...] = ()
    # Incidents told earlier that gave way to another status (down -> degraded): no chat line
    # (the new status is told), but their alerts resolve for Alertmanager/webhook receivers,
    # whose alert names differ per status (else HallDeviceDown stayed firing for ever).
    superseded: tuple[Recovery, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.firing or self.orphans or self.repeats or self.recoveries)


@dataclass(frozen=True, slots=True)
class Style:
    lang: Lang = "zh"
    tz: tzinfo | None = None
    link_base: str | None = None


def message_key(route: str, kind: str, parts: Iterable[str]) -> str:
    """Idempotency key: the same decision always yields the same key."""
    digest = hashlib.sha256(json.dumps([route, kind, sorted(parts)]).encode()).hexdigest()
    return f"{route}:{kind}:{digest[:20]}"


def event_identity(event: AlertEvent) -> str:
    if event.opened_at is not None:
        return f"{event.device_id}@{event.opened_at.isoformat()}"
    incident = event.incident_id if event.incident_id is not None else event.since.isoformat()
    return f"{event.device_id}#{incident}"


def format_duration(seconds: float, lang: Lang) -> str:
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = ("天", "小时", "分钟", "秒") if lang == "zh" else ("d", "h", "m", "s")
    parts = [f"{n}{u}" for n, u in zip((days, hours, minutes, secs), units, strict=True) if n]
    shown = parts[:2] or [f"0{units[3]}"]
    return "".join(shown) if lang == "zh" else " ".join(shown)


def _clock(at: datetime, style: Style) -> str:
    return at.astimezone(style.tz).strftime("%Y-%m-%d %H:%M:%S") if style.tz else (
        at.strftime("%Y-%m-%d %H:%M:%S %Z")
    )


def _location(event: AlertEvent, w: dict[str, str]) -> str:
    loc = event.location
    bits = [
        w["floor"].format(loc.floor) if loc.floor is not None else "",
        loc.area or "",
        w["window"].format(loc.window) if loc.window else "",
    ]
    return " ".join(b for b in bits if b) or "-"


def _names(events: Iterable[AlertEvent], w: dict[str, str], limit: int = 10) -> str:
    items = list(events)
    shown = w["sep"].join(e.name for e in items[:limit])
    return shown + (" " + w["and_more"].format(len(items) - limit) if len(items) > limit else "")


def _device_block(
    event: AlertEvent, heading: str, style: Style, now: datetime, extra: list[str]
) -> list[str]:
    w = _WORDS[style.lang]
    lines = [
        f"【{heading}】{event.name}（{event.device_id}）",
        f"{w['class']}：{event.device_class}　{w['location']}：{_location(event, w)}"
        + (f"　{w['owner']}：{event.owner}" if event.owner else ""),
        *extra,
    ]
    if style.link_base:
        lines.append(f"{w['link']}：{style.link_base}{event.device_id}")
    return lines


def _firing_lines(f: Firing, heading: str, style: Style, now: datetime) -> list[str]:
    w = _WORDS[style.lang]
    e = f.event
    extra = [
        f"{w['since']}：{_clock(e.since, style)}（{w['lasted']} "
        f"{format_duration((now - e.since).total_seconds(), style.lang)}）"
    ]
    if e.cause:
        extra.append(f"{w['cause']}：{e.cause}")
    if f.children:
        extra.append(f"{w['children']}（{len(f.children)}）：{_names(f.children, w)}")
    return _device_block(e, heading, style, now, extra)


def _recovery_heading(r: Recovery, style: Style) -> str:
    w = _WORDS[style.lang]
    if not r.untold:
        return w["up"]
    lasted = (r.event.since - r.fired.event.since).total_seconds()
    return w["blip"].format(w[r.fired.event.status], format_duration(lasted, style.lang))


def _recovery_lines(r: Recovery, style: Style, now: datetime) -> list[str]:
    w = _WORDS[style.lang]
    start = r.fired.event.since
    lasted = format_duration((r.event.since - start).total_seconds(), style.lang)
    extra = [f"{w['since']}：{_clock(start, style)}　{w['lasted']}：{lasted}"]
    if r.untold and r.fired.event.cause:
        extra.append(f"{w['cause']}：{r.fired.event.cause}")
    return _device_block(r.event, _recovery_heading(r, style), style, now, extra)


def _orphan_lines(orphans: tuple[AlertEvent, ...], style: Style) -> list[str]:
    w = _WORDS[style.lang]
    by_parent: dict[str, list[AlertEvent]] = {}
    for e in orphans:
        by_parent.setdefault(e.parent or "-", []).append(e)
    return [
        f"【{w['unreachable']}】{_names(evs, w)}（{w['behind']}：{parent}）"
        for parent, evs in sorted(by_parent.items())
    ]


def _title(group: Group, style: Style, now: datetime) -> str:
    w = _WORDS[style.lang]
    if group.firing or group.repeats:
        fired = [f.event for f in (*group.firing, *group.repeats)]
        children = sum(len(f.children) for f in (*group.firing, *group.repeats))
        head = w["repeat"] if not group.firing else w[fired[0].status]
        tail = f" +{children} {w['unreachable']}" if children else ""
        more = f" {w['and_more'].format(len(fired))}" if len(fired) > 1 else ""
        return f"[hallmon] {head}：{fired[0].name}{more}{tail}"
    if group.orphans:
        return f"[hallmon] {w['unreachable']}：{_names(group.orphans, w, 3)}"
    first = group.recoveries[0]
    lasted = format_duration((first.event.since - first.fired.event.since).total_seconds(),
                             style.lang)
    more = f" {w['and_more'].format(len(group.recoveries))}" if len(group.recoveries) > 1 else ""
    if first.untold:
        return f"[hallmon] {_recovery_heading(first, style)}：{first.event.name}{more}"
    return f"[hallmon] {w['up']}：{first.event.name}{more}（{w['lasted']} {lasted}）"


def _iso(at: datetime) -> str:
    return at.isoformat()


def alert_items(group: Group, route: str, style: Style, now: datetime) -> tuple[AlertItem, ...]:
    """The same alerts as the Prometheus rules name them, so both paths read alike."""
    w = _WORDS[style.lang]
    items: list[AlertItem] = []

    def item(f: Firing, status: Literal["firing", "resolved"], ends: str | None,
             summary: str | None = None) -> AlertItem:
        e = f.event
        labels = {
            "alertname": ALERTNAMES.get(e.status, "HallDeviceDown"),
            "device": e.device_id,
            "class": e.device_class,
            "severity": e.severity,
            "route": route,
        }
        if e.location.floor is not None:
            labels["floor"] = str(e.location.floor)
        annotations = {"summary": summary or f"{e.name} {w[e.status]}", "description": e.cause}
        if f.children:
            annotations["unreachable_children"] = ",".join(c.device_id for c in f.children)
        if style.link_base:
            annotations["link"] = f"{style.link_base}{e.device_id}"
        return AlertItem(e.device_id, status, labels, annotations, _iso(e.since), ends)

    for f in (*group.firing, *group.repeats):
        items.append(item(f, "firing", None))
    for r in group.recoveries:
        told = f"{r.event.name} {_recovery_heading(r, style)}" if r.untold else None
        items.append(item(r.fired, "resolved", _iso(r.event.since), told))
    for r in group.superseded:  # told before under another alert name: that alert resolves
        items.append(item(r.fired, "resolved", _iso(r.event.since)))
    return tuple(items)


def render(
    route: str, kind: MessageKind, key: str, group: Group, style: Style, now: datetime
) -> Message:
    w = _WORDS[style.lang]
    blocks: list[list[str]] = []
    blocks += [_firing_lines(f, w[f.event.status], style, now) for f in group.firing]
    blocks += [_firing_lines(f, w["repeat"], style, now) for f in group.repeats]
    if group.orphans:
        blocks.append(_orphan_lines(group.orphans, style))
    blocks += [_recovery_lines(r, style, now) for r in group.recoveries]
    title = _title(group, style, now)
    text = "\n\n".join([title, *("\n".join(b) for b in blocks)])
    markdown = "\n\n".join(
        [f"### {title}", *("\n".join(f"- {line}" if i else f"**{line}**"
                                     for i, line in enumerate(b)) for b in blocks)]
    )
    firing = bool(group.firing or group.repeats or group.orphans)
    return Message(
        key=key,
        route=route,
        kind=kind,
        status="firing" if firing else "resolved",
        title=title,
        text=text,
        markdown=markdown,
        created_at=_iso(now),
        alerts=alert_items(group, route, style, now),
    )


def render_test(route: str, style: Style, now: datetime) -> Message:
    """What ``hallmon notify test ROUTE`` sends; one short-lived alert so Alertmanager and
    webhook receivers see something too."""
    title = "[hallmon] " + _WORDS[style.lang]["test"].format(route)
    probe = AlertItem("hallmon", "firing",
                      {"alertname": "HallmonTestNotification", "severity": "info",
                       "route": route}, {"summary": title}, _iso(now))
    return Message(
        key=message_key(route, "test", [now.isoformat()]),
        route=route,
        kind="test",
        status="resolved",
        title=title,
        text=f"{title}\n{_clock(now, style)}",
        markdown=f"### {title}\n\n{_clock(now, style)}",
        created_at=_iso(now),
        alerts=(probe,),
    )


def merge(route: str, messages: list[Message], lang: Lang, now: datetime) -> Message:
    """Aggregate held messages (rate limit, quiet hours) into one; nothing is dropped."""
    if len(messages) == 1:
        return messages[0]
    title = "[hallmon] " + _WORDS[lang]["digest"].format(len(messages))
    alerts = tuple(a for m in messages for a in m.alerts)
    return Message(
        key=message_key(route, "digest", [m.key for m in messages]),
        route=route,
        kind="digest",
        status="firing" if any(m.status == "firing" for m in messages) else "resolved",
        title=title,
        text="\n\n".join([title, *(m.text for m in messages)]),
        markdown="\n\n".join([f"### {title}", *(m.markdown.replace("### ", "#### ", 1)
                                                for m in messages)]),
        created_at=_iso(now),
        alerts=alerts,
    )
