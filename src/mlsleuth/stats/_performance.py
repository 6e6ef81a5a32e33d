"""Label-free performance estimation (CBPE) from calibrated scores.

With calibrated probabilities ``p_i = P(y_i = 1 | score_i)``, each cell of the confusion matrix is a
sum of independent Bernoullis, so its expectation and variance are known without labels. The
estimate stays unbiased under covariate shift as long as ``P(y | score)`` is unchanged (no concept
shift); the calibration is therefore fitted on the reference, where labels exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlsleuth.errors import InputError, NotFittedError
from mlsleuth.stats._arrays import FloatArray, as_sample
from mlsleuth.stats._metrics import Estimate, _z

__all__ = ["Calibrator", "ExpectedConfusion", "cbpe_accuracy", "expected_confusion"]


def _pav(y: FloatArray, w: FloatArray) -> FloatArray:
    """Weighted pool-adjacent-violators for a non-decreasing fit (a loop over bins, not rows)."""
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        values.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            wsum = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / wsum
            size = sizes[-2] + sizes[-1]
            del values[-1], weights[-1], sizes[-1]
            values[-1], weights[-1], sizes[-1] = merged, wsum, size
    return np.repeat(np.array(values), sizes)


class Calibrator:
    """Monotone score calibration: isotonic regression over quantile bins of the reference scores.

    Reference scores are cut into ``n_bins`` equal-count bins; the label rate per bin is made
    non-decreasing by pool-adjacent-violators; a score maps to the linear interpolation between
    bin mean scores (constant beyond the outermost bins).

    Parameters
    ----------
    n_bins
        Quantile bins of the reference scores (fewer when scores tie).

    Attributes
    ----------
    knots_ : numpy.ndarray
        Mean reference score per bin.
    rates_ : numpy.ndarray
        Calibrated probability per bin (non-decreasing).
    n_ : int
        Reference rows fitted.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=10_000)
    >>> y = (rng.uniform(size=s.size) < s**2).astype(float)
    >>> cal = Calibrator().fit(s, y)
    >>> abs(float(cal.transform([0.5])[0]) - 0.25) < 0.05
    True
    """

    def __init__(self, n_bins: int = 50) -> None:
        self.n_bins = n_bins

    def fit(self, scores: npt.ArrayLike, labels: npt.ArrayLike) -> Calibrator:
        """Fit on reference scores and their 0/1 labels; returns ``self``."""
        if self.n_bins < 1:
            raise InputError(f"n_bins must be at least 1, got {self.n_bins}")
        s = as_sample(scores, "scores")
        y = as_sample(labels, "labels")
        if y.size != s.size:
            raise InputError(f"labels must match the scores: {s.size} scores, {y.size} labels")
        if not np.all((y == 0) | (y == 1)):
            raise InputError("labels must be 0 or 1")
        edges = np.unique(np.quantile(s, np.linspace(0, 1, self.n_bins + 1)))
        idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(edges.size - 2, 0))
        count = np.bincount(idx)
        keep = count > 0
        knots = np.bincount(idx, s)[keep] / count[keep]
        rates = np.bincount(idx, y)[keep] / count[keep]
        self.knots_ = knots
        self.rates_ = _pav(rates, count[keep].astype(np.float64))
        self.n_ = int(s.size)
        return self

    def transform(self, scores: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities for raw scores."""
        if not hasattr(self, "rates_"):
            raise NotFittedError("Calibrator is not fitted; call fit(reference_scores, reference_labels) first")
        s = as_sample(scores, "scores", allow_empty=True)
        out: FloatArray = np.interp(s, self.knots_, self.rates_)
        return out


@dataclass(frozen=True)
class ExpectedConfusion:
    """Confusion-matrix metrics expected from calibrated probabilities, without labels.

    Attributes
    ----------
    accuracy, precision, recall, false_positive_rate
        Estimates with normal intervals for the realised value (sum-of-Bernoullis variance; the
        ratio metrics by the delta method).
    tp, fp, fn, tn
        Expected cell counts.
    n
        Rows.
    """

    accuracy: Estimate
    precision: Estimate
    recall: Estimate
    false_positive_rate: Estimate
    tp: float
    fp: float
    fn: float
    tn: float
    n: int


def _inputs(
    probabilities: npt.ArrayLike, predictions: npt.ArrayLike | None, threshold: float
) -> tuple[FloatArray, FloatArray]:
    p = as_sample(probabilities, "probabilities")
    if np.any((p < 0) | (p > 1)):
        raise InputError("probabilities must be calibrated probabilities in [0, 1]")
    if predictions is None:
        pred = (p >= threshold).astype(np.float64)
    else:
        pred = as_sample(predictions, "predictions")
        if pred.size != p.size or not np.all((pred == 0) | (pred == 1)):
            raise InputError(f"predictions must be {p.size} values of 0 or 1")
    return p, pred


def _est(value: float, var: float, n: int, confidence: float) -> Estimate:
    if math.isnan(value):
        return Estimate(math.nan, 0.0, 1.0, n, confidence)
    half = _z(confidence) * math.sqrt(max(var, 0.0))
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), n, confidence)


def _ratio(a: float, var_a: float, b: float, var_b: float) -> tuple[float, float]:
    """``a / (a + b)`` with independent ``a`` and ``b``, and its delta-method variance."""
    total = a + b
    if total <= 0:
        return math.nan, 0.0
    return a / total, (b * b * var_a + a * a * var_b) / total**4


def expected_confusion(
    probabilities: npt.ArrayLike,
    predictions: npt.ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
) -> ExpectedConfusion:
    """Expected confusion matrix and metrics from calibrated probabilities.

    Parameters
    ----------
    probabilities
        Calibrated ``P(y = 1)`` per row (e.g. from :class:`Calibrator`).
    predictions
        The model's 0/1 decisions; default ``probabilities >= threshold``. Pass them when the model
        decides on its raw score.
    threshold, confidence
        Decision threshold when ``predictions`` is omitted; interval coverage.
    """
    p, pred = _inputs(probabilities, predictions, threshold)
    pos, neg = pred == 1, pred == 0
    tp, fp = float(p[pos].sum()), float((1 - p[pos]).sum())
    fn, tn = float(p[neg].sum()), float((1 - p[neg]).sum())
    v = p * (1 - p)
    var_pos, var_neg = float(v[pos].sum()), float(v[neg].sum())
    n = int(p.size)
    n_pos = int(pos.sum())
    accuracy = _est((tp + tn) / n, (var_pos + var_neg) / n**2, n, confidence)
    precision = _est(tp / n_pos if n_pos else math.nan, var_pos / n_pos**2 if n_pos else 0.0, n_pos, confidence)
    r, var_r = _ratio(tp, var_pos, fn, var_neg)
    f, var_f = _ratio(fp, var_pos, tn, var_neg)
    return ExpectedConfusion(
        accuracy=accuracy,
        precision=precision,
        recall=_est(r, var_r, n, confidence),
        false_positive_rate=_est(f, var_f, n, confidence),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        n=n,
    )


def cbpe_accuracy(
    probabilities: npt.ArrayLike,
    predictions: npt.ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
) -> Estimate:
    """Expected accuracy of a window from calibrated probabilities, with an interval for the realised accuracy.

    Examples
    --------
    >>> round(cbpe_accuracy([0.9, 0.1, 0.8, 0.3]).value, 3)
    0.825
    """
    return expected_confusion(probabilities, predictions, threshold=threshold, confidence=confidence).accuracy
