"""Serving-layer signals: a fallback is what the serving layer says it served, and better serving is no incident."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.diagnosis import diagnose
from mlsleuth.schema import ModelConfig
from mlsleuth.testing import Cause, make_case


def _coarse(log: pa.Table) -> pa.Table:
    """Scores on a 0.1 grid, as a tree ensemble serves few distinct values."""
    return log.set_column(log.column_names.index("score"), "score", pc.round(log.column("score"), 1))


def test_a_new_version_that_moves_the_most_frequent_score_is_a_model_change_not_a_fallback() -> None:
    case = make_case(Cause.MODEL_CHANGE, seed=2, rows=60_000)
    d = diagnose(_coarse(case.log), reference=case.reference, labels=case.labels)
    assert d.top is not None and d.top.cause.value == "model_change"
    assert "serving_infrastructure" not in [h.cause.value for h in d.hypotheses]


def test_a_population_shift_under_discrete_scores_raises_no_serving_hypothesis() -> None:
    case = make_case(Cause.DISTRIBUTION_SHIFT, seed=2, rows=60_000)
    d = diagnose(_coarse(case.log), reference=case.reference, labels=case.labels)
    assert d.top is not None and d.top.cause.value == "distribution_shift"
    assert "serving_infrastructure" not in [h.cause.value for h in d.hypotheses]


def test_a_default_score_the_config_names_is_watched_as_the_fallback_rate() -> None:
    case = make_case(None, seed=4, rows=60_000)
    log = case.log
    ts = log.column("ts").to_numpy()
    late = ts >= ts[0] + (ts[-1] - ts[0]) * 0.7
    rng = np.random.default_rng(0)
    hit = late & (rng.random(len(ts)) < 0.2)
    score = np.where(hit, 0.02, log.column("score").to_numpy(zero_copy_only=False))
    log = log.set_column(log.column_names.index("score"), "score", pa.array(score))
    # No error is recorded on those rows: only the config says 0.02 is the default served.
    assert diagnose(log, reference=case.reference).verdict.value == "incident"
    d = diagnose(log, reference=case.reference, config=ModelConfig(fallback_score=0.02))
    assert d.top is not None and d.top.cause.value == "serving_infrastructure"
    assert "fallback_rate" in [s.metric for s in d.symptoms]


def test_errors_that_fell_are_not_an_incident() -> None:
    case = make_case(None, seed=5, rows=60_000)
    log = case.log
    ts = log.column("ts").to_numpy()
    early = ts < ts[0] + (ts[-1] - ts[0]) * 0.4
    rng = np.random.default_rng(1)
    error = np.where(early & (rng.random(len(ts)) < 0.05), "timeout: feature-store read, retried", None)
    log = log.set_column(log.column_names.index("error"), "error", pa.array(error, pa.string()))
    d = diagnose(log, reference=case.reference, labels=case.labels)
    assert d.verdict.value == "healthy", [(h.cause.value, h.evidence[:1]) for h in d.hypotheses]
