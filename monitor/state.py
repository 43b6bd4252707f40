"""The state machine: probe results in, hard states and device statuses out. PURE.

No I/O, no clock reads, no asyncio: every time is a number the caller passes (``now``), so the
whole module is tested as stories over plain values.

Decisions (and why):

- A check starts hard UNKNOWN. The first success makes it hard UP at once: a reply cannot be a
  false positive and there was no page to resolve, so waiting ``success_threshold`` cycles would
  only keep a freshly started hall grey for a minute. ``failure_threshold`` failures make it hard
  DOWN. Both first hard states carry ``initial=True``; an initial UP is never a "recovery".
- From hard DOWN, ``success_threshold`` successes in a row make it hard UP; from hard UP,
  ``failure_threshold`` failures in a row make it hard DOWN. Anything in between only moves the
  soft status and the counters.
- Flapping is Nagios' method: over the last ``flap_window`` results, each state change weighs
  0.8 (oldest) .. 1.2 (newest); percent = weighted changes * 100 / (window - 1). Above
  ``flap_high`` the check starts flapping, below ``flap_low`` it stops (hysteresis). A partly
  filled history counts the missing changes as none, so a new check never starts out flapping.
  While flapping, hard transitions are still recorded, marked ``flapping=True``: the alert layer
  pages once on ``flap_started`` and on ``flap_stopped``, never on each flip.
- Device status precedence: maintenance > unreachable > down > degraded > up; unknown until the
  reachability check has a hard state. A device whose own reachability fails while its parent's
  path is bad (down/unreachable, or in maintenance with its reachability down) is UNREACHABLE.
- After a parent's path recovers, its children whose reachability is not hard UP stay UNREACHABLE
  ("pending re-check") and are listed in ``Update.recheck`` until their own next results settle
  them: a failure releases a DOWN notice, a hard UP ends it silently. No child notice goes out
  based on results taken while the parent was down.
- Health checks (every check but reachability) count only while the device answers and its path
  is good: a result taken while the device's reachability is failing (soft or hard), while it is
  held UNREACHABLE, or while its parent's path is bad or suspect is dropped. When reachability
  comes back (hard DOWN -> UP) the health checks start afresh (UNKNOWN): a camera's slow RTSP
  check that failed during the outage must not roll the recovered camera up DEGRADED; it is UP
  until a health check fails on its own. Held checks (trap conditions: the device's own word,
  held until a clearing trap or a timeout) are exempt from both: they count during the outage
  and survive the recovery.
- A hard DOWN check keeps the reason it failed (``CheckState.cause``); the rollup names it even
  while a success is settling the recovery or after a restart (``restored(cause=...)``): a
  status cause is never ``None`` nor a generic stand-in for the one recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

_NO_VALUES: Mapping[str, float] = MappingProxyType({})
_NO_HEALTH: Mapping[str, CheckState] = MappingProxyType({})


class CheckStatus(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class DeviceStatus(StrEnum):
    """Listed in precedence order after UNKNOWN (the metrics one-hot uses this order)."""

    UNKNOWN = "unknown"
    MAINTENANCE = "maintenance"
    UNREACHABLE = "unreachable"
    DOWN = "down"
    DEGRADED = "degraded"
    UP = "up"


# Statuses that page: entering one notifies, leaving one notifies (resolve).
PAGED: frozenset[DeviceStatus] = frozenset({DeviceStatus.DOWN, DeviceStatus.DEGRADED})
# A parent in one of these cuts its children off.
_BAD_PATH: frozenset[DeviceStatus] = frozenset({DeviceStatus.DOWN, DeviceStatus.UNREACHABLE})
# A parent in one of these whose reachability is failing (soft) already cuts its children off.
_SUSPECT: frozenset[DeviceStatus] = frozenset(
    {DeviceStatus.UP, DeviceStatus.DEGRADED, DeviceStatus.UNKNOWN}
)


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    failure_threshold: int = 3
    success_threshold: int = 2
    flap_window: int = 21
    flap_high: float = 50.0
    flap_low: float = 25.0
    # Short outages repeated (down 14 s every 40 s) change state too rarely for the percent to
    # rise: this many hard DOWNs within the flap window are flapping as well (issue 10); it
    # stops once at most one is left in the window (and the percent is below flap_low).
    flap_downs: int = 3

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("thresholds must be >= 1")
        if not 3 <= self.flap_window <= 64:
            raise ValueError("flap_window must be 3..64")
        if not 0 <= self.flap_low <= self.flap_high <= 100:
            raise ValueError("need 0 <= flap_low <= flap_high <= 100")


class LastResult(NamedTuple):
    ok: bool
    error: str | None
    values: Mapping[str, float]
    at: float


class CheckState(NamedTuple):
    """One check's state. ``history`` holds result bits, newest in bit 0 (1 = ok)."""

    hard: CheckStatus = CheckStatus.UNKNOWN
    soft: CheckStatus = CheckStatus.UNKNOWN
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    last: LastResult | None = None
    history: int = 0
    history_len: int = 0
    flapping: bool = False
    flap_percent: float = 0.0
    since: float | None = None  # time of the last hard change
    last_change: float | None = None  # time of the last soft change (result flipped)
    cause: str | None = None  # while hard DOWN: the latest failure's reason
    downs: int = 0  # like ``history``: 1 where a result made the check hard DOWN


