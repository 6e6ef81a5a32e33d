"""Model-behaviour metrics of a set of requests, and the proportion tests replay and compare rely on.

All rates are proportions with Wilson score intervals; all tests are two-sided. Everything is
vectorised numpy over whole columns.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import SchemaError

__all__ = [
    "Metric",
    "Metrics",
    "Rate",
    "ScoreSummary",
    "infer_threshold",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: z for the 95 % intervals reported everywhere.
Z95 = 1.959963984540054  # norm.ppf(0.975), written out: importing scipy.stats takes ~1.5 s


class Metric(enum.Enum):
    """A behaviour metric of a model over a set of requests."""

    POSITIVE_RATE = "positive_rate"
    SCORE_MEAN = "score_mean"
    FPR = "fpr"
    TPR = "tpr"
    PRECISION = "precision"


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """A proportion ``k / n`` with its 95 % Wilson interval (``value`` is ``None`` when ``n == 0``)."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        """``k / n``."""
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95 % Wilson score interval."""
        return wilson(self.k, self.n) if self.n else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        ci = self.interval
        return {"value": _r(self.value), "k": self.k, "n": self.n,
                "ci95": None if ci is None else [_r(ci[0]), _r(ci[1])]}


@dataclass(frozen=True)
class ScoreSummary:
    """Summary of a score distribution (finite scores only)."""

    n: int
    mean: float
    std: float
    p05: float
    p25: float
    p50: float
    p75: float
    p95: float

    @classmethod
    def of(cls, scores: FloatArray) -> ScoreSummary | None:
        """Summarise ``scores``; ``None`` when none is finite."""
        s = scores[np.isfinite(scores)]
        if s.size == 0:
            return None
        q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95])
        return cls(int(s.size), float(s.mean()), float(s.std()), *(float(v) for v in q))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"n": self.n, **{k: _r(getattr(self, k)) for k in ("mean", "std", "p05", "p25", "p50", "p75", "p95")}}


@dataclass(frozen=True)
class Metrics:
    """What a model did on a set of requests.

    Attributes
    ----------
    n
        Requests.
    positive_rate
        Share of positive decisions.
    score
        The score distribution (``None`` without scores).
    n_labeled
        Requests with a known label.
    fpr, tpr, precision
        False-positive rate (among labelled negatives), true-positive rate (among labelled
        positives) and precision (among labelled positive decisions); ``None`` without labels.
    """

    n: int
    positive_rate: Rate
    score: ScoreSummary | None
    n_labeled: int = 0
    fpr: Rate | None = None
    tpr: Rate | None = None
    precision: Rate | None = None

    def value(self, metric: Metric) -> float | None:
        """The point value of ``metric`` (``None`` when it cannot be computed)."""
        if metric is Metric.SCORE_MEAN:
            return None if self.score is None else self.score.mean
        rate = self.rate(metric)
        return None if rate is None else rate.value

    def rate(self, metric: Metric) -> Rate | None:
        """The :class:`Rate` behind a proportion metric."""
        return {Metric.POSITIVE_RATE: self.positive_rate, Metric.FPR: self.fpr, Metric.TPR: self.tpr,
                Metric.PRECISION: self.precision}.get(metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "n": self.n,
            "positive_rate": self.positive_rate.to_dict(),
            "score": None if self.score is None else self.score.to_dict(),
            "n_labeled": self.n_labeled,
            "fpr": None if self.fpr is None else self.fpr.to_dict(),
            "tpr": None if self.tpr is None else self.tpr.to_dict(),
            "precision": None if self.precision is None else self.precision.to_dict(),
        }


