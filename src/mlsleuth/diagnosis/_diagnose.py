"""From triage to ranked hypotheses: layer isolation and failure signatures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from mlsleuth.diagnosis._analysis import (
    BIAS_SHIFT_OF_MAE,
    DOMAIN_QUALITIES,
    HAS_ERROR,
    MAE_REL_CHANGE,
    MIN_LOG_ROWS,
    MIN_SIDE_ROWS,
    MIN_SKEW_ROWS,
    MULTICLASS_ACCURACY_DROP,
    ColumnChange,
    MetricChange,
    Triage,
    _literal,
    fallback_case,
    refine_onset,
    run_triage,
)
from mlsleuth.diagnosis._charts import incident_charts
from mlsleuth.diagnosis._data import CaseInput, ScoreFn, TableLike, load_case, ts_sql
from mlsleuth.diagnosis._locate import RankedEvent, affected_segments, rank_events, scope_sql
from mlsleuth.diagnosis._model import check_model
from mlsleuth.diagnosis._result import (
    Cause,
    Diagnosis,
    Example,
    Finding,
    Hypothesis,
    Layer,
    LayerStatus,
    Symptom,
    Verdict,
    fmt_num,
    iso,
)
from mlsleuth.diagnosis._runbooks import runbook_source, runbook_steps, runbook_text
from mlsleuth.diagnosis._thresholds import thresholds_for
from mlsleuth.monitors._windows import CategoricalRef, NumericRef, quote
from mlsleuth.schema import ChangeEvent, Lineage, ModelConfig, Role
from mlsleuth.schema._tables import at_least, at_most
from mlsleuth.store import Engine

__all__ = ["diagnose", "diagnose_case"]

_OUTPUT = ("positive_rate", "mean_prediction", "class_mix")
_QUALITY = ("false_positive_rate", "recall", "accuracy", "precision", "mae", "bias", "class_recall")
_SERVING = ("error_rate", "latency_p99_ms", "latency_mean_ms", "fallback_rate")
#: Values a feature pipeline writes when it fails without raising.
_DEGENERATE = ("null", "zero", "constant", "stale", "decoupled")
#: Quality metrics where a rise is worse.
_LOWER_IS_BETTER = ("false_positive_rate", "mae")
#: Quality metrics measured in the label's own unit (a regressor's error), not as rates.
_LEVEL_QUALITY = ("mae", "bias")


@dataclass
class _Candidate:
    cause: Cause
    score: float
    onset_index: int | None
    features: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    signal: str | None = None  # SQL for the per-row signal used to locate segments and the onset
    signal_up: bool = True  # whether the signal rises after the onset
    material: bool = False  # the model's outputs, quality or serving moved, or a defect is present
    tr: Triage | None = None  # the slice it was found in (None: all traffic)
    canary: str | None = None  # a new model version serving only part of the traffic
    explains: bool = True  # its timing matches a change in outputs or quality (or it is a defect)
    culprit: str | None = None
    gradual: bool = False
    onset: datetime | None = None
    decisions_only: bool = False  # a model version that decides differently on the same scores
    metrics: tuple[str, ...] = ()  # the metrics that time it, when no column does


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _when(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%a %Y-%m-%d %H:%M UTC")


def _output_metrics(tr: Triage) -> list[MetricChange]:
    out = [m for k, m in tr.metrics.items() if k in _OUTPUT and m.material]
    sc = tr.columns.get("score")
    if sc is not None and sc.changed and sc.shift >= 0.08 and sc.split is not None:
        out.append(MetricChange("score_distribution", sc.split, True, sc.gradual, "model"))
    return out


def _symptoms(tr: Triage) -> list[Symptom]:
    syms = []
    for m in sorted(tr.metrics.values(), key=lambda m: -m.strength):
        if not m.material or m.metric == "version_mix":
            continue
        syms.append(Symptom(m.metric, m.split.before, m.split.after, tr.time_of(m.split.index), m.gradual,
                            m.strength, m.unit, trend=_trend(tr, m)))
    sc = tr.columns.get("score")
    if sc is not None and sc.changed and sc.shift >= 0.08:
        syms.append(Symptom("score_median", sc.median_before, sc.median_after, tr.time_of(sc.onset_index),
                            sc.gradual, min(sc.z, 100.0)))
    return syms


def _trend(tr: Triage, m: MetricChange) -> str:
    v = tr.series.get(m.metric)
    if v is None:
        return "stable"
    v = np.asarray(v, dtype=float)
    if v.ndim != 1:
        return "stable"
    tail = v[m.split.index:]
    tail = tail[np.isfinite(tail)]
    if len(tail) < 6:
        return "stable"
    half = len(tail) // 2
    a, b = float(np.mean(tail[:half])), float(np.mean(tail[half:]))
    if abs(b - a) < 0.1 * abs(m.split.after - m.split.before):
        return "stable"
    # "Worse" is further from the pre-onset level, in the direction the change went.
    away = (b - a) * (m.split.after - m.split.before) > 0
    return "worsening" if away else "recovering"


def _column_signal(tr: Triage, cc: ColumnChange) -> str:
    q = quote(cc.column)
    ref = tr.refs.get(cc.column)
    if cc.quality == "decoupled":
        return cc.decoupled_sql
    if cc.quality == "null":
        return f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END"
    if cc.quality == "zero":
        return f"CASE WHEN CAST({q} AS DOUBLE) = 0 THEN 1.0 ELSE 0.0 END"
    if isinstance(ref, NumericRef) and cc.split is not None:
        if cc.split.dim < len(ref.edges):
            return f"CASE WHEN CAST({q} AS DOUBLE) <= {at_most(ref.edges[cc.split.dim])!r} THEN 1.0 ELSE 0.0 END"
        if cc.split.dim == len(ref.edges):
            return f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END"
        if cc.split.dim == len(ref.edges) + 1:
            return f"CASE WHEN CAST({q} AS DOUBLE) = 0 THEN 1.0 ELSE 0.0 END"
        return (f"CASE WHEN CAST({q} AS DOUBLE) < {at_least(ref.lo)!r} OR CAST({q} AS DOUBLE) > {at_most(ref.hi)!r} "
                "THEN 1.0 ELSE 0.0 END")
    if isinstance(ref, CategoricalRef) and cc.split is not None:
        if cc.split.dim < len(ref.categories):
            v = _literal(ref.categories[cc.split.dim])
            return f"CASE WHEN CAST({q} AS VARCHAR) = {v} THEN 1.0 ELSE 0.0 END"
        cats = ", ".join(_literal(c) for c in ref.categories) or "''"
        return f"CASE WHEN {q} IS NOT NULL AND CAST({q} AS VARCHAR) NOT IN ({cats}) THEN 1.0 ELSE 0.0 END"
    return f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END"


def _quality_timing(tr: Triage) -> tuple[bool, int] | None:
    """Whether labelled quality fell gradually, and from which window, pooled over its metrics.

    Each labelled metric alone is noisy, so the material ones are read together: gradual when
    those that found a ramp hold at least half their total strength, or when the median fitted
    ramp spans a day (a sparse metric's broken stick spreads over its noise, so a width of
    several hours alone does not say gradual). The median split is the window.
    """
    quality = [m for m in tr.metrics.values() if m.layer == "quality" and m.material and m.ramp is not None]
    if not quality:
        return None
    ramps = sum(m.strength for m in quality if m.gradual)
    width = float(np.median([m.ramp[1] - m.ramp[0] for m in quality if m.ramp is not None])) * tr.window
    return (ramps >= 0.5 * sum(m.strength for m in quality) or width >= 24 * 3600,
            int(np.median([m.split.index for m in quality])))


def _metric_signal(tr: Triage, metric: str) -> str | None:
    lit = _positive_sql(tr)
    if metric == "positive_rate":
        return f"CASE WHEN prediction = {lit} THEN 1.0 ELSE 0.0 END"
    if metric == "class_mix" and tr.classes:
        m = tr.metrics[metric]
        v = _literal(tr.classes[min(m.split.dim, len(tr.classes) - 1)])
        return f"CASE WHEN CAST(prediction AS VARCHAR) = {v} THEN 1.0 ELSE 0.0 END"
    if metric == "error_rate":
        return f"CASE WHEN {HAS_ERROR} THEN 1.0 ELSE 0.0 END"
    if metric.startswith("latency"):
        m = tr.metrics[metric]
        thr = m.split.before * 1.5 if m.split.after > m.split.before else m.split.before * 0.67
        return f"CASE WHEN latency_ms > {thr!r} THEN 1.0 ELSE 0.0 END"
    if metric == "fallback_rate" and tr.fallback is not None:
        return fallback_case(tr.fallback)
    # Quality signals are NULL outside the metric's denominator (unlabelled rows, the other class),
    # so that segments and onsets are judged on the rows the metric counts.
    if metric == "false_positive_rate":
        return (f"CASE WHEN label IS NOT NULL AND label <> {lit} THEN "
                f"(CASE WHEN prediction = {lit} THEN 1.0 ELSE 0.0 END) END")
    if metric == "recall":
        return f"CASE WHEN label = {lit} THEN (CASE WHEN prediction = {lit} THEN 0.0 ELSE 1.0 END) END"
    if metric == "precision":
        return (f"CASE WHEN label IS NOT NULL AND prediction = {lit} THEN "
                f"(CASE WHEN label = {lit} THEN 0.0 ELSE 1.0 END) END")
    if metric == "accuracy":
        return "CASE WHEN label IS NOT NULL THEN (CASE WHEN label <> prediction THEN 1.0 ELSE 0.0 END) END"
    if metric == "class_recall" and tr.classes:
        v = _literal(tr.classes[min(tr.metrics[metric].split.dim, len(tr.classes) - 1)])
        return (f"CASE WHEN CAST(label AS VARCHAR) = {v} THEN "
                f"(CASE WHEN CAST(prediction AS VARCHAR) = {v} THEN 0.0 ELSE 1.0 END) END")
    if metric in _LEVEL_QUALITY:
        err = "(CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE))"
        return f"abs({err})" if metric == "mae" else err
    if metric == "score_distribution":
        sc = tr.columns.get("score")
        if sc is not None:
            return _column_signal(tr, sc)
    return None


def _got_worse(m: MetricChange) -> bool:
    if m.metric == "bias":  # a bias is worse the further from zero, either way
        return abs(m.split.after) > abs(m.split.before)
    return (m.split.after > m.split.before) == (m.metric in _LOWER_IS_BETTER)


def _near(a: int | None, b: int | None, tol: int) -> bool:
    return a is not None and b is not None and abs(a - b) <= tol


def _describe_column(tr: Triage, cc: ColumnChange, at: datetime | None) -> str:
    when = f" at {_when(at)}" if at else ""
    if cc.quality in ("null", "zero"):
        b, a = (cc.null_before, cc.null_after) if cc.quality == "null" else (cc.zero_before, cc.zero_after)
        return f"{cc.column} {cc.quality} rate rose from {_pct(b)} to {_pct(a)}{when}"
    if cc.quality == "decoupled":
        return (f"{cc.column} no longer follows {cc.parent}{when}: {_pct(cc.mismatch_after)} of its values differ "
                f"from the one training gives their {cc.parent} (was {_pct(cc.mismatch_before)}), and "
                f"{cc.parent} leaves {_pct(cc.unexplained_after)} of its variance unexplained (none in "
                "training): stale or mis-joined values")
    if cc.quality in ("constant", "stale"):
        return (f"{cc.column} stopped varying{when}: distinct values per window fell from "
                f"{_pct(cc.distinct_before)} to {_pct(cc.distinct_after)} of rows ({cc.quality} values)")
    if cc.numeric and math.isfinite(cc.median_before) and math.isfinite(cc.median_after) and cc.median_before \
            and cc.median_after / cc.median_before > 0 and abs(cc.median_after / cc.median_before - 1) < 10:
        ch = cc.median_after / cc.median_before - 1
        verb = "rose" if ch > 0 else "fell"
        extra = ""
        if math.isfinite(cc.mean_before) and cc.mean_before:
            extra = f"; mean {fmt_num(cc.mean_before)} -> {fmt_num(cc.mean_after)}"
        oor = f"; {_pct(cc.oor_after)} of values now outside the training range" if cc.oor_after > 0.01 else ""
        return (f"{cc.column} median {verb} {abs(ch) * 100:.0f} % ({fmt_num(cc.median_before)} -> "
                f"{fmt_num(cc.median_after)}){when}{extra}{oor}; KS distance before/after {cc.shift:.2f}")
    if cc.numeric and math.isfinite(cc.median_before) and math.isfinite(cc.median_after):
        return (f"{cc.column} median moved from {fmt_num(cc.median_before)} to {fmt_num(cc.median_after)}{when}; "
                f"mean {fmt_num(cc.mean_before)} -> {fmt_num(cc.mean_after)}; KS distance before/after {cc.shift:.2f}")
    if not cc.numeric:
        unseen = f"; {_pct(cc.unseen_after)} unseen values" if cc.unseen_after > 0.01 else ""
        return f"{cc.column} category mix changed{when}: total variation {cc.shift:.2f}{unseen}"
    return f"{cc.column} distribution changed{when}: KS distance before/after {cc.shift:.2f}"


def _metric_sentence(m: MetricChange, at: datetime | None) -> str:
    b, a = m.split.before, m.split.after
    if m.metric == "score_distribution":
        return (f"the score distribution moved at {_when(at)} "
                f"(share at or below a training decile {_pct(b)} -> {_pct(a)})")
    if m.unit == "rate" or (m.metric in _QUALITY and m.metric not in _LEVEL_QUALITY) or m.metric == "positive_rate":
        ratio = f" ({a / b:.1f}x)" if b > 0 and a / b >= 1.5 else ""
        name = f"recall of class {m.subject}" if m.metric == "class_recall" and m.subject else m.metric
        return f"{name} went from {_pct(b)} to {_pct(a)}{ratio} at {_when(at)}" + (
            " (gradually)" if m.gradual else "")
    return f"{m.metric} went from {fmt_num(b)} to {fmt_num(a)}{(' ' + m.unit) if m.unit else ''} at {_when(at)}" + (
        " (gradually)" if m.gradual else "")


def _related(tr: Triage, feature: str, inp: str) -> bool:
    lin = tr.case.lineage
    if lin.edges:
        return inp in lin.ancestors(feature)
    a = feature.removeprefix("feature.").lower()
    b = inp.removeprefix("input.").lower()
    return b in a or a in b


def _candidates(tr: Triage, *, in_slice: bool = False) -> tuple[list[_Candidate], list[Finding]]:
    cands: list[_Candidate] = []
    findings: list[Finding] = []
    outputs = _output_metrics(tr)
    quality = [tr.metrics[k] for k in _QUALITY if k in tr.metrics and tr.metrics[k].material]
    serving = [tr.metrics[k] for k in _SERVING if k in tr.metrics and tr.metrics[k].material]
    effect_idx = [m.split.index for m in outputs + quality]
    has_effect = bool(outputs or quality)
    imp = tr.importance
    changed = [c for c in tr.columns.values() if c.changed and c.column != "score"]
    feats = [c for c in changed if c.role is Role.FEATURE]
    inps = [c for c in changed if c.role is Role.INPUT]
    tol = max(2, int(6 * 3600 / tr.window))
    subtle: list[ColumnChange] = []
    if outputs and not any(_near(c.onset_index, m.split.index, tol) for c in changed for m in outputs):
        # The outputs moved and no changed column did so with them: a feature that moved little but
        # far beyond noise at that very window is what the model reacted to (a subtle recomputation).
        # The scores' own change point marks that window too: a rate of decisions lags a few windows.
        moved: list[int | None] = [m.split.index for m in outputs]
        if (sc := tr.columns.get("score")) is not None and sc.split is not None and sc.z >= 8 * sc.z_scale:
            moved.append(sc.onset_index)
        subtle = [c for c in tr.columns.values() if c.role is Role.FEATURE and not c.changed and c.split is not None
                  and min(c.rows_before, c.rows_after) >= MIN_SIDE_ROWS and c.z >= 8 * c.z_scale and c.shift >= 0.03
                  and any(_near(c.onset_index, i, 1) for i in moved)]
        subtle = sorted(subtle, key=lambda c: -c.z)[:1]
        feats += subtle

    def weight(c: ColumnChange) -> float:
        w = imp.get(c.column)
        return c.magnitude * (0.25 + (w if w is not None else 0.3))

    feats.sort(key=lambda c: -weight(c))
    inps.sort(key=lambda c: -c.magnitude)

    # Serving layer.
    if serving:
        top = max(serving, key=lambda m: m.strength)
        ev = [_metric_sentence(m, tr.time_of(m.split.index)) for m in serving]
        # A p99 jumps as soon as a sliver of requests is hit: when error or fallback rates moved, they
        # and the mean latency say whether the fault spread; a majority of the metrics decides.
        rates = any(m.metric in ("error_rate", "fallback_rate") for m in serving)
        linear = [m for m in serving if not (rates and m.metric == "latency_p99_ms")]
        gradual = 2 * sum(m.gradual for m in linear) > len(linear)
        cands.append(_Candidate(Cause.SERVING_INFRASTRUCTURE, 0.75 + 0.2 * min(top.strength / 30, 1.0),
                                top.split.index, evidence=ev, signal=_metric_signal(tr, top.metric),
                                gradual=gradual, metrics=tuple(m.metric for m in linear)))

    # Model layer: a new version took traffic; does it behave differently from the old one on the same hours?
    vm = tr.metrics.get("version_mix")
    if vm is not None and vm.material:
        sh = tr.version_shares
        before = sh[: vm.split.index].sum(0) / max(tr.rows[: vm.split.index].sum(), 1)
        after = sh[vm.split.index:].sum(0) / max(tr.rows[vm.split.index:].sum(), 1)
        new = tr.versions[int(np.argmax(after - before))]
        old = tr.versions[int(np.argmax(before))] if before.sum() > 0 else None
        contrast = _version_contrast(tr, new, old, vm.split.index)
        threshold = _threshold_change(tr, new, old)
        feat_quiet = not any(_near(c.onset_index, vm.split.index, tol) for c in feats + inps)
        aligned = any(_near(vm.split.index, i, tol) for i in effect_idx)
        differs = (contrast is not None and contrast.material) or threshold is not None
        # The contrast compares versions on the same traffic, so a feature moving at the same time
        # cannot explain a difference it shows.
        s = 0.5 + (0.3 if (has_effect and aligned) or differs else 0.0) + (0.1 if feat_quiet else
                                                                          0.0 if differs else -0.2)
        ev = [f"model_version {new} went from {_pct(float(before[tr.versions.index(new)]))} to "
              f"{_pct(float(after[tr.versions.index(new)]))} of traffic at {_when(tr.time_of(vm.split.index))}"]
        if contrast is not None:
            ev.append(contrast.text)
        if threshold is not None:
            ev.append(threshold)
        ev += [_metric_sentence(m, tr.time_of(m.split.index)) for m in outputs + quality if aligned][:2]
        if feat_quiet:
            ev.append("no feature or input changed at the same time")
        # A rollout still ramping up averages a low share after the onset: judge it by where it ended.
        tail = max(vm.split.index, len(tr.rows) - max(1, (len(tr.rows) - vm.split.index) // 4))
        share_new = float(sh[tail:, tr.versions.index(new)].sum() / max(tr.rows[tail:].sum(), 1))
        canary = new if share_new < 0.85 else None
        if canary:
            ev.append(f"{new} serves {_pct(share_new)} of traffic at the end of the log: a partial rollout (canary)")
        cands.append(_Candidate(Cause.MODEL_CHANGE, s, vm.split.index, evidence=ev,
                                signal=f"CASE WHEN model_version = {_literal(new)} THEN 1.0 ELSE 0.0 END",
                                canary=canary,
                                explains=(has_effect and aligned) or differs, gradual=vm.gradual,
                                decisions_only=(contrast.decisions_only if contrast is not None
                                                else threshold is not None)))

    # Feature and input layers: columns that changed inside the log.
    used_inputs: set[str] = set()
    for fc in feats[:4]:
        at = tr.time_of(fc.onset_index)
        rel_inputs = [ic for ic in inps if _near(ic.onset_index, fc.onset_index, tol) and _related(tr, fc.column,
                                                                                                   ic.column)]
        if not rel_inputs and not tr.case.lineage.edges:
            rel_inputs = [ic for ic in inps if _near(ic.onset_index, fc.onset_index, 1)]
        aligned = not effect_idx or any(_near(fc.onset_index, i, tol) for i in effect_idx)
        w = imp.get(fc.column, 0.3)
        base = 0.35 + 0.3 * min(fc.magnitude / 0.3, 1.0) + (0.2 if has_effect and aligned else 0.0) + 0.15 * min(
            w / 0.3, 1.0)
        ev = [_describe_column(tr, fc, at)]
        if rel_inputs:
            used_inputs.update(ic.column for ic in rel_inputs)
            ev += [_describe_column(tr, ic, tr.time_of(ic.onset_index)) for ic in rel_inputs[:2]]
            cause = Cause.DISTRIBUTION_SHIFT if _looks_like_population_shift(tr, rel_inputs, fc) \
                else Cause.UPSTREAM_DATA_CHANGE
            if fc.quality in _DEGENERATE and not any(ic.quality for ic in rel_inputs):
                cause = Cause.SILENT_PIPELINE_FAILURE
        elif fc.quality in _DEGENERATE:
            cause = Cause.SILENT_PIPELINE_FAILURE
            ev.append("its raw inputs did not change" if _has_inputs(tr, fc.column) else
                      "the feature degenerated (a pipeline writing defaults, not a change in the data)")
        else:
            has_in = _has_inputs(tr, fc.column)
            cause = Cause.TRAINING_SERVING_SKEW if has_in else Cause.UPSTREAM_DATA_CHANGE
            if has_in:
                ev.append("its raw inputs did not change: the feature is now computed differently")
        if has_effect and aligned:
            ev += [_metric_sentence(m, tr.time_of(m.split.index)) for m in (outputs + quality)[:2]]
        # An input that broke its domain (values never seen) did so at a moment, however noisily the
        # feature computed from it follows: time the change by the input.
        broke = next((ic for ic in rel_inputs if ic.quality in DOMAIN_QUALITIES and not ic.gradual), None)
        cands.append(_Candidate(cause, base, broke.onset_index if broke else fc.onset_index, features=[fc.column],
                                inputs=[ic.column for ic in rel_inputs], evidence=ev,
                                signal=_column_signal(tr, fc), culprit=broke.column if broke else fc.column,
                                # A subtle feature is timed by the outputs it moved, not its own noisy ramp.
                                gradual=fc.gradual and broke is None and (fc not in subtle or all(
                                    m.gradual for m in outputs if _near(fc.onset_index, m.split.index, 1))),
                                signal_up=fc.split is None or fc.split.effect >= 0,
                                explains=(has_effect and aligned) or fc.quality in _DEGENERATE
                                or any(ic.quality in DOMAIN_QUALITIES for ic in rel_inputs)
                                # computed differently from unchanged inputs, and by a lot: a defect
                                or (cause is Cause.TRAINING_SERVING_SKEW
                                    and (fc.shift >= 0.25 or fc.quality == "out_of_range"))))
    for ic in inps[:3]:
        if ic.column in used_inputs:
            continue
        aligned = not effect_idx or any(_near(ic.onset_index, i, tol) for i in effect_idx)
        if not has_effect and ic.quality is None:
            continue  # input drift that moved nothing: a finding, below
        derived = [fc.column for fc in feats if _related(tr, fc.column, ic.column)]
        cause = Cause.DISTRIBUTION_SHIFT if _looks_like_population_shift(tr, [ic], None) else \
            Cause.UPSTREAM_DATA_CHANGE
        base = 0.3 + 0.3 * min(ic.magnitude / 0.3, 1.0) + (0.2 if has_effect and aligned else 0.0)
        cands.append(_Candidate(cause, base, ic.onset_index, features=derived, inputs=[ic.column],
                                evidence=[_describe_column(tr, ic, tr.time_of(ic.onset_index))],
                                signal=_column_signal(tr, ic), culprit=ic.column, gradual=ic.gradual,
                                signal_up=ic.split is None or ic.split.effect >= 0,
                                explains=(has_effect and aligned) or ic.quality is not None))

    # Present from the start: features unlike the reference while their inputs are not.
    # (Not within a slice: the reference is the whole population, a slice differs from it by nature.)
    # A feature stands out when it is far from the reference while the others are not: the bar is
    # five times the typical feature's distance (a reference from another period moves them all).
    ref_skews = [c.skew for c in tr.columns.values() if c.role is Role.FEATURE and math.isfinite(c.skew)]
    bar = max(0.05, 5.0 * float(np.median(ref_skews))) if ref_skews else math.inf
    skewed = [c for c in tr.columns.values() if (not in_slice or tr.ref_scoped) and c.role is Role.FEATURE
              and math.isfinite(c.skew)
              and (c.skew >= max(bar, c.skew_noise) or abs(c.skew_null) >= 0.1 or abs(c.skew_zero) >= 0.1)
              and not c.changed
              # In a log shorter than two days, a column that follows the clock differs from a reference
              # of whole days by the hours the log happens to cover.
              and (tr.daily or c.wander < 0.15)]
    skewed.sort(key=lambda c: -(c.skew * (0.25 + imp.get(c.column, 0.3))))
    for sc in skewed[:2]:
        parents = [c for c in tr.columns.values() if c.role is Role.INPUT and _related(tr, sc.column, c.column)]
        parent_skew = [p for p in parents if math.isfinite(p.skew) and p.skew >= 0.15]
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
        w = imp.get(sc.column, 0.3)
        cands.append(_Candidate(cause, 0.45 + 0.3 * min(sc.skew / 0.2, 1.0) + 0.15 * min(w / 0.3, 1.0), None,
                                features=[sc.column], inputs=[p.column for p in parent_skew], evidence=ev,
                                culprit=sc.column))

    # Quality fell with nothing else to blame: the world changed under the model. A metric that
    # improved meanwhile (fewer false positives as recall falls) says the outputs moved, not that
    # the model lost its edge.
    blamed = any(c.cause in (Cause.SERVING_INFRASTRUCTURE, Cause.MODEL_CHANGE) for c in cands)
    worse = [m for m in quality if _got_worse(m)]
    if worse and not blamed:
        qm = max(worse, key=lambda m: m.strength)
        gradual, onset_index = _quality_timing(tr) or (qm.gradual, qm.split.index)
        # A slow drift is near anywhere along its ramp, not only at its midpoint.
        drift_near = [c for c in feats + inps if _near(c.onset_index, onset_index, tol) or (
            c.start_index is not None and c.onset_index is not None
            and c.start_index - tol <= onset_index <= c.onset_index + tol)]
        out_changed = any(_near(m.split.index, onset_index, tol) for m in outputs)
        s = 0.45 + (0.3 if not drift_near else -0.25) + (0.1 if not out_changed else -0.1) \
            + (0.1 if gradual else 0.0) - (0.2 if len(worse) < len(quality) else 0.0)
        ev = [_metric_sentence(m, tr.time_of(m.split.index)) for m in quality][:3]
        ev.append("inputs and features stayed within their usual range" if not drift_near
                  else "inputs drifted at the same time, which may explain it")
        cands.append(_Candidate(Cause.MODEL_DEGRADATION, s, onset_index, evidence=ev,
                                signal=_metric_signal(tr, qm.metric), gradual=gradual))

    # Output moved with no column to blame and no version change: shift in something unlogged.
    if outputs and not cands:
        om = max(outputs, key=lambda m: m.strength)
        cands.append(_Candidate(Cause.DISTRIBUTION_SHIFT, 0.4, om.split.index,
                                evidence=[_metric_sentence(om, tr.time_of(om.split.index)),
                                          "no logged feature, input, version or serving metric explains it"],
                                signal=_metric_signal(tr, om.metric), gradual=om.gradual))

    # Drift in columns that moved nothing: findings, not incidents.
    for c in feats + inps:
        if not any(c.column in (cd.features + cd.inputs) for cd in cands):
            findings.append(Finding("drift", c.column, _describe_column(tr, c, tr.time_of(c.onset_index))
                                    + " (no effect on the model's outputs, quality or serving health)"))
    return cands, findings


def _settle_data_cause(tr: Triage, c: _Candidate, at: datetime | None, segments: Sequence[dict[str, str]],
                       log_start: datetime | None) -> Cause:
    """Upstream change or population shift? Only a broken domain or an upstream change record says upstream.

    Both move inputs and the features computed from them. A change in what a source means
    shows as values the training data never had (new categories, out-of-range values), or
    is recorded as a change on that source; a population shift is recorded, if at all, as a
    business event (a campaign, a market launch). With no events at all, the shape decides:
    one input moving at once points upstream, several moving or a gradual drift to a shift.
    """
    cols = c.features + c.inputs
    if at is not None and (held := _calibration_holds(tr, at, segments)) is not None:
        verdict, sentence = held
        c.evidence.append(sentence)
        return Cause.DISTRIBUTION_SHIFT if verdict else Cause.UPSTREAM_DATA_CHANGE
    if any((cc := tr.columns.get(col)) is not None and cc.quality in DOMAIN_QUALITIES for col in cols):
        return Cause.UPSTREAM_DATA_CHANGE
    if not tr.case.events:
        return c.cause
    kw = dict(onset=at, columns=cols, lineage=tr.case.lineage, segments=segments, model_names=tr.models,
              log_start=log_start, gradual=c.gradual)
    up = [r for r in rank_events(tr.case.events, cause=Cause.UPSTREAM_DATA_CHANGE, **kw)  # type: ignore[arg-type]
          if r.score >= 0.3 and (r.event.target_kind or "").startswith("source")]
    shift = [r for r in rank_events(tr.case.events, cause=Cause.DISTRIBUTION_SHIFT, **kw)  # type: ignore[arg-type]
             if r.score >= 0.3 and any(k in r.event.kind.lower() or k in (r.event.target_kind or "")
                                       for k in _SHIFT_WORDS)]
    if up and (not shift or up[0].score >= shift[0].score):
        return Cause.UPSTREAM_DATA_CHANGE
    return Cause.DISTRIBUTION_SHIFT


#: Labelled outcomes weighed against "they followed the model's outputs" and "they stayed where they were",
#: each a z: no decision when both explanations are this far off (neither fits) ...
_UNFIT_Z = 2.5
#: ... or when the two are closer than this (both fit about as well).
_APART_Z = 2.0


def _which_fits(z_follow: float, z_stay: float) -> bool | None:
    """True when the outcomes followed the outputs, False when they stayed, None when that cannot be told."""
    if min(z_follow, z_stay) >= _UNFIT_Z or abs(z_follow - z_stay) < _APART_Z:
        return None
    return z_follow < z_stay


def _outcome_meaning(followed: bool, outputs: str) -> str:
    """What outcomes that followed (or did not follow) the model's ``outputs`` (scores, predictions) mean."""
    return ("the model stays right about the new traffic: a shift in who arrives" if followed
            else f"the {outputs} moved without the outcomes: what the data means changed")


