"""Incidents, not alerts: one incident per root cause, updated as checks go on, resolved, kept across restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlsleuth.diagnosis import Cause, Diagnosis, Hypothesis, Verdict
from mlsleuth.errors import ConfigError
from mlsleuth.incidents import (
    IncidentLog,
    IncidentPolicy,
    IncidentStatus,
    IncidentTracker,
    UpdateKind,
    incident_json,
    incident_text,
)
from mlsleuth.store import LocalStore
from mlsleuth.testing import make_case

T0 = datetime(2026, 3, 6, 18, tzinfo=UTC)
HEALTHY = Diagnosis(verdict=Verdict.HEALTHY)


def _incident(cause: Cause, *, onset: datetime = T0, features: tuple[str, ...] = (), inputs: tuple[str, ...] = (),
              events: tuple[str, ...] = ()) -> Diagnosis:
    h = Hypothesis(cause=cause, confidence=0.9, onset=onset, features=features, inputs=inputs, events=events,
                   next_steps=("Compare the input's values before and after the onset.",))
    return Diagnosis(verdict=Verdict.INCIDENT, hypotheses=(h,))


def test_checks_that_keep_showing_one_root_cause_open_one_incident_and_notify_once() -> None:
    tracker = IncidentTracker(IncidentLog(None))
    d = _incident(Cause.UPSTREAM_DATA_CHANGE, features=("feature.ratio",), inputs=("input.amount",),
                  events=("evt-42",))
    opened = tracker.observe("fraud", d, T0 + timedelta(minutes=20))
    assert [c.kind for c in opened] == [UpdateKind.OPENED]
    # The same cause seen again, and a drifting column of the same change: no new incident, no message.
    again = _incident(Cause.UPSTREAM_DATA_CHANGE, onset=T0 + timedelta(minutes=5), features=("feature.ratio",))
    assert tracker.observe("fraud", again, T0 + timedelta(minutes=40)) == ()
    other_column = _incident(Cause.DISTRIBUTION_SHIFT, onset=T0 + timedelta(hours=30), inputs=("input.amount",))
    changes = tracker.observe("fraud", other_column, T0 + timedelta(hours=31))
    assert [c.kind for c in changes] == [UpdateKind.CAUSE_CHANGED]
    assert changes[0].previous is not None and changes[0].previous.cause is Cause.UPSTREAM_DATA_CHANGE
    incidents = tracker.log.all("fraud")
    assert len(incidents) == 1
    assert [u.kind for u in incidents[0].history] == [UpdateKind.OPENED, UpdateKind.UPDATED,
                                                      UpdateKind.CAUSE_CHANGED]


def test_an_unrelated_cause_opens_a_second_incident_and_other_models_are_apart() -> None:
    tracker = IncidentTracker(IncidentLog(None), IncidentPolicy(resolve_after=timedelta(days=2)))
    tracker.observe("fraud", _incident(Cause.SILENT_PIPELINE_FAILURE, features=("feature.a",)), T0)
    later = T0 + timedelta(days=1)
    serving = _incident(Cause.SERVING_INFRASTRUCTURE, onset=later)
    assert [c.kind for c in tracker.observe("fraud", serving, later + timedelta(minutes=10))] == [UpdateKind.OPENED]
    assert [c.kind for c in tracker.observe("ads", serving, later)] == [UpdateKind.OPENED]
    assert len(tracker.log.all("fraud")) == 2 and len(tracker.log.all("ads")) == 1


def test_an_incident_no_check_shows_resolves_after_the_policy_and_is_not_reopened_by_the_old_change() -> None:
    tracker = IncidentTracker(IncidentLog(None), IncidentPolicy(resolve_after=timedelta(hours=6)))
    d = _incident(Cause.SERVING_INFRASTRUCTURE)
    tracker.observe("fraud", d, T0 + timedelta(minutes=15))
    assert tracker.observe("fraud", HEALTHY, T0 + timedelta(hours=3)) == ()
    resolved = tracker.observe("fraud", HEALTHY, T0 + timedelta(hours=7))
    assert [c.kind for c in resolved] == [UpdateKind.RESOLVED]
    assert resolved[0].incident.status is IncidentStatus.RESOLVED
    # A later check whose span still holds the old change (same onset): not a new incident.
    assert tracker.observe("fraud", d, T0 + timedelta(hours=8)) == ()
    # The same kind of failure again a day later is.
    again = _incident(Cause.SERVING_INFRASTRUCTURE, onset=T0 + timedelta(days=1))
    assert [c.kind for c in tracker.observe("fraud", again, T0 + timedelta(days=1, hours=1))] == [UpdateKind.OPENED]


def test_incidents_survive_a_restart_and_acknowledging_keeps_them_active(tmp_path: Path) -> None:
    tracker = IncidentTracker(IncidentLog(tmp_path))
    (change,) = tracker.observe("fraud/eu", _incident(Cause.MODEL_CHANGE, events=("deploy-7",)), T0)
    reopened = IncidentTracker(IncidentLog(tmp_path))
    (incident,) = reopened.log.all()
    assert incident == change.incident and incident.model == "fraud/eu"
    acked = reopened.acknowledge("fraud/eu", incident.id, T0 + timedelta(hours=1), by="oncall")
    assert acked.status is IncidentStatus.ACKNOWLEDGED and acked.is_active
    assert IncidentLog(tmp_path).all()[0].status is IncidentStatus.ACKNOWLEDGED
    with pytest.raises(ConfigError, match="no incident 'nope'"):
        reopened.acknowledge("fraud/eu", "nope", T0)


def test_a_damaged_incident_file_is_named_in_the_error(tmp_path: Path) -> None:
    IncidentTracker(IncidentLog(tmp_path)).observe("fraud", _incident(Cause.MODEL_CHANGE), T0)
    (path,) = (tmp_path / "incidents").glob("*/*.json")
    path.write_text("{", encoding="utf-8")
    with pytest.raises(Exception, match=str(path.name)):
        IncidentLog(tmp_path)


def test_messages_name_the_cause_culprits_event_onset_first_step_and_link() -> None:
    tracker = IncidentTracker(IncidentLog(None))
    d = _incident(Cause.UPSTREAM_DATA_CHANGE, features=("feature.ratio",), inputs=("input.amount",),
                  events=("evt-42",))
    (change,) = tracker.observe("fraud", d, T0)
    text = incident_text(change, link="http://x/incidents/1")
    for part in ("opened", "fraud", "upstream data change", "feature.ratio", "input.amount", "evt-42",
                 "2026-03-06 18:00", "First step: Compare", "<http://x/incidents/1|open the incident>"):
        assert part in text, part
    body = incident_json(change, link="http://x/incidents/1")
    assert body["event"] == "incident.opened" and body["incident"]["top"]["cause"] == "upstream_data_change"
    json.dumps(body)


def test_a_store_check_opens_on_the_fault_keeps_it_open_while_it_lasts_and_resolves_on_recovery(
        tmp_path: Path, errors_between: Any) -> None:
    case = make_case(None, seed=6, rows=40_000)
    start = case.log.column("ts")[0].as_py()
    onset, fixed = start + timedelta(days=2, hours=20), start + timedelta(days=6, hours=2)
    store = LocalStore.init(tmp_path / "s")
    store.append_log(errors_between(case.log, onset, fixed))
    tracker = IncidentTracker(IncidentLog(store.path))
    assert tracker.check(store, "fraud", onset - timedelta(hours=2)) == ()
    (opened,) = tracker.check(store, "fraud", onset + timedelta(hours=2))
    assert opened.kind is UpdateKind.OPENED and opened.incident.top.cause is Cause.SERVING_INFRASTRUCTURE
    assert opened.incident.top.onset is not None and abs(opened.incident.top.onset - onset) <= timedelta(hours=1)
    # Three days into the fault the trailing span holds no change, but the open incident keeps its baseline in view.
    assert tracker.check(store, "fraud", onset + timedelta(days=3, hours=2)) == ()
    (resolved,) = tracker.check(store, "fraud", fixed + timedelta(hours=8))
    assert resolved.kind is UpdateKind.RESOLVED and resolved.incident.id == opened.incident.id
    assert IncidentLog(store.path).all()[0].status is IncidentStatus.RESOLVED


def test_check_passes_model_and_reference_on_to_the_diagnosis(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlsleuth.incidents._tracker as tracker_module

    seen: dict[str, object] = {}

    def diagnose(store: object, **kw: object) -> Diagnosis:
        seen.update(kw)
        return HEALTHY

    monkeypatch.setattr(tracker_module, "diagnose_store", diagnose)
    tracker = IncidentTracker(IncidentLog(None), IncidentPolicy(lookback=timedelta(days=2)))
    # ``model=`` is the scoring model, as in diagnose_store: the model's name is the second positional argument.
    assert tracker.check("store", "fraud", T0, model="pkg.scoring:score", reference="ref.parquet",
                         first_seen=T0 - timedelta(days=5)) == ()
    assert seen == {"model_name": "fraud", "model": "pkg.scoring:score", "reference": "ref.parquet",
                    "since": T0 - timedelta(days=2), "until": T0 + timedelta(microseconds=1)}


def test_a_model_younger_than_min_history_is_not_checked(tmp_path: Path, errors_between: Any) -> None:
    """A model's first day, daily cycle and all, opens nothing: its first evening is not a change."""
    case = make_case(None, seed=6, rows=40_000)
    start = case.log.column("ts")[0].as_py()
    store = LocalStore.init(tmp_path / "s")
    store.append_log(errors_between(case.log, start + timedelta(hours=10), start + timedelta(days=3)))
    at = start + timedelta(hours=14)
    assert IncidentTracker(IncidentLog(None)).check(store, "fraud", at) == ()
    assert IncidentTracker(IncidentLog(None)).check(tmp_path / "s", "nobody", at) == ()
    young = IncidentTracker(IncidentLog(None), IncidentPolicy(min_history=timedelta(0)))
    assert [c.kind for c in young.check(store, "fraud", at)] == [UpdateKind.OPENED]
