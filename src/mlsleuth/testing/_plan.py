"""Resolving a cause and a variation into a fully determined :class:`CaseSpec`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from mlsleuth.errors import ConfigError
from mlsleuth.testing._spec import (
    SEGMENT_VALUES,
    CaseSpec,
    Cause,
    DegradationKind,
    IncidentSpec,
    InfraFault,
    LabelSpec,
    Mode,
    ModelChangeKind,
    PipelineFault,
    Progression,
    ShiftKind,
    SkewKind,
    UpstreamChange,
    Variation,
    modes_of,
)

__all__ = ["DEFAULT_START", "plan_case", "suite_variation"]

#: Monday 2026-03-02 00:00 UTC: the default first instant of a generated week.
DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)

_PIPELINE_TARGETS = ("feature.amount_to_avg_ratio", "feature.txn_velocity", "feature.merchant_risk",
                     "feature.account_age_log", "feature.log_amount")
_SKEW_FEATURES = {SkewKind.LOG_BASE: "feature.log_amount", SkewKind.WINDOW: "feature.amount_to_avg_ratio",
                  SkewKind.UNITS: "feature.account_age_log"}


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def _at(start: datetime, rng: np.random.Generator, lo_days: float, hi_days: float) -> datetime:
    return _minute(start + timedelta(days=float(rng.uniform(lo_days, hi_days))))


def _minutes(rng: np.random.Generator, lo: float, hi: float) -> timedelta:
    return timedelta(minutes=int(rng.integers(int(lo), int(hi) + 1)))


def _resolve_mode(cause: Cause, variation: Variation, rng: np.random.Generator) -> Mode:
    if variation.mode is not None:
        return variation.mode
    modes = modes_of(cause)
    return modes[int(rng.integers(len(modes)))]


def plan_case(
    cause: Cause | None,
    *,
    seed: int,
    variation: Variation | None = None,
    rows: int = 150_000,
    world_seed: int = 0,
    start: datetime = DEFAULT_START,
    days: int = 7,
    labels: LabelSpec | None = None,
) -> CaseSpec:
    """Resolve a cause and a variation into a :class:`CaseSpec` (every random choice made from ``seed``).

    Parameters
    ----------
    cause
        The incident's cause, or ``None`` for a healthy week.
    seed
        Fixes every choice left open (mode, onset, magnitude, target) and the generated data.
    variation
        How the case varies (:class:`Variation`); ``None`` for the defaults.
    rows
        Requests in the week.
    world_seed
        The world (model, reference) the case lives in.
    start, days
        The first instant of the log (UTC) and its length in days (at least 3).
    labels
        When labels arrive; ``None`` for the default :class:`LabelSpec` (ignored when the variation has no labels).

    Raises
    ------
    ConfigError
        When the variation does not fit the cause, or ``rows`` / ``days`` / ``start`` are out of range.
    """
    variation = variation or Variation()
    variation.check(cause)
    if rows < 100:
        raise ConfigError(f"expected at least 100 rows, got {rows}", column="rows")
    if days < 3:
        raise ConfigError(f"expected a log of at least 3 days, got {days}", column="days")
    if start.tzinfo is None:
        raise ConfigError(f"expected a timezone-aware start (UTC), got {start!r}", column="start")
    start = start.astimezone(UTC)
    rng = np.random.default_rng([seed, 11])
    end = start + timedelta(days=days)
    scale = days / 7.0
    incident = None
    name = "healthy"
    if cause is not None:
        mode = _resolve_mode(cause, variation, rng)
        incident = _plan_incident(cause, mode, variation, rng, start, scale)
        name = f"{cause.value}-{mode.value}"
        if variation.onset is not None:
            pinned = variation.onset.astimezone(UTC)
            if not start < pinned < end:
                raise ConfigError(f"expected an onset inside the log [{start}, {end}), got {pinned}",
                                  column="variation.onset")
            if incident.start is not None:
                shift = pinned - incident.start
                full = None if incident.full is None else min(incident.full + shift, end)
                incident = replace(incident, start=pinned, full=full)
    onset = None if incident is None else incident.start
    harmless = None
    if variation.harmless_drift:
        harmless = _away_from(onset, start, rng, 0.5 * scale, 6.0 * scale, timedelta(hours=8))
    release = None
    if variation.decoy_events:
        release = _away_from(onset, start, rng, 0.5 * scale, 6.5 * scale, timedelta(hours=12))
        if (incident is not None and incident.cause is Cause.SILENT_PIPELINE_FAILURE and onset is not None
                and release > onset):
            release = None if onset - start < timedelta(hours=14) else _minute(start + (onset - start) / 3)
    label_spec = (labels or LabelSpec()) if variation.labels else None
    desc = "a healthy week" if incident is None else _describe(incident)
    return CaseSpec(
        name=f"{name}-s{seed}", seed=seed, world_seed=world_seed, rows=rows, start=start, days=days,
        incident=incident, labels=label_spec, events=variation.events, decoy_events=variation.decoy_events,
        lineage=variation.lineage, model=variation.model, harmless_drift_at=harmless, pipeline_release_at=release,
        description=desc)


def _away_from(onset: datetime | None, start: datetime, rng: np.random.Generator, lo: float, hi: float,
               gap: timedelta) -> datetime:
    for _ in range(20):
        t = _at(start, rng, lo, hi)
        if onset is None or abs(t - onset) >= gap:
            return t
    return _at(start, rng, lo, lo + 0.1)


def _timing(progression: Progression, rng: np.random.Generator, start: datetime, scale: float,
            lo: float = 1.5, hi: float = 5.3) -> tuple[datetime, datetime]:
    if progression is Progression.SUDDEN:
        t = _at(start, rng, lo * scale, hi * scale)
        return t, t
    t = _at(start, rng, 1.0 * scale, 3.5 * scale)
    return t, _minute(t + timedelta(days=float(rng.uniform(1.5, 3.0)) * scale))


def _plan_incident(cause: Cause, mode: Mode, variation: Variation, rng: np.random.Generator, start: datetime,
                   scale: float) -> IncidentSpec:
    prog = variation.progression
    seg = variation.segment
    t0, t1 = _timing(prog, rng, start, scale)
    base = IncidentSpec(cause=cause, mode=mode, progression=prog, start=t0, full=t1, segment=seg, magnitude=1.0,
                        event_lead=_minutes(rng, 5, 30))
    if isinstance(mode, UpstreamChange):
        if mode is UpstreamChange.SCALE:
            factor = rng.uniform(0.55, 0.75) if rng.random() < 0.6 else rng.uniform(1.5, 2.2)
            return replace(base, magnitude=round(float(factor), 2), input="input.avg_amount_30d")
        if mode is UpstreamChange.UNITS:
            return replace(base, magnitude=100.0, input="input.amount", detail="amounts in cents")
        if mode is UpstreamChange.SENTINEL:
            col = "input.account_age_days" if rng.random() < 0.5 else "input.txn_count_24h"
            return replace(base, magnitude=-1.0, share=round(float(rng.uniform(0.4, 0.9)), 2), input=col,
                           detail="-1 for unknown")
        if mode is UpstreamChange.CATEGORY_RENAMED:
            if seg is None and rng.random() < 0.4:
                return replace(base, segment=("country", "GB"), input="input.country", detail="GB->UK")
            old, new = (("electronics", "consumer_electronics") if rng.random() < 0.5 else ("grocery", "groceries"))
            return replace(base, input="input.merchant_category", detail=f"{old}->{new}")
        col = "input.txn_count_24h" if rng.random() < 0.5 else "input.avg_amount_30d"
        detail = "counts declined attempts over 7 days" if col == "input.txn_count_24h" else "30-day sum, not mean"
        return replace(base, input=col, detail=detail)
    if isinstance(mode, PipelineFault):
        feature = _PIPELINE_TARGETS[int(rng.integers(len(_PIPELINE_TARGETS)))]
        if mode is PipelineFault.DROPPED_JOIN and feature == "feature.log_amount":
            feature = "feature.merchant_risk"
        return replace(base, feature=feature, event_lead=_minutes(rng, 5, 45))
    if isinstance(mode, SkewKind):
        if variation.from_start:
            return replace(base, start=None, full=None, feature=_SKEW_FEATURES[mode], event_lead=None)
        return replace(base, feature=_SKEW_FEATURES[mode], event_lead=_minutes(rng, 1, 5))
    if isinstance(mode, ShiftKind):
        if mode is ShiftKind.COUNTRY_MIX:
            if seg is None:
                seg = ("region", ("APAC", "LATAM")[int(rng.integers(2))])
            elif seg[0] != "region":
                raise ConfigError(f"a country-mix shift grows one region; expected a segment ('region', ...), "
                                  f"got {seg!r}", column="variation.segment")
            return replace(base, segment=seg, magnitude=round(float(rng.uniform(1.0, 2.0)), 2),
                           detail=f"market launch in {seg[1]}")
        if mode is ShiftKind.CAMPAIGN:
            return replace(base, segment=seg or ("channel", "app"), magnitude=round(float(rng.uniform(0.5, 1.0)), 2),
                           detail="sign-up campaign")
        if mode is ShiftKind.MERCHANT_MIX:
            return replace(base, magnitude=round(float(rng.uniform(3.0, 5.0)), 2), event_lead=None,
                           input="input.merchant_category")
        return replace(base, magnitude=round(float(rng.uniform(1.5, 2.0)), 2), input="input.amount", event_lead=None)
    if isinstance(mode, DegradationKind):
        if prog is Progression.GRADUAL:
            t0 = _at(start, rng, 0.3 * scale, 1.0 * scale)
            t1 = _minute(t0 + timedelta(days=float(rng.uniform(3.5, 4.5)) * scale))
        else:
            t0, t1 = _timing(prog, rng, start, scale, 1.5, 3.5)
        return replace(base, start=t0, full=t1, event_lead=None)
    if isinstance(mode, ModelChangeKind):
        share = 1.0 if variation.canary_share is None else float(variation.canary_share)
        base = replace(base, share=share, event_lead=_minutes(rng, 2, 15), detail="v13")
        if mode is ModelChangeKind.MISCALIBRATED:
            return replace(base, magnitude=round(float(rng.uniform(0.9, 1.5)), 2))
        if mode is ModelChangeKind.BAD_TRAINING_DATA:
            return base
        return replace(base, magnitude=round(float(rng.uniform(0.94, 0.96)), 3), detail="v12.1")
    assert isinstance(mode, InfraFault)
    base = replace(base, event_lead=_minutes(rng, 1, 20))
    if mode is InfraFault.LATENCY:
        return replace(base, magnitude=round(float(rng.uniform(4.0, 10.0)), 1))
    if mode is InfraFault.ERRORS:
        return replace(base, share=round(float(rng.uniform(0.05, 0.25)), 3))
    return replace(base, magnitude=0.01, share=round(float(rng.uniform(0.15, 0.5)), 3))


def _describe(inc: IncidentSpec) -> str:
    where = "all traffic" if inc.segment is None else f"{inc.segment[0]}={inc.segment[1]}"
    when = ("from the first request" if inc.start is None else
            f"from {inc.start:%a %Y-%m-%d %H:%M} UTC" + (" (gradual)" if inc.progression is Progression.GRADUAL
                                                         else ""))
    what = {
        Cause.UPSTREAM_DATA_CHANGE: f"upstream change of {inc.input} ({inc.mode.value}"
                                    + (f", x{inc.magnitude}" if inc.mode is UpstreamChange.SCALE else "")
                                    + (f", {inc.detail}" if inc.detail else "") + ")",
        Cause.SILENT_PIPELINE_FAILURE: f"the feature pipeline writes {inc.mode.value} for {inc.feature}",
        Cause.TRAINING_SERVING_SKEW: f"serving computes {inc.feature} differently ({inc.mode.value})",
        Cause.DISTRIBUTION_SHIFT: f"the population shifts ({inc.mode.value}"
                                  + (f", {inc.detail}" if inc.detail else "") + ")",
        Cause.MODEL_DEGRADATION: f"concept drift ({inc.mode.value}): labelled performance decays",
        Cause.MODEL_CHANGE: f"model {inc.detail} deployed ({inc.mode.value}"
                            + (f", canary {inc.share:.0%}" if inc.share < 1.0 else "") + ")",
        Cause.SERVING_INFRASTRUCTURE: f"serving fault ({inc.mode.value})",
    }[inc.cause]
    return f"{what}, {where}, {when}"


def suite_variation(cause: Cause | None, rng: np.random.Generator, mode: Mode | None = None) -> Variation:
    """Draw a varied :class:`Variation` for a cause, as the accuracy suite does (``mode``: pin the variant)."""
    decoys = bool(rng.random() < 0.8)
    if cause is None:
        return Variation(decoy_events=decoys, harmless_drift=bool(rng.random() < 0.5),
                         labels=bool(rng.random() < 0.9), events=bool(rng.random() < 0.9))
    if mode is None:
        modes = modes_of(cause)
        mode = modes[int(rng.integers(len(modes)))]
    gradual_p = {Cause.MODEL_DEGRADATION: 0.6, Cause.TRAINING_SERVING_SKEW: 0.1, Cause.MODEL_CHANGE: 0.15}
    prog = Progression.GRADUAL if rng.random() < gradual_p.get(cause, 0.25) else Progression.SUDDEN
    columns = ("region",) if cause in (Cause.SERVING_INFRASTRUCTURE, Cause.MODEL_CHANGE,
                                       Cause.UPSTREAM_DATA_CHANGE) else ("region", "channel")
    segment = None
    if mode is ShiftKind.COUNTRY_MIX:
        segment = ("region", ("APAC", "LATAM", "EU")[int(rng.integers(3))])
    elif mode is ShiftKind.CAMPAIGN:
        segment = ("channel", ("app", "web")[int(rng.integers(2))])
    elif rng.random() < 0.35:
        col = columns[int(rng.integers(len(columns)))]
        values = SEGMENT_VALUES[col]
        segment = (col, values[int(rng.integers(len(values)))])
    canary = None
    if cause is Cause.MODEL_CHANGE and rng.random() < 0.3:
        canary = round(float(rng.uniform(0.1, 0.3)), 2)
    return Variation(
        mode=mode, progression=prog, segment=segment, decoy_events=decoys,
        harmless_drift=bool(rng.random() < 0.3),
        labels=True if cause is Cause.MODEL_DEGRADATION else bool(rng.random() < 0.9),
        events=bool(rng.random() < 0.9), canary_share=canary,
        from_start=bool(cause is Cause.TRAINING_SERVING_SKEW and rng.random() < 0.5))
