"""The SQL a diagnosis runs, as small builders that return one statement or expression each.

The diagnosis composes these instead of writing SQL of its own, so that every name and value
reaches a statement through :func:`~mlsleuth.store._engine.quote_ident` and
:func:`~mlsleuth.store._engine.quote_literal`, and so that what the store and the diagnosis share
(the latest label of a request) is written once. Statements are in DuckDB's dialect; the engines
transpile them. ``log`` is the name a diagnosis binds its prediction log to.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from mlsleuth.store._engine import quote_ident, quote_literal

__all__ = [
    "LATEST_LABEL_ORDER",
    "after_flag",
    "approx_distinct_counts",
    "before_after_by_value",
    "categorical_bucket",
    "column_ratio",
    "count_rows_and_labels",
    "create_log_view",
    "create_plain_log_view",
    "distinct_counts",
    "distinct_per_row",
    "distinct_predictions",
    "exact_median",
    "histogram_counts",
    "join_latest_labels",
    "label_as_double",
    "label_as_text",
    "label_key",
    "label_number_counts",
    "label_order",
    "label_to_binary",
    "label_value_counts",
    "latest_labels",
    "max_labels_per_request",
    "metric_ratio",
    "numeric_bucket",
    "per_window",
    "range_quantiles",
    "rate_null",
    "rate_outside",
    "rate_unseen",
    "rate_value",
    "rate_zero",
    "sample_rows",
    "scope_condition",
    "segment_sums",
    "stored_labels",
    "time_range",
    "ts_literal",
    "unique_labels",
    "value_literal",
    "view_select",
]

# --------------------------------------------------------------------------------------------- values and scopes


def ts_literal(value: datetime) -> str:
    """A UTC timestamp literal that DuckDB reads and sqlglot carries to Spark."""
    return f"TIMESTAMPTZ {quote_literal(value.astimezone(UTC).isoformat())}"


def time_range(column: str, since: datetime | None, until: datetime | None) -> str:
    """``column`` in ``[since, until)`` ("" when both are open); ``column`` is SQL (e.g. ``l.ts``)."""
    cond = []
    if since is not None:
        cond.append(f"{column} >= {ts_literal(since)}")
    if until is not None:
        cond.append(f"{column} < {ts_literal(until)}")
    return " AND ".join(cond)


def scope_condition(scope: Mapping[str, str] | None) -> str:
    """The condition selecting a segment such as ``{"region": "EU"}`` ("" for all traffic)."""
    if not scope:
        return ""
    return " AND ".join(f"CAST({quote_ident(k)} AS VARCHAR) = {quote_literal(v)}" for k, v in scope.items())


def after_flag(split: datetime | None) -> str:
    """1 for rows at or after ``split``, else 0 (every row is "after" when there is no split)."""
    return f"CASE WHEN ts >= {ts_literal(split)} THEN 1 ELSE 0 END" if split is not None else "1"


def _where(*conds: str) -> str:
    parts = [c for c in conds if c]
    return f" WHERE {' AND '.join(parts)}" if parts else ""


# --------------------------------------------------------------------------------------------- the latest label

#: The order that puts a request's latest label first: the latest ``label_ts``, then the latest ingested.
LATEST_LABEL_ORDER = "label_ts DESC NULLS LAST, ingested_at DESC"

#: A 64-bit hash of a request id per dialect. Joining on it instead of the text shrinks what a join of a
#: hundred million requests holds and spills; the chance that a request shares the hash of another's label
#: is ~4e-4 per diagnosis of a hundred million requests (one request of them mislabelled).
_KEY_HASH = {"duckdb": "hash", "spark": "xxhash64"}


def label_key(dialect: str, column: str) -> str:
    """The join key of a request id column (SQL) on ``dialect``: its 64-bit hash, or the id itself."""
    fn = _KEY_HASH.get(dialect)
    return f"{fn}({column})" if fn else column


def label_order(columns: Collection[str], *, last: str = "request_id") -> str:
    """:data:`LATEST_LABEL_ORDER` for label rows that have ``columns``; ``last`` (SQL) breaks what they leave tied."""
    order = ["label_ts DESC NULLS LAST"] if "label_ts" in columns else []
    order.append("ingested_at DESC" if "ingested_at" in columns else last)
    return ", ".join(order)


def latest_labels(source: str, *, order: str = LATEST_LABEL_ORDER, columns: Sequence[str] | None = None,
                  key: str | None = None) -> str:
    """The latest label row of each request id of ``source``: the one definition the store and the diagnosis use.

    Parameters
    ----------
    source
        The label rows (a bound name: ``labels_all``, the label files).
    order
        Puts a request's latest label first (:func:`label_order` when a column is missing).
    columns
        The label columns to read (all when None).
    key
        When given, the result is ``k`` (this SQL of ``request_id``, see :func:`label_key`) and ``label``.
    """
    inner = "*" if columns is None else ", ".join(quote_ident(c) for c in columns)
    outer = "* EXCLUDE (_rn)" if key is None else f"{key} AS k, label"
    return (f"SELECT {outer} FROM (SELECT {inner}, row_number() OVER (PARTITION BY request_id ORDER BY {order}) "
            f"AS _rn FROM {source} WHERE request_id IS NOT NULL) AS x WHERE _rn = 1")


def stored_labels() -> str:
    """A store's latest label of each request (its ``labels`` view), with ``label_ts``."""
    return "SELECT request_id, label, label_ts FROM labels"


