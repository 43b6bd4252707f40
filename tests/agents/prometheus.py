"""A real Prometheus server for tests (the Debian ``prometheus`` binary).

Listens on 127.0.0.1 at a free high port with a temp config and TSDB dir, scrapes the given
loopback targets every ``scrape_interval``, and is stopped (and its dir removed) at teardown.
Queries go through the real HTTP API, so PromQL is parsed and run exactly as Grafana's would be.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.agents.proc import free_port, http_ready, running


class PromQLError(AssertionError):
    """Prometheus rejected a query (bad syntax, bad type, execution error)."""


@dataclass
class PrometheusServer:
    url: str
    client: httpx.Client

    def _get(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        resp = self.client.get(f"{self.url}{path}", params=list(params))
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')} ({params})")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """Instant query: ``{"resultType": ..., "result": [...]}``; raises PromQLError."""
        params = [("query", expr)] + ([("time", f"{at:.3f}")] if at is not None else [])
        data: dict[str, Any] = self._get("/api/v1/query", params)
        return data

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"),
                  ("step", f"{step:g}")]
        data: dict[str, Any] = self._get("/api/v1/query_range", params)
        return data

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = [("match[]", match)] if match else []
        values: list[str] = self._get(f"/api/v1/label/{label}/values", params)
        return values

    def targets_up(self) -> list[dict[str, Any]]:
        data = self._get("/api/v1/targets", [("state", "active")])
        return [t for t in data["activeTargets"] if t.get("health") == "up"]

    def wait_for_samples(self, expr: str, timeout: float) -> None:
        """Until ``expr`` returns at least one sample (e.g. the first scrape landed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(expr)["result"]:
                return
            time.sleep(0.2)
        raise TimeoutError(f"no samples for {expr!r} within {timeout} s")


def scrape_config(targets: dict[str, str], scrape_interval: str) -> dict[str, Any]:
    """A minimal prometheus.yml: one job per ``{job: "127.0.0.1:port"}``."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": job, "scrape_interval": scrape_interval,
             "scrape_timeout": scrape_interval, "static_configs": [{"targets": [addr]}]}
            for job, addr in targets.items()
        ],
    }


def config_addresses(config: dict[str, Any]) -> list[str]:
    """Every address a prometheus.yml makes the server talk to: static scrape targets and
    Alertmanagers (the only kinds of target the tests' configs use)."""
    groups = [g for job in config.get("scrape_configs", []) for g in job.get("static_configs", [])]
    for am in config.get("alerting", {}).get("alertmanagers", []):
        groups += am.get("static_configs", [])
    return [t for g in groups for t in g.get("targets", [])]


def require_loopback(addresses: Sequence[str]) -> None:
    for addr in addresses:
        if not addr.startswith(("127.", "[::1]", "localhost")):
            raise ValueError(f"tests talk to loopback only, not {addr}")


@contextmanager
def prometheus_server(
    binary: str, targets: dict[str, str], scrape_interval: str = "1s"
) -> Iterator[PrometheusServer]:
    """Start ``binary`` scraping ``targets`` (loopback only); raise RuntimeError if it fails."""
    with prometheus_with_config(binary, scrape_config(targets, scrape_interval)) as server:
        yield server


@contextmanager
def prometheus_with_config(binary: str, config_doc: dict[str, Any]) -> Iterator[PrometheusServer]:
    """Start ``binary`` with a whole prometheus.yml (every target and Alertmanager must be on
    loopback: checked before it starts); raise RuntimeError if it fails."""
    require_loopback(config_addresses(config_doc))
    if any(k.endswith("_sd_configs") for job in config_doc.get("scrape_configs", []) for k in job):
        raise ValueError("tests use static_configs only (service discovery may leave loopback)")
    tmp = Path(tempfile.mkdtemp(prefix="hallmon-prom-"))
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(config_doc))
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={address}", "--log.level=warn",
            "--storage.tsdb.retention.time=1h"]
    client = httpx.Client(timeout=10)
    try:
        with running(argv, what="prometheus", log=tmp / "prometheus.log", cwd=tmp,
                     ready=http_ready(client, f"{url}/-/ready")):
            yield PrometheusServer(url, client)
    finally:
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
