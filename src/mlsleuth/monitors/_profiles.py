"""Windowed production profiles computed by the query engine in one scan.

For every window (any size), segment value and model version, one ``GROUP BY`` query returns,
per numeric column, the counts below each of the reference profile's fixed edges, the null and
zero counts, sums, sums of squares, min and max; a second query (one ``GROUP BY`` per categorical
column, ``UNION ALL``-ed) returns category counts. Only these aggregates (one row per group) reach
Python, where they become :class:`~mlsleuth.profiles.NumericProfile` and
:class:`~mlsleuth.profiles.CategoricalProfile` objects. Profiles are monoids, so the profile of all
traffic in a window is the merge of its segments' profiles, and a day is the merge of its hours.

The SQL keeps to functions sqlglot transpiles to Spark SQL (``count_if``, ``epoch``, ``floor``,
``CAST``, ``TRY_CAST``).
"""

from __future__ import annotations

import math
import types
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from mlsleuth.monitors._findings import Segment
from mlsleuth.monitors._source import LogSource, TimeRange, log_schema, q, window_key
from mlsleuth.profiles import CategoricalProfile, ColumnProfile, NumericProfile, ReferenceProfile
from mlsleuth.schema._tables import at_least, at_most

__all__ = ["WindowProfile", "WindowProfiles", "window_profiles"]

_NULL = "(null)"


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                or pa.types.is_boolean(t))


@dataclass(frozen=True, eq=False)
class WindowProfile:
    """The profiles of one window of one segment (and model version).

    Attributes
    ----------
    start, end
        The window ``[start, end)``.
    segment
        ``(column, value)`` pairs, ``()`` for all traffic.
    version
        The ``model_version``, or ``None`` when versions are merged.
    rows
        Requests in the window.
    columns
        Column name to its profile on the reference's edges / vocabulary.
    last_ts
        The latest request, ``None`` for an empty window.
    errors, fallbacks
        Requests whose ``error`` is set / starts with ``fallback``.
    confidence_sum
        Sum over requests of ``|score - 0.5| * 2`` (the classifier's confidence).
    """

    start: datetime
    end: datetime
    segment: Segment
    version: str | None
    rows: int
    columns: Mapping[str, ColumnProfile] = field(default_factory=dict)
    last_ts: datetime | None = None
    errors: int = 0
    fallbacks: int = 0
    confidence_sum: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", types.MappingProxyType(dict(self.columns)))

    def merge(self, other: WindowProfile, *, segment: Segment | None = None, version: str | None = None,
              start: datetime | None = None, end: datetime | None = None) -> WindowProfile:
        """Both windows' rows together (labels of the result given by the keyword arguments)."""
        cols: dict[str, ColumnProfile] = dict(self.columns)
        for name, prof in other.columns.items():
            cols[name] = cols[name].merge(prof) if name in cols else prof  # type: ignore[arg-type]
        last = max((t for t in (self.last_ts, other.last_ts) if t is not None), default=None)
        return WindowProfile(
            start if start is not None else min(self.start, other.start),
            end if end is not None else max(self.end, other.end),
            self.segment if segment is None else segment, version, self.rows + other.rows, cols, last,
            self.errors + other.errors, self.fallbacks + other.fallbacks, self.confidence_sum + other.confidence_sum,
        )


@dataclass(frozen=True)
class WindowProfiles:
    """Profiles of every window at the finest grain asked for (window x segment x version).

    Attributes
    ----------
    window_seconds
        The window size.
    segment_columns
        The segment columns grouped by (``()`` for none).
    by_version
        Whether model versions were kept apart.
    windows
        One :class:`WindowProfile` per non-empty group, ordered by start, segment, version.
    starts
        Every window start from the first to the last, empty windows included.
    """

    window_seconds: int
    segment_columns: tuple[str, ...]
    by_version: bool
    windows: tuple[WindowProfile, ...]
    starts: tuple[datetime, ...]

    def grouped(self, *, segments: bool, versions: bool = False) -> dict[tuple[Segment, str | None],
                                                                         dict[datetime, WindowProfile]]:
        """Merge the finest grain to (segment or all traffic) x (version or all) per window.

        Returns ``{(segment, version): {window_start: profile}}``; all traffic is segment ``()``.
        """
        out: dict[tuple[Segment, str | None], dict[datetime, WindowProfile]] = defaultdict(dict)
        for w in self.windows:
            seg = w.segment if segments else ()
            ver = w.version if versions else None
            series = out[(seg, ver)]
            prev = series.get(w.start)
            series[w.start] = (
                _relabel(w, seg, ver) if prev is None else prev.merge(w, segment=seg, version=ver, start=w.start,
                                                                      end=w.end)
            )
        return dict(out)

    def series(self, segment: Segment = (), version: str | None = None) -> list[WindowProfile]:
        """One profile per window start (empty profiles for empty windows) of a segment / version."""
        groups = self.grouped(segments=bool(segment), versions=version is not None)
        got = groups.get((segment, version), {})
        size = timedelta(seconds=self.window_seconds)
        return [got.get(s) or WindowProfile(s, s + size, segment, version, 0) for s in self.starts]


