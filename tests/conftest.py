"""Shared test plumbing.

External tools (snmpd, fping, promtool, prometheus, alertmanager, postgres, ip netns...) are
real. A test that needs a missing tool skips with the reason; with HALLMON_REQUIRE_TOOLS=1 (set
by CI) it fails instead, so CI can never pass by skipping.

Areas add their fixtures below in their own marked section (edit in place, never rewrite).
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_TOOLS = os.environ.get("HALLMON_REQUIRE_TOOLS") == "1"


class Clock:
    """A wall clock the test moves by hand (``clock.now += 30``); call it for the time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def missing_tool(reason: str) -> None:
    """Skip (locally) or fail (CI, HALLMON_REQUIRE_TOOLS=1) because a tool is unavailable."""
    if REQUIRE_TOOLS:
        pytest.fail(f"required tool unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, *candidates: str) -> str:
    """Path of an executable: ``name``, then ``candidates`` (names or absolute paths)."""
    for cand in (name, *candidates):
        path = shutil.which(cand)
        if path:
            return path
        if os.path.isabs(cand) and os.access(cand, os.X_OK):
            return cand
    missing_tool(f"{name} not installed (Debian: apt-get install the package providing it)")
    raise AssertionError("unreachable")


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        missing_tool(f"{what} needs root")


# ---- store (issue 5): a real PostgreSQL server per session, a fresh database per test ----------
def _postgres():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server on loopback for as long as the generator runs."""
    from tests.agents.postgres import find_bin, postgres_server

    require_tool("initdb", find_bin("initdb") or "initdb")
    try:
        with postgres_server() as server:
            yield server
    except RuntimeError as exc:
        missing_tool(str(exc))


@pytest.fixture(scope="session")
def pg_server():  # type: ignore[no-untyped-def]
    yield from _postgres()


@pytest.fixture
def own_pg():  # type: ignore[no-untyped-def]
    """A PostgreSQL server of this test's own, for tests that stop and start it again
    (``with own_pg.stopped():``) while the session's shared ``pg_server`` serves others."""
    yield from _postgres()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Store tests run on both backends: a SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hallmon.db'}"
    return str(request.getfixturevalue("pg_server").new_database())


@pytest.fixture
def store(url: str):  # type: ignore[no-untyped-def]
    """A Store on ``url``'s backend (modules with their own ``store`` fixture override it)."""
    from monitor.store import Store

    s = Store(url, timezone="Asia/Shanghai")
    yield s
    s.close()