def _calibration_holds(tr: Triage, at: datetime, segments: Sequence[dict[str, str]]) -> tuple[bool, str] | None:
    """Did the outcomes follow the scores across the change? None when the labels cannot tell.

    A population shift moves inputs and outcomes together (the model meets different people
    but stays right about them: observed / expected positives hold), while a change in what
    the data means moves the scores and leaves the outcomes behind (the label rate stays
    where it was). The two predictions of the after-onset positives are compared; the test
    decides only when they differ by more than three standard errors.
    """
    if tr.kind in ("regression", "multiclass") and tr.engine is not None and tr.case.has_labels:
        return _outcomes_follow(tr, at, segments)
    if tr.engine is None or not tr.score_is_prob or tr.positive is None or not tr.case.has_labels:
        return None
    lit = _positive_sql(tr)
    where = " AND ".join(x for x in (scope_sql(tr.scope), scope_sql(segments[0]) if segments else "") if x)
    rows = tr.engine.query(
        f"SELECT CASE WHEN ts >= {ts_sql(at)} THEN 1 ELSE 0 END AS after, count(*) AS n, "
        f"sum(score) AS e, sum(CASE WHEN label = {lit} THEN 1 ELSE 0 END) AS o FROM log "
        f"WHERE label IS NOT NULL AND score IS NOT NULL{' AND ' + where if where else ''} GROUP BY 1").to_pylist()
    got = {int(r["after"]): (float(r["n"]), float(r["e"] or 0.0), float(r["o"] or 0.0)) for r in rows}
    if set(got) != {0, 1}:
        return None
    (nb, eb, ob), (na, ea, oa) = got[0], got[1]
    if min(ob, eb) < 20 or na < 200 or ea <= 0:
        return None
    follows = ob / eb * ea  # outcomes move with the scores
    stays = ob / nb * na  # outcomes stay where they were
    # Each prediction's error: the after-onset count's own noise and that of the before-onset rate.
    z_follow = abs(oa - follows) / math.sqrt(follows + (ea / eb) ** 2 * ob)
    z_stay = abs(oa - stays) / math.sqrt(stays + (na / nb) ** 2 * ob)
    holds = _which_fits(z_follow, z_stay)
    if holds is None:
        return None
    sentence = (f"labelled outcomes {'followed' if holds else 'did not follow'} the scores: {oa:.0f} positives "
                f"after the change where the scores expected {follows:.0f} and the earlier rate {stays:.0f} "
                f"({_outcome_meaning(holds, 'scores')})")
    return holds, sentence


