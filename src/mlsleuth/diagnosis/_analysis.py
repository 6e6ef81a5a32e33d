"""Triage: per-window series from the engine, and what changed in them.

One query summarises every window (default one hour) of the log: per feature and
input its distribution at the reference's deciles, null/zero/out-of-range counts and
distinct values; the score, the positive rate, labelled outcomes, latency, errors and
the model-version mix. Everything after that works on those few hundred rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.diagnosis._data import CaseInput, LogView, numeric_columns, ts_sql
from mlsleuth.diagnosis._locate import scope_sql
from mlsleuth.diagnosis._signals import (
    Split,
    deseason,
    level_split,
    nanmedian,
    proportion_split,
    proportion_splits,
    ramp_bounds,
    row_split,
    seasonal_rate,
    split_effects,
    transition_width,
)
from mlsleuth.diagnosis._thresholds import DEFAULT_THRESHOLDS, Thresholds, thresholds_for
from mlsleuth.monitors._windows import (
    CategoricalRef,
    NumericRef,
    batched,
    column_array,
    merge_by_window,
    reference_summary,
    window_quantiles,
    window_summary,
)
from mlsleuth.schema import Role
from mlsleuth.schema._tables import at_most
from mlsleuth.store import DuckDBEngine, Engine
from mlsleuth.store._sql_triage import (
    HAS_ERROR as HAS_ERROR,  # re-exported: the charts and hypotheses import it from here
)
from mlsleuth.store._sql_triage import (
    case_at_or_below,
    case_in_categories,
    case_is_null,
    case_is_zero,
    classes_sql,
    confusion_aggregates,
    correlation,
    correlations_sql,
    coupling_key,
    coupling_sql,
    decoupled_case,
    decoupled_known,
    distinct_predictions_sql,
    fallback_score_sql,
    labelled_aggregate,
    models_sql,
    multiclass_aggregates,
    positive_aggregates,
    predicted_value_aggregates,
    regression_aggregates,
    rows_between_sql,
    serving_aggregates,
    slice_reference_aggregates,
    slice_reference_sql,
    small_value_counts_sql,
    sql_value,
    time_bounds_sql,
    time_core_sql,
    time_outliers_sql,
    total_of,
    value_mix_aggregates,
    value_or_zero,
    versions_sql,
)
from mlsleuth.store._sql_triage import fallback_case as _fallback_case

__all__ = ["ColumnChange", "MetricChange", "Triage", "choose_window", "run_triage"]

_WINDOWS = (300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

# The numbers that decide live in the thresholds table (diagnosis/_thresholds.py); these are the
# engine's limits and the log's shape.
#: The log's core span is its 1 %-99 % quantile range of timestamps: rows further than its length (at least
#: thresholds.outlier_margin_hours) outside it are outliers (a clock years off), reported and left out.
OUTLIER_QUANTILES = (0.01, 0.99)
#: Feature and input columns followed in each slice of traffic at most: a wider log's slices follow the
#: columns that moved most in all traffic, so that its per-slice scans cost what a narrow log's do.
MAX_SLICED_COLUMNS = 100
#: Column qualities that say the data's domain changed (categories or values the training data never
#: had): a schema-level defect even when outputs barely move.
DOMAIN_QUALITIES = ("unseen", "out_of_range")


def choose_window(n_rows: int, span_seconds: float) -> int:
    """The smallest window with at most ~400 windows and at least ~150 rows in an average one."""
    for w in _WINDOWS:
        n_win = max(span_seconds / w, 1.0)
        if n_win <= 400 and n_rows / n_win >= 150:
            return w
    for w in _WINDOWS:
        if max(span_seconds / w, 1.0) <= 400 and n_rows / max(span_seconds / w, 1.0) >= 30:
            return w
    return _WINDOWS[-1]


@dataclass(frozen=True)
class ColumnChange:
    """How one feature or input column changed inside the log, and against the reference.

    ``shift`` is the before/after distance (KS at the reference deciles for numbers,
    total variation for categories); ``skew`` the same distance between the early log and
    the reference (NaN without a reference column).
    """

    column: str
    role: Role
    numeric: bool
    split: Split | None
    onset_index: int | None
    shift: float
    z: float
    gradual: bool
    null_before: float = 0.0
    null_after: float = 0.0
    zero_before: float = 0.0
    zero_after: float = 0.0
    distinct_before: float = math.nan
    distinct_after: float = math.nan
    nd_before: float = math.nan
    nd_after: float = math.nan
    oor_before: float = 0.0
    oor_after: float = 0.0
    mean_before: float = math.nan
    mean_after: float = math.nan
    median_before: float = math.nan
    median_after: float = math.nan
    unseen_after: float = 0.0
    skew: float = math.nan
    skew_null: float = 0.0
    skew_zero: float = 0.0
    ref_mean: float = math.nan
    skew_noise: float = 0.0  # the skew sampling alone reaches (thresholds.skew_noise), from the sizes compared
    detail: str = ""
    rows_before: float = 0.0
    rows_after: float = 0.0
    z_scale: float = 1.0  # > 1 when a daily cycle could not be removed (a log shorter than two days)
    start_index: int | None = None  # where a gradual change began (its ramp's start)
    wander: float = 0.0  # how far single windows stray from the log's pooled distribution, beyond noise
    # A feature that the reference shows is fixed by one input: the share of values unlike the
    # reference's for their input, before and after its split, the share of its variance the input
    # leaves unexplained after it, and the per-row test (SQL).
    parent: str = ""
    mismatch_before: float = 0.0
    mismatch_after: float = 0.0
    unexplained_after: float = 0.0
    decoupled_sql: str = ""
    th: Thresholds = field(default=DEFAULT_THRESHOLDS, compare=False, repr=False)  # what it is judged by

    @property
    def quality(self) -> str | None:
        """The data-quality failure the change looks like, if any: null, zero, constant, stale, decoupled."""
        if self.null_after - self.null_before >= 0.03 and self.null_after >= 2 * self.null_before:
            return "null"
        if self.zero_after - self.zero_before >= 0.03 and self.zero_after >= 2 * self.zero_before:
            return "zero"
        clock = self.z_scale > 1 and self.wander >= 0.15  # follows the hour in a log too short to say more
        if self.numeric and self.nd_before >= 3 and self.nd_after <= 1.5 and not clock:
            return "constant"
        if self.oor_after - self.oor_before >= 0.02 and self.oor_after >= 3 * self.oor_before:
            return "out_of_range"
        if not self.numeric and self.unseen_after >= 0.02:
            return "unseen"
        # Far fewer distinct values per row: a fifth as many, or half as many of a mostly-unique column
        # (a frozen pool of old values repeating).
        fewer = (self.distinct_after <= 0.2 * self.distinct_before and self.distinct_before >= 0.05) or (
            self.distinct_after <= 0.5 * self.distinct_before and self.distinct_before >= 0.5)
        if self.numeric and self.distinct_before > 0 and fewer and not clock:
            return "stale"
        if self.mismatch_after - self.mismatch_before >= 0.3 and self.unexplained_after >= 0.3:
            return "decoupled"  # no longer follows the input that fixes it: stale or mis-joined values
        return None

    @property
    def changed(self) -> bool:
        """Whether the column changed materially inside the log."""
        if self.split is None or min(self.rows_before, self.rows_after) < self.th.min_side_rows:
            return False  # a few hundred rows at least on each side: not a burst at the edge of the log
        if self.z_scale > 1 and self.wander >= 0.15 and self.quality is None:
            return False  # it follows the clock, and the log is too short to take the daily cycle out
        return self.z >= self.th.min_change_z * self.z_scale and (self.shift >= 0.06 or self.quality is not None)

    @property
    def magnitude(self) -> float:
        """One number for ranking changed columns."""
        q = max(self.null_after - self.null_before, self.zero_after - self.zero_before, 0.0)
        return max(self.shift, q)


@dataclass(frozen=True)
class MetricChange:
    """A change in one of the model's output, quality or serving metrics."""

    metric: str
    split: Split
    material: bool
    gradual: bool
    layer: str
    unit: str = ""
    start_index: int | None = None  # where a gradual change began (its ramp's start)
    ramp: tuple[int, int] | None = None  # broken-stick fit of a noisy (labelled) metric: first and last window
    subject: str = ""  # what the metric is of, when it is one of several (the class of a per-class recall)

    @property
    def strength(self) -> float:
        """How far above noise, capped, for ranking."""
        return min(self.split.z, 100.0)


