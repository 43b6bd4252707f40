"""The pages' words in Chinese and English, and which language a request gets.

Order: ``?lang=`` (remembered in a cookie), the ``hallmon_lang`` cookie, then Accept-Language
(English only when the browser prefers it); Chinese by default: the hall's staff read Chinese.
The status words are the dashboards' (dashboards/hall-overview.json value mappings).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

LANGS = ("zh", "en")
LANG_COOKIE = "hallmon_lang"

STATUS_WORDS: dict[str, dict[str, str]] = {
    "zh": {"unknown": "无数据", "up": "正常", "maintenance": "维护中", "degraded": "降级",
           "unreachable": "不可达", "down": "故障"},
    "en": {"unknown": "no data", "up": "up", "maintenance": "maintenance",
           "degraded": "degraded", "unreachable": "unreachable", "down": "down"},
}
TICKET_STATUS_WORDS: dict[str, dict[str, str]] = {
    "zh": {"open": "待处理", "in_progress": "处理中", "resolved": "已解决", "closed": "已关闭"},
    "en": {"open": "open", "in_progress": "in progress", "resolved": "resolved",
           "closed": "closed"},
}

_WORDS: dict[str, tuple[str, str]] = {  # key: (zh, en)
    "status_board": ("设备状态", "Device status"),
    "public_board": ("服务状态", "Service status"),
    "incidents": ("当前故障", "Open incidents"),
    "no_incidents": ("无故障", "No open incidents"),
    "in_maintenance": ("维护中的设备", "Devices in maintenance"),
    "none": ("无", "none"),
    "for": ("已持续", "for"),
    "floor": ("楼层", "Floor"),
    "floor_n": ("{n} 楼", "Floor {n}"),
    "no_floor": ("未指定楼层", "No floor"),
    "no_area": ("其他区域", "Other"),
    "updated": ("更新于", "Updated"),
    "stale": ("连接中断，显示的可能不是最新状态", "Connection lost: this may be out of date"),
    "out_of_service": ("暂停服务", "Out of service"),
    "in_service": ("正常服务", "In service"),
    "tickets": ("维修工单", "Tickets"),
    "ticket": ("工单", "Ticket"),
    "new_ticket": ("新建工单", "New ticket"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "user": ("用户名", "User name"),
    "password": ("密码", "Password"),
    "bad_login": ("用户名或密码错误", "Wrong user name or password"),
    "throttled": ("失败次数过多，请 {m} 分钟后再试", "Too many failures: try again in {m} min"),
    "bad_csrf": ("表单已过期，请重试", "The form expired: please try again"),
    "forbidden": ("您的角色不能执行此操作", "Your role may not do this"),
    "device": ("设备", "Device"),
    "no_device": ("（无设备）", "(no device)"),
    "category": ("类别", "Category"),
    "summary": ("描述", "Summary"),
    "assignee": ("处理人", "Assignee"),
    "reporter": ("报告人", "Reporter"),
    "status": ("状态", "Status"),
    "any": ("全部", "any"),
    "filter": ("筛选", "Filter"),
    "mine": ("我的", "Mine"),
    "opened": ("创建", "Opened"),
    "updated_at": ("更新", "Updated"),
    "create": ("创建工单", "Open ticket"),
    "start": ("开始处理", "Start"),
    "resolve": ("解决", "Resolve"),
    "close": ("关闭", "Close"),
    "reopen": ("重新打开", "Reopen"),
    "back_to_open": ("退回待处理", "Back to open"),
    "resolution": ("处理结果", "Resolution"),
    "note": ("备注", "Note"),
    "comment": ("评论", "Comment"),
    "add_comment": ("添加评论", "Add comment"),
    "history": ("处理记录", "Audit trail"),
    "no_tickets": ("没有符合条件的工单", "No tickets match"),
    "previous": ("上一页", "Previous"),
    "next": ("下一页", "Next"),
    "total": ("共 {n} 条", "{n} in all"),
    "api_docs": ("接口文档", "API documentation"),
    "required": ("必填", "required"),
    "field_error": ("{field}：{msg}", "{field}: {msg}"),
    "ev_created": ("创建", "created"),
    "ev_status": ("状态", "status"),
    "ev_assigned": ("指派", "assigned"),
    "ev_comment": ("评论", "comment"),
    "ev_edit": ("修改", "edit"),
    "owner": ("归属单位", "Owner"),
    "parent": ("上级设备", "Upstream device"),
    "poller": ("采集节点", "Polled by"),
    "checks": ("检查项", "Checks"),
    "recent_incidents": ("近期故障", "Recent incidents"),
    "language": ("English", "中文"),
}


def pick(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGS:
        return cookie
    accept = request.headers.get("accept-language", "")
    first = accept.split(",")[0].strip().lower()
    return "en" if first.startswith("en") else "zh"


def translator(lang: str) -> Callable[..., str]:
    index = 0 if lang == "zh" else 1

    def t(key: str, **values: object) -> str:
        text = _WORDS[key][index]
        return text.format(**values) if values else text

    return t


def duration(seconds: float, lang: str) -> str:
    """``3 天 2 小时`` / ``3 d 2 h``: the two largest units."""
    s = max(0, int(seconds))
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    units = ("天", "小时", "分钟", "秒") if lang == "zh" else (" d", " h", " min", " s")
    parts = [(d, units[0]), (h, units[1]), (m, units[2]), (s % 60, units[3])]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    sep = " " if lang == "en" else ""
    return sep.join(f"{n}{u}" for n, u in parts[:2] if n or len(parts) == 1)
