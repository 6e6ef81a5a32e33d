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

from mlsleuth.diagnosis._analysis import HAS_ERROR, Triage, _literal, fallback_case
from mlsleuth.diagnosis._data import ts_sql
from mlsleuth.diagnosis._locate import scope_sql
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
from mlsleuth.monitors._windows import CategoricalRef, NumericRef, quote
from mlsleuth.schema._tables import at_least, at_most

__all__ = ["incident_charts"]

#: Bins of a numeric distribution chart.
BINS = 30
#: Values of a segment column drawn one by one; the rest are lumped as ``(other)``.
MAX_SEGMENT_VALUES = 8
#: Metrics whose rate is over all requests: their excess since the onset is a count of requests.
_COUNTED = {"positive_rate": "positive predictions", "error_rate": "errors", "fallback_rate": "fallback scores"}
_FALLBACK_METRICS = ("positive_rate", "mean_prediction", "error_rate", "latency_p99_ms")


def _and(*conds: str) -> str:
    parts = [c for c in conds if c]
    return f" WHERE {' AND '.join(parts)}" if parts else ""


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
    q = quote(column)
    x = f"CAST({q} AS DOUBLE)"
    cc = tr.columns.get(column)
    ref = tr.refs.get(column)
    quality = cc.quality if cc is not None else None
    if quality == "null" or (cc is not None and isinstance(ref, NumericRef) and cc.split is not None
                             and cc.split.dim == len(ref.edges)):
        return f"avg(CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END)", "null rate", "rate"
    if quality == "zero":
        return f"avg(CASE WHEN {x} = 0 THEN 1.0 WHEN {q} IS NULL THEN NULL ELSE 0.0 END)", "zero rate", "rate"
    if isinstance(ref, NumericRef):
        if quality in ("constant", "stale"):
            return (f"CAST(approx_count_distinct({x}) AS DOUBLE) / greatest(count({x}), 1)",
                    "distinct values per request", "rate")
        if quality == "out_of_range":
            return (f"avg(CASE WHEN {x} < {at_least(ref.lo)!r} OR {x} > {at_most(ref.hi)!r} THEN 1.0 "
                    f"WHEN {q} IS NULL THEN NULL "
                    "ELSE 0.0 END)", "share outside the training range", "rate")
        # Exact: cheaper than a t-digest per window, while the values fit in memory.
        return (f"median({x})" if exact else f"approx_quantile({x}, 0.5)"), "median", ""
    if isinstance(ref, CategoricalRef):
        v = f"CAST({q} AS VARCHAR)"
        cats = ", ".join(_literal(c) for c in ref.categories) or "''"
        if cc is not None and cc.split is not None and cc.split.dim < len(ref.categories) and quality != "unseen":
            cat = ref.categories[cc.split.dim]
            return (f"avg(CASE WHEN {v} = {_literal(cat)} THEN 1.0 ELSE 0.0 END)", f"share of {cat!r}", "rate")
        return (f"avg(CASE WHEN {q} IS NOT NULL AND {v} NOT IN ({cats}) THEN 1.0 ELSE 0.0 END)",
                "share of values unseen in training", "rate")
    return f"avg(CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END)", "null rate", "rate"


