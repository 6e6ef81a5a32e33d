"""A/B and shadow comparison of two model versions, with significance tests and power."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import ConfigError, SchemaError
from mlsleuth.replay._metrics import (
    BoolArray,
    FloatArray,
    Metric,
    Metrics,
    Rate,
    _r,
    compute_metrics,
    float_column,
    ks_statistic,
    label_arrays,
    mcnemar,
    n_mcnemar,
    n_two_proportion,
    segment_groups,
    two_proportion,
)
from mlsleuth.replay._replay import _decisions, _resolve_threshold, _segment_columns
from mlsleuth.replay._runners import Runner
from mlsleuth.replay._select import LogSource, Selection, select

__all__ = ["Comparison", "Design", "MetricTest", "Outcome", "SegmentComparison", "compare"]

#: Share of the smaller version's request ids that must also appear under the other version for the
#: log to be read as shadow traffic (the same requests scored by both).
SHADOW_OVERLAP = 0.9


class Design(enum.Enum):
    """How the two versions saw traffic."""

    SPLIT = "split"
    """A/B: each request went to one version; the samples are independent."""
    SHADOW = "shadow"
    """Both versions scored the same requests; the samples are paired."""


class Outcome(enum.Enum):
    """What a test can say about a difference."""

    SIGNIFICANT = "significant"
    """The difference is significant at ``alpha``."""
    NO_DIFFERENCE = "no_difference"
    """Not significant, and the sample was large enough to detect the effect of interest."""
    UNDERPOWERED = "underpowered"
    """Not significant, and the sample is too small to tell: see ``more_requests_needed``."""


@dataclass(frozen=True)
class MetricTest:
    """A rate of version A against version B.

    Attributes
    ----------
    metric
        Positive rate (all requests), FPR (labelled negatives) or TPR (labelled positives).
    a, b
        The two rates.
    difference, ci_low, ci_high
        ``b - a`` with a 95 % interval (unpooled Wald for split traffic, paired for shadow).
    p_value, method
        Two-sided: the pooled two-proportion z-test (split) or McNemar's test (shadow).
    outcome
        :class:`Outcome`, at the comparison's ``alpha``.
    effect
        The absolute difference the power calculation targets: ``min_effect`` when given, else
        the observed difference.
    required_per_arm
        Requests each version needs (split), or requests scored by both (shadow), to detect
        ``effect`` with the comparison's ``power`` (counting the share of requests the metric
        uses, e.g. labelled negatives for FPR); ``None`` when ``effect`` is 0.
    more_requests_needed
        How many more requests in total before the test could tell (0 when it already can).
    """

    metric: Metric
    a: Rate
    b: Rate
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    outcome: Outcome
    effect: float | None
    required_per_arm: int | None
    more_requests_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"metric": self.metric.value, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "difference": _r(self.difference), "ci95": [_r(self.ci_low), _r(self.ci_high)],
                "p_value": _r(self.p_value, 8), "method": self.method, "outcome": self.outcome.value,
                "effect": _r(self.effect), "required_per_arm": self.required_per_arm,
                "more_requests_needed": self.more_requests_needed}


@dataclass(frozen=True)
class SegmentComparison:
    """The comparison restricted to one segment value."""

    column: str
    value: str
    a: Metrics
    b: Metrics
    tests: tuple[MetricTest, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"column": self.column, "value": self.value, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "tests": [t.to_dict() for t in self.tests]}


@dataclass(frozen=True)
class Comparison:
    """Two model versions side by side.

    Attributes
    ----------
    a, b
        What was compared (version names, or runner descriptions).
    design, design_reason
        Split or shadow traffic, and why.
    threshold, threshold_source
        The decision threshold applied to both versions' scores (see :func:`replay`).
    alpha, power, min_effect
        Significance level, target power and the smallest difference of interest (``None``:
        the observed one).
    metrics_a, metrics_b
        Each version's metrics.
    tests
        One :class:`MetricTest` per rate that both sides can compute.
    score_shift_ks, score_shift_p
        Kolmogorov-Smirnov statistic and p-value between the two score distributions.
    agreement
        Shadow only: share of requests on which both versions decided alike.
    score_correlation, mean_abs_score_diff
        Shadow only: between the paired scores.
    segments
        Per segment value.
    """

    a: str
    b: str
    design: Design
    design_reason: str
    threshold: float
    threshold_source: str
    alpha: float
    power: float
    min_effect: float | None
    metrics_a: Metrics
    metrics_b: Metrics
    tests: tuple[MetricTest, ...]
    score_shift_ks: float | None = None
    score_shift_p: float | None = None
    agreement: float | None = None
    score_correlation: float | None = None
    mean_abs_score_diff: float | None = None
    segments: tuple[SegmentComparison, ...] = ()

    def _repr_html_(self) -> str:
        """The ``--format html`` report, shown inline by Jupyter."""
        # The renderers live in mlsleuth.report, above this module: imported only when a notebook shows it.
        from mlsleuth.report._notebook import notebook_html

        return notebook_html(self)

    def test(self, metric: Metric) -> MetricTest:
        """The test of one metric."""
        for t in self.tests:
            if t.metric is metric:
                return t
        tested = [t.metric.value for t in self.tests]
        raise KeyError(f"{metric.value} was not tested (labels missing?); tested: {tested}")

    @property
    def underpowered(self) -> bool:
        """Whether some test could not tell for lack of requests."""
        return any(t.outcome is Outcome.UNDERPOWERED for t in self.tests)

    @property
    def verdict(self) -> Outcome:
        """The comparison in one word.

        ``SIGNIFICANT`` when some tested metric differs significantly; else ``UNDERPOWERED`` when
        some test lacked the requests to tell; else ``NO_DIFFERENCE``.
        """
        if any(t.outcome is Outcome.SIGNIFICANT for t in self.tests):
            return Outcome.SIGNIFICANT
        return Outcome.UNDERPOWERED if self.underpowered else Outcome.NO_DIFFERENCE

    @property
    def summary(self) -> str:
        """One line: each tested metric from A to B with its difference, p-value and outcome."""
        parts = []
        for t in self.tests:
            line = (f"{t.metric.value} {_pct(t.a.value)} -> {_pct(t.b.value)} ({100 * t.difference:+.2f} pts, "
                    f"p={t.p_value:.2g}, {t.outcome.value.replace('_', ' ')}")
            if t.outcome is Outcome.UNDERPOWERED and t.more_requests_needed:
                line += f": {t.more_requests_needed:,} more requests needed"
            parts.append(line + ")")
        tested = "; ".join(parts) if parts else "no metric could be tested"
        return f"{self.verdict.value.upper()}: {self.b} vs {self.a} ({self.design.value}): {tested}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict.value, "summary": self.summary,
            "a": self.a, "b": self.b, "design": self.design.value, "design_reason": self.design_reason,
            "threshold": self.threshold, "threshold_source": self.threshold_source, "alpha": self.alpha,
            "power": self.power, "min_effect": self.min_effect, "metrics_a": self.metrics_a.to_dict(),
            "metrics_b": self.metrics_b.to_dict(), "tests": [t.to_dict() for t in self.tests],
            "underpowered": self.underpowered, "score_shift_ks": _r(self.score_shift_ks),
            "score_shift_p": _r(self.score_shift_p, 8), "agreement": _r(self.agreement),
            "score_correlation": _r(self.score_correlation), "mean_abs_score_diff": _r(self.mean_abs_score_diff),
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(frozen=True)
class _Side:
    scores: FloatArray | None
    decisions: BoolArray
    known: BoolArray | None
    positive: BoolArray | None
    segments: dict[str, dict[str, npt.NDArray[np.intp]]]

    def take(self, idx: npt.NDArray[np.intp]) -> _Side:
        return _Side(None if self.scores is None else self.scores[idx], self.decisions[idx],
                     None if self.known is None else self.known[idx],
                     None if self.positive is None else self.positive[idx], {})

    def metrics(self) -> Metrics:
        return compute_metrics(self.decisions, self.scores, self.known, self.positive)

    def subset(self, metric: Metric) -> BoolArray | None:
        if metric is Metric.POSITIVE_RATE:
            return np.ones(self.decisions.size, dtype=bool)
        if self.known is None or self.positive is None:
            return None
        return self.known & (self.positive if metric is Metric.TPR else ~self.positive)


_TESTED = (Metric.POSITIVE_RATE, Metric.FPR, Metric.TPR)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _test_split(metric: Metric, a: _Side, b: _Side, alpha: float, power: float,
                min_effect: float | None) -> MetricTest | None:
    sa, sb = a.subset(metric), b.subset(metric)
    if sa is None or sb is None:
        return None
    na, nb = int(sa.sum()), int(sb.sum())
    if na == 0 or nb == 0:
        return None
    ka, kb = int((a.decisions & sa).sum()), int((b.decisions & sb).sum())
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    diff, lo, hi, p = two_proportion(ka, na, kb, nb, z)
    pa_, pb_ = ka / na, kb / nb
    effect = abs(diff) if min_effect is None else min_effect
    target = pb_ if min_effect is None else min(max(pa_ + math.copysign(min_effect, diff or 1.0), 0.0), 1.0)
    need_sub = n_two_proportion(pa_, target, alpha, power) if effect > 0 else None
    frac = (na + nb) / (a.decisions.size + b.decisions.size)
    required = None if need_sub is None else math.ceil(need_sub / frac)
    more = None if required is None else max(0, required - a.decisions.size) + max(0, required - b.decisions.size)
    outcome = _outcome(p, alpha, required, min(a.decisions.size, b.decisions.size))
    return MetricTest(metric, Rate(ka, na), Rate(kb, nb), diff, lo, hi, p, "two-proportion z-test", outcome,
                      effect, required, more)


def _test_paired(metric: Metric, a: _Side, b: _Side, alpha: float, power: float,
                 min_effect: float | None) -> MetricTest | None:
    s = a.subset(metric)
    if s is None:
        return None
    n_sub = int(s.sum())
    if n_sub == 0:
        return None
    da, db = a.decisions[s], b.decisions[s]
    only_a, only_b = int((da & ~db).sum()), int((~da & db).sum())
    from scipy.stats import norm

    z = float(norm.ppf(1 - alpha / 2))
    diff, lo, hi, p = mcnemar(only_a, only_b, n_sub, z)
    effect = abs(diff) if min_effect is None else min_effect
    p_disc = (only_a + only_b) / n_sub
    need_sub = n_mcnemar(max(p_disc, effect), effect, alpha, power) if effect > 0 else None
    frac = n_sub / a.decisions.size
    required = None if need_sub is None else math.ceil(need_sub / frac)
    more = None if required is None else max(0, required - a.decisions.size)
    outcome = _outcome(p, alpha, required, a.decisions.size)
    return MetricTest(metric, Rate(int(da.sum()), n_sub), Rate(int(db.sum()), n_sub), diff, lo, hi, p,
                      "McNemar test (paired)", outcome, effect, required, more)


def _outcome(p: float, alpha: float, required: int | None, have: int) -> Outcome:
    if p < alpha:
        return Outcome.SIGNIFICANT
    if required is None or have >= required:
        return Outcome.NO_DIFFERENCE
    return Outcome.UNDERPOWERED


def _side(table: pa.Table, scores: FloatArray | None, threshold: float, positive_class: Any,
          seg_cols: Sequence[str]) -> _Side:
    preds = float_column(table, "prediction") if scores is None else None
    if scores is None and preds is None:
        raise SchemaError("comparing needs each version's score or prediction; the rows have neither",
                          column="score")
    lab = label_arrays(table, positive_class)
    return _Side(scores, _decisions(scores, preds, threshold), None if lab is None else lab[0],
                 None if lab is None else lab[1], {c: dict(segment_groups(table, c)) for c in seg_cols})


def _name(x: str | Runner) -> str:
    return x if isinstance(x, str) else getattr(x, "name", None) or repr(x)


def compare(data: pa.Table | LogSource | Any, *, a: str | Runner, b: str | Runner, by: str = "model_version",
            selection: Selection | None = None, labels: pa.Table | None = None, design: Design | None = None,
            threshold: float | None = None, positive_class: Any = None, alpha: float = 0.05, power: float = 0.8,
            min_effect: float | None = None, segments: Sequence[str] | None = None,
            names: tuple[str | None, str | None] = (None, None)) -> Comparison:
    """Compare two model versions: agreement, score shift, positive rate, FPR/TPR with tests and power.

    Each side is either a version name, a value of ``by`` in the log (the requests that version
    served, with their logged scores), or a :class:`Runner` (see :func:`load_runner`) that scores
    the logged requests again. Two logged versions are *shadow* traffic when at least 90 % of the
    smaller version's request ids also appear under the other (the rows are then paired on
    ``request_id``), *split* otherwise; any runner makes it shadow (it scores the same requests).
    Pass ``design`` to insist; the reason is recorded either way.

    Parameters
    ----------
    data
        The prediction log (a table or a store).
    a, b
        Version names (values of ``by``) or models. With one version and one model, the model
        scores that version's requests ("what would the challenger have done?").
    by
        The column holding version names.
    selection, labels, threshold, positive_class, segments
        As for :func:`replay`.
    design
        Force split or shadow.
    alpha, power
        Significance level and target power of the tests.
    min_effect
        Smallest absolute difference worth detecting (e.g. 0.01 for one percentage point of FPR);
        ``None`` targets the observed difference.
    names
        Labels of the two sides in the result (default: the version names, or the runners' names).

    Returns
    -------
    Comparison
        A test says ``underpowered`` when it is not significant and the requests are fewer than the
        power calculation needs, with ``more_requests_needed``.
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ConfigError(f"expected 0 < alpha < 1 and 0 < power < 1, got {alpha}, {power}", column="alpha")
    if min_effect is not None and not 0 < min_effect < 1:
        raise ConfigError(f"expected 0 < min_effect < 1 (an absolute difference of rates), got {min_effect}",
                          column="min_effect")
    ra, rb = a, b
    table = select(data, selection, labels=labels, with_labels=True)
    seg_cols = _segment_columns(table, segments)
    logged_scores = float_column(table, "score")
    t, t_source = _resolve_threshold(threshold, logged_scores, float_column(table, "prediction"))

    def rows_of(version: str) -> pa.Table:
        if by not in table.column_names:
            raise SchemaError(f"no column {by!r} to find version {version!r} in; the log has {table.column_names}",
                              column=by)
        rows = table.filter(pc.equal(table.column(by).cast(pa.string()), version))
        if rows.num_rows == 0:
            have = sorted(str(v) for v in pc.unique(table.column(by)).to_pylist())
            raise ConfigError(f"no requests of version {version!r} in {by!r}; it has {have[:20]}", column=by)
        return rows

    if isinstance(ra, str) and isinstance(rb, str):
        ta, tb = rows_of(ra), rows_of(rb)
        auto, reason, ta, tb = _pair_versions(ta, tb)
        chosen = design or auto
        if chosen is Design.SHADOW and auto is not Design.SHADOW:
            raise ConfigError(f"shadow comparison pairs requests by request_id, but {reason}", column="design")
        if chosen is Design.SPLIT and auto is Design.SHADOW:
            reason = "split design requested"
        side_a = _side(ta, float_column(ta, "score"), t, positive_class, seg_cols)
        side_b = _side(tb, float_column(tb, "score"), t, positive_class, seg_cols)
    else:
        if design is Design.SPLIT:
            raise ConfigError("a model scores the same logged requests as the other side, so the design is shadow; "
                              "drop design=SPLIT", column="design")
        chosen = Design.SHADOW
        base = rows_of(ra) if isinstance(ra, str) else rows_of(rb) if isinstance(rb, str) else table
        reason = "a model re-scored the logged requests of the other side" if isinstance(ra, str) or isinstance(
            rb, str) else "both models scored the same logged requests"
        if base.num_rows == 0:
            raise ConfigError("no requests selected", column="selection")
        side_a = _side(base, float_column(base, "score") if isinstance(ra, str) else ra.run(base), t,
                       positive_class, seg_cols)
        side_b = _side(base, float_column(base, "score") if isinstance(rb, str) else rb.run(base), t,
                       positive_class, seg_cols)
    return _compare_sides(names[0] or _name(a), names[1] or _name(b), side_a, side_b, chosen, reason, t, t_source,
                          alpha, power, min_effect, seg_cols)


def _pair_versions(ta: pa.Table, tb: pa.Table) -> tuple[Design, str, pa.Table, pa.Table]:
    if "request_id" not in ta.column_names:
        return Design.SPLIT, "the log has no request_id to pair requests on", ta, tb
    ia = ta.column("request_id").cast(pa.string())
    ib = tb.column("request_id").cast(pa.string())
    common = pc.sum(pc.is_in(ia, value_set=pc.unique(ib)).cast(pa.int64())).as_py() or 0
    smaller = min(ta.num_rows, tb.num_rows)
    if common < SHADOW_OVERLAP * smaller:
        return Design.SPLIT, (f"only {common} of {smaller} requests were scored by both versions "
                              f"(shadow needs {SHADOW_OVERLAP:.0%})"), ta, tb
    left = ta.set_column(ta.column_names.index("request_id"), "request_id", ia).append_column(
        "_ia", pa.array(np.arange(ta.num_rows)))
    right = pa.table({"request_id": ib, "_ib": pa.array(np.arange(tb.num_rows))})
    joined = left.select(["request_id", "_ia"]).join(right, "request_id", join_type="inner",
                                                     use_threads=False).sort_by("_ia")
    pa_rows = ta.take(joined.column("_ia"))
    pb_rows = tb.take(joined.column("_ib"))
    if "label" in pa_rows.column_names and "label" in pb_rows.column_names:
        pb_rows = pb_rows.set_column(pb_rows.column_names.index("label"), "label", pa_rows.column("label"))
    return Design.SHADOW, f"{common} of {smaller} requests were scored by both versions", pa_rows, pb_rows


def _compare_sides(name_a: str, name_b: str, a: _Side, b: _Side, design: Design, reason: str, t: float,
                   t_source: str, alpha: float, power: float, min_effect: float | None,
                   seg_cols: Sequence[str]) -> Comparison:
    paired = design is Design.SHADOW
    test = _test_paired if paired else _test_split

    def run_tests(x: _Side, y: _Side) -> tuple[MetricTest, ...]:
        return tuple(r for r in (test(m, x, y, alpha, power, min_effect) for m in _TESTED) if r is not None)

    ks = None if a.scores is None or b.scores is None else ks_statistic(a.scores, b.scores)
    agreement = corr = mad = None
    if paired:
        agreement = float((a.decisions == b.decisions).mean()) if a.decisions.size else None
        if a.scores is not None and b.scores is not None:
            ok = np.isfinite(a.scores) & np.isfinite(b.scores)
            if ok.sum() > 1 and np.std(a.scores[ok]) > 0 and np.std(b.scores[ok]) > 0:
                corr = float(np.corrcoef(a.scores[ok], b.scores[ok])[0, 1])
            if ok.any():
                mad = float(np.abs(a.scores[ok] - b.scores[ok]).mean())
    segs = []
    for c in seg_cols:
        ga, gb = a.segments[c], b.segments[c]
        for v in (v for v in ga if v in gb):  # values both versions served, most frequent first
            sa, sb = a.take(ga[v]), b.take(gb[v])
            segs.append(SegmentComparison(c, v, sa.metrics(), sb.metrics(), run_tests(sa, sb)))
    return Comparison(
        name_a, name_b, design, reason, t, t_source, alpha, power, min_effect, a.metrics(), b.metrics(),
        run_tests(a, b), score_shift_ks=None if ks is None else ks[0], score_shift_p=None if ks is None else ks[1],
        agreement=agreement, score_correlation=corr, mean_abs_score_diff=mad, segments=tuple(segs))
