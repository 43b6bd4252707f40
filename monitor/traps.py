"""What a trap means: rules in, check results and events out. PURE (times are passed in).

The receiver (monitor/receiver.py) decodes a notification and names its device; this module
matches it against the device's trap rules (:class:`~monitor.inventory.TrapRule`) and keeps the
conditions that ``degraded``/``down`` rules hold, per device, rule and instance:

- a matching hold rule sets (or renews) its condition until ``now + hold``;
- a trap matching a rule's ``cleared_by`` (with the same instance, when the rule has one and the
  trap carries it) ends the condition;
- :meth:`TrapBook.expire` ends conditions whose hold passed.

Every change is told as the *result* of the device's trap check (``traps`` for degraded,
``traps-down`` for down): failed while any condition of that kind holds (the error lists them),
ok once none does. The results go through ``Pipeline.handle`` like a probe's, so the state
machine decides what is news: a repeated trap, or a trap saying what polling already found, is
no second incident.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor.inventory import (
    TRAP_CHECK,
    TRAP_DOWN_CHECK,
    TrapMatch,
    TrapRule,
    VarBindCondition,
)
from probes.result import ProbeResult
from probes.snmp_ber import OBJECT_IDENTIFIER, OCTET_STRING, VarBind

_OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
_CHECK_OF = {"degraded": TRAP_CHECK, "down": TRAP_DOWN_CHECK}


def _find(varbinds: Sequence[VarBind], oid: str) -> VarBind | None:
    """The var-bind at ``oid`` or the first row below it (``ifIndex`` finds ``ifIndex.3``)."""
    prefix = oid + "."
    for vb in varbinds:
        if vb[0] == oid or vb[0].startswith(prefix):
            return vb
    return None


def _text(vb: VarBind) -> str:
    _, tag, value = vb
    if isinstance(value, bytes):
        if tag == OCTET_STRING:
            return value.decode("utf-8", "replace").rstrip("\x00")
        return ".".join(map(str, value))  # IpAddress
    return "" if value is None else str(value)


def condition_holds(cond: VarBindCondition, varbinds: Sequence[VarBind]) -> bool:
    vb = _find(varbinds, cond.oid)
    if vb is None:
        return False
    if isinstance(cond.value, str):
        text = _text(vb).lstrip(".") if vb[1] == OBJECT_IDENTIFIER else _text(vb)
        want = cond.value.lstrip(".") if vb[1] == OBJECT_IDENTIFIER else cond.value
        return (text == want) == (cond.op == "==")
    value = vb[2]
    if not isinstance(value, int):
        return False
    return _OPS[cond.op](float(value), cond.value)


def matches(match: TrapRule | TrapMatch, trap_oid: str, varbinds: Sequence[VarBind]) -> bool:
    return match.oid == trap_oid and all(condition_holds(c, varbinds) for c in match.when)


@dataclass(frozen=True, slots=True)
class Event:
    """One trap told as an event in a device's history (``event`` rules)."""

    device: str
    rule: str
    message: str
    trap_oid: str
    at: float


@dataclass(frozen=True, slots=True)
class Hold:
    message: str
    until: float
    kind: str  # "degraded" | "down"
    since: float = 0.0  # when the condition began (a renewal keeps it)


@dataclass
class Outcome:
    """What one trap did. ``results``: new results of the device's trap checks, by name."""

    matched: list[str] = field(default_factory=list)  # rule names
    recheck: bool = False
    events: list[Event] = field(default_factory=list)
    results: dict[str, ProbeResult] = field(default_factory=dict)
    held_changed: bool = False  # a condition set, renewed or cleared: the store's copy is old


