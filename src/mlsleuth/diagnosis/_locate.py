"""Who is affected (segments) and what changed (events), once an onset and a signal are known."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mlsleuth.diagnosis._data import ts_sql
from mlsleuth.diagnosis._result import Cause
from mlsleuth.monitors._windows import quote
from mlsleuth.schema import ChangeEvent, Lineage
from mlsleuth.store import Engine
from mlsleuth.store._engine import quote_literal

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


def scope_sql(scope: dict[str, str] | None) -> str:
    """The SQL condition selecting a segment such as ``{"region": "EU"}`` ("" for all traffic)."""
    if not scope:
        return ""
    return " AND ".join(f"CAST({quote(k)} AS VARCHAR) = {quote_literal(v)}" for k, v in scope.items())


def _effects(eng: Engine, signal: str, onset: datetime, column: str, where: str = "",
             end: datetime | None = None) -> list[tuple[str, float, float, float, float, float]]:
    """Per value of ``column``: (value, before, after, n_before, n_after, rest_delta)."""
    cond = f"WHERE {where}" if where else ""
    q = quote(column)
    rows = eng.query(
        f"SELECT CAST({q} AS VARCHAR) AS v, CASE WHEN ts >= {ts_sql(onset)} THEN 1 ELSE 0 END AS a, "
        f"count({signal}) AS n, sum(CAST(({signal}) AS DOUBLE)) AS s FROM log {cond} GROUP BY 1, 2").to_pylist()
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
        if nb < 5 or na < 5:
            continue
        rb, ra = sb / nb, sa / na
        onb, osb, ona, osa = tot[0] - nb, tot[1] - sb, tot[2] - na, tot[3] - sa
        rest = (osa / ona - osb / onb) if onb > 0 and ona > 0 else 0.0
        out.append((v, rb, ra, nb, na, rest))
    return out


def affected_segments(eng: Engine, signal: str, onset: datetime, segment_columns: Sequence[str], *,
                      where: str = "") -> list[SegmentEffect]:
    """Segments where the change concentrates, most affected first; empty when it is everywhere.

    For each segment column, the value with the largest change is compared with the rest
    of the traffic (a risk-ratio contrast in the manner of MacroBase/DIFF); the segment is
    affected when the rest changed less than a quarter as much. One more attribute is then
    tried inside it, to narrow ``{region: EU}`` to ``{region: EU, channel: web}`` when the
    change is confined to that combination.
    """
    best: list[SegmentEffect] = []
    total_after = 0.0
    for col in segment_columns:
        eff = _effects(eng, signal, onset, col, where)
        if len(eff) < 2:
            continue
        total_after = max(total_after, sum(e[4] for e in eff))
        eff.sort(key=lambda e: -abs(e[2] - e[1]))
        v, rb, ra, nb, na, rest = eff[0]
        d = ra - rb
        se = math.sqrt(max(rb * (1 - rb), 1e-4) / nb + max(ra * (1 - ra), 1e-4) / na) if 0 <= rb <= 1 else 0.0
        if abs(d) < 1e-9 or (se and abs(d) < 4 * se):
            continue
        if abs(rest) <= 0.25 * abs(d):
            share = na / max(sum(e[4] for e in eff), 1.0)
            best.append(SegmentEffect({col: v}, d, rest, share, rb, ra))
            # A second affected value in the same column (e.g. two regions hit).
            for v2, rb2, ra2, _nb2, na2, _r2 in eff[1:3]:
                if abs(ra2 - rb2) >= 0.5 * abs(d) and abs(rest) > 0.1 * abs(d):
                    best.append(SegmentEffect({col: v2}, ra2 - rb2, rest, na2 / max(total_after, 1.0), rb2, ra2))
    if not best:
        return []
    # Rank by how much of the change a segment accounts for (its excess times its share), then by
    # how concentrated it is: a coarser attribute that holds the whole change (region=EU) beats a
    # finer one holding a third of it (country=DE), and the tighter of two that hold all of it wins.
    def clean(s: SegmentEffect) -> float:
        return abs(s.delta) * max(0.0, 1 - abs(s.delta_rest) / max(abs(s.delta), 1e-9))

    most = max(clean(s) * s.share for s in best)
    best.sort(key=lambda s: (clean(s) * s.share < 0.7 * most, -clean(s), -s.share))
    top = best[0]
    (c0, v0), = top.segment.items()
    inner = scope_sql({c0: v0})
    refined = []
    for col in segment_columns:
        if col == c0:
            continue
        eff = _effects(eng, signal, onset, col, f"({where}) AND {inner}" if where else inner)
        if len(eff) < 2:
            continue
        eff.sort(key=lambda e: -abs(e[2] - e[1]))
        v, rb, ra, nb, na, rest = eff[0]
        d = ra - rb
        if abs(d) >= 0.5 * abs(top.delta) and abs(rest) <= 0.2 * abs(d):
            refined.append(SegmentEffect({c0: v0, col: v}, d, rest, na / max(total_after, 1.0), rb, ra))
    if refined:
        refined.sort(key=lambda s: -abs(s.delta))
        return [refined[0]]
    # Keep only segments from the strongest column, plus the single best of other columns only when distinct.
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


def rank_events(events: Sequence[ChangeEvent], *, onset: datetime | None, cause: Cause, columns: Sequence[str],
                lineage: Lineage, segments: Sequence[dict[str, str]], model_names: Sequence[str] = (),
                log_start: datetime | None = None, gradual: bool = False) -> list[RankedEvent]:
    """Rank change events by time alignment, scope overlap (through lineage) and fit with the cause.

    An event on something every culprit column depends on ranks above one on something only the
    first depends on, and a routine event (the same kind, target and text recurring, like a nightly
    job) ranks below a one-off change: it ran on quiet days too.
    """
    per_col: list[set[str]] = []
    for c in columns:
        reach = {_norm(c)} | {_norm(a) for a in lineage.ancestors(c)} | {_norm(d) for d in lineage.descendants(c)}
        reach.discard("")
        per_col.append(reach)
    scope: set[str] = set().union(*per_col) if per_col else set()
    weights = [1.0 / (1 + i) for i in range(len(per_col))]
    routine = _routine_counts(events)
    seg_words = {_norm(v) for s in segments for v in s.values()}
    model_words = {_norm(m) for m in model_names}
    out = []
    for ev in events:
        reasons = []
        if onset is not None:
            dt = (onset - ev.ts).total_seconds() / 3600.0
            if dt < -(18.0 if gradual else 1.0) or dt > 48.0:
                continue
            if gradual:
                # The start of a slow change is an estimate, good to several hours either way.
                time_score = math.exp(-abs(dt) / 18.0)
            else:
                # Logged after the onset: a cause cannot follow its effect, but clocks and logs lag a little,
                # and an onset read from the rows is good to a few minutes.
                lag_score = 0.9 if dt >= -5 / 60 else 0.4 if dt >= -0.25 else 0.15
                time_score = math.exp(-dt / 6.0) if dt >= 0 else lag_score
            reasons.append(f"{abs(dt):.1f} h {'before' if dt >= 0 else 'after'} the onset")
        else:
            # No single onset: the event that put the broken state in place precedes the log, or any time.
            time_score = 0.6 if log_start is None or ev.ts <= log_start + timedelta(hours=1) else 0.35
        tk = (ev.target_kind or "").lower()
        target = _norm(ev.target_name if ev.target_kind else ev.target)
        text = _norm(f"{ev.target} {ev.description}")
        scope_score = 0.0
        if target and target in scope:
            cover = sum(w for w, reach in zip(weights, per_col, strict=True) if target in reach) / sum(weights)
            scope_score = 0.7 + 0.3 * cover
            reasons.append(f"its target {ev.target} feeds the culprit columns")
        elif any(s and (s in text.split() or f" {s} " in f" {text} ") for s in scope if len(s) > 3):
            scope_score = 0.6
            reasons.append("it mentions a culprit column or source")
        other_model = tk == "model" and bool(model_words) and target not in model_words
        if tk == "model" and not other_model and (cause is Cause.MODEL_CHANGE or target in model_words):
            scope_score = max(scope_score, 0.8 if cause is Cause.MODEL_CHANGE else 0.3)
        elif tk != "model" and model_words & set(target.split()) and cause is not Cause.MODEL_DEGRADATION:
            # A service or job named after the diagnosed model (fraud-serving for fraud) is on its path;
            # but quality that decayed while the data held up does not implicate the data's path.
            scope_score = max(scope_score, 0.5)
            reasons.append("its target is named after the model")
        if cause is Cause.SERVING_INFRASTRUCTURE and any(
                w in text.split() for w in ("serving", "inference", "gateway", "feature store", "store", "model",
                                            *model_words)) | ("feature store" in text):
            scope_score = max(scope_score, 0.6)
            reasons.append("it touches the serving path")
        if seg_words and any(w and w in text.split() for w in seg_words):
            scope_score += 0.3
            reasons.append("it names the affected segment")
        kind_score = 1.0 if any(k in ev.kind.lower() for k in _KIND_FIT[cause]) else 0.0
        tfit = 1.0 if tk and any(tk.startswith(k) for k in _TARGET_FIT[cause]) else 0.0
        if kind_score:
            reasons.append(f"a {ev.kind} fits {cause.value}")
        score = time_score * (0.15 + 0.45 * min(scope_score, 1.3) + 0.25 * kind_score + 0.15 * tfit)
        if other_model:
            score *= 0.5
            reasons.append("it changed another model")
        if (times := routine.get(_routine_key(ev), 0)) >= 3:
            score *= 0.6
            reasons.append(f"a routine event ({times} alike in the log)")
        out.append(RankedEvent(ev, score, tuple(reasons)))
    out.sort(key=lambda r: -r.score)
    return out