@dataclass
class Triage:
    """The per-window series and everything measured on them."""

    case: CaseInput
    window: int
    starts: list[datetime]
    rows: np.ndarray
    columns: dict[str, ColumnChange]
    metrics: dict[str, MetricChange]
    series: dict[str, np.ndarray]
    refs: Mapping[str, NumericRef | CategoricalRef]
    positive: object | None
    versions: list[str]
    version_shares: np.ndarray
    importance: dict[str, float] = field(default_factory=dict)
    engine: Engine | None = None
    score_is_prob: bool = True
    scope: dict[str, str] | None = None
    classes: list[str] = field(default_factory=list)
    fallback: Fallback | None = None  # the score served in place of the model's, when the log or config shows one
    models: list[str] = field(default_factory=list)  # model names in the log, for matching events
    slices: dict[tuple[str, str], Triage] = field(default_factory=dict)
    ref_scoped: bool = False  # a slice compared with the same slice of the reference
    daily: bool = True  # the log spans the daily cycle (two days or more), so it can be compared to a reference
    kind: str = "binary"  # what the score is: binary, regression (a predicted value) or multiclass (a class)

    @property
    def th(self) -> Thresholds:
        """The thresholds this model's config asks for (the defaults, with its ``[thresholds]``)."""
        return thresholds_for(self.case.config)

    def time_of(self, index: int | None) -> datetime | None:
        """Start of window ``index`` (None stays None)."""
        if index is None:
            return None
        index = min(max(index, 0), len(self.starts) - 1)
        return self.starts[index]


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def _positive_class(eng: Engine, schema: pa.Schema, config_positive: object | None) -> object | None:
    numeric_pred = "prediction" in schema.names and not _is_text(schema.field("prediction").type)
    # A text positive class names a label value; numeric predictions then keep their own 1.
    if config_positive is not None and not (numeric_pred and isinstance(config_positive, str)):
        return config_positive
    for col in ("prediction", "label"):
        if col in schema.names:
            # Three values at most come back: enough to know whether there are two.
            rows = eng.query(small_value_counts_sql(col, 3)).to_pylist()
            vals = [r["v"] for r in rows]
            if len(vals) == 0 or len(vals) > 2:
                continue
            if set(vals) <= {0, 1}:
                return 1
            counts = {r["v"]: int(r["n"]) for r in rows}
            return min(counts, key=lambda v: (counts[v], str(v)))  # the minority class
    return None


#: An integer prediction with more distinct values than this is a predicted quantity (minutes, units), not a class.
MAX_CLASSES = 50
#: Predicted classes of a multi-class model followed per window, the most frequent first.
MAX_FOLLOWED_CLASSES = 12
#: Model versions followed per window, the most frequent first.
MAX_FOLLOWED_VERSIONS = 8


def _predicts_values(eng: Engine, t: pa.DataType) -> bool:
    """Whether the predictions are values (a regressor): floats, or integers with more values than classes have."""
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return True
    if not pa.types.is_integer(t):
        return False
    n = eng.query(distinct_predictions_sql(MAX_CLASSES + 1))
    return int(n.to_pylist()[0]["n"]) > MAX_CLASSES


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _mature(nlab: np.ndarray, rows: np.ndarray, maturity: float) -> np.ndarray:
    """Labelled counts of the windows whose labels have mostly arrived; zero elsewhere."""
    cov = np.where(rows > 0, nlab / np.maximum(rows, 1), 0.0)
    typical = float(np.median(cov[cov > 0])) if np.any(cov > 0) else 0.0
    return np.where(cov >= maturity * typical, nlab, 0.0)


_literal = sql_value  # the name the charts and hypotheses import


@dataclass(frozen=True)
class Fallback:
    """The score served in place of the model's, and whether a row must also record an error to count."""

    score: float
    with_error: bool


def fallback_case(fb: Fallback) -> str:
    """SQL that is 1.0 on a row served the fallback and 0.0 elsewhere."""
    return _fallback_case(fb.score, with_error=fb.with_error)


def _fallback_score(eng: Engine, configured: float | None, th: Thresholds, *, has_error: bool) -> Fallback | None:
    """The config's fallback score, else the score most rows with an error share (thresholds.fallback_error_share)."""
    if configured is not None:
        return Fallback(float(configured), with_error=False)
    if not has_error:
        return None
    rows = eng.query(fallback_score_sql()).to_pylist()
    if not rows or rows[0]["n"] < th.fallback_min_rows or rows[0]["n"] < th.fallback_error_share * rows[0]["total"]:
        return None
    return Fallback(float(rows[0]["score"]), with_error=True)


@dataclass(frozen=True)
class _Frame:
    """The log's time frame: its window, the windows per day and how much evidence a change needs."""

    window: int
    span: float
    period: int | None  # windows per day, when the log spans days and windows are short enough to see a cycle
    z_scale: float  # 2 between a few hours and two days: a daily cycle then looks like a change


def _frame(eng: Engine) -> _Frame:
    bounds = eng.query(time_bounds_sql()).to_pylist()[0]
    t0, t1, n_rows = bounds["t0"], bounds["t1"], int(bounds["n"])
    span = max((t1 - t0).total_seconds(), 1.0)
    window = choose_window(n_rows, span)
    period = 86400 // window if window <= 3 * 3600 and span >= 2 * 86400 else None
    # Between a few hours and two days, a daily cycle looks like a change and cannot be removed:
    # ask for twice the evidence.
    z_scale = 2.0 if period is None and span > 6 * 3600 and window < 86400 else 1.0
    return _Frame(window, span, period, z_scale)


@dataclass(frozen=True)
class _Columns:
    """The log's feature and input columns, and what each is compared with (its reference, or the log)."""

    numeric: list[str]
    categorical: list[str]
    seg_cols: list[str]  # segment columns other than the model and its version
    ref_num: list[str]  # numeric columns the reference holds as numbers
    ref_cat: list[str]
    has_score: bool
    refs: dict[str, NumericRef | CategoricalRef]  # features, inputs, the score, then segments
    from_log: frozenset[str]  # columns summarised from the log itself (no reference column)


def _columns(eng: Engine, case: CaseInput) -> _Columns:
    log, schema, ref = case.log, case.schema, case.reference
    roles = (Role.FEATURE, Role.INPUT)
    numeric = numeric_columns(schema, log, roles)
    numeric_set = set(numeric)
    categorical = [c.name for c in schema.columns if c.role in roles and c.name not in numeric_set]
    # The reference's types looked up once: a wide reference's schema and name list rebuilt per column cost seconds.
    ref_types = {f.name: f.type for f in ref.schema} if ref is not None else {}
    ref_num = [c for c in numeric if c in ref_types
               and (pa.types.is_integer(ref_types[c]) or pa.types.is_floating(ref_types[c]))]
    ref_cat = [c for c in categorical if c in ref_types]
    has_score = "score" in log.column_names and log.schema.field("score").type == pa.float64()
    refs: dict[str, NumericRef | CategoricalRef] = {}
    if ref is not None and (ref_num or ref_cat or (has_score and "score" in ref.column_names)):
        eng.register("ref", ref)
        score_ref = ["score"] if has_score and "score" in ref.column_names else []
        refs.update(reference_summary(eng, "ref", ref_num + score_ref, ref_cat))
    own_num = [c for c in numeric + (["score"] if has_score else []) if c not in refs]
    own_cat = [c for c in categorical if c not in refs]
    seg_cols = [s for s in schema.segments if s not in ("model", "model_version")]
    own = reference_summary(eng, "log", own_num, own_cat + seg_cols)
    refs.update(own)
    return _Columns(numeric, categorical, seg_cols, ref_num, ref_cat, has_score, refs, frozenset(own))


