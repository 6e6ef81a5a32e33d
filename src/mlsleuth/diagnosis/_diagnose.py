"""From triage to ranked hypotheses: the diagnosis pipeline.

1. triage (:mod:`._analysis`): what changed in every column and metric, per window, in all traffic and per slice;
2. signatures (:mod:`.signatures`): each cause's module matches those changes and offers candidates with
   their evidence and named score terms;
3. arbitration (:mod:`._arbitration`): the named rules that may change a candidate's cause or score;
4. refinement (:mod:`._refine`): onset, segments, change events and examples, never changing the cause;
5. ranking (:mod:`._rank`): score = the sum of the terms, confidences shared out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from mlsleuth.diagnosis import _arbitration as rules
from mlsleuth.diagnosis._analysis import MetricChange, Triage, run_triage
from mlsleuth.diagnosis._charts import incident_charts
from mlsleuth.diagnosis._data import CaseInput, ScoreFn, TableLike, load_case
from mlsleuth.diagnosis._locate import scope_sql
from mlsleuth.diagnosis._metrics import OUTPUT, SERVING
from mlsleuth.diagnosis._rank import rank
from mlsleuth.diagnosis._refine import examples, locate, matched_events, sources
from mlsleuth.diagnosis._result import (
    Diagnosis,
    Finding,
    Hypothesis,
    Layer,
    LayerStatus,
    Symptom,
    Verdict,
    iso,
)
from mlsleuth.diagnosis._runbooks import runbook_source, runbook_steps, runbook_text
from mlsleuth.diagnosis._sentences import describe_column, metric_sentence
from mlsleuth.diagnosis._thresholds import Thresholds, thresholds_for
from mlsleuth.diagnosis.signatures import REGISTRY, Candidate, is_material, match_all
from mlsleuth.schema import ChangeEvent, Lineage, ModelConfig, Role
from mlsleuth.store import Engine

__all__ = ["diagnose", "diagnose_case"]

#: Hypotheses reported (the strongest candidates after merging).
MAX_HYPOTHESES = 4


def _symptoms(tr: Triage) -> list[Symptom]:
    syms = []
    for m in sorted(tr.metrics.values(), key=lambda m: -m.strength):
        if not m.material or m.metric == "version_mix":
            continue
        syms.append(Symptom(m.metric, m.split.before, m.split.after, tr.time_of(m.split.index), m.gradual,
                            m.strength, m.unit, trend=_trend(tr, m)))
    sc = tr.columns.get("score")
    if sc is not None and sc.changed and sc.shift >= tr.th.score_shift:
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
    th = tr.th
    if len(tail) < th.trend_min_windows:
        return "stable"
    half = len(tail) // 2
    a, b = float(np.mean(tail[:half])), float(np.mean(tail[half:]))
    if abs(b - a) < th.trend_share * abs(m.split.after - m.split.before):
        return "stable"
    # "Worse" is further from the pre-onset level, in the direction the change went.
    away = (b - a) * (m.split.after - m.split.before) > 0
    return "worsening" if away else "recovering"


def _candidates(tr: Triage, symptom: str | None) -> tuple[list[Candidate], list[Finding], str | None]:
    """Signatures, then the arbitration rules that change scores: the merged candidates, strongest first."""
    cands, findings = match_all(tr)
    cands = [replace(c, material=is_material(tr, c)) for c in cands]
    cands = rules.with_slices(tr, cands)
    cands = rules.focus_symptom(tr, cands, symptom)
    cands, model_note = rules.apply_model(tr, cands)
    merged, dropped = rules.drop_immaterial(rules.merge_same_cause(tr, cands))
    return merged, findings + dropped, model_note


def _hypothesis(tr: Triage, c: Candidate, rank_: int, segcols: list[str]) -> tuple[Candidate, Hypothesis]:
    """Refine one candidate, settle its cause, and write it as a hypothesis (confidence set by the ranking)."""
    log_start = tr.starts[0] if tr.starts else None
    loc = locate(tr, c, rank_, segcols)
    ctr = c.tr or tr
    c = rules.settle_cause(ctr, loc.candidate, loc.began, list(loc.segments), log_start)
    c, ev_ids = matched_events(tr, replace(loc, candidate=c), log_start)
    c, found = sources(tr, c)
    segments = loc.segments
    return c, Hypothesis(
        cause=c.cause, confidence=0.0, onset=loc.onset if not c.gradual else None,
        features=tuple(dict.fromkeys(c.features)), inputs=tuple(dict.fromkeys(c.inputs)),
        segments=segments, events=ev_ids, evidence=c.evidence, next_steps=runbook_steps(c.cause),
        examples=examples(ctr, c, loc.onset, scope_sql(segments[0]) if segments else "") if rank_ == 0 else (),
        sources=found)


def _layers(tr: Triage, hyps: Sequence[Hypothesis]) -> list[Layer]:
    causes = {h.cause for h in hyps}
    top = hyps[0].cause if hyps else None

    def status(layer: str) -> LayerStatus:
        names = {s.cause for s in REGISTRY if s.layer == layer}
        if top in names:
            return LayerStatus.BROKEN
        return LayerStatus.SUSPECT if causes & names else LayerStatus.OK

    serving_ev = [metric_sentence(m, tr.time_of(m.split.index)) for k, m in tr.metrics.items()
                  if k in SERVING and m.material]
    model_ev = [metric_sentence(m, tr.time_of(m.split.index)) for k, m in tr.metrics.items()
                if k in (*OUTPUT, "version_mix") and m.material]
    feat_ev = [describe_column(c, tr.time_of(c.onset_index)) for c in tr.columns.values()
               if c.role is Role.FEATURE and c.changed][:3]
    inp_ev = [describe_column(c, tr.time_of(c.onset_index)) for c in tr.columns.values()
              if c.role is Role.INPUT and c.changed][:3]
    has_inputs = any(c.role is Role.INPUT for c in tr.columns.values())
    return [
        Layer("serving", status("serving"), tuple(serving_ev)),
        Layer("model", status("model"), tuple(model_ev)),
        Layer("features", status("features"), tuple(feat_ev)),
        Layer("inputs", status("inputs") if has_inputs else LayerStatus.UNKNOWN, tuple(inp_ev)),
        Layer("external", LayerStatus.SUSPECT if any(h.events for h in hyps) else LayerStatus.OK,
              tuple(f"event {e}" for h in hyps[:1] for e in h.events)),
    ]


def _skipped(case: CaseInput, th: Thresholds) -> list[str]:
    """The analyses the inputs did not allow, and why."""
    skipped = list(case.notes)
    min_skew_rows, min_side_rows = int(th.min_skew_rows), int(th.min_side_rows)
    if not case.has_labels:
        skipped.append("performance monitoring (no labels): quality metrics could not be checked")
    elif "prediction" not in case.log.schema.names:
        skipped.append("labels (the log has no prediction column): quality metrics compare labels with the "
                       "decisions served; log the decision as prediction to check them")
    if case.reference is None:
        skipped.append("training-serving comparison (no reference data): features were compared within the log only")
    elif case.log.num_rows < min_skew_rows:
        skipped.append(f"training-serving comparison: the log has {case.log.num_rows} rows, fewer than the "
                       f"{min_skew_rows} needed to tell its features from the reference's")
    if case.log.num_rows < 2 * min_side_rows:
        skipped.append(f"changes within the log: it has {case.log.num_rows} rows, fewer than the {2 * min_side_rows} "
                       f"a change in a feature or input needs ({min_side_rows} on each side)")
    if not case.events:
        skipped.append("change-event correlation (no events)")
    if not case.lineage.edges:
        skipped.append("lineage (no lineage given): inputs were linked to features by name and timing")
    if case.score_fn is None:
        skipped.append("counterfactual attribution (no model): culprits ranked by drift weighted by score correlation")
    return skipped


def diagnose_case(case: CaseInput, *, engine: Engine | None = None, symptom: str | None = None,
                  charts: bool = True) -> Diagnosis:
    """Diagnose one case: triage, signatures, arbitration, refinement, ranked hypotheses.

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
    if case.log.num_rows < th.min_log_rows:
        return Diagnosis(verdict=Verdict.HEALTHY, skipped=(
            f"every analysis: the log has {case.log.num_rows} rows, fewer than the {th.min_log_rows} the least "
            "demanding signal needs, so nothing can be said of it (diagnose a longer period)", *case.notes),
            triage={"rows": case.log.num_rows}, thresholds=th.to_dict())
    tr = run_triage(case, engine=engine)
    case = tr.case  # without the rows whose timestamps lie far outside the log's
    merged, findings, model_note = _candidates(tr, symptom)
    segcols = [s for s in tr.case.schema.segments if s not in ("model", "model_version")]
    hyps = rank([_hypothesis(tr, c, i, segcols) for i, c in enumerate(merged[:MAX_HYPOTHESES])])
    lead_tr = (merged[0].tr or tr) if merged else tr
    symptoms = _symptoms(lead_tr)
    incident = bool(merged) and merged[0].material
    if not incident:
        findings.extend(Finding("drift", None, e) for h in hyps for e in h.evidence[:1])
        hyps = []
    if model_note:
        findings.append(Finding("model", None, model_note))
    top = hyps[0] if hyps else None
    override = runbook_source(top.cause) if top else None
    return Diagnosis(verdict=Verdict.INCIDENT if incident else Verdict.HEALTHY, hypotheses=tuple(hyps),
                     symptoms=tuple(symptoms), layers=tuple(_layers(tr, hyps)), findings=tuple(findings),
                     skipped=tuple(_skipped(case, th)), triage=_triage_summary(lead_tr, hyps, symptoms),
                     runbook=runbook_text(top.cause) if top else "",
                     runbook_source=str(override) if override else "",
                     charts=incident_charts(tr, hyps, symptoms) if charts else None, thresholds=th.to_dict())


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
