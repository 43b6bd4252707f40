"""The whole OpenAPI document of the daemon, fuzzed by schemathesis against live servers.

Two real daemons (monitor.app.Hall on the mock probes, monitor.web.create_app, uvicorn on
127.0.0.1): one with a tokens file (schemathesis sends the admin token, and leaves it out or
mangles it on purpose in negative cases), one without (reads open, writes refused, operations
from this machine only). Every route of the document, both ways: no 5xx, every response as
documented, invalid input refused.

Budget (< 60 s on 2 busy cores): a few examples per operation, one seed, no exhaustive
"coverage" phase (it alone took over a minute for the ticket routes).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks as oa_checks

from monitor.api.auth import Auth
from monitor.app import Hall, Options
from monitor.web import create_app
from tests.test_app import HALL

ADMIN = "a" * 24
TOKENS = [("viewer-user", "viewer", "v" * 24), ("tech-user", "technician", "t" * 24),
          ("admin-user", "admin", ADMIN)]


class _Daemon:
    """A Hall and its web app served by uvicorn, all on one event loop in a thread."""

    def __init__(self, state: Path, auth: Auth | None) -> None:
        self.state, self.auth = state, auth
        self.url = ""
        self.openapi: dict[str, Any] = {}
        self._started = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            await self._serve()
        finally:
            self._started.set()  # also when start-up failed: __enter__ says so at once

    async def _serve(self) -> None:
        inv = self.state / "inventory.yaml"
        inv.write_text(yaml.safe_dump(HALL, allow_unicode=True), encoding="utf-8")
        hall = Hall(Options(inventory=inv, state_dir=self.state, mock=True, pace=0.5))
        await hall.start()
        app = create_app(hall, site_name="测试大厅", store=hall.astore, auth_=self.auth)
        self.openapi = app.openapi()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                     log_level="error", lifespan="off"))
        serving = asyncio.create_task(self._server.serve())
        for _ in range(3000):  # up to 60 s
            if self._server.started or serving.done():
                break
            await asyncio.sleep(0.02)
        if self._server.started:
            port = self._server.servers[0].sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        try:
            await serving
        finally:
            await hall.stop()

    def __enter__(self) -> _Daemon:
        self._thread.start()
        assert self._started.wait(60) and self.url, "the daemon did not start"
        # Fuzz a ready daemon: before its first cycle /-/ready answers 503 by design.
        for _ in range(600):
            if httpx.get(f"{self.url}/-/ready").status_code == 200:
                return self
            time.sleep(0.05)
        raise AssertionError("the daemon did not become ready within 30 s")

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def with_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _Daemon(tmp_path_factory.mktemp("tokens"), Auth(TOKENS)) as daemon:
        yield daemon.url


@pytest.fixture(scope="module")
def without_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _Daemon(tmp_path_factory.mktemp("open"), None) as daemon:
        yield daemon.url


def _document(auth: Auth | None) -> dict[str, Any]:
    """The document as that daemon serves it (built here at collection time, from the same
    code without starting anything: only the auth setting changes it)."""
    return create_app(object(), site_name="x", auth_=auth).openapi()


def _schema(auth: Auth | None) -> Any:
    config: dict[str, Any] = {
        "seed": 11, "phases": {"coverage": {"enabled": False}},
        # Invalid input is refused with a 4xx; the request limits refuse some of it before
        # validation, with their own codes (a flood of repeated parameters: 414).
        "checks": {"negative_data_rejection": {"expected-statuses": [
            400, 401, 403, 404, 405, 406, 409, 413, 414, 415, 422, 428, 429, 431]}},
    }
    if auth is not None:
        config["auth"] = {"openapi": {"HTTPBearer": {"bearer": ADMIN}}}
    return schemathesis.openapi.from_dict(_document(auth),
                                          config=SchemathesisConfig.from_dict(config))


SCHEMA_TOKENS = _schema(Auth(TOKENS))
SCHEMA_OPEN = _schema(None)
# No 5xx, responses as documented, invalid input refused. Not checked: "schema-valid input
# accepted" (business rules answer documented 4xx: unknown category, from > to, 404 devices).
CHECKS = [
    checks.not_a_server_error,
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_headers_conformance,
    oa_checks.response_schema_conformance,
    oa_checks.negative_data_rejection,
]
BUDGET = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.function_scoped_fixture])


def test_the_document_covers_every_route() -> None:
    paths = set(_document(None)["paths"])
    assert {"/-/healthy", "/-/ready", "/-/reload", "/metrics", "/api/v1/devices",
            "/api/v1/devices/{device_id}", "/api/v1/devices/{device_id}/recheck",
            "/api/v1/tickets", "/api/v1/tickets/{ticket_id}", "/api/v1/tickets/tally",
            "/api/v1/maintenance-windows", "/api/v1/reports/{period}"} <= paths


def test_the_live_daemons_serve_this_document(with_tokens: str, without_tokens: str) -> None:
    assert httpx.get(f"{with_tokens}/openapi.json").json() == SCHEMA_TOKENS.raw_schema
    assert httpx.get(f"{without_tokens}/openapi.json").json() == SCHEMA_OPEN.raw_schema
    ops = SCHEMA_OPEN.raw_schema["paths"]
    assert ops["/api/v1/tickets"]["get"]["security"] == [{"HTTPBearer": []}, {}]
    assert ops["/api/v1/tickets"]["post"]["security"] == [{"HTTPBearer": []}]
    assert ops["/-/reload"]["post"]["security"] == [{"HTTPBearer": []}, {}]
    assert SCHEMA_TOKENS.raw_schema["paths"]["/-/reload"]["post"]["security"] == [
        {"HTTPBearer": []}]


@SCHEMA_TOKENS.parametrize()
@BUDGET
def test_contract_with_tokens(case, with_tokens: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=with_tokens, checks=CHECKS)


@SCHEMA_OPEN.parametrize()
@BUDGET
def test_contract_without_tokens(case, without_tokens: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=without_tokens, checks=CHECKS)
