"""Query builders for the diagnosis's hypotheses: per-row signals and the few checks a signature runs.

The diagnosis decides in Python; every SQL text it runs on the ``log`` table is written here, so that
names and values reach SQL only through :func:`~mlsleuth.store._engine.quote_ident` and
:func:`~mlsleuth.store._engine.quote_literal`. A *signal* is a per-row expression: 1.0 on a row that
shows the change, 0.0 on one that does not, NULL on a row the metric does not count (an unlabelled
row for a quality metric). Arguments named ``*_lit`` are SQL literals already quoted by the caller
(a class label may be a text, a number or a boolean); ``where`` arguments are conditions built from
quoted parts (``""`` for none).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mlsleuth.store._core import _ts_literal
from mlsleuth.store._engine import quote_ident, quote_literal

__all__ = [
    "accuracy_miss",
    "calibration_counts",
    "canary_share",
    "class_outcome_counts",
    "class_recall_miss",
    "example_rows_after",
    "example_rows_before",
    "false_positive",
    "flag",
    "in_values",
    "is_null",
    "is_zero",
    "label_error",
    "labelled_error",
    "latency_above",
    "not_in_values",
    "outside_range",
    "precision_miss",
    "predicted",
    "predicted_class",
    "recall_miss",
    "regression_outcomes",
    "served_by",
    "threshold_brackets",
    "value_at_most",
    "version_contrast",
]

_ERR = "(CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE))"


def flag(condition: str) -> str:
    """1.0 on a row where ``condition`` holds, else 0.0."""
    return f"CASE WHEN {condition} THEN 1.0 ELSE 0.0 END"


def _and(*conds: str) -> str:
    return " AND ".join(c for c in conds if c)


def is_null(column: str) -> str:
    """Signal: the column is NULL."""
    return flag(f"{quote_ident(column)} IS NULL")


def is_zero(column: str) -> str:
    """Signal: the column is zero."""
    return flag(f"CAST({quote_ident(column)} AS DOUBLE) = 0")


def value_at_most(column: str, bound: float) -> str:
    """Signal: the column is at or below ``bound`` (a decile edge with its slack)."""
    return flag(f"CAST({quote_ident(column)} AS DOUBLE) <= {float(bound)!r}")


def outside_range(column: str, lo: float, hi: float) -> str:
    """Signal: the column lies outside ``[lo, hi]`` (the training range with its slack)."""
    q = quote_ident(column)
    return flag(f"CAST({q} AS DOUBLE) < {float(lo)!r} OR CAST({q} AS DOUBLE) > {float(hi)!r}")


def in_values(column: str, value_lit: str) -> str:
    """Signal: the column, as text, equals the literal ``value_lit``."""
    return flag(f"CAST({quote_ident(column)} AS VARCHAR) = {value_lit}")


def not_in_values(column: str, values_lit: Sequence[str]) -> str:
    """Signal: the column holds a value outside the literals ``values_lit`` (an unseen category)."""
    q = quote_ident(column)
    cats = ", ".join(values_lit) or "''"
    return flag(f"{q} IS NOT NULL AND CAST({q} AS VARCHAR) NOT IN ({cats})")


def predicted(positive_lit: str) -> str:
    """Signal: the model decided the positive class."""
    return flag(f"prediction = {positive_lit}")


def predicted_class(class_lit: str) -> str:
    """Signal: the model predicted the class ``class_lit``."""
    return flag(f"CAST(prediction AS VARCHAR) = {class_lit}")


def served_by(version: str) -> str:
    """Signal: the request was served by model version ``version``."""
    return flag(f"model_version = {quote_literal(version)}")


def latency_above(ms: float) -> str:
    """Signal: the request took longer than ``ms`` milliseconds."""
    return flag(f"latency_ms > {float(ms)!r}")


def false_positive(positive_lit: str) -> str:
    """Signal over labelled negatives: flagged positive."""
    return (f"CASE WHEN label IS NOT NULL AND label <> {positive_lit} THEN "
            f"(CASE WHEN prediction = {positive_lit} THEN 1.0 ELSE 0.0 END) END")


def recall_miss(positive_lit: str) -> str:
    """Signal over labelled positives: missed."""
    return f"CASE WHEN label = {positive_lit} THEN (CASE WHEN prediction = {positive_lit} THEN 0.0 ELSE 1.0 END) END"


def precision_miss(positive_lit: str) -> str:
    """Signal over labelled rows flagged positive: wrongly."""
    return (f"CASE WHEN label IS NOT NULL AND prediction = {positive_lit} THEN "
            f"(CASE WHEN label = {positive_lit} THEN 0.0 ELSE 1.0 END) END")


def accuracy_miss() -> str:
    """Signal over labelled rows: the prediction is not the label."""
    return "CASE WHEN label IS NOT NULL THEN (CASE WHEN label <> prediction THEN 1.0 ELSE 0.0 END) END"


def class_recall_miss(class_lit: str) -> str:
    """Signal over rows labelled ``class_lit``: predicted as another class."""
    return (f"CASE WHEN CAST(label AS VARCHAR) = {class_lit} THEN "
            f"(CASE WHEN CAST(prediction AS VARCHAR) = {class_lit} THEN 0.0 ELSE 1.0 END) END")


def label_error(*, absolute: bool) -> str:
    """A regressor's per-row error (prediction - label), or its absolute value."""
    return f"abs({_ERR})" if absolute else _ERR


