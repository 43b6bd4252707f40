"""The one value every probe returns.

"The device is down" is a value, not an exception: a probe returns ``ok=False`` with the reason
in ``error`` ("timeout", "no reply", "name not resolved", "connection refused", ...). Probes raise
only for misconfiguration that the operator must fix (and say how in the message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

_V = TypeVar("_V")

_EMPTY: Mapping[str, float] = MappingProxyType({})
_EMPTY_TEXT: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of one probe call.

    ``values`` holds numbers by name (``rtt_avg_seconds``, ``loss_ratio``, ``toner_percent``...),
    ``texts`` holds strings kept apart from them (``sysDescr``, ``sysName``...), never exported
    as metric labels. ``errors`` holds per-item problems that do not fail the probe, for example
    ``{"toner_percent": "noSuchObject 1.3.6.1.2.1.43.11.1.1.9.1.1"}``.
    """

    ok: bool
    duration: float
    error: str | None = None
    values: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    texts: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TEXT)
    errors: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TEXT)

    def __post_init__(self) -> None:
        if self.ok and self.error is not None:
            raise ValueError("a successful ProbeResult carries no error")
        if not self.ok and not self.error:
            raise ValueError("a failed ProbeResult must say why (error=...)")

    @classmethod
    def success(
        cls,
        duration: float,
        values: Mapping[str, float] | None = None,
        texts: Mapping[str, str] | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> ProbeResult:
        return cls(
            True,
            duration,
            None,
            _frozen(values, _EMPTY),
            _frozen(texts, _EMPTY_TEXT),
            _frozen(errors, _EMPTY_TEXT),
        )

    @classmethod
    def failure(
        cls,
        duration: float,
        error: str,
        values: Mapping[str, float] | None = None,
        texts: Mapping[str, str] | None = None,
    ) -> ProbeResult:
        return cls(
            False,
            duration,
            error,
            _frozen(values, _EMPTY),
            _frozen(texts, _EMPTY_TEXT),
        )


def _frozen(mapping: Mapping[str, _V] | None, empty: Mapping[str, _V]) -> Mapping[str, _V]:
    """A read-only copy; every empty one is the one shared empty (10k results: ~2 MB less)."""
    return MappingProxyType(dict(mapping)) if mapping else empty


_new = object.__new__
_SET_OK, _SET_DURATION, _SET_ERROR, _SET_VALUES, _SET_TEXTS, _SET_ERRORS = (
    ProbeResult.__dict__[name].__set__
    for name in ("ok", "duration", "error", "values", "texts", "errors")
)


def fast_success(duration: float, values: MappingProxyType[str, float]) -> ProbeResult:
    """``ProbeResult(True, duration, None, values)`` for a hot path (an ICMP sweep answers 10k
    probes): the slots are filled directly, skipping the frozen dataclass' ``__init__`` (its
    ``object.__setattr__`` per field, two default factories, ``__post_init__``): ~3x faster.
    ``values`` must already be read-only; nothing is checked (a success has no error)."""
    result: ProbeResult = _new(ProbeResult)
    _SET_OK(result, True)
    _SET_DURATION(result, duration)
    _SET_ERROR(result, None)
    _SET_VALUES(result, values)
    _SET_TEXTS(result, _EMPTY_TEXT)
    _SET_ERRORS(result, _EMPTY_TEXT)
    return result