def unique_labels(source: str, key: str) -> str:
    """``k``, ``label`` of label rows known to hold one row per request (no de-duplication to pay)."""
    return f"SELECT {key} AS k, label FROM {source} WHERE request_id IS NOT NULL"


def join_latest_labels(rows: str, labels: str, order: str) -> str:
    """The latest label of each of ``rows`` (``i``, ``request_id``), in the order of ``i``."""
    latest = latest_labels(labels, order=order, columns=("request_id", "label"))
    return f"SELECT x.label FROM {rows} AS r LEFT JOIN ({latest}) AS x ON r.request_id = x.request_id ORDER BY r.i"


def max_labels_per_request(source: str, key: str) -> str:
    """The most label rows any request id (grouped by ``key``, its hash) has.

    A plain two-level aggregate: Spark plans ``count(DISTINCT ...)`` beside ``count(...)`` by copying rows.
    """
    return (f"SELECT max(c) AS m FROM (SELECT {key} AS k, count(*) AS c FROM {source} "
            "WHERE request_id IS NOT NULL GROUP BY 1) AS g")


# --------------------------------------------------------------------------------------------- a log left on disk


def view_select(names: Sequence[str], text_columns: Collection[str], alias: str = "l") -> str:
    """The select list of a stored log's columns, those in ``text_columns`` read as text."""
    out = []
    for c in names:
        q = quote_ident(c)
        out.append(f"CAST({alias}.{q} AS VARCHAR) AS {q}" if c in text_columns else f"{alias}.{q}")
    return ", ".join(out)


def create_plain_log_view(name: str, files: str, select: str, where: str) -> str:
    """``name``: the stored log's rows (``files`` aliased ``l``) in ``where``, without labels."""
    return f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {select} FROM {files} AS l{_where(where)}"


def create_log_view(*, plain: str | None = None, files: str = "", select: str = "", where: str = "",
                    labels: str = "", label: str = "b.label", key: str = "") -> str:
    """The view ``log``: ``plain`` as it is, or the log files left-joined with ``labels`` (``k``, ``label``).

    ``label`` is the SQL of the diagnosed label from the joined ``b.label``; ``key`` the join key of
    ``l.request_id`` (:func:`label_key`).
    """
    if plain is not None:
        return f"CREATE OR REPLACE TEMP VIEW log AS SELECT * FROM {plain}"
    return (f"CREATE OR REPLACE TEMP VIEW log AS SELECT {select}, {label} AS label FROM {files} AS l "
            f"LEFT JOIN ({labels}) AS b ON {key} = b.k{_where(where)}")


def count_rows_and_labels(*, labelled: bool) -> str:
    """``n`` rows of the log and ``k`` of them labelled, in one scan."""
    return ("SELECT count(*) AS n, count(label) AS k FROM log" if labelled
            else "SELECT count(*) AS n, 0 AS k FROM log")


def approx_distinct_counts(columns: Sequence[str]) -> str:
    """Each column's approximate count of distinct values, named as the column."""
    return "SELECT " + ", ".join(f"approx_count_distinct({quote_ident(c)}) AS {quote_ident(c)}"
                                 for c in columns) + " FROM log"


def distinct_counts(columns: Sequence[str]) -> str:
    """Each column's exact count of distinct values, named as the column."""
    return "SELECT " + ", ".join(f"count(DISTINCT {quote_ident(c)}) AS {quote_ident(c)}" for c in columns) + " FROM log"


def label_number_counts() -> str:
    """``n`` labels and ``k`` of them read as numbers."""
    return "SELECT count(label) AS n, count(TRY_CAST(label AS DOUBLE)) AS k FROM log"