def calibration_counts(at: datetime, positive_lit: str, where: str) -> str:
    """Labelled scored rows before/after ``at``: count, expected positives (sum of scores), observed positives."""
    cond = _and("label IS NOT NULL AND score IS NOT NULL", where)
    return (f"SELECT CASE WHEN ts >= {_ts_literal(at)} THEN 1 ELSE 0 END AS after, count(*) AS n, "
            f"sum(score) AS e, sum(CASE WHEN label = {positive_lit} THEN 1 ELSE 0 END) AS o FROM log "
            f"WHERE {cond} GROUP BY 1")


def _outcome_cond(where: str) -> str:
    return _and("label IS NOT NULL AND prediction IS NOT NULL", where)


def regression_outcomes(at: datetime, where: str) -> str:
    """Labelled rows before/after ``at``: count, mean error, mean and variance of the true value."""
    y = "CAST(label AS DOUBLE)"
    return (f"SELECT CASE WHEN ts >= {_ts_literal(at)} THEN 1 ELSE 0 END AS after, count(*) AS n, avg({_ERR}) AS e, "
            f"avg({y}) AS y, var_samp({y}) AS vy FROM log WHERE {_outcome_cond(where)} GROUP BY 1")


def class_outcome_counts(at: datetime, where: str) -> str:
    """Labelled rows before/after ``at`` per predicted class (``lab`` 0) and per labelled class (``lab`` 1)."""
    after = f"CASE WHEN ts >= {_ts_literal(at)} THEN 1 ELSE 0 END"
    cond = _outcome_cond(where)
    return (f"SELECT {after} AS after, CAST(prediction AS VARCHAR) AS c, count(*) AS n, 0 AS lab FROM log "
            f"WHERE {cond} GROUP BY 1, 2 UNION ALL SELECT {after} AS after, CAST(label AS VARCHAR) AS c, "
            f"count(*) AS n, 1 AS lab FROM log WHERE {cond} GROUP BY 1, 2")


def labelled_error(table: str, *, regression: bool, where: str) -> str:
    """(labelled rows ``n``, MAE or error rate ``a``, bias ``b``) of ``table``'s predictions against its labels."""
    cond = _outcome_cond(where)
    t = quote_ident(table)
    if regression:
        return f"SELECT count(*) AS n, avg(abs({_ERR})) AS a, avg({_ERR}) AS b FROM {t} WHERE {cond}"
    return (f"SELECT count(*) AS n, avg(CASE WHEN CAST(label AS VARCHAR) = CAST(prediction AS VARCHAR) "
            f"THEN 0.0 ELSE 1.0 END) AS a, 0.0 AS b FROM {t} WHERE {cond}")


def version_contrast(new: str, old: str, at: datetime, where: str, *, positive_lit: str | None,
                     score_mean: bool, score_median: float | None) -> str:
    """Two model versions on the same hours from ``at``: rows, positive rate, mean score, share below a median."""
    cond = _and(f"ts >= {_ts_literal(at)} AND model_version IN ({quote_literal(new)}, {quote_literal(old)})", where)
    pos = f"avg(CASE WHEN prediction = {positive_lit} THEN 1.0 ELSE 0.0 END)" if positive_lit is not None else "NULL"
    score = "avg(score)" if score_mean else "NULL"
    lo = (f"avg(CASE WHEN score <= {float(score_median)!r} THEN 1.0 ELSE 0.0 END)" if score_median is not None
          else "NULL")
    return (f"SELECT model_version AS v, count(*) AS n, {pos} AS pos, {score} AS s, {lo} AS lo FROM log "
            f"WHERE {cond} GROUP BY 1")


def threshold_brackets(new: str, old: str, positive_lit: str, where: str) -> str:
    """Per version: rows, the lowest score flagged positive and the highest not flagged."""
    cond = _and(f"model_version IN ({quote_literal(new)}, {quote_literal(old)})", where)
    return (f"SELECT model_version AS v, count(*) AS n, min(CASE WHEN prediction = {positive_lit} THEN score END) "
            f"AS lo, max(CASE WHEN prediction <> {positive_lit} THEN score END) AS hi FROM log "
            f"WHERE {cond} GROUP BY 1")


def canary_share(version: str, since: datetime, where: str) -> str:
    """The share of rows from ``since`` that ``version`` served, within ``where``."""
    return (f"SELECT avg(CASE WHEN model_version = {quote_literal(version)} THEN 1.0 ELSE 0.0 END) AS s FROM log "
            f"WHERE {_and(f'ts >= {_ts_literal(since)}', where)}")


def _select(columns: Sequence[str]) -> str:
    return ", ".join(["ts"] + [quote_ident(c) for c in dict.fromkeys(columns)])


def example_rows_after(columns: Sequence[str], onset: datetime, signal: str, *, rising: bool, where: str,
                       limit: int = 3) -> str:
    """The first rows from ``onset`` that show ``signal`` (or no longer show it, when it fell)."""
    cond = f" AND {where}" if where else ""
    op = "> 0" if rising else "= 0"
    return (f"SELECT {_select(columns)} FROM log WHERE ts >= {_ts_literal(onset)} AND ({signal}) {op}{cond} "
            f"ORDER BY ts LIMIT {int(limit)}")


def example_rows_before(columns: Sequence[str], onset: datetime, *, where: str, limit: int = 2) -> str:
    """The last rows before ``onset``: typical requests."""
    cond = f" AND {where}" if where else ""
    return (f"SELECT {_select(columns)} FROM log WHERE ts < {_ts_literal(onset)}{cond} "
            f"ORDER BY ts DESC LIMIT {int(limit)}")
