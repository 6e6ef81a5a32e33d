"""The monitors: frozen, hashable specs (their settings) whose ``run(context)`` returns typed findings.

Every monitor compares each complete window of all traffic and of each segment value with a
baseline (training, recent production, the same window a day or a week before, or a fixed limit)
and reports a :class:`~mlsleuth.monitors.Finding` only when the difference is both material and
beyond sampling noise. Each class declares :meth:`examples` (parameters for the shared contract
test) and :meth:`example_fault` (a fault it must catch).
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import ConfigError, EngineError
from mlsleuth.monitors._context import MonitorContext, MonitorSkipped
from mlsleuth.monitors._findings import Baseline, Finding, Segment, Severity
from mlsleuth.monitors._profiles import WindowProfile
from mlsleuth.profiles import CategoricalProfile, ColumnProfile, NumericProfile, ReferenceProfile, aligned_counts, drift
from mlsleuth.schema import Role, role_of
from mlsleuth.stats import (
    MATERIALITY,
    DriftMethod,
    DriftResult,
    Trend,
    detect_change_points,
    js_distance,
    remove_seasonality,
    trend,
    wilson_interval,
)

__all__ = [
    "DataQuality",
    "EstimatedPerformance",
    "FeatureDrift",
    "Freshness",
    "InputDrift",
    "MetricChange",
    "Monitor",
    "Performance",
    "PredictionDrift",
    "SchemaCheck",
    "ServingHealth",
    "Volume",
    "WindowMetric",
]

_DAY = 86_400


def _sev(ratio: float, critical: float = 3.0) -> Severity:
    return Severity.CRITICAL if ratio >= critical else Severity.WARNING


def _seg(segment: Segment) -> str:
    return "all traffic" if not segment else ", ".join(f"{k}={v}" for k, v in segment)


def _window_after(log: pa.Table, share: float) -> pa.Array:
    """Boolean mask of the last ``share`` of the log's time span (for example faults)."""
    ts = pc.cast(log.column("ts"), pa.int64())
    lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
    cut = hi - int((hi - lo) * share)
    return pc.greater_equal(ts, cut)


def _replace(log: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return log.set_column(log.column_names.index(name), name, values)


class Monitor(ABC):
    """A check over windows of production traffic.

    Subclasses are frozen dataclasses (hashable specs); :meth:`run` does the computing.
    """

    name: ClassVar[str]

    @abstractmethod
    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        """Findings over every complete window of all traffic and of each segment value."""

    @classmethod
    def examples(cls) -> tuple[Monitor, ...]:
        """Example parameters for the shared contract test."""
        return (cls(),)

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        """A fault this monitor must catch, injected into the last part of a healthy log (contract test)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready settings."""
        out: dict[str, Any] = {"monitor": self.name}
        for k, v in vars(self).items():
            out[k] = v.value if isinstance(v, enum.Enum) else (list(v) if isinstance(v, tuple) else v)
        return out


def _drift(base: ColumnProfile, cur: ColumnProfile, method: DriftMethod | None, materiality: float | None,
           alpha: float) -> DriftResult | None:
    """:func:`~mlsleuth.profiles.drift`, or ``None`` when the effect size cannot exceed materiality.

    The threshold is never below materiality, so a Jensen-Shannon distance at or under it is not
    drift whatever the noise floor: skipping the floor's simulation then changes no decision.
    """
    if method in (None, DriftMethod.JENSEN_SHANNON):
        r, c = aligned_counts(base, cur)
        if r.sum() > 0 and c.sum() > 0:
            mat = MATERIALITY[DriftMethod.JENSEN_SHANNON] if materiality is None else materiality
            if js_distance(r, c) <= mat:
                return None
    return drift(base, cur, method=method, materiality=materiality, alpha=alpha)


# ----------------------------------------------------------------------------------------------- drift


def _column_role_default(ctx: MonitorContext, role: Role) -> tuple[str, ...]:
    return tuple(c for c in ctx.reference.profile.columns if role_of(c) is role and ctx.has(c))


@dataclass(frozen=True)
class FeatureDrift(Monitor):
    """Distribution drift of features, vs training or vs recent production windows.

    Parameters
    ----------
    columns
        Columns to watch (default: every ``feature.*`` column of the reference that the log has).
    baseline
        ``TRAINING`` (the stored reference) or ``PRODUCTION`` (the merge of the ``baseline_windows``
        windows before each one).
    baseline_windows
        How many earlier windows form the production baseline.
    method
        An effect size; ``None`` lets :func:`mlsleuth.stats.choose_method` choose and explain.
    alpha
        False-alarm level of the sampling-noise floor per comparison.
    materiality
        Override of the method's materiality.
    min_rows
        Skip windows with fewer non-null values.

    Examples
    --------
    >>> FeatureDrift(baseline=Baseline.PRODUCTION).baseline.value
    'production'
    """

    name: ClassVar[str] = "feature_drift"
    role: ClassVar[Role] = Role.FEATURE

    columns: tuple[str, ...] | None = None
    baseline: Baseline = Baseline.TRAINING
    baseline_windows: int = 4
    method: DriftMethod | None = None
    alpha: float = 1e-4
    materiality: float | None = None
    min_rows: int = 100

    def __post_init__(self) -> None:
        if self.baseline not in (Baseline.TRAINING, Baseline.PRODUCTION):
            raise ConfigError(f"{self.name} compares with training or production, got {self.baseline.value}",
                              column="baseline")
        if self.baseline_windows < 1 or self.min_rows < 1:
            raise ConfigError("baseline_windows and min_rows must be at least 1", column=self.name)
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))

    @classmethod
    def examples(cls) -> tuple[Monitor, ...]:
        return (cls(), cls(baseline=Baseline.PRODUCTION, baseline_windows=4))

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        name = next(c for c in log.column_names if c.startswith("feature."))
        col = pc.cast(log.column(name), pa.float64())
        return _replace(log, name, pc.if_else(late, pc.add(pc.multiply(col, 1.3), 0.5), col)), labels

    def _columns(self, ctx: MonitorContext) -> tuple[str, ...]:
        if self.columns is not None:
            return tuple(c for c in self.columns if ctx.has(c) and c in ctx.reference.profile.columns)
        return _column_role_default(ctx, self.role)

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        cols = self._columns(ctx)
        if not cols:
            raise MonitorSkipped(f"no {self.role.value} columns shared by the log and the reference")
        out: list[Finding] = []
        for segment, series in ctx.slices:
            ref = ctx.reference.for_segment(segment)
            if ref is None and self.baseline is Baseline.TRAINING:
                continue
            for k, w in enumerate(series):
                if not ctx.complete(w):
                    continue
                for c in cols:
                    cur = w.columns.get(c)
                    if cur is None or cur.count < self.min_rows:
                        continue
                    if self.baseline is Baseline.TRAINING:
                        base: ColumnProfile | None = ref.columns.get(c) if ref is not None else None
                    else:
                        base = None
                        for prev in series[max(0, k - self.baseline_windows):k]:
                            p = prev.columns.get(c)
                            if p is not None:
                                base = p if base is None else base.merge(p)  # type: ignore[arg-type]
                        if isinstance(base, CategoricalProfile):
                            base = base.capped(1000)
                    if base is None or base.count < self.min_rows:
                        continue
                    r = _drift(base, cur, self.method, self.materiality, self.alpha)
                    if r is None or not r.drifted:
                        continue
                    mean = ""
                    if isinstance(cur, NumericProfile) and isinstance(base, NumericProfile):
                        mean = f"; mean {base.mean:.4g} -> {cur.mean:.4g}"
                    out.append(Finding(
                        self.name, c, w.start, w.end, segment, r.method.value, r.statistic, r.threshold,
                        _sev(r.ratio), r.n_cur, f"{r.method.value} vs {self.baseline.value}",
                        f"{c} drifted from {self.baseline.value} in {_seg(segment)} ({r.method.value} "
                        f"{r.statistic:.3f} > {r.threshold:.3f}{mean}); {r.reason}",
                        self.baseline,
                    ))
        return tuple(out)