def _relabel(w: WindowProfile, segment: Segment, version: str | None) -> WindowProfile:
    if w.segment == segment and w.version == version:
        return w
    return WindowProfile(w.start, w.end, segment, version, w.rows, w.columns, w.last_ts, w.errors, w.fallbacks,
                         w.confidence_sum)


def _numeric_parts(i: int, expr: str, edges: Sequence[float]) -> list[str]:
    parts = [
        f"count({expr}) AS n{i}", f"count_if({expr} = 0) AS z{i}", f"sum({expr}) AS s{i}",
        f"sum({expr} * {expr}) AS ss{i}", f"min({expr}) AS lo{i}", f"max({expr}) AS hi{i}",
    ]
    parts += [f"count_if({expr} < {at_least(e)!r}) AS lt{i}_{k}" for k, e in enumerate(edges[:-1])]
    parts.append(f"count_if({expr} <= {at_most(edges[-1])!r}) AS le{i}")
    return parts


def _numeric_profile(row: Mapping[str, object], i: int, edges: tuple[float, ...]) -> NumericProfile:
    n = int(row[f"n{i}"] or 0)  # type: ignore[call-overload]
    cum = [int(row[f"lt{i}_{k}"] or 0) for k in range(len(edges) - 1)]  # type: ignore[call-overload]
    le = int(row[f"le{i}"] or 0)  # type: ignore[call-overload]
    counts = [cum[0]] + [cum[k + 1] - cum[k] for k in range(len(cum) - 1)] + [le - cum[-1], n - le]
    lo, hi = row[f"lo{i}"], row[f"hi{i}"]
    total = float(row[f"s{i}"] or 0.0)  # type: ignore[arg-type]
    total_sq = float(row[f"ss{i}"] or 0.0)  # type: ignore[arg-type]
    return NumericProfile.from_counts(
        edges, counts, nulls=int(row["rows"]) - n, zeros=int(row[f"z{i}"] or 0),  # type: ignore[call-overload]
        total=total if math.isfinite(total) else 0.0, total_sq=total_sq if math.isfinite(total_sq) else 0.0,
        min=math.inf if lo is None else float(lo),  # type: ignore[arg-type]
        max=-math.inf if hi is None else float(hi),  # type: ignore[arg-type]
    )


