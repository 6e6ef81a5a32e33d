"""Inputs users hand the diagnosis that are not quite the contract's happy path."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlsleuth.diagnosis import diagnose
from mlsleuth.testing import demo_case


@pytest.fixture(scope="module")
def demo() -> object:
    return demo_case(0, rows=60_000)


def test_text_labels_beside_numeric_predictions_are_read_as_the_rarer_class(demo: object) -> None:
    case = demo
    labels = case.labels  # type: ignore[attr-defined]
    text = labels.set_column(labels.column_names.index("label"), "label",
                             pc.if_else(pc.equal(labels.column("label"), 1), "fraud", "legit"))
    d = diagnose(case.log, reference=case.reference, labels=text)  # type: ignore[attr-defined]
    assert d.verdict.value == "incident"
    assert any("'fraud'" in s and "1/0" in s for s in d.skipped)
    assert "false_positive_rate" in [s.metric for s in d.symptoms]


def test_a_config_positive_class_picks_which_text_label_is_positive(demo: object) -> None:
    from mlsleuth.schema import ModelConfig

    case = demo
    labels = case.labels  # type: ignore[attr-defined]
    text = labels.set_column(labels.column_names.index("label"), "label",
                             pc.if_else(pc.equal(labels.column("label"), 1), "yes", "no"))
    d = diagnose(case.log, reference=case.reference, labels=text,  # type: ignore[attr-defined]
                 config=ModelConfig(positive_class="yes"))
    assert any("'yes'" in s for s in d.skipped)


def test_a_multiclass_log_with_a_shifted_class_mix_is_an_incident() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    n = 40_000
    ts = np.sort(rng.uniform(0, 4 * 86400, n)) + 1.77e9
    x = rng.normal(size=n) + np.where(ts > ts[0] + 2.5 * 86400, 1.0, 0.0)
    cls = np.where(x > 0.5, "cat", np.where(x < -0.5, "dog", "bird"))
    log = pa.table({"ts": pa.array((ts * 1e6).astype("int64")).cast(pa.timestamp("us", tz="UTC")),
                    "prediction": cls, "feature.x": x})
    d = diagnose(log)
    assert d.verdict.value == "incident"
    assert "class_mix" in [s.metric for s in d.symptoms]
    assert d.top is not None and d.top.features == ("feature.x",)


@pytest.mark.parametrize("hours", [30, 44])
def test_a_quiet_log_shorter_than_two_days_is_healthy_despite_hour_of_day_features(hours: int) -> None:
    # A log of part of two days covers some hours more than others, so hour-of-day features differ from
    # a reference of whole days and drift within the log: that is the clock, not an incident.
    from datetime import timedelta

    from mlsleuth.testing import make_case

    case = make_case(None, seed=3, rows=100_000)
    start = case.spec.start + timedelta(hours=7)
    d = diagnose(case.log, reference=case.reference, labels=case.labels, since=start,
                 until=start + timedelta(hours=hours))
    assert d.verdict.value == "healthy", [(h.cause.value, h.features) for h in d.hypotheses]


def test_events_on_the_diagnosed_model_and_its_service_rank_above_unrelated_ones() -> None:
    from datetime import UTC, datetime, timedelta

    from mlsleuth.diagnosis._locate import rank_events
    from mlsleuth.schema import ChangeEvent, Lineage
    from mlsleuth.testing import Cause

    onset = datetime(2026, 3, 5, 15, 10, tzinfo=UTC)

    def ev(i: str, minutes: float, kind: str, target: str, text: str) -> ChangeEvent:
        return ChangeEvent(id=i, ts=onset + timedelta(minutes=minutes), kind=kind, target=target, description=text)

    def top(events: list[ChangeEvent], cause: Cause) -> str:
        ranked = rank_events(events, onset=onset, cause=cause, columns=["feature.log_amount"], lineage=Lineage(),
                             segments=[], model_names=["fraud"])
        return ranked[0].event.id

    # Another model's release, however close to the onset, is not this model's change.
    assert top([ev("other", -5, "deployment", "model:credit-limit", "credit-limit v7 deployed"),
                ev("own", -70, "deployment", "model:fraud", "fraud v13 deployed")], Cause.MODEL_CHANGE) == "own"
    # The model's own serving service, logged a minute after the onset read from the rows, beats an
    # unrelated hotfix a quarter of an hour before it.
    assert top([ev("hotfix", -15, "deployment", "service:payouts", "payouts 4.2.1 deployed (hotfix)"),
                ev("serving", 1, "deployment", "service:fraud-serving", "fraud-serving 2.4.0 released")],
               Cause.TRAINING_SERVING_SKEW) == "serving"


def _relabelled() -> tuple[pa.Table, pa.Table]:
    """A log of three requests and labels that relabel two of them: r1 at the same label time, r2 without one."""
    ts = pa.array([datetime(2026, 3, 2, h, tzinfo=UTC) for h in (1, 2, 3)], pa.timestamp("us", tz="UTC"))
    log = pa.table({"ts": ts, "request_id": ["r1", "r2", "r3"], "score": [0.1, 0.9, 0.5], "prediction": [0, 1, 1]})
    at = datetime(2026, 3, 3, tzinfo=UTC)
    labels = pa.table({"request_id": ["r1", "r1", "r2", "r2", "r3"], "label": [0, 1, 0, 1, 1],
                       "label_ts": pa.array([at, at, None, None, at], pa.timestamp("us", tz="UTC"))})
    return log, labels


def test_a_case_joins_the_latest_label_as_the_store_defines_it(tmp_path: Path) -> None:
    """The latest ``label_ts`` wins, then the later row: in a case's files as in a store's labels view."""
    from mlsleuth.diagnosis import load_case
    from mlsleuth.store import LocalStore

    log, labels = _relabelled()
    joined = load_case(log, labels=labels).log
    assert isinstance(joined, pa.Table)
    in_case = dict(zip(joined.column("request_id").to_pylist(), joined.column("label").to_pylist(), strict=True))
    with LocalStore.init(tmp_path / "store") as st:
        st.append_log(log)
        for k in range(labels.num_rows):  # one batch per row: the later row is ingested later
            st.append_labels(labels.slice(k, 1))
        in_store = {r["request_id"]: r["label"] for r in st.sql("SELECT request_id, label FROM labels").to_pylist()}
    assert in_case == in_store == {"r1": 1, "r2": 1, "r3": 1}
