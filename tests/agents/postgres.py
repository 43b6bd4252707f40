"""A real PostgreSQL server for tests: initdb into a temp dir as the ``postgres`` OS user, listen
on 127.0.0.1 at a free high port, trust auth, stopped (and removed) at teardown.

``with server.stopped():`` stops it for a while (a fast shutdown: clients' connections are cut,
new ones refused) and starts it again on the same data and port, as a database restart does.
Only on a server of one's own (``postgres_server()``), never the session's shared one."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from tests.agents.proc import Ready, free_port, running

_db_numbers = count(1)


def find_bin(name: str) -> str | None:
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return hits[0] if hits else shutil.which(name)


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"
    # Starts the server process (a context manager that stops it on exit).
    _start: Callable[[], AbstractContextManager[object]] | None = field(default=None, repr=False)
    _process: ExitStack = field(default_factory=ExitStack, repr=False)

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server is down inside the block, and up again (accepting) after it."""
        assert self._start is not None, "not a server of this test's own"
        self._process.close()
        try:
            yield
        finally:
            self._process = ExitStack()
            self._process.enter_context(self._start())

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_db_numbers)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_server(max_connections: int = 50) -> Iterator[PostgresServer]:
    """Raise RuntimeError if the binaries or the postgres user are missing.
    ``max_connections``: a bench with hundreds of pollers (bench/sites_pg.py) needs more."""
    initdb, postgres = find_bin("initdb"), find_bin("postgres")
    if not initdb or not postgres:
        raise RuntimeError("PostgreSQL binaries not found (Debian: apt-get install postgresql)")
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError("no 'postgres' OS user to run the server as") from exc
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid}
    tmp = tempfile.mkdtemp(prefix="hallmon-pg-")
    if as_user:
        os.chown(tmp, int(as_user["user"]), int(as_user["group"]))  # type: ignore[call-overload]
    data = os.path.join(tmp, "data")
    try:
        subprocess.run([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120,
                       **as_user)  # type: ignore[call-overload]
        port = free_port()
        argv = [postgres, "-D", data, "-p", str(port), "-k", tmp,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", f"max_connections={max_connections}"]

        def start() -> AbstractContextManager[object]:
            # SIGINT is the "fast" shutdown: it never waits on a stray client.
            return running(argv, what="postgres", log=Path(tmp, "postgres.log"),
                           ready=_accepts(port), stop_signal=signal.SIGINT,
                           **as_user)  # type: ignore[arg-type]

        server = PostgresServer(port, _start=start)
        server._process.enter_context(start())
        try:
            yield server
        finally:
            server._process.close()  # the one running now (it may have been restarted)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _accepts(port: int) -> Ready:
    def ready() -> bool:
        import psycopg

        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                                 connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    return ready
