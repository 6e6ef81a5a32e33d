"""Chart data of an incident, computed once by the diagnosis so that every renderer draws the same numbers.

Everything here is a handful of small aggregates from the engine (the log is registered as ``log``, the
reference as ``ref``): the culprit's statistic per window, its histogram before and after the onset and in
the reference, and the affected metric per segment value. The per-window metrics come from the triage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from mlsleuth.diagnosis._analysis import HAS_ERROR, Triage, fallback_case
from mlsleuth.diagnosis._result import (
    Cause,
    Distribution,
    Hypothesis,
    IncidentCharts,
    Marker,
    MarkerKind,
    SegmentBar,
    SegmentChart,
    Series,
    Symptom,
    Timeline,
    fmt_num,
)
from mlsleuth.monitors._windows import CategoricalRef, NumericRef
from mlsleuth.schema._tables import at_least, at_most
from mlsleuth.store._sql_case import (
    after_flag,
    categorical_bucket,
    column_ratio,
    distinct_per_row,
    exact_median,
    histogram_counts,
    metric_ratio,
    numeric_bucket,
    per_window,
    range_quantiles,
    rate_null,
    rate_outside,
    rate_unseen,
    rate_value,
    rate_zero,
    scope_condition,
    segment_sums,
)

__all__ = ["incident_charts"]

#: Bins of a numeric distribution chart.
BINS = 30
#: Values of a segment column drawn one by one; the rest are lumped as ``(other)``.
MAX_SEGMENT_VALUES = 8
#: Metrics whose rate is over all requests: their excess since the onset is a count of requests.
_COUNTED = {"positive_rate": "positive predictions", "error_rate": "errors", "fallback_rate": "fallback scores"}
_FALLBACK_METRICS = ("positive_rate", "mean_prediction", "error_rate", "latency_p99_ms")
#: A window with fewer requests than this is left out of a column's series: a handful says little.
MIN_WINDOW_ROWS = 20
#: The running mean that finds when the symptom became visible spans this many windows (gaps ignored)...
SMOOTH_WINDOWS = 3
#: ... and the symptom is visible once it has made this share of its change.
VISIBLE_SHARE = 0.5
#: A positive range spanning this ratio or more is drawn on a log scale.
LOG_SCALE_RATIO = 30
#: The quantiles that place the histogram's ends (values beyond them fall in the end bins).
RANGE_QUANTILES = (0.005, 0.995)
#: Categories of a categorical distribution drawn one by one (the rest are ``(other)``).
MAX_CATEGORIES = MAX_SEGMENT_VALUES + 2
#: A segment column the hypothesis does not name is drawn only with at most this many values.
MAX_UNNAMED_SEGMENT_VALUES = 12


def _index_of(tr: Triage, t: datetime | None) -> int | None:
    if t is None or not tr.starts:
        return None
    i = int((t - tr.starts[0]).total_seconds() // tr.window)
    return min(max(i, 0), len(tr.starts) - 1)


def _levels(v: np.ndarray, index: int | None) -> tuple[float, float]:
    """Median of a series before and after ``index`` (NaN when a side has no data)."""
    if index is None or not 0 < index < len(v):
        return math.nan, math.nan
    b, a = v[:index], v[index:]
    b, a = b[np.isfinite(b)], a[np.isfinite(a)]
    return (float(np.median(b)) if len(b) else math.nan), (float(np.median(a)) if len(a) else math.nan)


#: An exact median holds every value of its window in memory, and DuckDB cannot spill it: past this many
#: values in one query (a hundred million requests), the chart's medians come from the engine's quantile
#: sketch instead (DuckDB's t-digest, Spark's percentile_approx), within a fraction of a percent.
_EXACT_MEDIAN_VALUES = 40_000_000


def _column_stat(tr: Triage, column: str, *, exact: bool = True) -> tuple[str, str, str]:
    """(per-row-set aggregate SQL, statistic, unit) that shows how ``column`` changed."""
    cc = tr.columns.get(column)
    ref = tr.refs.get(column)
    quality = cc.quality if cc is not None else None
    if quality == "null" or (cc is not None and isinstance(ref, NumericRef) and cc.split is not None
                             and cc.split.dim == len(ref.edges)):
        return rate_null(column), "null rate", "rate"
    if quality == "zero":
        return rate_zero(column), "zero rate", "rate"
    if isinstance(ref, NumericRef):
        if quality in ("constant", "stale"):
            return distinct_per_row(column), "distinct values per request", "rate"
        if quality == "out_of_range":
            return rate_outside(column, at_least(ref.lo), at_most(ref.hi)), "share outside the training range", "rate"
        # Exact: cheaper than a t-digest per window, while the values fit in memory.
        return exact_median(column, exact=exact), "median", ""
    if isinstance(ref, CategoricalRef):
        if cc is not None and cc.split is not None and cc.split.dim < len(ref.categories) and quality != "unseen":
            cat = ref.categories[cc.split.dim]
            return rate_value(column, cat), f"share of {cat!r}", "rate"
        return rate_unseen(column, ref.categories), "share of values unseen in training", "rate"
    return rate_null(column), "null rate", "rate"


def _metric_ratio(tr: Triage, metric: str) -> tuple[str, str, str, str] | None:
    """(label, numerator SQL, denominator SQL, unit) of a triage metric as a ratio of per-row sums."""
    m = tr.metrics.get(metric)
    cls = tr.classes[m.split.dim] if metric == "class_recall" and m is not None and m.split.dim < len(tr.classes) \
        else None
    return metric_ratio(metric, tr.case.log.column_names, positive=tr.positive, error=HAS_ERROR,
                        fallback=fallback_case(tr.fallback) if tr.fallback is not None else None, class_value=cls)


def _column_ratio(tr: Triage, column: str) -> tuple[str, str, str, str]:
    """A culprit column as a ratio of per-row sums: its mean, or the rate of its quality failure."""
    cc = tr.columns.get(column)
    quality = cc.quality if cc is not None else None
    numeric = isinstance(tr.refs.get(column), NumericRef) or (
        column in tr.case.log.column_names and pa.types.is_floating(tr.case.log.schema.field(column).type))
    kind, name, unit = ("null", "null rate", "rate") if quality == "null" or not numeric else \
        ("zero", "zero rate", "rate") if quality == "zero" else ("mean", "mean", "")
    return f"{column} {name}", *column_ratio(column, kind), unit


def _culprits(tr: Triage, top: Hypothesis) -> list[str]:
    """The columns whose distribution tells the story: the first culprit feature and input, else the score."""
    names = tr.case.log.column_names
    cols = [c for c in (*top.features[:1], *top.inputs[:1]) if c in names]
    if not cols and top.cause is Cause.SERVING_INFRASTRUCTURE and "latency_ms" in names:
        cols = ["latency_ms"]
    if not cols and "score" in names:
        cols = ["score"]
    return cols


def _split_time(tr: Triage, top: Hypothesis, culprits: Sequence[str]) -> datetime | None:
    """Before/after boundary: the onset, else the window where a gradual culprit changed (None: no split)."""
    if top.onset is not None:
        return top.onset
    for c in culprits:
        cc = tr.columns.get(c)
        if cc is not None and cc.split is not None and cc.changed:
            return tr.time_of(cc.onset_index)
    return None


def _scope(tr: Triage, top: Hypothesis) -> tuple[Triage, dict[str, str]]:
    """The triage whose series to draw: the affected segment's slice when the triage has one, else all traffic."""
    for seg in top.segments[:1]:
        for k, v in seg.items():
            st = tr.slices.get((k, v))
            if st is not None:
                return st, {k: v}
    return tr, {}