#: A regressor's labels decide between "followed" and "stayed" only when one explanation is this many times
#: closer than the other (a third: the mean true value moved by a third of the predictions' move or less).
_OUTCOME_RATIO = 1 / 3
#: Labelled requests needed on each side of a change to weigh a regressor's or classifier's outcomes.
_MIN_LABELLED_SIDE = 200


def _outcomes_follow(tr: Triage, at: datetime, segments: Sequence[dict[str, str]]) -> tuple[bool, str] | None:
    """The regression and multi-class form of :func:`_calibration_holds`: did the labels follow the predictions?

    A regressor's predictions moved; if its bias (mean of prediction - label) held, the true values moved with
    them (a shift in who arrives); if the mean true value held instead, the predictions moved alone (what the
    data means changed). A classifier's predicted class mix moved; the labelled mix either followed it (each
    class's labels over predictions held) or stayed. Decided only when one explanation fits and the other does not.
    """
    assert tr.engine is not None
    where = " AND ".join(x for x in (scope_sql(tr.scope), scope_sql(segments[0]) if segments else "") if x)
    cond = f"label IS NOT NULL AND prediction IS NOT NULL{' AND ' + where if where else ''}"
    after = f"CASE WHEN ts >= {ts_sql(at)} THEN 1 ELSE 0 END"
    if tr.kind == "regression":
        err, y = "(CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE))", "CAST(label AS DOUBLE)"
        rows = tr.engine.query(
            f"SELECT {after} AS after, count(*) AS n, avg({err}) AS e, avg({y}) AS y, "
            f"var_samp({y}) AS vy FROM log WHERE {cond} GROUP BY 1").to_pylist()
        got = {int(r["after"]): r for r in rows}
        if set(got) != {0, 1} or min(float(got[k]["n"]) for k in (0, 1)) < _MIN_LABELLED_SIDE:
            return None
        b, a = got[0], got[1]
        nb, na = float(b["n"]), float(a["n"])
        # With thousands of labels both means move beyond noise with the hours a split happens to cut, so
        # the two explanations are weighed by distance: the true values moved with the predictions
        # (the bias held) or stayed (the bias took the whole move). The predictions must have moved first.
        d_follow, d_stay = abs(a["e"] - b["e"]), abs(a["y"] - b["y"])
        moved = abs((a["e"] + a["y"]) - (b["e"] + b["y"]))
        se = math.sqrt((b["vy"] or 0.0) / nb + (a["vy"] or 0.0) / na + 1e-12)
        if moved < 3 * se or min(d_follow, d_stay) > _OUTCOME_RATIO * max(d_follow, d_stay):
            return None
        holds = d_follow < d_stay
        return holds, (f"labelled outcomes {'followed' if holds else 'did not follow'} the predictions: the mean "
                       f"prediction went from {fmt_num(b['e'] + b['y'])} to {fmt_num(a['e'] + a['y'])}, the mean "
                       f"true value from {fmt_num(b['y'])} to {fmt_num(a['y'])} "
                       f"({_outcome_meaning(holds, 'predictions')})")
    else:
        rows = tr.engine.query(
            f"SELECT {after} AS after, CAST(prediction AS VARCHAR) AS c, count(*) AS n, 0 AS lab FROM log "
            f"WHERE {cond} GROUP BY 1, 2 UNION ALL SELECT {after} AS after, CAST(label AS VARCHAR) AS c, "
            f"count(*) AS n, 1 AS lab FROM log WHERE {cond} GROUP BY 1, 2").to_pylist()
        cls = sorted({str(r["c"]) for r in rows})
        cnt = {(int(r["after"]), str(r["c"]), int(r["lab"])): float(r["n"]) for r in rows}
        nb = sum(cnt.get((0, c, 1), 0.0) for c in cls)
        na = sum(cnt.get((1, c, 1), 0.0) for c in cls)
        if len(cls) < 2 or min(nb, na) < _MIN_LABELLED_SIDE:
            return None
        chi_follow = chi_stay = 0.0
        df = 0
        for c in cls:
            ob, oa = cnt.get((0, c, 1), 0.0), cnt.get((1, c, 1), 0.0)
            eb, ea = cnt.get((0, c, 0), 0.0), cnt.get((1, c, 0), 0.0)
            if ob < 20 or eb < 20:
                continue  # too rare a class to weigh
            df += 1
            follows, stays = ob / eb * ea, ob / nb * na
            chi_follow += (oa - follows) ** 2 / (follows + (ea / eb) ** 2 * ob)
            chi_stay += (oa - stays) ** 2 / (stays + (na / nb) ** 2 * ob)
        if df < 2:
            return None
        # Chi-square with df degrees of freedom as a z (its mean df, its variance 2 df).
        z_follow, z_stay = ((x - df) / math.sqrt(2 * df) for x in (chi_follow, chi_stay))
        detail = f"the labelled class mix against the predicted mix (chi-square {chi_follow:.0f} if it followed, " \
                 f"{chi_stay:.0f} if it stayed, {df} classes)"
    holds = _which_fits(z_follow, z_stay)
    if holds is None:
        return None
    return holds, (f"labelled outcomes {'followed' if holds else 'did not follow'} the predictions: {detail} "
                   f"({_outcome_meaning(holds, 'predictions')})")