def label_value_counts(limit: int) -> str:
    """Up to ``limit`` label values (as text, ``v``) with their counts ``n``."""
    return (f"SELECT CAST(label AS VARCHAR) AS v, count(*) AS n FROM log WHERE label IS NOT NULL "
            f"GROUP BY 1 LIMIT {int(limit)}")


def distinct_predictions(limit: int) -> str:
    """Up to ``limit`` distinct predictions ``v``."""
    return f"SELECT DISTINCT prediction AS v FROM log WHERE prediction IS NOT NULL LIMIT {int(limit)}"


def label_as_double(label: str = "b.label") -> str:
    """A label of numbers written as text, as numbers."""
    return f"TRY_CAST({label} AS DOUBLE)"


def label_as_text(label: str = "b.label") -> str:
    """A label as text."""
    return f"CAST({label} AS VARCHAR)"


def label_to_binary(positive: str, sql_type: str, label: str = "b.label") -> str:
    """A text label as 1 (``positive``) or 0 of ``sql_type`` (``DOUBLE`` or ``BIGINT``); null stays null."""
    if sql_type not in ("DOUBLE", "BIGINT"):
        raise ValueError(f"expected DOUBLE or BIGINT, got {sql_type!r}")
    return (f"CAST(CASE WHEN CAST({label} AS VARCHAR) = {quote_literal(positive)} THEN 1 WHEN {label} IS NULL "
            f"THEN NULL ELSE 0 END AS {sql_type})")


# --------------------------------------------------------------------------------------------- samples and effects


def sample_rows(columns: Sequence[str], where: str, *, latest_first: bool, limit: int) -> str:
    """Up to ``limit`` rows of ``columns`` in ``where``, nearest the boundary of ``ts`` first."""
    sel = ", ".join(quote_ident(c) for c in columns)
    order = "DESC" if latest_first else "ASC"
    return f"SELECT {sel} FROM log{_where(where)} ORDER BY ts {order} LIMIT {int(limit)}"


def before_after_by_value(column: str, signal: str, onset: datetime, where: str = "") -> str:
    """Per value ``v`` of ``column`` and side ``a`` of ``onset``: count ``n`` and sum ``s`` of ``signal`` (SQL)."""
    return (f"SELECT CAST({quote_ident(column)} AS VARCHAR) AS v, {after_flag(onset)} AS a, "
            f"count({signal}) AS n, sum(CAST(({signal}) AS DOUBLE)) AS s FROM log{_where(where)} GROUP BY 1, 2")


# --------------------------------------------------------------------------------------------- chart data


def rate_null(column: str) -> str:
    """Share of rows where ``column`` is null."""
    return f"avg(CASE WHEN {quote_ident(column)} IS NULL THEN 1.0 ELSE 0.0 END)"


def rate_zero(column: str) -> str:
    """Share of non-null values of ``column`` that are 0."""
    q = quote_ident(column)
    return f"avg(CASE WHEN CAST({q} AS DOUBLE) = 0 THEN 1.0 WHEN {q} IS NULL THEN NULL ELSE 0.0 END)"


def distinct_per_row(column: str) -> str:
    """Distinct values of ``column`` per non-null value (near 0 for a stuck column)."""
    x = f"CAST({quote_ident(column)} AS DOUBLE)"
    return f"CAST(approx_count_distinct({x}) AS DOUBLE) / greatest(count({x}), 1)"


def rate_outside(column: str, lo: float, hi: float) -> str:
    """Share of non-null values of ``column`` outside ``[lo, hi]``."""
    q = quote_ident(column)
    x = f"CAST({q} AS DOUBLE)"
    return (f"avg(CASE WHEN {x} < {float(lo)!r} OR {x} > {float(hi)!r} THEN 1.0 WHEN {q} IS NULL THEN NULL "
            "ELSE 0.0 END)")


def exact_median(column: str, *, exact: bool) -> str:
    """The median of ``column``: exact, or the engine's quantile sketch."""
    x = f"CAST({quote_ident(column)} AS DOUBLE)"
    return f"median({x})" if exact else f"approx_quantile({x}, 0.5)"


def rate_value(column: str, value: str) -> str:
    """Share of rows whose ``column`` (as text) is ``value``."""
    return f"avg(CASE WHEN CAST({quote_ident(column)} AS VARCHAR) = {quote_literal(value)} THEN 1.0 ELSE 0.0 END)"