def _metric_ratio(tr: Triage, metric: str) -> tuple[str, str, str, str] | None:
    """(label, numerator SQL, denominator SQL, unit) of a triage metric as a ratio of per-row sums.

    Ratios of sums add up across groups, so one small GROUP BY gives every segment value and the
    lumped rest. Quantile metrics are drawn by their mean (named so in the label).
    """
    cols = tr.case.log.column_names
    p = _literal(tr.positive) if tr.positive is not None else None
    lab = "label IS NOT NULL AND prediction IS NOT NULL"
    one = "1.0"
    if metric == "positive_rate" and p is not None:
        return metric, f"CASE WHEN prediction = {p} THEN 1.0 ELSE 0.0 END", \
            "CASE WHEN prediction IS NULL THEN 0.0 ELSE 1.0 END", "rate"
    if metric == "false_positive_rate" and p is not None:
        return (metric, f"CASE WHEN {lab} AND label <> {p} AND prediction = {p} THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} AND label <> {p} THEN 1.0 ELSE 0.0 END", "rate")
    if metric == "recall" and p is not None:
        return (metric, f"CASE WHEN {lab} AND label = {p} AND prediction = {p} THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} AND label = {p} THEN 1.0 ELSE 0.0 END", "rate")
    if metric == "precision" and p is not None:
        return (metric, f"CASE WHEN {lab} AND label = {p} AND prediction = {p} THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} AND prediction = {p} THEN 1.0 ELSE 0.0 END", "rate")
    if metric == "accuracy" and "label" in cols and "prediction" in cols:
        return (metric, f"CASE WHEN {lab} AND label = prediction THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} THEN 1.0 ELSE 0.0 END", "rate")
    if metric == "error_rate" and "error" in cols:
        return metric, f"CASE WHEN {HAS_ERROR} THEN 1.0 ELSE 0.0 END", one, \
            "rate"
    if metric == "fallback_rate" and tr.fallback is not None:
        return metric, fallback_case(tr.fallback), one, "rate"
    if metric.startswith("latency") and "latency_ms" in cols:
        return "latency_mean_ms", "coalesce(latency_ms, 0.0)", "CASE WHEN latency_ms IS NULL THEN 0.0 ELSE 1.0 END", \
            "ms"
    if metric == "mean_prediction" and "prediction" in cols:
        return (metric, "coalesce(CAST(prediction AS DOUBLE), 0.0)",
                "CASE WHEN prediction IS NULL THEN 0.0 ELSE 1.0 END", "")
    if metric == "mae" and "label" in cols and "prediction" in cols:
        return (metric, f"CASE WHEN {lab} THEN abs(CAST(label AS DOUBLE) - CAST(prediction AS DOUBLE)) ELSE 0.0 END",
                f"CASE WHEN {lab} THEN 1.0 ELSE 0.0 END", "")
    if metric == "bias" and "label" in cols and "prediction" in cols:
        return (metric, f"CASE WHEN {lab} THEN CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE) ELSE 0.0 END",
                f"CASE WHEN {lab} THEN 1.0 ELSE 0.0 END", "")
    if metric == "class_recall" and (m := tr.metrics.get(metric)) is not None and m.split.dim < len(tr.classes):
        v = _literal(tr.classes[m.split.dim])
        hit = f"CAST(label AS VARCHAR) = {v}"
        return (f"recall of {tr.classes[m.split.dim]}",
                f"CASE WHEN {lab} AND {hit} AND CAST(prediction AS VARCHAR) = {v} THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} AND {hit} THEN 1.0 ELSE 0.0 END", "rate")
    return None


def _column_ratio(tr: Triage, column: str) -> tuple[str, str, str, str]:
    """A culprit column as a ratio of per-row sums: its mean, or the rate of its quality failure."""
    q = quote(column)
    x = f"CAST({q} AS DOUBLE)"
    cc = tr.columns.get(column)
    quality = cc.quality if cc is not None else None
    numeric = isinstance(tr.refs.get(column), NumericRef) or (
        column in tr.case.log.column_names and pa.types.is_floating(tr.case.log.schema.field(column).type))
    if quality == "null" or not numeric:
        return f"{column} null rate", f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END", "1.0", "rate"
    if quality == "zero":
        return f"{column} zero rate", f"CASE WHEN {x} = 0 THEN 1.0 ELSE 0.0 END", "1.0", "rate"
    return f"{column} mean", f"coalesce({x}, 0.0)", f"CASE WHEN {q} IS NULL THEN 0.0 ELSE 1.0 END", ""


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
        # A 3-window running mean (gaps ignored) first past half of the change, in its direction.
        ok = np.isfinite(v)
        k = np.ones(3)
        smooth = np.convolve(np.where(ok, v, 0.0), k, "same") / np.maximum(np.convolve(ok.astype(float), k, "same"),
                                                                          1.0)
        half = 0.5 * (primary.before + primary.after)
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
    w = f"CAST(floor(epoch(ts) / {int(tr.window)}) AS BIGINT)"
    parts = [f"{w} AS w", "count(*) AS n"] + [f"{sql} AS s{i}" for i, (sql, _, _) in enumerate(stats)]
    t = tr.engine.query(f"SELECT {', '.join(parts)} FROM log{_and(where)} GROUP BY 1")
    first = int(tr.starts[0].timestamp()) // tr.window
    pos = t.column("w").to_numpy(zero_copy_only=False).astype(np.int64) - first
    n = t.column("n").to_numpy(zero_copy_only=False).astype(np.float64)
    keep = (pos >= 0) & (pos < len(tr.starts)) & (n >= 20)  # a handful of requests says little
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


