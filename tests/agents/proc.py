"""What every test agent does with its child process: pick a free loopback port, start it with
its output in a log file (never a pipe nobody reads: a full pipe blocks the child), wait a bounded
time until it answers (its log in the error if it died first), and stop it (SIGKILL if it hangs).
In-process HTTP fakes (robot APIs, webhook receivers) run in a :class:`ServerThread`.

    with running([binary, ...], what="prometheus", log=tmp / "prom.log",
                 ready=http_ready(client, f"{url}/-/ready")) as proc:
        ...

Failures raise RuntimeError (conftest turns a server that cannot start into a missing tool).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

Ready = Callable[[], bool]


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port the kernel just handed out on ``host`` (TCP unless ``udp``), for servers that must
    be told their port up front."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def http_ready(client: httpx.Client, url: str) -> Ready:
    """Ready once ``url`` answers 200 (a refused connection is "not yet")."""

    def ready() -> bool:
        try:
            return client.get(url).status_code == 200
        except httpx.TransportError:
            return False

    return ready


def wait_ready(proc: subprocess.Popen[bytes], ready: Ready, *, what: str, log: Path,
               within: float = 30.0, every: float = 0.1) -> None:
    """Poll ``ready`` until it says yes; RuntimeError with the log tail if ``proc`` exits first
    or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early ({proc.returncode}): {tail(log)}")
        if ready():
            return
        time.sleep(every)
    raise RuntimeError(f"{what} was not ready within {within} s: {tail(log)}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, within: float = 20.0) -> None:
    """``sig``, then SIGKILL if it has not exited within ``within`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def running(argv: Sequence[str], *, what: str, log: Path, ready: Ready, within: float = 30.0,
            every: float = 0.1, stop_signal: int = signal.SIGTERM,
            **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` with stdout and stderr appended to ``log``, ready; stopped on the way out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        wait_ready(proc, ready, what=what, log=log, within=within, every=every)
        yield proc
    finally:
        stop(proc, stop_signal)


class ServerThread:
    """An HTTP server on 127.0.0.1 (port 0) served from a thread; its port is known before
    ``start``. ``stop`` does not wait for handlers still running (they are daemon threads)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


async def eventually(what: str, cond: Callable[[], bool], within: float = 60.0) -> None:
    """Wait on the event loop until ``cond()`` holds, checking every 50 ms; fail naming ``what``
    after ``within`` seconds (generous: a bound, not a timing)."""
    for _ in range(int(within / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
