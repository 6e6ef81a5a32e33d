"""Refinement of one hypothesis: its exact onset, the segments it is confined to, its events and examples.

These steps sharpen *when* and *where*; they never change the cause (the arbitration rules do that,
in :mod:`mlsleuth.diagnosis._arbitration`). The one score term they add is for a change event that
matches the hypothesis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from mlsleuth.diagnosis._analysis import Triage, refine_onset
from mlsleuth.diagnosis._locate import SegmentEffect, affected_segments, rank_events, scope_sql
from mlsleuth.diagnosis._result import Cause, Example, fmt_num
from mlsleuth.diagnosis._sentences import pct, when
from mlsleuth.diagnosis.signatures import Candidate, quality_timing
from mlsleuth.store import _sql_hypotheses as sql

__all__ = ["Located", "examples", "locate", "matched_events", "sources"]

#: Per unit of the best change event's match score ("change_event").
EVENT_WEIGHT = 0.1
#: Hypotheses (in rank order) whose affected segments are looked for.
SEGMENTED_RANKS = 2


@dataclass(frozen=True)
class Located:
    """A candidate with its onset and segments refined, and when its change began (for events and labels)."""

    candidate: Candidate
    onset: datetime | None
    segments: tuple[dict[str, str], ...]
    began: datetime | None


def _segment_triage(tr: Triage, ctr: Triage, segments: list[dict[str, str]]) -> Triage | None:
    """The slice of the one affected segment (a single attribute), for a candidate found in all traffic."""
    if ctr.scope or len(segments) != 1 or len(segments[0]) != 1:
        return None
    return tr.slices.get(next(iter(segments[0].items())))


def _segment_step(c: Candidate, seg_tr: Triage) -> int | None:
    """The window where a change that looks gradual in all traffic steps inside its one segment.

    A version rolled out to one segment at once, or a column that broke at once there: its share
    of all traffic follows that segment's daily cycle and looks gradual; inside it is a step.
    """
    if c.cause is Cause.MODEL_CHANGE:
        vm = seg_tr.metrics.get("version_mix")
        return vm.split.index if vm is not None and vm.material and not vm.gradual else None
    cc = seg_tr.columns.get(c.culprit) if c.culprit else None
    return cc.onset_index if cc is not None and cc.changed and not cc.gradual else None


def _skewed_segment(tr: Triage, column: str) -> list[dict[str, str]]:
    """The one segment whose values of ``column`` stand apart from its own slice of the reference."""
    by_col: dict[str, list[tuple[float, str]]] = {}
    for (col, value), st in tr.slices.items():
        cc = st.columns.get(column)
        if st.ref_scoped and cc is not None and math.isfinite(cc.skew):
            by_col.setdefault(col, []).append((cc.skew, value))
    best: list[tuple[float, dict[str, str]]] = []
    th = tr.th
    for col, skews in by_col.items():
        skews.sort(reverse=True)
        if len(skews) >= 2 and skews[0][0] >= th.min_skew and skews[0][0] >= th.segment_skew_ratio * skews[1][0]:
            best.append((skews[0][0] / max(skews[1][0], 1e-3), {col: skews[0][1]}))
    return [max(best, key=lambda b: b[0])[1]] if best else []


def _ramp_start(tr: Triage, c: Candidate) -> datetime | None:
    """When a gradual candidate's change began: its culprit column's ramp, else its metric's."""
    for col in ([c.culprit] if c.culprit else []) + list(c.columns):
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


def _confined(segs: list[SegmentEffect], segments: list[dict[str, str]]) -> str:
    s0 = next((s for s in segs if s.segment == segments[0]), segs[0])
    return (f"the change is confined to {', '.join(f'{k}={v}' for k, v in segments[0].items())} "
            f"({pct(s0.share)} of traffic): signal {fmt_num(s0.before)} -> {fmt_num(s0.after)} there, "
            f"{'+' if s0.delta_rest >= 0 else ''}{fmt_num(s0.delta_rest)} elsewhere")


def _with_segments(tr: Triage, ctr: Triage, c: Candidate, onset: datetime | None, segcols: list[str]
                   ) -> tuple[Candidate, datetime | None, list[dict[str, str]]]:
    """Where the change concentrates (inside a slice: the slice, narrowed by a second attribute when that
    explains it), and the onset again within that segment."""
    segments: list[dict[str, str]] = [dict(ctr.scope)] if ctr.scope else []
    at = onset or ctr.time_of(c.onset_index)
    if not (c.signal and at is not None and segcols and tr.engine is not None):
        return c, onset, segments
    in_scope = scope_sql(ctr.scope)
    segs = affected_segments(tr.engine, c.signal, at, segcols, where=in_scope, thresholds=tr.th)
    if ctr.scope:
        narrowed = [s for s in segs if set(ctr.scope.items()) < set(s.segment.items())]
        segments = [narrowed[0].segment] if narrowed else segments
    else:
        segments = [s.segment for s in segs]
    if segs and segments:
        c = c.told(_confined(segs, segments))
    if onset is not None and c.culprit and segments:
        onset = refine_onset(ctr, c.culprit, c.onset_index, where=scope_sql(segments[0])) or onset
    return c, onset, segments