def _markers(tr: Triage, top: Hypothesis, primary: Series | None, split_index: int | None) -> list[Marker]:
    out: list[Marker] = []
    lo = tr.starts[0]
    hi = tr.starts[-1] + timedelta(seconds=tr.window)
    for e in tr.case.events:
        culprit = e.id in top.events
        if culprit or lo <= e.ts <= hi:
            detail = f"{e.kind} on {e.target or 'unknown target'}" + (f": {e.description}" if e.description else "")
            out.append(Marker(e.ts, MarkerKind.EVENT, e.id, detail, culprit=culprit))
    if top.onset is not None:
        out.append(Marker(top.onset, MarkerKind.ONSET, "onset", f"diagnosed onset ({top.cause.value})"))
    if primary is not None and split_index is not None and math.isfinite(primary.before) \
            and math.isfinite(primary.after) and primary.after != primary.before:
        v = np.asarray(primary.values, dtype=float)
        # A running mean (gaps ignored) first past half of the change, in its direction.
        ok = np.isfinite(v)
        k = np.ones(SMOOTH_WINDOWS)
        smooth = np.convolve(np.where(ok, v, 0.0), k, "same") / np.maximum(np.convolve(ok.astype(float), k, "same"),
                                                                          1.0)
        half = (1 - VISIBLE_SHARE) * primary.before + VISIBLE_SHARE * primary.after
        sign = 1.0 if primary.after > primary.before else -1.0
        past = np.flatnonzero((sign * (smooth - half) > 0) & ok & (np.arange(len(v)) >= split_index))
        if len(past):
            t = tr.starts[int(past[0])]
            out.append(Marker(t, MarkerKind.VISIBLE, f"{primary.name} visible",
                              f"first window where {primary.name} had made half of its change"))
    out.sort(key=lambda m: m.ts)
    return out


