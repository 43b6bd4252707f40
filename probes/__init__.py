"""Probes: talk to devices, know nothing of monitor/. One file per protocol, one registry."""

from probes.result import ProbeResult

__all__ = ["ProbeResult"]