def rate_unseen(column: str, seen: Sequence[str]) -> str:
    """Share of rows whose non-null ``column`` (as text) is none of ``seen``."""
    q = quote_ident(column)
    cats = ", ".join(quote_literal(c) for c in seen) or "''"
    return f"avg(CASE WHEN {q} IS NOT NULL AND CAST({q} AS VARCHAR) NOT IN ({cats}) THEN 1.0 ELSE 0.0 END)"


def per_window(window_seconds: int, aggregates: Sequence[str], where: str) -> str:
    """Per window ``w`` (epoch seconds // ``window_seconds``): rows ``n`` and each aggregate as ``s0``, ``s1``..."""
    w = f"CAST(floor(epoch(ts) / {int(window_seconds)}) AS BIGINT)"
    parts = [f"{w} AS w", "count(*) AS n"] + [f"{sql} AS s{i}" for i, sql in enumerate(aggregates)]
    return f"SELECT {', '.join(parts)} FROM log{_where(where)} GROUP BY 1"


def range_quantiles(table: str, columns: Sequence[str], where: str, quantiles: tuple[float, float],
                    sample_percent: float | None) -> str:
    """``q0``, ``q1``...: the two ``quantiles`` of each numeric column, on a system sample of ``table`` when given."""
    sel = ", ".join(f"CAST({quote_ident(c)} AS DOUBLE) AS x{i}" for i, c in enumerate(columns))
    sample = f" USING SAMPLE {sample_percent:.4f}% (system)" if sample_percent is not None else ""
    lo, hi = (float(q) for q in quantiles)
    parts = ", ".join(f"quantile_cont(x{i}, [{lo!r}, {hi!r}]) AS q{i}" for i in range(len(columns)))
    return f"SELECT {parts} FROM (SELECT {sel} FROM {table}{_where(where)}{sample}) AS s"


def categorical_bucket(column: str, shown: Sequence[str], other: str) -> str:
    """``column`` as text when one of ``shown``, else ``other``; null stays null."""
    q = quote_ident(column)
    inlist = ", ".join(quote_literal(c) for c in shown) or "''"
    v = f"CAST({q} AS VARCHAR)"
    return f"CASE WHEN {q} IS NULL THEN NULL WHEN {v} IN ({inlist}) THEN {v} ELSE {quote_literal(other)} END"


def numeric_bucket(column: str, lo: float, step: float, bins: int, *, log_scale: bool) -> str:
    """The bin (0 to ``bins - 1``, ends open) of ``column`` on a grid from ``lo`` in steps of ``step``.

    On a log scale ``lo`` and ``step`` are of the natural log of the value (values below ``exp(lo)``
    fall in the first bin).
    """
    q = quote_ident(column)
    x = f"CAST({q} AS DOUBLE)"
    f = f"ln(greatest({x}, {float(lo)!r}))" if log_scale else x
    flo = math.log(lo) if log_scale else float(lo)
    return (f"CASE WHEN {q} IS NULL THEN NULL ELSE least(greatest(CAST(floor(({f} - {flo!r}) / {float(step)!r}) "
            f"AS BIGINT), 0), {int(bins) - 1}) END")


def histogram_counts(table: str, side: str, bucket: str, where: str) -> str:
    """Rows ``n`` per side ``a`` (SQL) and bucket ``b`` (SQL) of ``table``."""
    return f"SELECT {side} AS a, {bucket} AS b, count(*) AS n FROM {table}{_where(where)} GROUP BY 1, 2"


def segment_sums(side: str, columns: Sequence[str], numerator: str, denominator: str) -> str:
    """Per side ``a`` and values ``g0``, ``g1``... of ``columns``: rows ``n``, sums ``s`` and ``d`` of a ratio."""
    groups = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR) AS g{i}" for i, c in enumerate(columns))
    return (f"SELECT {side} AS a, {groups}, count(*) AS n, sum(CAST(({numerator}) AS DOUBLE)) AS s, "
            f"sum(CAST(({denominator}) AS DOUBLE)) AS d FROM log GROUP BY ALL")


def value_literal(value: object) -> str:
    """A value as SQL: text through :func:`quote_literal`, a bool as 1/0, a number as itself, else its text."""
    if isinstance(value, str):
        return quote_literal(value)
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and math.isfinite(float(value)):
        return repr(float(value))
    return quote_literal(str(value))  # anything else (a date, a NaN) is compared as its text


#: Rows whose outcome is known: both a label and a prediction.
_LABELLED = "label IS NOT NULL AND prediction IS NOT NULL"