_SHIFT_WORDS = ("business", "campaign", "market", "launch", "partner", "product", "promotion")


@dataclass(frozen=True)
class _Contrast:
    """Two model versions on the same hours: whether they differ, said in a sentence."""

    material: bool
    text: str
    decisions_only: bool  # the decisions differ while the scores agree: a threshold or post-processing change


def _version_contrast(tr: Triage, new: str, old: str | None, index: int) -> _Contrast | None:
    """Compare the new and the old version on the same hours after the onset: decisions and scores."""
    if tr.engine is None or old is None or old == new:
        return None
    at = tr.time_of(index)
    assert at is not None
    scope = scope_sql(tr.scope)
    cond = f"ts >= {ts_sql(at)} AND model_version IN ({_literal(new)}, {_literal(old)})"
    if scope:
        cond += f" AND {scope}"
    pos = f"avg(CASE WHEN prediction = {_positive_sql(tr)} THEN 1.0 ELSE 0.0 END)" if tr.positive is not None \
        else "NULL"
    score = "avg(score)" if tr.score_is_prob else "NULL"
    sc = tr.refs.get("score")
    cdf = (f"avg(CASE WHEN score <= {at_most(sc.edges[len(sc.edges) // 2])!r} THEN 1.0 ELSE 0.0 END)"
           if isinstance(sc, NumericRef) and sc.edges else "NULL")
    rows = {r["v"]: r for r in tr.engine.query(
        f"SELECT model_version AS v, count(*) AS n, {pos} AS pos, {score} AS s, {cdf} AS lo FROM log "
        f"WHERE {cond} GROUP BY 1").to_pylist()}
    a, b = rows.get(old), rows.get(new)
    if a is None or b is None or min(a["n"], b["n"]) < 100:
        return None
    reasons = []
    decisions = scores = False
    if a["pos"] is not None and b["pos"] is not None:
        pa_, pb_ = float(a["pos"]), float(b["pos"])
        se = math.sqrt(max(pa_ * (1 - pa_), 1e-6) / a["n"] + max(pb_ * (1 - pb_), 1e-6) / b["n"])
        rel = (pb_ / pa_ - 1) if pa_ > 0 else math.inf
        decisions = abs(pb_ - pa_) > 4 * se and (abs(rel) >= 0.25 or abs(pb_ - pa_) >= 0.02)
        reasons.append(f"positive rate {_pct(pb_)} on {new} vs {_pct(pa_)} on {old}")
    if a["lo"] is not None and b["lo"] is not None:
        d = abs(float(b["lo"]) - float(a["lo"]))
        se = math.sqrt(0.25 / a["n"] + 0.25 / b["n"])
        scores = d > 4 * se and d >= 0.08
        reasons.append(f"mean score {fmt_num(float(b['s']))} vs {fmt_num(float(a['s']))}")
    only = decisions and not scores and a["lo"] is not None
    text = f"on the same hours after the onset, {', '.join(reasons)}" + (
        ": the new version decides differently on alike scores (a threshold or post-processing change)" if only
        else ": the new version behaves differently" if decisions or scores else ": the versions behave alike")
    return _Contrast(decisions or scores, text, only)


