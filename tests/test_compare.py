"""A/B and shadow comparison of two model versions: tests, intervals, power, per segment."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlsleuth.errors import ConfigError
from mlsleuth.replay import Design, MemoryRunner, Metric, Outcome, compare
from mlsleuth.replay._metrics import n_two_proportion


def arm(version: str, n_neg: int, n_pos: int, fpr: float, tpr: float = 0.6, id_offset: int = 0) -> pa.Table:
    """One version's traffic with exactly ``fpr`` of negatives and ``tpr`` of positives alerted."""
    fp, tp = round(fpr * n_neg), round(tpr * n_pos)
    score = np.r_[np.full(fp, 0.9), np.full(n_neg - fp, 0.1), np.full(tp, 0.9), np.full(n_pos - tp, 0.1)]
    label = np.r_[np.zeros(n_neg, dtype=np.int64), np.ones(n_pos, dtype=np.int64)]
    n = n_neg + n_pos
    return pa.table({"request_id": [f"{version}-{i + id_offset}" for i in range(n)], "model_version": [version] * n,
                     "region": np.resize(np.array(["EU", "US"]), n), "score": score,
                     "prediction": (score >= 0.5).astype(np.int64), "label": label})


def ab_log(n_neg: int, n_pos: int, fpr_a: float = 0.02, fpr_b: float = 0.03) -> pa.Table:
    return pa.concat_tables([arm("v1", n_neg, n_pos, fpr_a), arm("v2", n_neg, n_pos, fpr_b)])


def test_a_one_point_fpr_difference_is_significant_with_enough_traffic() -> None:
    c = compare(ab_log(40_000, 2_000), a="v1", b="v2")
    assert c.design is Design.SPLIT and "scored by both" in c.design_reason
    fpr = c.test(Metric.FPR)
    assert fpr.outcome is Outcome.SIGNIFICANT and fpr.method == "two-proportion z-test"
    assert fpr.difference == pytest.approx(0.01)
    assert 0 < fpr.ci_low < 0.01 < fpr.ci_high and fpr.p_value < 1e-6
    assert fpr.more_requests_needed == 0
    assert c.test(Metric.TPR).outcome is Outcome.NO_DIFFERENCE  # equal TPR: nothing to detect
    assert not c.underpowered
    json.dumps(c.to_dict())


def test_the_same_difference_on_little_traffic_is_underpowered_and_says_how_much_more() -> None:
    c = compare(ab_log(1_000, 100), a="v1", b="v2")
    fpr = c.test(Metric.FPR)
    assert fpr.outcome is Outcome.UNDERPOWERED and c.underpowered
    assert fpr.p_value > 0.05
    negatives_needed = n_two_proportion(0.02, 0.03, 0.05, 0.8)
    assert negatives_needed is not None and 3_000 < negatives_needed < 5_000
    assert fpr.required_per_arm == pytest.approx(negatives_needed / (1_000 / 1_100), abs=1)
    assert fpr.more_requests_needed == 2 * (fpr.required_per_arm - 1_100)
    # With the traffic the power calculation asked for, the same rates are significant.
    need = fpr.required_per_arm
    assert need is not None
    enough = compare(ab_log(round(need * 1_000 / 1_100), round(need * 100 / 1_100)), a="v1", b="v2")
    assert enough.test(Metric.FPR).outcome is Outcome.SIGNIFICANT


def test_min_effect_separates_no_difference_from_underpowered() -> None:
    big = compare(ab_log(40_000, 2_000, 0.02, 0.02), a="v1", b="v2", min_effect=0.01)
    assert big.test(Metric.FPR).outcome is Outcome.NO_DIFFERENCE
    small = compare(ab_log(1_000, 100, 0.02, 0.02), a="v1", b="v2", min_effect=0.01)
    assert small.test(Metric.FPR).outcome is Outcome.UNDERPOWERED
    assert (small.test(Metric.FPR).more_requests_needed or 0) > 0


def test_per_segment_results() -> None:
    c = compare(ab_log(40_000, 2_000), a="v1", b="v2")
    regions = {(s.column, s.value) for s in c.segments}
    assert regions == {("region", "EU"), ("region", "US")}
    eu = next(s for s in c.segments if s.value == "EU")
    assert eu.a.n + next(s for s in c.segments if s.value == "US").a.n == c.metrics_a.n


def test_shadow_comparison_of_a_logged_version_and_a_challenger() -> None:
    log = arm("v1", 20_000, 1_000, 0.02)
    # The challenger alerts on 1 % more of the traffic (the first rows with score 0.1 that are negatives).
    flip = np.zeros(log.num_rows, dtype=bool)
    low = np.flatnonzero(log["score"].to_numpy() < 0.5)
    flip[low[:200]] = True

    def challenger(t: pa.Table) -> np.ndarray:
        return np.where(flip, 0.9, t["score"].to_numpy())

    c = compare(log, a="v1", b=MemoryRunner(challenger, name="v2-candidate"))
    assert c.design is Design.SHADOW and c.b == "v2-candidate"
    assert c.agreement == pytest.approx(1 - 200 / log.num_rows)
    pr = c.test(Metric.POSITIVE_RATE)
    assert pr.method == "McNemar test (paired)" and pr.outcome is Outcome.SIGNIFICANT
    assert pr.difference == pytest.approx(200 / log.num_rows)
    assert c.score_shift_ks is not None and c.score_shift_ks > 0


def test_shadow_traffic_in_the_log_is_paired_on_request_id() -> None:
    a = arm("v1", 5_000, 500, 0.02)
    b = a.set_column(1, "model_version", pa.array(["v2"] * a.num_rows))
    c = compare(pa.concat_tables([a, b]), a="v1", b="v2")
    assert c.design is Design.SHADOW and c.agreement == 1.0
    assert c.test(Metric.FPR).outcome is Outcome.NO_DIFFERENCE
    split = compare(pa.concat_tables([a, b]), a="v1", b="v2", design=Design.SPLIT)
    assert split.design is Design.SPLIT and split.agreement is None


def test_compare_errors_name_what_is_missing() -> None:
    log = ab_log(100, 10)
    with pytest.raises(ConfigError, match=r"no requests of version 'v9'.*\['v1', 'v2'\]"):
        compare(log, a="v1", b="v9")
    with pytest.raises(ConfigError, match="shadow comparison pairs requests"):
        compare(log, a="v1", b="v2", design=Design.SHADOW)
    with pytest.raises(ConfigError, match="alpha"):
        compare(log, a="v1", b="v2", alpha=2.0)
    no_labels = log.drop_columns(["label"])
    c = compare(no_labels, a="v1", b="v2")
    assert [t.metric for t in c.tests] == [Metric.POSITIVE_RATE]
    with pytest.raises(KeyError, match="fpr was not tested"):
        c.test(Metric.FPR)
    assert pc.sum(log["label"]).as_py() == 20
