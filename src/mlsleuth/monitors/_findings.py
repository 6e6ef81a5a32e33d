"""The one result shape every monitor returns: a typed, serialisable :class:`Finding`."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlsleuth.errors import InputError
from mlsleuth.schema import parse_timestamp

__all__ = ["Baseline", "Finding", "Segment", "Severity", "findings_from_dicts", "findings_to_dicts"]

#: A segment as sorted ``(column, value)`` pairs; ``()`` is all traffic.
Segment = tuple[tuple[str, str], ...]


class Severity(enum.Enum):
    """How much a finding matters."""

    INFO = "info"
    """Worth knowing (e.g. drift with a small effect, a trend)."""
    WARNING = "warning"
    """A material change: look at it."""
    CRITICAL = "critical"
    """A defect or a large change: act on it."""

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical (for sorting)."""
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class Baseline(enum.Enum):
    """What a window is compared with."""

    TRAINING = "training"
    """The stored reference (training) profile."""
    PRODUCTION = "production"
    """Recent production windows before the one examined."""
    PREVIOUS_DAY = "previous_day"
    """The same window one day earlier."""
    PREVIOUS_WEEK = "previous_week"
    """The same window one week earlier."""
    ABSOLUTE = "absolute"
    """A fixed limit set in the monitor's spec."""


def _encode(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _decode(x: Any) -> float:
    if isinstance(x, str):
        return float(x)
    return float(x)


@dataclass(frozen=True)
class Finding:
    """Something a monitor found in one window (and segment) of production traffic.

    Attributes
    ----------
    monitor
        The monitor's name (e.g. ``feature_drift``).
    column
        The column concerned, or ``None`` for row-level checks (volume, freshness).
    window_start, window_end
        The window examined, ``[start, end)`` in UTC.
    segment
        ``(column, value)`` pairs of the segment, ``()`` for all traffic.
    statistic
        What was measured, e.g. ``jensen_shannon``, ``null_rate``, ``latency_p99_ms``.
    value
        The measured value.
    threshold
        The limit it crossed (or, for a lower limit, fell below).
    severity
        How much it matters.
    sample_size
        Rows (or labelled rows) behind the value.
    method
        How the value was compared: a method name and the baseline.
    reason
        A sentence a person can act on, including the baseline value.
    baseline
        What the window was compared with.
    baseline_value
        The baseline's value of the statistic, ``nan`` when the statistic is itself a distance.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> f = Finding("data_quality", "feature.x", datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC),
    ...             (), "null_rate", 0.3, 0.02, Severity.CRITICAL, 1000, "rate vs training", "30% nulls",
    ...             Baseline.TRAINING, 0.0)
    >>> Finding.from_dict(f.to_dict()) == f
    True
    """

    monitor: str
    column: str | None
    window_start: datetime
    window_end: datetime
    segment: Segment
    statistic: str
    value: float
    threshold: float
    severity: Severity
    sample_size: int
    method: str
    reason: str
    baseline: Baseline = Baseline.TRAINING
    baseline_value: float = math.nan

    def __post_init__(self) -> None:
        object.__setattr__(self, "segment", tuple(sorted((str(k), str(v)) for k, v in self.segment)))
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "baseline_value", float(self.baseline_value))
        object.__setattr__(self, "sample_size", int(self.sample_size))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Finding):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        def f(x: float) -> Any:
            return "nan" if math.isnan(x) else x

        return (self.monitor, self.column, self.window_start, self.window_end, self.segment, self.statistic,
                f(self.value), f(self.threshold), self.severity, self.sample_size, self.method, self.reason,
                self.baseline, f(self.baseline_value))

    @property
    def segment_label(self) -> str:
        """``region=EU, channel=web``, or ``all`` for all traffic."""
        return ", ".join(f"{k}={v}" for k, v in self.segment) or "all"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO-8601 UTC, infinities and NaN as strings)."""
        return {
            "monitor": self.monitor,
            "column": self.column,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "segment": dict(self.segment),
            "statistic": self.statistic,
            "value": _encode(self.value),
            "threshold": _encode(self.threshold),
            "severity": self.severity.value,
            "sample_size": self.sample_size,
            "method": self.method,
            "reason": self.reason,
            "baseline": self.baseline.value,
            "baseline_value": _encode(self.baseline_value),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict`."""
        try:
            seg = data.get("segment") or {}
            return cls(
                monitor=str(data["monitor"]),
                column=None if data.get("column") is None else str(data["column"]),
                window_start=parse_timestamp(data["window_start"]),
                window_end=parse_timestamp(data["window_end"]),
                segment=tuple(dict(seg).items()),
                statistic=str(data["statistic"]),
                value=_decode(data["value"]),
                threshold=_decode(data["threshold"]),
                severity=Severity(data["severity"]),
                sample_size=int(data["sample_size"]),
                method=str(data["method"]),
                reason=str(data["reason"]),
                baseline=Baseline(data.get("baseline", "training")),
                baseline_value=_decode(data.get("baseline_value", "nan")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"not a finding: {exc!r}; expected the fields of Finding.to_dict()") from exc


def findings_to_dicts(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """JSON-ready dicts of several findings."""
    return [f.to_dict() for f in findings]


def findings_from_dicts(data: Sequence[Mapping[str, Any]]) -> tuple[Finding, ...]:
    """Inverse of :func:`findings_to_dicts`."""
    return tuple(Finding.from_dict(d) for d in data)