@dataclass(frozen=True)
class InputDrift(FeatureDrift):
    """Drift of raw inputs (``input.*``) as they arrive from upstream, vs training or recent production.

    Same parameters as :class:`FeatureDrift`.
    """

    name: ClassVar[str] = "input_drift"
    role: ClassVar[Role] = Role.INPUT

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        name = next(c for c in log.column_names if c.startswith("input.") and pa.types.is_floating(
            log.schema.field(c).type))
        col = log.column(name)
        return _replace(log, name, pc.if_else(late, pc.multiply(col, 0.6), col)), labels


# ----------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class SchemaCheck(Monitor):
    """Missing and new columns, type changes, unseen categories, values outside the training range.

    Parameters
    ----------
    max_unseen_rate
        Share of a categorical column's values outside the training vocabulary tolerated above the
        training's own share of rare values.
    max_out_of_range_rate
        Share of a numeric column's values outside the training ``[min, max]`` tolerated.
    min_rows
        Skip windows with fewer non-null values.
    """

    name: ClassVar[str] = "schema"

    max_unseen_rate: float = 0.01
    max_out_of_range_rate: float = 0.01
    min_rows: int = 100

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        name = next(c for c in log.column_names if c.startswith("feature."))
        col = pc.cast(log.column(name), pa.float64())
        return _replace(log, name, pc.if_else(late, pc.add(col, 1e6), col)), labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        ref = ctx.reference.profile
        names = set(ctx.schema.names)
        starts = ctx.profiles.starts
        out: list[Finding] = []
        if starts:
            lo, hi = starts[0], starts[-1] + ctx.window
            rows = sum(w.rows for w in ctx.profiles.windows)
            watched = (Role.FEATURE, Role.INPUT, Role.SCORE, Role.PREDICTION)
            for c in ref.columns:
                if c not in names and role_of(c) in watched:
                    sev = Severity.CRITICAL if role_of(c) is Role.FEATURE else Severity.WARNING
                    out.append(Finding(self.name, c, lo, hi, (), "missing_column", 1.0, 0.0, sev, rows,
                                       "column sets vs training", f"{c} is in the training data but not in the log",
                                       Baseline.TRAINING, 0.0))
            for f in ctx.schema:
                if f.name not in ref.columns and role_of(f.name) in (Role.FEATURE, Role.INPUT):
                    out.append(Finding(self.name, f.name, lo, hi, (), "new_column", 1.0, 0.0, Severity.WARNING, rows,
                                       "column sets vs training",
                                       f"{f.name} arrives in the log but the training data had no such column",
                                       Baseline.TRAINING, 0.0))
                elif f.name in ref.columns and isinstance(ref.columns[f.name], NumericProfile) and not (
                        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
                        or pa.types.is_boolean(f.type)):
                    out.append(Finding(self.name, f.name, lo, hi, (), "type_change", 1.0, 0.0, Severity.CRITICAL,
                                       rows, "column types vs training",
                                       f"{f.name} was numeric in training but arrives as {f.type}",
                                       Baseline.TRAINING, 0.0))
        for segment, series in ctx.slices:
            for w in series:
                if not ctx.complete(w):
                    continue
                for c, cur in w.columns.items():
                    base = ref.columns[c]
                    if cur.count < self.min_rows:
                        continue
                    if isinstance(cur, NumericProfile) and isinstance(base, NumericProfile):
                        outside = cur.counts[0] + cur.counts[-1]
                        rate = outside / cur.count
                        base_rate = (base.counts[0] + base.counts[-1]) / max(base.count, 1)
                        limit = base_rate + self.max_out_of_range_rate + 3 * math.sqrt(
                            max(base_rate, 1 / cur.count) / cur.count)
                        if rate > limit:
                            out.append(Finding(
                                self.name, c, w.start, w.end, segment, "out_of_range_rate", rate, limit,
                                _sev(rate / limit), cur.count, "share outside the training [min, max]",
                                f"{rate:.1%} of {c} in {_seg(segment)} lies outside the training range "
                                f"[{base.edges[0]:.4g}, {base.edges[-1]:.4g}] (window min {cur.min:.4g}, "
                                f"max {cur.max:.4g})", Baseline.TRAINING, base_rate))
                    elif isinstance(cur, CategoricalProfile) and isinstance(base, CategoricalProfile):
                        vocab = set(base.values)
                        unseen = {v: n for v, n in zip(cur.values, cur.counts, strict=True) if v not in vocab}
                        rate = (sum(unseen.values()) + cur.other) / cur.count
                        base_rate = base.other_rate if base.count else 0.0
                        limit = base_rate + self.max_unseen_rate + 3 * math.sqrt(
                            max(base_rate, 1 / cur.count) / cur.count)
                        if rate > limit:
                            top = sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
                            out.append(Finding(
                                self.name, c, w.start, w.end, segment, "unseen_rate", rate, limit, _sev(rate / limit),
                                cur.count, "share outside the training vocabulary",
                                f"{rate:.1%} of {c} in {_seg(segment)} are categories training never saw: "
                                + ", ".join(f"{v!r} ({n})" for v, n in top), Baseline.TRAINING, base_rate))
        return tuple(out)


# ----------------------------------------------------------------------------------------------- data quality


def _expected_distinct(base: CategoricalProfile, n: int) -> float:
    counts = np.asarray(base.counts, dtype=np.float64)
    if counts.sum() <= 0:
        return 0.0
    p = counts / counts.sum()
    return float(np.sum(1.0 - np.exp(n * np.log1p(-np.minimum(p, 1 - 1e-12)))))


