"""Local HTTP servers behaving like the DingTalk, WeCom and Feishu robot APIs.

One real server (127.0.0.1, port 0, a thread) serves all three paths the way the vendors do:
they check the token/key and the signature, answer errors as HTTP 200 + an error code, and
throttle at ``limit`` messages a minute per robot. ``down = True`` answers 503 (robot API out);
``hold`` makes requests wait until released (to kill a sender mid-request).

    with VendorServer(token="t", secret="s") as v:
        v.dingtalk_url  # http://127.0.0.1:PORT/robot/send?access_token=t
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.agents.proc import ServerThread


@dataclass(frozen=True)
class Received:
    vendor: str
    body: dict[str, Any]
    key: str | None  # Idempotency-Key header


@dataclass
class VendorServer:
    token: str = "robot-token"
    secret: str | None = None
    limit: int = 20
    clock: Callable[[], float] = time.time  # throttling window
    sign_clock: Callable[[], float] | None = None  # signature freshness; default: clock
    down: bool = False
    hits: int = 0  # every request, even those answered 503 while down
    received: list[Received] = field(default_factory=list)  # every request that arrived
    accepted: list[Received] = field(default_factory=list)  # those answered with code 0
    hold: threading.Event | None = None  # when set up, requests wait for it
    arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}
        self._server = ServerThread(self._handler())

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> VendorServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self._server.stop()

    @property
    def base(self) -> str:
        return self._server.base

    @property
    def dingtalk_url(self) -> str:
        return f"{self.base}/robot/send?access_token={self.token}"

    @property
    def wecom_url(self) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key={self.token}"

    @property
    def feishu_url(self) -> str:
        return f"{self.base}/open-apis/bot/v2/hook/{self.token}"

    def bodies(self, vendor: str) -> list[dict[str, Any]]:
        """Bodies the robot accepted (errcode/code 0), in arrival order."""
        with self._lock:
            return [r.body for r in self.accepted if r.vendor == vendor]

    def keys(self) -> list[str | None]:
        """Idempotency keys of accepted messages, in arrival order."""
        with self._lock:
            return [r.key for r in self.accepted]

    # -- vendor rules -----------------------------------------------------------------------
    def _signed_now(self) -> float:
        return (self.sign_clock or self.clock)()

    def _throttled(self, robot: str) -> bool:
        now = self.clock()
        recent = self._recent.setdefault(robot, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self.limit:
            return True
        recent.append(now)
        return False

    def dingtalk(self, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        if query.get("access_token") != [self.token]:
            return {"errcode": 300001, "errmsg": "token is not exist"}
        if self.secret:
            ts = (query.get("timestamp") or ["0"])[0]
            given = (query.get("sign") or [""])[0]  # parse_qs has URL-decoded it once
            mac = hmac.new(self.secret.encode(), f"{ts}\n{self.secret}".encode(), hashlib.sha256)
            fresh = abs(self._signed_now() * 1000 - int(ts)) < 3600_000
            if not fresh or given != base64.b64encode(mac.digest()).decode():
                return {"errcode": 310000, "errmsg": "sign not match"}
        if body.get("msgtype") not in {"text", "markdown", "link", "actionCard", "feedCard"}:
            return {"errcode": 40035, "errmsg": "missing msgtype"}
        if self._throttled("dingtalk"):
            return {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
        return {"errcode": 0, "errmsg": "ok"}

    def wecom(self, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
        if query.get("key") != [self.token]:
            return {"errcode": 93000, "errmsg": "invalid webhook url"}
        kind = body.get("msgtype")
        limits = {"text": 2048, "markdown": 4096}
        if kind not in limits:
            return {"errcode": 40008, "errmsg": "invalid message type"}
        content = body[kind]["content"]
        if len(content.encode()) > limits[kind]:
            return {"errcode": 40058, "errmsg": "content exceed max length"}
        if self._throttled("wecom"):
            return {"errcode": 45009, "errmsg": "api freq out of limit"}
        return {"errcode": 0, "errmsg": "ok"}

    def feishu(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        if token != self.token:
            return {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}
        if self.secret:
            ts = str(body.get("timestamp", "0"))
            mac = hmac.new(f"{ts}\n{self.secret}".encode(), b"", hashlib.sha256)
            fresh = abs(self._signed_now() - int(ts)) < 3600
            if not fresh or body.get("sign") != base64.b64encode(mac.digest()).decode():
                return {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
        if self._throttled("feishu"):
            return {"code": 11232, "msg": "frequency limited psm"}
        return {"code": 0, "msg": "success", "data": {}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with vendor._lock:
                    vendor.hits += 1
                if vendor.down:
                    self._reply(503, {"message": "service unavailable"})
                    return
                body = json.loads(raw)
                name = ("dingtalk" if parts.path == "/robot/send" else
                        "wecom" if parts.path == "/cgi-bin/webhook/send" else
                        "feishu" if parts.path.startswith("/open-apis/bot/v2/hook/") else "")
                if not name:
                    self._reply(404, {"message": "not found"})
                    return
                got = Received(name, body, self.headers.get("Idempotency-Key"))
                with vendor._lock:
                    vendor.received.append(got)
                vendor.arrived.set()
                if vendor.hold is not None:
                    vendor.hold.wait(30)
                query = parse_qs(parts.query)
                with vendor._lock:
                    if name == "dingtalk":
                        answer = vendor.dingtalk(query, body)
                    elif name == "wecom":
                        answer = vendor.wecom(query, body)
                    else:
                        answer = vendor.feishu(parts.path.rsplit("/", 1)[1], body)
                    if answer.get("errcode", answer.get("code")) == 0:
                        vendor.accepted.append(got)
                self._reply(200, answer)  # vendor errors come as HTTP 200

            def _reply(self, status: int, data: dict[str, Any]) -> None:
                out = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        return Handler
