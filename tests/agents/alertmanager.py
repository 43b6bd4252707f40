"""The real ``prometheus-alertmanager`` on a free 127.0.0.1 port, with a temp config and storage.

    with running_alertmanager(binary, tmp_path, webhook_url=None) as base_url:
        httpx.get(f"{base_url}/api/v2/alerts")

Clustering is off (``--cluster.listen-address=``) so nothing leaves loopback. With
``webhook_url`` every alert group is forwarded there at once (group_wait 0s), which lets a test
see the exact version-4 payload Alertmanager itself sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.agents.proc import free_port, http_ready, running


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
    address = f"127.0.0.1:{free_port()}"
    base = f"http://{address}"
    argv = [binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={address}", "--cluster.listen-address=",
            "--log.level=warn"]
    with httpx.Client(timeout=1.0) as client, running(
        argv, what="alertmanager", log=workdir / "alertmanager.log", within=ready_within,
        every=0.05, ready=http_ready(client, f"{base}/-/ready"),
    ):
        yield base