@dataclass(frozen=True)
class DataQuality(Monitor):
    """Null and zero rates, constant (frozen) and repeating values, cardinality collapse.

    Parameters
    ----------
    null_rate_increase, zero_rate_increase
        Rise over the training rate (absolute) that counts, on top of 4 binomial standard errors.
    repeat_share
        A numeric column whose single most common bin holds more than this share (and three times
        its training share) is repeating a stale value.
    cardinality_drop
        A categorical column with fewer distinct values than this share of those expected from
        training at the window's size has collapsed.
    min_rows
        Skip windows with fewer rows.
    """

    name: ClassVar[str] = "data_quality"

    null_rate_increase: float = 0.02
    zero_rate_increase: float = 0.05
    repeat_share: float = 0.6
    cardinality_drop: float = 0.5
    min_rows: int = 100

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        name = next(c for c in log.column_names if c.startswith("feature."))
        col = pc.cast(log.column(name), pa.float64())
        return _replace(log, name, pc.if_else(late, pa.scalar(None, pa.float64()), col)), labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        ref = ctx.reference.profile
        out: list[Finding] = []
        for segment, series in ctx.slices:
            seg_ref = ctx.reference.for_segment(segment) or ref
            for w in series:
                if not ctx.complete(w) or w.rows < self.min_rows:
                    continue
                for c, cur in w.columns.items():
                    base = seg_ref.columns.get(c) or ref.columns[c]
                    out += self._rates(c, cur, base, w, segment)
                    if cur.count < self.min_rows:
                        continue
                    if isinstance(cur, NumericProfile) and isinstance(base, NumericProfile):
                        out += self._frozen(c, cur, base, w, segment)
                    elif isinstance(cur, CategoricalProfile) and isinstance(base, CategoricalProfile):
                        expected = _expected_distinct(base, cur.count)
                        seen = sum(1 for v, n in zip(cur.values, cur.counts, strict=True) if n > 0)
                        if expected >= 3 and seen < self.cardinality_drop * expected:
                            out.append(Finding(
                                self.name, c, w.start, w.end, segment, "distinct_values", seen,
                                self.cardinality_drop * expected, Severity.WARNING, cur.count,
                                "distinct values vs expected from training at this size",
                                f"{c} in {_seg(segment)} shows {seen} distinct values where training implies "
                                f"{expected:.0f} at {cur.count:,} rows: cardinality collapsed", Baseline.TRAINING,
                                expected))
        return tuple(out)

    def _rates(self, c: str, cur: ColumnProfile, base: ColumnProfile, w: WindowProfile,
               segment: Segment) -> list[Finding]:
        out = []
        checks: list[tuple[str, float, float, int, float]] = [("null_rate", cur.null_rate, base.null_rate, cur.rows,
                                                               self.null_rate_increase)]
        if isinstance(cur, NumericProfile) and isinstance(base, NumericProfile) and cur.count >= self.min_rows:
            checks.append(("zero_rate", cur.zero_rate, base.zero_rate, cur.count, self.zero_rate_increase))
        for stat, value, b, n, inc in checks:
            if n == 0 or math.isnan(value):
                continue
            b = 0.0 if math.isnan(b) else b
            limit = b + inc + 4 * math.sqrt(max(b * (1 - b), 1 / n) / n)
            if value > limit:
                sev = Severity.CRITICAL if value - b >= 0.2 else Severity.WARNING
                out.append(Finding(self.name, c, w.start, w.end, segment, stat, value, limit, sev, n,
                                   f"{stat} vs training",
                                   f"{c} {stat.replace('_', ' ')} in {_seg(segment)} is {value:.1%} against "
                                   f"{b:.1%} in training", Baseline.TRAINING, b))
        return out

    def _frozen(self, c: str, cur: NumericProfile, base: NumericProfile, w: WindowProfile,
                segment: Segment) -> list[Finding]:
        if cur.min == cur.max and base.min != base.max:
            return [Finding(self.name, c, w.start, w.end, segment, "constant", cur.min, 0.0, Severity.CRITICAL,
                            cur.count, "distinct values in the window",
                            f"{c} is frozen at {cur.min:.6g} for all {cur.count:,} values in {_seg(segment)}",
                            Baseline.TRAINING, math.nan)]
        top = max(cur.counts) / cur.count
        base_top = max(base.counts) / max(base.count, 1)
        if top > max(self.repeat_share, 3 * base_top):
            return [Finding(self.name, c, w.start, w.end, segment, "top_bin_share", top,
                            max(self.repeat_share, 3 * base_top), Severity.WARNING, cur.count,
                            "largest histogram bin share vs training",
                            f"{top:.0%} of {c} in {_seg(segment)} falls in one bin (training {base_top:.0%}): "
                            "a stale or repeating value", Baseline.TRAINING, base_top)]
        return []


# ----------------------------------------------------------------------------------------------- volume


