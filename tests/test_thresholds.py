"""The thresholds table: one place for every number the diagnosis decides with, overridable and echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsleuth.diagnosis import DEFAULT_THRESHOLDS, Thresholds, diagnose
from mlsleuth.errors import ConfigError
from mlsleuth.schema import ModelConfig
from mlsleuth.testing import Cause, make_case


def test_every_threshold_has_a_unit_a_reason_and_a_finite_default() -> None:
    table = Thresholds.table()
    assert len({t.name for t in table}) == len(table)
    for t in table:
        assert t.unit and len(t.why) > 20, t
        assert t.value >= 0
    assert DEFAULT_THRESHOLDS.to_dict() == {t.name: round(t.value, 6) for t in table}


def test_a_config_file_overrides_thresholds_by_name(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text("[thresholds]\nmin_change_z = 8\nnear_hours = 3.5\n", encoding="utf-8")
    config = ModelConfig.from_toml(path)
    th = Thresholds.from_mapping(config.thresholds)
    assert (th.min_change_z, th.near_hours) == (8.0, 3.5)
    assert th.min_side_rows == DEFAULT_THRESHOLDS.min_side_rows


def test_a_threshold_that_is_not_a_number_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text('[thresholds]\nmin_change_z = "high"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.toml.*thresholds\.min_change_z.*expected a number"):
        ModelConfig.from_toml(path)


def test_an_unknown_or_negative_threshold_is_refused_with_the_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown thresholds \['min_chnge_z'\].*min_change_z"):
        Thresholds.from_mapping({"min_chnge_z": 8})
    with pytest.raises(ConfigError, match=r"thresholds\.near_hours.*>= 0 \(hours\)"):
        Thresholds.from_mapping({"near_hours": -1})


def test_the_json_echoes_the_thresholds_applied_and_a_bad_table_stops_before_any_scan() -> None:
    case = make_case(Cause.SILENT_PIPELINE_FAILURE, seed=3, rows=20_000)
    d = diagnose(case.log, reference=case.reference, config=ModelConfig(thresholds={"near_hours": 3}))
    out = d.to_dict()["thresholds"]
    assert out["near_hours"] == 3.0
    assert {k: v for k, v in out.items() if k != "near_hours"} == {
        k: v for k, v in DEFAULT_THRESHOLDS.to_dict().items() if k != "near_hours"}
    with pytest.raises(ConfigError, match="unknown thresholds"):
        diagnose(case.log, reference=case.reference, config=ModelConfig(thresholds={"nope": 1}))


def test_an_override_changes_what_the_diagnosis_decides() -> None:
    from mlsleuth.schema import ChangeEvent

    case = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=3, rows=20_000)
    events = [ChangeEvent.from_mapping(e) for e in case.events or []]
    default = diagnose(case.log, reference=case.reference, labels=case.labels, events=events)
    assert default.top is not None and default.top.events, "the planted event is named with the defaults"
    strict = diagnose(case.log, reference=case.reference, labels=case.labels, events=events,
                      config=ModelConfig(thresholds={"event_min_score": 1.01}))
    assert strict.top is not None and strict.top.cause is default.top.cause
    assert strict.top.events == () and strict.to_dict()["thresholds"]["event_min_score"] == 1.01
