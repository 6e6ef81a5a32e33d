"""Label-free accuracy (CBPE) tracks the realised accuracy under covariate shift."""

from __future__ import annotations

import numpy as np
import pytest

from mlsleuth.errors import NotFittedError
from mlsleuth.stats import Calibrator, cbpe_accuracy, expected_confusion

WEIGHTS = np.array([1.5, -1.0, 0.8])


def _stream(rng: np.random.Generator, n: int, mean: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels depend on the features only through z; the model's score is a miscalibrated function of z."""
    x = rng.normal(mean, scale, size=(n, 3))
    z = x @ WEIGHTS - 0.5
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-3.5 * z))).astype(float)
    scores = 1 / (1 + np.exp(-(z + 0.3)))
    return scores, labels


def test_cbpe_accuracy_error_is_at_most_half_a_point_per_5k_window_under_covariate_shift() -> None:
    rng = np.random.default_rng(0)
    ref_scores, ref_labels = _stream(rng, 50_000, np.zeros(3), 1.0)
    calibrator = Calibrator().fit(ref_scores, ref_labels)
    errors, realised_accuracies = [], []
    for w in range(20):
        drift = min(max(w - 7, 0) / 5, 1.0)  # stable, then the population moves towards the boundary
        scores, labels = _stream(rng, 5_000, np.array([0.2, 0.0, 0.25]) * drift, 1.0 - 0.4 * drift)
        predictions = (scores >= 0.5).astype(float)
        estimate = cbpe_accuracy(calibrator.transform(scores), predictions)
        realised = float(np.mean(predictions == labels))
        errors.append(abs(estimate.value - realised))
        realised_accuracies.append(realised)
    assert realised_accuracies[0] - realised_accuracies[-1] > 0.02  # the shift really costs accuracy
    assert np.mean(errors) <= 0.005


def test_raw_scores_without_calibration_miss_by_far_more() -> None:
    rng = np.random.default_rng(1)
    scores, labels = _stream(rng, 20_000, np.zeros(3), 1.0)
    predictions = (scores >= 0.5).astype(float)
    realised = float(np.mean(predictions == labels))
    calibrated = Calibrator().fit(*_stream(rng, 50_000, np.zeros(3), 1.0)).transform(scores)
    assert abs(cbpe_accuracy(calibrated, predictions).value - realised) < 0.01
    assert abs(cbpe_accuracy(scores, predictions).value - realised) > 0.03


def test_expected_confusion_matches_the_realised_matrix_and_intervals_cover_it() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    pred = (p >= 0.5).astype(float)
    e = expected_confusion(p)
    assert e.tp + e.fp + e.fn + e.tn == pytest.approx(p.size)
    assert e.accuracy.contains(float(np.mean(pred == y)))
    assert e.precision.contains(float(y[pred == 1].mean()))
    assert e.recall.contains(float(pred[y == 1].mean()))
    assert e.false_positive_rate.contains(float(pred[y == 0].mean()))


def test_calibrator_is_monotone_and_refuses_use_before_fit() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        Calibrator().transform([0.5])
    rng = np.random.default_rng(3)
    s = rng.uniform(size=5_000)
    cal = Calibrator(n_bins=20).fit(s, (rng.uniform(size=s.size) < s).astype(float))
    out = cal.transform(np.linspace(0, 1, 101))
    assert np.all(np.diff(out) >= 0) and cal.n_ == 5_000
