"""Reference summaries and per-window summaries computed by the query engine.

The SQL is written once in DuckDB's dialect and kept to functions that sqlglot
transpiles to Spark SQL (``quantile_cont``, ``approx_quantile``, ``epoch``, ``count_if``, ``CASE``),
so the same queries run on every engine behind :class:`mlsleuth.store.Engine`.
Only small aggregates (one row per window) come back to Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.schema._tables import at_least, at_most
from mlsleuth.store import Engine
from mlsleuth.store._engine import quote_ident, quote_literal

__all__ = [
    "DECILES",
    "MAX_AGGREGATES",
    "CategoricalRef",
    "NumericRef",
    "batched",
    "quote",
    "reference_summary",
    "window_summary",
]

DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_CATEGORIES = 12
#: Aggregates in one query at most. DuckDB dies with SIGFPE (no message, the whole process) on a windowed
#: ``GROUPING SETS`` query of 256 ``approx_count_distinct``; a wide log (hundreds of features, each a dozen
#: aggregates) is summarised in several scans of at most this many aggregates each, joined on their keys.
MAX_AGGREGATES = 200
#: Categorical columns counted in one query of :func:`reference_summary`.
MAX_CATEGORICAL_QUERY = 50


quote = quote_ident


def _lit(value: object) -> str:
    """A value as SQL: text through :func:`~mlsleuth.store._engine.quote_literal`, numbers as themselves."""
    if isinstance(value, str):
        return quote_literal(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and not math.isfinite(value):
        return "NULL"
    return repr(value)


@dataclass(frozen=True)
class NumericRef:
    """What a numeric column looked like in the reference: deciles, range, rates, moments."""

    column: str
    edges: tuple[float, ...]
    cdf: tuple[float, ...]
    lo: float
    hi: float
    mean: float
    std: float
    null_rate: float
    zero_rate: float
    n: int


@dataclass(frozen=True)
class CategoricalRef:
    """The most frequent values of a categorical column in the reference, with their shares."""

    column: str
    categories: tuple[str, ...]
    shares: tuple[float, ...]
    null_rate: float
    n: int


def reference_summary(
    engine: Engine, table: str, numeric: Sequence[str], categorical: Sequence[str]
) -> dict[str, NumericRef | CategoricalRef]:
    """Summarise the reference columns in two scans: one for numbers, one per categorical column."""
    out: dict[str, NumericRef | CategoricalRef] = {}

    def one_row(chunk: Sequence[tuple[str, str]]) -> pa.Table:
        return engine.query(f"SELECT {', '.join(f'{e} AS {quote(a)}' for a, e in chunk)} FROM {table}")

    if numeric:
        aggs = [("n", "count(*)")]
        for i, c in enumerate(numeric):
            q = f"CAST({quote(c)} AS DOUBLE)"
            # The 0 and 1 quantiles are the minimum and the maximum: one aggregate gives all eleven.
            aggs += [
                (f"q{i}", f"quantile_cont({q}, [0.0, {', '.join(map(str, DECILES))}, 1.0])"),
                (f"mean{i}", f"avg({q})"), (f"std{i}", f"stddev_samp({q})"),
                (f"null{i}", f"avg(CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END)"),
                (f"zero{i}", f"avg(CASE WHEN {q} = 0 THEN 1.0 ELSE 0.0 END)"),
            ]
        row = batched(one_row, aggs).to_pylist()[0]
        n = int(row["n"])
        for i, c in enumerate(numeric):
            qs = row[f"q{i}"]
            if qs is None or qs[0] is None:
                continue
            edges = tuple(sorted(dict.fromkeys(float(v) for v in qs[1:-1])))
            out[c] = NumericRef(c, edges, (), float(qs[0]), float(qs[-1]), float(row[f"mean{i}"]),
                                float(row[f"std{i}"] or 0.0), float(row[f"null{i}"]), float(row[f"zero{i}"]), n)
        # The reference CDF at its own (deduplicated) edges: exact, so ties at an edge are handled. Counts
        # over the non-null count (a count_if scans faster than an average of a CASE).
        cdf_aggs: list[tuple[str, str]] = []
        for j, (c, ref) in enumerate(out.items()):
            if isinstance(ref, NumericRef):
                q = f"CAST({quote(c)} AS DOUBLE)"
                cdf_aggs.append((f"n{j}", f"count({q})"))
                cdf_aggs += [(f"le{j}_{k}", f"count_if({q} <= {at_most(e)!r})") for k, e in enumerate(ref.edges)]
        if cdf_aggs:
            counts = batched(one_row, cdf_aggs).to_pylist()[0]
            for j, (c, ref) in enumerate(list(out.items())):
                if isinstance(ref, NumericRef):
                    nn = float(counts[f"n{j}"] or 0)
                    cdf = tuple(float(counts[f"le{j}_{k}"]) / nn if nn else 0.0 for k in range(len(ref.edges)))
                    out[c] = NumericRef(**{**ref.__dict__, "cdf": cdf})
    # The value counts of many categorical columns in one scan (GROUPING SETS, one set per column): a scan's
    # fixed cost over a wide table (~15 ms to bind its columns) is most of what counting one column costs.
    counted: dict[int, list[dict[str, Any]]] = {k: [] for k in range(len(categorical))}
    for start in range(0, len(categorical), MAX_CATEGORICAL_QUERY):
        chunk = list(enumerate(categorical[start:start + MAX_CATEGORICAL_QUERY], start=start))
        inner = ", ".join(f"CAST({quote(c)} AS VARCHAR) AS v{k}" for k, c in chunk)
        sets = ", ".join(f"(v{k})" for k, _ in chunk)
        picks = ", ".join(f"v{k}, grouping(v{k}) AS g{k}" for k, _ in chunk)
        for r in engine.query(f"SELECT {picks}, count(*) AS n FROM (SELECT {inner} FROM {table}) AS t "
                              f"GROUP BY GROUPING SETS ({sets})").to_pylist():
            k = next(k for k, _ in chunk if r[f"g{k}"] == 0)
            counted[k].append({"v": r[f"v{k}"], "n": r["n"]})
    for k, c in enumerate(categorical):
        # Most frequent first, ties by value (as ORDER BY n DESC, v would give them).
        rows = sorted(counted[k], key=lambda r: (-int(r["n"]), r["v"] is None, r["v"] or ""))
        total = sum(int(r["n"]) for r in rows) or 1
        nulls = sum(int(r["n"]) for r in rows if r["v"] is None)
        top = [r for r in rows if r["v"] is not None][:MAX_CATEGORIES]
        out[c] = CategoricalRef(c, tuple(str(r["v"]) for r in top), tuple(int(r["n"]) / total for r in top),
                                nulls / total, total)
    return out


def window_summary(
    engine: Engine,
    table: str,
    *,
    window_seconds: int,
    refs: Mapping[str, NumericRef | CategoricalRef],
    extra: Mapping[str, str] | None = None,
    where: str | None = None,
    group_by: Sequence[str] = (),
    slices: Sequence[str] = (),
    numbers: Mapping[str, int] | None = None,
    whole: bool = True,
) -> pa.Table:
    """One row per window (and per ``group_by`` value) with per-column summaries.

    For a numeric column ``c`` (its position ``i`` in ``refs``): ``n{i}`` values, ``null{i}``
    and ``zero{i}`` counts, ``sum{i}``, ``nd{i}`` (approximate distinct values), ``oor{i}``
    (values outside the reference range) and ``le{i}_{k}``,
    the count at or below the reference's k-th edge. For a categorical column: ``null{i}``
    and ``cat{i}_{k}`` counts per reference category (``unseen{i}`` for the rest).
    ``extra`` adds named aggregate expressions (SQL) such as score or latency summaries.
    ``slices`` adds, in the same scan (``GROUPING SETS``), one row per window and value of each
    named segment column: column ``slice:<name>`` holds the value (``(null)`` for a null)
    in its own rows and is null elsewhere; the rows where every ``slice:`` column is null
    are the whole traffic. ``numbers`` gives the ``i`` of each column (default: its position in ``refs``),
    so that summaries of some of the columns keep the names a summary of all of them has. With ``slices``,
    ``whole=False`` leaves out the whole traffic's rows (a caller that has them from another summary).
    """
    # An engine whose table joins some columns in (a log with its labels: ``join_columns``) gets the
    # aggregates of those columns in a narrow scan of their own: the wide scan then skips the join,
    # which would otherwise carry (and, past memory, spill) every column of every row.
    joined = tuple(getattr(engine, "join_columns", ()))
    if joined and extra:
        costly = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in joined) + r")\b", re.IGNORECASE)
        apart = {a: e for a, e in extra.items() if costly.search(e)}
        if apart and (refs or len(apart) < len(extra)):
            wide = window_summary(engine, table, window_seconds=window_seconds, refs=refs,
                                  extra={a: e for a, e in extra.items() if a not in apart}, where=where,
                                  group_by=group_by, slices=slices, numbers=numbers, whole=whole)
            narrow = window_summary(engine, table, window_seconds=window_seconds, refs={}, extra=apart, where=where,
                                    group_by=group_by, slices=slices, whole=whole)
            return _attach(wide, narrow, {a: a for a in apart}, ["w", *group_by, *(f"slice:{sc}" for sc in slices)])
    w = f"CAST(floor(epoch(ts) / {int(window_seconds)}) AS BIGINT)"
    aggs: list[tuple[str, str]] = [("rows", "count(*)")]  # (alias, aggregate)
    for j, (c, ref) in enumerate(refs.items()):
        i = numbers[c] if numbers is not None else j
        if isinstance(ref, NumericRef):
            q = f"CAST({quote(c)} AS DOUBLE)"
            aggs += [
                (f"n{i}", f"count({q})"),
                (f"zero{i}", _count_if(f"{q} = 0")), (f"sum{i}", f"sum({q})"),
                (f"nd{i}", f"approx_count_distinct({q})"),
                (f"oor{i}", _count_if(f"{q} < {at_least(ref.lo)!r} OR {q} > {at_most(ref.hi)!r}")),
            ]
            aggs += [(f"le{i}_{k}", _count_if(f"{q} <= {at_most(e)!r}")) for k, e in enumerate(ref.edges)]
        else:
            q = f"CAST({quote(c)} AS VARCHAR)"
            aggs += [(f"null{i}", _count_if(f"{q} IS NULL"))]
            aggs += [(f"cat{i}_{k}", _count_if(f"{q} = {_lit(v)}")) for k, v in enumerate(ref.categories)]
            if ref.categories:
                inlist = ", ".join(_lit(v) for v in ref.categories)
                aggs.append((f"unseen{i}", _count_if(f"{q} IS NOT NULL AND {q} NOT IN ({inlist})")))
            else:
                aggs.append((f"unseen{i}", f"count({q})"))
    aggs += list((extra or {}).items())
    inner = [f"{w} AS w"] + [f"coalesce(CAST({quote(sc)} AS VARCHAR), '(null)') AS {quote('slice:' + sc)}"
                             for sc in slices]
    source = f"(SELECT *, {', '.join(inner)} FROM {table}{' WHERE ' + where if where else ''}) AS t"
    base = ["w", *(quote(g) for g in group_by)]
    keys = [*base, *(quote("slice:" + sc) for sc in slices)]
    grouping = ", ".join(base)
    if slices:
        sets = ([f"({', '.join(base)})"] if whole else []) + [
            f"({', '.join([*base, quote('slice:' + sc)])})" for sc in slices]
        grouping = f"GROUPING SETS ({', '.join(sets)})"

    def run(chunk: Sequence[tuple[str, str]]) -> pa.Table:
        rolled = _rollup(chunk) if slices else None
        if rolled is not None:
            # Aggregate once per window and combination of slice values, then roll the few thousand rows up
            # into the grouping sets: each request is aggregated once, not once per set (and Spark does not
            # copy every row once per set). Distinct counts do not add up: they get their own narrow scan.
            fine, outer, distinct = rolled
            body = ", ".join([*keys, *(f"{expr} AS {quote(alias)}" for alias, expr in fine)])
            sql = (f"SELECT {', '.join([*keys, *(f'{expr} AS {quote(alias)}' for alias, expr in outer)])} "
                   f"FROM (SELECT {body} FROM {source} GROUP BY {', '.join(keys)}) AS f GROUP BY {grouping}")
            summary = engine.query(sql)
            if distinct:
                nd = engine.query(f"SELECT {', '.join([*keys, *(f'{e} AS {quote(a)}' for a, e in distinct)])} "
                                  f"FROM {source} GROUP BY {grouping}")
                summary = merge_by_window(summary, nd, {a: a for a, _ in distinct}, slices, group_by)
            return summary
        select = ", ".join([*keys, *(f"{expr} AS {quote(alias)}" for alias, expr in chunk)])
        return engine.query(f"SELECT {select} FROM {source} GROUP BY {grouping}")

    out = batched(run, aggs, ["w", *group_by, *(f"slice:{sc}" for sc in slices)])
    # A numeric column's nulls are its rows less its values: subtracted here rather than counted per window in
    # the scan (one aggregate fewer per column, for the same numbers). The table is rebuilt once: appending a
    # column copies the table's column list, which for a thousand columns costs seconds.
    names, arrays = list(out.column_names), list(out.columns)
    for j, (c, ref) in enumerate(refs.items()):
        if isinstance(ref, NumericRef):
            i = numbers[c] if numbers is not None else j
            names.append(f"null{i}")
            arrays.append(pc.subtract(out.column("rows"), out.column(f"n{i}")))
    return pa.Table.from_arrays(arrays, names=names) if len(names) > out.num_columns else out


def batched(run: Callable[[Sequence[tuple[str, str]]], pa.Table], aggs: Sequence[tuple[str, str]],
            keys: Sequence[str] = ()) -> pa.Table:
    """One query per chunk of at most :data:`MAX_AGGREGATES` aggregates, the results joined on ``keys``.

    ``run`` gets a chunk of ``(alias, SQL aggregate)`` pairs and returns the ``keys`` columns and one
    column per alias; without keys, one row. This is where every wide summary is cut to what one query
    of the engine can hold. Returns the first chunk's table with the later chunks' columns, in order.
    """
    chunks = [aggs[k:k + MAX_AGGREGATES] for k in range(0, len(aggs), MAX_AGGREGATES)] or [aggs]
    first = run(chunks[0])
    if len(chunks) == 1:
        return first
    names, arrays = list(first.column_names), list(first.columns)
    at = _group_key(first, keys) if keys else None
    for chunk in chunks[1:]:
        part = run(chunk)
        if at is not None:
            got = _group_key(part, keys)
            if not np.array_equal(got, at):  # groups come back in any order
                index = {k: i for i, k in enumerate(got)}
                part = part.take(pa.array([index.get(k) for k in at], type=pa.int64()))
        for name in part.column_names:
            if name not in keys:
                names.append(name)
                arrays.append(part.column(name))
    return pa.Table.from_arrays(arrays, names=names)


def _count_if(condition: str) -> str:
    """The rows where ``condition`` holds, as BIGINT (DuckDB's own ``count_if`` is a 128-bit HUGEINT, slow to read)."""
    return f"CAST(count_if({condition}) AS BIGINT)"


_COUNT_IF = re.compile(r"^CAST\(count_if\((.*)\) AS BIGINT\)$", re.DOTALL)
_AGGREGATE = re.compile(r"^\s*(sum|count_if|count|min|max|avg)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)


def _one_call(args: str) -> bool:
    """Whether ``f(args)`` is one call: the parentheses of ``args`` never close the call early."""
    depth = 0
    for ch in args:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def _rollup(aggs: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]],
                                                       list[tuple[str, str]]] | None:
    """Split aggregates into a per-combination pass and its roll-up; None when one does not roll up.

    ``sum``/``count``/``count_if`` add up, ``min``/``max`` take the extreme, ``avg`` is a sum over a count;
    ``approx_count_distinct`` is computed apart. Counts stay BIGINT as in a one-level query.
    """
    fine: list[tuple[str, str]] = []
    outer: list[tuple[str, str]] = []
    distinct: list[tuple[str, str]] = []
    for alias, expr in aggs:
        if expr.startswith("approx_count_distinct("):
            distinct.append((alias, expr))
            continue
        if (c := _COUNT_IF.match(expr)) is not None and _one_call(c.group(1)):
            fine.append((alias, f"count_if({c.group(1)})"))
            outer.append((alias, f"CAST(sum({quote(alias)}) AS BIGINT)"))
            continue
        m = _AGGREGATE.match(expr)
        if m is None or not _one_call(m.group(2)) or "DISTINCT" in m.group(2).upper():
            return None
        fn, arg = m.group(1).lower(), m.group(2)
        a = quote(alias)
        if fn == "avg":
            fine += [(f"{alias}:s", f"sum({arg})"), (f"{alias}:c", f"count({arg})")]
            outer.append((alias, f"sum({quote(alias + ':s')}) / CAST(nullif(sum({quote(alias + ':c')}), 0) AS DOUBLE)"))
            continue
        fine.append((alias, expr))
        outer.append((alias, {"count": f"CAST(sum({a}) AS BIGINT)", "count_if": f"CAST(sum({a}) AS BIGINT)",
                              "sum": f"sum({a})", "min": f"min({a})", "max": f"max({a})"}[fn]))
    return fine, outer, distinct


