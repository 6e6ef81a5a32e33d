"""Replay logged requests through a pipeline and/or a model, and verify a fix against the baseline."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mlsleuth.errors import ConfigError, SchemaError
from mlsleuth.replay._metrics import (
    BoolArray,
    FloatArray,
    Metric,
    Metrics,
    _r,
    compute_metrics,
    float_column,
    infer_threshold,
    ks_statistic,
    label_arrays,
    segment_groups,
)
from mlsleuth.replay._runners import PipelineRunner, Runner, load_pipeline, load_runner
from mlsleuth.replay._select import LogSource, Selection, select
from mlsleuth.replay._skew import SkewReport, _report, row_ids
from mlsleuth.schema import FEATURE_PREFIX, Role, infer_schema, parse_duration

__all__ = [
    "MetricCheck",
    "ReplayResult",
    "RequestDiff",
    "SegmentReplay",
    "Tolerance",
    "Verdict",
    "Verification",
    "replay",
    "verify",
]

#: Two scores are the same when ``|a - b| <= SCORE_ATOL + SCORE_RTOL * |b|``.
SCORE_RTOL = 1e-6
SCORE_ATOL = 1e-9


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class RequestDiff:
    """One request as logged and as replayed."""

    request_id: str
    score_logged: float | None
    score_replayed: float | None
    decision_logged: bool
    decision_replayed: bool | None
    label: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"request_id": self.request_id, "score_logged": _r(self.score_logged),
                "score_replayed": _r(self.score_replayed), "decision_logged": self.decision_logged,
                "decision_replayed": self.decision_replayed, "label": self.label}


@dataclass(frozen=True)
class SegmentReplay:
    """Metrics of one segment (``column == value``) as logged and as replayed."""

    column: str
    value: str
    before: Metrics
    after: Metrics | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"column": self.column, "value": self.value, "before": self.before.to_dict(),
                "after": None if self.after is None else self.after.to_dict()}


@dataclass(frozen=True)
class ReplayResult:
    """What changed when logged requests went through the pipeline and/or model again.

    Attributes
    ----------
    selection
        The requests replayed.
    n
        How many.
    threshold
        The score at or above which a decision is positive, for both sides.
    threshold_source
        ``given``, ``inferred`` (from the logged score/prediction pairs, see
        :func:`~mlsleuth.replay.infer_threshold`) or ``default`` (0.5).
    before, after
        Metrics as logged and as replayed (``after`` is ``None`` when only a pipeline ran).
        Logged decisions are the logged scores against ``threshold`` (the logged ``prediction``
        when there are no scores), so both sides use the same rule.
    n_changed
        Requests whose replayed score differs from the logged one (beyond 1e-6 relative).
    n_flipped
        Requests whose decision changed.
    mean_abs_score_diff, max_abs_score_diff
        Over requests with both scores.
    score_shift_ks
        Kolmogorov-Smirnov statistic between logged and replayed scores.
    features
        When a pipeline ran: replayed features against the logged ones, per feature.
    segments
        Per segment value, before and after.
    examples
        The requests whose score changed most.
    requests
        Every request: ``request_id``, ``score_logged``, ``score_replayed``, ``score_diff``,
        ``decision_logged``, ``decision_replayed``, ``flipped``, and ``ts``, ``label`` and the
        segment columns when present. Not part of ``to_dict``.
    """

    selection: Selection
    n: int
    threshold: float
    threshold_source: str
    before: Metrics
    after: Metrics | None
    n_changed: int = 0
    n_flipped: int = 0
    mean_abs_score_diff: float | None = None
    max_abs_score_diff: float | None = None
    score_shift_ks: float | None = None
    features: SkewReport | None = None
    segments: tuple[SegmentReplay, ...] = ()
    examples: tuple[RequestDiff, ...] = ()
    requests: pa.Table = field(default_factory=lambda: pa.table({}), compare=False, repr=False)

    def _repr_html_(self) -> str:
        """The ``--format html`` report, shown inline by Jupyter."""
        # The renderers live in mlsleuth.report, above this module: imported only when a notebook shows it.
        from mlsleuth.report._notebook import notebook_html

        return notebook_html(self)

    def segment(self, column: str, value: str) -> SegmentReplay:
        """The entry of one segment value."""
        for s in self.segments:
            if s.column == column and s.value == str(value):
                return s
        raise KeyError(f"no segment {column}={value!r}; have {[(s.column, s.value) for s in self.segments]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the per-request table)."""
        return {
            "selection": self.selection.to_dict(), "n": self.n, "threshold": self.threshold,
            "threshold_source": self.threshold_source, "before": self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(), "n_changed": self.n_changed,
            "n_flipped": self.n_flipped, "mean_abs_score_diff": _r(self.mean_abs_score_diff),
            "max_abs_score_diff": _r(self.max_abs_score_diff), "score_shift_ks": _r(self.score_shift_ks),
            "features": None if self.features is None else self.features.to_dict(),
            "segments": [s.to_dict() for s in self.segments], "examples": [e.to_dict() for e in self.examples],
        }


