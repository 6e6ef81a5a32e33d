"""Who is affected (segments) and what changed (events), once an onset and a signal are known."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis._thresholds import DEFAULT_THRESHOLDS, Thresholds
from mlsleuth.schema import ChangeEvent, Lineage
from mlsleuth.store import Engine
from mlsleuth.store._sql_case import before_after_by_value, scope_condition

__all__ = ["RankedEvent", "SegmentEffect", "affected_segments", "rank_events", "scope_sql"]


@dataclass(frozen=True)
class SegmentEffect:
    """How much a signal changed at the onset inside one segment and outside it."""

    segment: dict[str, str]
    delta: float
    delta_rest: float
    share: float
    before: float
    after: float


#: The SQL condition selecting a segment such as ``{"region": "EU"}`` ("" for all traffic).
scope_sql = scope_condition


#: A segment value's change: (value, before, after, n_before, n_after, rest_delta).
_Effect = tuple[str, float, float, float, float, float]


def _effects(eng: Engine, signal: str, onset: datetime, column: str, where: str = "", *,
             min_rows: float = DEFAULT_THRESHOLDS.segment_min_rows) -> list[_Effect]:
    """Per value of ``column``: (value, before, after, n_before, n_after, rest_delta)."""
    rows = eng.query(before_after_by_value(column, signal, onset, where)).to_pylist()
    stats: dict[str, list[float]] = {}
    for r in rows:
        if r["v"] is None:
            continue
        st = stats.setdefault(r["v"], [0.0, 0.0, 0.0, 0.0])  # n_before, s_before, n_after, s_after
        k = 2 if r["a"] else 0
        st[k] += r["n"]
        st[k + 1] += r["s"] or 0.0
    tot = [sum(s[i] for s in stats.values()) for i in range(4)]
    out = []
    for v, (nb, sb, na, sa) in stats.items():
        if nb < min_rows or na < min_rows:
            continue
        rb, ra = sb / nb, sa / na
        onb, osb, ona, osa = tot[0] - nb, tot[1] - sb, tot[2] - na, tot[3] - sa
        rest = (osa / ona - osb / onb) if onb > 0 and ona > 0 else 0.0
        out.append((v, rb, ra, nb, na, rest))
    return out


def _best_value(eff: list[_Effect], col: str, total_after: float,
                th: Thresholds) -> list[SegmentEffect]:
    """The value of one column whose change the rest of the traffic does not share, and a second one like it."""
    eff.sort(key=lambda e: -abs(e[2] - e[1]))
    v, rb, ra, nb, na, rest = eff[0]
    d = ra - rb
    se = math.sqrt(max(rb * (1 - rb), 1e-4) / nb + max(ra * (1 - ra), 1e-4) / na) if 0 <= rb <= 1 else 0.0
    if abs(d) < 1e-9 or (se and abs(d) < th.segment_min_z * se) or abs(rest) > th.segment_rest_share * abs(d):
        return []
    out = [SegmentEffect({col: v}, d, rest, na / max(sum(e[4] for e in eff), 1.0), rb, ra)]
    # A second affected value in the same column (e.g. two regions hit).
    for v2, rb2, ra2, _nb2, na2, _r2 in eff[1:3]:
        if abs(ra2 - rb2) >= th.segment_second_share * abs(d) and abs(rest) > th.segment_second_rest_share * abs(d):
            out.append(SegmentEffect({col: v2}, ra2 - rb2, rest, na2 / max(total_after, 1.0), rb2, ra2))
    return out


#: Segments that account for less than this share of the best one's part of the change rank after it.
_MOSTLY = 0.7


def _clean(s: SegmentEffect) -> float:
    """A segment's change, less what the rest of the traffic shares."""
    return abs(s.delta) * max(0.0, 1 - abs(s.delta_rest) / max(abs(s.delta), 1e-9))


def _refine(eng: Engine, signal: str, onset: datetime, segment_columns: Sequence[str], where: str,
            top: SegmentEffect, total_after: float, th: Thresholds) -> SegmentEffect | None:
    """``top`` narrowed by one more attribute that holds its change (``{region: EU, channel: web}``), or None."""
    (c0, v0), = top.segment.items()
    inner = scope_sql({c0: v0})
    refined = []
    for col in segment_columns:
        if col == c0:
            continue
        eff = _effects(eng, signal, onset, col, f"({where}) AND {inner}" if where else inner,
                       min_rows=th.segment_min_rows)
        if len(eff) < 2:
            continue
        eff.sort(key=lambda e: -abs(e[2] - e[1]))
        v, rb, ra, _nb, na, rest = eff[0]
        d = ra - rb
        if abs(d) >= th.segment_second_share * abs(top.delta) and abs(rest) <= th.segment_refine_rest_share * abs(d):
            refined.append(SegmentEffect({c0: v0, col: v}, d, rest, na / max(total_after, 1.0), rb, ra))
    if not refined:
        return None
    refined.sort(key=lambda s: -abs(s.delta))
    return refined[0]


