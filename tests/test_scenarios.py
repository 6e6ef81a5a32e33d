"""The scenario generator: contract layout, determinism, and each cause's effect visible in simple numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from mlsleuth.errors import ConfigError
from mlsleuth.schema import TIMESTAMP, DataKind, read_events, read_lineage, read_table, validate
from mlsleuth.testing import (
    DEMO_ONSET,
    FEATURES,
    INPUTS,
    MODEL_FEATURES,
    Case,
    Cause,
    DegradationKind,
    InfraFault,
    LabelSpec,
    ModelChangeKind,
    PipelineFault,
    Progression,
    ShiftKind,
    SkewKind,
    UpstreamChange,
    Variation,
    Verdict,
    compute_features,
    demo_case,
    feature_frame,
    iter_log_batches,
    make_case,
    modes_of,
    plan_case,
    read_truth,
    scenario_suite,
    suite_specs,
)

ROWS = 20_000


def _us(ts: datetime) -> int:
    return round(ts.timestamp() * 1e6)


def _ts(case: Case) -> np.ndarray:
    return case.log.column("ts").cast(pa.int64()).to_numpy()


def _col(case: Case, name: str) -> np.ndarray:
    return case.log.column(name).to_numpy(zero_copy_only=False)


def _split(case: Case) -> tuple[np.ndarray, np.ndarray]:
    assert case.truth.effect_start is not None
    pre = _ts(case) < _us(case.truth.effect_start)
    return pre, ~pre


def _mismatch(table: pa.Table) -> dict[str, np.ndarray]:
    """Per feature: rows where the logged value differs from the training pipeline applied to the logged inputs."""
    again = compute_features({k: table.column(k) for k in INPUTS})
    out = {}
    for f in FEATURES:
        logged = table.column(f).to_numpy(zero_copy_only=False).astype(np.float64)
        out[f] = ~np.isclose(logged, again[f])
    return out


def _labelled(case: Case) -> pa.Table:
    assert case.labels is not None
    return case.log.select(["request_id", "ts", "score", "prediction", "region"]).join(
        case.labels, "request_id", join_type="inner")


@pytest.fixture(scope="module")
def demo() -> Case:
    return demo_case(0, rows=120_000)


@pytest.fixture(scope="module")
def healthy() -> Case:
    return make_case(None, seed=21, rows=ROWS, variation=Variation(harmless_drift=True))


# --------------------------------------------------------------------------------------------------------------
# Layout and determinism


def test_same_seed_same_case_and_other_seed_other_case() -> None:
    a = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=7, rows=5_000)
    b = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=7, rows=5_000)
    c = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=8, rows=5_000)
    assert a.log.equals(b.log)
    assert a.labels is not None and b.labels is not None and a.labels.equals(b.labels)
    assert a.events == b.events
    assert a.truth == b.truth
    assert not a.log.equals(c.log)


def test_log_follows_the_contract(healthy: Case) -> None:
    log = healthy.log
    checked = validate(log, DataKind.LOG)
    assert checked.n_rejected == 0
    assert log.schema.field("ts").type == TIMESTAMP
    assert log.schema.field("score").type == pa.float64()
    assert log.schema.field("request_id").type == pa.string()
    assert pc.count_distinct(log.column("request_id")).as_py() == log.num_rows
    for name in ("model", "model_version", "prediction", "latency_ms", "error", *INPUTS, *FEATURES):
        assert name in log.column_names
    assert np.all(np.diff(_ts(healthy)) >= 0)
    week = (_ts(healthy) - _us(healthy.spec.start)) / 86_400e6
    assert week.min() >= 0 and week.max() < 7
    assert set(_col(healthy, "region")) == {"EU", "US", "APAC", "LATAM"}
    # Reference: same feature columns, in the model's order, with labels.
    ref = healthy.reference
    assert [c for c in ref.column_names if c.startswith("feature.")] == list(FEATURES)
    assert validate(ref, DataKind.REFERENCE).n_rejected == 0
    assert 0.005 < pc.mean(ref.column("label")).as_py() < 0.03
    assert healthy.labels is not None and validate(healthy.labels, DataKind.LABELS).n_rejected == 0


def test_features_are_recomputable_from_inputs_when_the_pipeline_is_healthy(healthy: Case, demo: Case) -> None:
    for table in (healthy.log, demo.log, healthy.reference):
        bad = _mismatch(table)
        assert not any(v.any() for v in bad.values()), {k: int(v.sum()) for k, v in bad.items()}


def test_daily_cycle_and_alert_rate_are_realistic(healthy: Case) -> None:
    hours = (_ts(healthy) // 3_600_000_000) % 24
    counts = np.bincount(hours, minlength=24)
    assert counts.max() > 2.5 * counts.min()
    alert = _col(healthy, "prediction").mean()
    assert 0.01 < alert < 0.04
    errors = healthy.log.column("error").null_count
    assert 0.99 * healthy.log.num_rows < errors < healthy.log.num_rows


def test_labels_arrive_late_and_the_last_days_are_partly_labelled() -> None:
    case = make_case(None, seed=3, rows=ROWS, labels=LabelSpec(min_delay=timedelta(days=1),
                                                               max_delay=timedelta(days=3)))
    joined = case.log.select(["request_id", "ts"]).join(case.labels, "request_id", join_type="inner")
    ts = joined.column("ts").cast(pa.int64()).to_numpy()
    lts = joined.column("label_ts").cast(pa.int64()).to_numpy()
    delay_days = (lts - ts) / 86_400e6
    assert delay_days.min() >= 1.0 and delay_days.max() <= 3.0
    assert lts.max() <= _us(case.spec.end)
    day = (_ts(case) - _us(case.spec.start)) // 86_400_000_000
    labelled = np.isin(case.log.column("request_id").to_numpy(zero_copy_only=False),
                       joined.column("request_id").to_numpy(zero_copy_only=False))
    assert labelled[day == 0].mean() == 1.0
    assert labelled[day == 6].mean() == 0.0
    assert 0.2 < labelled[day == 4].mean() < 0.8


def test_write_reads_back_with_the_schema_readers(tmp_path: Path) -> None:
    case = make_case(Cause.SILENT_PIPELINE_FAILURE, seed=5, rows=5_000,
                     variation=Variation(mode=PipelineFault.NULLS))
    folder = case.write(tmp_path / "case")
    names = {p.name for p in folder.iterdir()}
    assert names == {"log.parquet", "reference.parquet", "labels.parquet", "events.jsonl", "lineage.json",
                     "model.joblib", "truth.json"}
    assert read_table(folder / "log.parquet").equals(case.log)
    assert read_table(folder / "labels.parquet").equals(case.labels)
    events = read_events(folder / "events.jsonl")
    assert [e.id for e in events] == [e["id"] for e in case.events or []]
    lineage = read_lineage(folder / "lineage.json")
    assert lineage.sources("feature.amount_to_avg_ratio") == ("source:payments.transactions",
                                                              "source:warehouse.customer_stats")
    assert read_truth(folder / "truth.json") == case.truth
    raw = json.loads((folder / "truth.json").read_text())
    assert raw["verdict"] == "incident"
    assert set(raw["hypotheses"][0]) == {"cause", "onset", "features", "inputs", "segments", "events"}


def test_case_without_labels_events_lineage_or_model_writes_only_what_it_has(tmp_path: Path) -> None:
    case = make_case(Cause.SERVING_INFRASTRUCTURE, seed=2, rows=3_000,
                     variation=Variation(labels=False, events=False, lineage=False, model=False))
    assert case.labels is None and case.events is None and case.lineage is None and case.model is None
    assert case.truth.events == ()
    names = {p.name for p in case.write(tmp_path).iterdir()}
    assert names == {"log.parquet", "reference.parquet", "truth.json"}


def test_model_file_reproduces_logged_scores_on_healthy_rows(tmp_path: Path) -> None:
    case = make_case(Cause.MODEL_CHANGE, seed=4, rows=5_000, variation=Variation(mode=ModelChangeKind.MISCALIBRATED))
    model = joblib.load(case.write(tmp_path) / "model.joblib")
    ref_order = [c for c in case.reference.column_names if c.startswith("feature.")]
    frame = feature_frame({c: _col(case, c) for c in ref_order}, tuple(ref_order))
    assert list(frame.columns) == [c.removeprefix("feature.") for c in ref_order]
    replayed = model.predict_proba(frame)[:, 1]
    healthy_rows = (_col(case, "model_version") == "v12") & case.log.column("error").is_null().to_numpy(
        zero_copy_only=False)
    assert healthy_rows.sum() > 1000
    np.testing.assert_allclose(replayed[healthy_rows], _col(case, "score")[healthy_rows], rtol=1e-12)
    assert not np.allclose(replayed[~healthy_rows], _col(case, "score")[~healthy_rows])


def test_model_ignores_the_decoy_feature(healthy: Case) -> None:
    features = {c: _col(healthy, c)[:2_000] for c in FEATURES}
    assert "feature.session_seconds_log" not in MODEL_FEATURES
    moved = dict(features, **{"feature.session_seconds_log": features["feature.session_seconds_log"] * 3 + 1})
    np.testing.assert_array_equal(healthy.model.predict_proba(feature_frame(features)),
                                  healthy.model.predict_proba(feature_frame(moved)))


# --------------------------------------------------------------------------------------------------------------
# The demo


def test_demo_tells_the_weekend_story(demo: Case) -> None:
    truth = demo.truth
    assert truth.verdict is Verdict.INCIDENT and truth.cause is Cause.UPSTREAM_DATA_CHANGE
    assert truth.onset == DEMO_ONSET == datetime(2026, 3, 6, 18, 0, tzinfo=UTC)
    assert DEMO_ONSET.weekday() == 4
    assert truth.features == ("feature.amount_to_avg_ratio",)
    assert truth.inputs == ("input.avg_amount_30d",)
    assert truth.segments == ()
    pre, post = _split(demo)
    ratio = _col(demo, "feature.amount_to_avg_ratio")
    assert np.median(ratio[post]) / np.median(ratio[pre]) == pytest.approx(1 / 0.7, rel=0.06)
    avg = _col(demo, "input.avg_amount_30d")
    assert np.median(avg[post]) / np.median(avg[pre]) == pytest.approx(0.7, rel=0.06)
    amount = _col(demo, "input.amount")
    assert np.median(amount[post]) / np.median(amount[pre]) == pytest.approx(1.0, abs=0.06)
    j = _labelled(demo)
    jts = j.column("ts").cast(pa.int64()).to_numpy()
    negative = j.column("label").to_numpy() == 0
    alert = j.column("prediction").to_numpy() == 1
    after = jts >= _us(DEMO_ONSET)
    fpr_before = alert[negative & ~after].mean()
    fpr_after = alert[negative & after].mean()
    assert fpr_after > 2.0 * fpr_before
    assert (negative & after).sum() > 5_000


def test_demo_events_hold_the_culprit_and_decoys(demo: Case) -> None:
    assert demo.events is not None
    by_id = {e["id"]: e for e in demo.events}
    (culprit,) = demo.truth.events
    event = by_id[culprit]
    assert event["target"] == "source:warehouse.customer_stats"
    assert event["kind"] in ("upstream", "schema_change")
    lead = DEMO_ONSET - datetime.fromisoformat(event["ts"])
    assert timedelta(minutes=5) <= lead <= timedelta(minutes=30)
    near = [e for e in demo.events if e["id"] != culprit
            and abs(datetime.fromisoformat(e["ts"]) - DEMO_ONSET) <= timedelta(minutes=30)]
    assert near and all(e["target"] != event["target"] for e in near)
    # Routine refreshes of the same source happen every night, so the target alone does not give it away.
    same_target = [e for e in demo.events if e["target"] == event["target"]]
    assert len(same_target) >= 7


def test_demo_harmless_drift_moves_an_unused_feature_only(demo: Case) -> None:
    web = _col(demo, "channel") == "web"
    when = _us(datetime(2026, 3, 4, 10, 30, tzinfo=UTC))
    after = _ts(demo) >= when
    session = _col(demo, "feature.session_seconds_log")
    assert np.median(session[web & after]) - np.median(session[web & ~after]) == pytest.approx(np.log(1.6), abs=0.1)
    # Between the redesign and the onset the score distribution is unchanged.
    before_onset = _ts(demo) < _us(DEMO_ONSET)
    score = _col(demo, "score")
    assert np.mean(score[web & after & before_onset] >= demo.threshold) == pytest.approx(
        np.mean(score[web & ~after] >= demo.threshold), abs=0.01)


# --------------------------------------------------------------------------------------------------------------
# Each cause


@pytest.mark.parametrize("mode", modes_of(Cause.UPSTREAM_DATA_CHANGE))
def test_upstream_change_moves_an_input_and_the_pipeline_follows(mode: UpstreamChange) -> None:
    case = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=11, rows=ROWS, variation=Variation(mode=mode))
    truth = case.truth
    (culprit_input,) = truth.inputs
    assert truth.features and all(f in MODEL_FEATURES for f in truth.features)
    bad = _mismatch(case.log)
    assert not any(v.any() for v in bad.values())  # the pipeline itself is fine
    pre, post = _split(case)
    seg = np.ones(case.log.num_rows, dtype=bool)
    for group in truth.segments:
        for col, value in group:
            seg &= _col(case, col) == value
    values = _col(case, culprit_input)
    if values.dtype == object:
        assert set(values[post & seg]) - set(values[pre & seg])  # a renamed category appears
    else:
        assert np.mean(values[post & seg]) != pytest.approx(np.mean(values[pre & seg]), rel=0.15)
    (event_id,) = truth.events
    event = next(e for e in case.events or [] if e["id"] == event_id)
    assert event["target"] == {"input.avg_amount_30d": "source:warehouse.customer_stats",
                               "input.amount": "source:payments.transactions",
                               "input.merchant_category": "source:payments.transactions",
                               "input.txn_count_24h": "source:stream.card_activity",
                               "input.account_age_days": "source:crm.accounts",
                               "input.country": "source:geo.ip_lookup"}[culprit_input]


def test_upstream_change_confined_to_a_region_stays_there() -> None:
    case = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=12, rows=ROWS,
                     variation=Variation(mode=UpstreamChange.SCALE, segment=("region", "EU")))
    assert case.truth.segment_dicts == [{"region": "EU"}]
    pre, post = _split(case)
    eu = _col(case, "region") == "EU"
    ratio = _col(case, "feature.amount_to_avg_ratio")
    factor = float(dict(case.truth.details)["magnitude"])
    assert np.median(ratio[post & eu]) / np.median(ratio[pre & eu]) == pytest.approx(1 / factor, rel=0.1)
    assert np.median(ratio[post & ~eu]) / np.median(ratio[pre & ~eu]) == pytest.approx(1.0, abs=0.05)
    assert case.affected[~eu].sum() == 0


@pytest.mark.parametrize("mode", modes_of(Cause.SILENT_PIPELINE_FAILURE))
def test_silent_pipeline_failure_breaks_one_feature_from_the_onset(mode: PipelineFault) -> None:
    case = make_case(Cause.SILENT_PIPELINE_FAILURE, seed=13, rows=ROWS, variation=Variation(mode=mode))
    (feature,) = case.truth.features
    assert case.truth.inputs == ()
    pre, post = _split(case)
    bad = _mismatch(case.log)
    assert not bad[feature][pre].any()
    assert bad[feature][post].mean() > 0.3
    assert all(not v.any() for f, v in bad.items() if f != feature)
    values = _col(case, feature).astype(np.float64)
    if mode is PipelineFault.ZEROS:
        assert np.mean(values[post] == 0) > np.mean(values[pre] == 0) + 0.5
    if mode is PipelineFault.NULLS:
        assert np.isnan(values[pre]).sum() == 0 and np.mean(np.isnan(values[post])) > 0.9
    if mode is PipelineFault.STALE:
        assert len(np.unique(values[post])) < 0.5 * len(np.unique(values[pre]))
    version = _col(case, "lineage.pipeline_version")
    assert set(version[post]) == {"fp-3.8.0"}
    assert case.truth.effect_start is not None
    released = _ts(case)[version == "fp-3.8.0"].min()
    assert 0 < _us(case.truth.effect_start) - released < 3_600_000_000  # released shortly before it broke
    (event_id,) = case.truth.events
    assert next(e for e in case.events or [] if e["id"] == event_id)["target"] == "job:fraud_feature_pipeline"


@pytest.mark.parametrize("mode", modes_of(Cause.TRAINING_SERVING_SKEW))
def test_training_serving_skew_from_the_first_request(mode: SkewKind) -> None:
    case = make_case(Cause.TRAINING_SERVING_SKEW, seed=14, rows=ROWS,
                     variation=Variation(mode=mode, from_start=True))
    assert case.truth.onset is None and case.truth.events == ()
    (feature,) = case.truth.features
    bad = _mismatch(case.log)
    first_day = (_ts(case) - _us(case.spec.start)) < 86_400_000_000
    assert bad[feature][first_day].mean() > 0.9
    assert not any(v.any() for v in _mismatch(case.reference).values())
    logged = _col(case, feature)
    reference = case.reference.column(feature).to_numpy()
    assert abs(np.mean(logged) - np.mean(reference)) > 0.1 * np.std(reference)


def test_training_serving_skew_from_a_serving_deployment() -> None:
    case = make_case(Cause.TRAINING_SERVING_SKEW, seed=15, rows=ROWS, variation=Variation(mode=SkewKind.LOG_BASE))
    assert case.truth.onset is not None
    pre, post = _split(case)
    bad = _mismatch(case.log)["feature.log_amount"]
    assert not bad[pre].any() and bad[post].mean() > 0.99
    (event_id,) = case.truth.events
    event = next(e for e in case.events or [] if e["id"] == event_id)
    assert event["kind"] == "deployment" and event["target"] == "service:fraud-serving"


@pytest.mark.parametrize("mode", modes_of(Cause.DISTRIBUTION_SHIFT))
def test_distribution_shift_moves_inputs_and_features_consistently(mode: ShiftKind) -> None:
    case = make_case(Cause.DISTRIBUTION_SHIFT, seed=16, rows=ROWS, variation=Variation(mode=mode))
    assert not any(v.any() for v in _mismatch(case.log).values())
    pre, post = _split(case)
    seg = np.ones(case.log.num_rows, dtype=bool)
    for group in case.truth.segments:
        for col, value in group:
            seg &= _col(case, col) == value
    feature = case.truth.features[0]
    values = _col(case, feature)
    reference = case.reference.column(feature).to_numpy()
    assert abs(np.mean(values[post & seg]) - np.mean(values[pre & seg])) > 0.15 * np.std(reference)
    pred = _col(case, "prediction")
    assert pred[post & seg].mean() > 1.15 * pred[pre & seg].mean()


@pytest.mark.parametrize("mode", modes_of(Cause.MODEL_DEGRADATION))
def test_model_degradation_decays_labelled_auc_while_scores_stay_flat(mode: DegradationKind) -> None:
    case = make_case(Cause.MODEL_DEGRADATION, seed=17, rows=60_000,
                     variation=Variation(mode=mode, progression=Progression.GRADUAL))
    assert case.truth.onset is None and case.truth.features == () and case.truth.events == ()
    j = _labelled(case)
    day = (j.column("ts").cast(pa.int64()).to_numpy() - _us(case.spec.start)) / 86_400e6
    y = j.column("label").to_numpy()
    s = j.column("score").to_numpy()
    early, late = day < 1.0, (day >= 3.5) & (day < 5.5)
    assert roc_auc_score(y[early], s[early]) - roc_auc_score(y[late], s[late]) > 0.15
    all_day = (_ts(case) - _us(case.spec.start)) / 86_400e6
    score = _col(case, "score")
    assert np.median(score[all_day >= 4]) == pytest.approx(np.median(score[all_day < 1]), rel=0.15)
    pred = _col(case, "prediction")
    assert pred[all_day >= 4].mean() == pytest.approx(pred[all_day < 1].mean(), abs=0.006)


@pytest.mark.parametrize("mode", modes_of(Cause.MODEL_CHANGE))
def test_model_change_switches_version_at_the_onset(mode: ModelChangeKind) -> None:
    case = make_case(Cause.MODEL_CHANGE, seed=18, rows=ROWS, variation=Variation(mode=mode))
    pre, post = _split(case)
    version = _col(case, "model_version")
    assert set(version[pre]) == {"v12"}
    new = version != "v12"
    assert new[post].all()
    for name in ("input.amount", "input.avg_amount_30d", "feature.amount_to_avg_ratio"):
        v = _col(case, name)
        assert np.median(v[post]) == pytest.approx(np.median(v[pre]), rel=0.06)
    score, pred = _col(case, "score"), _col(case, "prediction")
    if mode is ModelChangeKind.THRESHOLD:
        assert np.median(score[post]) == pytest.approx(np.median(score[pre]), rel=0.15)
        assert pred[post].mean() > 1.5 * pred[pre].mean()
    else:
        assert abs(np.log(np.median(score[post]) / np.median(score[pre]))) > 0.4
    (event_id,) = case.truth.events
    event = next(e for e in case.events or [] if e["id"] == event_id)
    assert event["target"] == "model:fraud" and event["kind"] == "deployment"


def test_model_change_canary_serves_a_share_of_traffic() -> None:
    case = make_case(Cause.MODEL_CHANGE, seed=19, rows=ROWS,
                     variation=Variation(mode=ModelChangeKind.MISCALIBRATED, canary_share=0.2))
    pre, post = _split(case)
    new = _col(case, "model_version") == "v13"
    assert not new[pre].any()
    assert new[post].mean() == pytest.approx(0.2, abs=0.03)
    assert case.truth.segment_dicts == [{"model_version": "v13"}]


@pytest.mark.parametrize("mode", modes_of(Cause.SERVING_INFRASTRUCTURE))
def test_serving_fault_shows_in_latency_or_errors(mode: InfraFault) -> None:
    case = make_case(Cause.SERVING_INFRASTRUCTURE, seed=20, rows=ROWS,
                     variation=Variation(mode=mode, segment=("region", "US")))
    pre, post = _split(case)
    us = _col(case, "region") == "US"
    latency = _col(case, "latency_ms")
    failed = case.log.column("error").is_valid().to_numpy(zero_copy_only=False)
    assert np.percentile(latency[post & us], 99) > 2 * np.percentile(latency[pre & us], 99)
    assert np.percentile(latency[post & ~us], 99) == pytest.approx(np.percentile(latency[pre & ~us], 99), rel=0.2)
    if mode is not InfraFault.LATENCY:
        assert failed[post & us].mean() > failed[pre & us].mean() + 0.03
        assert failed[post & ~us].mean() < 0.01
    if mode is InfraFault.FALLBACK:
        assert np.mean(_col(case, "score")[post & us] == 0.01) > 0.1
    if mode is InfraFault.ERRORS:
        assert case.log.column("score").null_count > 0
        assert validate(case.log, DataKind.LOG).n_rejected == 0
    assert case.truth.segment_dicts == [{"region": "US"}]
    (event_id,) = case.truth.events
    event = next(e for e in case.events or [] if e["id"] == event_id)
    assert event["kind"] == "infrastructure" and event["target"] == "service:fraud-serving-us"


def test_healthy_week_has_no_incident_signals(healthy: Case) -> None:
    truth = healthy.truth
    assert truth.verdict is Verdict.HEALTHY and truth.cause is None
    assert healthy.truth.to_dict()["hypotheses"] == []
    assert not healthy.affected.any()
    day = (_ts(healthy) - _us(healthy.spec.start)) // 86_400_000_000
    first, last = day < 3, day >= 4
    pred, latency = _col(healthy, "prediction"), _col(healthy, "latency_ms")
    assert pred[last].mean() == pytest.approx(pred[first].mean(), abs=0.006)
    assert np.percentile(latency[last], 99) == pytest.approx(np.percentile(latency[first], 99), rel=0.15)
    assert set(_col(healthy, "model_version")) == {"v12"}
    j = _labelled(healthy)
    jday = (j.column("ts").cast(pa.int64()).to_numpy() - _us(healthy.spec.start)) / 86_400e6
    y, s = j.column("label").to_numpy(), j.column("score").to_numpy()
    assert abs(roc_auc_score(y[jday < 2], s[jday < 2]) - roc_auc_score(y[jday >= 2], s[jday >= 2])) < 0.06


def test_gradual_incident_has_no_onset_but_a_ramp() -> None:
    case = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=22, rows=ROWS,
                     variation=Variation(mode=UpstreamChange.SCALE, progression=Progression.GRADUAL))
    truth = case.truth
    assert truth.onset is None and truth.effect_start is not None and truth.effect_full is not None
    assert truth.effect_full - truth.effect_start >= timedelta(days=1)
    ts = _ts(case)
    mid = _us(truth.effect_start + (truth.effect_full - truth.effect_start) / 2)
    window = np.abs(ts - mid) < 6 * 3_600_000_000
    assert 0.2 < case.affected[window].mean() < 0.8
    assert case.affected[ts >= _us(truth.effect_full)].all()


# --------------------------------------------------------------------------------------------------------------
# Suite, batches, errors


def test_suite_cycles_through_causes_with_a_healthy_week_in_eight() -> None:
    specs = list(suite_specs(16, seed=1))
    causes = [None if s.incident is None else s.incident.cause for s in specs]
    assert causes[7] is None and causes[15] is None
    assert set(causes[:7]) == set(Cause)
    assert all(20_000 <= s.rows <= 200_000 for s in specs)
    assert len({s.seed for s in specs}) == 16
    assert [s.name for s in suite_specs(16, seed=1)] == [s.name for s in specs]


def test_scenario_suite_yields_cases_lazily() -> None:
    cases = scenario_suite(2, seed=3, min_rows=2_000, max_rows=3_000)
    first = next(cases)
    assert first.truth.cause is Cause.UPSTREAM_DATA_CHANGE
    assert 2_000 <= first.log.num_rows <= 3_000


def test_iter_log_batches_gives_a_large_log_in_pieces() -> None:
    spec = plan_case(Cause.SERVING_INFRASTRUCTURE, seed=9, rows=1_000)
    batches = list(iter_log_batches(spec, rows=25_000, batch_rows=10_000))
    assert [b.num_rows for b in batches] == [10_000, 10_000, 5_000]
    ids = pa.chunked_array([b.column("request_id") for b in batches])
    assert pc.count_distinct(ids).as_py() == 25_000
    assert all(b.schema == batches[0].schema for b in batches)


def test_bad_variations_are_refused_with_the_field_named() -> None:
    with pytest.raises(ConfigError, match=r"variation\.mode"):
        make_case(Cause.MODEL_CHANGE, seed=0, rows=1_000, variation=Variation(mode=InfraFault.LATENCY))
    with pytest.raises(ConfigError, match="canary_share"):
        plan_case(Cause.SERVING_INFRASTRUCTURE, seed=0, variation=Variation(canary_share=0.2))
    with pytest.raises(ConfigError, match="segment"):
        plan_case(Cause.SERVING_INFRASTRUCTURE, seed=0, variation=Variation(segment=("region", "MARS")))
    with pytest.raises(ConfigError, match="labels"):
        plan_case(Cause.MODEL_DEGRADATION, seed=0, variation=Variation(labels=False))
    with pytest.raises(ConfigError, match="onset"):
        plan_case(Cause.MODEL_CHANGE, seed=0, variation=Variation(onset=datetime(2020, 1, 1, tzinfo=UTC)))
