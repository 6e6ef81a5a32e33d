"""The SQL of the diagnosis's triage scans, as small builders that return query or expression text.

The triage (``mlsleuth.diagnosis._analysis``) issues no SQL of its own: every query it sends the
engine, and every aggregate it adds to the per-window scan, is built here. Names reach the text only
through :func:`~mlsleuth.store._engine.quote_ident` and values only through :func:`sql_value` (text
through :func:`~mlsleuth.store._engine.quote_literal`), whatever data they came from. The table read
is ``log`` (the prediction log, with ``label`` joined when labels were given) or ``ref`` (the
reference), as the engine binds them. Written in DuckDB's dialect, in functions that sqlglot carries
to Spark SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mlsleuth.store._engine import quote_ident, quote_literal

__all__ = [
    "HAS_ERROR",
    "case_at_or_below",
    "case_in_categories",
    "case_is_null",
    "case_is_zero",
    "classes_sql",
    "confusion_aggregates",
    "correlation",
    "correlations_sql",
    "coupling_key",
    "coupling_sql",
    "decoupled_case",
    "decoupled_known",
    "distinct_predictions_sql",
    "fallback_case",
    "fallback_score_sql",
    "labelled_aggregate",
    "models_sql",
    "multiclass_aggregates",
    "positive_aggregates",
    "predicted_value_aggregates",
    "regression_aggregates",
    "rows_between_sql",
    "serving_aggregates",
    "slice_reference_aggregates",
    "slice_reference_sql",
    "small_value_counts_sql",
    "sql_value",
    "time_bounds_sql",
    "time_core_sql",
    "time_outliers_sql",
    "total_of",
    "value_mix_aggregates",
    "value_or_zero",
    "versions_sql",
]

#: A row that records an error (an empty text is none).
HAS_ERROR = "(error IS NOT NULL AND CAST(error AS VARCHAR) <> '')"

quote = quote_ident


def sql_value(v: object) -> str:
    """A value as SQL: text through :func:`~mlsleuth.store._engine.quote_literal`, a bool as 1/0, a number as itself."""
    if isinstance(v, str):
        return quote_literal(v)
    if isinstance(v, bool | np.bool_):
        return "1" if v else "0"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating) and math.isfinite(float(v)):
        return repr(float(v))
    return quote_literal(str(v))  # anything else (a date, a NaN) is compared as its text


def fallback_case(score: float, *, with_error: bool) -> str:
    """1.0 on a row served the fallback ``score`` (and recording an error, ``with_error``), 0.0 elsewhere."""
    cond = f"score = {float(score)!r}" + (f" AND {HAS_ERROR}" if with_error else "")
    return f"CASE WHEN {cond} THEN 1.0 ELSE 0.0 END"


# -- time range ---------------------------------------------------------------------------------------------


def time_core_sql(lo_q: float, hi_q: float) -> str:
    """The ``lo_q`` and ``hi_q`` quantiles of the log's timestamps (epoch seconds) as ``lo``, ``hi``."""
    return (f"SELECT quantile_cont(epoch(ts), {float(lo_q)!r}) AS lo, quantile_cont(epoch(ts), {float(hi_q)!r}) AS hi "
            "FROM log")


def time_outliers_sql(keep_lo: str, keep_hi: str) -> str:
    """Rows dated outside ``[keep_lo, keep_hi]`` (timestamp literals): ``n``, first ``t0`` and last ``t1``."""
    return f"SELECT count(*) AS n, min(ts) AS t0, max(ts) AS t1 FROM log WHERE ts < {keep_lo} OR ts > {keep_hi}"


def time_bounds_sql() -> str:
    """The log's first and last time and its rows: ``t0``, ``t1``, ``n``."""
    return "SELECT min(ts) AS t0, max(ts) AS t1, count(*) AS n FROM log"


# -- what the model outputs ---------------------------------------------------------------------------------


def small_value_counts_sql(column: str, limit: int) -> str:
    """Up to ``limit`` values of ``column`` with their rows (``v``, ``n``): enough to know how many there are."""
    q = quote(column)
    return f"SELECT {q} AS v, count(*) AS n FROM log WHERE {q} IS NOT NULL GROUP BY 1 LIMIT {int(limit)}"


