"""A check's conditions applied to a probe result: derived values (ratios), then every condition.

A *condition* that holds marks its check failed, and a failed health check makes the device
DEGRADED once hard (toner low, UPS on battery, NVR disk error, line loss...). The conditions
themselves are inventory data (class profiles in :mod:`monitor.inventory.profiles`).

A condition that *cannot be evaluated* fails its check too, saying so ("cannot evaluate
UPS电池电量低: battery_status missing (noSuchObject ...)"): a UPS whose reply carried no values
was reported healthy. Missing means the probe did not return the value (a ratio: not both of
its inputs); a ratio whose inputs are present but unknown (Printer-MIB -2/-3) is not missing.
A table condition (``name.*``) with no rows is fine (vendor tables are alternatives: a Huawei
switch has no H3C rows) unless the walk itself reported an error.
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
    """Human-readable reasons for every condition that holds (see ``unevaluable_conditions``
    for the missing values)."""
    reasons = []
    for cond in conditions:
        hits = [(k, v) for k, v in _matching(cond, values) if _OPS[cond.op](v, cond.threshold)]
        if hits:
            key, value = hits[0]
            reasons.append(f"{cond.message} ({key}={value:g} {cond.op} {cond.threshold:g})")
    return reasons


def unevaluable_conditions(
    check: ResolvedCheck, values: Mapping[str, float], raw: Mapping[str, float],
    errors: Mapping[str, str],
) -> list[str]:
    """Reasons for every condition whose value is missing (one per value)."""
    reasons: list[str] = []
    seen: set[str] = set()
    spec = check.spec
    ratios = spec.ratios if isinstance(spec, SnmpCheck) else {}
    for cond in check.conditions:
        name = cond.value
        if name in seen:
            continue
        if name.endswith(".*"):
            table = name[:-2]
            if table not in errors:
                continue
            why = errors[table]
        elif name in values:
            continue
        elif name in ratios:
            ratio = ratios[name]
            if ratio.numerator in raw and ratio.denominator in raw:
                continue  # present but unknown (-2/-3): no ratio, nothing is wrong
            why = "; ".join(errors[n] for n in (ratio.numerator, ratio.denominator)
                            if n in errors)
        else:
            why = errors.get(name, "")
        seen.add(name)
        reasons.append(f"cannot evaluate {cond.message}: {name} missing"
                       + (f" ({why})" if why else ""))
    return reasons


def evaluate(check: ResolvedCheck, result: ProbeResult) -> ProbeResult:
    """Apply the check's derived values and conditions to a probe result."""
    values = derive_values(check, result.values)
    if not result.ok:
        return ProbeResult.failure(result.duration, result.error or "failed", values, result.texts)
    reasons = failed_conditions(check.conditions, values)
    if check.conditions:
        reasons += unevaluable_conditions(check, values, result.values, result.errors)
    if reasons:
        return ProbeResult.failure(result.duration, "; ".join(reasons), values, result.texts)
    if len(values) == len(result.values):
        return result
    return ProbeResult.success(result.duration, values, result.texts, result.errors)