@dataclass(frozen=True)
class _Outputs:
    """What the model outputs and what its outcomes are, and the per-window aggregates that follow them."""

    positive: object | None
    classes: list[str]
    versions: list[str]
    models: list[str]
    fallback: Fallback | None
    binary: bool  # labelled outcomes of a binary model: a confusion matrix per window
    kind: str
    extra: dict[str, str]  # (alias: SQL aggregate) added to the per-window scan


def _outputs(eng: Engine, case: CaseInput, has_score: bool) -> _Outputs:
    log = case.log
    names = log.column_names
    positive = _positive_class(eng, log.schema, case.config.positive_class)
    extra: dict[str, str] = {}
    if "prediction" in names and positive is not None:
        extra.update(positive_aggregates(positive))
    elif "prediction" in names and _predicts_values(eng, log.schema.field("prediction").type):
        extra.update(predicted_value_aggregates())
    classes: list[str] = []
    if "prediction" in names and positive is None and "pred_sum" not in extra:
        # A multi-class model: watch the mix of predicted classes.
        classes = [str(r["v"]) for r in eng.query(classes_sql(MAX_FOLLOWED_CLASSES)).to_pylist()]
        extra.update(value_mix_aggregates("cls", "prediction", classes, as_text=True))
    extra.update(serving_aggregates(latency="latency_ms" in names, errors="error" in names))
    fallback = _fallback_score(eng, case.config.fallback_score, thresholds_for(case.config),
                               has_error="error" in names) if has_score else None
    if fallback is not None:
        extra["fallback"] = total_of(fallback_case(fallback))
    label_ok = case.has_labels and "label" in names
    binary = label_ok and positive is not None and "prediction" in names
    if binary and _is_text(log.schema.field("label").type) != _is_text(log.schema.field("prediction").type):
        binary = False  # labels and predictions of different kinds: no confusion matrix to build
    if label_ok:
        extra["nlab"] = labelled_aggregate()
        if binary:
            extra.update(confusion_aggregates(positive, has_score=has_score))
        elif _is_number(log.schema.field("label").type) and "prediction" in names \
                and _is_number(log.schema.field("prediction").type):
            extra.update(regression_aggregates())  # a regressor: its error per labelled request
        elif classes and "prediction" in names:
            # A multi-class model: labelled requests it got right, overall and per class (recall). A broken
            # input often costs one class most of its recall while overall accuracy, ruled by the commonest
            # class, holds.
            extra.update(multiclass_aggregates(classes))
    kind = "multiclass" if len(classes) > 1 else "regression" if "pred_sum" in extra else "binary"
    models = [r["m"] for r in eng.query(models_sql()).to_pylist()] if "model" in names else []
    versions: list[str] = []
    if "model_version" in names:
        versions = [r["v"] for r in eng.query(versions_sql(MAX_FOLLOWED_VERSIONS)).to_pylist()]
        extra.update(value_mix_aggregates("ver", "model_version", versions, as_text=False))
    return _Outputs(positive, classes, versions, models, fallback, binary, kind, extra)


class _Summary:
    """The per-window summary table, on the grid of every window from the first to the last."""

    def __init__(self, table: pa.Table, window: int, grid: np.ndarray | None = None) -> None:
        self.table = table
        if grid is None:
            all_w = table.column("w").to_numpy()
            grid = np.arange(int(all_w.min()), int(all_w.max()) + 1)
        self.grid = grid
        self.starts = [datetime.fromtimestamp(int(g) * window, tz=UTC) for g in self.grid]
        self._arrays: dict[str, np.ndarray] = {}

    def column(self, name: str, sel: np.ndarray) -> np.ndarray:
        """Column ``name`` of the summary's rows ``sel`` (each column is read out of Arrow once)."""
        if name not in self._arrays:
            self._arrays[name] = column_array(self.table, name)
        return self._arrays[name][sel]


class _Windows:
    """One slice of traffic's rows of a :class:`_Summary`, as one value per window of the grid.

    The first and last windows are usually cut short by the log's edges: a partial window is not a
    change, so it is left out (counted as empty).
    """

    def __init__(self, summary: _Summary, sel: np.ndarray) -> None:
        self.summary, self.sel = summary, sel
        t_count = len(summary.grid)
        self.pos_of = np.searchsorted(summary.grid, summary.column("w", sel).astype(np.int64))
        raw_rows = np.zeros(t_count)
        raw_rows[self.pos_of] = np.nan_to_num(summary.column("rows", sel), nan=0.0)
        typical = float(np.median(raw_rows[raw_rows > 0])) if np.any(raw_rows > 0) else 0.0
        self.keep = np.ones(t_count, dtype=bool)
        for edge in (0, t_count - 1):
            if raw_rows[edge] < 0.5 * typical:
                self.keep[edge] = False
        self.rows = self.col("rows")

    def col(self, name: str) -> np.ndarray:
        """Column ``name`` per window, 0 where a window has none (or is left out)."""
        out = np.zeros(len(self.summary.grid))
        out[self.pos_of] = np.nan_to_num(self.summary.column(name, self.sel), nan=0.0)
        return np.where(self.keep, out, 0.0)

    def col_nan(self, name: str) -> np.ndarray:
        """Column ``name`` per window, NaN where a window has none (or is left out)."""
        out = np.full(len(self.summary.grid), np.nan)
        out[self.pos_of] = self.summary.column(name, self.sel)
        return np.where(self.keep, out, np.nan)


@dataclass
class _Plan:
    """Everything the per-slice step reads: the inputs, what was summarised, and the summary itself."""

    case: CaseInput
    eng: Engine
    frame: _Frame
    cols: _Columns
    outs: _Outputs
    couplings: dict[str, _Coupling]
    slice_cols: list[str]
    summary: _Summary
    sliced: set[str]  # the columns followed in each slice
    slice_refs: dict[tuple[str, str], dict[str, NumericRef]] = field(default_factory=dict)

    @property
    def th(self) -> Thresholds:
        """The thresholds the model config asks for."""
        return thresholds_for(self.case.config)


def run_triage(case: CaseInput, *, engine: Engine | None = None) -> Triage:
    """Summarise the log per window and measure what changed in each column and metric.

    Every whole-log computation is a query of the engine (the log may be a view of files on
    disk, :class:`~mlsleuth.diagnosis.LogView`); only per-window summaries come back.
    """
    base: Engine = engine or DuckDBEngine()
    eng = _bind(base, case.log)
    th = thresholds_for(case.config)
    outliers = _time_outliers(eng, th.outlier_margin_hours * 3600)
    if outliers is not None:
        case = _without_times(case, *outliers)
        eng = _bind(base, case.log)
    frame = _frame(eng)
    cols = _columns(eng, case)
    outs = _outputs(eng, case, cols.has_score)
    refs, schema = cols.refs, case.schema
    # Slice by segment columns with a handful of values: each slice must be big enough to judge.
    slice_cols = [c for c in cols.seg_cols if isinstance(r := refs.get(c), CategoricalRef) and r.categories
                  and len(r.categories) <= 10 and sum(r.shares) + r.null_rate >= 0.995]
    couplings = _couplings(eng, case, [c for c in cols.ref_num if c.startswith("feature.")],
                           [c for c in cols.ref_cat + cols.ref_num if schema[c].role is Role.INPUT],
                           cols.ref_num) if case.reference is not None else {}
    extra = dict(outs.extra)
    for j, cp in enumerate(couplings.values()):
        extra[f"cpm{j}"] = total_of(cp.decoupled_sql)
        extra[f"cpn{j}"] = cp.judged_sql
    outs = replace(outs, extra=extra)
    # A wide log is summarised per slice only for the columns that moved most in all traffic (below).
    wide = bool(slice_cols) and len(refs) > MAX_SLICED_COLUMNS
    summary = _summarise(eng, case, frame, cols, outs, refs, () if wide else slice_cols)
    plan = _Plan(case, eng, frame, cols, outs, couplings, slice_cols, summary, set(refs))
    in_slice = np.zeros(summary.table.num_rows, dtype=bool)
    for c in slice_cols if not wide else ():
        in_slice |= pc.is_valid(summary.table.column(f"slice:{c}")).to_numpy(zero_copy_only=False)
    triage = _build(plan, np.flatnonzero(~in_slice), None)
    triage.importance = _importance(eng, [c for c in cols.numeric if c.startswith("feature.")], cols.has_score)
    if wide:
        # The columns that moved most in all traffic (a change confined to a slice moves it too, less),
        # with the score and the segments: the per-slice scans then cost what a narrow log's do.
        moved = sorted((cc for cc in triage.columns.values() if cc.column != "score"),
                       key=lambda cc: (cc.quality is None, -cc.z / cc.z_scale))
        plan.sliced = {cc.column for cc in moved[:MAX_SLICED_COLUMNS]} | {c for c in refs if c not in triage.columns}
        plan.sliced.add("score")
        plan.summary = _summarise(eng, case, frame, cols, outs, {c: r for c, r in refs.items() if c in plan.sliced},
                                  slice_cols, whole=summary)
    _add_slices(plan, triage)
    return triage