@dataclass(frozen=True)
class Volume(Monitor):
    """Requests per window vs the same window a day and a week before.

    Parameters
    ----------
    tolerance
        Relative change that counts (0.5: half or double).
    min_expected
        Skip comparisons whose earlier window had fewer requests.
    z
        Poisson standard errors a change must also exceed.
    """

    name: ClassVar[str] = "volume"

    tolerance: float = 0.5
    min_expected: int = 50
    z: float = 4.0

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.2)
        keep = pc.or_(pc.invert(late), pc.less(pa.array(np.random.default_rng(0).random(log.num_rows)), 0.1))
        return log.filter(keep), labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"tolerance must be in (0, 1), got {self.tolerance}", column="tolerance")
        out: list[Finding] = []
        lags = []
        for days, base in ((1, Baseline.PREVIOUS_DAY), (7, Baseline.PREVIOUS_WEEK)):
            if (days * _DAY) % ctx.window_seconds == 0:
                lags.append(((days * _DAY) // ctx.window_seconds, base))
        if not lags:
            raise MonitorSkipped(f"a window of {ctx.window_seconds} s does not divide a day")
        for segment, series in ctx.slices:
            for k, w in enumerate(series):
                if not ctx.complete(w):
                    continue
                for lag, base in lags:
                    if k < lag:
                        continue
                    prev = series[k - lag].rows
                    if prev < self.min_expected:
                        continue
                    ratio = w.rows / prev
                    z = abs(w.rows - prev) / math.sqrt(w.rows + prev)
                    lo, hi = 1 - self.tolerance, 1 / (1 - self.tolerance)
                    if (ratio < lo or ratio > hi) and z > self.z:
                        limit = lo if ratio < lo else hi
                        out.append(Finding(
                            self.name, None, w.start, w.end, segment, "rows_ratio", ratio, limit,
                            Severity.CRITICAL if ratio < 0.25 or ratio > 4 else Severity.WARNING, w.rows,
                            f"requests per window vs {base.value.replace('_', ' ')}",
                            f"{w.rows:,} requests in {_seg(segment)} against {prev:,} in the same window "
                            f"{'a day' if base is Baseline.PREVIOUS_DAY else 'a week'} before ({ratio:.2f}x)",
                            base, float(prev)))
                        break
        return tuple(out)


@dataclass(frozen=True)
class Freshness(Monitor):
    """Time since the last request, for all traffic and each segment, at the end of the range.

    Parameters
    ----------
    max_gap
        Seconds without requests that always count.
    gap_factor
        A gap also counts only when it exceeds this many mean inter-arrival times of the slice.
    """

    name: ClassVar[str] = "freshness"

    max_gap: float = 3600.0
    gap_factor: float = 20.0

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        return log.filter(pc.invert(_window_after(log, 0.1))), labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        end = ctx.data_end
        if end is None or not ctx.profiles.starts:
            return ()
        span = (end - ctx.profiles.starts[0]).total_seconds()
        out: list[Finding] = []
        for segment, series in ctx.slices:
            rows = sum(w.rows for w in series)
            last = max((w.last_ts for w in series if w.last_ts is not None), default=None)
            if last is None or rows == 0:
                continue
            gap = (end - last).total_seconds()
            limit = max(self.max_gap, self.gap_factor * span / rows)
            if gap > limit:
                w_start = datetime.fromtimestamp(math.floor(last.timestamp() / ctx.window_seconds)
                                                 * ctx.window_seconds, UTC)
                out.append(Finding(
                    self.name, None, w_start, end, segment, "seconds_since_last_request", gap, limit,
                    Severity.CRITICAL if gap > 4 * limit else Severity.WARNING, rows,
                    "time since the last request vs the slice's arrival rate",
                    f"no request from {_seg(segment)} since {last.isoformat()} ({gap / 3600:.1f} h; it usually "
                    f"sends one every {span / rows:.0f} s)", Baseline.ABSOLUTE, span / rows))
        return tuple(out)


# ----------------------------------------------------------------------------------------------- predictions


def _confidence(rs: ColumnProfile | None) -> float | None:
    """Mean ``|score - 0.5| * 2`` of a score profile, from its bin midpoints."""
    if isinstance(rs, NumericProfile) and rs.count and rs.min >= 0 and rs.max <= 1:
        mids = np.concatenate([[rs.min], (np.asarray(rs.edges[:-1]) + np.asarray(rs.edges[1:])) / 2, [rs.max]])
        return float(np.sum(np.asarray(rs.counts) * np.abs(mids - 0.5) * 2) / rs.count)
    return None


def _binary_rate(p: ColumnProfile) -> float | None:
    if isinstance(p, NumericProfile) and p.count and p.min >= 0 and p.max <= 1 and p.edges[0] >= 0 and p.edges[-1] <= 1:
        return p.mean
    return None


@dataclass(frozen=True)
class PredictionDrift(Monitor):
    """Score distribution, positive rate (or class mix) and confidence vs training.

    Parameters
    ----------
    alpha, materiality
        Of the score distribution's drift decision.
    rate_change
        Relative change of the positive rate that counts (0.5: x1.5 or /1.5), on top of 4 standard errors.
    confidence_change
        Absolute change of mean confidence ``|score - 0.5| * 2`` that counts.
    min_rows
        Skip smaller windows.
    """

    name: ClassVar[str] = "prediction_drift"

    alpha: float = 1e-4
    materiality: float | None = None
    rate_change: float = 0.5
    confidence_change: float = 0.05
    min_rows: int = 100

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        s = log.column("score")
        return _replace(log, "score", pc.if_else(late, pc.power(s, 0.5), s)), labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        ref = ctx.reference.profile
        if "score" not in ref.columns and "prediction" not in ref.columns:
            raise MonitorSkipped("the reference has neither score nor prediction")
        ref_conf = None
        rs = ref.columns.get("score")
        if isinstance(rs, NumericProfile) and rs.count and rs.min >= 0 and rs.max <= 1:
            mids = np.concatenate([[rs.min], (np.asarray(rs.edges[:-1]) + np.asarray(rs.edges[1:])) / 2, [rs.max]])
            ref_conf = float(np.sum(np.asarray(rs.counts) * np.abs(mids - 0.5) * 2) / rs.count)
        out: list[Finding] = []
        for segment, series in ctx.slices:
            seg_ref = ctx.reference.for_segment(segment)
            if seg_ref is None:
                continue
            rs = seg_ref.columns.get("score")
            ref_conf = _confidence(rs)
            for w in series:
                if not ctx.complete(w) or w.rows < self.min_rows:
                    continue
                cur = w.columns.get("score")
                if cur is not None and rs is not None and cur.count >= self.min_rows:
                    r = _drift(rs, cur, None, self.materiality, self.alpha)
                    if r is not None and r.drifted:
                        out.append(Finding(self.name, "score", w.start, w.end, segment, r.method.value, r.statistic,
                                           r.threshold, _sev(r.ratio), r.n_cur, f"{r.method.value} vs training",
                                           f"the score distribution in {_seg(segment)} moved from training "
                                           f"({r.method.value} {r.statistic:.3f} > {r.threshold:.3f}); {r.reason}",
                                           Baseline.TRAINING))
                    if ref_conf is not None and isinstance(cur, NumericProfile) and cur.count:
                        conf = w.confidence_sum / cur.count
                        if abs(conf - ref_conf) > self.confidence_change:
                            out.append(Finding(self.name, "score", w.start, w.end, segment, "mean_confidence", conf,
                                               ref_conf + math.copysign(self.confidence_change, conf - ref_conf),
                                               Severity.WARNING, cur.count, "mean |score - 0.5| * 2 vs training",
                                               f"mean confidence in {_seg(segment)} is {conf:.3f} against "
                                               f"{ref_conf:.3f} in training", Baseline.TRAINING, ref_conf))
                out += self._class_mix(seg_ref, w, segment)
        return tuple(out)

    def _class_mix(self, ref: ReferenceProfile, w: WindowProfile, segment: Segment) -> list[Finding]:
        base = ref.columns.get("prediction")
        cur = w.columns.get("prediction")
        if base is None or cur is None or cur.count < self.min_rows:
            return []
        b, c = _binary_rate(base), _binary_rate(cur)
        if b is not None and c is not None:
            se = math.sqrt(max(b * (1 - b), 1 / cur.count) / cur.count)
            hi, lo = b * (1 + self.rate_change), b / (1 + self.rate_change)
            if (c > hi or c < lo) and abs(c - b) > 4 * se:
                return [Finding(self.name, "prediction", w.start, w.end, segment, "positive_rate", c,
                                hi if c > hi else lo, _sev(max(c / b, b / c) if b and c else math.inf, 3.0),
                                cur.count, "positive rate vs training",
                                f"the positive rate in {_seg(segment)} is {c:.2%} against {b:.2%} in training",
                                Baseline.TRAINING, b)]
            return []
        r = _drift(base, cur, None, None, self.alpha)
        if r is not None and r.drifted:
            return [Finding(self.name, "prediction", w.start, w.end, segment, "class_mix_" + r.method.value,
                            r.statistic, r.threshold, _sev(r.ratio), r.n_cur, f"{r.method.value} vs training",
                            f"the predicted class mix in {_seg(segment)} moved from training; {r.reason}",
                            Baseline.TRAINING)]
        return []


# ----------------------------------------------------------------------------------------------- performance


def _segment_rows(ctx: MonitorContext, table: pa.Table) -> dict[tuple[Segment, datetime], np.ndarray]:
    """Row indices of each (segment or all traffic, window start)."""
    w = np.asarray(table.column("g0").to_numpy(zero_copy_only=False), dtype=np.int64)
    out: dict[tuple[Segment, datetime], list[np.ndarray]] = {}
    keys = [("", w)]
    for j, s in enumerate(ctx.segment):
        vals = np.asarray([("(null)" if v is None else str(v)) for v in table.column(f"g{j + 1}").to_pylist()],
                          dtype=object)
        keys.append((s, vals))
    idx = np.arange(table.num_rows)
    for start in np.unique(w):
        sel = w == start
        t = datetime.fromtimestamp(int(start) * ctx.window_seconds, UTC)
        out.setdefault(((), t), []).append(idx[sel])
        for s, vals in keys[1:]:
            for v in np.unique(vals[sel]):
                out.setdefault((((s, str(v)),), t), []).append(idx[sel & (vals == v)])
    return {k: np.concatenate(v) for k, v in out.items()}


#: Tolerances of :class:`Performance`: absolute for rates, relative for log loss, MAE and RMSE.
DEFAULT_TOLERANCES: Mapping[str, float] = {
    "accuracy": 0.01, "precision": 0.05, "recall": 0.05, "false_positive_rate": 0.005, "roc_auc": 0.02,
    "calibration_error": 0.02, "log_loss": 0.1, "mae": 0.1, "rmse": 0.1,
}
_HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "roc_auc"})
_RELATIVE = frozenset({"log_loss", "mae", "rmse"})