def _ranges(tr: Triage, table: str, rows: int, columns: Sequence[str], where: str) -> dict[str, tuple[float, float]]:
    """The 0.5 % and 99.5 % quantiles of numeric ``columns`` in one query, on a sample of a large table.

    The sample takes whole vectors of rows (DuckDB's system sampling: no full scan); with a hundred
    thousand rows in some fifty blocks spread over the log, the quantiles that place the bins are close
    enough (values beyond them are counted in the end bins anyway).
    """
    if not columns or tr.engine is None:
        return {}
    sel = ", ".join(f"CAST({quote(c)} AS DOUBLE) AS x{i}" for i, c in enumerate(columns))
    sample = f" USING SAMPLE {100 * _RANGE_SAMPLE / rows:.4f}% (system)" if rows > 4 * _RANGE_SAMPLE else ""
    src = f"(SELECT {sel} FROM {table}{_and(where)}{sample}) AS s"
    parts = ", ".join(f"quantile_cont(x{i}, [0.005, 0.995]) AS q{i}" for i in range(len(columns)))
    row = tr.engine.query(f"SELECT {parts} FROM {src}").to_pylist()[0]
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


def _distribution(tr: Triage, column: str, where: str, split: datetime | None, scope: Mapping[str, str],
                  span: tuple[float, float], has_ref: bool) -> Distribution:
    eng = tr.engine
    assert eng is not None
    rwhere = where if has_ref else ""
    q = quote(column)
    a = f"CASE WHEN ts >= {ts_sql(split)} THEN 1 ELSE 0 END" if split is not None else "1"
    ref_info = tr.refs.get(column)
    if isinstance(ref_info, CategoricalRef):
        cats = list(ref_info.categories[:MAX_SEGMENT_VALUES + 2])
        inlist = ", ".join(_literal(c) for c in cats) or "''"
        v = f"CAST({q} AS VARCHAR)"
        b = f"CASE WHEN {q} IS NULL THEN NULL WHEN {v} IN ({inlist}) THEN {v} ELSE '(other)' END"
        bins = [*cats, "(other)"]
        edges: list[float] = []
        log_scale = False
    else:
        x = f"CAST({q} AS DOUBLE)"
        lo, hi = span
        if hi <= lo:
            hi = lo + (abs(lo) * 0.01 or 1.0)
        log_scale = lo > 0 and hi / lo >= 30
        if log_scale:
            grid = np.geomspace(lo, hi, BINS + 1)
            f, flo, step = f"ln(greatest({x}, {lo!r}))", math.log(lo), (math.log(hi) - math.log(lo)) / BINS
        else:
            grid = np.linspace(lo, hi, BINS + 1)
            f, flo, step = x, lo, (hi - lo) / BINS
        edges = [float(e) for e in grid]
        b = (f"CASE WHEN {q} IS NULL THEN NULL ELSE least(greatest(CAST(floor(({f} - {flo!r}) / {step!r}) AS BIGINT), "
             f"0), {BINS - 1}) END")
        bins = [f"{fmt_num(edges[k])} to {fmt_num(edges[k + 1])}" for k in range(BINS)]
    index = {v: k for k, v in enumerate(bins)}

    def counts(table: str, side: str, cond: str) -> dict[int, np.ndarray]:
        rows = eng.query(f"SELECT {side} AS a, {b} AS b, count(*) AS n FROM {table}{_and(cond)} GROUP BY 1, 2"
                         ).to_pylist()
        out: dict[int, np.ndarray] = {}
        for row in rows:
            vec = out.setdefault(int(row["a"]), np.zeros(len(bins) + 1))  # the last slot counts nulls
            k = len(bins) if row["b"] is None else (index[row["b"]] if isinstance(row["b"], str) else int(row["b"]))
            vec[k] += row["n"]
        return out

    log_counts = counts("log", a, where)
    ref_counts = counts("ref", "1", rwhere).get(1) if has_ref else None

    def shares(vec: np.ndarray | None) -> tuple[tuple[float, ...], float, int]:
        if vec is None or vec.sum() == 0:
            return (), math.nan, 0
        body = vec[:-1]
        tot = body.sum()
        return (tuple(float(s) for s in body / tot) if tot else tuple(0.0 for _ in body),
                float(vec[-1] / vec.sum()), int(vec.sum()))

    before, nb, cb = shares(log_counts.get(0))
    after, na, ca = shares(log_counts.get(1))
    refs, nr, cr = shares(ref_counts)
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
            if not isinstance(r, CategoricalRef) or not r.categories or (col not in named and len(r.categories) > 12):
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
    a = f"CASE WHEN ts >= {ts_sql(split)} THEN 1 ELSE 0 END" if split is not None else "1"
    groups = ", ".join(f"CAST({quote(c)} AS VARCHAR) AS g{i}" for i, (c, _) in enumerate(cols))
    rows = tr.engine.query(f"SELECT {a} AS a, {groups}, count(*) AS n, sum(CAST(({num}) AS DOUBLE)) AS s, "
                           f"sum(CAST(({den}) AS DOUBLE)) AS d "
                           "FROM log GROUP BY ALL").to_pylist()
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
    where = scope_sql(scope)
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
