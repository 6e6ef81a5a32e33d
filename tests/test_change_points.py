"""Change points locate steps, stay quiet on noise, and trends read the right direction."""

from __future__ import annotations

import numpy as np
import pytest

from mlsleuth.errors import InputError
from mlsleuth.stats import Trend, detect_change_points, onset, remove_seasonality, trend

TRIALS = 200


def test_a_step_in_a_noisy_week_of_hours_is_found_within_one_point() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(TRIALS):
        k = int(rng.integers(20, 148))
        x = rng.normal(size=168)
        x[k:] += 3.0
        hits += any(abs(c.index - k) <= 1 for c in detect_change_points(x))
    assert hits / TRIALS >= 0.95


def test_pure_noise_has_no_change_point_in_95_percent_of_series() -> None:
    rng = np.random.default_rng(1)
    quiet = sum(not detect_change_points(rng.normal(size=168)) for _ in range(TRIALS))
    assert quiet / TRIALS >= 0.95


def test_a_step_under_daily_seasonality_is_found_in_the_residuals() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(TRIALS):
        k = int(rng.integers(96, 148))
        x = rng.normal(size=168) + 3 * np.sin(np.arange(168) * 2 * np.pi / 24)
        x[k:] += 3.0
        hits += any(abs(c.index - k) <= 1 for c in detect_change_points(remove_seasonality(x, 24)))
    assert hits / TRIALS >= 0.85


def test_several_changes_on_ten_thousand_points_with_intervals_that_cover_them() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=10_000)
    x[3000:] += 1.0
    x[7000:] -= 2.0
    changes = detect_change_points(x)
    assert [c.lower <= k <= c.upper for c, k in zip(changes, (3000, 7000), strict=True)] == [True, True]
    assert changes[0].magnitude == pytest.approx(1.0, abs=0.2)
    assert all(c.confidence > 0.99 for c in changes)


def test_onset_reports_times_and_none_without_change() -> None:
    rng = np.random.default_rng(4)
    times = np.arange("2026-03-01T00", "2026-03-08T00", dtype="datetime64[h]")
    x = rng.normal(size=168)
    assert onset(x, times) is None
    x[100:] += 4
    o = onset(x, times)
    assert o is not None
    assert o.earliest <= times[100] <= o.latest
    assert abs(int((o.time - times[100]).astype(int))) <= 1
    with pytest.raises(InputError, match="one value per point"):
        onset(x, times[:-1])


@pytest.mark.parametrize(("higher_is_worse", "expected"), [(True, Trend.WORSENING), (False, Trend.RECOVERING)])
def test_trend_direction_follows_what_worse_means(higher_is_worse: bool, expected: Trend) -> None:
    rng = np.random.default_rng(5)
    rising = 0.02 * np.arange(200) + rng.normal(size=200)
    assert trend(rising, higher_is_worse=higher_is_worse).trend is expected


def test_flat_noise_and_immaterial_slopes_are_stable() -> None:
    rng = np.random.default_rng(6)
    stable = sum(trend(rng.normal(size=168), higher_is_worse=True).trend is Trend.STABLE for _ in range(100))
    assert stable >= 95
    # a long series whose line moves by a fifth of its noise is not a material trend
    x = 0.2 * np.arange(2000) / 2000 + rng.normal(size=2000)
    result = trend(x, higher_is_worse=True)
    assert result.trend is Trend.STABLE