class TrapBook:
    """The conditions trap rules hold, per device; the receiver is its single writer."""

    def __init__(self) -> None:
        # device -> (rule name, instance) -> Hold
        self.holds: dict[str, dict[tuple[str, str], Hold]] = {}

    def apply(self, device: str, rules: Sequence[TrapRule], trap_oid: str,
              varbinds: Sequence[VarBind], now: float) -> Outcome:
        out = Outcome()
        mine = self.holds.get(device, {})
        touched: set[str] = set()
        by_name = {r.name: r for r in rules}
        # Clearing first: one trap may clear an old condition and set a new one.
        for (name, instance), hold in list(mine.items()):
            rule = by_name.get(name)
            if rule is None or not any(matches(m, trap_oid, varbinds) for m in rule.cleared_by):
                continue
            if rule.instance is not None and instance:
                vb = _find(varbinds, rule.instance)
                if vb is not None and _text(vb) != instance:
                    continue
            del mine[(name, instance)]
            touched.add(hold.kind)
            out.held_changed = True
            out.matched.append(f"{name}:cleared")
        for rule in rules:
            if not matches(rule, trap_oid, varbinds):
                continue
            out.matched.append(rule.name)
            out.recheck = out.recheck or rule.action == "recheck" or rule.also_recheck
            if rule.action == "event":
                out.events.append(Event(device, rule.name, rule.message, trap_oid, now))
            elif rule.action in _CHECK_OF:
                vb = _find(varbinds, rule.instance) if rule.instance else None
                instance = _text(vb) if vb is not None else ""
                message = f"{rule.message} ({_instance_label(rule, instance)})" if instance \
                    else rule.message
                old = mine.get((rule.name, instance))
                since = old.since if old is not None and old.kind == rule.action else now
                mine[(rule.name, instance)] = Hold(message, now + rule.hold, rule.action, since)
                touched.add(rule.action)
                out.held_changed = True
        if mine:
            self.holds[device] = mine
        else:
            self.holds.pop(device, None)
        for kind in touched:
            out.results[_CHECK_OF[kind]] = self._result(device, kind)
        return out

    def load(self, device: str, rule: str, instance: str, hold: Hold) -> None:
        """A condition read back from the store (a restart, a device taken over)."""
        self.holds.setdefault(device, {})[(rule, instance)] = hold

    def drop(self, device: str, keep: Callable[[str, Hold], bool]
             ) -> list[tuple[str, ProbeResult]]:
        """End the device's conditions ``keep(rule, hold)`` refuses (a rule removed by a
        reload): the (check, result) of each kind that changed."""
        mine = self.holds.get(device, {})
        gone = {key: h for key, h in mine.items() if not keep(key[0], h)}
        for key in gone:
            del mine[key]
        if not mine:
            self.holds.pop(device, None)
        return [(_CHECK_OF[kind], self._result(device, kind))
                for kind in sorted({h.kind for h in gone.values()})]

    def failing(self, device: str) -> dict[str, tuple[str, float]]:
        """The device's trap checks that its conditions fail: check -> (error, since)."""
        out: dict[str, tuple[str, float]] = {}
        for kind in sorted({h.kind for h in self.holds.get(device, {}).values()}):
            res = self._result(device, kind)
            since = min(h.since for h in self.holds[device].values() if h.kind == kind)
            out[_CHECK_OF[kind]] = (res.error or "", since)
        return out

    def expire(self, now: float) -> list[tuple[str, str, ProbeResult]]:
        """End the conditions whose hold passed: (device, check, result) to apply."""
        out = []
        for device in list(self.holds):
            mine = self.holds[device]
            gone = {key: h for key, h in mine.items() if h.until <= now}
            if not gone:
                continue
            for key in gone:
                del mine[key]
            if not mine:
                del self.holds[device]
            for kind in sorted({h.kind for h in gone.values()}):
                out.append((device, _CHECK_OF[kind], self._result(device, kind)))
        return out

    def forget(self, keep: set[str]) -> list[str]:
        """A reload (devices no longer in the inventory) or a hand-over (devices another
        poller owns now): these lose their conditions here. Returns the devices forgotten."""
        gone = [device for device in self.holds if device not in keep]
        for device in gone:
            del self.holds[device]
        return gone

    def _result(self, device: str, kind: str) -> ProbeResult:
        active = sorted(h.message for h in self.holds.get(device, {}).values() if h.kind == kind)
        if not active:
            return ProbeResult.success(0.0)
        return ProbeResult.failure(0.0, "; ".join(active))


_INSTANCE_NAMES = {"1.3.6.1.2.1.2.2.1.1": "ifIndex"}  # IF-MIB::ifIndex


def _instance_label(rule: TrapRule, instance: str) -> str:
    return f"{_INSTANCE_NAMES.get(rule.instance or '', rule.instance)}={instance}"