def _summarise(eng: Engine, case: CaseInput, frame: _Frame, cols: _Columns, outs: _Outputs,
               columns: Mapping[str, NumericRef | CategoricalRef], slices: Sequence[str],
               whole: _Summary | None = None) -> _Summary:
    """The per-window summary of ``columns`` and the outputs, per value of each of ``slices`` too.

    Given the ``whole`` traffic's summary already, only the slices' rows are summarised, on its windows.
    """
    out = window_summary(eng, "log", window_seconds=frame.window, refs=columns, extra=outs.extra, slices=slices,
                         numbers={c: i for i, c in enumerate(cols.refs) if c in columns}, whole=whole is None)
    if "latency_ms" in case.log.column_names:
        # Latency quantiles from a log-spaced histogram: the same numbers on every engine, in bounded memory.
        lat = window_quantiles(eng, "log", "latency_ms", window_seconds=frame.window, quantiles=(0.5, 0.99),
                               slices=slices, whole=whole is None)
        out = merge_by_window(out, lat, {"q0": "lat_p50", "q1": "lat_p99"}, slices)
    return _Summary(out, frame.window, None if whole is None else whole.grid)


def _add_slices(plan: _Plan, triage: Triage) -> None:
    """The changes in each slice of traffic large enough to judge and small enough to differ from the whole."""
    ref = plan.case.reference
    ref_features = {c: r for c, r in plan.cols.refs.items() if c in plan.cols.ref_num and c.startswith("feature.")
                    and isinstance(r, NumericRef) and r.edges}
    if ref is not None and ref_features and plan.slice_cols:
        # Where the reference has the segment column, a slice is compared with the same slice of the
        # training data, so a skew confined to one segment shows against its own baseline.
        for c in plan.slice_cols:
            if c in ref.column_names:
                plan.slice_refs.update(_slice_references(
                    plan.eng, c, {f: r for f, r in ref_features.items() if f in plan.sliced}))
    total = float(triage.rows.sum())
    table = plan.summary.table
    for c in (f"slice:{s}" for s in plan.slice_cols):
        part = table.filter(pc.is_valid(table.column(c)))
        counts = part.group_by(c).aggregate([("rows", "sum")]).to_pylist()
        for row in sorted(counts, key=lambda r: -r["rows_sum"]):
            value = row[c]
            # Slices large enough to judge, small enough to differ from the whole.
            if value == "(null)" or row["rows_sum"] < max(0.05 * total, 2000) or row["rows_sum"] > 0.9 * total:
                continue
            sel = np.flatnonzero(pc.fill_null(pc.equal(table.column(c), value), False).to_numpy(zero_copy_only=False))
            st = _build(plan, sel, {c.removeprefix("slice:"): value})
            st.importance = triage.importance
            triage.slices[(c.removeprefix("slice:"), value)] = st


def _build(plan: _Plan, sel: np.ndarray, scope: dict[str, str] | None) -> Triage:
    """Changes in one slice of traffic (all of it when ``scope`` is None): the summary's rows ``sel``."""
    win = _Windows(plan.summary, sel)
    own = plan.slice_refs.get(next(iter(scope.items()))) if scope else None
    columns, series = _column_changes(plan, win, scope, own)
    ms = _MetricSet(plan.frame, win.rows, series, plan.th)
    _output_metrics(ms, plan.outs, win, plan.summary.table.column_names)
    _quality_metrics(ms, plan.outs, win)
    vshares = np.zeros((len(win.rows), 0))
    if len(plan.outs.versions) > 1:
        vshares = np.stack([win.col(f"ver{k}") for k in range(len(plan.outs.versions))], axis=1)
        ms.add_prop("version_mix", vshares, win.rows, "model", absolute=0.05)
    outs, frame = plan.outs, plan.frame
    return Triage(case=plan.case, window=frame.window, starts=plan.summary.starts, rows=win.rows, columns=columns,
                  metrics=ms.metrics, series=series, refs=plan.cols.refs, positive=outs.positive,
                  versions=outs.versions, version_shares=vshares, engine=plan.eng, score_is_prob=plan.cols.has_score,
                  scope=scope, classes=outs.classes, fallback=outs.fallback, models=outs.models, ref_scoped=bool(own),
                  daily=frame.span >= 2 * 86400 or frame.window >= 86400, kind=outs.kind)


def _column_changes(plan: _Plan, win: _Windows, scope: dict[str, str] | None,
                    own: dict[str, NumericRef] | None) -> tuple[dict[str, ColumnChange], dict[str, np.ndarray]]:
    """Each followed column's change in the slice, and the segment mixes as series."""
    cols, frame, schema = plan.cols, plan.frame, plan.case.schema
    t_count = len(win.rows)
    series: dict[str, np.ndarray] = {"rows": win.rows}
    todo: list[tuple[int, str, NumericRef | CategoricalRef, np.ndarray, np.ndarray]] = []
    for i, (name, r) in enumerate(cols.refs.items()):
        if scope and name not in plan.sliced:
            continue
        r = own.get(name, r) if own else r
        if name in cols.seg_cols and name not in cols.numeric and name not in cols.categorical:
            series[f"seg:{name}"] = np.stack([win.col(f"cat{i}_{k}") for k in range(len(r.categories))], axis=1) \
                if isinstance(r, CategoricalRef) and r.categories else np.zeros((t_count, 0))
            continue
        dims, total = _numeric_dims(i, r, win.col) if isinstance(r, NumericRef) \
            else (_categorical_dims(i, r, win.col), win.rows)
        todo.append((i, name, r, dims, total))
    th = plan.th
    splits = _column_splits([(dims, total) for *_, dims, total in todo], win.rows, frame.period,
                            int(th.min_windows))
    columns: dict[str, ColumnChange] = {}
    for (i, name, r, dims, _), sp in zip(todo, splits, strict=True):
        role = schema[name].role if name in schema else Role.SCORE
        has_ref = name not in cols.from_log
        if isinstance(r, NumericRef):
            columns[name] = _numeric_change(name, role, i, r, win.col, dims, sp, th, has_ref=has_ref,
                                            period=frame.period, window=frame.window)
        else:
            columns[name] = _categorical_change(name, role, r, dims, sp, win.rows, th, has_ref=has_ref,
                                                period=frame.period, window=frame.window)
        if frame.z_scale != 1.0:
            columns[name] = replace(columns[name], z_scale=frame.z_scale)
    for j, cp in enumerate(plan.couplings.values()):
        if (cc := columns.get(cp.feature)) is not None:
            columns[cp.feature] = _with_coupling(plan.eng, cc, cp, win.col(f"cpm{j}"), win.col(f"cpn{j}"),
                                                 plan.summary.starts, frame.period, scope, th)
    return columns, series