def _column_series(tr: Triage, columns: Sequence[str], where: str, split_index: int | None) -> list[Series]:
    """One query: each culprit column's statistic per window."""
    if not columns or tr.engine is None:
        return []
    stats = [_column_stat(tr, c) for c in columns]
    medians = sum(1 for sql, _, _ in stats if sql.startswith("median("))
    if medians * float(np.sum(tr.rows)) > _EXACT_MEDIAN_VALUES:
        stats = [_column_stat(tr, c, exact=False) for c in columns]
    t = tr.engine.query(per_window(int(tr.window), [sql for sql, _, _ in stats], where))
    first = int(tr.starts[0].timestamp()) // tr.window
    pos = t.column("w").to_numpy(zero_copy_only=False).astype(np.int64) - first
    n = t.column("n").to_numpy(zero_copy_only=False).astype(np.float64)
    keep = (pos >= 0) & (pos < len(tr.starts)) & (n >= MIN_WINDOW_ROWS)
    out = []
    for i, (c, (_, stat, unit)) in enumerate(zip(columns, stats, strict=True)):
        vals = np.full(len(tr.starts), np.nan)
        raw = t.column(f"s{i}").to_numpy(zero_copy_only=False)
        vals[pos[keep]] = np.asarray(raw, dtype=np.float64)[keep]
        b, a = _levels(vals, split_index)
        out.append(Series(c, stat, unit, tuple(float(x) for x in vals), b, a))
    return out


def _has_ref(tr: Triage, column: str, scope: Mapping[str, str]) -> bool:
    ref = tr.case.reference
    return ref is not None and column in ref.column_names and all(k in ref.column_names for k in scope)


#: About this many rows place the histogram bins (the 0.5 % and 99.5 % quantiles need no more).
_RANGE_SAMPLE = 100_000
#: ... when the table has more than this many times as many.
_SAMPLE_ABOVE = 4


def _ranges(tr: Triage, table: str, rows: int, columns: Sequence[str], where: str) -> dict[str, tuple[float, float]]:
    """The 0.5 % and 99.5 % quantiles of numeric ``columns`` in one query, on a sample of a large table.

    The sample takes whole vectors of rows (DuckDB's system sampling: no full scan); with a hundred
    thousand rows in some fifty blocks spread over the log, the quantiles that place the bins are close
    enough (values beyond them are counted in the end bins anyway).
    """
    if not columns or tr.engine is None:
        return {}
    sample = 100 * _RANGE_SAMPLE / rows if rows > _SAMPLE_ABOVE * _RANGE_SAMPLE else None
    row = tr.engine.query(range_quantiles(table, columns, where, RANGE_QUANTILES, sample)).to_pylist()[0]
    out = {}
    for i, c in enumerate(columns):
        q = row[f"q{i}"]
        if q is not None and q[0] is not None and math.isfinite(q[0]) and math.isfinite(q[1]):
            out[c] = (float(q[0]), float(q[1]))
    return out


def _distributions(tr: Triage, columns: Sequence[str], where: str, split: datetime | None,
                   scope: Mapping[str, str]) -> list[Distribution]:
    eng = tr.engine
    if eng is None or not columns:
        return []
    ref_cols = [c for c in columns if _has_ref(tr, c, scope)]
    if ref_cols:
        assert tr.case.reference is not None
        eng.register("ref", tr.case.reference)
    numeric = [c for c in columns if not isinstance(tr.refs.get(c), CategoricalRef)]
    log_rng = _ranges(tr, "log", tr.case.log.num_rows, numeric, where)
    ref_rows = tr.case.reference.num_rows if tr.case.reference is not None else 0
    ref_rng = _ranges(tr, "ref", ref_rows, [c for c in numeric if c in ref_cols], where)
    out = []
    for c in columns:
        spans = [r for r in (log_rng.get(c), ref_rng.get(c)) if r is not None]
        if c in numeric and not spans:
            continue
        lo = min(r[0] for r in spans) if spans else math.nan
        hi = max(r[1] for r in spans) if spans else math.nan
        out.append(_distribution(tr, c, where, split, scope, (lo, hi), c in ref_cols))
    return out


