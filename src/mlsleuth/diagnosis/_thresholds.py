"""Every number the diagnosis decides with, in one documented table.

A threshold has a unit and a reason. Where its meaning is time it is given in hours, so that it means
the same at any window size, and converted to windows where it is used (:meth:`Thresholds.windows`).
The table a diagnosis applied is echoed in its JSON (``thresholds``); a model config overrides any of
them in a ``[thresholds]`` table::

    [thresholds]
    min_change_z = 8.0
    near_hours = 3

The defaults were set on the project's generated worlds and checked on held-out seeds and worlds; an
override is for a model whose traffic is unlike them (docs/diagnosis.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mlsleuth.errors import ConfigError
from mlsleuth.schema import ModelConfig

__all__ = ["DEFAULT_THRESHOLDS", "ThresholdInfo", "Thresholds", "thresholds_for"]


def _t(value: float, unit: str, why: str) -> Any:
    return field(default=value, metadata={"unit": unit, "why": why})


@dataclass(frozen=True)
class ThresholdInfo:
    """One row of the thresholds table: its name, value, unit and why it is what it is."""

    name: str
    value: float
    unit: str
    why: str


@dataclass(frozen=True)
class Thresholds:
    """The numbers the diagnosis decides with (defaults documented per field; see :meth:`table`).

    Examples
    --------
    >>> th = Thresholds.from_mapping({"min_change_z": 8})
    >>> th.min_change_z, Thresholds().min_change_z
    (8.0, 6.0)
    >>> Thresholds().windows(6, 3600, at_least=2)
    6
    """

    # --- minimum samples: below these a signal is not computed, whatever its size -----------------------------
    min_windows: float = _t(3, "windows", "windows on each side of a change: one or two odd windows at an edge "
                                          "are not a change")
    min_side_rows: float = _t(200, "rows", "rows holding a column on each side of its change: not a burst at an "
                                           "edge of the log")
    min_rate_rows: float = _t(200, "requests", "rows in a rate's denominator on each side of its change (labelled "
                                               "requests for quality metrics), with min_excess events more or fewer")
    min_excess: float = _t(10, "events", "events more (or fewer) than before a rate's change needs with "
                                         "min_rate_rows rows")
    min_few_rows: float = _t(50, "requests", "with fewer than min_rate_rows rows, a rate's change needs this many "
                                             "and min_few_excess events: one error among seven requests at night is "
                                             "not an outage")
    min_few_excess: float = _t(25, "events", "events more (or fewer) a rate's change needs with fewer than "
                                             "min_rate_rows rows")
    min_skew_rows: float = _t(500, "rows", "serving rows compared with the reference for a training-serving skew: "
                                           "a KS distance of 0.05 is noise below about a thousand")
    min_labelled_side: float = _t(200, "labelled requests", "labelled requests on each side of a change to judge a "
                                                            "regressor's or classifier's error, or weigh its outcomes")
    min_labelled_after: float = _t(300, "labelled requests", "mature labelled requests after a change before the "
                                                             "labelled error may clear it")
    min_outcome_events: float = _t(20, "events", "positives (observed and expected by the scores) before a change, and "
                                                 "per class, to weigh whether labelled outcomes followed the outputs")
    version_min_rows: float = _t(100, "rows", "rows each model version serves on the same hours before two versions "
                                              "are compared")
    # --- change and noise ----------------------------------------------------------------------------------------
    min_change_z: float = _t(6.0, "standard errors", "a column changed when its split stands this far above noise "
                                                     "(times its z_scale when a daily cycle could not be removed)")
    skew_noise: float = _t(2.5, "standard errors", "a skew must exceed skew_noise * sqrt(1/n + 1/m) for n serving "
                                                   "and m reference rows: passed by chance with probability "
                                                   "2 exp(-2 skew_noise^2), about 4e-6 per column")
    near_hours: float = _t(6, "hours", "two changes this close in time are one change (a column and the outputs "
                                       "it moved; a version and the metrics it moved)")
    together_hours: float = _t(3, "hours", "inputs that changed this close in time moved together (several at once "
                                           "is a population shift, one alone a source)")
    shift_min_inputs: float = _t(3, "inputs", "inputs moving together that make a population shift rather than one "
                                              "source's change")
    broken_domain_share: float = _t(0.05, "fraction of rows", "an input with this much more out-of-range or unseen "
                                                              "values changed its source, not its population")
    mix_change_z: float = _t(8.0, "standard errors", "a segment's share of traffic changed (a shift in who arrives) "
                                                     "when its split stands this far above noise ...")
    mix_change_share: float = _t(0.08, "fraction of traffic", "... and it moved by at least this much")
    subtle_z: float = _t(8.0, "standard errors", "a feature that did not change by the usual bar is still the culprit "
                                                 "when it moved this far above noise exactly when the outputs did ...")
    subtle_shift: float = _t(0.03, "KS distance", "... and has moved by at least this KS distance")
    score_shift: float = _t(0.08, "KS distance (or share of scores)", "the score distribution moved materially (a "
                                                                       "symptom, and two versions scoring apart)")
    skew_defect_shift: float = _t(0.25, "KS distance", "a feature computed differently from unchanged inputs by this "
                                                       "much is a defect even when the outputs did not move")
    min_skew: float = _t(0.05, "KS distance", "the least distance from the reference that counts as a skew (of a "
                                              "column, or of one segment's slice)")
    skew_outlier_ratio: float = _t(5.0, "ratio", "a feature unlike the reference stands out when this many times "
                                                 "further from it than the typical feature (a reference from another "
                                                 "period moves them all)")
    skew_rate_change: float = _t(0.1, "fraction of rows", "a null or zero rate this far from the reference's is a skew")
    parent_skew: float = _t(0.15, "KS distance", "an input this far from the reference moved with its skewed "
                                                 "feature: a population shift, not a skew")
    segment_skew_ratio: float = _t(3.0, "ratio", "a skew is confined to one segment when its slice is this many times "
                                                 "further from the reference than the next")
    clock_wander: float = _t(0.15, "distance", "a column whose windows stray this far from its pooled distribution "
                                               "follows the clock (in a log too short to take the daily cycle out)")
    gradual_ramp_hours: float = _t(24, "hours", "labelled quality whose fitted fall spans this long fell gradually")
    pair_strength: float = _t(0.7, "fraction of the bar", "two quality metrics falling together each need this "
                                                          "share of a slice's strength bar")
    version_contrast_z: float = _t(4.0, "standard errors", "two versions decide or score differently on the same "
                                                           "hours when they differ by this much beyond noise ...")
    version_rel_change: float = _t(0.25, "relative change", "... and their positive rates by this share ...")
    version_abs_change: float = _t(0.02, "rate (absolute)", "... or their positive rates by this much (absolute)")
    slice_min_z: float = _t(8.0, "standard errors", "a change found in one slice must stand this far above noise (a "
                                                    "slice is one of many tested)")
    symptom_windows: float = _t(3, "windows", "a hypothesis this close to the change of the symptom the user named "
                                              "is raised")
    trend_min_windows: float = _t(6, "windows", "windows after a symptom's change needed to say whether it is "
                                               "getting worse or recovering ...")
    trend_share: float = _t(0.1, "fraction of the change", "... which it is when the second half of them moved "
                                                           "this share of the change beyond the first")
    merge_windows: float = _t(3, "windows", "two candidates of the same cause and scope this close are one")
    # --- what a regressor's or classifier's labels must show -------------------------------------------------
    mae_rel_change: float = _t(0.15, "fraction of MAE", "a regressor's mean absolute error must move by this share "
                                                        "of its level (a daily cycle moves it by a few percent)")
    bias_shift_of_mae: float = _t(0.25, "fraction of MAE", "a regressor's bias must move by this share of its MAE "
                                                           "before the change (what users see as 'always late')")
    multiclass_accuracy_drop: float = _t(0.03, "accuracy (absolute)", "a multi-class model's accuracy must fall by "
                                                                      "this much")
    class_recall_drop: float = _t(0.05, "recall (absolute)", "a multi-class model's recall of one class must fall "
                                                             "by this much")
    label_maturity: float = _t(0.5, "fraction of typical coverage", "a window's labels count once this share of "
                                                                    "its typical label coverage has arrived")
    unfit_z: float = _t(2.5, "z", "labelled outcomes weighed against 'followed the outputs' and 'stayed': no "
                                  "decision when both explanations are this far off")
    apart_z: float = _t(2.0, "z", "... nor when the two explanations are closer than this")
    outcome_ratio: float = _t(1 / 3, "ratio", "a regressor's labels decide between 'followed' and 'stayed' only "
                                              "when one explanation is this many times closer than the other")
    outcome_moved_se: float = _t(3.0, "standard errors", "a regressor's mean prediction must have moved this far "
                                                         "beyond the labels' noise before its labels are weighed")
    # --- serving ---------------------------------------------------------------------------------------------
    fallback_error_share: float = _t(0.5, "fraction of errored rows", "a score is a fallback when this share of "
                                                                      "the scored rows that record an error carry it")
    fallback_min_rows: float = _t(20, "rows", "... and at least this many rows do")
    canary_share: float = _t(0.85, "fraction of traffic", "a new version serving less than this share at the end "
                                                          "of the log (or of its segment) is a partial rollout")
    model_match_share: float = _t(0.05, "fraction of rows", "the model reproduces the logged scores when fewer "
                                                            "than this share of re-scored rows differ (--model)")
    model_mismatch_share: float = _t(0.3, "fraction of rows", "the serving model changed when it reproduced the "
                                                              "scores before the onset and more than this share "
                                                              "differ after it")
    slow_latency_ratio: float = _t(1.5, "ratio", "a request is slow (the latency signal) past this many times the "
                                                 "level before a rise ...")
    fast_latency_ratio: float = _t(0.67, "ratio", "... and fast under this share of it after a fall")
    # --- events ----------------------------------------------------------------------------------------------
    event_min_score: float = _t(0.3, "score (0-1)", "a change event is named only when its match with the "
                                                    "hypothesis (time, target, kind) scores at least this")
    second_event_ratio: float = _t(0.8, "fraction of the best score", "a second event is named only when it "
                                                                    "scores this close to the best and touches the "
                                                                    "culprits")
    event_lead_hours: float = _t(48, "hours", "a change event logged longer than this before the onset is not "
                                              "its cause (a two-day-old change would have shown sooner)")
    event_lag_hours: float = _t(1, "hours", "a change event logged up to this long after a sudden onset may still "
                                            "be its cause: clocks and change logs lag")
    event_lag_gradual_hours: float = _t(18, "hours", "... and after a gradual change's onset, which is an estimate "
                                                     "good to several hours either way")
    event_decay_hours: float = _t(6, "hours", "an event's time match falls by e per this many hours before a sudden "
                                              "onset")
    event_decay_gradual_hours: float = _t(18, "hours", "... and per this many hours either side of a gradual onset")
    event_log_start_hours: float = _t(1, "hours", "with no onset, an event up to this long after the log's first "
                                                  "request may have put the broken state in place")
    routine_event_count: float = _t(3, "events", "an event whose kind, target and text recur this often on two or "
                                                 "more days is routine (a nightly job) and ranks lower")
    # --- segments --------------------------------------------------------------------------------------------
    segment_min_rows: float = _t(5, "rows", "rows of a segment value on each side of the onset before its change "
                                            "is weighed")
    segment_min_z: float = _t(4, "standard errors", "a segment value's change in a rate must stand this far above "
                                                    "its binomial noise")
    segment_rest_share: float = _t(0.25, "fraction of the segment's change", "a segment is affected when the rest "
                                                                             "of the traffic changed by at most this "
                                                                             "share of its change")
    segment_second_share: float = _t(0.5, "fraction of the first's change", "a second value of the same column is "
                                                                            "affected too when it changed this much")
    segment_second_rest_share: float = _t(0.1, "fraction of the first's change", "... and the rest of the traffic, "
                                                                                 "which holds it, changed by more "
                                                                                 "than this share")
    segment_refine_rest_share: float = _t(0.2, "fraction of the change", "a second attribute narrows a segment when "
                                                                         "the rest of the segment changed at most "
                                                                         "this share as much")
    # --- log shape ---------------------------------------------------------------------------------------------
    outlier_margin_hours: float = _t(24, "hours", "timestamps further than the log's 1-99 % span (and at least "
                                                  "this) outside it are outliers, reported and left out")

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), f.metadata["unit"], None))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, path: str | Path | None = None) -> Thresholds:
        """The defaults with ``data``'s values in place of theirs (a config's ``[thresholds]`` table).

        Raises
        ------
        ConfigError
            Naming the key, when it is not a threshold or its value is not a finite number >= 0.
        """
        if not data:
            return DEFAULT_THRESHOLDS
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown thresholds {unknown}; expected some of {sorted(known)}", path=path,
                              column="thresholds")
        units = {f.name: f.metadata["unit"] for f in fields(cls)}
        return replace(DEFAULT_THRESHOLDS, **{k: _checked(k, v, units[k], path) for k, v in data.items()})

    @classmethod
    def table(cls) -> tuple[ThresholdInfo, ...]:
        """Every threshold's default, unit and reason, in the order of the table."""
        return tuple(ThresholdInfo(f.name, float(f.default), f.metadata["unit"], f.metadata["why"])  # type: ignore[arg-type]
                     for f in fields(cls))

    def to_dict(self) -> dict[str, float]:
        """The values applied, by name (JSON-ready)."""
        return {f.name: round(getattr(self, f.name), 6) for f in fields(self)}

    def windows(self, hours: float, window_seconds: int, *, at_least: int = 1) -> int:
        """``hours`` as a number of windows of ``window_seconds`` (at least ``at_least``)."""
        return max(at_least, int(hours * 3600 / window_seconds))

    @property
    def min_log_rows(self) -> int:
        """Rows in the whole log below which no signal can be computed (twice ``min_few_rows``)."""
        return int(2 * self.min_few_rows)


def _checked(name: str, value: object, unit: str, path: str | Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"expected a finite number >= 0 ({unit}), got {value!r}", path=path,
                          column=f"thresholds.{name}")
    return float(value)


DEFAULT_THRESHOLDS = Thresholds()


@functools.lru_cache(maxsize=64)
def _cached(items: tuple[tuple[str, float], ...]) -> Thresholds:
    return Thresholds.from_mapping(dict(items))


def thresholds_for(config: ModelConfig) -> Thresholds:
    """The thresholds a model config asks for: the defaults with its ``[thresholds]`` in place of theirs."""
    return _cached(tuple(sorted(config.thresholds.items())))
