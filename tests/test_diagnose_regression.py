"""Diagnosis of models whose score is not a binary probability: a regressor (predicted value, labels are true
values) and a multi-class classifier (predicted class and its confidence, labels are classes)."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mlsleuth.diagnosis import diagnose, find_case_files
from mlsleuth.diagnosis._analysis import Triage, run_triage
from mlsleuth.diagnosis._data import load_case
from mlsleuth.testing import (
    MULTICLASS_SCENARIOS,
    REGRESSION_SCENARIOS,
    KindCase,
    multiclass_case,
    regression_case,
)

ROWS = 24_000
SEED = 3

# (kind, scenario) -> (verdict, cause, a culprit column that must be named, or None)
EXPECTED = {
    ("regression", "healthy"): ("healthy", None, None),
    ("regression", "seasonal_drift"): ("healthy", None, None),
    ("regression", "model_change"): ("incident", "model_change", None),
    ("regression", "upstream_unit"): ("incident", "upstream_data_change", "feature.distance_km"),
    ("regression", "pipeline_constant"): ("incident", "silent_pipeline_failure", "feature.rain_mm"),
    ("multiclass", "healthy"): ("healthy", None, None),
    ("multiclass", "model_change"): ("incident", "model_change", None),
    ("multiclass", "upstream_unit"): ("incident", "upstream_data_change", "feature.log_account_age"),
}


@cache
def _case(kind: str, scenario: str) -> KindCase:
    make = regression_case if kind == "regression" else multiclass_case
    return make(scenario, SEED, rows=ROWS)


def _diagnose(case: KindCase, folder: Path) -> dict[str, Any]:
    """Diagnose the case as ``mlsleuth diagnose CASE_DIR`` does."""
    case.write(folder)
    files: dict[str, Any] = dict(find_case_files(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return diagnose(files.pop("log"), **files).to_dict()


def test_every_scenario_has_an_expectation() -> None:
    assert {s for k, s in EXPECTED if k == "regression"} == set(REGRESSION_SCENARIOS)
    assert {s for k, s in EXPECTED if k == "multiclass"} == set(MULTICLASS_SCENARIOS)


@pytest.mark.parametrize(("kind", "scenario"), list(EXPECTED))
def test_diagnosis_names_the_right_verdict_cause_and_culprit(kind: str, scenario: str, tmp_path: Path) -> None:
    case = _case(kind, scenario)
    verdict, cause, culprit = EXPECTED[(kind, scenario)]
    assert case.truth.verdict.value == verdict
    got = _diagnose(case, tmp_path)
    assert got["verdict"] == verdict, got["hypotheses"][:1]
    if cause is None:
        return
    top = got["hypotheses"][0]
    assert top["cause"] == cause, top["evidence"]
    if culprit is not None:
        assert culprit in (top["features"] + top["inputs"])[:3]
    onset = case.truth.onset
    assert onset is not None and top["onset"] is not None
    assert abs(datetime.fromisoformat(top["onset"].replace("Z", "+00:00")) - onset) <= timedelta(hours=1)
    if case.truth.events:
        assert top["events"][:1] == list(case.truth.events)


def _triage(case: KindCase) -> Triage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_triage(load_case(case.log, reference=case.reference, labels=case.labels))


def test_regression_error_metrics_rise_at_a_worse_version_and_hold_in_a_calm_week() -> None:
    worse = _triage(_case("regression", "model_change"))
    assert worse.kind == "regression"
    mae, bias = worse.metrics["mae"], worse.metrics["bias"]
    assert mae.material and mae.split.after > 1.6 * mae.split.before  # v9's error roughly doubles
    assert bias.material and bias.split.after - bias.split.before > 2.0  # and it predicts minutes too long
    calm = _triage(_case("regression", "seasonal_drift"))
    assert "mae" in calm.metrics and not calm.metrics["mae"].material
    assert not calm.metrics["bias"].material


def test_integer_regression_labels_are_true_values_too() -> None:
    case = _case("regression", "model_change")
    labels = case.labels.set_column(1, "label", pa.array(
        [round(v) for v in case.labels.column("label").to_pylist()], pa.int64()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = run_triage(load_case(case.log, reference=case.reference, labels=labels))
    assert tr.metrics["mae"].material


def test_multiclass_recall_of_one_class_falls_while_accuracy_holds() -> None:
    tr = _triage(_case("multiclass", "upstream_unit"))
    assert tr.kind == "multiclass"
    rec = tr.metrics["class_recall"]
    assert rec.material and rec.split.after < rec.split.before
    # Account age in hours makes every account look old: harassment, a young-account class, is missed.
    assert tr.classes[rec.split.dim] == rec.subject and rec.subject in ("harassment", "spam")
    assert not tr.metrics["accuracy"].material
    healthy = _triage(_case("multiclass", "healthy"))
    assert not any(m.material for k, m in healthy.metrics.items() if k in ("accuracy", "class_recall"))


def test_labels_that_did_not_follow_the_predictions_point_upstream(tmp_path: Path) -> None:
    d = _diagnose(_case("regression", "upstream_unit"), tmp_path)
    top = d["hypotheses"][0]
    assert any("did not follow the predictions" in e for e in top["evidence"])


def test_whole_minute_predictions_are_a_regression_not_fifty_classes() -> None:
    case = _case("regression", "model_change")
    i = case.log.column_names.index("prediction")
    log = case.log.set_column(i, "prediction", pa.array(
        [round(v) for v in case.log.column("prediction").to_pylist()], pa.int64()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = run_triage(load_case(log, reference=case.reference, labels=case.labels))
    assert tr.kind == "regression" and not tr.classes
    assert tr.metrics["mae"].material and tr.metrics["mean_prediction"].material