#: A histogram whose range is a single value is widened by this share of it (or by 1 around 0).
_FLAT_SPAN = 0.01


def _bins(tr: Triage, column: str, span: tuple[float, float]) -> tuple[str, list[str], list[float], bool]:
    """(bucket SQL, bin names, numeric edges, log scale) of a column's histogram."""
    ref_info = tr.refs.get(column)
    if isinstance(ref_info, CategoricalRef):
        cats = list(ref_info.categories[:MAX_CATEGORIES])
        return categorical_bucket(column, cats, "(other)"), [*cats, "(other)"], [], False
    lo, hi = span
    if hi <= lo:
        hi = lo + (abs(lo) * _FLAT_SPAN or 1.0)
    log_scale = lo > 0 and hi / lo >= LOG_SCALE_RATIO
    if log_scale:
        grid = np.geomspace(lo, hi, BINS + 1)
        step = (math.log(hi) - math.log(lo)) / BINS
    else:
        grid = np.linspace(lo, hi, BINS + 1)
        step = (hi - lo) / BINS
    edges = [float(e) for e in grid]
    bins = [f"{fmt_num(edges[k])} to {fmt_num(edges[k + 1])}" for k in range(BINS)]
    return numeric_bucket(column, lo, step, BINS, log_scale=log_scale), bins, edges, log_scale


def _counts(tr: Triage, table: str, side: str, bucket: str, where: str, bins: Sequence[str]) -> dict[int, np.ndarray]:
    """Rows per bin (the last slot counts nulls) on each side (0 before the split, 1 after)."""
    assert tr.engine is not None
    index = {v: k for k, v in enumerate(bins)}
    out: dict[int, np.ndarray] = {}
    for row in tr.engine.query(histogram_counts(table, side, bucket, where)).to_pylist():
        vec = out.setdefault(int(row["a"]), np.zeros(len(bins) + 1))
        k = len(bins) if row["b"] is None else (index[row["b"]] if isinstance(row["b"], str) else int(row["b"]))
        vec[k] += row["n"]
    return out


def _shares(vec: np.ndarray | None) -> tuple[tuple[float, ...], float, int]:
    """(share of each bin among non-null values, null share, rows) of a count vector."""
    if vec is None or vec.sum() == 0:
        return (), math.nan, 0
    body = vec[:-1]
    tot = body.sum()
    return (tuple(float(s) for s in body / tot) if tot else tuple(0.0 for _ in body),
            float(vec[-1] / vec.sum()), int(vec.sum()))


def _distribution(tr: Triage, column: str, where: str, split: datetime | None, scope: Mapping[str, str],
                  span: tuple[float, float], has_ref: bool) -> Distribution:
    bucket, bins, edges, log_scale = _bins(tr, column, span)
    log_counts = _counts(tr, "log", after_flag(split), bucket, where, bins)
    ref_counts = _counts(tr, "ref", "1", bucket, where, bins).get(1) if has_ref else None
    before, nb, cb = _shares(log_counts.get(0))
    after, na, ca = _shares(log_counts.get(1))
    refs, nr, cr = _shares(ref_counts)
    return Distribution(column, tuple(bins), tuple(edges), before, after, refs, nb, na, nr, cb, ca, cr,
                        split=split, log_scale=log_scale, scope=dict(scope))


def _segment_columns(tr: Triage, top: Hypothesis) -> list[tuple[str, list[str]]]:
    """Up to two segment columns with the values to draw: those the hypothesis names first."""
    out: dict[str, list[str]] = {}
    named = [k for s in top.segments for k in s]
    others = [s for s in tr.case.schema.segments if s not in ("model", "model_version")]
    for col in dict.fromkeys([*named, *others]):
        if len(out) >= 2:
            break
        if col == "model_version":
            values = list(tr.versions)
        else:
            r = tr.refs.get(col)
            many = col not in named and len(r.categories if isinstance(r, CategoricalRef) else ()) \
                > MAX_UNNAMED_SEGMENT_VALUES
            if not isinstance(r, CategoricalRef) or not r.categories or many:
                continue
            values = list(r.categories)
        values = values[:MAX_SEGMENT_VALUES]
        for s in top.segments:
            if col in s and s[col] not in values:
                values.append(s[col])
        out[col] = values
    return list(out.items())


