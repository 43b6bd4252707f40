"""A check's conditions applied to a probe result: derived values (ratios), then every condition.

A *condition* that holds marks its check failed, and a failed health check makes the device
DEGRADED once hard (toner low, UPS on battery, NVR disk error, line loss...). The conditions
themselves are inventory data (class profiles in :mod:`monitor.inventory.profiles`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping

from monitor.inventory import Condition, ResolvedCheck, SnmpCheck
from probes.result import ProbeResult

# ---- conditions -------------------------------------------------------------------------------

_OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def derive_values(check: ResolvedCheck, values: Mapping[str, float]) -> dict[str, float]:
    """Add the profile's derived values (ratios) to a probe's values."""
    out = dict(values)
    spec = check.spec
    if isinstance(spec, SnmpCheck):
        for name, ratio in spec.ratios.items():
            num, den = values.get(ratio.numerator), values.get(ratio.denominator)
            # Printer-MIB uses -2 (unknown) and -3 (some remains): no ratio from those.
            if name in out:
                continue  # the device (or the simulation) reported it directly
            if num is not None and den is not None and den > 0 and num >= 0:
                out[name] = ratio.scale * num / den
    return out


def _matching(condition: Condition, values: Mapping[str, float]) -> list[tuple[str, float]]:
    name = condition.value
    if name.endswith(".*"):
        prefix = name[:-1]
        return [(k, v) for k, v in values.items() if k.startswith(prefix)]
    return [(name, values[name])] if name in values else []


def failed_conditions(
    conditions: tuple[Condition, ...] | list[Condition], values: Mapping[str, float]
) -> list[str]:
    """Human-readable reasons for every condition that holds; a missing value is not a failure."""
    reasons = []
    for cond in conditions:
        hits = [(k, v) for k, v in _matching(cond, values) if _OPS[cond.op](v, cond.threshold)]
        if hits:
            key, value = hits[0]
            reasons.append(f"{cond.message} ({key}={value:g} {cond.op} {cond.threshold:g})")
    return reasons


def evaluate(check: ResolvedCheck, result: ProbeResult) -> ProbeResult:
    """Apply the check's derived values and conditions to a probe result."""
    values = derive_values(check, result.values)
    if not result.ok:
        return ProbeResult.failure(result.duration, result.error or "failed", values, result.texts)
    reasons = failed_conditions(check.conditions, values)
    if reasons:
        return ProbeResult.failure(result.duration, "; ".join(reasons), values, result.texts)
    if len(values) == len(result.values):
        return result
    return ProbeResult.success(result.duration, values, result.texts, result.errors)