def compute_metrics(decision: BoolArray, scores: FloatArray | None, known: BoolArray | None,
                    positive: BoolArray | None) -> Metrics:
    """Metrics of one set of requests from per-request arrays."""
    n = int(decision.size)
    pos_rate = Rate(int(decision.sum()), n)
    summary = None if scores is None else ScoreSummary.of(scores)
    if known is None or positive is None or not known.any():
        return Metrics(n, pos_rate, summary)
    neg = known & ~positive
    posl = known & positive
    return Metrics(
        n, pos_rate, summary, int(known.sum()),
        fpr=Rate(int((decision & neg).sum()), int(neg.sum())),
        tpr=Rate(int((decision & posl).sum()), int(posl.sum())),
        precision=Rate(int((decision & posl).sum()), int((decision & known).sum())),
    )


def label_arrays(table: pa.Table, positive_class: Any = None) -> tuple[BoolArray, BoolArray] | None:
    """``(known, positive)`` per request from the ``label`` column; ``None`` without one.

    Numeric and boolean labels are positive when equal to ``positive_class`` (default 1 / True).
    Text labels need ``positive_class`` unless they read as booleans (``1/0``, ``true/false``, ``yes/no``).
    """
    if "label" not in table.column_names:
        return None
    col = table.column("label")
    known = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
    t = col.type
    if pa.types.is_null(t):
        return known, np.zeros(len(col), dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if positive_class is not None:
            target = str(positive_class)
        else:
            values = {str(v).lower() for v in pc.unique(col.drop_null()).to_pylist()}
            truthy = {"1", "true", "yes", "1.0"}
            if not values <= truthy | {"0", "false", "no", "0.0"}:
                raise SchemaError(f"cannot tell the positive class among labels {sorted(values)[:6]}; pass "
                                  "positive_class", column="label")
            lowered = pc.utf8_lower(col)
            pos = pc.is_in(lowered, value_set=pa.array(sorted(truthy)))
            return known, np.asarray(pc.fill_null(pos, False).to_numpy(zero_copy_only=False), dtype=bool)
        pos = pc.equal(col, pa.scalar(target))
    elif pa.types.is_boolean(t):
        pos = col if positive_class in (None, True, 1) else pc.invert(col)
    else:
        target_num = 1.0 if positive_class is None else float(positive_class)
        pos = pc.equal(col.cast(pa.float64()), pa.scalar(target_num))
    return known, np.asarray(pc.fill_null(pos, False).to_numpy(zero_copy_only=False), dtype=bool)


def float_column(table: pa.Table, name: str) -> FloatArray | None:
    """A numeric column as float64 with NaN for nulls; ``None`` when absent or not numeric."""
    if name not in table.column_names:
        return None
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
            or pa.types.is_decimal(col.type)):
        return None
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(), dtype=np.float64)