class Transition(NamedTuple):
    """A hard change and/or a flapping start/stop of one check (``from_ == to`` for the latter)."""

    from_: CheckStatus
    to: CheckStatus
    at: float
    cause: str
    initial: bool = False  # first hard state after UNKNOWN: never a "recovery"
    flapping: bool = False  # the check is flapping: record, do not page this flip
    flap_started: bool = False
    flap_stopped: bool = False


_WEIGHTS: dict[int, tuple[float, ...]] = {}


def _weights(window: int) -> tuple[float, ...]:
    """Weight of the change between results i and i+1 (i = 0 newest): 1.2 newest .. 0.8 oldest."""
    w = _WEIGHTS.get(window)
    if w is None:
        n = window - 1
        w = tuple(1.2 - 0.4 * i / (n - 1) for i in range(n))
        _WEIGHTS[window] = w
    return w


def flap_percent(history: int, history_len: int, window: int) -> float:
    """Nagios' weighted percent state change over the newest ``window`` results."""
    changes = (history ^ (history >> 1)) & ((1 << max(history_len - 1, 0)) - 1)
    if not changes:
        return 0.0
    weights = _weights(window)
    total = 0.0
    i = 0
    while changes:
        if changes & 1:
            total += weights[i]
        changes >>= 1
        i += 1
    return total * 100.0 / (window - 1)


def advance(
    state: CheckState,
    ok: bool,
    error: str | None,
    policy: CheckPolicy,
    now: float,
    values: Mapping[str, float] | None = None,
) -> tuple[CheckState, Transition | None]:
    """Apply one result. Returns the new state and the transition it caused, if any."""
    soft = CheckStatus.UP if ok else CheckStatus.DOWN
    n_ok = state.consecutive_ok + 1 if ok else 0
    n_fail = 0 if ok else state.consecutive_fail + 1
    hard = _next_hard(state.hard, ok, n_ok, n_fail, policy)

    mask = (1 << policy.flap_window) - 1
    history = ((state.history << 1) | ok) & mask
    history_len = min(state.history_len + 1, policy.flap_window)
    percent = flap_percent(history, history_len, policy.flap_window)
    went_down = hard is CheckStatus.DOWN and state.hard is not CheckStatus.DOWN
    downs = ((state.downs << 1) | went_down) & mask
    n_downs = downs.bit_count()
    flapping = state.flapping
    if not flapping and (percent > policy.flap_high or n_downs >= policy.flap_downs):
        flapping = True
    elif flapping and percent < policy.flap_low and n_downs <= 1:
        flapping = False

    new = CheckState(
        hard=hard,
        soft=soft,
        consecutive_ok=n_ok,
        consecutive_fail=n_fail,
        last=LastResult(ok, error, values if values is not None else _NO_VALUES, now),
        history=history,
        history_len=history_len,
        flapping=flapping,
        flap_percent=percent,
        since=now if hard is not state.hard else state.since,
        last_change=now if soft is not state.soft else state.last_change,
        cause=_down_cause(hard, ok, error, state.cause),
        downs=downs,
    )
    if hard is state.hard and flapping == state.flapping:
        return new, None
    return new, Transition(
        from_=state.hard,
        to=hard,
        at=now,
        cause=_cause(hard, state.hard, flapping, state.flapping, percent, error,
                     n_downs, policy),
        initial=state.hard is CheckStatus.UNKNOWN and hard is not CheckStatus.UNKNOWN,
        flapping=flapping or state.flapping,
        flap_started=flapping and not state.flapping,
        flap_stopped=state.flapping and not flapping,
    )


