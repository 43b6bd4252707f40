"""Budget: a hostile request costs the event loop under 50 ms before it is refused (issue 11),
and the routes' own unknown-parameter check stays linear: 30,000 keys under 1 s (was 6.6 s).

Found: 30,000 query keys took 8 s in the routes' unknown-parameter check, on the loop, before
authentication, and /-/healthy waited behind it. Times, through the real app (create_app, the
ASGI stack in-process): the 30,000-key request (refused by the request limits), a chunked 10 MB
body (413), and the unknown-parameter check itself on 30,000 distinct keys with the front bound
lifted (what it would cost if the bound were ever raised). Prints one JSON line; exits non-zero
over budget.

    .venv/bin/python bench/hostile_http.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.api import limits
from monitor.api.auth import Auth
from monitor.web import create_app

BUDGET_S = 0.050
CHECK_BUDGET_S = 1.0  # check_only: ~6 us a key through Starlette's parser and the check
KEYS = 30_000


class _Hall:
    ready = True

    async def render_metrics(self) -> bytes:
        return b""

    async def reload(self) -> Any:
        return None


async def call(app: Any, method: str, path: str, query: bytes, headers: dict[str, str],
               body: list[bytes]) -> tuple[float, int]:
    """One request through the ASGI stack (httpx refuses URLs this long): (seconds, status)."""
    scope = {"type": "http", "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 10025)}
    messages = [{"type": "http.request", "body": b, "more_body": i < len(body) - 1}
                for i, b in enumerate(body or [b""])]
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    t0 = time.perf_counter()
    await app(scope, receive, send)
    return time.perf_counter() - t0, status[0]


async def main() -> int:
    query = "&".join(f"k{i}=1" for i in range(KEYS)).encode()
    token = {"Authorization": "Bearer " + "t" * 20}
    out: dict[str, Any] = {}
    for name, max_query in (("limited", limits.MAX_QUERY_BYTES), ("check_only", 10**9)):
        app = create_app(_Hall(), site_name="x", auth_=Auth([("t", "technician", "t" * 20)]))
        # check_only: the same stack with the front bound lifted, so the 30,000 keys reach the
        # routes' own unknown-parameter check (what it costs if the bound is ever raised)
        app.user_middleware[0].kwargs.update(max_query_bytes=max_query, max_query_keys=10**9)
        seconds, status = await call(app, "GET", "/api/v1/maintenance-windows", query, token, [])
        out[f"{name}_30k_keys_ms"] = round(seconds * 1000, 1)
        out[f"{name}_30k_keys_status"] = status
        if name == "limited":
            chunked = {**token, "Transfer-Encoding": "chunked",
                       "Content-Type": "application/json"}
            seconds, status = await call(app, "POST", "/api/v1/tickets", b"", chunked,
                                         [b"x" * 65536] * 160)
            out["chunked_10mb_ms"] = round(seconds * 1000, 1)
            out["chunked_10mb_status"] = status
    over = [k for k, v in out.items() if k.endswith("_ms")
            and v > 1000 * (CHECK_BUDGET_S if k.startswith("check_only") else BUDGET_S)]
    wrong = [k for k, v in out.items() if k.endswith("_status") and v not in (413, 414, 422)]
    print(json.dumps({"bench": "hostile_http", "budget_ms": BUDGET_S * 1000, **out,
                      "over": over, "wrong_status": wrong}))
    return 1 if over or wrong else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