def _threshold_change(tr: Triage, new: str, old: str | None) -> str | None:
    """Whether two versions flag from different scores: each version's decisions as a threshold.

    Where a version flags every score above a cut and none below, the highest unflagged and the
    lowest flagged score bracket its threshold; two versions whose brackets do not overlap decide
    by different thresholds. Versions that do not decide by a threshold give overlapping brackets.
    """
    if tr.engine is None or old is None or old == new or tr.positive is None or not tr.score_is_prob:
        return None
    lit = _positive_sql(tr)
    scope = scope_sql(tr.scope)
    rows = {r["v"]: r for r in tr.engine.query(
        f"SELECT model_version AS v, count(*) AS n, min(CASE WHEN prediction = {lit} THEN score END) AS lo, "
        f"max(CASE WHEN prediction <> {lit} THEN score END) AS hi FROM log "
        f"WHERE model_version IN ({_literal(new)}, {_literal(old)}){' AND ' + scope if scope else ''} GROUP BY 1"
    ).to_pylist()}
    a, b = rows.get(old), rows.get(new)
    if a is None or b is None or min(a["n"], b["n"]) < 100 or None in (a["lo"], a["hi"], b["lo"], b["hi"]):
        return None
    if a["hi"] > a["lo"] or b["hi"] > b["lo"]:
        return None  # a version flags some scores below others it does not: no single threshold
    if b["lo"] <= a["hi"] or a["lo"] <= b["hi"]:
        # Disjoint brackets: one version's lowest flagged score is below the other's highest unflagged.
        return (f"{new} flags scores from {fmt_num(float(b['lo']))} up where {old} flagged from "
                f"{fmt_num(float(a['lo']))}: the decision threshold changed")
    return None


def _positive_sql(tr: Triage) -> str:
    """The positive class as a SQL literal."""
    return _literal(tr.positive)


def _segment_triage(tr: Triage, ctr: Triage, segments: Sequence[dict[str, str]]) -> Triage | None:
    """The slice of the one affected segment (a single attribute), for a candidate found in all traffic."""
    if ctr.scope or len(segments) != 1 or len(segments[0]) != 1:
        return None
    return tr.slices.get(next(iter(segments[0].items())))


def _segment_step(c: _Candidate, seg_tr: Triage) -> int | None:
    """The window where a change that looks gradual in all traffic steps inside its one segment.

    A version rolled out to one segment at once, or a column that broke at once there: its share
    of all traffic follows that segment's daily cycle and looks gradual; inside it is a step.
    """
    if c.cause is Cause.MODEL_CHANGE:
        vm = seg_tr.metrics.get("version_mix")
        return vm.split.index if vm is not None and vm.material and not vm.gradual else None
    cc = seg_tr.columns.get(c.culprit) if c.culprit else None
    return cc.onset_index if cc is not None and cc.changed and not cc.gradual else None


def _has_inputs(tr: Triage, feature: str) -> bool:
    lin = tr.case.lineage
    if lin.edges:
        return any(a in tr.columns for a in lin.ancestors(feature))
    return any(c.role is Role.INPUT for c in tr.columns.values())


def _looks_like_population_shift(tr: Triage, inputs: Sequence[ColumnChange], feature: ColumnChange | None) -> bool:
    """A population shift moves many inputs, gradually or through the traffic mix; a source change moves one."""
    if any(ic.gradual for ic in inputs) and (feature is None or feature.gradual):
        return True
    if any(ic.oor_after - ic.oor_before > 0.05 or ic.unseen_after > 0.05 or ic.quality for ic in inputs):
        return False
    idx = inputs[0].onset_index
    tol = max(2, int(3 * 3600 / tr.window))
    moved = [c for c in tr.columns.values() if c.role is Role.INPUT and c.changed and _near(c.onset_index, idx, tol)]
    mix = any(_segment_mix_changed(tr, name, idx, tol) for name in tr.series if name.startswith("seg:"))
    return len(moved) >= 3 or mix


def _segment_mix_changed(tr: Triage, key: str, idx: int | None, tol: int) -> bool:
    from mlsleuth.diagnosis._signals import proportion_split

    x = tr.series[key]
    if x.ndim != 2 or x.shape[1] < 2:
        return False
    sp = proportion_split(x, tr.rows)
    return bool(sp is not None and sp.z >= 8 and abs(sp.effect) >= 0.08 and _near(sp.index, idx, tol))


