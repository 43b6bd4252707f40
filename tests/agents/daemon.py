"""The real daemon as a subprocess: ``python -m monitor.cli run --mock`` on a free 127.0.0.1 port.

    inv = small_inventory([node("sw-1", "127.30.0.1"), node("pc-1", "127.30.1.1", parent="sw-1")])
    with HallmonProcess(tmp_path, inv) as d:   # started and ready (200 on /-/ready)
        d.metrics()                            # the text of /metrics
        d.sample("hallmon_device_up", device="sw-1")
        d.wait_for(lambda: d.status("pc-1") == "unreachable", 10, "pc-1 unreachable")
    # stopped (SIGTERM, then SIGKILL) on exit; the log is printed, so pytest shows it on failure

Each process has its own state directory (``--storage.path``) and log file. Waits are bounded and
their failure messages carry the tail of the daemon's log. Also here: a webhook receiver (the
generic webhook channel posts the Alertmanager version-4 payload) on 127.0.0.1 port 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# ---- inventories --------------------------------------------------------------------------------

# One cheap check per device: the reachability ping (the mock probe answers it under --mock).
NODE_CLASS = {"label": "节点", "checks": [
    {"name": "ping", "kind": "icmp", "role": "reachability", "packets": 1},
]}


def node(device_id: str, address: str, *, parent: str | None = None, floor: int = 1,
         cls: str = "node", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": device_id, "name": f"设备 {device_id}", "class": cls,
                           "address": address, "location": {"floor": floor, "area": "大厅"}}
    if parent is not None:
        out["parent"] = parent
    out.update(extra)
    return out


def small_inventory(
    devices: Iterable[Mapping[str, Any]],
    *,
    interval: str = "1s",
    timeout: str = "500ms",
    thresholds: int = 2,
    faults: Iterable[Mapping[str, Any]] = (),
    notifications: Mapping[str, Any] | None = None,
    classes: Mapping[str, Any] | None = None,
) -> str:
    """YAML text of a strict, valid inventory with fast intervals and the ``node`` class."""
    doc: dict[str, Any] = {
        "site": {"name": "测试大厅", "timezone": "Asia/Shanghai"},
        "defaults": {"interval": interval, "timeout": timeout, "failure_threshold": thresholds,
                     "success_threshold": thresholds},
        "classes": {"node": NODE_CLASS, **(classes or {})},
        "devices": [dict(d) for d in devices],
    }
    if notifications is not None:
        doc["notifications"] = dict(notifications)
    doc["simulation"] = {"seed": 1, "faults": [dict(f) for f in faults]}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def write_atomically(path: Path, text: str) -> None:
    """Write by rename, as editors save (the content-checksum watch must see it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- the exposition format ----------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)] for every sample line (label values here never hold '",')."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels: dict[str, str] = {}
        for pair in filter(None, rest.rstrip("}").split('",')):
            k, _, v = pair.partition("=")
            labels[k.strip(",")] = v.strip('"')
        out.setdefault(name, []).append((labels, float(value)))
    return out


# ---- the daemon ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonError(AssertionError):
    pass


@dataclass
class HallmonProcess:
    """One ``hallmon run --mock`` subprocess. ``start``/``stop`` may be called repeatedly (a
    restart keeps the same storage and port)."""

    workdir: Path
    inventory_text: str
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    ready_within: float = 30.0
    autostart: bool = True  # False: ``with`` only guarantees the clean-up; call spawn()/start()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.inventory = self.workdir / "inventory.yaml"
        self.inventory.write_text(self.inventory_text, encoding="utf-8")
        self.storage = self.workdir / "state"
        self.log_path = self.workdir / "hallmon.log"
        self.http = httpx.Client(base_url=self.base, timeout=10.0)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.storage / "hallmon.db"

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> HallmonProcess:
        if self.autostart:
            try:
                self.start()
            except BaseException:
                self.__exit__()  # ``with`` calls __exit__ only when __enter__ returned
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            if self.running:
                self.kill()
            self.http.close()
            # pytest shows this only when the test fails
            print(f"---- hallmon log ({self.log_path}) ----\n{self.log()[-20000:]}")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "monitor.cli", "run", "--mock",
                f"--inventory={self.inventory}", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.path={self.storage}", "--log.level=debug", *self.args]

    def spawn(self) -> None:
        """Start the process without waiting for anything."""
        assert not self.running, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"==== start #{self.starts}: {' '.join(self.command())}\n".encode())
            env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env}
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, within: float | None = None) -> None:
        self.wait_for(lambda: self._get_status("/-/ready") == 200, within or self.ready_within,
                      "/-/ready to answer 200")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, within: float = 10.0) -> int:
        """SIGTERM; the exit code (SIGKILL and a failure if it does not exit in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError(f"no exit within {within}s of SIGTERM\n{self.log_tail()}") from None

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    # -- reading ---------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return f"---- log tail ----\n{self.log()[-chars:]}"

    def _get_status(self, path: str) -> int | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(f"hallmon exited with {self.proc.returncode}\n{self.log_tail()}")
        try:
            return self.http.get(path).status_code
        except httpx.TransportError:
            return None

    def wait_for(self, probe: Callable[[], T], within: float, what: str,
                 every: float = 0.1) -> T:
        """Poll ``probe`` until it returns something truthy; fail with the log if it never does."""
        deadline = time.monotonic() + within
        last: object = None
        while True:
            try:
                value = probe()
            except (httpx.TransportError, KeyError) as exc:
                value, last = None, exc  # type: ignore[assignment]
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonError(f"hallmon exited ({self.proc.returncode}) while waiting for "
                                  f"{what}\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise DaemonError(f"timed out after {within}s waiting for {what} (last: "
                                  f"{value if last is None else last!r})\n{self.log_tail()}")
            time.sleep(every)

    def metrics(self) -> str:
        r = self.http.get("/metrics")
        r.raise_for_status()
        return r.text

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return parse_metrics(self.metrics())

    def sample(self, name: str, **labels: str) -> float | None:
        for got, value in self.samples().get(name, []):
            if all(got.get(k) == v for k, v in labels.items()):
                return value
        return None

    def devices(self) -> dict[str, dict[str, Any]]:
        r = self.http.get("/api/v1/devices")
        r.raise_for_status()
        return {d["id"]: d for d in r.json()["devices"]}

    def status(self, device: str) -> str:
        return str(self.devices()[device]["status"])

    def device(self, device: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/devices/{device}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def start_together(daemons: Sequence[HallmonProcess]) -> None:
    """Start several daemons made with ``autostart=False`` at once (pollers sharing a site race
    for their leases as in a hall), then wait until each is ready. The caller still leaves each
    one (``__exit__``), in its ``finally``."""
    for d in daemons:
        d.__enter__()
        d.spawn()
    for d in daemons:
        d.wait_ready()


# ---- a webhook receiver -------------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """Collects JSON bodies POSTed to any path (127.0.0.1, port 0, a thread).

    ``refuse(body)`` returning True answers that request 503 (a receiver that is briefly out);
    refused bodies are kept in ``refused``, never in ``received``."""

    received: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # each received body's request path
    refuse: Callable[[dict[str, Any]], bool] | None = None
    refused: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                with receiver._lock:
                    refused = receiver.refuse is not None and receiver.refuse(body)
                    if refused:
                        receiver.refused.append(body)
                    else:
                        receiver.received.append(body)
                        receiver.keys.append(self.headers.get("Idempotency-Key"))
                        receiver.paths.append(self.path)
                self.send_response(503 if refused else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
