"""Request limits checked before any work: one pure ASGI middleware in front of the app.

A request is refused before routing, parsing or authentication when it has

* a query string over ``max_query_bytes`` or more than ``max_query_keys`` parameters -> 414;
* more than ``max_headers`` header lines or over ``max_header_bytes`` of them in all -> 431;
* a body over ``max_body_bytes``, declared (Content-Length) or streamed (chunked) -> 413.

The body is read here, at most ``max_body_bytes + 1`` bytes, and handed to the app from memory:
FastAPI turns any exception raised while it reads the body into a 400 ("error parsing the
body"), so the refusal must happen before the app starts reading (a chunked 10 MB body used to
get 400). Why the query bound: every counted key costs the routes' checks work on the event
loop; 30,000 keys once stalled ``/-/healthy`` for 8 s.

Validation errors (422) echo the input: text with a lone surrogate (``"\\ud800"`` is valid JSON)
made FastAPI's own handler fail (500). ``install`` adds a handler that writes such characters as
U+FFFD.

A 405 from the router lists every method of the path in ``Allow`` (Starlette answers from the
first route with that path only, so a path with GET and POST routes said ``Allow: GET``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.routing import Match

Scope = dict[str, Any]

MAX_QUERY_BYTES = 4096
MAX_QUERY_KEYS = 64  # the widest route has 13 parameters
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024  # tickets and windows are small
REFUSALS = {
    413: "Request body too large",
    414: "Query string too long or too many query parameters",
    431: "Too many or too large request headers",
}


def install(app: FastAPI, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """The limits in front of ``app`` and the 422 handler that cannot fail on odd text."""
    app.add_middleware(RequestLimits, max_body_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    text = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=False)
    return Response(utf8(text), status_code=422, media_type="application/json")


def utf8(text: str) -> bytes:
    """UTF-8 of ``text`` with lone surrogates as U+FFFD (pairs written as escapes are joined)."""
    return (text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            .encode("utf-8"))


class RequestLimits:
    """``app.add_middleware(RequestLimits)`` (the outermost middleware: added last)."""

    def __init__(self, app: Any, *, max_query_bytes: int = MAX_QUERY_BYTES,
                 max_query_keys: int = MAX_QUERY_KEYS, max_headers: int = MAX_HEADERS,
                 max_header_bytes: int = MAX_HEADER_BYTES,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_query_bytes, self.max_query_keys = max_query_bytes, max_query_keys
        self.max_headers, self.max_header_bytes = max_headers, max_header_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_head(scope)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        body = await self._read_body(scope, receive)
        if body is None:
            await _refuse(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        await self.app(scope, _replay(body, receive), _fix_allow(scope, send))

    def _check_head(self, scope: Scope) -> tuple[int, str] | None:
        query: bytes = scope.get("query_string") or b""
        if len(query) > self.max_query_bytes:
            return 414, f"query string over {self.max_query_bytes} bytes"
        # A count of separators, not a parse: linear and allocation-free.
        if query.count(b"&") + query.count(b";") + 1 > self.max_query_keys:
            return 414, f"more than {self.max_query_keys} query parameters"
        headers = scope.get("headers") or []
        if len(headers) > self.max_headers:
            return 431, f"more than {self.max_headers} header lines"
        if sum(len(k) + len(v) for k, v in headers) > self.max_header_bytes:
            return 431, f"headers over {self.max_header_bytes} bytes"
        declared = _header(headers, b"content-length")
        if declared is not None and (not declared.isdigit()
                                     or int(declared[:20]) > self.max_body_bytes):
            return 413, f"request body over {self.max_body_bytes} bytes"
        return None

    async def _read_body(self, scope: Scope, receive: Any) -> list[dict[str, Any]] | None:
        """The request's messages, or None once the body passes the limit. GET and friends
        without a body are not read (their first message may only come on disconnect)."""
        headers = scope.get("headers") or []
        if (_header(headers, b"content-length") in (None, b"0")
                and _header(headers, b"transfer-encoding") is None):
            return []
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    pending = list(messages)

    async def replay() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _fix_allow(scope: Scope, send: Any) -> Any:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            methods = _methods_of_path(scope)
            if methods:
                allow = ", ".join(sorted(methods)).encode()
                message = {**message, "headers": [
                    *((k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"),
                    (b"allow", allow)]}
        await send(message)

    return sending


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _methods_of_path(scope: Scope) -> set[str]:
    """Ask the router which methods fully match the path (included routers hide their routes,
    so probe each method rather than walk the route list). Runs on 405s only."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
    return {m for m in _METHODS
            if any(r.matches({**scope, "method": m})[0] is Match.FULL for r in routes)}


async def _refuse(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