def _examples(tr: Triage, cand: _Candidate, onset: datetime | None, where: str) -> tuple[Example, ...]:
    if tr.engine is None or onset is None or cand.signal is None:
        return ()
    cols = ["request_id"] if "request_id" in tr.case.log.column_names else []
    cols += [c for c in (cand.features + cand.inputs)[:4]]
    cols += [c for c in ("score", "prediction", "label", "model_version") if c in tr.case.log.column_names]
    sel = ", ".join(["ts"] + [quote(c) for c in dict.fromkeys(cols)])
    cond = f" AND {where}" if where else ""
    t = ts_sql(onset)
    op = "> 0" if cand.signal_up else "= 0"
    after = tr.engine.query(f"SELECT {sel} FROM log WHERE ts >= {t} AND ({cand.signal}) {op}{cond} "
                            f"ORDER BY ts LIMIT 3").to_pylist()
    before = tr.engine.query(f"SELECT {sel} FROM log WHERE ts < {t}{cond} ORDER BY ts DESC LIMIT 2").to_pylist()
    out = []
    for rows, typical in ((after, False), (before, True)):
        for r in rows:
            ts = r.pop("ts")
            rid = r.pop("request_id", None)
            out.append(Example(None if rid is None else str(rid), ts,
                               {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, typical))
    return tuple(out)


def diagnose_case(case: CaseInput, *, engine: Engine | None = None, symptom: str | None = None,
                  charts: bool = True) -> Diagnosis:
    """Diagnose one case: triage, layer isolation, signatures, ranked hypotheses.

    Parameters
    ----------
    case
        The validated inputs (see :func:`load_case`).
    engine
        The engine to run the queries on (a fresh in-memory DuckDB when None).
    symptom
        A metric to focus on (e.g. ``false_positive_rate``); others still inform the layers.
    charts
        Compute the chart data of md/html reports (``Diagnosis.charts``); False skips its queries.
    """
    th = thresholds_for(case.config)  # a bad [thresholds] table stops here, before any scan
    if case.log.num_rows < MIN_LOG_ROWS:
        return Diagnosis(verdict=Verdict.HEALTHY, skipped=(
            f"every analysis: the log has {case.log.num_rows} rows, fewer than the {MIN_LOG_ROWS} the least "
            "demanding signal needs, so nothing can be said of it (diagnose a longer period)", *case.notes),
            triage={"rows": case.log.num_rows}, thresholds=th.to_dict())
    tr = run_triage(case, engine=engine)
    case = tr.case  # without the rows whose timestamps lie far outside the log's
    cands, findings = _candidates(tr)
    for c in cands:
        c.material = _material(tr, c)
    # Columns whose drift the labels of all traffic show left the model's error alone: a slice too thin in
    # labels to judge that drift itself defers to them.
    harmless = {col for c in cands if c.cause in _DRIFT_CAUSES and _error_held(tr, c) for col in c.features + c.inputs}
    # Slices: changes confined to one segment that the whole traffic dilutes below notice.
    sliced: list[_Candidate] = []
    for st in tr.slices.values():
        scands, _ = _candidates(st, in_slice=True)
        for c in scands:
            c.tr = st
            c.material = _material(st, c, zmin=8.0)
            if c.material and c.cause in _DRIFT_CAUSES and harmless & set(c.features + c.inputs) \
                    and _error_held(st, c) is None:
                c.material = False
            if c.material:
                sliced.append(c)
    # Of two slices that show the same change, keep the one it is clearest in: the segment it is
    # confined to, not another attribute whose slices each hold part of that segment.
    sliced.sort(key=lambda c: (-c.score, -_culprit_z(c)))
    for c in sliced:
        if not _duplicates(c, cands, tol=max(2, int(6 * 3600 / tr.window))):
            c.score -= 0.05
            cands.append(c)
    if symptom and symptom in tr.metrics:
        focus = tr.metrics[symptom]
        for c in cands:
            if c.onset_index is not None and abs(c.onset_index - focus.split.index) <= 3:
                c.score += 0.1
    model_note = _apply_model(tr, cands)
    # Material candidates first; among them the strongest.
    cands.sort(key=lambda c: (not c.material, -c.score))
    # Merge candidates of the same cause and scope (keep the strongest, gather culprits).
    merged: list[_Candidate] = []
    for c in cands:
        same = next((m for m in merged if m.cause is c.cause and m.material == c.material
                     and _scope(m) == _scope(c) and (m.onset_index is None) == (c.onset_index is None)
                     and (m.onset_index is None or abs(m.onset_index - (c.onset_index or 0)) <= 3)), None)
        if same is None:
            merged.append(c)
        else:
            same.features += [f for f in c.features if f not in same.features]
            same.inputs += [i for i in c.inputs if i not in same.inputs]
            same.evidence += [e for e in c.evidence if e not in same.evidence][:2]
    if merged and merged[0].material:
        for c in [m for m in merged if not m.material]:
            findings.append(Finding("drift", (c.features + c.inputs + [""])[0] or None,
                                    (c.evidence or [c.cause.value])[0] + " (no effect on the model's outputs)"))
        merged = [m for m in merged if m.material]
    log_start = tr.starts[0] if tr.starts else None
    segcols = [s for s in tr.case.schema.segments if s not in ("model", "model_version")]
    hyps = []
    for rank, c in enumerate(merged[:4]):
        ctr = c.tr or tr
        in_scope = scope_sql(ctr.scope)
        onset = None
        segments: list[dict[str, str]] = [dict(ctr.scope)] if ctr.scope else []
        if c.onset_index is not None and not c.gradual:
            onset = refine_onset(ctr, c.culprit, c.onset_index, where=in_scope or None,
                                 metric_sql=None if c.culprit else c.signal)
        seg_onset = onset or ctr.time_of(c.onset_index)
        if c.signal and seg_onset is not None and segcols and rank < 2 and tr.engine is not None:
            segs = affected_segments(tr.engine, c.signal, seg_onset, segcols, where=in_scope)
            if ctr.scope:
                # Inside a slice: keep the slice, narrowed by a second attribute when that explains it.
                narrowed = [s for s in segs if set(ctr.scope.items()) < set(s.segment.items())]
                segments = [narrowed[0].segment] if narrowed else segments
            else:
                segments = [s.segment for s in segs]
            if segs and segments:
                s0 = next((s for s in segs if s.segment == segments[0]), segs[0])
                c.evidence.append(
                    f"the change is confined to {', '.join(f'{k}={v}' for k, v in segments[0].items())} "
                    f"({_pct(s0.share)} of traffic): signal {fmt_num(s0.before)} -> {fmt_num(s0.after)} there, "
                    f"{'+' if s0.delta_rest >= 0 else ''}{fmt_num(s0.delta_rest)} elsewhere")
            if onset is not None and c.culprit and segments:
                onset = refine_onset(ctr, c.culprit, c.onset_index, where=scope_sql(segments[0])) or onset
        if c.cause is Cause.TRAINING_SERVING_SKEW and c.onset_index is None and not segments and c.culprit:
            segments = _skewed_segment(tr, c.culprit)
        seg_tr = _segment_triage(tr, ctr, segments)
        if (c.cause is Cause.MODEL_DEGRADATION and seg_tr is not None
                and (timing := _quality_timing(seg_tr)) is not None):
            # Quality fell in one segment: its own metrics time the fall better than the diluted whole.
            c.gradual, c.onset_index = timing
            onset = None if c.gradual else refine_onset(seg_tr, None, c.onset_index, metric_sql=c.signal)
        if c.gradual and seg_tr is not None and (step := _segment_step(c, seg_tr)) is not None:
            c.gradual, c.onset_index = False, step
            onset = refine_onset(seg_tr, c.culprit, step, where=scope_sql(segments[0]),
                                 metric_sql=None if c.culprit else c.signal)
        if c.canary and segments and tr.engine is not None and seg_onset is not None:
            # A version that serves all of the affected segment is a rollout there, not a canary.
            share = tr.engine.query(
                f"SELECT avg(CASE WHEN model_version = {_literal(c.canary)} THEN 1.0 ELSE 0.0 END) AS s FROM log "
                f"WHERE ts >= {ts_sql(seg_onset)} AND {scope_sql(segments[0])}"
            ).column("s")[0].as_py()
            if share is not None and share >= 0.85:
                c.canary = None
        if c.canary and c.canary not in [s.get("model_version") for s in segments]:
            segments = [{**(segments[0] if segments else {}), "model_version": c.canary}]
        # A gradual change is judged from where its ramp began: the split lands mid-ramp. Its metrics
        # inside the one affected segment, undiluted by the rest, time the ramp better.
        seg_tr = _segment_triage(tr, ctr, segments) if c.metrics else None
        began = onset
        if began is None and c.gradual:
            began = (_ramp_start(seg_tr, c) if seg_tr is not None else None) or _ramp_start(ctr, c)
        began = began or ctr.time_of(c.onset_index)
        if c.cause in (Cause.UPSTREAM_DATA_CHANGE, Cause.DISTRIBUTION_SHIFT):
            c.cause = _settle_data_cause(ctr, c, began, segments, log_start)
        elif c.cause is Cause.TRAINING_SERVING_SKEW and began is not None and c.onset_index is not None:
            # A feature that moved while its logged inputs did not, yet the outcomes moved with the
            # scores: the population changed in a way the logged inputs do not show.
            held = _calibration_holds(ctr, began, segments)
            if held is not None and held[0]:
                c.cause = Cause.DISTRIBUTION_SHIFT
                c.evidence.append(held[1])
        cols = c.features + c.inputs
        ranked: list[RankedEvent] = rank_events(
            tr.case.events, onset=began, cause=c.cause, columns=cols, lineage=tr.case.lineage, segments=segments,
            model_names=tr.models, log_start=log_start, gradual=c.gradual)
        events = [r for r in ranked if r.score >= 0.3]
        # The best event, and a second only when it is nearly as likely and touches the culprits.
        events = events[:1] + [r for r in events[1:2] if r.score >= 0.8 * events[0].score
                               and any("feeds" in x or "mentions" in x for x in r.reasons)]
        ev_ids = tuple(r.event.id for r in events)
        if events:
            r0 = events[0]
            c.evidence.append(f"change event {r0.event.id} ({r0.event.kind} on {r0.event.target or 'unknown'}, "
                              f"{_when(r0.event.ts)}): {'; '.join(r0.reasons)}"
                              + (f" - {r0.event.description}" if r0.event.description else ""))
            c.score += 0.1 * r0.score
        sources = _sources(tr, c.inputs or c.features)
        if sources:
            c.evidence.append("lineage: " + " <- ".join(
                [x for x in ((c.features or [""])[0], (c.inputs or [""])[0], sources[0]) if x]))
        hyps.append(Hypothesis(
            cause=c.cause, confidence=0.0, onset=onset if not c.gradual else None,
            features=tuple(dict.fromkeys(c.features)), inputs=tuple(dict.fromkeys(c.inputs)),
            segments=tuple(segments), events=ev_ids, evidence=tuple(c.evidence),
            next_steps=runbook_steps(c.cause),
            examples=_examples(ctr, c, onset, scope_sql(segments[0]) if segments else "") if rank == 0 else (),
            sources=tuple(sources)))
        c.score = min(c.score, 0.99)
    # Confidences: a softmax-like share of the candidates' scores, scaled by the top score's strength.
    if hyps:
        scores = np.array([c.score for c in merged[: len(hyps)]])
        order = np.argsort(-scores, kind="stable")
        share = np.exp(scores * 4) / np.exp(scores * 4).sum()
        conf = np.clip(share * min(scores.max(), 0.99) / share.max(), 0.05, 0.99)
        hyps = [_with_conf(hyps[i], float(conf[i])) for i in order]
    lead_tr = (merged[0].tr or tr) if merged else tr
    symptoms = _symptoms(lead_tr)
    incident = bool(merged) and merged[0].material
    if not incident:
        findings.extend(Finding("drift", None, e) for h in hyps for e in h.evidence[:1])
        hyps = []
    layers = _layers(tr, hyps)
    skipped = list(case.notes)
    if model_note:
        findings.append(Finding("model", None, model_note))
    if not case.has_labels:
        skipped.append("performance monitoring (no labels): quality metrics could not be checked")
    elif "prediction" not in case.log.schema.names:
        skipped.append("labels (the log has no prediction column): quality metrics compare labels with the "
                       "decisions served; log the decision as prediction to check them")
    if case.reference is None:
        skipped.append("training-serving comparison (no reference data): features were compared within the log only")
    elif case.log.num_rows < MIN_SKEW_ROWS:
        skipped.append(f"training-serving comparison: the log has {case.log.num_rows} rows, fewer than the "
                       f"{MIN_SKEW_ROWS} needed to tell its features from the reference's")
    if case.log.num_rows < 2 * MIN_SIDE_ROWS:
        skipped.append(f"changes within the log: it has {case.log.num_rows} rows, fewer than the {2 * MIN_SIDE_ROWS} "
                       f"a change in a feature or input needs ({MIN_SIDE_ROWS} on each side)")
    if not case.events:
        skipped.append("change-event correlation (no events)")
    if not case.lineage.edges:
        skipped.append("lineage (no lineage given): inputs were linked to features by name and timing")
    if case.score_fn is None:
        skipped.append("counterfactual attribution (no model): culprits ranked by drift weighted by score correlation")
    triage = _triage_summary(lead_tr, hyps, symptoms)
    top = hyps[0] if hyps else None
    override = runbook_source(top.cause) if top else None
    return Diagnosis(verdict=Verdict.INCIDENT if incident else Verdict.HEALTHY, hypotheses=tuple(hyps),
                     symptoms=tuple(symptoms), layers=tuple(layers), findings=tuple(findings),
                     skipped=tuple(skipped), triage=triage, runbook=runbook_text(top.cause) if top else "",
                     runbook_source=str(override) if override else "",
                     charts=incident_charts(tr, hyps, symptoms) if charts else None, thresholds=th.to_dict())


def _skewed_segment(tr: Triage, column: str) -> list[dict[str, str]]:
    """The one segment whose values of ``column`` stand apart from its own slice of the reference."""
    by_col: dict[str, list[tuple[float, str]]] = {}
    for (col, value), st in tr.slices.items():
        cc = st.columns.get(column)
        if st.ref_scoped and cc is not None and math.isfinite(cc.skew):
            by_col.setdefault(col, []).append((cc.skew, value))
    best: list[tuple[float, dict[str, str]]] = []
    for col, skews in by_col.items():
        skews.sort(reverse=True)
        if len(skews) >= 2 and skews[0][0] >= 0.05 and skews[0][0] >= 3 * skews[1][0]:
            best.append((skews[0][0] / max(skews[1][0], 1e-3), {col: skews[0][1]}))
    return [max(best, key=lambda b: b[0])[1]] if best else []


def _ramp_start(tr: Triage, c: _Candidate) -> datetime | None:
    """When a gradual candidate's change began: its culprit column's ramp, else its metric's."""
    for col in ([c.culprit] if c.culprit else []) + c.features + c.inputs:
        cc = tr.columns.get(col)
        if cc is not None and cc.start_index is not None:
            return tr.time_of(cc.start_index)
    starts = [m.start_index for k in c.metrics if (m := tr.metrics.get(k)) is not None and m.start_index is not None]
    if starts:
        return tr.time_of(int(np.median(starts)))
    for m in tr.metrics.values():
        if m.start_index is not None and m.split.index == c.onset_index:
            return tr.time_of(m.start_index)
    return None


def _scope(c: _Candidate) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((c.tr.scope or {}).items())) if c.tr is not None else ()