def _segments(tr: Triage, top: Hypothesis, ratio: tuple[str, str, str, str], split: datetime | None
              ) -> list[SegmentChart]:
    """The metric per value of up to two segment columns, before and after the split, from one GROUP BY."""
    cols = _segment_columns(tr, top)
    if not cols or tr.engine is None:
        return []
    label, num, den, unit = ratio
    rows = tr.engine.query(segment_sums(after_flag(split), [c for c, _ in cols], num, den)).to_pylist()
    affected = {(k, v) for s in top.segments for k, v in s.items()}
    charts = []
    for i, (c, values) in enumerate(cols):
        shown = set(values)
        cells: dict[tuple[str, int], list[float]] = {}
        for r in rows:
            g = r[f"g{i}"]
            key = "(null)" if g is None else g if g in shown else "(other)"
            cell = cells.setdefault((key, int(r["a"])), [0.0, 0.0, 0.0])
            cell[0] += r["n"]
            cell[1] += r["s"] or 0.0
            cell[2] += r["d"] or 0.0
        total = sum(v[0] for (_, side), v in cells.items() if side == 1)
        bars = []
        for value in [*values, "(other)", "(null)"]:
            b = cells.get((value, 0), [0.0, 0.0, 0.0])
            af = cells.get((value, 1), [0.0, 0.0, 0.0])
            if b[0] + af[0] == 0:
                continue
            bars.append(SegmentBar(value, af[0] / total if total else 0.0, b[1] / b[2] if b[2] else math.nan,
                                   af[1] / af[2] if af[2] else math.nan, int(b[0]), int(af[0]),
                                   (c, value) in affected))
        if bars:
            charts.append(SegmentChart(c, label, unit, tuple(bars)))
    return charts


def incident_charts(tr: Triage, hypotheses: Sequence[Hypothesis], symptoms: Sequence[Symptom]) -> IncidentCharts | None:
    """The chart data of the top hypothesis (None when there is none).

    Parameters
    ----------
    tr
        The whole-traffic triage (its engine has the log registered as ``log``).
    hypotheses
        The ranked hypotheses; the charts describe the first.
    symptoms
        The metrics that changed, most material first; the first two are drawn over time.
    """
    if not hypotheses or tr.engine is None or not tr.starts:
        return None
    top = hypotheses[0]
    ctr, scope = _scope(tr, top)
    where = scope_condition(scope)
    culprits = _culprits(tr, top)
    split = _split_time(tr, top, culprits)
    split_index = _index_of(tr, split)

    names = [s.metric for s in symptoms if isinstance(ctr.series.get(s.metric), np.ndarray)
             and ctr.series[s.metric].ndim == 1]
    if not names:
        names = [m for m in _FALLBACK_METRICS if m in ctr.series and ctr.series[m].ndim == 1][:1]
    metric_series = []
    for name in names[:2]:
        v = np.asarray(ctr.series[name], dtype=np.float64)
        mc = ctr.metrics.get(name)
        b, a = (mc.split.before, mc.split.after) if mc is not None and split is not None else _levels(v, split_index)
        unit = mc.unit if mc is not None else ("rate" if name.endswith("rate") else "")
        metric_series.append(Series(name, "rate" if unit == "rate" else "value", unit, tuple(float(x) for x in v),
                                    b, a))
    # Columns the triage watched get their own panel (a latency culprit is already drawn as a metric).
    series = metric_series + _column_series(tr, [c for c in culprits if c in tr.columns], where, split_index)
    primary = metric_series[0] if metric_series else None
    timeline = Timeline(tuple(tr.starts), tr.window, tuple(series), tuple(_markers(tr, top, primary, split_index)),
                        dict(scope))
    dists = tuple(_distributions(tr, culprits, where, split, scope))
    ratio = next((r for m in names if (r := _metric_ratio(tr, m)) is not None), None)
    if ratio is None and culprits:
        ratio = _column_ratio(tr, culprits[0])
    segments = _segments(tr, top, ratio, split) if ratio is not None else []

    excess, excess_metric = math.nan, ""
    if primary is not None and primary.name in _COUNTED and split_index is not None \
            and math.isfinite(primary.before):
        v = np.asarray(primary.values, dtype=np.float64)[split_index:]
        rows = np.asarray(ctr.rows, dtype=np.float64)[split_index:]
        ok = np.isfinite(v)
        excess, excess_metric = float(np.sum((v[ok] - primary.before) * rows[ok])), primary.name
    return IncidentCharts(timeline, dists, tuple(segments), excess, excess_metric)