def distinct_predictions_sql(limit: int) -> str:
    """How many distinct predictions there are, counted up to ``limit`` (``n``)."""
    return f"SELECT count(*) AS n FROM (SELECT DISTINCT prediction FROM log LIMIT {int(limit)})"


def classes_sql(limit: int) -> str:
    """The ``limit`` most frequent predicted classes as text (``v``), most frequent first."""
    return ("SELECT CAST(prediction AS VARCHAR) AS v, count(*) AS n FROM log WHERE prediction IS NOT NULL "
            f"GROUP BY 1 ORDER BY 2 DESC LIMIT {int(limit)}")


def versions_sql(limit: int) -> str:
    """The ``limit`` most frequent model versions (``v``), most frequent first."""
    return ("SELECT model_version AS v, count(*) AS n FROM log WHERE model_version IS NOT NULL "
            f"GROUP BY 1 ORDER BY 2 DESC LIMIT {int(limit)}")


def models_sql() -> str:
    """The model names in the log (``m``)."""
    return "SELECT DISTINCT model AS m FROM log WHERE model IS NOT NULL"


def fallback_score_sql() -> str:
    """The score most rows that record an error share (``score``, its rows ``n`` of ``total``)."""
    return ("SELECT score, count(*) AS n, CAST(sum(count(*)) OVER () AS BIGINT) AS total FROM log "
            f"WHERE score IS NOT NULL AND {HAS_ERROR} GROUP BY 1 ORDER BY 2 DESC LIMIT 1")


# -- per-window aggregates of outputs and outcomes ----------------------------------------------------------


def confusion_aggregates(positive: object, *, has_score: bool) -> dict[str, str]:
    """A binary model's labelled outcomes per window: ``tp``, ``fp``, ``fn``, ``tn`` (and ``brier``)."""
    p = sql_value(positive)
    out = {
        "tp": f"sum(CASE WHEN label = {p} AND prediction = {p} THEN 1 ELSE 0 END)",
        "fp": f"sum(CASE WHEN label IS NOT NULL AND label <> {p} AND prediction = {p} THEN 1 ELSE 0 END)",
        "fn": f"sum(CASE WHEN label = {p} AND prediction IS NOT NULL AND prediction <> {p} THEN 1 ELSE 0 END)",
        "tn": (f"sum(CASE WHEN label IS NOT NULL AND label <> {p} AND prediction IS NOT NULL "
               f"AND prediction <> {p} THEN 1 ELSE 0 END)"),
    }
    if has_score:
        out["brier"] = (f"sum(CASE WHEN label IS NOT NULL THEN (score - CASE WHEN label = {p} THEN 1.0 "
                        f"ELSE 0.0 END) * (score - CASE WHEN label = {p} THEN 1.0 ELSE 0.0 END) END)")
    return out


def regression_aggregates() -> dict[str, str]:
    """A regressor's error per window: absolute ``abserr``, signed ``sgnerr`` and squared ``sqerr`` sums."""
    err = "(CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE))"
    return {"abserr": f"sum(abs({err}))", "sgnerr": f"sum({err})", "sqerr": f"sum({err} * {err})"}


def multiclass_aggregates(classes: Sequence[str]) -> dict[str, str]:
    """A multi-class model's labelled requests it got right (``hit``), and per class ``k`` its labelled
    requests ``lab<k>`` and those predicted right ``tp<k>`` (recall)."""
    out = {"hit": ("sum(CASE WHEN label IS NOT NULL AND CAST(label AS VARCHAR) = CAST(prediction AS VARCHAR) "
                   "THEN 1 ELSE 0 END)")}
    for k, v in enumerate(classes):
        out[f"lab{k}"] = f"sum(CASE WHEN CAST(label AS VARCHAR) = {sql_value(v)} THEN 1 ELSE 0 END)"
        out[f"tp{k}"] = (f"sum(CASE WHEN CAST(label AS VARCHAR) = {sql_value(v)} AND "
                         f"CAST(prediction AS VARCHAR) = {sql_value(v)} THEN 1 ELSE 0 END)")
    return out