def _segment_columns(table: pa.Table, segments: Sequence[str] | None) -> tuple[str, ...]:
    if segments is not None:
        missing = [s for s in segments if s not in table.column_names]
        if missing:
            raise SchemaError(f"segment columns {missing} are not in the log; it has {table.column_names}",
                              column=missing[0])
        return tuple(segments)
    if table.num_rows == 0:
        return ()
    return infer_schema(table).with_role(Role.SEGMENT)


def _decisions(scores: FloatArray | None, predictions: FloatArray | None, threshold: float) -> BoolArray:
    if scores is not None:
        return np.asarray(scores >= threshold, dtype=bool)
    assert predictions is not None
    return np.asarray(np.nan_to_num(predictions, nan=0.0) != 0.0, dtype=bool)


def _resolve_threshold(threshold: float | None, scores: FloatArray | None,
                       predictions: FloatArray | None) -> tuple[float, str]:
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ConfigError(f"expected a finite threshold, got {threshold!r}", column="threshold")
        return float(threshold), "given"
    if scores is not None and predictions is not None:
        inferred = infer_threshold(scores, predictions)
        if inferred is not None:
            return inferred, "inferred"
    return 0.5, "default"


def replay(data: pa.Table | LogSource | Any, *, model: Runner | str | None = None,
           pipeline: PipelineRunner | str | Any = None, selection: Selection | None = None,
           labels: pa.Table | None = None, threshold: float | None = None, positive_class: Any = None,
           segments: Sequence[str] | None = None, feature_order: Sequence[str] | None = None,
           n_examples: int = 10) -> ReplayResult:
    """Run logged requests through a pipeline and/or a model and compare with what was logged.

    Parameters
    ----------
    data
        The prediction log: a table, or a store (``read_log`` / ``read_log_with_labels``).
    model
        The model to replay through: a :class:`Runner` or a spec for :func:`load_runner`.
    pipeline
        A feature pipeline (a :class:`PipelineRunner`, a callable or an entry point) that recomputes
        features from the logged ``input.*`` columns; its features replace the logged ones as the
        model's input.
    selection
        Which requests (all when ``None``); see :class:`Selection`.
    labels
        Labels (``request_id``, ``label``) to join, for FPR/TPR/precision.
    threshold
        Decision threshold on scores (default: inferred from the logged score/prediction pairs,
        else 0.5).
    positive_class
        The label value of the positive class (default 1 / True).
    segments
        Segment columns for the per-segment breakdown (default: inferred).
    feature_order
        Passed to :func:`load_runner` when ``model`` is a spec.
    n_examples
        Requests to keep in ``examples``.

    Examples
    --------
    >>> import pyarrow as pa, pyarrow.compute as pc
    >>> from mlsleuth.replay import MemoryRunner
    >>> log = pa.table({"request_id": ["a", "b"], "feature.x": [0.2, 0.9], "score": [0.2, 0.9]})
    >>> r = replay(log, model=MemoryRunner(lambda t: pc.multiply(t["feature.x"], 0.5)))
    >>> r.before.positive_rate.value, r.after.positive_rate.value, r.n_flipped
    (0.5, 0.0, 1)
    """
    if model is None and pipeline is None:
        raise ConfigError("replay needs a model, a pipeline, or both", column="model")
    runner = load_runner(model, feature_order=feature_order) if isinstance(model, str) else model
    pipe = None if pipeline is None else load_pipeline(pipeline)
    sel = selection or Selection()
    table = select(data, sel, labels=labels, with_labels=True)
    n = table.num_rows
    ids = row_ids(table)
    logged_scores = float_column(table, "score")
    logged_preds = float_column(table, "prediction")
    if logged_scores is None and logged_preds is None:
        raise SchemaError("replay compares with the logged score, or a numeric 0/1 prediction, and the log has "
                          f"neither; it has {table.column_names}", column="score")
    t, t_source = _resolve_threshold(threshold, logged_scores, logged_preds)
    lab = label_arrays(table, positive_class)
    known, positive = (None, None) if lab is None else lab

    model_input = table
    feature_report = None
    if pipe is not None:
        recomputed = pipe.run(table)
        feature_report = _report("replay", table, recomputed, ids, rtol=SCORE_RTOL, atol=SCORE_ATOL,
                                 n_examples=5, reference=None, features=None)
        keep = [c for c in table.column_names if not (c.startswith(FEATURE_PREFIX) and c in recomputed.column_names)]
        model_input = pa.table([*(table.column(c) for c in keep), *recomputed.columns],
                               names=[*keep, *recomputed.column_names])

    before_dec = _decisions(logged_scores, logged_preds, t)
    before = compute_metrics(before_dec, logged_scores, known, positive)
    cols: dict[str, Any] = {"request_id": ids}
    if "ts" in table.column_names:
        cols["ts"] = table.column("ts")
    seg_cols = _segment_columns(table, segments)
    for c in seg_cols:
        cols[c] = table.column(c)
    cols["score_logged"] = logged_scores if logged_scores is not None else np.full(n, np.nan)
    cols["decision_logged"] = before_dec
    if known is not None and positive is not None:
        cols["label"] = pa.array(positive, mask=~known)

    if runner is None:
        seg_out = tuple(SegmentReplay(c, v, compute_metrics(before_dec[m], None if logged_scores is None else
                                                            logged_scores[m], _sub(known, m), _sub(positive, m)),
                                      None)
                        for c, v, m in _segment_rows(table, seg_cols))
        return ReplayResult(sel, n, t, t_source, before, None, features=feature_report, segments=seg_out,
                            requests=pa.table(cols))

    new_scores = runner.run(model_input)
    after_dec = np.asarray(new_scores >= t, dtype=bool)
    after = compute_metrics(after_dec, new_scores, known, positive)
    flipped = before_dec != after_dec
    if logged_scores is not None:
        diff = new_scores - logged_scores
        both = np.isfinite(diff)
        with np.errstate(invalid="ignore"):
            changed = ~(np.abs(diff) <= SCORE_ATOL + SCORE_RTOL * np.abs(logged_scores))
        absd = np.abs(diff[both])
        mean_abs = float(absd.mean()) if absd.size else None
        max_abs = float(absd.max()) if absd.size else None
        ks = ks_statistic(logged_scores, new_scores)
        rank_key = np.where(both, np.abs(diff), -1.0) + flipped
    else:
        diff = np.full(n, np.nan)
        changed = flipped
        mean_abs = max_abs = None
        ks = None
        rank_key = flipped.astype(np.float64)
    cols["score_replayed"] = new_scores
    cols["score_diff"] = diff
    cols["decision_replayed"] = after_dec
    cols["flipped"] = flipped
    examples: tuple[RequestDiff, ...] = ()
    if n and n_examples > 0:
        k = min(n_examples, n)
        top = np.argpartition(-rank_key, k - 1)[:k]
        top = top[np.argsort(-rank_key[top], kind="stable")]
        examples = tuple(
            RequestDiff(str(ids[int(i)].as_py()), None if logged_scores is None or not np.isfinite(logged_scores[i])
                        else float(logged_scores[i]), float(new_scores[i]), bool(before_dec[i]), bool(after_dec[i]),
                        None if known is None or positive is None or not known[i] else bool(positive[i]))
            for i in top if rank_key[i] > 0)
    seg_out = tuple(
        SegmentReplay(c, v,
                      compute_metrics(before_dec[m], None if logged_scores is None else logged_scores[m],
                                      _sub(known, m), _sub(positive, m)),
                      compute_metrics(after_dec[m], new_scores[m], _sub(known, m), _sub(positive, m)))
        for c, v, m in _segment_rows(table, seg_cols))
    return ReplayResult(
        sel, n, t, t_source, before, after, n_changed=int(changed.sum()), n_flipped=int(flipped.sum()),
        mean_abs_score_diff=mean_abs, max_abs_score_diff=max_abs, score_shift_ks=None if ks is None else ks[0],
        features=feature_report, segments=seg_out, examples=examples, requests=pa.table(cols))


