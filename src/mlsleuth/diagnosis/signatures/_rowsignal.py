"""Which per-row signal times and locates a candidate: the column or metric it was found by, as a query builder."""

from __future__ import annotations

from mlsleuth.diagnosis._analysis import HAS_ERROR, ColumnChange, Triage, _literal, fallback_case
from mlsleuth.monitors._windows import CategoricalRef, NumericRef
from mlsleuth.schema._tables import at_least, at_most
from mlsleuth.store import _sql_hypotheses as sql

__all__ = ["column_signal", "metric_signal"]


def column_signal(tr: Triage, cc: ColumnChange) -> str:
    """1.0 on a row that shows the column's change: its failure value, or the reference bin its split found."""
    ref = tr.refs.get(cc.column)
    if cc.quality == "decoupled":
        return cc.decoupled_sql
    if cc.quality == "null":
        return sql.is_null(cc.column)
    if cc.quality == "zero":
        return sql.is_zero(cc.column)
    if isinstance(ref, NumericRef) and cc.split is not None:
        if cc.split.dim < len(ref.edges):
            return sql.value_at_most(cc.column, at_most(ref.edges[cc.split.dim]))
        if cc.split.dim == len(ref.edges):
            return sql.is_null(cc.column)
        if cc.split.dim == len(ref.edges) + 1:
            return sql.is_zero(cc.column)
        return sql.outside_range(cc.column, at_least(ref.lo), at_most(ref.hi))
    if isinstance(ref, CategoricalRef) and cc.split is not None:
        if cc.split.dim < len(ref.categories):
            return sql.in_values(cc.column, _literal(ref.categories[cc.split.dim]))
        return sql.not_in_values(cc.column, [_literal(c) for c in ref.categories])
    return sql.is_null(cc.column)


def _quality_signal(tr: Triage, metric: str) -> str | None:
    # Quality signals are NULL outside the metric's denominator (unlabelled rows, the other class),
    # so that segments and onsets are judged on the rows the metric counts.
    lit = _literal(tr.positive)
    if metric == "false_positive_rate":
        return sql.false_positive(lit)
    if metric == "recall":
        return sql.recall_miss(lit)
    if metric == "precision":
        return sql.precision_miss(lit)
    if metric == "accuracy":
        return sql.accuracy_miss()
    if metric == "class_recall" and tr.classes:
        return sql.class_recall_miss(_literal(tr.classes[min(tr.metrics[metric].split.dim, len(tr.classes) - 1)]))
    if metric in ("mae", "bias"):
        return sql.label_error(absolute=metric == "mae")
    return None


def metric_signal(tr: Triage, metric: str) -> str | None:
    """1.0 on a row that shows the metric's change (NULL on rows the metric does not count)."""
    if metric == "positive_rate":
        return sql.predicted(_literal(tr.positive))
    if metric == "class_mix" and tr.classes:
        return sql.predicted_class(_literal(tr.classes[min(tr.metrics[metric].split.dim, len(tr.classes) - 1)]))
    if metric == "error_rate":
        return sql.flag(HAS_ERROR)
    if metric.startswith("latency"):
        m = tr.metrics[metric]
        th = tr.th
        up = m.split.after > m.split.before
        return sql.latency_above(m.split.before * (th.slow_latency_ratio if up else th.fast_latency_ratio))
    if metric == "fallback_rate" and tr.fallback is not None:
        return fallback_case(tr.fallback)
    if metric == "score_distribution":
        sc = tr.columns.get("score")
        return column_signal(tr, sc) if sc is not None else None
    return _quality_signal(tr, metric)
