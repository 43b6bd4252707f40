"""The real ``prometheus-alertmanager`` on a free 127.0.0.1 port, with a temp config and storage.

    with running_alertmanager(binary, tmp_path, webhook_url=None) as base_url:
        httpx.get(f"{base_url}/api/v2/alerts")

Clustering is off (``--cluster.listen-address=``) so nothing leaves loopback. With
``webhook_url`` every alert group is forwarded there at once (group_wait 0s), which lets a test
see the exact version-4 payload Alertmanager itself sends.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(webhook_url: str | None) -> dict[str, object]:
    receiver: dict[str, object] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return {
        "route": {"receiver": "default", "group_by": ["device"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [receiver],
    }


@contextmanager
def running_alertmanager(
    binary: str, workdir: Path, webhook_url: str | None = None, ready_within: float = 20.0
) -> Iterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(json.dumps(_config(webhook_url)))  # JSON is YAML
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, ready_within, workdir / "alertmanager.log")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _wait_ready(proc: subprocess.Popen[bytes], base: str, within: float, log: Path) -> None:
    deadline = time.monotonic() + within
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {log.read_text()[-2000:]}")
            try:
                if client.get(f"{base}/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"alertmanager not ready within {within}s: {log.read_text()[-2000:]}")
