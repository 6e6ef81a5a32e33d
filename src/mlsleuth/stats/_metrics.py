"""Classifier and regression metrics with confidence intervals, as pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlsleuth.errors import InputError
from mlsleuth.stats._arrays import FloatArray, as_sample

__all__ = [
    "ClassificationMetrics",
    "Estimate",
    "auc",
    "classification_metrics",
    "ece",
    "log_loss",
    "mae",
    "rmse",
    "wilson_interval",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval.

    Attributes
    ----------
    value
        The estimate (``nan`` when undefined, e.g. precision with no positive predictions).
    lower, upper
        Interval bounds at ``confidence``.
    n
        Observations behind it.
    confidence
        Nominal coverage of the interval.
    """

    value: float
    lower: float
    upper: float
    n: int
    confidence: float = 0.95

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the interval."""
        return self.lower <= x <= self.upper


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    from scipy.stats import distributions  # lazily: importing scipy.stats takes ~1.5 s
    return float(distributions.norm.isf((1 - confidence) / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """A rate with its Wilson score interval (good at small ``n`` and rates near 0 or 1).

    Examples
    --------
    >>> e = wilson_interval(0, 10)
    >>> e.value, e.lower, round(e.upper, 3)
    (0.0, 0.0, 0.278)
    """
    if n < 0 or successes < 0 or successes > n:
        raise InputError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    if n == 0:
        return Estimate(math.nan, 0.0, 1.0, 0, confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, confidence)


def _labels(labels: npt.ArrayLike, n: int) -> FloatArray:
    y = as_sample(labels, "labels")
    if y.size != n:
        raise InputError(f"labels must match the scores: {n} scores, {y.size} labels")
    if not np.all((y == 0) | (y == 1)):
        raise InputError("labels must be 0 or 1")
    return y


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike, confidence: float = 0.95) -> Estimate:
    """ROC AUC by the Mann-Whitney rank statistic (ties count one half), with a Hanley-McNeil interval.

    Examples
    --------
    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]).value
    0.75
    """
    s = as_sample(scores, "scores")
    y = _labels(labels, s.size)
    n_pos = int(y.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    from scipy.stats import rankdata  # lazily: importing scipy.stats takes ~1.5 s
    ranks = rankdata(s)
    a = float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    half = _z(confidence) * math.sqrt(max(var, 0.0))
    return Estimate(a, max(0.0, a - half), min(1.0, a + half), s.size, confidence)


def log_loss(probabilities: npt.ArrayLike, labels: npt.ArrayLike, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of binary labels, probabilities clipped to ``[eps, 1 - eps]``."""
    p = np.clip(as_sample(probabilities, "probabilities"), eps, 1 - eps)
    y = _labels(labels, p.size)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ece(probabilities: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width probability bins.

    The bin-size-weighted mean of ``|mean(label) - mean(probability)|``.
    """
    p = as_sample(probabilities, "probabilities")
    y = _labels(labels, p.size)
    if np.any((p < 0) | (p > 1)):
        raise InputError("probabilities must be in [0, 1]")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    gap = np.abs(np.bincount(idx, y, minlength=n_bins) - np.bincount(idx, p, minlength=n_bins))
    return float(gap.sum() / p.size)


def _pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    a, b = as_sample(y_true, "y_true"), as_sample(y_pred, "y_pred")
    if a.size != b.size:
        raise InputError(f"y_true and y_pred differ in length: {a.size} and {b.size}")
    return a, b


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean absolute error."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(np.abs(a - b)))


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared error."""
    a, b = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2)))


@dataclass(frozen=True)
class ClassificationMetrics:
    """Binary classification rates with Wilson intervals.

    Attributes
    ----------
    accuracy, precision, recall, false_positive_rate, positive_rate
        Rates (``positive_rate`` is the share of positive predictions).
    n
        Labelled rows.
    """

    accuracy: Estimate
    precision: Estimate
    recall: Estimate
    false_positive_rate: Estimate
    positive_rate: Estimate
    n: int


def classification_metrics(
    labels: npt.ArrayLike, predictions: npt.ArrayLike, confidence: float = 0.95
) -> ClassificationMetrics:
    """Accuracy, precision, recall, FPR and positive rate of 0/1 predictions, each with a Wilson interval."""
    y = as_sample(labels, "labels")
    pred = _labels(predictions, y.size)
    y = _labels(y, pred.size)
    tp = int(np.sum((pred == 1) & (y == 1)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    tn = y.size - tp - fp - fn
    return ClassificationMetrics(
        accuracy=wilson_interval(tp + tn, y.size, confidence),
        precision=wilson_interval(tp, tp + fp, confidence),
        recall=wilson_interval(tp, tp + fn, confidence),
        false_positive_rate=wilson_interval(fp, fp + tn, confidence),
        positive_rate=wilson_interval(tp + fp, y.size, confidence),
        n=int(y.size),
    )