def _down_cause(hard: CheckStatus, ok: bool, error: str | None, old: str | None) -> str | None:
    """Why a hard DOWN check is down: the latest failure's reason, kept through successes
    that have not yet reached ``success_threshold``."""
    if hard is not CheckStatus.DOWN:
        return None
    if not ok:
        return error or old or "failed"
    return old or "failed"


def _next_hard(
    hard: CheckStatus, ok: bool, n_ok: int, n_fail: int, policy: CheckPolicy
) -> CheckStatus:
    if ok:
        if hard is CheckStatus.UNKNOWN or (
            hard is CheckStatus.DOWN and n_ok >= policy.success_threshold
        ):
            return CheckStatus.UP
    elif hard is not CheckStatus.DOWN and n_fail >= policy.failure_threshold:
        return CheckStatus.DOWN
    return hard


def _cause(
    hard: CheckStatus,
    old: CheckStatus,
    flapping: bool,
    was_flapping: bool,
    percent: float,
    error: str | None,
    downs: int = 0,
    policy: CheckPolicy | None = None,
) -> str:
    if flapping != was_flapping:
        verb = "started" if flapping else "stopped"
        if flapping and policy is not None and percent <= policy.flap_high:
            return (f"flapping {verb}: {downs} outages in the last {policy.flap_window} "
                    f"results ({percent:.0f}% state change)")
        return f"flapping {verb}: {percent:.0f}% state change"
    if hard is CheckStatus.DOWN:
        return error or "failed"
    return "responding"


def restored(hard: CheckStatus, since: float | None, policy: CheckPolicy,
             cause: str | None = None) -> CheckState:
    """A check resumed after a restart at its last known hard state, counters as if settled.

    The pipeline feeds this from incident history so a device still down after a restart does
    not produce a second "down", and keeps the recorded ``cause`` (not "not responding").
    """
    if hard is CheckStatus.DOWN:
        return CheckState(hard=hard, soft=hard, consecutive_fail=policy.failure_threshold,
                          since=since, last_change=since, cause=cause or "failed")
    if hard is CheckStatus.UP:
        return CheckState(hard=hard, soft=hard, consecutive_ok=policy.success_threshold,
                          since=since, last_change=since)
    return CheckState()


# --- device rollup -------------------------------------------------------------------------


def rollup(
    reachability: CheckState | None,
    health: Mapping[str, CheckState],
    parent: DeviceStatus | None,
    in_maintenance: bool,
    parent_suspect: bool = False,
    down_checks: frozenset[str] = frozenset(),
) -> tuple[DeviceStatus, str]:
    """One device's status and its cause.

    ``parent`` is the *path* status of the nearest parent (see ``path_status``): its own status,
    or DOWN when it is in maintenance with its reachability down. Because parents are rolled up
    first, the nearest ancestor already carries the transitive answer. ``parent_suspect``: the
    parent's reachability is failing but not yet hard down (splay polled the child first); a
    failing child is then held UNREACHABLE until the parent's state settles either way.
    """
    if in_maintenance:
        return DeviceStatus.MAINTENANCE, "maintenance"
    if reachability is None:
        return DeviceStatus.UNKNOWN, "not yet polled"
    failing = reachability.hard is CheckStatus.DOWN or (
        reachability.hard is CheckStatus.UNKNOWN and reachability.soft is CheckStatus.DOWN
    )
    if failing and parent in _BAD_PATH:
        return DeviceStatus.UNREACHABLE, f"parent {parent}"
    if failing and parent_suspect and reachability.hard is CheckStatus.DOWN:
        return DeviceStatus.UNREACHABLE, "parent not answering: awaiting its re-check"
    if reachability.hard is CheckStatus.UNKNOWN:
        return DeviceStatus.UNKNOWN, "awaiting first hard state"
    if reachability.hard is CheckStatus.DOWN:
        return DeviceStatus.DOWN, reachability.cause or "not responding"
    for name in sorted(down_checks):  # a device's own word that it is down (trap rules)
        st = health.get(name)
        if st is not None and st.hard is CheckStatus.DOWN:
            return DeviceStatus.DOWN, f"{name}: {st.cause or 'failed'}"
    for name in sorted(health) if health else ():
        st = health[name]
        if st.hard is CheckStatus.DOWN:
            return DeviceStatus.DEGRADED, f"{name}: {st.cause or 'failed'}"
    return DeviceStatus.UP, "ok"