def _material(tr: Triage, c: _Candidate, *, zmin: float = 0.0) -> bool:
    """Whether a candidate explains a material change in outputs, quality or serving, or is a defect.

    ``zmin`` asks for more than noise (a slice is one of many tested: it needs a stronger change).
    """
    if not c.explains:
        return False
    if c.cause in _DRIFT_CAUSES and (held := _error_held(tr, c)) is not None:
        return not held
    if c.cause in (Cause.UPSTREAM_DATA_CHANGE, Cause.DISTRIBUTION_SHIFT) and any(
            (cc := tr.columns.get(col)) is not None and cc.quality in DOMAIN_QUALITIES and cc.z >= max(zmin, 6.0)
            for col in c.inputs + c.features):
        return True  # new categories or values outside the training range: the data's domain broke
    if c.cause is Cause.SILENT_PIPELINE_FAILURE and c.culprit and (cc := tr.columns.get(c.culprit)) is not None:
        return cc.z >= zmin
    if c.cause is Cause.TRAINING_SERVING_SKEW:
        return True
    if c.cause is Cause.MODEL_CHANGE and zmin == 0.0:
        return True  # explains: the outputs moved with it, or the new version differs on the same hours
    if c.cause is Cause.SERVING_INFRASTRUCTURE:
        return any(m.material and m.strength >= zmin for k, m in tr.metrics.items() if k in _SERVING)
    if c.cause is Cause.MODEL_DEGRADATION:
        # Quality itself must have fallen: outputs that moved in a slice belong to whatever moved them.
        # Two labelled metrics falling together are stronger evidence than either alone.
        fell = [m.strength for k, m in tr.metrics.items() if k in _QUALITY and m.material and _got_worse(m)]
        return any(z >= zmin for z in fell) or sum(z >= 0.7 * zmin for z in fell) >= 2
    return any(m.strength >= zmin for m in _output_metrics(tr)) or any(
        m.material and m.strength >= zmin for k, m in tr.metrics.items() if k in _QUALITY)


#: Causes that are a change in the data the model sees: labels can show the model stayed right about it.
_DRIFT_CAUSES = (Cause.UPSTREAM_DATA_CHANGE, Cause.DISTRIBUTION_SHIFT, Cause.TRAINING_SERVING_SKEW)
#: Mature labelled requests needed after a change before a regressor's or classifier's labelled error may clear it.
_MIN_LABELLED_AFTER = 300


def _error_held(tr: Triage, c: _Candidate) -> bool | None:
    """For a regressor or multi-class model with labels after the change: True when its labelled error held.

    Drift that leaves the labelled error (MAE and bias, or accuracy) where it was is the model meeting new
    traffic and staying right about it: a finding, not an incident, however far the inputs moved (a heat wave
    is out of the training range and still predicted well). None when labels cannot tell (a binary model keeps
    its own rules: its decisions moving is itself a change users see).
    """
    if tr.kind not in ("regression", "multiclass"):
        return None
    if c.onset_index is None:
        return _error_matches_reference(tr)
    if c.cause is Cause.TRAINING_SERVING_SKEW:
        return None  # a feature computed differently inside the log is a defect, whatever the labels say
    labelled = tr.series.get("labelled")
    if labelled is None or float(labelled[c.onset_index:].sum()) < _MIN_LABELLED_AFTER:
        return None
    return not any(m.material and _got_worse(m) for k, m in tr.metrics.items() if k in _QUALITY)


def _labelled_error(eng: Engine, table: str, kind: str, where: str) -> tuple[float, float, float] | None:
    """(labelled rows, MAE or error rate, bias) of a table: the error of the predictions against the labels."""
    cond = f"label IS NOT NULL AND prediction IS NOT NULL{' AND ' + where if where else ''}"
    if kind == "regression":
        err = "(CAST(prediction AS DOUBLE) - CAST(label AS DOUBLE))"
        sql = f"SELECT count(*) AS n, avg(abs({err})) AS a, avg({err}) AS b FROM {table} WHERE {cond}"
    else:
        sql = (f"SELECT count(*) AS n, avg(CASE WHEN CAST(label AS VARCHAR) = CAST(prediction AS VARCHAR) "
               f"THEN 0.0 ELSE 1.0 END) AS a, 0.0 AS b FROM {table} WHERE {cond}")
    r = eng.query(sql).to_pylist()[0]
    if not r["n"] or r["a"] is None:
        return None
    return float(r["n"]), float(r["a"]), float(r["b"] or 0.0)


def _error_matches_reference(tr: Triage) -> bool | None:
    """Whether the log's labelled error is that of the reference (training) data: a column unlike training
    throughout the log that leaves the error where training had it moves nothing. None when either lacks labels."""
    ref = tr.case.reference
    if tr.engine is None or ref is None or not tr.case.has_labels or not {"label", "prediction"} <= set(
            ref.column_names):
        return None
    scope = tr.scope if tr.scope and all(k in ref.column_names for k in tr.scope) else None
    tr.engine.register("_mlsleuth_ref_err", ref)
    got = _labelled_error(tr.engine, "log", tr.kind, scope_sql(tr.scope))
    want = _labelled_error(tr.engine, "_mlsleuth_ref_err", tr.kind, scope_sql(scope))
    if got is None or want is None or min(got[0], want[0]) < _MIN_LABELLED_AFTER:
        return None
    if tr.kind == "regression":
        return got[1] <= want[1] * (1 + MAE_REL_CHANGE) and abs(got[2] - want[2]) < BIAS_SHIFT_OF_MAE * want[1]
    return got[1] <= want[1] + MULTICLASS_ACCURACY_DROP