def segment_groups(table: pa.Table, column: str) -> list[tuple[str, npt.NDArray[np.intp]]]:
    """Row indices of each value of a segment column (as text), most frequent value first; nulls left out."""
    col = table.column(column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    enc = pc.dictionary_encode(col).combine_chunks()
    codes = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    values = enc.dictionary.to_pylist()
    counts = np.bincount(codes[codes >= 0], minlength=len(values))
    order = np.argsort(codes, kind="stable")
    n_null = int((codes < 0).sum())
    ends = n_null + np.cumsum(counts)
    starts = ends - counts
    ranked = sorted((i for i in range(len(values)) if counts[i] > 0), key=lambda i: (-counts[i], str(values[i])))
    return [(str(values[i]), order[starts[i]:ends[i]]) for i in ranked]


def infer_threshold(scores: FloatArray, predictions: FloatArray) -> float | None:
    """The decision threshold behind logged 0/1 predictions, or ``None`` when there is none.

    When every request predicted 1 scored higher than every request predicted 0, the threshold
    lies in ``(max score of 0s, min score of 1s]``; the roundest number there (fewest decimals) is
    returned, e.g. 0.5 for a gap of (0.4987, 0.5012].

    Examples
    --------
    >>> import numpy as np
    >>> infer_threshold(np.array([0.1, 0.49, 0.51, 0.9]), np.array([0.0, 0.0, 1.0, 1.0]))
    0.5
    """
    ok = np.isfinite(scores) & np.isfinite(predictions)
    s, p = scores[ok], predictions[ok]
    if s.size == 0 or not np.isin(p, (0.0, 1.0)).all():
        return None
    ones, zeros = s[p == 1.0], s[p == 0.0]
    if ones.size == 0 or zeros.size == 0:
        return None
    lo, hi = float(zeros.max()), float(ones.min())
    if lo >= hi:
        return None
    for digits in range(1, 10):
        scale = 10.0**digits
        cand = math.floor(lo * scale + 1.0) / scale
        if lo < cand <= hi:
            return round(cand, digits)
    return hi


# --------------------------------------------------------------------------- tests and power


def two_proportion(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float, float]:
    """``(p2 - p1, ci_low, ci_high, p_value)`` for two independent proportions.

    The interval is the unpooled Wald interval of the difference; the p-value is the pooled
    two-proportion z-test's, two-sided.
    """
    p1, p2 = k1 / n1, k2 / n2
    diff = p2 - p1
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    pooled = (k1 + k2) / (n1 + n2)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    from scipy.stats import norm  # lazily: importing scipy.stats takes ~1.5 s
    p_value = 1.0 if se0 == 0 else float(2 * norm.sf(abs(diff) / se0))
    return diff, diff - z * se, diff + z * se, p_value


def mcnemar(only_a: int, only_b: int, n: int, z: float = Z95) -> tuple[float, float, float, float]:
    """``(p_b - p_a, ci_low, ci_high, p_value)`` for two proportions on the same ``n`` requests.

    ``only_a`` / ``only_b`` count the requests positive under one version only. The p-value is
    McNemar's asymptotic test (``z = (only_b - only_a) / sqrt(only_a + only_b)``), two-sided.
    """
    diff = (only_b - only_a) / n
    disc = only_a + only_b
    se = math.sqrt(max(disc / n - diff * diff, 0.0) / n)
    from scipy.stats import norm  # lazily: importing scipy.stats takes ~1.5 s
    p_value = 1.0 if disc == 0 else float(2 * norm.sf(abs(only_b - only_a) / math.sqrt(disc)))
    return diff, diff - z * se, diff + z * se, p_value


def n_two_proportion(p1: float, p2: float, alpha: float, power: float) -> int | None:
    """Per-group sample size for a two-sided two-proportion z-test to detect ``p1`` vs ``p2``."""
    delta = abs(p2 - p1)
    if delta == 0:
        return None
    from scipy.stats import norm  # lazily: importing scipy.stats takes ~1.5 s
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    pbar = (p1 + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(num * num / (delta * delta))


def n_mcnemar(p_discordant: float, delta: float, alpha: float, power: float) -> int | None:
    """Pairs needed for McNemar's test to detect a difference ``delta`` with discordance ``p_discordant``."""
    delta = abs(delta)
    if delta == 0 or p_discordant <= 0:
        return None
    p_disc = max(p_discordant, delta)
    from scipy.stats import norm  # lazily: importing scipy.stats takes ~1.5 s
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    num = za * math.sqrt(p_disc) + zb * math.sqrt(max(p_disc - delta * delta, 0.0))
    return math.ceil(num * num / (delta * delta))


def ks_statistic(a: FloatArray, b: FloatArray) -> tuple[float, float] | None:
    """Two-sample Kolmogorov-Smirnov ``(statistic, p_value)`` on the finite values; ``None`` if either is empty."""
    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return None
    try:
        from mlsleuth.stats import ks_2samp  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        # mlsleuth.stats (the project's home of two-sample tests) is not exported in this build;
        # scipy's asymptotic KS gives the same statistic and p-value.
        from scipy.stats import ks_2samp as scipy_ks_2samp

        r = scipy_ks_2samp(a, b, method="asymp")
        return float(r.statistic), float(r.pvalue)
    res = ks_2samp(a, b)
    return float(res.statistic), float(res.p_value)