def _segment_timing(tr: Triage, ctr: Triage, c: Candidate, onset: datetime | None, segments: list[dict[str, str]]
                    ) -> tuple[Candidate, datetime | None]:
    """Inside the one affected segment, undiluted by the rest: quality's own fall, or a step that looks
    gradual in all traffic."""
    seg_tr = _segment_triage(tr, ctr, segments)
    if seg_tr is None:
        return c, onset
    if c.cause is Cause.MODEL_DEGRADATION and (timing := quality_timing(seg_tr)) is not None:
        c = replace(c, gradual=timing[0], onset_index=timing[1])
        onset = None if c.gradual else refine_onset(seg_tr, None, c.onset_index, metric_sql=c.signal)
    if c.gradual and (step := _segment_step(c, seg_tr)) is not None:
        c = replace(c, gradual=False, onset_index=step)
        onset = refine_onset(seg_tr, c.culprit, step, where=scope_sql(segments[0]),
                             metric_sql=None if c.culprit else c.signal)
    return c, onset


def _canary(tr: Triage, c: Candidate, at: datetime | None, segments: list[dict[str, str]]
            ) -> tuple[Candidate, list[dict[str, str]]]:
    """A version that serves all of the affected segment is a rollout there, not a canary; a canary
    scopes the hypothesis to its version."""
    if c.canary and segments and tr.engine is not None and at is not None:
        share = tr.engine.query(sql.canary_share(c.canary, at, scope_sql(segments[0]))).column("s")[0].as_py()
        if share is not None and share >= tr.th.canary_share:
            c = replace(c, canary=None)
    if c.canary and c.canary not in [s.get("model_version") for s in segments]:
        segments = [{**(segments[0] if segments else {}), "model_version": c.canary}]
    return c, segments


def locate(tr: Triage, c: Candidate, rank: int, segcols: list[str]) -> Located:
    """Refine one candidate's onset and segments, and say when its change began."""
    ctr = c.tr or tr
    onset = None
    if c.onset_index is not None and not c.gradual:
        onset = refine_onset(ctr, c.culprit, c.onset_index, where=scope_sql(ctr.scope) or None,
                             metric_sql=None if c.culprit else c.signal)
    seg_onset = onset or ctr.time_of(c.onset_index)
    c, onset, segments = _with_segments(tr, ctr, c, onset, segcols if rank < SEGMENTED_RANKS else [])
    if c.cause is Cause.TRAINING_SERVING_SKEW and c.onset_index is None and not segments and c.culprit:
        segments = _skewed_segment(tr, c.culprit)
    c, onset = _segment_timing(tr, ctr, c, onset, segments)
    c, segments = _canary(tr, c, seg_onset, segments)
    # A gradual change is judged from where its ramp began: the split lands mid-ramp. Its metrics
    # inside the one affected segment, undiluted by the rest, time the ramp better.
    seg_tr = _segment_triage(tr, ctr, segments) if c.metrics else None
    began = onset
    if began is None and c.gradual:
        began = (_ramp_start(seg_tr, c) if seg_tr is not None else None) or _ramp_start(ctr, c)
    return Located(c, onset, tuple(segments), began or ctr.time_of(c.onset_index))


def matched_events(tr: Triage, loc: Located, log_start: datetime | None) -> tuple[Candidate, tuple[str, ...]]:
    """The change events that explain the hypothesis: the best, and a second only when it is nearly as
    likely and touches the culprits. The best adds its match score (weighted) to the candidate's."""
    c = loc.candidate
    cut = tr.th.event_min_score
    events = [r for r in rank_events(
        tr.case.events, onset=loc.began, cause=c.cause, columns=list(c.columns), lineage=tr.case.lineage,
        segments=list(loc.segments), model_names=tr.models, log_start=log_start, gradual=c.gradual,
        thresholds=tr.th) if r.score >= cut]
    events = events[:1] + [r for r in events[1:2] if r.score >= tr.th.second_event_ratio * events[0].score
                           and any("feeds" in x or "mentions" in x for x in r.reasons)]
    if not events:
        return c, ()
    r0 = events[0]
    c = c.scored("change_event", EVENT_WEIGHT * r0.score,
                 f"change event {r0.event.id} ({r0.event.kind} on {r0.event.target or 'unknown'}, "
                 f"{when(r0.event.ts)}): {'; '.join(r0.reasons)}"
                 + (f" - {r0.event.description}" if r0.event.description else ""))
    return c, tuple(r.event.id for r in events)


def sources(tr: Triage, c: Candidate) -> tuple[Candidate, tuple[str, ...]]:
    """The sources upstream of the culprits (by lineage), with a sentence naming the path to the first."""
    out: dict[str, None] = {}
    for col in c.inputs or c.features:
        for s in tr.case.lineage.sources(col):
            out[s] = None
    found = tuple(out)
    if found:
        c = c.told("lineage: " + " <- ".join(
            [x for x in ((c.features or ("",))[0], (c.inputs or ("",))[0], found[0]) if x]))
    return c, found


def examples(tr: Triage, c: Candidate, onset: datetime | None, where: str) -> tuple[Example, ...]:
    """A few requests that show the change after the onset, and two typical ones before it."""
    if tr.engine is None or onset is None or c.signal is None:
        return ()
    names = tr.case.log.column_names
    cols = ["request_id"] if "request_id" in names else []
    cols += list(c.columns[:4])
    cols += [x for x in ("score", "prediction", "label", "model_version") if x in names]
    after = tr.engine.query(sql.example_rows_after(cols, onset, c.signal, rising=c.signal_up, where=where)).to_pylist()
    before = tr.engine.query(sql.example_rows_before(cols, onset, where=where)).to_pylist()
    out = []
    for rows, typical in ((after, False), (before, True)):
        for r in rows:
            ts = r.pop("ts")
            rid = r.pop("request_id", None)
            out.append(Example(None if rid is None else str(rid), ts,
                               {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, typical))
    return tuple(out)