def _counted_rate(positive: str, metric: str) -> tuple[str, str] | None:
    """(numerator, denominator) of a binary classifier's rate, ``positive`` its positive class as SQL."""
    lab, p = _LABELLED, positive
    hit = f"{lab} AND label = {p} AND prediction = {p}"
    return {
        "positive_rate": (f"CASE WHEN prediction = {p} THEN 1.0 ELSE 0.0 END",
                          "CASE WHEN prediction IS NULL THEN 0.0 ELSE 1.0 END"),
        "false_positive_rate": (f"CASE WHEN {lab} AND label <> {p} AND prediction = {p} THEN 1.0 ELSE 0.0 END",
                                f"CASE WHEN {lab} AND label <> {p} THEN 1.0 ELSE 0.0 END"),
        "recall": (f"CASE WHEN {hit} THEN 1.0 ELSE 0.0 END", f"CASE WHEN {lab} AND label = {p} THEN 1.0 ELSE 0.0 END"),
        "precision": (f"CASE WHEN {hit} THEN 1.0 ELSE 0.0 END",
                      f"CASE WHEN {lab} AND prediction = {p} THEN 1.0 ELSE 0.0 END"),
    }.get(metric)


def metric_ratio(metric: str, columns: Collection[str], *, positive: object | None = None, error: str | None = None,
                 fallback: str | None = None, class_value: object | None = None) -> tuple[str, str, str, str] | None:
    """(label, numerator, denominator, unit) of a metric as a ratio of per-row sums (None: not one of the log's).

    Ratios of sums add up across groups, so one GROUP BY gives every segment value and the lumped rest.
    Quantile metrics are drawn by their mean (named so in the label). ``error`` and ``fallback`` are the
    per-row SQL of a row that errored and of a row served the fallback score; ``class_value`` is the class
    of ``class_recall``.
    """
    lab, both = _LABELLED, "label" in columns and "prediction" in columns
    if positive is not None and (rate := _counted_rate(value_literal(positive), metric)) is not None:
        return metric, *rate, "rate"
    if metric == "accuracy" and both:
        return (metric, f"CASE WHEN {lab} AND label = prediction THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} THEN 1.0 ELSE 0.0 END", "rate")
    if metric == "error_rate" and "error" in columns and error is not None:
        return metric, f"CASE WHEN {error} THEN 1.0 ELSE 0.0 END", "1.0", "rate"
    if metric == "fallback_rate" and fallback is not None:
        return metric, fallback, "1.0", "rate"
    if metric.startswith("latency") and "latency_ms" in columns:
        return "latency_mean_ms", "coalesce(latency_ms, 0.0)", "CASE WHEN latency_ms IS NULL THEN 0.0 ELSE 1.0 END", \
            "ms"
    if metric == "mean_prediction" and "prediction" in columns:
        return (metric, "coalesce(CAST(prediction AS DOUBLE), 0.0)",
                "CASE WHEN prediction IS NULL THEN 0.0 ELSE 1.0 END", "")
    if metric in ("mae", "bias") and both:
        diff = "abs(CAST(label AS DOUBLE) - CAST(prediction AS DOUBLE))" if metric == "mae" \
            else "CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE)"
        return metric, f"CASE WHEN {lab} THEN {diff} ELSE 0.0 END", f"CASE WHEN {lab} THEN 1.0 ELSE 0.0 END", ""
    if metric == "class_recall" and class_value is not None:
        v = value_literal(class_value)
        hit = f"CAST(label AS VARCHAR) = {v}"
        return (f"recall of {class_value}",
                f"CASE WHEN {lab} AND {hit} AND CAST(prediction AS VARCHAR) = {v} THEN 1.0 ELSE 0.0 END",
                f"CASE WHEN {lab} AND {hit} THEN 1.0 ELSE 0.0 END", "rate")
    return None


def column_ratio(column: str, kind: str) -> tuple[str, str]:
    """(numerator, denominator) per row of a column's ``null`` rate, ``zero`` rate or ``mean``."""
    q = quote_ident(column)
    x = f"CAST({q} AS DOUBLE)"
    if kind == "null":
        return f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END", "1.0"
    if kind == "zero":
        return f"CASE WHEN {x} = 0 THEN 1.0 ELSE 0.0 END", "1.0"
    if kind == "mean":
        return f"coalesce({x}, 0.0)", f"CASE WHEN {q} IS NULL THEN 0.0 ELSE 1.0 END"
    raise ValueError(f"expected null, zero or mean, got {kind!r}")
