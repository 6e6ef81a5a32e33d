"""The column layer: which cause a changed feature or input points to, decided once for all its signatures.

A feature that changed is one of four causes depending on its inputs: with inputs that moved with it,
an upstream change or a population shift (:func:`looks_like_population_shift`); degenerate values
(nulls, zeros, a frozen copy) from unchanged inputs, a silent pipeline failure; a new distribution from
unchanged inputs, a training-serving skew. The same holds for a feature unlike the training reference
from the start. One pure function classifies every changed column, in the order of their strength, and
each of those causes' signatures takes the candidates classified as its own; the score weights of this
layer live here because the four share them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlsleuth.diagnosis._analysis import DOMAIN_QUALITIES, ColumnChange, Triage
from mlsleuth.diagnosis._metrics import near
from mlsleuth.diagnosis._result import Cause, fmt_num
from mlsleuth.diagnosis._sentences import describe_column, metric_sentence
from mlsleuth.diagnosis.signatures._base import Candidate, Context, terms
from mlsleuth.diagnosis.signatures._rowsignal import column_signal
from mlsleuth.schema import Role

__all__ = ["DEGENERATE", "classify_columns", "column_weight", "looks_like_population_shift"]

#: Values a feature pipeline writes when it fails without raising.
DEGENERATE = ("null", "zero", "constant", "stale", "decoupled")

# Score weights of the column layer (a candidate's score terms, by name).
#: The prior of a changed feature ("feature_changed") and of a changed input alone ("input_changed").
FEATURE_PRIOR = 0.35
INPUT_PRIOR = 0.3
#: Up to this much for the size of the change ("change_size"), reached at a magnitude of CHANGE_FULL.
CHANGE_WEIGHT = 0.3
CHANGE_FULL = 0.3
#: When the outputs or quality moved at the same time ("timed_with_effect").
EFFECT_WEIGHT = 0.2
#: Up to this much for the feature's importance to the model ("importance"), reached at IMPORTANCE_FULL.
IMPORTANCE_WEIGHT = 0.15
IMPORTANCE_FULL = 0.3
#: The importance assumed of a feature the model gives none for.
DEFAULT_IMPORTANCE = 0.3
#: A feature unlike the reference throughout the log: prior ("differs_from_reference") and up to SKEW_WEIGHT
#: for its distance ("skew_size"), reached at a KS distance of SKEW_FULL.
SKEW_PRIOR = 0.45
SKEW_WEIGHT = 0.3
SKEW_FULL = 0.2


def column_weight(tr: Triage, c: ColumnChange) -> float:
    """How strongly a changed feature is ranked: its change, weighed by its importance to the model."""
    w = tr.importance.get(c.column)
    return c.magnitude * (0.25 + (w if w is not None else DEFAULT_IMPORTANCE))


def related(tr: Triage, feature: str, inp: str) -> bool:
    """Whether ``inp`` feeds ``feature``: by lineage when given, else by name."""
    lin = tr.case.lineage
    if lin.edges:
        return inp in lin.ancestors(feature)
    a = feature.removeprefix("feature.").lower()
    b = inp.removeprefix("input.").lower()
    return b in a or a in b


def has_inputs(tr: Triage, feature: str) -> bool:
    """Whether the log holds any raw input of ``feature``."""
    lin = tr.case.lineage
    if lin.edges:
        return any(a in tr.columns for a in lin.ancestors(feature))
    return any(c.role is Role.INPUT for c in tr.columns.values())


def looks_like_population_shift(tr: Triage, inputs: Sequence[ColumnChange], feature: ColumnChange | None) -> bool:
    """A population shift moves many inputs, gradually or through the traffic mix; a source change moves one."""
    th = tr.th
    if any(ic.gradual for ic in inputs) and (feature is None or feature.gradual):
        return True
    if any(ic.oor_after - ic.oor_before > th.broken_domain_share or ic.unseen_after > th.broken_domain_share
           or ic.quality for ic in inputs):
        return False
    idx = inputs[0].onset_index
    tol = th.windows(th.together_hours, tr.window, at_least=2)
    moved = [c for c in tr.columns.values() if c.role is Role.INPUT and c.changed and near(c.onset_index, idx, tol)]
    mix = any(_segment_mix_changed(tr, name, idx, tol) for name in tr.series if name.startswith("seg:"))
    return len(moved) >= th.shift_min_inputs or mix


def _segment_mix_changed(tr: Triage, key: str, idx: int | None, tol: int) -> bool:
    from mlsleuth.diagnosis._signals import proportion_split

    x = tr.series[key]
    if x.ndim != 2 or x.shape[1] < 2:
        return False
    sp = proportion_split(x, tr.rows)
    return bool(sp is not None and sp.z >= tr.th.mix_change_z and abs(sp.effect) >= tr.th.mix_change_share
                and near(sp.index, idx, tol))


@dataclass(frozen=True)
class _FeatureCall:
    """The cause a changed feature points to, and what decided it."""

    cause: Cause
    inputs: tuple[ColumnChange, ...]  # its inputs that moved with it
    note: str | None  # a sentence on its inputs, when they decided


def _classify_feature(tr: Triage, ctx: Context, fc: ColumnChange) -> _FeatureCall:
    rel = [ic for ic in ctx.inputs if near(ic.onset_index, fc.onset_index, ctx.tol) and related(tr, fc.column,
                                                                                                 ic.column)]
    if not rel and not tr.case.lineage.edges:
        rel = [ic for ic in ctx.inputs if near(ic.onset_index, fc.onset_index, 1)]
    if rel:
        cause = Cause.DISTRIBUTION_SHIFT if looks_like_population_shift(tr, rel, fc) else Cause.UPSTREAM_DATA_CHANGE
        if fc.quality in DEGENERATE and not any(ic.quality for ic in rel):
            cause = Cause.SILENT_PIPELINE_FAILURE
        return _FeatureCall(cause, tuple(rel), None)
    if fc.quality in DEGENERATE:
        return _FeatureCall(Cause.SILENT_PIPELINE_FAILURE, (), "its raw inputs did not change" if has_inputs(
            tr, fc.column) else "the feature degenerated (a pipeline writing defaults, not a change in the data)")
    if has_inputs(tr, fc.column):
        return _FeatureCall(Cause.TRAINING_SERVING_SKEW, (),
                            "its raw inputs did not change: the feature is now computed differently")
    return _FeatureCall(Cause.UPSTREAM_DATA_CHANGE, (), None)


def _aligned(ctx: Context, index: int | None) -> bool:
    idx = ctx.effect_idx
    return not idx or any(near(index, i, ctx.tol) for i in idx)


def _feature_candidate(tr: Triage, ctx: Context, rank: int, fc: ColumnChange) -> Candidate:
    call = _classify_feature(tr, ctx, fc)
    aligned = _aligned(ctx, fc.onset_index)
    timed = ctx.has_effect and aligned
    w = tr.importance.get(fc.column, DEFAULT_IMPORTANCE)
    ev = [describe_column(fc, tr.time_of(fc.onset_index))]
    ev += [describe_column(ic, tr.time_of(ic.onset_index)) for ic in call.inputs[:2]]
    ev += [call.note] if call.note else []
    if timed:
        ev += [metric_sentence(m, tr.time_of(m.split.index)) for m in (ctx.outputs + ctx.quality)[:2]]
    # An input that broke its domain (values never seen) did so at a moment, however noisily the
    # feature computed from it follows: time the change by the input.
    broke = next((ic for ic in call.inputs if ic.quality in DOMAIN_QUALITIES and not ic.gradual), None)
    return Candidate(
        call.cause, broke.onset_index if broke else fc.onset_index,
        terms(("feature_changed", FEATURE_PRIOR), ("change_size", CHANGE_WEIGHT * min(fc.magnitude / CHANGE_FULL, 1.0)),
              ("timed_with_effect", EFFECT_WEIGHT if timed else 0.0),
              ("importance", IMPORTANCE_WEIGHT * min(w / IMPORTANCE_FULL, 1.0))),
        features=(fc.column,), inputs=tuple(ic.column for ic in call.inputs), evidence=tuple(ev),
        signal=column_signal(tr, fc), culprit=broke.column if broke else fc.column,
        # A subtle feature is timed by the outputs it moved, not its own noisy ramp.
        gradual=fc.gradual and broke is None and (fc not in ctx.subtle or all(
            m.gradual for m in ctx.outputs if near(fc.onset_index, m.split.index, 1))),
        signal_up=fc.split is None or fc.split.effect >= 0,
        explains=timed or fc.quality in DEGENERATE or any(ic.quality in DOMAIN_QUALITIES for ic in call.inputs)
        # computed differently from unchanged inputs, and by a lot: a defect
        or (call.cause is Cause.TRAINING_SERVING_SKEW
            and (fc.shift >= tr.th.skew_defect_shift or fc.quality == "out_of_range")),
        order=(2, rank))


def _input_candidate(tr: Triage, ctx: Context, rank: int, ic: ColumnChange) -> Candidate:
    timed = ctx.has_effect and _aligned(ctx, ic.onset_index)
    cause = Cause.DISTRIBUTION_SHIFT if looks_like_population_shift(tr, [ic], None) else Cause.UPSTREAM_DATA_CHANGE
    return Candidate(
        cause, ic.onset_index,
        terms(("input_changed", INPUT_PRIOR), ("change_size", CHANGE_WEIGHT * min(ic.magnitude / CHANGE_FULL, 1.0)),
              ("timed_with_effect", EFFECT_WEIGHT if timed else 0.0)),
        features=tuple(fc.column for fc in ctx.features if related(tr, fc.column, ic.column)), inputs=(ic.column,),
        evidence=(describe_column(ic, tr.time_of(ic.onset_index)),), signal=column_signal(tr, ic),
        culprit=ic.column, gradual=ic.gradual, signal_up=ic.split is None or ic.split.effect >= 0,
        explains=timed or ic.quality is not None, order=(3, rank))


def _skewed_features(tr: Triage, ctx: Context) -> list[ColumnChange]:
    """Features unlike the reference from the start while not changing inside the log.

    (Not within a slice: the reference is the whole population, a slice differs from it by nature.)
    A feature stands out when it is far from the reference while the others are not: the bar is
    ``skew_outlier_ratio`` times the typical feature's distance (a reference from another period moves them all).
    """
    th = tr.th
    ref_skews = [c.skew for c in tr.columns.values() if c.role is Role.FEATURE and math.isfinite(c.skew)]
    bar = max(th.min_skew, th.skew_outlier_ratio * float(np.median(ref_skews))) if ref_skews else math.inf
    skewed = [c for c in tr.columns.values() if (not ctx.in_slice or tr.ref_scoped) and c.role is Role.FEATURE
              and math.isfinite(c.skew)
              and (c.skew >= max(bar, c.skew_noise) or abs(c.skew_null) >= th.skew_rate_change
                   or abs(c.skew_zero) >= th.skew_rate_change)
              and not c.changed
              # In a log shorter than two days, a column that follows the clock differs from a reference
              # of whole days by the hours the log happens to cover.
              and (tr.daily or c.wander < th.clock_wander)]
    skewed.sort(key=lambda c: -(c.skew * (0.25 + tr.importance.get(c.column, DEFAULT_IMPORTANCE))))
    return skewed[:2]


def _reference_candidate(tr: Triage, rank: int, sc: ColumnChange) -> Candidate:
    parents = [c for c in tr.columns.values() if c.role is Role.INPUT and related(tr, sc.column, c.column)]
    parent_skew = [p for p in parents if math.isfinite(p.skew) and p.skew >= tr.th.parent_skew]
    if parent_skew:
        cause = Cause.DISTRIBUTION_SHIFT
        ev = [f"{sc.column} differs from the reference throughout the log (KS {sc.skew:.2f}), "
              f"and so do its inputs {', '.join(p.column for p in parent_skew)}"]
    else:
        cause = Cause.TRAINING_SERVING_SKEW
        ev = [f"{sc.column} differs from the training reference from the first request of the log on "
              f"(KS {sc.skew:.2f}; mean {fmt_num(sc.mean_before)} in serving vs {fmt_num(sc.ref_mean)} "
              "in training)"]
        if parents:
            ev.append(f"its inputs {', '.join(p.column for p in parents)} match the reference: "
                      "the serving pipeline computes the feature differently")
    w = tr.importance.get(sc.column, DEFAULT_IMPORTANCE)
    return Candidate(cause, None, terms(("differs_from_reference", SKEW_PRIOR),
                                        ("skew_size", SKEW_WEIGHT * min(sc.skew / SKEW_FULL, 1.0)),
                                        ("importance", IMPORTANCE_WEIGHT * min(w / IMPORTANCE_FULL, 1.0))),
                     features=(sc.column,), inputs=tuple(p.column for p in parent_skew), evidence=tuple(ev),
                     culprit=sc.column, order=(4, rank))


def classify_columns(tr: Triage, ctx: Context) -> tuple[Candidate, ...]:
    """Every column-layer candidate of one scope, its cause decided: changed features, then inputs no
    feature claimed that moved something (or broke), then features unlike the reference throughout."""
    out = [_feature_candidate(tr, ctx, i, fc) for i, fc in enumerate(ctx.features[:4])]
    used = {col for c in out for col in c.inputs}
    for i, ic in enumerate(ctx.inputs[:3]):
        if ic.column in used or (not ctx.has_effect and ic.quality is None):
            continue  # claimed by a feature above, or input drift that moved nothing (a finding)
        out.append(_input_candidate(tr, ctx, i, ic))
    out += [_reference_candidate(tr, i, sc) for i, sc in enumerate(_skewed_features(tr, ctx))]
    return tuple(out)


def domain_broke(tr: Triage, c: Candidate, zmin: float) -> bool:
    """A culprit column holds new categories or values outside the training range, far beyond noise."""
    return any((cc := tr.columns.get(col)) is not None and cc.quality in DOMAIN_QUALITIES
               and cc.z >= max(zmin, tr.th.min_change_z) for col in c.inputs + c.features)