# -- features that follow an input --------------------------------------------------------------------------


def coupling_key(column: str, *, numeric: bool) -> str:
    """An input as grouped when a feature is checked for following it: a number, or text."""
    return f"CAST({quote(column)} AS DOUBLE)" if numeric else f"CAST({quote(column)} AS VARCHAR)"


def coupling_sql(table: str, key_sql: str, feature: str, input_column: str, where: str = "",
                 *, limit: int | None = None) -> str:
    """Per value ``c`` of an input (``key_sql``, from :func:`coupling_key`): rows ``n``, mean ``m`` and
    population variance ``v`` of ``feature``, on the rows of ``table`` (``log`` or ``ref``) where both are
    known and ``where`` holds."""
    if table not in ("log", "ref"):
        raise ValueError(f"coupling_sql reads log or ref, not {table!r}")
    fv = f"CAST({quote(feature)} AS DOUBLE)"
    known = f"{quote(input_column)} IS NOT NULL AND {quote(feature)} IS NOT NULL"
    cond = f"{where} AND {known}" if where else known
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    return (f"SELECT {key_sql} AS c, count(*) AS n, avg({fv}) AS m, var_pop({fv}) AS v FROM {table} "
            f"WHERE {cond} GROUP BY 1{tail}")


def decoupled_case(feature: str, key_sql: str, expected: Sequence[tuple[object, float]], tol: float) -> str:
    """Per row: 1.0 where ``feature`` is not the value ``expected`` gives its input's value, NULL where unknown.

    The input's value is looked up once per row (one branch per value, each testing the feature against
    that value's expectation): the per-window scan evaluates this for every row of the log.
    """
    fv = quote(feature)
    t = float(tol)
    whens = " ".join(f"WHEN {sql_value(c)} THEN CASE WHEN abs(CAST({fv} AS DOUBLE) - {float(m)!r}) <= {t!r} "
                     "THEN 0.0 ELSE 1.0 END" for c, m in expected)
    return f"CASE WHEN {fv} IS NULL THEN NULL ELSE (CASE {key_sql} {whens} END) END"


def decoupled_known(feature: str, key_sql: str, expected: Sequence[tuple[object, float]]) -> str:
    """Rows where :func:`decoupled_case` is known (the feature logged, its input one of the ``expected`` values),
    counted without looking the expectation up."""
    values = ", ".join(sql_value(c) for c, _ in expected)
    return f"CAST(count_if({quote(feature)} IS NOT NULL AND {key_sql} IN ({values})) AS BIGINT)"


def positive_aggregates(positive: object) -> dict[str, str]:
    """Predictions of the ``positive`` class (``pos``) and predictions (``npred``) per window."""
    return {"pos": f"sum(CASE WHEN prediction = {sql_value(positive)} THEN 1 ELSE 0 END)",
            "npred": "count(prediction)"}


def predicted_value_aggregates() -> dict[str, str]:
    """A regressor's predictions per window: their sum (``pred_sum``) and count (``npred``)."""
    return {"pred_sum": "sum(prediction)", "npred": "count(prediction)"}


def labelled_aggregate() -> str:
    """Labelled requests per window."""
    return "count(label)"


def total_of(row_sql: str) -> str:
    """The per-window sum of a per-row value (a :func:`fallback_case` or :func:`decoupled_case`)."""
    return f"sum({row_sql})"


def value_mix_aggregates(prefix: str, column: str, values: Sequence[object], *, as_text: bool) -> dict[str, str]:
    """Rows per window whose ``column`` is each of ``values``: ``<prefix><k>`` for the k-th (compared as text
    with ``as_text``)."""
    q = f"CAST({quote(column)} AS VARCHAR)" if as_text else quote(column)
    return {f"{prefix}{k}": f"sum(CASE WHEN {q} = {sql_value(v)} THEN 1 ELSE 0 END)" for k, v in enumerate(values)}