def column_array(table: pa.Table, name: str) -> np.ndarray:
    """A column as a float numpy array with NaN for nulls."""
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


#: Latency-like quantiles are read from a histogram with buckets ``LOG_BUCKETS`` to a factor of e (1 % wide).
LOG_BUCKETS = 100


def window_quantiles(
    engine: Engine,
    table: str,
    column: str,
    *,
    window_seconds: int,
    quantiles: Sequence[float],
    slices: Sequence[str] = (),
    where: str | None = None,
    whole: bool = True,
) -> pa.Table:
    """Quantiles of a positive column per window (and per slice value), from a log-spaced histogram.

    Exact quantiles need every value of a window in memory and approximate ones differ from
    engine to engine; a histogram with buckets 1 % wide (``floor(ln(x) * 100)``) is counted by
    any engine in one additive ``GROUP BY`` and gives the same quantiles everywhere, to within
    1 % (interpolated geometrically inside the bucket). Values at or below zero count as 0.

    Returns
    -------
    pyarrow.Table
        ``w``, the ``slice:<name>`` columns (as :func:`window_summary` gives them; ``whole=False`` leaves
        out the whole traffic's rows) and one float column ``q<k>`` per quantile; null where a window has no value.
    """
    c = f"CAST({quote(column)} AS DOUBLE)"
    w = f"CAST(floor(epoch(ts) / {int(window_seconds)}) AS BIGINT)"
    bucket = f"CASE WHEN {c} > 0 THEN CAST(floor(ln({c}) * {LOG_BUCKETS}) AS BIGINT) ELSE {_ZERO_BUCKET} END"
    inner = [f"{w} AS w", f"{bucket} AS b"] + [
        f"coalesce(CAST({quote(sc)} AS VARCHAR), '(null)') AS {quote('slice:' + sc)}" for sc in slices]
    cond = f"{c} IS NOT NULL" + (f" AND ({where})" if where else "")
    keys = ["w", *(quote("slice:" + sc) for sc in slices)]
    sets = (["(w, b)"] if whole else []) + [f"(w, {quote('slice:' + sc)}, b)" for sc in slices]
    grouping = f"GROUPING SETS ({', '.join(sets)})" if slices else "w, b"
    hist = engine.query(f"SELECT {', '.join(keys)}, b, count(*) AS n FROM (SELECT {', '.join(inner)} FROM {table} "
                        f"WHERE {cond}) AS t GROUP BY {grouping}")
    names = ["w", *(f"slice:{sc}" for sc in slices)]
    out: dict[str, pa.Array] = {}
    if hist.num_rows == 0:
        out = {n: pa.array([], type=pa.int64() if n == "w" else pa.string()) for n in names}
        out.update({f"q{k}": pa.array([], type=pa.float64()) for k in range(len(quantiles))})
        return pa.table(out)
    key = _group_key(hist, names)
    codes, uniques = np.unique(key, return_inverse=True)
    b = hist.column("b").to_numpy(zero_copy_only=False).astype(np.int64)
    n = hist.column("n").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.lexsort((b, uniques))
    g, b, n = uniques[order], b[order], n[order]
    cum = np.cumsum(n)
    total = np.bincount(g, weights=n, minlength=len(codes))
    base = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    first = np.searchsorted(g, np.arange(len(codes)), side="left")
    last = np.searchsorted(g, np.arange(len(codes)), side="right") - 1
    for k, q in enumerate(quantiles):
        target = base + np.maximum(float(q) * total, 1e-9)
        i = np.clip(np.searchsorted(cum, target - 1e-9 * np.maximum(total, 1.0), side="left"), first, last)
        frac = np.clip((target - (cum[i] - n[i])) / n[i], 0.0, 1.0)
        out[f"q{k}"] = pa.array(np.where(b[i] == _ZERO_BUCKET, 0.0, np.exp((b[i] + frac) / LOG_BUCKETS)))
    rows = first  # one representative row per group gives its keys
    picked = hist.take(pa.array(order[rows]))
    for name in names:
        out[name] = picked.column(name).combine_chunks()
    return pa.table({name: out[name] for name in [*names, *(f"q{k}" for k in range(len(quantiles)))]})