def path_status(status: DeviceStatus, reachability: CheckState | None) -> DeviceStatus:
    """What a device means to its children: a switch in maintenance that is down still cuts
    them off (their failures are not theirs)."""
    if reachability is None:
        return status
    if status is DeviceStatus.MAINTENANCE and reachability.hard is CheckStatus.DOWN:
        return DeviceStatus.DOWN
    if status in _SUSPECT and reachability.soft is CheckStatus.DOWN:
        # Failing right now but not yet hard DOWN: a child that reaches its own threshold
        # first (splay puts it ahead) must not page for its parent's outage. If the parent
        # answers again, the child is re-checked and pages then (see ``pending``).
        return DeviceStatus.DOWN
    return status


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """What the state layer needs to know about a device (the lead maps the inventory to it)."""

    id: str
    parent: str | None = None
    reachability: str = "reachability"
    checks: Mapping[str, CheckPolicy] = field(
        default_factory=lambda: {"reachability": CheckPolicy()}
    )
    # Health checks whose hard failure makes the device DOWN rather than DEGRADED (a held trap
    # condition "down"): the same status as a failed ping, so the two are one incident.
    down_checks: frozenset[str] = frozenset()
    # Checks whose state is held by their own source, not polled (a trap condition holds until
    # its clearing trap or its timeout): they count while the device's ping fails and are not
    # reset when it recovers (a link reported down stays down after the ping comes back).
    held_checks: frozenset[str] = frozenset()


class DeviceTransition(NamedTuple):
    device: str
    from_: DeviceStatus
    to: DeviceStatus
    at: float
    cause: str
    notify: bool  # page / resolve; False for silent moves (maintenance, unreachable, initial up)
    flapping: bool = False  # caused by a flapping check: the check's flap notice covers it


class Update(NamedTuple):
    """Everything one result changed.

    How the pipeline turns it into notices: every ``devices`` entry is recorded (incident
    history); those with ``notify`` page or resolve; ``check.flap_started`` pages once as
    "flapping" and ``check.flap_stopped`` reports the device's current status (its flips in
    between were recorded with ``notify=False``). UNREACHABLE moves are silent by themselves: the
    parent's notice names them. ``recheck`` lists devices to poll now (``Scheduler.recheck``).
    """

    check: Transition | None = None
    devices: tuple[DeviceTransition, ...] = ()
    recheck: frozenset[str] = frozenset()


_NOTHING = Update()


def _notify(old: DeviceStatus, new: DeviceStatus) -> bool:
    """Pages on entering down/degraded, resolves on leaving them (into anything, even
    maintenance or unreachable: the open page must end). UNKNOWN -> UP is never a recovery."""
    return new in PAGED or old in PAGED


