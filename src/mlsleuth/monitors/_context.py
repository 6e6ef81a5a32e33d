"""What a monitor pass shares: the source, the stored reference, the windows and their profiles (computed once)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

import pyarrow as pa

from mlsleuth.errors import MlsleuthError
from mlsleuth.monitors._findings import Segment
from mlsleuth.monitors._profiles import WindowProfile, WindowProfiles, window_profiles
from mlsleuth.monitors._reference import StoredReference
from mlsleuth.monitors._source import LogSource, TimeRange, log_schema, q, window_key
from mlsleuth.schema import Role, role_of

__all__ = ["MonitorContext", "MonitorSkipped"]


class MonitorSkipped(MlsleuthError):
    """A monitor could not run on this data (a column or the labels are missing); the message says why."""


class MonitorContext:
    """The data of one monitor pass, with the windowed profiles computed once and shared by every monitor.

    Parameters
    ----------
    source
        Where the ``log`` (and ``labels``) views live: a store or an :class:`~mlsleuth.monitors.ArrowSource`.
    reference
        The stored reference (profile, calibration, reference performance).
    window_seconds
        Window size.
    segment
        Segment columns: every monitor reports all traffic and each value of these.
    time_range
        Model and ``[since, until)``.
    """

    def __init__(self, source: LogSource, reference: StoredReference, *, window_seconds: int,
                 segment: Sequence[str] = (), time_range: TimeRange | None = None) -> None:
        self.source = source
        self.reference = reference
        self.window_seconds = int(window_seconds)
        self.segment = tuple(segment)
        self.time_range = time_range or TimeRange()

    @functools.cached_property
    def schema(self) -> pa.Schema:
        """The log's columns."""
        return log_schema(self.source)

    @functools.cached_property
    def profiles(self) -> WindowProfiles:
        """Profiles of every window x segment value of the model's columns (features, inputs, score, prediction)."""
        watched = (Role.FEATURE, Role.INPUT, Role.SCORE, Role.PREDICTION, Role.LABEL)
        cols = [c for c in self.reference.profile.columns if role_of(c) in watched]
        return window_profiles(self.source, self.reference.profile, window_seconds=self.window_seconds,
                               segment=self.segment, time_range=self.time_range, columns=cols)

    @functools.cached_property
    def slices(self) -> tuple[tuple[Segment, tuple[WindowProfile, ...]], ...]:
        """All traffic, then each segment value: a profile per window start (empty ones included)."""
        p = self.profiles
        out: list[tuple[Segment, tuple[WindowProfile, ...]]] = [((), tuple(p.series()))]
        if self.segment:
            for seg in sorted(k[0] for k in p.grouped(segments=True)):
                out.append((seg, tuple(p.series(seg))))
        return tuple(out)

    @functools.cached_property
    def data_end(self) -> datetime | None:
        """``until`` when given, else the latest request seen."""
        if self.time_range.until is not None:
            return self.time_range.until
        return max((w.last_ts for w in self.profiles.windows if w.last_ts is not None), default=None)

    def complete(self, w: WindowProfile) -> bool:
        """Whether the window lies wholly inside the data (the last one may be cut short)."""
        end = self.data_end
        if end is None:
            return False
        if self.time_range.until is not None:
            return w.end <= end
        return (end - w.start) >= 0.95 * (w.end - w.start)

    @property
    def window(self) -> timedelta:
        """The window size."""
        return timedelta(seconds=self.window_seconds)

    def group_sql(self) -> tuple[list[str], list[str]]:
        """SQL expressions and aliases of the window number and segment columns."""
        exprs = [window_key(self.window_seconds)] + [f"CAST({q(s)} AS VARCHAR)" for s in self.segment]
        return exprs, [f"g{j}" for j in range(len(exprs))]

    def has(self, column: str) -> bool:
        """Whether the log has ``column``."""
        return column in self.schema.names
