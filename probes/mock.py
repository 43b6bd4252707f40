"""Scripted probe for the core tests and the demo: the seam where fake devices live.

Each target (optionally each target+check) follows a program of phases; a phase starts at an
elapsed time (from an injectable clock) and/or a call count. Modes:

- ``up``      ok, with the config's values overlaid by the phase's values
- ``down``    failure with ``error`` (default "no reply")
- ``timeout`` sleeps past any deadline: the caller's ``asyncio.timeout`` cancels it
- ``slow``    ok after ``delay`` seconds
- ``flap``    fails with probability ``flap_ratio``, from a per-target RNG seeded by the
              controller's seed: the same seed gives the same story

The controller ``MOCK`` records calls in a bounded ring buffer (a 10k-device demo must not grow)::

    MOCK.set("127.20.1.3", "down")                       # from now on
    MOCK.script("127.20.0.9", [Phase("up"), Phase("down", at=60), Phase("up", at=120)])
    MOCK.set("127.20.4.1", "up", check="toner", values={"toner_percent": 5})
    MOCK.clear()
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from probes.result import ProbeResult

Mode = Literal["up", "down", "timeout", "slow", "flap"]
MODES: tuple[Mode, ...] = ("up", "down", "timeout", "slow", "flap")
_NONE: Mapping[str, float] = MappingProxyType({})

# What a healthy device answers when nothing else is said, per probe kind (the demo's baseline).
DEFAULT_VALUES: Mapping[str, Mapping[str, float]] = {
    "icmp": {
        "rtt_min_seconds": 0.0008, "rtt_avg_seconds": 0.001, "rtt_max_seconds": 0.0012,
        "rtt_jitter_seconds": 0.0002, "loss_ratio": 0.0, "packets_sent": 3.0,
        "packets_received": 3.0,
    },
    "tcp": {"connect_seconds": 0.001},
    "http": {"status_code": 200.0, "response_seconds": 0.01},
}


@dataclass(frozen=True, slots=True)
class MockConfig:
    """``check``/``kind`` name what is being mocked (scripts may target one check);
    ``values``/``texts`` are the healthy answer; ``delay`` is the healthy latency."""

    check: str = ""
    kind: str = ""
    values: Mapping[str, float] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Phase:
    """Active once ``at`` seconds have passed since the program started and ``at_call`` calls
    were made; the last active phase wins."""

    mode: Mode = "up"
    at: float = 0.0
    at_call: int = 0
    values: Mapping[str, float] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    error: str = "no reply"
    delay: float = 0.05
    flap_ratio: float = 0.5
    hang: float = 3600.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mock mode {self.mode!r}; one of {', '.join(MODES)}")


@dataclass(frozen=True, slots=True)
class Call:
    target: str
    config: Any
    time: float


class _Program:
    __slots__ = ("phases", "start", "calls", "rng")

    def __init__(self, phases: Sequence[Phase], start: float, rng: random.Random) -> None:
        self.phases = sorted(phases, key=lambda p: (p.at, p.at_call))
        self.start = start
        self.calls = 0
        self.rng = rng

    def phase(self, now: float) -> Phase | None:
        active = None
        for p in self.phases:
            if p.at <= now - self.start and p.at_call <= self.calls:
                active = p
        return active


class MockController:
    """Programs by (target, check); ``check=None`` programs every check of the target."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, seed: int = 0, history: int = 10_000
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.calls: deque[Call] = deque(maxlen=history)
        self._programs: dict[tuple[str, str | None], _Program] = {}

    def script(self, target: str, phases: Sequence[Phase], check: str | None = None) -> None:
        """Replace ``target``'s program; elapsed time counts from now."""
        rng = random.Random(f"{self.seed}:{target}:{check}")
        self._programs[(target, check)] = _Program(phases, self.clock(), rng)

    def set(
        self, target: str, mode: Mode = "up", *, check: str | None = None, **phase: Any
    ) -> None:
        """One phase from now on, e.g. ``MOCK.set(t, "down", error="timeout")``."""
        self.script(target, [Phase(mode, **phase)], check)

    def clear(self, target: str | None = None) -> None:
        """Forget programs (of one target, or all) and the recorded calls (all only)."""
        if target is None:
            self._programs.clear()
            self.calls.clear()
            return
        for key in [k for k in self._programs if k[0] == target]:
            del self._programs[key]

    def reset(self, clock: Callable[[], float] | None = None, seed: int | None = None) -> None:
        """Back to a fresh controller (tests): no programs, no calls, new clock/seed."""
        self.clear()
        if clock is not None:
            self.clock = clock
        if seed is not None:
            self.seed = seed

    def calls_to(self, target: str) -> list[Call]:
        return [c for c in self.calls if c.target == target]

    def _program(self, target: str, check: str) -> _Program | None:
        return self._programs.get((target, check)) or self._programs.get((target, None))

    async def probe(self, target: str, config: MockConfig) -> ProbeResult:
        now = self.clock()
        self.calls.append(Call(target, config, now))
        program = self._program(target, config.check)
        phase = None
        if program is not None:
            phase = program.phase(now)
            program.calls += 1
        return await _answer(phase, program, config)


async def _answer(phase: Phase | None, program: _Program | None, config: MockConfig) -> ProbeResult:
    values = {**DEFAULT_VALUES.get(config.kind, _NONE), **config.values}
    texts = dict(config.texts)
    if phase is None:
        if config.delay:
            await asyncio.sleep(config.delay)
        return ProbeResult.success(config.delay, values, texts)
    values.update(phase.values)
    texts.update(phase.texts)
    mode = phase.mode
    if mode == "flap":
        assert program is not None
        mode = "down" if program.rng.random() < phase.flap_ratio else "up"
    if mode == "down":
        return ProbeResult.failure(config.delay, phase.error, texts=texts)
    if mode == "timeout":
        await asyncio.sleep(phase.hang)  # the caller's deadline cancels us long before
        return ProbeResult.failure(phase.hang, "timeout")
    delay = phase.delay if mode == "slow" else config.delay
    if delay:
        await asyncio.sleep(delay)
    return ProbeResult.success(delay, values, texts)


MOCK = MockController()


async def probe(target: str, config: MockConfig) -> ProbeResult:
    """The registry entry: answers as ``MOCK``'s program for ``target`` says."""
    return await MOCK.probe(target, config)


async def close() -> None:
    """Nothing to close; present so every probe module has the same shutdown call."""