def _column_splits(counts: Sequence[tuple[np.ndarray, np.ndarray]], rows: np.ndarray,
                   period: int | None, min_windows: int) -> list[Split | None]:
    """Each column's best split (:func:`proportion_split` of its counts out of its rows, ``counts``), the
    columns whose counts are out of the window's rows (a numeric column's values and nulls add up to them)
    as one matrix: a thousand columns cost about what a few do."""
    out: list[Split | None] = [None] * len(counts)
    shared = [k for k, (_, n) in enumerate(counts) if np.array_equal(n, rows)]
    alone = set(range(len(counts))) - set(shared)
    for k in sorted(alone):
        out[k] = proportion_split(counts[k][0], counts[k][1], min_size=min_windows, period=period)
    if shared:
        starts = np.cumsum([0] + [counts[k][0].shape[1] for k in shared[:-1]])
        together = proportion_splits(np.concatenate([counts[k][0] for k in shared], axis=1), rows, list(starts),
                                     min_size=min_windows, period=period)
        for k, sp in zip(shared, together, strict=True):
            out[k] = sp
    return out


class _MetricSet:
    """The metric changes of one slice as they are measured, with their per-window series."""

    def __init__(self, frame: _Frame, rows: np.ndarray, series: dict[str, np.ndarray], th: Thresholds) -> None:
        self.frame, self.rows, self.series, self.th = frame, rows, series, th
        self.metrics: dict[str, MetricChange] = {}

    def add_prop(self, metric: str, x: np.ndarray, n: np.ndarray, layer: str, material: bool | None = None,
                 *, rel: float = 0.3, absolute: float = 0.02, zmin: float = 5.0) -> None:
        """A rate's change: ``x`` events (per column of a mix) out of ``n`` per window."""
        period, window = self.frame.period, self.frame.window
        sp = proportion_split(x, n, min_size=int(self.th.min_windows), period=period)
        if sp is None:
            return
        xd = x if x.ndim == 1 else x[:, sp.dim]
        rate = np.where(n > 0, xd / np.maximum(n, 1), np.nan)
        grad, start = _gradual(seasonal_rate(xd, n, period), sp.index, window)
        # Labelled metrics are noisy: their ramp fit is kept so the diagnosis can pool several.
        ramp = ramp_bounds(rate, sp.index) if layer == "quality" else None
        big = abs(sp.effect) >= absolute or (sp.before > 0 and abs(sp.after / sp.before - 1) >= rel
                                             and abs(sp.effect) >= absolute / 4)
        # Enough rows on both sides, and enough extra (or missing) events, for the normal approximation.
        n_b, n_a = float(n[: sp.index].sum()), float(n[sp.index:].sum())
        excess = abs(float(xd[sp.index:].sum()) - n_a * sp.before)
        th = self.th
        enough = (min(n_b, n_a) >= th.min_rate_rows and excess >= th.min_excess) or (
            min(n_b, n_a) >= th.min_few_rows and excess >= th.min_few_excess)
        mat = (sp.z >= zmin * self.frame.z_scale and big and enough) if material is None else material
        mat = mat and (layer != "serving" or sp.effect > 0)  # fewer errors or fallbacks is no incident
        self.metrics[metric] = MetricChange(metric, sp, mat, grad, layer, "rate", start, ramp)
        self.series[metric] = rate

    def add_level(self, metric: str, v: np.ndarray, layer: str, *, rel: float, zmin: float = 5.0,
                  unit: str = "") -> None:
        """A level's change (a latency, a mean prediction or error): one value per window."""
        rows = self.rows
        # A window with a handful of rows has a meaningless p99: leave thin windows out.
        thin = rows < 0.3 * float(np.median(rows[rows > 0])) if np.any(rows > 0) else rows <= 0
        v = np.where(thin, np.nan, v)
        sp = level_split(v, min_size=int(self.th.min_windows), period=self.frame.period)
        if sp is None:
            return
        grad, start = _gradual(deseason(v, self.frame.period), sp.index, self.frame.window)
        mat = sp.z >= zmin * self.frame.z_scale and sp.before != 0 and abs(sp.after / sp.before - 1) >= rel
        mat = mat and (layer != "serving" or sp.after > sp.before)  # faster serving is no incident
        self.metrics[metric] = MetricChange(metric, sp, mat, grad, layer, unit, start)
        self.series[metric] = v


def _output_metrics(ms: _MetricSet, outs: _Outputs, win: _Windows, summary_columns: Sequence[str]) -> None:
    """The model's outputs (positive rate, class mix, mean prediction) and its serving (latency, errors)."""
    rows, extra = win.rows, outs.extra
    if "pos" in extra:
        ms.add_prop("positive_rate", win.col("pos"), win.col("npred"), "model")
    if len(outs.classes) > 1:
        ms.add_prop("class_mix", np.stack([win.col(f"cls{k}") for k in range(len(outs.classes))], axis=1), rows,
                    "model", absolute=0.05)
    if "pred_sum" in extra:
        npred = win.col("npred")
        ms.add_level("mean_prediction", np.where(npred > 0, win.col("pred_sum") / np.maximum(npred, 1), np.nan),
                     "model", rel=0.1)
    if "lat_p99" in summary_columns:
        ms.add_level("latency_p99_ms", win.col_nan("lat_p99"), "serving", rel=0.5, unit="ms")
        ms.add_level("latency_mean_ms", win.col_nan("lat_mean"), "serving", rel=0.3, unit="ms")
    if "errors" in extra:
        ms.add_prop("error_rate", win.col("errors"), rows, "serving", absolute=0.01, rel=1.0)
    if "fallback" in extra:
        ms.add_prop("fallback_rate", win.col("fallback"), rows, "serving", absolute=0.01, rel=1.0)


def _quality_metrics(ms: _MetricSet, outs: _Outputs, win: _Windows) -> None:
    """Labelled outcomes: a binary model's confusion rates, a regressor's error, a multi-class model's recall."""
    rows = win.rows
    if outs.binary:
        tp, fp, fn, tn = win.col("tp"), win.col("fp"), win.col("fn"), win.col("tn")
        # Only windows whose labels have mostly arrived: late labels are not a random sample.
        lab = tp + fp + fn + tn
        cov = np.where(rows > 0, lab / np.maximum(rows, 1), 0.0)
        typical = float(np.median(cov[cov > 0])) if np.any(cov > 0) else 0.0
        mature = cov >= ms.th.label_maturity * typical
        tp, fp, fn, tn = (np.where(mature, a, 0.0) for a in (tp, fp, fn, tn))
        ms.add_prop("false_positive_rate", fp, fp + tn, "quality", rel=0.3, absolute=0.01, zmin=4.0)
        ms.add_prop("recall", tp, tp + fn, "quality", rel=0.15, absolute=0.05, zmin=4.0)
        ms.add_prop("accuracy", tp + tn, tp + fp + fn + tn, "quality", rel=0.02, absolute=0.01, zmin=4.0)
        ms.add_prop("precision", tp, tp + fp, "quality", rel=0.15, absolute=0.05, zmin=4.0)
        ms.series["labelled"] = tp + fp + fn + tn
    if "abserr" in outs.extra or "hit" in outs.extra:
        nlab = _mature(win.col("nlab"), rows, ms.th.label_maturity)
        ms.series["labelled"] = nlab
        if "abserr" in outs.extra:
            _regression_metrics(ms, win, nlab)
        if "hit" in outs.extra:
            _multiclass_metrics(ms, win, nlab, outs.classes)