class HallState:
    """Every device's check states and status; the pipeline is its single writer.

    Devices are kept in topological (parent-first) order; a result recomputes only the
    device and its descendants.
    """

    def __init__(self, specs: Iterable[DeviceSpec]) -> None:
        self._specs: dict[str, DeviceSpec] = {}
        self._children: dict[str, list[str]] = {}
        self._health: dict[str, tuple[str, ...]] = {}
        self._paths: dict[str, tuple[DeviceStatus, bool]] = {}  # as children last saw it
        self.checks: dict[tuple[str, str], CheckState] = {}
        self.statuses: dict[str, tuple[DeviceStatus, str]] = {}
        self.since: dict[str, float] = {}  # time of each device's last status change
        self.maintenance: set[str] = set()
        self.pending: set[str] = set()  # children awaiting a re-check after a parent recovered
        self._install(list(specs))

    # -- setup --------------------------------------------------------------------------------

    def _install(self, specs: list[DeviceSpec]) -> None:
        by_id = {s.id: s for s in specs}
        self._specs = {s.id: s for s in _topological(by_id)}
        # Only parents get a list (10k leaf devices: ~0.7 MB of empty lists otherwise).
        self._children = {}
        self._health = {s.id: tuple(sorted(c for c in s.checks if c != s.reachability))
                        for s in self._specs.values()}
        for s in self._specs.values():
            if s.parent is not None:
                self._children.setdefault(s.parent, []).append(s.id)
        keep = {(s.id, c) for s in self._specs.values() for c in s.checks}
        self.checks = {k: self.checks.get(k, CheckState()) for k in sorted(keep)}
        self.statuses = {i: self.statuses.get(i, (DeviceStatus.UNKNOWN, "not yet polled"))
                         for i in self._specs}
        self.since = {i: t for i, t in self.since.items() if i in self._specs}
        self.maintenance &= set(self._specs)
        self.pending &= set(self._specs)
        self._paths = {i: self._path(i) for i in self._specs}

    def replace(self, specs: Iterable[DeviceSpec], now: float) -> tuple[DeviceTransition, ...]:
        """Reload: keep the states of unchanged checks, drop removed devices, recompute all."""
        self._install(list(specs))
        return self._recompute(list(self._specs), now, set(), full=True)

    def restore(self, states: Mapping[tuple[str, str], CheckState], maintenance: Iterable[str],
                now: float) -> None:
        """Resume after a restart: set states and recompute statuses without any notice."""
        for key, st in states.items():
            if key in self.checks:
                self.checks[key] = st
        self.maintenance = set(maintenance) & set(self._specs)
        self._recompute(list(self._specs), now, set(), full=True)
        for (dev, _), st in states.items():  # changed when the incident began, not now
            if dev in self._specs and st.since is not None:
                self.since[dev] = min(st.since, self.since.get(dev, st.since))

    # -- reads ---------------------------------------------------------------------------------

    @property
    def devices(self) -> Mapping[str, DeviceSpec]:
        return self._specs

    def status(self, device: str) -> DeviceStatus:
        return self.statuses[device][0]

    def policy(self, key: tuple[str, str]) -> CheckPolicy:
        return self._specs[key[0]].checks[key[1]]

    # -- writes --------------------------------------------------------------------------------

    def apply(self, device: str, check: str, ok: bool, error: str | None, now: float,
              values: Mapping[str, float] | None = None) -> Update:
        """Apply one probe result; return the transitions to record/notify and who to re-check."""
        key = (device, check)
        spec = self._specs[device]
        if (check != spec.reachability and check not in spec.held_checks
                and not self._health_counts(device, spec)):
            return _NOTHING  # taken while the device or its path was failing: not its own
        old = self.checks[key]
        new, transition = advance(old, ok, error, spec.checks[check], now, values)
        self.checks[key] = new
        if (transition is not None and check == spec.reachability
                and transition.from_ is CheckStatus.DOWN and transition.to is CheckStatus.UP):
            for name in self._health[device]:  # the outage's health failures end with it
                if name not in spec.held_checks:
                    self.checks[(device, name)] = CheckState()
        recheck: set[str] = set()
        settled: str | None = None
        if device in self.pending and check == spec.reachability:
            if ok and new.hard is not CheckStatus.UP:
                recheck.add(device)  # settling: keep it held and keep asking
            else:
                self.pending.discard(device)
                settled = device
        if transition is None and settled is None and not recheck and (
            new.hard is not CheckStatus.UNKNOWN
        ) and not (new.soft is not old.soft and check == spec.reachability
                   and device in self._children):
            # No hard change: the rollup cannot move (it reads hard states; soft ones only
            # while UNKNOWN, or a parent's to hold its children). The common case, kept cheap.
            return _NOTHING
        flapping = transition is not None and transition.flapping
        moved = self._recompute([device], now, recheck, flapping, settled)
        return Update(transition, moved, frozenset(recheck))

    def set_maintenance(self, device: str, on: bool, now: float) -> tuple[DeviceTransition, ...]:
        if on:
            self.maintenance.add(device)
        else:
            self.maintenance.discard(device)
        return self._recompute([device], now, set())

    # -- internals -----------------------------------------------------------------------------

    def _health_counts(self, device: str, spec: DeviceSpec) -> bool:
        """May a health result of this device count now? Not while its reachability fails
        (even softly), it is held UNREACHABLE or pending, or its parent's path is bad/suspect."""
        reach = self.checks.get((device, spec.reachability))
        if reach is not None and CheckStatus.DOWN in (reach.hard, reach.soft):
            return False
        if device in self.pending or self.statuses[device][0] is DeviceStatus.UNREACHABLE:
            return False
        if spec.parent is not None:
            path, suspect = self._paths[spec.parent]
            if suspect or path in _BAD_PATH:
                return False
        return True

    def _recompute(self, start: list[str], now: float, recheck: set[str],
                   flapping: bool = False, settled: str | None = None, full: bool = False,
                   ) -> tuple[DeviceTransition, ...]:
        """Roll up ``start`` (parent-first), then the children of every device whose meaning
        to its children (path status) changed, breadth-first: a leaf's result costs one
        rollup, a switch's result touches its subtree only when the switch's status moves."""
        moved: list[DeviceTransition] = []
        queue = list(start)
        i = 0
        while i < len(queue):
            dev = queue[i]
            i += 1
            kids = self._children.get(dev, _NO_KIDS)
            status, cause = self._rollup_one(dev, recheck, settled)
            old = self.statuses[dev][0]
            self.statuses[dev] = (status, cause)
            if status is not old:
                self.since[dev] = now
                mine = flapping and dev == start[0]
                moved.append(DeviceTransition(dev, old, status, now, cause,
                                              notify=_notify(old, status) and not mine,
                                              flapping=mine))
            if kids:
                path = self._path(dev)
                if self._paths.get(dev) != path:
                    self._paths[dev] = path
                    if not full:
                        queue.extend(kids)
        return tuple(moved)

    def _rollup_one(self, dev: str, recheck: set[str],
                    settled: str | None) -> tuple[DeviceStatus, str]:
        spec = self._specs[dev]
        reach = self.checks.get((dev, spec.reachability))
        names = self._health[dev]
        health = {c: self.checks[(dev, c)] for c in names} if names else _NO_HEALTH
        parent, suspect = self._paths[spec.parent] if spec.parent is not None else (None, False)
        status, cause = rollup(reach, health, parent, dev in self.maintenance, suspect,
                               spec.down_checks)
        if suspect and status is DeviceStatus.UNREACHABLE and spec.parent is not None:
            recheck.add(spec.parent)  # is the path really gone? ask now, not in a cycle
        old = self.statuses[dev][0]
        # UNREACHABLE only comes from a bad parent path, so leaving it without a fresh result
        # of our own (``settled``) means the parent just came back.
        if (old is DeviceStatus.UNREACHABLE and dev != settled
                and status is not DeviceStatus.UNREACHABLE
                and status is not DeviceStatus.MAINTENANCE
                and reach is not None and reach.hard is not CheckStatus.UP):
            self.pending.add(dev)  # the path came back: trust only fresh results
        if dev in self.pending:
            if status is DeviceStatus.MAINTENANCE:
                self.pending.discard(dev)
            else:
                recheck.add(dev)
                return DeviceStatus.UNREACHABLE, "awaiting re-check after parent"
        return status, cause

    def _path(self, device: str) -> tuple[DeviceStatus, bool]:
        """What a device means to its children: its path status, and whether its
        reachability is failing without being hard down yet (suspect)."""
        reach = self.checks.get((device, self._specs[device].reachability))
        suspect = (reach is not None and reach.soft is CheckStatus.DOWN
                   and reach.hard is not CheckStatus.DOWN)
        # One shared tuple per (status, suspect): a new one per device was ~0.6 MB at 10k.
        return _PATHS[path_status(self.statuses[device][0], reach), suspect]