def _culprit_z(c: _Candidate) -> float:
    cc = c.tr.columns.get(c.culprit) if c.tr is not None and c.culprit else None
    return cc.z if cc is not None else 0.0


def _duplicates(c: _Candidate, others: Sequence[_Candidate], *, tol: int) -> bool:
    """A slice candidate that the whole-traffic analysis already found."""
    for o in others:
        if o.cause is not c.cause:
            continue
        same_cols = bool(set(o.features + o.inputs) & set(c.features + c.inputs)) or not (c.features or c.inputs)
        near = o.onset_index is None or c.onset_index is None or abs(o.onset_index - c.onset_index) <= tol
        if same_cols and near:
            return o.material or not c.material
    return False


def _apply_model(tr: Triage, cands: list[_Candidate]) -> str | None:
    """Use the model, when given, to clear or blame it and to rank culprit features by repair."""
    fn = tr.case.score_fn
    if fn is None or tr.engine is None or not tr.score_is_prob:
        return None
    timed = [c for c in cands if c.onset_index is not None]
    if not timed:
        return None
    lead = max(timed, key=lambda c: c.score)
    at = tr.time_of(lead.onset_index)
    ref = tr.case.reference
    order = [c for c in (ref.column_names if ref is not None else tr.case.log.column_names)
             if c.startswith("feature.") and c in tr.case.log.column_names]
    suspects = list(dict.fromkeys(f for c in cands for f in c.features))
    suspects += [c.column for c in tr.columns.values() if c.role is Role.FEATURE and c.changed
                 and c.column not in suspects]
    if at is None or not order:
        return None
    ev = check_model(tr.engine, fn, order, at, suspects, reference=ref)
    if ev is None:
        return None
    note = (f"re-scoring logged features with the model reproduces {100 * (1 - ev.mismatch_before):.0f} % of logged "
            f"scores before the onset and {100 * (1 - ev.mismatch_after):.0f} % after it")
    if ev.reference_auc is not None:
        note += f"; on the reference the model's ROC AUC is {ev.reference_auc:.3f}"
    if ev.model_changed:
        model_cand = next((c for c in cands if c.cause is Cause.MODEL_CHANGE), None)
        if model_cand is None:
            model_cand = _Candidate(Cause.MODEL_CHANGE, 0.0, lead.onset_index, evidence=[],
                                    signal=lead.signal)
            cands.append(model_cand)
        model_cand.score = max(model_cand.score, 0.9)
        model_cand.evidence.insert(0, note + ": the model that served changed at the onset")
    elif ev.model_consistent:
        # Re-scoring checks the scores; a version whose decisions moved on the same scores is not cleared.
        for c in cands:
            if c.cause is Cause.MODEL_CHANGE and not c.decisions_only:
                c.score -= 0.3
        decider = next((c for c in cands if c.cause is Cause.MODEL_CHANGE and c.decisions_only), None)
        if decider is not None:
            decider.evidence.append(note + ": the scores are unchanged, the decisions made from them are not")
        else:
            lead.evidence.append(note + ": the serving model is unchanged, the data is suspect")
    if ev.repaired_share:
        best = sorted(ev.repaired_share.items(), key=lambda kv: -kv[1])
        for c in cands:
            if c.features:
                c.features.sort(key=lambda f: -ev.repaired_share.get(f, -1.0))
                share = ev.repaired_share.get(c.features[0])
                if share is not None:
                    c.score += 0.2 * (share - 0.5)
                    c.evidence.append(f"counterfactual repair: mapping {c.features[0]} back to its pre-onset "
                                      f"distribution removes {share * 100:.0f} % of the score shift")
        note += "; repair shares: " + ", ".join(f"{f} {v * 100:.0f} %" for f, v in best[:4])
    return note


def _with_conf(h: Hypothesis, conf: float) -> Hypothesis:
    from dataclasses import replace

    return replace(h, confidence=round(conf, 3))


def _sources(tr: Triage, columns: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for c in columns:
        for s in tr.case.lineage.sources(c):
            out[s] = None
    return list(out)


def _layers(tr: Triage, hyps: Sequence[Hypothesis]) -> list[Layer]:
    causes = {h.cause for h in hyps}
    top = hyps[0].cause if hyps else None

    def status(names: set[Cause]) -> LayerStatus:
        if top in names:
            return LayerStatus.BROKEN
        return LayerStatus.SUSPECT if causes & names else LayerStatus.OK

    serving_ev = [_metric_sentence(m, tr.time_of(m.split.index)) for k, m in tr.metrics.items()
                  if k in _SERVING and m.material]
    model_ev = [_metric_sentence(m, tr.time_of(m.split.index)) for k, m in tr.metrics.items()
                if k in (*_OUTPUT, "version_mix") and m.material]
    feat_ev = [_describe_column(tr, c, tr.time_of(c.onset_index)) for c in tr.columns.values()
               if c.role is Role.FEATURE and c.changed][:3]
    inp_ev = [_describe_column(tr, c, tr.time_of(c.onset_index)) for c in tr.columns.values()
              if c.role is Role.INPUT and c.changed][:3]
    has_inputs = any(c.role is Role.INPUT for c in tr.columns.values())
    return [
        Layer("serving", status({Cause.SERVING_INFRASTRUCTURE}), tuple(serving_ev)),
        Layer("model", status({Cause.MODEL_CHANGE, Cause.MODEL_DEGRADATION}), tuple(model_ev)),
        Layer("features", status({Cause.SILENT_PIPELINE_FAILURE, Cause.TRAINING_SERVING_SKEW}), tuple(feat_ev)),
        Layer("inputs", status({Cause.DISTRIBUTION_SHIFT, Cause.UPSTREAM_DATA_CHANGE}) if has_inputs
              else LayerStatus.UNKNOWN, tuple(inp_ev)),
        Layer("external", LayerStatus.SUSPECT if any(h.events for h in hyps) else LayerStatus.OK,
              tuple(f"event {e}" for h in hyps[:1] for e in h.events)),
    ]


def _triage_summary(tr: Triage, hyps: Sequence[Hypothesis], symptoms: Sequence[Symptom]) -> dict[str, Any]:
    log = tr.case.log
    out: dict[str, Any] = {
        "rows": log.num_rows,
        "window_seconds": tr.window,
        "from": iso(tr.starts[0]) if tr.starts else None,
        "to": iso(tr.starts[-1] + timedelta(seconds=tr.window)) if tr.starts else None,
        "labelled_rows": int(tr.series["labelled"].sum()) if "labelled" in tr.series else 0,
        "what_changed": [s.metric for s in symptoms],
        "when": iso(hyps[0].onset) if hyps else None,
        "who": [dict(s) for s in hyps[0].segments] if hyps else [],
    }
    if hyps and hyps[0].onset is not None:
        i = int(np.searchsorted([s.timestamp() for s in tr.starts], hyps[0].onset.timestamp(), side="right")) - 1
        out["affected_requests"] = int(tr.rows[max(i, 0):].sum())
    if symptoms:
        s = symptoms[0]
        out["how_bad"] = {"metric": s.metric, "before": s.before, "after": s.after}
        out["getting_worse"] = s.trend
    if tr.case.events and hyps and hyps[0].onset is not None:
        t = hyps[0].onset
        out["events_48h_before_onset"] = [e.id for e in tr.case.events
                                          if timedelta(0) <= t - e.ts <= timedelta(hours=48)]
    return out


def diagnose(
    log: str | Path | TableLike,
    *,
    reference: str | Path | TableLike | None = None,
    labels: str | Path | TableLike | None = None,
    events: str | Path | Sequence[ChangeEvent] | None = None,
    lineage: str | Path | Lineage | None = None,
    model: str | Path | ScoreFn | None = None,
    config: ModelConfig | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    symptom: str | None = None,
    engine: Engine | None = None,
    model_name: str | None = None,
    ts_format: str | None = None,
    delimiter: str | None = None,
    charts: bool = True,
) -> Diagnosis:
    """Find what is wrong in a prediction log, with no symptom given.

    Parameters
    ----------
    log
        The prediction log: a Parquet, CSV, JSON Lines, JSON array or Feather/Arrow IPC file, a folder
        of them, or data in memory (an Arrow table, a pandas or polars DataFrame).
    reference, labels, events, lineage, model
        Optional inputs (docs/contract.md, the inputs); each one that is missing narrows what is said,
        and ``Diagnosis.skipped`` says which analyses were skipped and why. The reference and the
        labels may be files or DataFrames, as the log.
    config
        Role, segment and positive-class overrides.
    since, until
        Only look at requests in ``[since, until)``.
    symptom
        A metric to focus on, such as ``false_positive_rate``.
    engine
        The query engine (an in-memory DuckDB by default).
    model_name
        The model to diagnose when the log holds the requests of several (its ``model`` column).
    ts_format
        A strptime layout for text times that are not ISO 8601, e.g. ``%d/%m/%Y %H:%M``.
    delimiter
        The field separator of CSV files, e.g. ``;`` (decimal commas are then read as numbers).
    charts
        Compute the chart data of md/html reports (``Diagnosis.charts``); False skips its queries.

    Returns
    -------
    Diagnosis
        The verdict and the ranked hypotheses; ``to_dict()`` gives the diagnosis JSON of docs/contract.md.

    Examples
    --------
    >>> d = diagnose("case/log.parquet", reference="case/reference.parquet")  # doctest: +SKIP
    >>> d.verdict.value, d.top.cause.value  # doctest: +SKIP
    ('incident', 'upstream_data_change')
    """
    case = load_case(log, reference=reference, labels=labels, events=events, lineage=lineage, model=model,
                     config=config, since=since, until=until, model_name=model_name, ts_format=ts_format,
                     delimiter=delimiter)
    return diagnose_case(case, engine=engine, symptom=symptom, charts=charts)