def _regression_metrics(ms: _MetricSet, win: _Windows, nlab: np.ndarray) -> None:
    """A regressor's mean absolute error and bias, judged on the windows with enough labels."""
    z_scale = ms.frame.z_scale
    # A window with a handful of labels has a meaningless mean error: leave thin windows out.
    ok = nlab >= 0.3 * float(np.median(nlab[nlab > 0])) if np.any(nlab > 0) else nlab > 0
    n_ok = np.where(ok, nlab, 0.0)
    sums = {k: np.where(ok, win.col(k), 0.0) for k in ("abserr", "sgnerr", "sqerr")}
    per = np.maximum(nlab, 1)
    mae = np.where(ok, sums["abserr"] / per, np.nan)
    bias = np.where(ok, sums["sgnerr"] / per, np.nan)

    def row_z(total: np.ndarray, sp: Split) -> float:
        """The split's change over its row-level standard error (labels pooled either side): a few
        noisy windows of late labels at the log's edge can look like a step to the windows alone."""
        out = []
        for part in (slice(None, sp.index), slice(sp.index, None)):
            n = float(n_ok[part].sum())
            if n < ms.th.min_labelled_side:
                return 0.0
            mean = float(total[part].sum()) / n
            out.append((mean, max(float(sums["sqerr"][part].sum()) / n - mean * mean, 1e-12) / n))
        return abs(out[1][0] - out[0][0]) / math.sqrt(out[0][1] + out[1][1])

    ms.add_level("mae", mae, "quality", rel=ms.th.mae_rel_change)
    if (m := ms.metrics.get("mae")) is not None and m.material and row_z(sums["abserr"], m.split) < 5.0 * z_scale:
        ms.metrics["mae"] = replace(m, material=False)
    sp = level_split(bias, min_size=int(ms.th.min_windows), period=ms.frame.period)
    if sp is not None:
        # A bias is judged against the typical absolute error before the change, not its own level
        # (which is near zero for a sound regressor).
        scale = float(np.nanmean(mae[: sp.index])) if np.any(np.isfinite(mae[: sp.index])) else math.nan
        big = math.isfinite(scale) and scale > 0 and abs(sp.after - sp.before) >= ms.th.bias_shift_of_mae * scale
        mat = sp.z >= 5.0 * z_scale and big and row_z(sums["sgnerr"], sp) >= 5.0 * z_scale
        grad, start = _gradual(deseason(bias, ms.frame.period), sp.index, ms.frame.window)
        ms.metrics["bias"] = MetricChange("bias", sp, bool(mat), grad, "quality", "", start)
        ms.series["bias"] = bias


def _multiclass_metrics(ms: _MetricSet, win: _Windows, nlab: np.ndarray, classes: Sequence[str]) -> None:
    """A multi-class model's accuracy, and the class whose recall fell the most as one metric."""
    ms.add_prop("accuracy", np.where(nlab > 0, win.col("hit"), 0.0), nlab, "quality", rel=0.02,
                absolute=ms.th.multiclass_accuracy_drop, zmin=4.0)
    # The class whose recall fell the most, as one metric (its split's ``dim`` names the class).
    worst: MetricChange | None = None
    for k in range(len(classes)):
        mature = nlab > 0
        ms.add_prop("_recall", np.where(mature, win.col(f"tp{k}"), 0.0), np.where(mature, win.col(f"lab{k}"), 0.0),
                    "quality", rel=0.15, absolute=ms.th.class_recall_drop, zmin=4.0)
        m = ms.metrics.pop("_recall", None)
        rate = ms.series.pop("_recall", None)
        if m is not None and m.split.effect < 0 and (worst is None or (m.material, m.strength) > (
                worst.material, worst.strength)):
            worst = replace(m, metric="class_recall", split=replace(m.split, dim=k), subject=classes[k])
            ms.series["class_recall"] = rate if rate is not None else np.zeros(len(win.rows))
    if worst is not None:
        ms.metrics["class_recall"] = worst


def _bind(engine: Engine, log: pa.Table | LogView) -> Engine:
    """Register the log as ``log`` on ``engine``; returns the engine to query it through."""
    if isinstance(log, pa.Table):
        engine.register("log", log)
        return engine
    return log.bind(engine)


def _time_outliers(eng: Engine, min_margin: float) -> tuple[datetime, datetime, int, datetime, datetime] | None:
    """The range of timestamps kept, and the rows outside it with their first and last time; None when none.

    The core of the log is its 1 %-99 % quantile range of timestamps: robust to a few rows of a clock
    that is years off, which the minimum and maximum are not. Rows further than the core's length
    (at least ``min_margin`` seconds) outside it are outliers.
    """
    lo_q, hi_q = OUTLIER_QUANTILES
    row = eng.query(time_core_sql(lo_q, hi_q)).to_pylist()[0]
    if row["lo"] is None or row["hi"] is None:
        return None
    margin = max(float(row["hi"]) - float(row["lo"]), min_margin)
    keep_lo = datetime.fromtimestamp(float(row["lo"]) - margin, tz=UTC)
    keep_hi = datetime.fromtimestamp(float(row["hi"]) + margin, tz=UTC)
    out = eng.query(time_outliers_sql(ts_sql(keep_lo), ts_sql(keep_hi))).to_pylist()[0]
    if not out["n"]:
        return None
    return keep_lo, keep_hi, int(out["n"]), out["t0"], out["t1"]


def _without_times(case: CaseInput, keep_lo: datetime, keep_hi: datetime, n: int, first: datetime,
                   last: datetime) -> CaseInput:
    """The case without the log rows dated outside ``[keep_lo, keep_hi]``, and a note that says so."""
    log = case.log
    if isinstance(log, pa.Table):
        ts = log.column("ts")
        keep = pc.and_(pc.greater_equal(ts, pa.scalar(keep_lo, ts.type)),
                       pc.less_equal(ts, pa.scalar(keep_hi, ts.type)))
        new_log: pa.Table | LogView = log.filter(keep)
    else:
        cond = f"l.ts >= {ts_sql(keep_lo)} AND l.ts <= {ts_sql(keep_hi)}"
        new_log = replace(log, where=f"({log.where}) AND {cond}" if log.where else cond, num_rows=log.num_rows - n)
    fmt = "%Y-%m-%d %H:%M UTC"
    note = (f"{n} log rows dated far outside the rest of the log ({first.astimezone(UTC).strftime(fmt)} to "
            f"{last.astimezone(UTC).strftime(fmt)}) were left out of the analysis: rows outside "
            f"{keep_lo.strftime(fmt)} to {keep_hi.strftime(fmt)} (the 1-99 % range of the log's timestamps, widened "
            "by its own length) are taken for a wrong clock; check whatever wrote them")
    return replace(case, log=new_log, notes=(*case.notes, note))


@dataclass(frozen=True)
class _Coupling:
    """A feature that the reference shows is a function of one input with a few values (a lookup)."""

    feature: str
    parent: str
    key_sql: str  # the parent as grouped: text, or a number for a numeric parent
    decoupled_sql: str  # per row: 1.0 where the value is not the one the reference gives its input's value
    judged_sql: str  # the aggregate that counts the rows where ``decoupled_sql`` is known


def _couplings(eng: Engine, case: CaseInput, features: Sequence[str], inputs: Sequence[str],
               numeric: Sequence[str], *, max_categories: int = 60) -> dict[str, _Coupling]:
    """Features that the reference shows are fixed by one input with a few values they derive from.

    A lookup feature (a risk per merchant category, a velocity from a count) keeps its distribution
    when its pipeline serves stale or mis-joined values; only its tie to the input breaks. Parents
    come from lineage, or by name without it; a feature is kept when one input with at most
    ``max_categories`` values explains at least 99 % of its reference variance.
    """
    lin = case.lineage
    out: dict[str, _Coupling] = {}
    for f in features:
        parents = [i for i in inputs if (i in lin.ancestors(f) if lin.edges else
                                         i.removeprefix("input.") in f.removeprefix("feature."))]
        for inp in parents:
            key = coupling_key(inp, numeric=inp in numeric)
            rows = eng.query(coupling_sql("ref", key, f, inp, limit=max_categories + 1)).to_pylist()
            if not 3 <= len(rows) <= max_categories or any(
                    isinstance(r["c"], float) and not math.isfinite(r["c"]) for r in rows):
                continue
            within, total, count = _spread(rows)
            # Enough rows per value that a zero spread within values is a finding, not a few singletons.
            if (total <= 0 or within > 0.01 * total or len({round(float(r["m"]), 12) for r in rows}) < 2
                    or count < 20 * len(rows)):
                continue
            tol = 1e-6 * math.sqrt(total / count)
            expected = [(r["c"], float(r["m"])) for r in rows]
            out[f] = _Coupling(f, inp, key, decoupled_case(f, key, expected, tol), decoupled_known(f, key, expected))
            break
    return out


def _spread(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float, float]:
    """Within-group and total sums of squares, and the row count, from per-group ``n``, mean ``m``
    and population variance ``v`` (between groups around the weighted mean: no cancellation)."""
    n = np.array([r["n"] for r in rows], dtype=np.float64)
    if not len(n) or n.sum() <= 0:
        return 0.0, 0.0, 0.0
    m = np.array([r["m"] for r in rows], dtype=np.float64)
    within = float((n * np.array([r["v"] or 0.0 for r in rows], dtype=np.float64)).sum())
    total = within + float((n * (m - (n * m).sum() / n.sum()) ** 2).sum())
    return within, total, float(n.sum())