#: Score bins per unit for the ROC AUC of :class:`Performance` (scores tied within a bin count one half).
SCORE_BINS = 10_000
_PERF_COLUMNS = ("sb", "pc", "yc", "n", "ssum", "oob", "ll", "ll2", "ae", "se", "ne")


def _performance_sql(joined: str, keys: Sequence[str]) -> str:
    """Labelled requests aggregated by the engine: per group, score bin and 0/1/other decision and label.

    Only sums come back (at most ``SCORE_BINS`` rows per window, segment, decision and label), so a
    window of millions of labelled requests costs the same as a small one: decisions and labels
    that are not 0/1 are counted as ``-1`` with their error sums (regression), the log loss terms
    are summed row by row in the engine.
    """
    y, s = "y", "s"
    clip = f"greatest(least({s}, 1 - 1e-15), 1e-15)"
    term = f"({y} * ln({clip}) + (1 - {y}) * ln(1 - {clip}))"
    cat = "CASE WHEN {v} IS NULL THEN NULL WHEN {v} = 0 OR {v} = 1 THEN {v} ELSE -1 END"
    parts = [*keys, f"CAST(floor({s} * {SCORE_BINS}) AS BIGINT) AS sb", cat.format(v="p") + " AS pc",
             cat.format(v=y) + " AS yc", "count(*) AS n", f"sum({s}) AS ssum", f"count_if({s} < 0 OR {s} > 1) AS oob",
             f"sum({term}) AS ll", f"sum({term} * {term}) AS ll2", f"sum(abs({y} - p)) AS ae",
             f"sum(({y} - p) * ({y} - p)) AS se", f"count({y} - p) AS ne"]
    by = ", ".join(str(i + 1) for i in range(len(keys) + 3))
    # NaN and infinite values are missing, as the row-level metrics took them (floor(NaN) cannot be a BIGINT).
    finite = ", ".join(f"CASE WHEN isnan({v}) OR abs({v}) > 1e300 THEN NULL ELSE {v} END AS {v}" for v in "spy")
    return (f"SELECT {', '.join(parts)} FROM (SELECT {', '.join(keys)}, {finite} FROM ({joined}) AS j0) AS j "
            f"GROUP BY {by}")


