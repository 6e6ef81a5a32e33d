"""Replay and verify: logged requests through a pipeline and/or model, compared with what was logged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.linear_model import LogisticRegression

from mlsleuth.errors import ConfigError, SchemaError
from mlsleuth.replay import (
    EstimatorRunner,
    MemoryRunner,
    Metric,
    Selection,
    Tolerance,
    Verdict,
    replay,
    verify,
)

START = datetime(2026, 3, 4, tzinfo=UTC)
ONSET = datetime(2026, 3, 6, 18, tzinfo=UTC)
SCALE = 0.7  # the upstream change: EU's avg_amount_30d arrives 30 % low from the onset


def features(x: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """The training feature code (inputs without prefix in, features out)."""
    return {"amount_to_avg_ratio": x["amount"] / np.maximum(x["avg_amount_30d"], 1.0),
            "log_amount": np.log1p(x["amount"])}


def fixed_features(x: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """The fix: undo the upstream scale change before computing the features."""
    return features({**x, "avg_amount_30d": x["avg_amount_30d"] / SCALE})


@dataclass(frozen=True)
class MiniCase:
    log: pa.Table
    runner: EstimatorRunner
    threshold: float


@pytest.fixture(scope="module")
def case() -> MiniCase:
    """Three days of fraud traffic; from ONSET, EU's avg_amount_30d is cut by 30 %, inflating the ratio."""
    rng = np.random.default_rng(11)

    def sample(n: int) -> dict[str, np.ndarray[Any, Any]]:
        avg = rng.lognormal(3.8, 0.4, n)
        return {"amount": avg * rng.lognormal(0.0, 0.6, n), "avg_amount_30d": avg}

    def truth(x: dict[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        f = features(x)
        p = 1 / (1 + np.exp(-(2.2 * np.log(f["amount_to_avg_ratio"]) - 4.6)))
        return np.asarray(rng.random(len(p)) < p, dtype=np.int64)

    train = sample(20_000)
    model = LogisticRegression().fit(pd.DataFrame(features(train)), truth(train))
    runner = EstimatorRunner(model)
    n = 90_000
    ts = START + np.sort(rng.random(n)) * timedelta(days=3)
    region = rng.choice(np.array(["EU", "US"]), n, p=[0.4, 0.6])
    x = sample(n)
    label = truth(x)
    logged = dict(x)
    hit = (ts >= ONSET) & (region == "EU")
    logged["avg_amount_30d"] = np.where(hit, x["avg_amount_30d"] * SCALE, x["avg_amount_30d"])
    feats = {f"feature.{k}": v for k, v in features(logged).items()}
    score = runner.run(pa.table(feats))
    ref_scores = runner.run(pa.table({f"feature.{k}": v for k, v in features(sample(20_000)).items()}))
    threshold = float(np.round(np.quantile(ref_scores, 0.97), 4))
    log = pa.table({
        "request_id": [f"req-{i:06d}" for i in range(n)], "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "model": ["fraud"] * n, "model_version": ["v1"] * n, "region": region,
        "input.amount": logged["amount"], "input.avg_amount_30d": logged["avg_amount_30d"], **feats,
        "score": score, "prediction": (score >= threshold).astype(np.int64), "label": label})
    return MiniCase(log, runner, threshold)


def test_replaying_the_serving_model_on_its_own_features_changes_nothing(case: MiniCase) -> None:
    r = replay(case.log, model=case.runner, selection=Selection(until=START + timedelta(hours=12)))
    assert r.n > 10_000
    assert (r.n_changed, r.n_flipped) == (0, 0)
    assert r.threshold_source == "inferred"
    assert r.before.positive_rate == r.after.positive_rate
    assert r.before.fpr == r.after.fpr and r.before.fpr is not None
    assert r.max_abs_score_diff == pytest.approx(0.0, abs=1e-12)


def test_replay_reports_per_request_and_per_segment_differences(case: MiniCase) -> None:
    # A candidate model that scores EU 0.2 higher: only EU requests change.
    def candidate(t: pa.Table) -> Any:
        base = case.runner.run(t)
        return np.where(t["region"].to_numpy(zero_copy_only=False) == "EU", np.minimum(base + 0.2, 1.0), base)

    sel = Selection(since=START, until=START + timedelta(hours=6))
    r = replay(case.log, model=MemoryRunner(candidate), selection=sel, n_examples=5)
    eu = r.segment("region", "EU")
    us = r.segment("region", "US")
    assert r.n_changed == eu.before.n
    assert us.after is not None and us.after.positive_rate == us.before.positive_rate
    assert eu.after is not None and eu.after.positive_rate.k > eu.before.positive_rate.k
    assert r.n_flipped == eu.after.positive_rate.k - eu.before.positive_rate.k
    req = r.requests
    assert {"request_id", "ts", "region", "score_logged", "score_replayed", "score_diff", "decision_logged",
            "decision_replayed", "flipped", "label"} <= set(req.column_names)
    assert req.num_rows == r.n
    flipped_ids = set(pc.filter(req["request_id"], req["flipped"]).to_pylist())
    assert len(r.examples) == 5 and all(e.request_id in flipped_ids for e in r.examples)
    json.dumps(r.to_dict())


def test_selection_by_window_segment_ids_and_hypothesis(case: MiniCase) -> None:
    ids = case.log["request_id"][:5].to_pylist()
    r = replay(case.log, model=case.runner, selection=Selection(request_ids=ids))
    assert r.n == 5 and sorted(r.requests["request_id"].to_pylist()) == sorted(ids)
    hyp = {"cause": "upstream_data_change", "onset": "2026-03-06T18:00:00Z", "segments": [{"region": "EU"}]}
    sel = Selection.from_hypothesis(hyp, until="2026-03-06T20:00:00Z")
    assert sel.to_dict()["segments"] == [{"region": "EU"}]
    r = replay(case.log, model=case.runner, selection=sel)
    ts = r.requests["ts"]
    assert pc.min(ts).as_py() >= ONSET and pc.max(ts).as_py() < ONSET + timedelta(hours=2)
    assert set(r.requests["region"].to_pylist()) == {"EU"}
    with pytest.raises(ConfigError, match="until after since"):
        Selection(since=ONSET, until=ONSET)
    with pytest.raises(SchemaError, match="'channel'"):
        replay(case.log, model=case.runner, selection=Selection(segments=[{"channel": "web"}]))
    with pytest.raises(ConfigError, match="a model, a pipeline, or both"):
        replay(case.log)


def test_pipeline_replay_shows_which_features_the_fix_changes(case: MiniCase) -> None:
    sel = Selection(since=ONSET, segments={"region": "EU"})
    r = replay(case.log, pipeline=fixed_features, selection=sel)
    assert r.after is None and r.features is not None
    ratio = r.features["amount_to_avg_ratio"]
    assert ratio.mismatch_rate == 1.0 and ratio.max_rel_diff == pytest.approx(1 - SCALE, rel=1e-3)
    assert r.features["log_amount"].n_mismatch == 0


def test_verify_passes_with_the_fixed_pipeline(case: MiniCase) -> None:
    hyp = {"onset": ONSET.isoformat(), "segments": [{"region": "EU"}]}
    v = verify(case.log, onset=ONSET, model=case.runner, pipeline=fixed_features, baseline="2d",
               selection=Selection.from_hypothesis(hyp))
    assert v.verdict is Verdict.PASS, v.summary
    fpr = next(c for c in v.checks if c.metric is Metric.FPR)
    assert fpr.detectable and fpr.restored
    assert fpr.incident > 2 * fpr.baseline  # the incident more than doubled false positives
    assert abs(fpr.replayed - fpr.baseline) <= fpr.allowed
    assert v.summary.startswith("PASS")
    out = v.to_dict()
    json.dumps(out)
    assert out["verdict"] == "pass" and out["incident_window"][0] == "2026-03-06T18:00:00Z"


def test_verify_fails_with_the_still_broken_pipeline(case: MiniCase) -> None:
    v = verify(case.log, onset=ONSET, model=case.runner, pipeline=features, baseline="2d",
               selection=Selection(segments=[{"region": "EU"}]))
    assert v.verdict is Verdict.FAIL
    failed = {c.metric for c in v.checks if not c.restored}
    assert {Metric.POSITIVE_RATE, Metric.FPR} <= failed
    assert "not restored" in v.summary and "fpr" in v.summary


def test_verify_is_inconclusive_when_the_window_cannot_show_the_incident(case: MiniCase) -> None:
    v = verify(case.log, onset=ONSET, until=ONSET + timedelta(minutes=3), model=case.runner,
               pipeline=fixed_features, baseline="2d", selection=Selection(segments=[{"region": "EU"}]),
               tolerance=Tolerance(metrics=(Metric.POSITIVE_RATE, Metric.FPR)))
    assert v.verdict is Verdict.INCONCLUSIVE
    assert not any(c.detectable for c in v.checks)


def test_verify_needs_requests_on_both_sides(case: MiniCase) -> None:
    with pytest.raises(ConfigError, match="no requests in the baseline window"):
        verify(case.log, onset=START, model=case.runner, baseline="1d")
    with pytest.raises(ConfigError, match="no requests in the incident window"):
        verify(case.log, onset=START + timedelta(days=5), model=case.runner)
    with pytest.raises(ConfigError, match="non-negative"):
        Tolerance(relative=-1.0)


# --------------------------------------------------------------------------- the demo incident (mlsleuth.testing)


@pytest.fixture(scope="module")
def demo() -> Any:
    from mlsleuth.testing import demo_case

    return demo_case(0, rows=60_000)


def demo_pipelines() -> tuple[Any, Any]:
    from mlsleuth.replay import load_pipeline
    from mlsleuth.testing import compute_features

    def fixed(x: dict[str, Any]) -> dict[str, Any]:
        # The fix: the warehouse now reports avg_amount_30d 30 % low; scale it back before the features.
        return compute_features({**x, "input.avg_amount_30d": np.asarray(x["input.avg_amount_30d"]) / 0.7})

    return load_pipeline(fixed, keep_prefix=True), load_pipeline(compute_features, keep_prefix=True)


def test_demo_incident_fixed_pipeline_restores_the_false_positive_rate(demo: Any) -> None:
    from mlsleuth.testing import DEMO_ONSET

    fixed, _ = demo_pipelines()
    hypothesis = demo.truth.to_dict()["hypotheses"][0]
    v = verify(demo.log, onset=hypothesis["onset"], model=EstimatorRunner(demo.model), pipeline=fixed,
               labels=demo.labels, baseline="4d", selection=Selection.from_hypothesis(hypothesis))
    assert v.onset == DEMO_ONSET
    assert v.verdict is Verdict.PASS, v.summary
    fpr = next(c for c in v.checks if c.metric is Metric.FPR)
    assert fpr.incident > 2 * fpr.baseline and fpr.detectable and fpr.restored
    assert v.replay.threshold == pytest.approx(demo.threshold, abs=1e-3)


def test_demo_incident_still_broken_pipeline_fails_verification(demo: Any) -> None:
    from mlsleuth.testing import DEMO_ONSET

    _, broken = demo_pipelines()
    v = verify(demo.log, onset=DEMO_ONSET, model=EstimatorRunner(demo.model), pipeline=broken,
               labels=demo.labels, baseline="4d")
    assert v.verdict is Verdict.FAIL
    assert {Metric.POSITIVE_RATE, Metric.FPR} <= {c.metric for c in v.checks if not c.restored}
    assert v.replay.n_changed == 0  # the serving pipeline reproduces the logged features exactly


def test_demo_serving_pipeline_has_no_training_serving_skew(demo: Any) -> None:
    from mlsleuth.replay import skew_check

    _, training = demo_pipelines()
    report = skew_check(demo.log, training, reference=demo.reference)
    assert report.skewed == () and len(report.features) == 10
    # The upstream change shows as distribution skew of the served ratio against training data, not as skew.
    ratio = report["amount_to_avg_ratio"]
    assert ratio.ks_serving_vs_reference is not None and ratio.ks_serving_vs_reference > 0.02


def test_replay_reads_from_a_store_like_from_a_table(case: MiniCase) -> None:
    from mlsleuth.store import MemoryStore

    log = case.log.slice(0, 20_000)
    store = MemoryStore()
    store.append_log(log.drop_columns(["label"]))
    store.append_labels(log.select(["request_id", "label"]))
    sel = Selection(since=START + timedelta(hours=6), until=START + timedelta(hours=18), segments={"region": "EU"})
    from_store = replay(store, model=case.runner, selection=sel)
    from_table = replay(log, model=case.runner, selection=sel)
    assert from_store.n == from_table.n > 1_000
    assert from_store.before == from_table.before and from_store.after == from_table.after
    assert from_store.before.fpr is not None and from_store.before.fpr.n > 0


def test_joined_labels_take_the_latest_per_request(case: MiniCase) -> None:
    from mlsleuth.replay import select

    log = case.log.slice(0, 3).drop_columns(["label"])
    ids = log["request_id"].to_pylist()
    labels = pa.table({"request_id": [ids[0], ids[0], ids[1]], "label": [1, 0, 1],
                       "label_ts": pa.array([ONSET + timedelta(days=2), ONSET, ONSET], pa.timestamp("us", tz="UTC"))})
    assert select(log, labels=labels)["label"].to_pylist() == [1, 1, None]
