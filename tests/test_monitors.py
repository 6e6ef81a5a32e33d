"""Focused behaviour of the monitors on generated fraud weeks, the stored reference and the CLI commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mlsleuth.cli import app
from mlsleuth.monitors import (
    ArrowSource,
    Baseline,
    FeatureDrift,
    Performance,
    Severity,
    StoredReference,
    Volume,
    build_reference,
    load_reference,
    run_monitors,
    save_reference,
    window_profiles,
)
from mlsleuth.monitors._source import TimeRange
from mlsleuth.profiles import profile_like
from mlsleuth.store import MemoryStore
from mlsleuth.testing import DEMO_ONSET, Case, demo_case, make_case


@pytest.fixture(scope="module")
def demo() -> Case:
    return demo_case(rows=40_000)


@pytest.fixture(scope="module")
def demo_ref(demo: Case) -> StoredReference:
    return build_reference(demo.reference)


def test_engine_profiles_equal_numpy_profiles_of_the_same_rows(demo: Case, demo_ref: StoredReference) -> None:
    wp = window_profiles(ArrowSource(demo.log), demo_ref.profile, window_seconds=86_400, segment=("region",))
    day = datetime(2026, 3, 4, tzinfo=UTC)
    eu = next(w for w in wp.windows if w.start == day and w.segment == (("region", "EU"),))
    ts = demo.log.column("ts").to_pylist()
    mask = pa.array([day <= t < datetime(2026, 3, 5, tzinfo=UTC) for t in ts])
    rows = demo.log.filter(mask).filter(pa.compute.equal(demo.log.filter(mask).column("region"), "EU"))
    for col in ("feature.amount_to_avg_ratio", "input.amount", "score"):
        want = profile_like(demo_ref.profile[col], rows.column(col))
        assert eu.columns[col] == want
    # all traffic of a window is the merge of its segments
    whole = wp.series()[2]
    assert whole.rows == sum(w.rows for w in wp.windows if w.start == day)


def test_demo_incident_is_found_from_its_onset_and_not_before(demo: Case, demo_ref: StoredReference) -> None:
    report = run_monitors(ArrowSource(demo.log, demo.labels), demo_ref, window="1d")
    drift = [f for f in report.findings if f.monitor == "input_drift" and f.column == "input.avg_amount_30d"]
    assert drift and all(f.window_end > DEMO_ONSET for f in drift)
    fpr = [f for f in report.findings if f.monitor == "performance" and f.statistic == "false_positive_rate"]
    assert fpr and all(f.value > f.baseline_value for f in fpr)
    assert all(f.severity in (Severity.WARNING, Severity.CRITICAL)
               for f in report.findings if f.monitor != "metric_change")


def test_segment_compared_with_its_own_training_rows(demo_ref: StoredReference) -> None:
    case = make_case(None, seed=3, rows=20_000)
    report = run_monitors(ArrowSource(case.log), demo_ref, [FeatureDrift(), FeatureDrift(baseline=Baseline.PRODUCTION)],
                          window="1d", segment=("region",))
    assert report.findings == ()
    assert set(demo_ref.segments["region"]) >= {"EU", "US"}


def test_volume_drop_in_one_segment_names_that_segment() -> None:
    case = make_case(None, seed=5, rows=30_000)
    log = case.log
    late = pa.compute.greater_equal(log.column("ts"), pa.scalar(datetime(2026, 3, 7, tzinfo=UTC)))
    drop = pa.compute.and_(late, pa.compute.equal(log.column("region"), "EU"))
    report = run_monitors(ArrowSource(log.filter(pa.compute.invert(drop))), build_reference(case.reference),
                          [Volume()], window="1d", segment=("region",))
    segs = {f.segment for f in report.findings}
    assert (("region", "EU"),) in segs and all(s in ((("region", "EU"),), ()) for s in segs)


def test_performance_skips_without_labels_and_says_why(demo: Case, demo_ref: StoredReference) -> None:
    report = run_monitors(ArrowSource(demo.log), demo_ref, [Performance()], window="1d")
    assert report.findings == () and report.skipped and "label" in report.skipped[0][1]


def test_reference_saved_versioned_and_loaded(tmp_path: Path, demo_ref: StoredReference) -> None:
    first = save_reference(tmp_path, "fraud", demo_ref)
    save_reference(tmp_path, "fraud", demo_ref)
    assert (first.parent / "history" / "reference-0001.json").exists()
    back = load_reference(tmp_path, "fraud")
    assert back.profile == demo_ref.profile
    assert back.metrics == dict(demo_ref.metrics)
    assert back.segments["region"]["EU"] == demo_ref.segments["region"]["EU"]
    assert back.calibrator is not None


def test_store_source_with_time_range(demo: Case, demo_ref: StoredReference) -> None:
    store = MemoryStore()
    store.append_log(demo.log)
    since, until = datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)
    wp = window_profiles(store, demo_ref.profile, window_seconds=3600, time_range=TimeRange("fraud", since, until))
    assert len(wp.starts) == 48 and wp.windows
    assert all(since <= w.start < until for w in wp.windows)


def test_cli_profile_then_monitor(tmp_path: Path, demo: Case) -> None:
    folder = demo.write(tmp_path / "case")
    store = tmp_path / "store"
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "log", str(folder / "log.parquet"), "--store", str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["profile", str(folder / "reference.parquet"), "--model", "fraud", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert (store / "profiles" / "fraud" / "reference.json").exists()
    res = runner.invoke(app, ["monitor", "--store", str(store), "--model", "fraud", "--format", "json",
                              "--segment", "region"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["windows"] == 7 and body["rows"] == demo.log.num_rows
    assert any(f["column"] == "input.avg_amount_30d" for f in body["findings"])
    res = runner.invoke(app, ["monitor", "--store", str(store), "--model", "fraud", "--window", "1h"])
    assert res.exit_code == 0 and "mlsleuth monitor" in res.stdout


def test_cli_monitor_without_reference_is_one_line_error(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(app, ["init", "--store", str(tmp_path / "s")])
    res = runner.invoke(app, ["monitor", "--store", str(tmp_path / "s"), "--model", "fraud"])
    assert res.exit_code == 2 and "mlsleuth profile" in res.stderr


def test_public_names_of_monitors_are_the_curated_list() -> None:
    import mlsleuth.monitors as m

    assert m.__all__ == [
        "DEFAULT_TOLERANCES", "MONITORS", "ArrowSource", "Baseline", "DataQuality", "DriftMatrix",
        "EstimatedPerformance",
        "FeatureDrift", "Finding", "Freshness", "InputDrift", "LogSource", "MetricChange", "Monitor",
        "MonitorContext", "MonitorReport", "MonitorSkipped", "Performance", "PredictionDrift", "SchemaCheck",
        "Segment", "ServingHealth", "Severity", "StoredReference", "TimeRange", "Volume", "WindowMetric",
        "WindowProfile", "WindowProfiles", "build_reference", "default_monitors", "drift_matrix", "findings_from_dicts",
        "findings_to_dicts", "load_reference", "parse_window", "reference_dir", "run_monitors", "save_reference",
        "window_profiles",
    ]
    assert all(hasattr(m, n) for n in m.__all__)