def _with_coupling(eng: Engine, cc: ColumnChange, cp: _Coupling, mism: np.ndarray, judged: np.ndarray,
                   starts: Sequence[datetime], period: int | None, scope: dict[str, str] | None,
                   th: Thresholds) -> ColumnChange:
    """The column's change, when the feature stopped following the input that fixed it in training.

    The per-window share of values unlike the reference's for their input flags it; it is
    confirmed when, after the split, the input no longer explains the feature (a lookup table that
    was refreshed is still a function of its input, and is not flagged).
    """
    sp = proportion_split(mism, judged, min_size=int(th.min_windows), period=period)
    if sp is None or sp.before > 0.1 or sp.after - sp.before < 0.3 or sp.index >= len(starts):
        return cc
    cond = f"ts >= {ts_sql(starts[sp.index])}" + (f" AND {scope_sql(scope)}" if scope else "")
    rows = eng.query(coupling_sql("log", cp.key_sql, cp.feature, cp.parent, cond)).to_pylist()
    within, total, count = _spread(rows)
    if count < 30:
        return cc
    unexplained = within / total if total > 0 else 0.0
    if unexplained < 0.3:
        return cc  # still a function of its input: remapped, not decoupled
    before = np.arange(len(judged)) < sp.index
    return replace(cc, onset_index=sp.index, z=max(cc.z, min(sp.z, 100.0)), gradual=False, start_index=None,
                   parent=cp.parent, mismatch_before=sp.before, mismatch_after=sp.after, unexplained_after=unexplained,
                   decoupled_sql=cp.decoupled_sql, rows_before=float(judged[before].sum()),
                   rows_after=float(judged[~before].sum()))


def _slice_references(eng: Engine, column: str, refs: Mapping[str, NumericRef],
                      *, min_rows: int = 500) -> dict[tuple[str, str], dict[str, NumericRef]]:
    """Each value of ``column`` in the reference: its features at the whole reference's deciles."""
    aggs = slice_reference_aggregates([(name, [at_most(e) for e in r.edges]) for name, r in refs.items()])
    rows = batched(lambda chunk: eng.query(slice_reference_sql(column, chunk)), aggs, ["v"]).to_pylist()
    out: dict[tuple[str, str], dict[str, NumericRef]] = {}
    for row in rows:
        if row["n"] < min_rows:
            continue
        out[(column, str(row["v"]))] = {
            name: replace(r, cdf=tuple(float(row[f"le{i}_{k}"] or 0.0) for k in range(len(r.edges))),
                          null_rate=float(row[f"null{i}"] or 0.0), zero_rate=float(row[f"zero{i}"] or 0.0),
                          mean=float(row[f"mean{i}"]) if row[f"mean{i}"] is not None else math.nan,
                          n=int(row[f"n{i}"]))
            for i, (name, r) in enumerate(refs.items())}
    return out


def _gradual(series: np.ndarray, index: int, window: int) -> tuple[bool, int | None]:
    """Whether a change is gradual, and if so the window its ramp started in."""
    if not _is_gradual(series, index, window):
        return False, None
    bounds = ramp_bounds(series, index)
    if bounds is not None and (bounds[1] - bounds[0]) * window < 4 * 3600:
        return False, None  # the best ramp is a step: the width came from noise or a daily cycle
    return True, None if bounds is None else bounds[0]