def affected_segments(eng: Engine, signal: str, onset: datetime, segment_columns: Sequence[str], *,
                      where: str = "", thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[SegmentEffect]:
    """Segments where the change concentrates, most affected first; empty when it is everywhere.

    For each segment column, the value with the largest change is compared with the rest
    of the traffic (a risk-ratio contrast in the manner of MacroBase/DIFF); the segment is
    affected when the rest changed less than ``segment_rest_share`` as much. One more attribute is
    then tried inside it, to narrow ``{region: EU}`` to ``{region: EU, channel: web}`` when the
    change is confined to that combination.
    """
    th = thresholds
    best: list[SegmentEffect] = []
    total_after = 0.0
    for col in segment_columns:
        eff = _effects(eng, signal, onset, col, where, min_rows=th.segment_min_rows)
        if len(eff) < 2:
            continue
        total_after = max(total_after, sum(e[4] for e in eff))
        best += _best_value(eff, col, total_after, th)
    if not best:
        return []
    # Rank by how much of the change a segment accounts for (its excess times its share), then by
    # how concentrated it is: a coarser attribute that holds the whole change (region=EU) beats a
    # finer one holding a third of it (country=DE), and the tighter of two that hold all of it wins.
    most = max(_clean(s) * s.share for s in best)
    best.sort(key=lambda s: (_clean(s) * s.share < _MOSTLY * most, -_clean(s), -s.share))
    top = best[0]
    refined = _refine(eng, signal, onset, segment_columns, where, top, total_after, th)
    if refined is not None:
        return [refined]
    # Keep only segments from the strongest column, plus the single best of other columns only when distinct.
    c0 = next(iter(top.segment))
    return [s for s in best if next(iter(s.segment)) == c0][:3]


@dataclass(frozen=True)
class RankedEvent:
    """A change event with how well it explains the incident."""

    event: ChangeEvent
    score: float
    reasons: tuple[str, ...]


# Business changes: what moves a population, or (concept drift has no technical cause) sets off a decay.
_BUSINESS = ("marketing", "campaign", "launch", "business", "product", "partner", "market")
_KIND_FIT: dict[Cause, tuple[str, ...]] = {
    Cause.UPSTREAM_DATA_CHANGE: ("upstream", "schema_change", "data_backfill", "pipeline", "migration"),
    Cause.SILENT_PIPELINE_FAILURE: ("pipeline", "data_backfill", "config", "deployment", "job"),
    Cause.TRAINING_SERVING_SKEW: ("deployment", "config", "pipeline", "feature"),
    Cause.DISTRIBUTION_SHIFT: _BUSINESS,
    Cause.MODEL_DEGRADATION: _BUSINESS,
    Cause.MODEL_CHANGE: ("deployment", "model", "rollout", "release", "config"),
    Cause.SERVING_INFRASTRUCTURE: ("infrastructure", "deployment", "config", "scaling", "network", "outage"),
}
_TARGET_FIT: dict[Cause, tuple[str, ...]] = {
    Cause.UPSTREAM_DATA_CHANGE: ("source",),
    Cause.SILENT_PIPELINE_FAILURE: ("job", "feature", "pipeline"),
    Cause.TRAINING_SERVING_SKEW: ("service", "job", "feature", "pipeline"),
    Cause.DISTRIBUTION_SHIFT: _BUSINESS,
    Cause.MODEL_DEGRADATION: _BUSINESS,
    Cause.MODEL_CHANGE: ("model",),
    Cause.SERVING_INFRASTRUCTURE: ("service", "infra", "cluster", "region", "host"),
}
#: Words of an event on the serving path (an infrastructure incident's events).
_SERVING_WORDS = ("serving", "inference", "gateway", "feature store", "store", "model")

# How an event's score is made: time match x (base + the weighted fits), each fit in 0-1 (scope up to 1.3).
#: What every event in the time window gets.
_W_BASE = 0.15
#: Weight of the scope fit: the event's target feeds the culprits, or names them, the model or the segment.
_W_SCOPE = 0.45
#: Weight of the kind fit (a ``pipeline`` event for a pipeline failure).
_W_KIND = 0.25
#: Weight of the target-kind fit (a ``source`` target for an upstream change).
_W_TARGET = 0.15
#: The most the scope fit counts (a target on the culprits' path that also names the segment).
_SCOPE_CAP = 1.3
#: Scope fit of a target in the culprits' lineage: this plus _SCOPE_COVER times the share of culprits it feeds.
_SCOPE_LINEAGE, _SCOPE_COVER = 0.7, 0.3
#: Scope fit of an event that mentions a culprit column or source in its text.
_SCOPE_MENTION = 0.6
#: Scope fit of a model event: the diagnosed model for a model change, or any diagnosed model otherwise.
_SCOPE_MODEL_CHANGE, _SCOPE_MODEL = 0.8, 0.3
#: Scope fit of a service or job named after the diagnosed model.
_SCOPE_NAMED_AFTER_MODEL = 0.5
#: Scope fit of an event on the serving path, for an infrastructure incident.
_SCOPE_SERVING = 0.6
#: Added to the scope fit when the event names the affected segment.
_SCOPE_SEGMENT = 0.3
#: Time match of an event logged after a sudden onset: within 5 minutes, a quarter-hour, later.
_LAG_SCORES = ((5 / 60, 0.9), (0.25, 0.4))
_LAG_LATE = 0.15
#: Time match with no onset: an event at the log's start, or at any other time.
_AT_START, _ANY_TIME = 0.6, 0.35
#: Score factors of an event on another model, and of a routine event.
_OTHER_MODEL, _ROUTINE = 0.5, 0.6


def _routine_key(ev: ChangeEvent) -> tuple[str, str, str]:
    # Numbers (dates, versions, run ids) differ between runs of the same job.
    return ev.kind.lower(), ev.target.lower(), re.sub(r"[0-9]+", "#", ev.description.lower())


def _routine_counts(events: Sequence[ChangeEvent]) -> dict[tuple[str, str, str], int]:
    """How often each (kind, target, text) recurs, for events that recur on at least two days."""
    days: dict[tuple[str, str, str], set[object]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for ev in events:
        key = _routine_key(ev)
        days.setdefault(key, set()).add(ev.ts.date())
        counts[key] = counts.get(key, 0) + 1
    return {k: n for k, n in counts.items() if len(days[k]) >= 2}


def _norm(text: str) -> str:
    text = text.lower()
    for p in ("feature.", "input.", "source:", "job:", "feature:", "model:", "service:", "lineage."):
        text = text.replace(p, "")
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


@dataclass(frozen=True)
class _Scope:
    """What an event may touch to implicate the culprits: computed once per ranking."""

    per_col: tuple[frozenset[str], ...]  # the names each culprit column reaches through lineage, first first
    weights: tuple[float, ...]  # the first culprit weighs most
    segment_words: frozenset[str]
    model_words: frozenset[str]

    @property
    def names(self) -> frozenset[str]:
        return frozenset().union(*self.per_col)


def _scope_of(columns: Sequence[str], lineage: Lineage, segments: Sequence[dict[str, str]],
              model_names: Sequence[str]) -> _Scope:
    per_col = []
    for c in columns:
        reach = {_norm(c)} | {_norm(a) for a in lineage.ancestors(c)} | {_norm(d) for d in lineage.descendants(c)}
        reach.discard("")
        per_col.append(frozenset(reach))
    return _Scope(tuple(per_col), tuple(1.0 / (1 + i) for i in range(len(per_col))),
                  frozenset(_norm(v) for s in segments for v in s.values()), frozenset(_norm(m) for m in model_names))


def _time_match(ev: ChangeEvent, onset: datetime | None, log_start: datetime | None, gradual: bool,
                th: Thresholds) -> tuple[float, str | None] | None:
    """How well the event's time fits the onset, and the reason; None when it is outside the window."""
    if onset is None:
        # No single onset: the event that put the broken state in place precedes the log, or any time.
        at_start = log_start is None or ev.ts <= log_start + timedelta(hours=th.event_log_start_hours)
        return (_AT_START if at_start else _ANY_TIME), None
    dt = (onset - ev.ts).total_seconds() / 3600.0
    if dt < -(th.event_lag_gradual_hours if gradual else th.event_lag_hours) or dt > th.event_lead_hours:
        return None
    reason = f"{abs(dt):.1f} h {'before' if dt >= 0 else 'after'} the onset"
    if gradual:
        # The start of a slow change is an estimate, good to several hours either way.
        return math.exp(-abs(dt) / th.event_decay_gradual_hours), reason
    if dt >= 0:
        return math.exp(-dt / th.event_decay_hours), reason
    # Logged after the onset: a cause cannot follow its effect, but clocks and logs lag a little,
    # and an onset read from the rows is good to a few minutes.
    return next((s for lag, s in _LAG_SCORES if dt >= -lag), _LAG_LATE), reason


def _scope_match(ev: ChangeEvent, scope: _Scope, cause: Cause) -> tuple[float, list[str], bool]:
    """How well the event's target and text fit the culprits, the reasons, and whether it is another model's."""
    reasons = []
    tk = (ev.target_kind or "").lower()
    target = _norm(ev.target_name if ev.target_kind else ev.target)
    text = _norm(f"{ev.target} {ev.description}")
    names = scope.names
    fit = 0.0
    if target and target in names:
        cover = sum(w for w, reach in zip(scope.weights, scope.per_col, strict=True) if target in reach) \
            / sum(scope.weights)
        fit = _SCOPE_LINEAGE + _SCOPE_COVER * cover
        reasons.append(f"its target {ev.target} feeds the culprit columns")
    elif any(s and (s in text.split() or f" {s} " in f" {text} ") for s in names if len(s) > 3):
        fit = _SCOPE_MENTION
        reasons.append("it mentions a culprit column or source")
    models = scope.model_words
    other_model = tk == "model" and bool(models) and target not in models
    if tk == "model" and not other_model and (cause is Cause.MODEL_CHANGE or target in models):
        fit = max(fit, _SCOPE_MODEL_CHANGE if cause is Cause.MODEL_CHANGE else _SCOPE_MODEL)
    elif tk != "model" and models & set(target.split()) and cause is not Cause.MODEL_DEGRADATION:
        # A service or job named after the diagnosed model (fraud-serving for fraud) is on its path;
        # but quality that decayed while the data held up does not implicate the data's path.
        fit = max(fit, _SCOPE_NAMED_AFTER_MODEL)
        reasons.append("its target is named after the model")
    if cause is Cause.SERVING_INFRASTRUCTURE and any(
            w in text.split() for w in (*_SERVING_WORDS, *models)) | ("feature store" in text):
        fit = max(fit, _SCOPE_SERVING)
        reasons.append("it touches the serving path")
    if scope.segment_words and any(w and w in text.split() for w in scope.segment_words):
        fit += _SCOPE_SEGMENT
        reasons.append("it names the affected segment")
    return fit, reasons, other_model


def rank_events(events: Sequence[ChangeEvent], *, onset: datetime | None, cause: Cause, columns: Sequence[str],
                lineage: Lineage, segments: Sequence[dict[str, str]], model_names: Sequence[str] = (),
                log_start: datetime | None = None, gradual: bool = False,
                thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[RankedEvent]:
    """Rank change events by time alignment, scope overlap (through lineage) and fit with the cause.

    An event on something every culprit column depends on ranks above one on something only the
    first depends on, and a routine event (the same kind, target and text recurring, like a nightly
    job) ranks below a one-off change: it ran on quiet days too.
    """
    scope = _scope_of(columns, lineage, segments, model_names)
    routine = _routine_counts(events)
    out = []
    for ev in events:
        timed = _time_match(ev, onset, log_start, gradual, thresholds)
        if timed is None:
            continue
        time_score, when = timed
        scope_score, reasons, other_model = _scope_match(ev, scope, cause)
        if when is not None:
            reasons.insert(0, when)
        tk = (ev.target_kind or "").lower()
        kind_score = 1.0 if any(k in ev.kind.lower() for k in _KIND_FIT[cause]) else 0.0
        tfit = 1.0 if tk and any(tk.startswith(k) for k in _TARGET_FIT[cause]) else 0.0
        if kind_score:
            reasons.append(f"a {ev.kind} fits {cause.value}")
        score = time_score * (_W_BASE + _W_SCOPE * min(scope_score, _SCOPE_CAP) + _W_KIND * kind_score
                              + _W_TARGET * tfit)
        if other_model:
            score *= _OTHER_MODEL
            reasons.append("it changed another model")
        if (times := routine.get(_routine_key(ev), 0)) >= thresholds.routine_event_count:
            score *= _ROUTINE
            reasons.append(f"a routine event ({times} alike in the log)")
        out.append(RankedEvent(ev, score, tuple(reasons)))
    out.sort(key=lambda r: -r.score)
    return out
