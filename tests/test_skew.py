"""Training-serving skew: recompute features from logged inputs with the training code and compare per request."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from mlsleuth.errors import SchemaError
from mlsleuth.replay import Selection, compare_offline, skew_check

Arrays = dict[str, np.ndarray[Any, Any]]


def training_features(x: Arrays) -> Arrays:
    """The training feature code."""
    return {"log_amount": np.log(x["amount"]), "avg_amount_30d": x["sum_amount_30d"] / 30.0,
            "channel_code": np.where(x["channel"] == "web", "W", "O")}


def serving_with(**bugs: Callable[[Arrays], np.ndarray[Any, Any]]) -> Callable[[Arrays], Arrays]:
    def serving(x: Arrays) -> Arrays:
        out = training_features(x)
        out.update({k: f(x) for k, f in bugs.items()})
        return out
    return serving


def make_log(serving: Callable[[Arrays], Arrays], n: int = 5_000, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    daily = rng.lognormal(3.0, 0.5, n)
    x: Arrays = {
        "amount": rng.lognormal(3.5, 1.0, n) + 1.5,  # never exactly 1, where log and log10 agree
        "sum_amount_7d": daily * 7 * rng.lognormal(0.0, 0.3, n),
        "sum_amount_30d": daily * 30,
        "channel": rng.choice(np.array(["web", "app"]), n),
        "customer_id": rng.integers(0, 400, n).astype(str),
    }
    feats = serving(x)
    return pa.table({"request_id": [f"r{i}" for i in range(n)], "region": rng.choice(np.array(["EU", "US"]), n),
                     **{f"input.{k}": v for k, v in x.items()}, **{f"feature.{k}": v for k, v in feats.items()},
                     "score": rng.random(n)})


def test_a_correct_pipeline_has_no_mismatches() -> None:
    log = make_log(training_features)
    report = skew_check(log, training_features)
    assert report.n == 5_000 and report.skewed == ()
    assert {f.feature for f in report.features} == {"feature.log_amount", "feature.avg_amount_30d",
                                                    "feature.channel_code"}
    assert all(f.n_mismatch == 0 and f.examples == () for f in report.features)
    json.dumps(report.to_dict())


def test_float32_rounding_in_the_log_is_not_skew() -> None:
    log = make_log(training_features)
    col = log.column_names.index("feature.log_amount")
    log = log.set_column(col, "feature.log_amount", log["feature.log_amount"].cast(pa.float32()))
    assert skew_check(log, training_features)["log_amount"].n_mismatch == 0


def test_finds_natural_log_versus_log10() -> None:
    log = make_log(serving_with(log_amount=lambda x: np.log10(x["amount"])))
    report = skew_check(log, training_features, n_examples=3)
    assert [f.feature for f in report.skewed] == ["feature.log_amount"]
    f = report["feature.log_amount"]
    assert f.mismatch_rate == 1.0
    # log10(x) = ln(x) / ln(10): every value is off by the same relative amount.
    assert f.max_rel_diff == pytest.approx(1 - 1 / math.log(10), rel=1e-9)
    amounts = dict(zip(log["request_id"].to_pylist(), log["input.amount"].to_pylist(), strict=True))
    biggest = max(amounts.values())
    assert amounts[f.examples[0]] == biggest  # the largest absolute difference is at the largest amount
    assert f.max_abs_diff == pytest.approx(math.log(biggest) - math.log10(biggest))


def test_finds_a_7_day_window_used_for_a_30_day_feature() -> None:
    log = make_log(serving_with(avg_amount_30d=lambda x: x["sum_amount_7d"] / 7.0))
    report = skew_check(log, training_features)
    assert [f.feature for f in report.skewed] == ["feature.avg_amount_30d"]
    f = report["avg_amount_30d"]
    assert f.mismatch_rate > 0.99 and f.max_rel_diff is not None and f.max_rel_diff > 0.5
    assert len(f.examples) == 5 and len(set(f.examples)) == 5


def test_a_bug_in_part_of_the_traffic_gives_its_share() -> None:
    clean = make_log(training_features)
    broken = make_log(serving_with(log_amount=lambda x: np.log10(x["amount"])))
    eu = np.asarray(clean["region"].to_numpy(zero_copy_only=False) == "EU")
    col = clean.column_names.index("feature.log_amount")
    mixed = clean.set_column(col, "feature.log_amount",
                             pa.array(np.where(eu, broken["feature.log_amount"].to_numpy(),
                                               clean["feature.log_amount"].to_numpy())))
    report = skew_check(mixed, training_features)
    assert report["log_amount"].n_mismatch == int(eu.sum())
    only_us = skew_check(mixed, training_features, selection=Selection(segments=[{"region": "US"}]))
    assert only_us.skewed == () and only_us.n == int((~eu).sum())


def test_nulls_match_only_nulls() -> None:
    log = pa.table({"request_id": ["a", "b", "c"], "input.amount": [np.nan, np.nan, 10.0],
                    "feature.log_amount": [None, 1.0, None]})
    f = skew_check(log, lambda x: {"log_amount": np.log(x["amount"])})["log_amount"]
    assert f.n_mismatch == 2 and set(f.examples) == {"b", "c"}


def test_distribution_skew_against_the_reference() -> None:
    log = make_log(serving_with(log_amount=lambda x: np.log10(x["amount"])))
    reference = make_log(training_features, seed=6)
    f = skew_check(log, training_features, reference=reference)["log_amount"]
    assert f.ks_serving_vs_reference is not None and f.ks_expected_vs_reference is not None
    assert f.ks_serving_vs_reference > 0.5 > 0.05 > f.ks_expected_vs_reference


def test_reports_features_on_one_side_only_and_needs_inputs() -> None:
    log = make_log(training_features)
    report = skew_check(log, lambda x: {"log_amount": np.log(x["amount"]), "extra": x["amount"]})
    assert report.not_recomputed == ("feature.avg_amount_30d", "feature.channel_code")
    assert report.not_logged == ("feature.extra",)
    with pytest.raises(SchemaError, match=r"input\.\*"):
        skew_check(log.select(["request_id", "feature.log_amount"]), training_features)


def test_offline_feature_table_joined_on_a_key() -> None:
    log = make_log(training_features)
    # The offline store holds one value per customer; serving logged the same value for each request.
    customers = [str(i) for i in range(400)]
    offline = pa.table({"customer_id": customers, "avg_amount_30d": np.linspace(10.0, 90.0, 400)})
    lookup = dict(zip(customers, offline["avg_amount_30d"].to_pylist(), strict=True))
    ids = log["input.customer_id"].to_pylist()
    col = log.column_names.index("feature.avg_amount_30d")
    log = log.set_column(col, "feature.avg_amount_30d", pa.array([lookup[c] for c in ids]))
    report = compare_offline(log, offline, on="input.customer_id")
    assert report.method == "offline" and report.skewed == ()
    assert report.not_recomputed == ("feature.log_amount", "feature.channel_code")

    stale = offline.set_column(1, "avg_amount_30d", pa.array(
        [v * (1.1 if k == ids[0] else 1.0) for k, v in zip(offline["customer_id"].to_pylist(),
                                                           offline["avg_amount_30d"].to_pylist(), strict=True)]))
    f = compare_offline(log, stale, on="input.customer_id")["avg_amount_30d"]
    assert f.n_mismatch == ids.count(ids[0])
    assert f.max_rel_diff == pytest.approx(0.1 / 1.1)

    missing = offline.filter(pa.array([k != ids[0] for k in offline["customer_id"].to_pylist()]))
    assert compare_offline(log, missing, on="input.customer_id")["avg_amount_30d"].n_mismatch == ids.count(ids[0])
    with pytest.raises(SchemaError, match="repeats keys"):
        compare_offline(log, pa.concat_tables([offline, offline]), on="input.customer_id")
    with pytest.raises(SchemaError, match="no key column"):
        compare_offline(log, offline, on="input.nope")