_NO_KIDS: list[str] = []  # never mutated: devices without children share it
_PATHS: dict[tuple[DeviceStatus, bool], tuple[DeviceStatus, bool]] = {
    (status, suspect): (status, suspect) for status in DeviceStatus for suspect in (False, True)
}


def _topological(by_id: Mapping[str, DeviceSpec]) -> list[DeviceSpec]:
    """Parents first; unknown parents and cycles are errors (the inventory rejects them first)."""
    out: list[DeviceSpec] = []
    mark: dict[str, int] = {}  # 1 visiting, 2 done
    for root in by_id:
        stack = [root]
        while stack:
            dev = stack[-1]
            if mark.get(dev) == 2:
                stack.pop()
                continue
            mark[dev] = 1
            parent = by_id[dev].parent
            if parent is not None and mark.get(parent) != 2:
                if parent not in by_id:
                    raise ValueError(f"device {dev!r}: unknown parent {parent!r}")
                if mark.get(parent) == 1:
                    raise ValueError(f"parent cycle through {dev!r}")
                stack.append(parent)
                continue
            mark[dev] = 2
            out.append(by_id[dev])
            stack.pop()
    return out


__all__ = [
    "PAGED",
    "CheckPolicy",
    "CheckState",
    "CheckStatus",
    "DeviceSpec",
    "DeviceStatus",
    "DeviceTransition",
    "HallState",
    "LastResult",
    "Transition",
    "Update",
    "advance",
    "flap_percent",
    "path_status",
    "restored",
    "rollup",
]