def window_profiles(
    source: LogSource,
    reference: ReferenceProfile,
    *,
    window_seconds: int,
    segment: Sequence[str] = (),
    by_version: bool = False,
    time_range: TimeRange | None = None,
    columns: Iterable[str] | None = None,
) -> WindowProfiles:
    """Profile production windows on the reference profile's edges and vocabularies.

    Parameters
    ----------
    source
        Where the ``log`` view lives (a store, or :class:`~mlsleuth.monitors.ArrowSource`).
    reference
        The reference profile: its numeric columns' edges and categorical vocabularies are used.
    window_seconds
        Window size; windows start at multiples of it since the Unix epoch (UTC).
    segment
        Segment columns to group by (each value its own profile).
    by_version
        Keep ``model_version`` values apart.
    time_range
        The model and ``[since, until)`` to read.
    columns
        Profile only these reference columns (default: every reference column the log has).

    Returns
    -------
    WindowProfiles
    """
    tr = time_range or TimeRange()
    schema = log_schema(source)
    names = schema.names
    types_ = {f.name: f.type for f in schema}
    wanted = [c for c in (reference.columns if columns is None else columns) if c in names and c in reference.columns]
    numeric = [c for c in wanted if isinstance(reference.columns[c], NumericProfile)]
    categorical = [c for c in wanted if isinstance(reference.columns[c], CategoricalProfile)]
    seg_cols = tuple(segment)
    for s in seg_cols:
        if s not in names:
            from mlsleuth.errors import SchemaError

            raise SchemaError(f"cannot segment by a column the log lacks; it has {sorted(names)}", column=s)
    group_exprs = [window_key(window_seconds)] + [f"CAST({q(s)} AS VARCHAR)" for s in seg_cols]
    if by_version and "model_version" in names:
        group_exprs.append("CAST(model_version AS VARCHAR)")
    keys = [f"g{j}" for j in range(len(group_exprs))]
    parts = [f"{e} AS {k}" for e, k in zip(group_exprs, keys, strict=True)] + ["count(*) AS rows", "max(ts) AS last_ts"]
    if "error" in names:
        parts += ["count_if(error IS NOT NULL) AS errors",
                  "count_if(lower(CAST(error AS VARCHAR)) LIKE 'fallback%') AS fallbacks"]
    if "score" in names and _is_number(types_["score"]):
        parts.append("sum(abs(CAST(score AS DOUBLE) - 0.5) * 2) AS conf")
    for i, c in enumerate(numeric):
        ref = reference.columns[c]
        assert isinstance(ref, NumericProfile)
        cast = "CAST" if _is_number(types_[c]) else "TRY_CAST"
        parts += _numeric_parts(i, f"{cast}({q(c)} AS DOUBLE)", ref.edges)
    by = ", ".join(str(j + 1) for j in range(len(keys)))
    where = tr.where(names)
    table = source.sql(f"SELECT {', '.join(parts)} FROM log{where} GROUP BY {by}")
    size = timedelta(seconds=window_seconds)

    def label(row: Mapping[str, object]) -> tuple[datetime, Segment, str | None]:
        start = datetime.fromtimestamp(int(row["g0"]) * window_seconds, UTC)  # type: ignore[call-overload]
        seg = tuple((s, _NULL if row[f"g{j + 1}"] is None else str(row[f"g{j + 1}"])) for j, s in enumerate(seg_cols))
        ver = None
        if len(keys) > len(seg_cols) + 1:
            v = row[keys[-1]]
            ver = _NULL if v is None else str(v)
        return start, seg, ver

    groups: dict[tuple[datetime, Segment, str | None], dict[str, object]] = {}
    for row in table.to_pylist():
        groups[label(row)] = row
    cat_counts: dict[tuple[datetime, Segment, str | None], dict[str, dict[str | None, int]]] = defaultdict(dict)
    if categorical:
        selects = []
        cat_by = ", ".join(str(j + 2) for j in range(len(keys) + 1))
        for i, c in enumerate(categorical):
            selects.append(
                f"SELECT {i} AS col, {', '.join(f'{e} AS {k}' for e, k in zip(group_exprs, keys, strict=True))}, "
                f"CAST({q(c)} AS VARCHAR) AS v, count(*) AS n FROM log{where} GROUP BY {cat_by}"
            )
        cats = source.sql(" UNION ALL ".join(selects))
        cols = {k: cats.column(k).to_pylist() for k in ["col", *keys, "v", "n"]}
        for r in range(cats.num_rows):
            row = {k: cols[k][r] for k in keys}
            name = categorical[int(cols["col"][r])]
            cat_counts[label(row)].setdefault(name, {})[cols["v"][r]] = int(cols["n"][r])
    windows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] or "")):
        row = groups[key]
        start, seg, ver = key
        profs: dict[str, ColumnProfile] = {}
        for i, c in enumerate(numeric):
            ref = reference.columns[c]
            assert isinstance(ref, NumericProfile)
            profs[c] = _numeric_profile(row, i, ref.edges)
        for c in categorical:
            ref = reference.columns[c]
            assert isinstance(ref, CategoricalProfile)
            counts = cat_counts.get(key, {}).get(c, {})
            nulls = counts.pop(None, 0)
            vals = tuple(v for v in counts if v is not None)
            prof = CategoricalProfile(vals, tuple(counts[v] for v in vals), 0, nulls, False)
            profs[c] = prof
        last = row["last_ts"]
        windows.append(WindowProfile(
            start, start + size, seg, ver, int(row["rows"]), profs,  # type: ignore[call-overload]
            last if isinstance(last, datetime) else None,
            int(row.get("errors") or 0), int(row.get("fallbacks") or 0),  # type: ignore[call-overload]
            float(row.get("conf") or 0.0),  # type: ignore[arg-type]
        ))
    starts = _starts(tr, [w.start for w in windows], window_seconds)
    return WindowProfiles(window_seconds, seg_cols, by_version and "model_version" in names, tuple(windows), starts)


def _starts(tr: TimeRange, seen: list[datetime], window_seconds: int) -> tuple[datetime, ...]:
    """Every window start between the range's bounds (or the data's first and last window)."""
    size = window_seconds
    lo = tr.since.timestamp() if tr.since is not None else (min(seen).timestamp() if seen else None)
    hi = tr.until.timestamp() if tr.until is not None else (max(seen).timestamp() + size if seen else None)
    if lo is None or hi is None:
        return ()
    first = math.floor(lo / size)
    last = math.ceil(hi / size)
    k = np.arange(first, max(last, first + 1), dtype=np.int64)
    if k.size > 1_000_000:
        from mlsleuth.errors import ConfigError

        raise ConfigError(f"{k.size:,} windows of {size} s between {tr.since} and {tr.until}: use a larger window",
                          column="window")
    return tuple(datetime.fromtimestamp(int(x) * size, UTC) for x in k)