def _metrics_from_counts(a: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Performance metrics ``(value, lower, upper)`` of one window x segment from :func:`_performance_sql`'s rows.

    Binary labels: accuracy, precision, recall, FPR (Wilson), ROC AUC (Mann-Whitney on score bins,
    Hanley-McNeil interval), calibration error and log loss (with the intervals the row-level code
    used); other labels: MAE and RMSE.
    """
    out: dict[str, tuple[float, float, float]] = {}
    n = np.nan_to_num(a["n"])
    ok = ~np.isnan(a["yc"])
    if not ok.any():
        return out
    if np.all(a["yc"][ok] != -1):
        y1 = ok & (a["yc"] == 1)
        okp = ok & ~np.isnan(a["pc"])
        if n[okp].sum() > 0 and np.all(a["pc"][okp] != -1):
            def w(mask: np.ndarray) -> int:
                return int(n[mask].sum())

            tp, fp = w(okp & y1 & (a["pc"] == 1)), w(okp & ~y1 & (a["pc"] == 1))
            fn, tn = w(okp & y1 & (a["pc"] == 0)), w(okp & ~y1 & (a["pc"] == 0))
            for name, k, m in (("accuracy", tp + tn, tp + tn + fp + fn), ("precision", tp, tp + fp),
                               ("recall", tp, tp + fn), ("false_positive_rate", fp, fp + tn)):
                e = wilson_interval(k, m)
                out[name] = (e.value, e.lower, e.upper)
        oks = ok & ~np.isnan(a["sb"])
        total, pos = float(n[oks].sum()), float(n[oks & y1].sum())
        if total > 0 and 0 < pos < total:
            bins, inv = np.unique(a["sb"][oks], return_inverse=True)
            pos_b = np.bincount(inv, np.where(y1[oks], n[oks], 0.0), minlength=bins.size)
            neg_b = np.bincount(inv, np.where(y1[oks], 0.0, n[oks]), minlength=bins.size)
            neg = total - pos
            below = np.cumsum(neg_b) - neg_b
            val = float(np.sum(pos_b * (below + 0.5 * neg_b)) / (pos * neg))
            q1, q2 = val / (2 - val), 2 * val * val / (1 + val)
            var = (val * (1 - val) + (pos - 1) * (q1 - val * val) + (neg - 1) * (q2 - val * val)) / (pos * neg)
            half = 1.959963984540054 * math.sqrt(max(var, 0.0))
            out["roc_auc"] = (val, max(0.0, val - half), min(1.0, val + half))
            if np.nan_to_num(a["oob"][oks]).sum() == 0:
                dec = np.minimum(np.floor_divide(a["sb"][oks], SCORE_BINS // 10).astype(np.int64), 9)
                nb = np.bincount(dec, n[oks], minlength=10)
                yb = np.bincount(dec, np.where(y1[oks], n[oks], 0.0), minlength=10)
                sb = np.bincount(dec, np.nan_to_num(a["ssum"][oks]), minlength=10)
                e1 = float(np.abs(yb - sb).sum() / total)
                pb = sb / np.maximum(nb, 1)
                bias = float(np.sum(np.sqrt(2 * nb * pb * (1 - pb) / math.pi)) / total)
                out["calibration_error"] = (e1, max(e1 - 3 * bias, 0.0), e1)
                mean = -float(np.nan_to_num(a["ll"][oks]).sum()) / total
                sq = float(np.nan_to_num(a["ll2"][oks]).sum()) / total
                sd = math.sqrt(max(sq - mean * mean, 0.0))
                half = 1.959963984540054 * sd / math.sqrt(total)
                out["log_loss"] = (mean, mean - half, mean + half)
    else:
        count = float(np.nan_to_num(a["ne"][ok]).sum())
        if count > 0:
            a1 = float(np.nan_to_num(a["ae"][ok]).sum()) / count
            r1 = math.sqrt(float(np.nan_to_num(a["se"][ok]).sum()) / count)
            out["mae"] = (a1, a1, a1)
            out["rmse"] = (r1, r1, r1)
    return out


@dataclass(frozen=True)
class Performance(Monitor):
    """Quality against labels, per window and segment, with confidence intervals, vs the training performance.

    Classifiers: accuracy, precision, recall, false positive rate (Wilson intervals), ROC AUC
    (Hanley-McNeil), calibration error and log loss; regressors: MAE and RMSE. A metric is flagged
    when its whole interval lies beyond the training value by more than its tolerance (for metrics
    without an interval, when the value does).

    The label join and the sums behind every metric run in the engine (:func:`_performance_sql`);
    only per-window counts by score bin come back, so the ROC AUC treats scores within
    1/``SCORE_BINS`` of each other as tied (a difference of the order of 1e-4 from the exact AUC).

    Parameters
    ----------
    min_labels
        Skip windows with fewer labelled requests.
    tolerances
        Per-metric tolerance as ``(metric, tolerance)`` pairs; defaults in :data:`DEFAULT_TOLERANCES`.
    """

    name: ClassVar[str] = "performance"

    min_labels: int = 200
    tolerances: tuple[tuple[str, float], ...] = field(default_factory=lambda: tuple(DEFAULT_TOLERANCES.items()))

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        assert labels is not None
        ts = dict(zip(log.column("request_id").to_pylist(), _window_after(log, 0.3).to_pylist(), strict=True))
        late = pa.array([bool(ts.get(r, False)) for r in labels.column("request_id").to_pylist()])
        y = pc.cast(labels.column("label"), pa.int64())
        flip = pc.and_(late, pa.array(np.random.default_rng(1).random(labels.num_rows) < 0.3))
        return log, _replace(labels, "label", pc.if_else(flip, pc.subtract(1, y), y))

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        if not ctx.has("request_id"):
            raise MonitorSkipped("the log has no request_id to join labels on")
        ref = ctx.reference.metrics
        if not ref:
            raise MonitorSkipped("the reference has no labels (or no score/prediction) to compare performance with")
        exprs, keys = ctx.group_sql()
        cols = [f"{e} AS {k}" for e, k in zip(exprs, keys, strict=True)]
        has_score, has_pred = ctx.has("score"), ctx.has("prediction")
        cols += ["CAST(l.score AS DOUBLE) AS s" if has_score else "CAST(NULL AS DOUBLE) AS s",
                 "TRY_CAST(l.prediction AS DOUBLE) AS p" if has_pred else "CAST(NULL AS DOUBLE) AS p",
                 "CAST(b.label AS DOUBLE) AS y"]
        where = ctx.time_range.where(ctx.schema.names)
        joined = (f"SELECT {', '.join(cols)} FROM (SELECT * FROM log{where}) AS l "
                  "JOIN labels AS b ON l.request_id = b.request_id WHERE b.label IS NOT NULL")
        try:
            table = ctx.source.sql(_performance_sql(joined.replace("epoch(ts)", "epoch(l.ts)"), keys))
        except EngineError as exc:
            raise MonitorSkipped(f"no labels to join: {exc}") from exc
        if table.num_rows == 0:
            raise MonitorSkipped("no labelled requests in the range")
        agg = {c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
               for c in _PERF_COLUMNS}
        tol = dict(DEFAULT_TOLERANCES)
        tol.update(dict(self.tolerances))
        out: list[Finding] = []
        size = ctx.window
        for (segment, start), idx in sorted(_segment_rows(ctx, table).items(), key=lambda kv: (kv[0][1], kv[0][0])):
            labelled = int(agg["n"][idx].sum())
            if labelled < self.min_labels:
                continue
            for metric, (value, lo, hi) in _metrics_from_counts({c: v[idx] for c, v in agg.items()}).items():
                if metric not in ref or math.isnan(value):
                    continue
                b, t = ref[metric], tol.get(metric, 0.0)
                if metric in _RELATIVE:
                    limit, bad = b * (1 + t), lo > b * (1 + t)
                elif metric in _HIGHER_IS_BETTER:
                    limit, bad = b - t, hi < b - t
                else:
                    limit, bad = b + t, lo > b + t
                if bad:
                    ci = f" (95% CI {lo:.4f}-{hi:.4f})" if lo != hi else ""
                    worse = abs(value - b) / max(abs(limit - b), 1e-12)
                    out.append(Finding(
                        self.name, "label", start, start + size, segment, metric, value, limit, _sev(worse),
                        labelled, f"{metric} with interval vs training",
                        f"{metric} in {_seg(segment)} is {value:.4f}{ci} against {b:.4f} in training "
                        f"({labelled:,} labelled requests)", Baseline.TRAINING, b))
        return tuple(out)


@dataclass(frozen=True)
class EstimatedPerformance(Monitor):
    """Label-free accuracy estimate (CBPE-style) from reference-calibrated scores, for windows whose labels are late.

    Scores are calibrated with the isotonic map learned on the reference; the expected accuracy of a
    window is the mean probability that each decision is right. Computed from score histograms
    (1000 bins) aggregated by the engine, so no row leaves it.

    Parameters
    ----------
    tolerance
        Drop of the estimated accuracy below training that counts (absolute), beyond its 95 % interval.
    min_rows
        Skip smaller windows.
    """

    name: ClassVar[str] = "estimated_performance"

    tolerance: float = 0.01
    min_rows: int = 200

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        s = log.column("score")
        rng = np.random.default_rng(2)
        noisy = pa.array(np.clip(0.5 + rng.normal(0, 0.05, log.num_rows), 0, 1))
        log = _replace(log, "score", pc.if_else(late, noisy, s))
        if "prediction" in log.column_names:
            pred = pc.cast(pc.greater_equal(log.column("score"), 0.5), log.schema.field("prediction").type)
            log = _replace(log, "prediction", pc.if_else(late, pred, log.column("prediction")))
        return log, labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        cal = ctx.reference.calibrator
        base = ctx.reference.metrics.get("accuracy")
        if cal is None or base is None:
            raise MonitorSkipped("the reference has no labelled scores and decisions to calibrate on")
        if not ctx.has("score"):
            raise MonitorSkipped("the log has no score")
        thr = ctx.reference.threshold
        if ctx.has("prediction"):
            decision = "CAST(TRY_CAST(prediction AS DOUBLE) >= 0.5 AS INTEGER)"
        elif math.isfinite(thr):
            decision = f"CAST(score >= {thr!r} AS INTEGER)"
        else:
            raise MonitorSkipped("neither a prediction column nor a decision threshold")
        exprs, keys = ctx.group_sql()
        parts = [f"{e} AS {k}" for e, k in zip(exprs, keys, strict=True)]
        parts += [f"{decision} AS d", "CAST(floor(CAST(score AS DOUBLE) * 1000) AS BIGINT) AS sb", "count(*) AS n",
                  "sum(CAST(score AS DOUBLE)) AS ssum"]
        where = ctx.time_range.where(ctx.schema.names, ["score IS NOT NULL"])
        by = ", ".join(str(i + 1) for i in range(len(keys) + 2))
        table = ctx.source.sql(f"SELECT {', '.join(parts)} FROM log{where} GROUP BY {by}")
        if table.num_rows == 0:
            return ()
        n = np.asarray(table.column("n").to_numpy(zero_copy_only=False), dtype=np.float64)
        prob = cal.transform(np.asarray(table.column("ssum").to_numpy(zero_copy_only=False), dtype=np.float64) / n)
        d = np.asarray(table.column("d").to_numpy(zero_copy_only=False), dtype=np.float64)
        right = np.where(d == 1, prob, 1 - prob) * n
        var = prob * (1 - prob) * n
        out: list[Finding] = []
        for (segment, start), idx in sorted(_segment_rows(ctx, table).items(), key=lambda kv: (kv[0][1], kv[0][0])):
            total = float(n[idx].sum())
            w = WindowProfile(start, start + ctx.window, segment, None, int(total))
            if total < self.min_rows or not ctx.complete(w):
                continue
            acc = float(right[idx].sum()) / total
            half = 1.959963984540054 * math.sqrt(float(var[idx].sum())) / total
            limit = base - self.tolerance
            if acc + half < limit:
                out.append(Finding(
                    self.name, "score", start, start + ctx.window, segment, "estimated_accuracy", acc, limit,
                    _sev((base - acc) / self.tolerance), int(total), "CBPE: calibrated scores, reference isotonic map",
                    f"estimated accuracy in {_seg(segment)} is {acc:.4f} (95% {acc - half:.4f}-{acc + half:.4f}) "
                    f"against {base:.4f} in training, before labels arrive", Baseline.TRAINING, base))
        return tuple(out)


# ----------------------------------------------------------------------------------------------- serving


#: Bins of the latency histogram per unit of ``ln(ms)``: neighbouring bin edges are 1 % apart.
LATENCY_BINS_PER_E = 100


def _histogram_quantiles(n: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs: Sequence[float]) -> tuple[float, ...]:
    """Quantiles (as ``quantile_cont``: linear between order statistics) of values binned in order.

    ``n``, ``lo``, ``hi`` are each bin's count, min and max, bins sorted by value; the values of a bin
    are taken as evenly spread from its min to its max.
    """
    total = int(n.sum())
    cum = np.cumsum(n)
    first = cum - n

    def order_stat(rank: int) -> float:
        k = int(np.searchsorted(cum, rank, side="right"))
        c = int(n[k])
        return float(lo[k]) if c <= 1 else float(lo[k] + (hi[k] - lo[k]) * (rank - first[k]) / (c - 1))

    out = []
    for q in qs:
        h = q * (total - 1)
        below = math.floor(h)
        a, b = order_stat(below), order_stat(min(below + 1, total - 1))
        out.append(a + (h - below) * (b - a))
    return tuple(out)


@dataclass(frozen=True)
class ServingHealth(Monitor):
    """Latency p50/p95/p99, error rate and fallback rate vs the range's typical window (or fixed limits).

    Latency quantiles come from a log-spaced histogram aggregated by the engine (within 1 % of the exact
    quantiles, identical on every engine, bounded memory at any scale).

    Parameters
    ----------
    latency_ratio
        A latency quantile above this multiple of its median over the range's windows counts, if it also
        rose by ``min_latency_increase_ms``.
    min_latency_increase_ms
        Smallest absolute latency rise that counts.
    rate_increase
        Rise of the error or fallback rate over its median that counts (absolute), beyond 4 binomial errors.
    max_p99_ms, max_error_rate
        Optional fixed limits.
    min_rows
        Skip smaller windows.
    """

    name: ClassVar[str] = "serving_health"

    latency_ratio: float = 1.5
    min_latency_increase_ms: float = 5.0
    rate_increase: float = 0.01
    max_p99_ms: float | None = None
    max_error_rate: float | None = None
    min_rows: int = 100

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.3)
        lat = log.column("latency_ms")
        log = _replace(log, "latency_ms", pc.if_else(late, pc.multiply(lat, 3.0), lat))
        rng = np.random.default_rng(3)
        err = pc.and_(late, pa.array(rng.random(log.num_rows) < 0.05))
        msg = pa.scalar("fallback: feature-store timeout, default score")
        return _replace(log, "error", pc.if_else(err, msg, log.column("error"))), labels

    def _latency(self, ctx: MonitorContext) -> dict[tuple[Segment, datetime], tuple[float, float, float]]:
        """p50/p95/p99 per window (and segment value) from a log-spaced latency histogram built by the engine.

        Exact quantiles need every value of a window in memory (DuckDB's ``quantile_cont``, Spark's
        ``percentile``), which does not scale to billions of requests; engine sketches
        (``approx_quantile``, ``percentile_approx``) differ between engines. The histogram has
        :data:`LATENCY_BINS_PER_E` bins per unit of ``ln(ms)`` (neighbouring edges 1 % apart) with each
        bin's count, min and max, so it is bounded, the same on every engine, and its quantiles
        (linear within a bin's min..max) are within 1 % of the exact ones, exact when no bin holds
        more than two values.
        """
        out: dict[tuple[Segment, datetime], tuple[float, float, float]] = {}
        where = ctx.time_range.where(ctx.schema.names, ["latency_ms IS NOT NULL"])
        exprs, keys = ctx.group_sql()
        groupings = [[0]] + [[0, j + 1] for j in range(len(ctx.segment))]
        x = "CAST(latency_ms AS DOUBLE)"
        b = f"CAST(floor(ln(greatest({x}, 0.001)) * {LATENCY_BINS_PER_E}) AS BIGINT)"
        for g in groupings:
            sel = [f"{exprs[j]} AS {keys[j]}" for j in g]
            table = ctx.source.sql(
                f"SELECT {', '.join(sel)}, {b} AS b, count(*) AS n, min({x}) AS lo, max({x}) AS hi "
                f"FROM log{where} GROUP BY {', '.join(str(i + 1) for i in range(len(g) + 1))}")
            names = [keys[j] for j in g]
            table = table.sort_by([(k, "ascending") for k in names] + [("b", "ascending")])
            cols = {k: table.column(k).to_pylist() for k in names}
            n = np.asarray(table.column("n").to_numpy(zero_copy_only=False), dtype=np.int64)
            lo = np.asarray(table.column("lo").to_numpy(zero_copy_only=False), dtype=np.float64)
            hi = np.asarray(table.column("hi").to_numpy(zero_copy_only=False), dtype=np.float64)
            group_keys = list(zip(*(cols[k] for k in names), strict=True))
            first = 0
            for i in range(1, len(group_keys) + 1):
                if i < len(group_keys) and group_keys[i] == group_keys[first]:
                    continue
                r = group_keys[first]
                start = datetime.fromtimestamp(int(r[0]) * ctx.window_seconds, UTC)
                seg: Segment = ()
                if len(g) > 1:
                    v = r[1]
                    seg = ((ctx.segment[g[1] - 1], "(null)" if v is None else str(v)),)
                p50, p95, p99 = _histogram_quantiles(n[first:i], lo[first:i], hi[first:i], (0.5, 0.95, 0.99))
                out[(seg, start)] = (p50, p95, p99)
                first = i
        return out

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        if not ctx.has("latency_ms") and not ctx.has("error"):
            raise MonitorSkipped("the log has neither latency_ms nor error")
        lat = self._latency(ctx) if ctx.has("latency_ms") else {}
        out: list[Finding] = []
        for segment, series in ctx.slices:
            done = [w for w in series if ctx.complete(w) and w.rows >= self.min_rows]
            if not done:
                continue
            vals = {w.start: lat[(segment, w.start)] for w in done if (segment, w.start) in lat}
            if vals:
                med = np.median(np.asarray(list(vals.values())), axis=0)
                for w in done:
                    if w.start not in vals:
                        continue
                    for i, name in enumerate(("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")):
                        v, m = vals[w.start][i], float(med[i])
                        limit = max(m * self.latency_ratio, m + self.min_latency_increase_ms)
                        base = Baseline.PRODUCTION
                        if name == "latency_p99_ms" and self.max_p99_ms is not None and self.max_p99_ms < limit:
                            limit, base = self.max_p99_ms, Baseline.ABSOLUTE
                        if v > limit:
                            out.append(Finding(
                                self.name, "latency_ms", w.start, w.end, segment, name, v, limit, _sev(v / m, 3.0),
                                w.rows, f"{name} vs {base.value}",
                                f"{name.split('_')[1]} latency in {_seg(segment)} is {v:.1f} ms against a typical "
                                f"{m:.1f} ms", base, m))
            if ctx.has("error"):
                for stat, get in (("error_rate", lambda w: w.errors), ("fallback_rate", lambda w: w.fallbacks)):
                    rates = np.asarray([get(w) / w.rows for w in done])
                    med = float(np.median(rates))
                    for w, r in zip(done, rates, strict=True):
                        limit = med + self.rate_increase + 4 * math.sqrt(max(med * (1 - med), 1 / w.rows) / w.rows)
                        base = Baseline.PRODUCTION
                        if stat == "error_rate" and self.max_error_rate is not None and self.max_error_rate < limit:
                            limit, base = self.max_error_rate, Baseline.ABSOLUTE
                        if r > limit:
                            out.append(Finding(
                                self.name, "error", w.start, w.end, segment, stat, float(r), limit,
                                Severity.CRITICAL if r - med > 0.05 else Severity.WARNING, w.rows,
                                f"{stat} vs {base.value}",
                                f"{stat.replace('_', ' ')} in {_seg(segment)} is {r:.2%} against a typical {med:.2%}",
                                base, med))
        return tuple(out)


# ----------------------------------------------------------------------------------------------- change points


class WindowMetric(enum.Enum):
    """A per-window metric series for :class:`MetricChange`."""

    ROWS = "rows"
    ERROR_RATE = "error_rate"
    SCORE_MEAN = "score_mean"
    POSITIVE_RATE = "positive_rate"
    NULL_RATE = "null_rate"
    MEAN = "mean"

    @property
    def higher_is_worse(self) -> bool:
        """Whether a rise of this metric is bad (for the trend's direction)."""
        return self in (WindowMetric.ERROR_RATE, WindowMetric.NULL_RATE, WindowMetric.POSITIVE_RATE,
                        WindowMetric.SCORE_MEAN, WindowMetric.MEAN)


def _metric_value(metric: WindowMetric, w: WindowProfile, column: str | None) -> float:
    if metric is WindowMetric.ROWS:
        return float(w.rows)
    if w.rows == 0:
        return math.nan
    if metric is WindowMetric.ERROR_RATE:
        return w.errors / w.rows
    col = {"score_mean": "score", "positive_rate": "prediction"}.get(metric.value, column)
    prof = w.columns.get(col) if col else None
    if prof is None:
        return math.nan
    if metric is WindowMetric.NULL_RATE:
        return prof.null_rate
    return prof.mean if isinstance(prof, NumericProfile) else math.nan


@dataclass(frozen=True)
class MetricChange(Monitor):
    """Change points (with an onset interval) and trend on a windowed metric series.

    Parameters
    ----------
    metric
        The series: requests, error rate, mean score, positive rate, or a column's null rate / mean.
    column
        The column for ``NULL_RATE`` and ``MEAN``.
    min_size
        Fewest windows on each side of a change.
    min_change
        Smallest shift (in robust noise standard deviations) reported.
    """

    name: ClassVar[str] = "metric_change"

    metric: WindowMetric = WindowMetric.SCORE_MEAN
    column: str | None = None
    min_size: int = 4
    min_change: float = 4.0

    def __post_init__(self) -> None:
        if self.metric in (WindowMetric.NULL_RATE, WindowMetric.MEAN) and not self.column:
            raise ConfigError(f"the metric {self.metric.value} needs a column", column="column")

    @classmethod
    def examples(cls) -> tuple[Monitor, ...]:
        return (cls(), cls(WindowMetric.ROWS))

    @staticmethod
    def example_fault(log: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
        late = _window_after(log, 0.4)
        keep = pc.or_(pc.invert(late), pc.less(pa.array(np.random.default_rng(4).random(log.num_rows)), 0.4))
        log = log.filter(keep)
        late = _window_after(log, 0.4)
        s = log.column("score")
        return _replace(log, "score", pc.if_else(late, pc.power(s, 0.5), s)), labels

    def run(self, ctx: MonitorContext) -> tuple[Finding, ...]:
        out: list[Finding] = []
        per_day = _DAY // ctx.window_seconds if _DAY % ctx.window_seconds == 0 else 0
        for segment, series in ctx.slices:
            done = [w for w in series if ctx.complete(w)]
            x = np.asarray([_metric_value(self.metric, w, self.column) for w in done], dtype=np.float64)
            ok = ~np.isnan(x)
            if ok.sum() < 2 * self.min_size:
                continue
            ws = [w for w, k in zip(done, ok, strict=True) if k]
            x = x[ok]
            resid = remove_seasonality(x, per_day) if per_day > 1 and x.size >= 3 * per_day else x
            for cp in detect_change_points(resid, min_size=self.min_size):
                if abs(cp.magnitude) < self.min_change:
                    continue
                w = ws[cp.index]
                out.append(Finding(
                    self.name, self.column, w.start, w.end, segment, f"{self.metric.value}_change",
                    cp.mean_after - cp.mean_before, 0.0, _sev(abs(cp.magnitude) / self.min_change, 2.0),
                    int(sum(v.rows for v in ws)), "binary segmentation change point",
                    f"{self.metric.value} in {_seg(segment)} changed from {cp.mean_before:.4g} to "
                    f"{cp.mean_after:.4g} at {w.start.isoformat()} (between {ws[cp.lower].start.isoformat()} and "
                    f"{ws[cp.upper].end.isoformat()}; {abs(cp.magnitude):.1f} noise sd)", Baseline.PRODUCTION,
                    cp.mean_before))
            tr = trend(resid, higher_is_worse=self.metric.higher_is_worse, min_change=self.min_change)
            if tr.trend is Trend.WORSENING and not any(f.segment == segment for f in out):
                out.append(Finding(
                    self.name, self.column, ws[0].start, ws[-1].end, segment, f"{self.metric.value}_trend", tr.change,
                    self.min_change * tr.noise, Severity.INFO, int(sum(v.rows for v in ws)),
                    "Mann-Kendall test with Theil-Sen slope",
                    f"{self.metric.value} in {_seg(segment)} is worsening: {tr.change:+.4g} over the range "
                    f"(p={tr.p_value:.2g})", Baseline.PRODUCTION, float(x[0])))
        return tuple(out)


#: Every monitor class, for discovery (the contract test and the CLI).
MONITORS: tuple[type[Monitor], ...] = (
    FeatureDrift, InputDrift, SchemaCheck, DataQuality, Volume, Freshness, PredictionDrift, Performance,
    EstimatedPerformance, ServingHealth, MetricChange,
)


def default_monitors() -> tuple[Monitor, ...]:
    """The monitors ``mlsleuth monitor`` runs."""
    return (FeatureDrift(), FeatureDrift(baseline=Baseline.PRODUCTION), InputDrift(), SchemaCheck(), DataQuality(),
            Volume(), Freshness(), PredictionDrift(), Performance(), EstimatedPerformance(), ServingHealth(),
            MetricChange(WindowMetric.SCORE_MEAN), MetricChange(WindowMetric.ERROR_RATE),
            MetricChange(WindowMetric.ROWS))