def serving_aggregates(*, latency: bool, errors: bool) -> dict[str, str]:
    """Mean latency (``lat_mean``) and requests that record an error (``errors``) per window."""
    out = {}
    if latency:
        out["lat_mean"] = "avg(latency_ms)"
    if errors:
        out["errors"] = f"sum(CASE WHEN {HAS_ERROR} THEN 1 ELSE 0 END)"
    return out


def slice_reference_aggregates(columns: Sequence[tuple[str, Sequence[float]]]) -> list[tuple[str, str]]:
    """Per numeric column ``i`` (name, reference edges): its null and zero shares, mean, values and the share
    at or below each edge, as ``(alias, SQL)``; with the rows ``n`` first."""
    aggs = [("n", "count(*)")]
    for i, (name, edges) in enumerate(columns):
        q = quote(name)
        x = f"CAST({q} AS DOUBLE)"
        aggs += [(f"null{i}", f"avg(CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END)"),
                 (f"zero{i}", f"avg(CASE WHEN {x} = 0 THEN 1.0 ELSE 0.0 END)"), (f"mean{i}", f"avg({x})"),
                 (f"n{i}", f"count({q})")]
        aggs += [(f"le{i}_{k}", f"avg(CASE WHEN {x} <= {float(e)!r} THEN 1.0 WHEN {q} IS NULL THEN NULL ELSE 0.0 END)")
                 for k, e in enumerate(edges)]
    return aggs


# -- per-slice references, importance, onset rows ----------------------------------------------------------


def slice_reference_sql(column: str, aggregates: Sequence[tuple[str, str]]) -> str:
    """The reference's rows per value ``v`` of ``column`` with the named ``aggregates`` (alias, SQL)."""
    q = quote(column)
    return (f"SELECT CAST({q} AS VARCHAR) AS v, {', '.join(f'{e} AS {quote(a)}' for a, e in aggregates)} FROM ref "
            f"WHERE {q} IS NOT NULL GROUP BY 1")


def correlations_sql(aggregates: Sequence[tuple[str, str]]) -> str:
    """One row of the log's ``aggregates`` (alias, SQL), such as correlations with the score."""
    return f"SELECT {', '.join(f'{e} AS {a}' for a, e in aggregates)} FROM log"


def correlation(feature: str) -> str:
    """The correlation of ``feature`` with the score over the log."""
    return f"corr(CAST({quote(feature)} AS DOUBLE), score)"


def rows_between_sql(metric_sql: str, cond: str) -> str:
    """Each row's ``ts`` and ``m`` (``metric_sql``) where ``cond`` holds and ``m`` is known, in time order."""
    return f"SELECT ts, {metric_sql} AS m FROM log WHERE {cond} AND ({metric_sql}) IS NOT NULL ORDER BY ts"


def case_is_null(column: str) -> str:
    """1.0 where ``column`` is null, else 0.0."""
    return f"CASE WHEN {quote(column)} IS NULL THEN 1.0 ELSE 0.0 END"


def case_is_zero(column: str) -> str:
    """1.0 where ``column`` is zero, else 0.0."""
    return f"CASE WHEN CAST({quote(column)} AS DOUBLE) = 0 THEN 1.0 ELSE 0.0 END"


def case_at_or_below(column: str, edge: float) -> str:
    """1.0 where ``column`` is at or below ``edge``, else 0.0."""
    return f"CASE WHEN CAST({quote(column)} AS DOUBLE) <= {float(edge)!r} THEN 1.0 ELSE 0.0 END"


def value_or_zero(column: str) -> str:
    """``column`` as a number, 0.0 where it is null."""
    return f"coalesce(CAST({quote(column)} AS DOUBLE), 0.0)"


def case_in_categories(column: str, categories: Sequence[str]) -> str:
    """0.0 where ``column`` (as text) is one of ``categories``, else 1.0."""
    cats = ", ".join(sql_value(c) for c in categories) or "''"
    return f"CASE WHEN CAST({quote(column)} AS VARCHAR) IN ({cats}) THEN 0.0 ELSE 1.0 END"
