"""The real-data cases (mlsleuth.testing.real_case): deterministic, valid CASE_DIRs, and truths that hold.

A truth is only worth scoring against when the data say the same: calm windows must really be calm (the model's
labelled quality held), a new model version must really be worse, and each injected fault must act from its onset
and not before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score

from mlsleuth.errors import ConfigError
from mlsleuth.schema import infer_schema
from mlsleuth.testing import REAL_DATASETS, REAL_SCENARIOS, KindCase, read_truth, real_case, real_cases
from mlsleuth.testing._real import _SOURCES


def _np(table: pa.Table, col: str) -> np.ndarray:
    return table.column(col).to_numpy(zero_copy_only=False)


def _quality(case: KindCase, table: pa.Table, labelled: pa.Table) -> float:
    """ROC AUC of a classifier or mean absolute error of a regressor, on the rows with a label and a score."""
    if "label" not in table.column_names:
        table = table.join(labelled.select(["request_id", "label"]), "request_id", join_type="inner")
    table = table.filter(pc.is_valid(table.column("score")))
    y, s = _np(table, "label"), _np(table, "score")
    return float(roc_auc_score(y, s) if case.name.startswith("real-mpls") else mean_absolute_error(y, s))


def _onset_mask(case: KindCase) -> np.ndarray:
    assert case.truth.onset is not None
    return _np(case.log, "ts") >= np.datetime64(case.truth.onset.replace(tzinfo=None), "us")


def test_the_bench_list_covers_every_dataset_and_scenario() -> None:
    cases = real_cases()
    assert len(cases) >= 20
    assert {(d, s) for d, s, _ in cases} == {(d, s) for d in REAL_DATASETS for s in REAL_SCENARIOS}


def test_the_same_arguments_give_the_same_case() -> None:
    a, b = real_case("mpls_stops", "upstream_change", 1), real_case("mpls_stops", "upstream_change", 1)
    assert a.log.equals(b.log) and a.labels.equals(b.labels) and a.reference.equals(b.reference)
    assert a.events == b.events and a.truth == b.truth
    c = real_case("mpls_stops", "upstream_change", 0)
    assert not c.log.equals(a.log)


@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_every_case_is_a_valid_case_dir_whose_truth_names_what_is_in_it(dataset: str, tmp_path: Path) -> None:
    for d, scenario, seed in real_cases():
        if d != dataset:
            continue
        case = real_case(d, scenario, seed)
        log, labels, ref = case.log, case.labels, case.reference
        schema = infer_schema(log)
        assert schema.features and schema.inputs and schema.segments, case.name
        ids = _np(log, "request_id")
        assert len(set(ids)) == ids.size, case.name
        ts = _np(log, "ts")
        assert (np.diff(ts.astype(np.int64)) >= 0).all()
        assert ts.max() - ts.min() <= np.timedelta64(28, "D")
        assert set(_np(labels, "request_id")) <= set(ids)
        assert "label" in ref.column_names and set(schema.features) <= set(ref.column_names)
        truth = case.truth
        assert (truth.cause is None) == (scenario == "healthy")
        assert set(truth.features) | set(truth.inputs) <= set(log.column_names)
        assert set(truth.events) <= {e["id"] for e in case.events}
        if truth.onset is not None:
            assert ts.min() < np.datetime64(truth.onset.replace(tzinfo=None), "us") < ts.max()
        folder = case.write(tmp_path / case.name)
        assert read_truth(folder / "truth.json") == truth
        assert {json.loads(line)["id"] for line in (folder / "events.jsonl").read_text().splitlines()} == {
            e["id"] for e in case.events}


@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_calm_windows_are_calm_and_the_new_version_is_worse(dataset: str) -> None:
    binary = dataset == "mpls_stops"
    for seed in range(3):
        case = real_case(dataset, "healthy", seed)
        ref_q, log_q = _quality(case, case.reference, case.labels), _quality(case, case.log, case.labels)
        # The season moved the data, not the model's quality.
        assert (log_q > ref_q - 0.03) if binary else (log_q < 1.1 * ref_q), (case.name, ref_q, log_q)
    for seed in range(2):
        case = real_case(dataset, "model_change", seed)
        old = case.log.filter(pc.invert(pa.array(_onset_mask(case))))
        new = case.log.filter(pa.array(_onset_mask(case)))
        assert set(_np(new, "model_version")) == {"v4" if binary else "2014.09"}
        q_old, q_new = _quality(case, old, case.labels), _quality(case, new, case.labels)
        assert (q_new < q_old - 0.1) if binary else (q_new > 1.3 * q_old), (case.name, q_old, q_new)


@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_each_fault_acts_from_its_onset_and_not_before(dataset: str) -> None:
    calm = real_case(dataset, "healthy", 0)
    pipe = real_case(dataset, "pipeline_failure", 0)
    after = _onset_mask(pipe)
    col = pipe.truth.features[0]
    x = _np(pipe.log, col)
    broken = (x == 0) if dataset == "mpls_stops" else np.isnan(x)
    assert broken[after].all() and not broken[~after].all()

    up = real_case(dataset, "upstream_change", 0)
    after = _onset_mask(up)
    raw = _np(up.log, up.truth.inputs[0])
    if dataset == "mpls_stops":
        assert set(raw[after]) & {"M", "F"} and not set(raw[~after]) & {"M", "F"}
    else:  # Fahrenheit after the change: the same season reads about 30 degrees warmer
        assert np.median(raw[after]) > np.median(raw[~after]) + 20

    infra = real_case(dataset, "serving_infrastructure", 0)
    after = _onset_mask(infra)
    err = pc.is_valid(infra.log.column("error")).to_numpy(zero_copy_only=False)
    assert err[after].mean() > 0.04 and not err[~after].any()
    assert not pc.is_valid(infra.log.column("score")).to_numpy(zero_copy_only=False)[err].any()
    lat = _np(infra.log, "latency_ms")
    assert np.median(lat[after]) > 2 * np.median(lat[~after])

    skew = real_case(dataset, "skew", 0)
    assert skew.truth.onset is None and skew.log.num_rows > 1000
    # Every row's hour feature disagrees with the one training computed from the same input.
    hour = _np(skew.log, "input.hour").astype(float)
    trained = np.round(np.sin(2 * np.pi * hour / 24), 4)
    assert (np.abs(_np(skew.log, "feature.hour_sin") - trained) > 1e-3).mean() > 0.9
    assert np.allclose(_np(calm.log, "feature.hour_sin"), np.round(np.sin(2 * np.pi * _np(calm.log, "input.hour")
                                                                           .astype(float) / 24), 4))


def test_unknown_or_reserved_datasets_are_refused() -> None:
    for name in ("nycflights13", "hotel_rates", "flights", "weather"):
        with pytest.raises(ConfigError, match="unknown real dataset"):
            real_case(name, "healthy")
    with pytest.raises(ConfigError, match="unknown real scenario"):
        real_case("mpls_stops", "meteor")
    # The only items ever loaded: none of the reserved packages or items.
    loaded = " ".join(f"{p}/{i}" for p, i in _SOURCES.values()).lower()
    assert not any(r in loaded for r in ("nycflights13", "hotel_rates", "acs", "nannyml"))
