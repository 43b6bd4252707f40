"""A real PostgreSQL server for tests: initdb into a temp dir as the ``postgres`` OS user, listen
on 127.0.0.1 at a free high port, trust auth, stopped (and removed) at teardown."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count

_db_numbers = count(1)


def find_bin(name: str) -> str | None:
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return hits[0] if hits else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"

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
def postgres_server() -> Iterator[PostgresServer]:
    """Raise RuntimeError if the binaries or the postgres user are missing."""
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
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120,
                       **as_user)  # type: ignore[call-overload]
        port = _free_port()
        proc = subprocess.Popen(
            [postgres, "-D", data, "-p", str(port), "-k", tmp, "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "max_connections=50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **as_user,  # type: ignore[call-overload]
        )
        _wait_ready(port, proc)
        yield PostgresServer(port)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: never waits on a stray client
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"postgres exited early: {err[-2000:]}")
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                                 connect_timeout=2):
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError("postgres did not accept connections within 30 s")