def _sub(arr: Any, idx: npt.NDArray[np.intp]) -> Any:
    return None if arr is None else arr[idx]


def _segment_rows(table: pa.Table, columns: Sequence[str]) -> list[tuple[str, str, npt.NDArray[np.intp]]]:
    return [(c, v, idx) for c in columns for v, idx in segment_groups(table, c)]


# --------------------------------------------------------------------------- verify


class Verdict(enum.Enum):
    """The outcome of :func:`verify`."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Tolerance:
    """How close to the pre-onset baseline a replayed metric must come to count as restored.

    A metric is *restored* when ``|replayed - baseline| <= max(relative * |baseline|, absolute,
    z * se)``, where ``se`` is the standard error of that difference from the two samples' sizes
    (``sqrt(p(1-p)/n)`` per side for a rate, ``std/sqrt(n)`` for the mean score): the replayed value
    is within ``relative`` of the baseline, or within the two windows' joint sampling noise.

    Parameters
    ----------
    relative
        Allowed relative deviation from the baseline (0.10 = 10 %).
    absolute
        Floor of the allowed deviation, in the metric's units (a rate of 0.002 = 0.2 points).
    z
        Width of the noise allowance in standard errors; 2.576 (99 %) keeps the chance that an
        exact fix fails on noise across four metrics near 4 %.
    metrics
        The metrics checked; those a window cannot compute (e.g. FPR without labels) are skipped.
    """

    relative: float = 0.10
    absolute: float = 0.002
    z: float = 2.576
    metrics: tuple[Metric, ...] = (Metric.POSITIVE_RATE, Metric.FPR, Metric.TPR, Metric.SCORE_MEAN)

    def __post_init__(self) -> None:
        if self.relative < 0 or self.absolute < 0 or self.z < 0:
            raise ConfigError(f"expected non-negative tolerances, got relative={self.relative}, "
                              f"absolute={self.absolute}, z={self.z}", column="tolerance")
        if not self.metrics:
            raise ConfigError("expected at least one metric to check", column="tolerance.metrics")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"relative": self.relative, "absolute": self.absolute, "z": self.z,
                "metrics": [m.value for m in self.metrics]}


@dataclass(frozen=True)
class MetricCheck:
    """One metric: baseline, incident as logged, incident as replayed, and whether it is restored.

    Attributes
    ----------
    allowed
        ``max(relative * |baseline|, absolute, z * se)``: the deviation that still counts as restored.
    detectable
        Whether the incident, as logged, moved the metric by more than ``allowed`` (computed with the
        incident window's own noise): only such a metric shows that the fix changed something.
    restored
        ``|replayed - baseline| <= allowed``.
    """

    metric: Metric
    baseline: float
    incident: float
    replayed: float
    allowed: float
    detectable: bool
    restored: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"metric": self.metric.value, "baseline": _r(self.baseline), "incident": _r(self.incident),
                "replayed": _r(self.replayed), "allowed": _r(self.allowed), "detectable": self.detectable,
                "restored": self.restored}


@dataclass(frozen=True)
class Verification:
    """Whether a fixed pipeline or model brings an incident window back to the pre-onset baseline.

    ``verdict`` is ``FAIL`` when a checked metric is not restored; ``PASS`` when every checked metric
    is restored and at least one of them was visibly moved by the incident; ``INCONCLUSIVE`` when
    all are restored but none was detectably moved (too few requests, or the incident does not
    show in these metrics), so the replay cannot tell a fix from no fix.
    """

    verdict: Verdict
    summary: str
    onset: datetime
    baseline_window: tuple[datetime, datetime]
    incident_window: tuple[datetime, datetime | None]
    tolerance: Tolerance
    checks: tuple[MetricCheck, ...]
    baseline: Metrics
    replay: ReplayResult

    def _repr_html_(self) -> str:
        """The ``--format html`` report, shown inline by Jupyter."""
        # The renderers live in mlsleuth.report, above this module: imported only when a notebook shows it.
        from mlsleuth.report._notebook import notebook_html

        return notebook_html(self)

    @property
    def passed(self) -> bool:
        """``verdict is Verdict.PASS``."""
        return self.verdict is Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict.value, "summary": self.summary, "onset": _iso(self.onset),
            "baseline_window": [_iso(self.baseline_window[0]), _iso(self.baseline_window[1])],
            "incident_window": [_iso(self.incident_window[0]), _iso(self.incident_window[1])],
            "tolerance": self.tolerance.to_dict(), "checks": [c.to_dict() for c in self.checks],
            "baseline": self.baseline.to_dict(), "replay": self.replay.to_dict(),
        }


def _se(metrics: Metrics, metric: Metric) -> float:
    if metric is Metric.SCORE_MEAN:
        s = metrics.score
        return 0.0 if s is None or s.n == 0 else s.std / math.sqrt(s.n)
    rate = metrics.rate(metric)
    if rate is None or rate.n == 0 or rate.value is None:
        return 0.0
    p = rate.value
    return math.sqrt(p * (1 - p) / rate.n)


def _check(metric: Metric, base: Metrics, incident: Metrics, replayed: Metrics, tol: Tolerance) -> MetricCheck | None:
    b, i, r = base.value(metric), incident.value(metric), replayed.value(metric)
    if b is None or i is None or r is None:
        return None
    floor = max(tol.relative * abs(b), tol.absolute)
    allowed = max(floor, tol.z * math.hypot(_se(base, metric), _se(replayed, metric)))
    allowed_incident = max(floor, tol.z * math.hypot(_se(base, metric), _se(incident, metric)))
    return MetricCheck(metric, b, i, r, allowed, abs(i - b) > allowed_incident, abs(r - b) <= allowed)


def _fmt(metric: Metric, v: float) -> str:
    return f"{v:.4f}" if metric is Metric.SCORE_MEAN else f"{100 * v:.2f}%"


def verify(data: pa.Table | LogSource | Any, *, onset: Any, model: Runner | str, pipeline: Any = None,
           until: Any = None, baseline: timedelta | str = "7d", selection: Selection | None = None,
           labels: pa.Table | None = None, threshold: float | None = None, positive_class: Any = None,
           segments: Sequence[str] | None = None, tolerance: Tolerance | None = None) -> Verification:
    """Replay an incident window through the fixed pipeline or model and judge it against the baseline.

    The baseline is what was logged in ``[onset - baseline, onset)``; the incident window is
    ``[onset, until)``. Both keep the other criteria of ``selection`` (segments, model, version),
    so verifying the affected segment of a diagnosis compares it with its own past. See
    :class:`Tolerance` for when a metric counts as restored and :class:`Verification` for the
    verdict.

    Parameters
    ----------
    data
        The prediction log (a table or a store).
    onset
        When the incident started.
    model
        The (fixed) model, or the unchanged model when the fix is in the pipeline.
    pipeline
        The fixed feature pipeline, recomputing features from the logged inputs.
    until
        End of the incident window (default: open).
    baseline
        Length of the baseline window before the onset (``"7d"``, ``"24h"``, a timedelta).
    selection
        Segments / model / version to restrict both windows to (its own window is ignored).
    labels, threshold, positive_class, segments
        As for :func:`replay`.
    tolerance
        The tolerance (default :class:`Tolerance()`).
    """
    tol = tolerance or Tolerance()
    sel = selection or Selection()
    start = Selection(since=onset).since
    assert start is not None
    length = parse_duration(baseline, field_name="baseline")
    incident_sel = sel.replace(since=start, until=until)
    base_sel = sel.replace(since=start - length, until=start, request_ids=None)
    result = replay(data, model=model, pipeline=pipeline, selection=incident_sel, labels=labels,
                    threshold=threshold, positive_class=positive_class, segments=segments)
    if result.n == 0:
        raise ConfigError(f"no requests in the incident window from {_iso(start)}", column="onset")
    assert result.after is not None
    base_table = select(data, base_sel, labels=labels, with_labels=True)
    if base_table.num_rows == 0:
        raise ConfigError(f"no requests in the baseline window {_iso(start - length)} to {_iso(start)}; "
                          "lengthen baseline", column="baseline")
    b_scores = float_column(base_table, "score")
    b_preds = float_column(base_table, "prediction")
    lab = label_arrays(base_table, positive_class)
    base = compute_metrics(_decisions(b_scores, b_preds, result.threshold), b_scores,
                           None if lab is None else lab[0], None if lab is None else lab[1])
    checks = tuple(c for c in (_check(m, base, result.before, result.after, tol) for m in tol.metrics) if c)
    if not checks:
        raise ConfigError(f"none of the metrics {[m.value for m in tol.metrics]} can be computed in both windows",
                          column="tolerance.metrics")
    failed = [c for c in checks if not c.restored]
    moved = [c for c in checks if c.detectable]
    if failed:
        verdict = Verdict.FAIL
        summary = "; ".join(f"{c.metric.value} {_fmt(c.metric, c.replayed)} after replay, baseline "
                            f"{_fmt(c.metric, c.baseline)} (allowed ±{_fmt(c.metric, c.allowed)})" for c in failed)
        summary = f"FAIL: not restored: {summary}"
    elif moved:
        verdict = Verdict.PASS
        summary = "PASS: restored " + "; ".join(
            f"{c.metric.value} {_fmt(c.metric, c.incident)} -> {_fmt(c.metric, c.replayed)} "
            f"(baseline {_fmt(c.metric, c.baseline)})" for c in moved)
    else:
        verdict = Verdict.INCONCLUSIVE
        summary = ("INCONCLUSIVE: no checked metric moved detectably in the incident window, so the replay cannot "
                   "tell a fix from no fix; widen the window or add labels")
    return Verification(verdict, summary, start, (start - length, start), (start, incident_sel.until), tol, checks,
                        base, result)