#: The bucket of values at or below zero (below every ``floor(ln(x) * 100)`` of a double).
_ZERO_BUCKET = -1_000_000


def _group_key(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    """One text key per row from the window number and the slice values (null slices kept apart)."""
    parts = [pc.cast(table.column(names[0]), pa.string())]
    for name in names[1:]:
        parts.append(pc.fill_null(table.column(name).cast(pa.string()), "\x00"))
    joined = pc.binary_join_element_wise(*parts, "\x01") if len(parts) > 1 else parts[0]
    return np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)


def _attach(summary: pa.Table, extra: pa.Table, columns: Mapping[str, str], names: Sequence[str]) -> pa.Table:
    """Add ``extra``'s columns (renamed by ``columns``, types kept) to ``summary``, matched on the group
    columns ``names``; a group ``extra`` lacks gets nulls."""
    index = {k: i for i, k in enumerate(_group_key(extra, names))}
    pos = pa.array([index.get(k) for k in _group_key(summary, names)], type=pa.int64())
    for src, dst in columns.items():
        summary = summary.append_column(dst, extra.column(src).take(pos))
    return summary


def merge_by_window(summary: pa.Table, extra: pa.Table, columns: Mapping[str, str], slices: Sequence[str],
                    group_by: Sequence[str] = ()) -> pa.Table:
    """Add ``extra``'s columns (renamed by ``columns``) to ``summary``, matched on ``w``, ``group_by`` and slices.

    The added columns are doubles, null where ``extra`` has no such group or no number.
    """
    out = _attach(summary, extra, columns, ["w", *group_by, *(f"slice:{sc}" for sc in slices)])
    for i, dst in enumerate(columns.values(), start=summary.num_columns):
        vals = out.column(i).to_numpy(zero_copy_only=False).astype(np.float64)
        out = out.set_column(i, dst, pa.array(vals, type=pa.float64(), from_pandas=True))
    return out
