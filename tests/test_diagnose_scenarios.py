"""What users rely on from a diagnosis, on seeded generated cases: the demo incident, healthy weeks, one clear case
per cause, and the example requests beside a hypothesis.

Cases are small (30k-100k requests) and diagnosed through the same path as ``mlsleuth diagnose CASE_DIR``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlsleuth.diagnosis import Diagnosis, diagnose, find_case_files
from mlsleuth.testing import (
    DEMO_ONSET,
    Case,
    Cause,
    DegradationKind,
    InfraFault,
    ModelChangeKind,
    PipelineFault,
    ShiftKind,
    SkewKind,
    UpstreamChange,
    Variation,
    build_case,
    demo_case,
    make_case,
    suite_specs,
)

# Column names hold digits (input.avg_amount_30d): drop them before looking for the numbers of a sentence.
_COLUMN = re.compile(r"[\w-]*[._][\w.-]*")
_NUMBER = re.compile(r"\d")


@dataclass(frozen=True)
class Diagnosed:
    case: Case
    result: Diagnosis
    out: dict[str, Any]

    @property
    def top(self) -> dict[str, Any]:
        assert self.out["hypotheses"], f"no hypothesis for {self.case.name}"
        top: dict[str, Any] = self.out["hypotheses"][0]
        return top


def run_case(case: Case, folder: Path) -> Diagnosed:
    """Write the case as a CASE_DIR and diagnose it as the CLI does."""
    files: dict[str, Any] = dict(find_case_files(case.write(folder)))
    result = diagnose(files.pop("log"), **files)
    return Diagnosed(case, result, result.to_dict())


def has_number(sentence: str) -> bool:
    return bool(_NUMBER.search(_COLUMN.sub("", sentence)))


def ts(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- the demo: the seed's weekend


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Diagnosed:
    return run_case(demo_case(0, rows=100_000), tmp_path_factory.mktemp("demo"))


def test_demo_is_an_upstream_data_change(demo: Diagnosed) -> None:
    assert demo.out["verdict"] == "incident"
    assert demo.top["cause"] == "upstream_data_change"


def test_demo_names_the_ratio_feature_the_warehouse_input_and_its_source(demo: Diagnosed) -> None:
    assert "feature.amount_to_avg_ratio" in demo.top["features"][:3]
    assert "input.avg_amount_30d" in demo.top["inputs"][:3]
    assert "source:warehouse.customer_stats" in demo.top["sources"]


def test_demo_onset_is_friday_evening(demo: Diagnosed) -> None:
    assert abs(ts(demo.top["onset"]) - DEMO_ONSET) <= timedelta(hours=1), demo.top["onset"]


def test_demo_names_the_warehouse_change_event_first(demo: Diagnosed) -> None:
    culprit = demo.case.truth.events[0]
    assert demo.top["events"][:1] == [culprit], (demo.top["events"], culprit)


def test_every_hypothesis_cites_evidence_with_numbers(demo: Diagnosed) -> None:
    for h in demo.out["hypotheses"]:
        assert h["evidence"], h["cause"]
        assert any(has_number(e) for e in h["evidence"]), h["evidence"]
    assert has_number(demo.top["evidence"][0]), demo.top["evidence"][0]
    assert demo.top["next_steps"]


def test_demo_examples_show_requests_after_the_onset_beside_typical_ones_before(demo: Diagnosed) -> None:
    top = demo.result.top
    assert top is not None and top.onset is not None
    after = [e for e in top.examples if not e.typical]
    before = [e for e in top.examples if e.typical]
    assert after and before
    assert all(e.ts is not None and e.ts >= top.onset for e in after)
    assert all(e.ts is not None and e.ts < top.onset for e in before)
    for e in top.examples:
        assert "feature.amount_to_avg_ratio" in e.values and "score" in e.values
    assert all(e.request_id for e in top.examples)
    assert all(isinstance(e.values["feature.amount_to_avg_ratio"], float) for e in top.examples)


# --------------------------------------------------------------------------- healthy weeks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_healthy_week_is_healthy_with_no_hypotheses(seed: int, tmp_path: Path) -> None:
    d = run_case(make_case(None, seed=seed, rows=30_000), tmp_path)
    assert d.out["verdict"] == "healthy", [h["cause"] for h in d.out["hypotheses"]]
    assert d.out["hypotheses"] == []


# --------------------------------------------------------------------------- one clear case per cause


@dataclass(frozen=True)
class Scenario:
    cause: Cause
    variation: Variation
    seed: int
    rows: int = 30_000

    @property
    def id(self) -> str:
        mode = self.variation.mode.value if self.variation.mode is not None else "any"
        where = f"-{self.variation.segment[1]}" if self.variation.segment else ""
        canary = "-canary" if self.variation.canary_share else ""
        return f"{self.cause.value}-{mode}{where}{canary}-s{self.seed}"


SCENARIOS = [
    Scenario(Cause.UPSTREAM_DATA_CHANGE, Variation(mode=UpstreamChange.UNITS), seed=2),
    Scenario(Cause.UPSTREAM_DATA_CHANGE, Variation(mode=UpstreamChange.UNITS, segment=("region", "EU")), seed=5,
             rows=40_000),
    Scenario(Cause.SILENT_PIPELINE_FAILURE, Variation(mode=PipelineFault.NULLS), seed=4),
    # Stale values of a feature fixed by its input (a velocity from a count): the distribution holds,
    # the tie to the input breaks.
    Scenario(Cause.SILENT_PIPELINE_FAILURE, Variation(mode=PipelineFault.STALE), seed=2),
    Scenario(Cause.SILENT_PIPELINE_FAILURE, Variation(mode=PipelineFault.STALE, segment=("channel", "pos")), seed=2,
             rows=60_000),
    Scenario(Cause.TRAINING_SERVING_SKEW, Variation(mode=SkewKind.UNITS), seed=5),
    # A 7-day average served for a 30-day one: the feature moves little, the scores a lot.
    Scenario(Cause.TRAINING_SERVING_SKEW, Variation(mode=SkewKind.WINDOW), seed=2),
    Scenario(Cause.MODEL_DEGRADATION, Variation(mode=DegradationKind.FRAUD_ADAPTS), seed=1, rows=40_000),
    Scenario(Cause.MODEL_CHANGE, Variation(mode=ModelChangeKind.MISCALIBRATED), seed=2),
    Scenario(Cause.MODEL_CHANGE, Variation(mode=ModelChangeKind.MISCALIBRATED, canary_share=0.3), seed=4,
             rows=40_000),
    Scenario(Cause.SERVING_INFRASTRUCTURE, Variation(mode=InfraFault.ERRORS), seed=3),
    # Told apart from an upstream change by the labels: the outcomes follow the scores.
    Scenario(Cause.DISTRIBUTION_SHIFT, Variation(mode=ShiftKind.HIGHER_AMOUNTS), seed=4, rows=40_000),
    Scenario(Cause.DISTRIBUTION_SHIFT, Variation(mode=ShiftKind.COUNTRY_MIX, segment=("region", "APAC")), seed=3,
             rows=40_000),
]


@pytest.mark.parametrize("sc", [pytest.param(s, id=s.id) for s in SCENARIOS])
def test_clear_case_gets_its_cause_and_its_culprit_or_segment(sc: Scenario, tmp_path: Path) -> None:
    d = run_case(make_case(sc.cause, seed=sc.seed, rows=sc.rows, variation=sc.variation), tmp_path)
    truth = d.case.truth
    assert d.out["verdict"] == "incident"
    assert d.top["cause"] == sc.cause.value, [h["cause"] for h in d.out["hypotheses"]]
    culprits = set(truth.features) | set(truth.inputs)
    if culprits:
        named = (d.top["features"] + d.top["inputs"])[:3]
        assert culprits & set(named), (named, sorted(culprits))
    if truth.segments:
        want = {frozenset(s.items()) for s in truth.segment_dicts}
        got = {frozenset(s.items()) for s in d.top["segments"]}
        assert want == got, (d.top["segments"], truth.segment_dicts)


def test_examples_of_a_broken_feature_show_it_broken_after_the_onset_only(tmp_path: Path) -> None:
    d = run_case(make_case(Cause.SILENT_PIPELINE_FAILURE, seed=5, rows=30_000,
                           variation=Variation(mode=PipelineFault.NULLS)), tmp_path)
    top = d.result.top
    assert top is not None and top.onset is not None and top.features
    feature = d.case.truth.features[0]
    assert top.features[0] == feature
    after = [e for e in top.examples if not e.typical]
    before = [e for e in top.examples if e.typical]
    assert after and before
    assert all(e.ts is not None and e.ts >= top.onset and e.values[feature] is None for e in after)
    assert all(e.ts is not None and e.ts < top.onset and e.values[feature] is not None for e in before)


def test_a_threshold_change_is_a_model_change_though_the_model_reproduces_the_scores(tmp_path: Path) -> None:
    d = run_case(make_case(Cause.MODEL_CHANGE, seed=1, rows=30_000,
                           variation=Variation(mode=ModelChangeKind.THRESHOLD, model=True)), tmp_path)
    assert d.top["cause"] == "model_change"
    evidence = " | ".join(d.top["evidence"])
    assert "decision threshold changed" in evidence
    # Re-scoring with the shipped model reproduces the scores; that must not clear a version whose
    # decisions moved on those scores.
    assert "serving model is unchanged" not in evidence
    assert "decisions made from them are not" in evidence


def test_quality_moving_both_ways_is_not_degradation_when_a_feature_broke(tmp_path: Path) -> None:
    # Nulls spreading through one feature in EU: scores fall, so recall falls while false positives
    # fall too. A model losing its edge does not improve one of them; the nulled feature is the cause.
    spec = next(s for s in suite_specs(104, 8) if s.name == "silent_pipeline_failure-nulls-s280547159")
    d = run_case(build_case(spec), tmp_path)
    assert d.top["cause"] == "silent_pipeline_failure", [h["cause"] for h in d.out["hypotheses"]]
    assert d.top["features"][0] == "feature.amount_to_avg_ratio"
    assert d.top["segments"] == [{"region": "EU"}]


def _lookup_changed(tmp_path: Path, how: str) -> Diagnosed:
    """A healthy week whose merchant_risk lookup changes from Thursday noon: rescaled, or shuffled."""
    import dataclasses

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    case = make_case(None, seed=3, rows=30_000)
    log = case.log
    after = pc.greater_equal(log.column("ts"), pa.scalar(DEMO_ONSET - timedelta(hours=30), log.schema.field("ts").type))
    risk = log.column("feature.merchant_risk").to_numpy(zero_copy_only=False).astype(float)
    hit = after.to_numpy(zero_copy_only=False)
    if how == "refreshed":
        risk[hit] = risk[hit] * 1.02  # a new table: every category's value moved, still one per category
    else:
        risk[hit] = np.random.default_rng(0).permutation(risk[hit])  # same values, no longer per category
    log = log.set_column(log.schema.get_field_index("feature.merchant_risk"), "feature.merchant_risk", pa.array(risk))
    return run_case(dataclasses.replace(case, log=log), tmp_path)


def test_a_lookup_feature_cut_loose_from_its_input_is_a_pipeline_failure(tmp_path: Path) -> None:
    d = _lookup_changed(tmp_path, "shuffled")
    assert d.out["verdict"] == "incident"
    assert d.top["cause"] == "silent_pipeline_failure"
    assert d.top["features"][0] == "feature.merchant_risk"
    assert any("no longer follows input.merchant_category" in e for e in d.top["evidence"])


def test_a_refreshed_lookup_table_is_not_called_decoupled(tmp_path: Path) -> None:
    d = _lookup_changed(tmp_path, "refreshed")
    said = [e for h in d.out["hypotheses"] for e in h["evidence"]] + [f["message"] for f in d.out["findings"]]
    assert not any("no longer follows" in s for s in said)
    assert all(h["cause"] != "silent_pipeline_failure" for h in d.out["hypotheses"])


def test_a_version_rolled_out_to_one_region_at_once_has_a_sudden_onset(tmp_path: Path) -> None:
    # Its share of all traffic follows the region's daily cycle and looks gradual; inside the region
    # it is a step at the deployment.
    d = run_case(make_case(Cause.MODEL_CHANGE, seed=2, rows=40_000,
                           variation=Variation(mode=ModelChangeKind.BAD_TRAINING_DATA, segment=("region", "US"))),
                 tmp_path)
    assert d.top["cause"] == "model_change" and d.top["segments"] == [{"region": "US"}]
    assert d.case.truth.onset is not None and d.top["onset"] is not None
    assert abs(ts(d.top["onset"]) - d.case.truth.onset) <= timedelta(hours=1)


def _suite_case(name: str, tmp_path: Path, seed: int = 8) -> Diagnosed:
    spec = next(s for s in suite_specs(104, seed) if s.name == name)
    return run_case(build_case(spec), tmp_path)


def _onset_near_truth(d: Diagnosed) -> None:
    assert d.case.truth.onset is not None and d.top["onset"] is not None, d.top["onset"]
    assert abs(ts(d.top["onset"]) - d.case.truth.onset) <= timedelta(hours=1), (d.top["onset"], d.case.truth.onset)


def test_a_unit_change_in_one_region_has_the_onset_of_its_step(tmp_path: Path) -> None:
    # Amounts in cents from APAC only: all traffic sees the region's daily share, a slow-looking
    # ramp; inside the region it is a step, and the step is the onset.
    d = _suite_case("upstream_data_change-units-s592532608", tmp_path)
    assert d.top["cause"] == "upstream_data_change" and d.top["segments"] == [{"region": "APAC"}]
    _onset_near_truth(d)


def test_a_renamed_category_is_timed_from_its_first_appearance(tmp_path: Path) -> None:
    d = _suite_case("upstream_data_change-category_renamed-s171144975", tmp_path)
    assert d.top["cause"] == "upstream_data_change" and "input.merchant_category" in d.top["inputs"]
    _onset_near_truth(d)


def test_a_feature_broken_in_one_channel_is_confined_to_that_channel_not_to_a_region(tmp_path: Path) -> None:
    # Every region holds some of the app's traffic, so the broken feature shows in region slices too,
    # diluted; the segment is the one it is confined to.
    d = _suite_case("silent_pipeline_failure-constant-s1027753334", tmp_path)
    assert d.top["cause"] == "silent_pipeline_failure"
    assert d.top["segments"] == [{"channel": "app"}]


def test_quality_that_fell_at_once_has_an_onset(tmp_path: Path) -> None:
    d = _suite_case("model_degradation-account_takeover-s432265743", tmp_path)
    assert d.top["cause"] == "model_degradation"
    _onset_near_truth(d)


def test_decay_is_not_pinned_on_a_pipeline_release_that_changed_no_data(tmp_path: Path) -> None:
    # A release of the fraud feature pipeline lands near the start of the decay, but no feature moved.
    d = _suite_case("model_degradation-fraud_adapts-s2146609088", tmp_path)
    assert d.top["cause"] == "model_degradation"
    assert d.top["events"] == []


def test_a_subtly_recomputed_feature_is_skew_when_the_decisions_lag_the_scores(tmp_path: Path) -> None:
    # A 7-day average served for a 30-day one: the feature and the scores move at 15:30, the rate of
    # flagged requests two hours later. The scores' change point ties the feature to the effect.
    d = _suite_case("training_serving_skew-window-s1497145859", tmp_path)
    assert d.top["cause"] == "training_serving_skew", [h["cause"] for h in d.out["hypotheses"]]
    assert d.top["features"][0] == "feature.amount_to_avg_ratio"
    _onset_near_truth(d)