def _is_gradual(series: np.ndarray, index: int, window: int) -> bool:
    """A change is gradual when it takes more than ~8 windows and 8 hours to happen.

    Noisy series (few rows per window, e.g. labelled metrics) are smoothed more before the
    width is read, and must then take longer to count as gradual.
    """
    v = np.asarray(series, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if len(ok) < 8:
        return False
    noise = float(np.median(np.abs(np.diff(ok) - np.median(np.diff(ok))))) * 1.4826 / np.sqrt(2)
    step = abs(float(np.nanmedian(v[index:])) - float(np.nanmedian(v[:index]))) if 0 < index < len(v) else 0.0
    smooth = 9 if step > 0 and noise > 0.5 * step else 5
    width = transition_width(v, index, smooth=smooth)
    return width >= max(8, 1.5 * smooth) and width * window >= 8 * 3600


def _numeric_dims(i: int, r: NumericRef, get: Callable[[str], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column's per-window counts its split is found on (at or below each reference edge, null,
    zero, out of range: T x (edges + 3)), and the rows they are out of."""
    n = get(f"n{i}")
    nulls = get(f"null{i}")
    le = [get(f"le{i}_{k}") for k in range(len(r.edges))]
    return np.stack([*le, nulls, get(f"zero{i}"), get(f"oor{i}")], axis=1), n + nulls


def _categorical_dims(i: int, r: CategoricalRef, get: Callable[[str], np.ndarray]) -> np.ndarray:
    """A categorical column's per-window counts: each reference category, null, unseen (T x (categories + 2))."""
    cats = [get(f"cat{i}_{k}") for k in range(len(r.categories))]
    return np.stack([*cats, get(f"null{i}"), get(f"unseen{i}")], axis=1)


def _numeric_change(name: str, role: Role, i: int, r: NumericRef, get: Callable[[str], np.ndarray],
                    dims: np.ndarray, sp: Split | None, th: Thresholds, *, has_ref: bool, period: int | None,
                    window: int) -> ColumnChange:
    """The change of a numeric column, from its counts ``dims`` (:func:`_numeric_dims`) and their split ``sp``."""
    n = get(f"n{i}")
    nd = get(f"nd{i}")
    le = np.ascontiguousarray(dims[:, :-3])
    nulls, zeros, oor = dims[:, -3].copy(), dims[:, -2].copy(), dims[:, -1].copy()
    total = n + nulls
    distinct = np.where(n > 0, np.minimum(nd / np.maximum(n, 1), 1.0), np.nan)

    def pooled(sel: np.ndarray) -> dict[str, Any]:
        nn, tt = n[sel].sum(), total[sel].sum()
        cdf = le[sel].sum(axis=0) / nn if nn > 0 else np.full(le.shape[1], np.nan)
        s = get(f"sum{i}")[sel].sum()
        return {"cdf": cdf, "null": nulls[sel].sum() / tt if tt else 0.0, "zero": zeros[sel].sum() / tt if tt else 0.0,
                "oor": oor[sel].sum() / nn if nn else 0.0, "mean": s / nn if nn else math.nan,
                "distinct": float(nanmedian(distinct[sel])) if np.any(np.isfinite(distinct[sel])) else math.nan,
                "nd": float(np.median(nd[sel][n[sel] > 0])) if np.any(n[sel] > 0) else math.nan}

    t = len(n)
    before = np.arange(t) < sp.index if sp is not None else np.ones(t, dtype=bool)
    b = pooled(before)
    a = pooled(~before) if (~before).any() else b
    shift = 0.0
    if sp is not None and le.shape[1]:
        # The before/after distance at the deciles with the daily cycle removed, on the non-null values.
        eff = split_effects(le, n, sp.index, period)
        shift = float(np.max(np.abs(eff)))
    # What serving looked like from the start: the whole days before the change (a part of a day has its
    # own hour-of-day mix, unlike the reference), or the first day at least.
    days = int(before.sum() * window // 86400)
    early = np.arange(t) * window < max(days, 1) * 86400
    e = pooled(early)
    has_ref = has_ref and float(total[early].sum()) >= th.min_skew_rows  # too few rows to compare
    skew = float(np.nanmax(np.abs(e["cdf"] - np.asarray(r.cdf)))) if has_ref and r.cdf else math.nan
    grad, start = False, None
    if sp is not None and le.shape[1] and sp.z >= th.min_change_z:  # how it changed matters once it did
        grad, start = _gradual(seasonal_rate(dims[:, sp.dim], total, period), sp.index, window)
    # A column that follows the clock (hour of day) strays far from its pooled distribution in every
    # window, on each side of its split; a stationary one (or one that stepped once) only by sampling
    # noise (~1/sqrt(rows)).
    devs = []
    for side in (before, ~before):
        full = side & (n >= 30)
        if le.shape[1] and full.sum() >= 3:
            pooled_cdf = le[full].sum(axis=0) / n[full].sum()
            dev = np.max(np.abs(le[full] / n[full][:, None] - pooled_cdf), axis=1)
            devs.append(dev - 1.0 / np.sqrt(n[full]))
    wander = float(np.median(np.concatenate(devs))) if devs else 0.0
    return ColumnChange(
        column=name, role=role, numeric=True, split=sp, onset_index=None if sp is None else sp.index,
        shift=shift, z=0.0 if sp is None else sp.z, gradual=grad, start_index=start, wander=wander,
        null_before=b["null"], null_after=a["null"], zero_before=b["zero"], zero_after=a["zero"],
        distinct_before=b["distinct"], distinct_after=a["distinct"], nd_before=b["nd"], nd_after=a["nd"],
        oor_before=b["oor"], oor_after=a["oor"],
        mean_before=b["mean"], mean_after=a["mean"],
        median_before=_median_from_cdf(b["cdf"], r.edges), median_after=_median_from_cdf(a["cdf"], r.edges),
        rows_before=float(total[before].sum()), rows_after=float(total[~before].sum()),
        skew=skew, skew_noise=_skew_noise(float(n[early].sum()), r.n, th.skew_noise), th=th,
        skew_null=e["null"] - r.null_rate if has_ref else 0.0,
        skew_zero=e["zero"] - r.zero_rate if has_ref else 0.0, ref_mean=r.mean if has_ref else math.nan,
    )


def _skew_noise(n: float, m: float, noise: float) -> float:
    """The distance between samples of ``n`` and ``m`` rows that sampling alone reaches (inf for none)."""
    return noise * math.sqrt(1 / n + 1 / m) if n > 0 and m > 0 else math.inf


def _median_from_cdf(cdf: np.ndarray, edges: Sequence[float]) -> float:
    if not len(edges) or not np.all(np.isfinite(cdf)):
        return math.nan
    return float(np.interp(0.5, np.maximum.accumulate(cdf), edges))


def _categorical_change(name: str, role: Role, r: CategoricalRef, dims: np.ndarray, sp: Split | None,
                        rows: np.ndarray, th: Thresholds, *, has_ref: bool, period: int | None,
                        window: int) -> ColumnChange:
    """The change of a categorical column, from its counts ``dims`` (:func:`_categorical_dims`) and their split."""
    t = len(rows)
    before = np.arange(t) < sp.index if sp is not None else np.ones(t, dtype=bool)
    after = ~before

    def shares(sel: np.ndarray) -> np.ndarray:
        tot = rows[sel].sum()
        return dims[sel].sum(axis=0) / tot if tot else np.zeros(dims.shape[1])

    sb = shares(before)
    sa = shares(after) if after.any() else sb
    shift = 0.5 * float(np.abs(split_effects(dims, rows, sp.index, period)).sum()) if sp is not None else 0.0
    grad, start = _gradual(seasonal_rate(dims[:, sp.dim], rows, period), sp.index, window) \
        if sp is not None and sp.z >= th.min_change_z else (False, None)
    skew = math.nan
    has_ref = has_ref and float(rows[before].sum()) >= th.min_skew_rows  # too few rows to compare
    if has_ref:
        ref_vec = np.array([*r.shares, r.null_rate, max(0.0, 1 - sum(r.shares) - r.null_rate)])
        skew = 0.5 * float(np.abs(sb - ref_vec).sum())
    return ColumnChange(column=name, role=role, numeric=False, split=sp, onset_index=None if sp is None else sp.index,
                        shift=shift, z=0.0 if sp is None else sp.z,
                        gradual=bool(grad), start_index=start, null_before=float(sb[-2]), null_after=float(sa[-2]),
                        unseen_after=float(sa[-1]) - float(sb[-1]), skew=skew,
                        skew_noise=_skew_noise(float(rows[before].sum()), r.n, th.skew_noise), th=th,
                        rows_before=float(rows[before].sum()), rows_after=float(rows[after].sum()),
                        skew_null=float(sb[-2]) - r.null_rate if has_ref else 0.0)


def _importance(eng: Engine, features: Sequence[str], has_score: bool) -> dict[str, float]:
    """How much the score moves with each feature: |Spearman-like correlation| on the log (no model needed)."""
    if not has_score or not features:
        return {}
    aggs = [(f"c{i}", correlation(c)) for i, c in enumerate(features)]
    row = batched(lambda chunk: eng.query(correlations_sql(chunk)), aggs).to_pylist()[0]
    return {c: abs(float(row[f"c{i}"])) if row[f"c{i}"] is not None and math.isfinite(row[f"c{i}"]) else 0.0
            for i, c in enumerate(features)}


def refine_onset(tr: Triage, column: str | None, index: int | None, *,
                 where: str | None = None, metric_sql: str | None = None) -> datetime | None:
    """Find the row where a change starts, within two windows of the window-level split.

    Values the training data never had (new categories, values out of its range) are looked for
    up to eight hours earlier: their share follows the traffic's daily mix, so the window-level
    split can land hours after their first appearance, which is where the change starts.
    """
    if index is None or tr.engine is None:
        return tr.time_of(index)
    cc = tr.columns.get(column) if column is not None else None
    domain = metric_sql is None and cc is not None and cc.quality in DOMAIN_QUALITIES
    lo = tr.time_of(max(index - (max(2, 8 * 3600 // tr.window) if domain else 2), 0))
    hi_i = min(index + 2, len(tr.starts) - 1)
    hi = tr.starts[hi_i] + timedelta(seconds=tr.window)
    assert lo is not None
    if metric_sql is None:
        if column is None:
            return tr.time_of(index)
        ref = tr.refs.get(column)
        if cc is None or ref is None:
            return tr.time_of(index)
        if cc.quality == "decoupled":
            metric_sql = cc.decoupled_sql
        elif cc.quality == "null" or (cc.split is not None and isinstance(ref, NumericRef)
                                    and cc.split.dim == len(ref.edges)):
            metric_sql = case_is_null(column)
        elif cc.quality == "zero":
            metric_sql = case_is_zero(column)
        elif isinstance(ref, NumericRef) and cc.split is not None and cc.split.dim < len(ref.edges):
            metric_sql = case_at_or_below(column, at_most(ref.edges[cc.split.dim]))
        elif isinstance(ref, NumericRef):
            metric_sql = value_or_zero(column)
        elif isinstance(ref, CategoricalRef):
            metric_sql = case_in_categories(column, ref.categories)
        else:
            return tr.time_of(index)
    cond = f"ts >= {ts_sql(lo)} AND ts < {ts_sql(hi)}"
    if where:
        cond += f" AND {where}"
    t = tr.engine.query(rows_between_sql(metric_sql, cond))
    if t.num_rows < 40:
        return tr.time_of(index)
    m = np.nan_to_num(t.column("m").to_numpy(zero_copy_only=False).astype(np.float64))
    sp = row_split(m, min_size=max(10, t.num_rows // 200))
    if sp is None or sp.z < 3:
        return tr.time_of(index)
    at = sp.index
    post = float(m[at:].mean())
    if post > 0 and at > 0:
        # Something new appeared (a version, a null, a category): it starts at its first row, not
        # where a varying share of it (a canary following one region's day) jumps most. The first
        # row with almost none of it before and a fair share of it from there to the split.
        head = np.cumsum(np.abs(m[:at])) / np.arange(1, at + 1)
        tail = np.cumsum(m[:at][::-1])[::-1] / np.arange(at, 0, -1)
        before = np.concatenate([[0.0], head[:-1]])
        ok = np.flatnonzero((m[:at] > 0) & (tail >= 0.25 * post) & (before <= 0.02 * post)
                            & (np.arange(at) >= 10))
        if len(ok):
            at = int(ok[0])
    when: datetime = t.column("ts")[at].as_py()
    return when
