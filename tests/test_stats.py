"""Distances agree with scipy; drift decisions keep their meaning at any size and category count."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import jensenshannon

from mlsleuth.errors import InputError
from mlsleuth.stats import (
    DriftKind,
    DriftMethod,
    auc,
    chi_square,
    choose_method,
    classification_metrics,
    compare_counts,
    compare_samples,
    ece,
    hellinger,
    js_distance,
    ks_2samp,
    ks_binned,
    linf,
    log_loss,
    psi,
    wasserstein,
    wasserstein_binned,
    wilson_interval,
)

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_raw_sample_statistics_agree_with_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rng.integers(5, 400))
    b = rng.normal(0.3, 1.5, size=rng.integers(5, 400))
    if seed % 2:
        a, b = np.round(a, 1), np.round(b, 1)  # ties
    expected = scipy.stats.ks_2samp(a, b, method="asymp")
    got = ks_2samp(a, b)
    assert got.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert got.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert got.statistic == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-9)
    assert wasserstein(a, b, normalise=False) == pytest.approx(scipy.stats.wasserstein_distance(a, b), abs=1e-9)
    assert wasserstein(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b) / np.std(a), abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_histogram_statistics_agree_with_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 40))
    ref = rng.integers(1, 200, size=k)
    cur = rng.integers(0, 200, size=k)
    assert js_distance(ref, cur) == pytest.approx(jensenshannon(ref, cur), abs=1e-9)
    assert js_distance(ref, cur, base=2) == pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-9)
    expected = scipy.stats.chisquare(cur, ref / ref.sum() * cur.sum())
    got = chi_square(ref, cur)
    assert got.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert got.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    p, q = ref / ref.sum(), (cur + 1) / (cur + 1).sum()
    assert psi(ref, cur + 1) == pytest.approx(scipy.stats.entropy(p, q) + scipy.stats.entropy(q, p), abs=1e-9)
    assert hellinger(ref, cur) == pytest.approx(np.sqrt(1 - np.sum(np.sqrt(p * cur / cur.sum()))), abs=1e-7)
    assert linf(ref, cur) == pytest.approx(np.max(np.abs(p - cur / cur.sum())), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_binned_ks_and_wasserstein_equal_raw_ones_when_values_sit_in_their_bins(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 10, size=300).astype(float)
    b = rng.integers(2, 12, size=200).astype(float)
    edges = np.arange(0.0, 12.0)  # integer values on the edges: one value per inner bin
    ca = np.bincount(np.searchsorted(edges, a, side="right"), minlength=13)
    cb = np.bincount(np.searchsorted(edges, b, side="right"), minlength=13)
    assert ks_binned(ca, cb).statistic == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-9)
    # a point mass at the left edge of a unit-width bin is off by at most half a unit of the mass moved
    raw = scipy.stats.wasserstein_distance(a, b)
    assert abs(wasserstein_binned(edges, ca, cb, lo=0, hi=11) - raw) <= 0.5 + 1e-9


def test_identical_distributions_have_zero_distance_and_disjoint_ones_the_maximum() -> None:
    assert js_distance([1, 2, 3], [2, 4, 6]) == 0.0
    assert hellinger([1, 0], [0, 1]) == 1.0
    assert js_distance([1, 0], [0, 1]) == pytest.approx(np.sqrt(np.log(2)))
    assert psi([5, 5], [5, 5]) == 0.0


def test_mismatched_bins_and_bad_counts_are_rejected_with_a_message() -> None:
    with pytest.raises(InputError, match="same bins"):
        js_distance([1, 2], [1, 2, 3])
    with pytest.raises(InputError, match="non-negative"):
        psi([1, -1], [1, 1])
    with pytest.raises(InputError, match="NaN"):
        ks_2samp([1.0, np.nan], [1.0])


# ----------------------------------------------------------------------------- drift decisions

REF_P = np.diff(scipy.stats.norm.cdf(np.concatenate([[-np.inf], np.linspace(-3, 3, 21), [np.inf]])))


def _bins_for_shift(shift: float) -> np.ndarray:
    cdf = scipy.stats.norm.cdf(np.concatenate([[-np.inf], np.linspace(-3, 3, 21), [np.inf]]) - shift)
    return np.diff(cdf)


@pytest.mark.parametrize("n_cur", [1_000, 100_000, 10_000_000])
def test_no_change_stream_raises_at_most_one_percent_false_alarms(n_cur: int) -> None:
    rng = np.random.default_rng(n_cur)
    ref = rng.multinomial(200_000, REF_P)
    alarms = sum(
        compare_counts(ref, rng.multinomial(n_cur, REF_P), kind=DriftKind.NUMERIC, seed=i).drifted for i in range(400)
    )
    assert alarms / 400 <= 0.01


@pytest.mark.parametrize(("k", "n_ref", "n_cur"), [(3, 1_000, 1_000), (200, 1_000, 1_000), (1000, 100_000, 1_000)])
def test_categoricals_of_any_cardinality_raise_no_more_false_alarms(k: int, n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(k)
    p = 1 / np.arange(1, k + 1) ** 1.1  # Zipf-like: many rare categories
    p /= p.sum()
    trials = 100
    alarms = 0
    for i in range(trials):
        ref = rng.multinomial(n_ref, p)  # references redrawn: the guarantee is over references too
        alarms += compare_counts(ref, rng.multinomial(n_cur, p), kind=DriftKind.CATEGORICAL, seed=i).drifted
    assert alarms / trials <= 0.02


@pytest.mark.parametrize("n", [5_000, 100_000, 10_000_000])
def test_a_fifth_of_a_standard_deviation_shift_is_found_in_95_percent_of_windows(n: int) -> None:
    rng = np.random.default_rng(n + 1)
    shifted = _bins_for_shift(0.2)
    ref = rng.multinomial(5_000 if n == 5_000 else 200_000, REF_P)
    found = sum(
        compare_counts(ref, rng.multinomial(n, shifted), kind=DriftKind.NUMERIC, seed=i).drifted for i in range(100)
    )
    assert found >= 95


def test_raw_samples_find_the_same_shift_with_every_numeric_method() -> None:
    # LINF is left out: its materiality is 5 share points of one category, a categorical notion
    rng = np.random.default_rng(7)
    ref = rng.normal(size=5_000)
    for method in [None, *(m for m in DriftMethod if m is not DriftMethod.LINF)]:
        same = compare_samples(ref, rng.normal(size=5_000), method=method)
        moved = compare_samples(ref, rng.normal(0.2, 1, size=5_000), method=method)
        assert not same.drifted, method
        assert moved.drifted, method


def test_a_tiny_real_shift_at_ten_million_rows_is_not_flagged_unless_material() -> None:
    rng = np.random.default_rng(3)
    ref = rng.multinomial(10_000_000, REF_P)
    tiny = compare_counts(ref, rng.multinomial(10_000_000, _bins_for_shift(0.03)), kind=DriftKind.NUMERIC)
    assert not tiny.drifted
    assert tiny.statistic > tiny.noise_floor  # it is real, just immaterial
    assert tiny.threshold == tiny.materiality


def test_small_windows_are_limited_by_noise_and_say_so() -> None:
    r = compare_counts([50] * 20, [5] * 20, kind=DriftKind.NUMERIC)
    assert r.limited_by_noise and r.threshold == r.noise_floor
    assert r.n_ref == 1000 and r.n_cur == 100 and r.n_bins == 20


def test_the_result_records_method_reason_and_is_deterministic() -> None:
    a = compare_counts([30, 50, 20], [20, 50, 30], kind=DriftKind.CATEGORICAL)
    b = compare_counts([30, 50, 20], [20, 50, 30], kind=DriftKind.CATEGORICAL)
    assert a == b
    assert a.method is DriftMethod.JENSEN_SHANNON
    assert "categorical" in a.reason and "3 categories" in a.reason
    forced = compare_counts([30, 50, 20], [20, 50, 30], kind=DriftKind.CATEGORICAL, method=DriftMethod.LINF)
    assert forced.reason == "linf requested by the caller"
    assert forced.statistic == pytest.approx(0.1)


def test_choose_method_explains_itself_and_refuses_empty_sides() -> None:
    method, reason = choose_method(DriftKind.NUMERIC, 22, 1000, 10)
    assert method is DriftMethod.JENSEN_SHANNON
    assert "n_ref=1000, n_cur=10, 22 bins" in reason
    with pytest.raises(InputError, match="n_cur=0"):
        choose_method(DriftKind.NUMERIC, 22, 1000, 0)


def test_ordered_methods_refuse_categoricals() -> None:
    with pytest.raises(InputError, match="ordered"):
        compare_counts([1, 2], [2, 1], kind=DriftKind.CATEGORICAL, method=DriftMethod.KOLMOGOROV_SMIRNOV)


# ----------------------------------------------------------------------------- metrics


def test_wilson_interval_matches_the_textbook_value() -> None:
    e = wilson_interval(81, 263)
    assert (round(e.lower, 4), round(e.upper, 4)) == (0.2553, 0.3662)


def test_auc_log_loss_and_ece_agree_with_scikit_learn() -> None:
    from sklearn import metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=500)
    s = np.clip(0.3 * y + rng.uniform(size=500) * 0.7, 0, 1).round(2)
    assert auc(s, y).value == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    assert log_loss(s, y) == pytest.approx(metrics.log_loss(y, s), abs=1e-9)
    assert ece(np.full(10, 0.7), [1] * 7 + [0] * 3) == pytest.approx(0.0)
    m = classification_metrics(y, (s >= 0.5).astype(int))
    assert m.precision.value == pytest.approx(metrics.precision_score(y, s >= 0.5))
    assert m.recall.value == pytest.approx(metrics.recall_score(y, s >= 0.5))
