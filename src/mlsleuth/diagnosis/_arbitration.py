"""The named rules that may change a candidate's cause or score after the signatures matched.

Every rule takes frozen candidates and returns new ones (:func:`dataclasses.replace`): a score change
is one more named score term, a cause change comes with a sentence in the evidence saying why. In the
order the diagnosis applies them: materiality and the labels' clearing of harmless drift in slices,
slice de-duplication, the symptom focus, the model re-scoring check, the merge of same-cause candidates,
and per hypothesis the settling of upstream change vs population shift and of a skew the labels followed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from mlsleuth.diagnosis._analysis import DOMAIN_QUALITIES, Triage
from mlsleuth.diagnosis._locate import rank_events
from mlsleuth.diagnosis._model import ModelEvidence, check_model
from mlsleuth.diagnosis._outcomes import DRIFT_CAUSES, calibration_holds, error_held
from mlsleuth.diagnosis._result import Cause, Finding
from mlsleuth.diagnosis.signatures import Candidate, is_material, match_all
from mlsleuth.schema import Role

__all__ = ["apply_model", "focus_symptom", "merge_same_cause", "settle_cause", "with_slices"]

#: A candidate found only in one slice ranks a little below one found in all traffic ("found_in_slice").
SLICE_WEIGHT = -0.05
#: A candidate timed with the symptom the user named ("matches_symptom").
SYMPTOM_WEIGHT = 0.1
#: Re-scoring shows the served model changed: its candidate scores at least this ("model_rescoring_changed").
MODEL_CHANGED_SCORE = 0.9
#: Re-scoring reproduces the scores: a version that changed them is cleared by this ("model_rescoring_same").
MODEL_CLEARED_WEIGHT = -0.3
#: Per share of the score shift that mapping the culprit back removes, above half ("counterfactual_repair").
REPAIR_WEIGHT = 0.2
#: Event kinds and targets that record a change in who arrives, not in a source.
SHIFT_WORDS = ("business", "campaign", "market", "launch", "partner", "product", "promotion")


def _scope(c: Candidate) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((c.tr.scope or {}).items())) if c.tr is not None else ()


def _culprit_z(c: Candidate) -> float:
    cc = c.tr.columns.get(c.culprit) if c.tr is not None and c.culprit else None
    return cc.z if cc is not None else 0.0


def harmless_columns(tr: Triage, cands: Sequence[Candidate]) -> set[str]:
    """Columns whose drift the labels of all traffic show left the model's error alone."""
    return {col for c in cands if c.cause in DRIFT_CAUSES and error_held(tr, c.cause, c.onset_index)
            for col in c.columns}


def _slice_material(st: Triage, c: Candidate, harmless: set[str]) -> bool:
    """Material in its slice, by the slice's stronger bar; a slice too thin in labels to judge drift that the
    labels of all traffic cleared defers to them."""
    if not is_material(st, c, zmin=st.th.slice_min_z):
        return False
    return not (c.cause in DRIFT_CAUSES and harmless & set(c.columns) and error_held(st, c.cause, c.onset_index)
                is None)


def _duplicates(c: Candidate, others: Sequence[Candidate], *, tol: int) -> bool:
    """A slice candidate that the whole-traffic analysis (or a clearer slice) already found."""
    for o in others:
        if o.cause is not c.cause:
            continue
        same_cols = bool(set(o.columns) & set(c.columns)) or not c.columns
        near = o.onset_index is None or c.onset_index is None or abs(o.onset_index - c.onset_index) <= tol
        if same_cols and near:
            return o.material or not c.material
    return False


def with_slices(tr: Triage, cands: list[Candidate]) -> list[Candidate]:
    """Add the changes confined to one segment, which the whole traffic dilutes below notice.

    Of two slices that show the same change, the one it is clearest in is kept: the segment it is
    confined to, not another attribute whose slices each hold part of that segment.
    """
    harmless = harmless_columns(tr, cands)
    sliced = []
    for st in tr.slices.values():
        for c in match_all(st, in_slice=True)[0]:
            c = replace(c, tr=st)
            if _slice_material(st, c, harmless):
                sliced.append(replace(c, material=True))
    sliced.sort(key=lambda c: (-c.score, -_culprit_z(c)))
    out = list(cands)
    tol = tr.th.windows(tr.th.near_hours, tr.window, at_least=2)
    for c in sliced:
        if not _duplicates(c, out, tol=tol):
            out.append(c.scored("found_in_slice", SLICE_WEIGHT))
    return out


def focus_symptom(tr: Triage, cands: Sequence[Candidate], symptom: str | None) -> list[Candidate]:
    """Raise the candidates timed with the metric the user named."""
    if not symptom or symptom not in tr.metrics:
        return list(cands)
    at = tr.metrics[symptom].split.index
    tol = tr.th.symptom_windows
    return [c.scored("matches_symptom", SYMPTOM_WEIGHT) if c.onset_index is not None
            and abs(c.onset_index - at) <= tol else c for c in cands]


def _raised_to(c: Candidate, target: float, name: str) -> Candidate:
    """``c`` with a term that lifts its score to ``target`` (none when it is there already).

    The difference of two floats may round so that the sum misses ``target`` by an ulp: the term is nudged
    by an ulp or two when that lands the sum exactly (it cannot always; it is then an ulp off).
    """
    if c.score >= target:
        return c
    value = target - c.score
    for v in (value, math.nextafter(value, math.inf), math.nextafter(value, -math.inf)):
        if c.score + v == target:
            value = v
            break
    return c.scored(name, value)


def _model_suspects(tr: Triage, cands: Sequence[Candidate]) -> list[str]:
    suspects = list(dict.fromkeys(f for c in cands for f in c.features))
    return suspects + [c.column for c in tr.columns.values() if c.role is Role.FEATURE and c.changed
                       and c.column not in suspects]


def _model_evidence(tr: Triage, cands: Sequence[Candidate], lead: Candidate) -> ModelEvidence | None:
    at = tr.time_of(lead.onset_index)
    ref = tr.case.reference
    order = [c for c in (ref.column_names if ref is not None else tr.case.log.column_names)
             if c.startswith("feature.") and c in tr.case.log.column_names]
    if at is None or not order or tr.engine is None or tr.case.score_fn is None:
        return None
    return check_model(tr.engine, tr.case.score_fn, order, at, _model_suspects(tr, cands), reference=ref,
                       thresholds=tr.th)


def _clear_or_blame(cands: list[Candidate], lead: int, ev: ModelEvidence, note: str) -> list[Candidate]:
    if ev.model_changed:
        k = next((i for i, c in enumerate(cands) if c.cause is Cause.MODEL_CHANGE), None)
        if k is None:
            cands.append(Candidate(Cause.MODEL_CHANGE, cands[lead].onset_index, signal=cands[lead].signal,
                                   order=(7,)))
            k = len(cands) - 1
        c = _raised_to(cands[k], MODEL_CHANGED_SCORE, "model_rescoring_changed")
        cands[k] = replace(c, evidence=(note + ": the model that served changed at the onset", *c.evidence))
    elif ev.model_consistent:
        # Re-scoring checks the scores; a version whose decisions moved on the same scores is not cleared.
        cands[:] = [c.scored("model_rescoring_same", MODEL_CLEARED_WEIGHT)
                    if c.cause is Cause.MODEL_CHANGE and not c.decisions_only else c for c in cands]
        k = next((i for i, c in enumerate(cands) if c.cause is Cause.MODEL_CHANGE and c.decisions_only), None)
        if k is not None:
            cands[k] = cands[k].told(note + ": the scores are unchanged, the decisions made from them are not")
        else:
            cands[lead] = cands[lead].told(note + ": the serving model is unchanged, the data is suspect")
    return cands


def _repaired(c: Candidate, shares: Mapping[str, float]) -> Candidate:
    if not c.features:
        return c
    c = replace(c, features=tuple(sorted(c.features, key=lambda f: -shares.get(f, -1.0))))
    share = shares.get(c.features[0])
    if share is None:
        return c
    return c.scored("counterfactual_repair", REPAIR_WEIGHT * (share - 0.5),
                    f"counterfactual repair: mapping {c.features[0]} back to its pre-onset "
                    f"distribution removes {share * 100:.0f} % of the score shift")


def apply_model(tr: Triage, cands: Sequence[Candidate]) -> tuple[list[Candidate], str | None]:
    """Use the model, when given, to clear or blame it and to rank culprit features by repair.

    Returns the candidates and a note on what re-scoring showed (None when the model was not checked).
    """
    out = list(cands)
    if tr.case.score_fn is None or tr.engine is None or not tr.score_is_prob:
        return out, None
    timed = [i for i, c in enumerate(out) if c.onset_index is not None]
    if not timed:
        return out, None
    lead = max(timed, key=lambda i: out[i].score)
    ev = _model_evidence(tr, out, out[lead])
    if ev is None:
        return out, None
    note = (f"re-scoring logged features with the model reproduces {100 * (1 - ev.mismatch_before):.0f} % of logged "
            f"scores before the onset and {100 * (1 - ev.mismatch_after):.0f} % after it")
    if ev.reference_auc is not None:
        note += f"; on the reference the model's ROC AUC is {ev.reference_auc:.3f}"
    out = _clear_or_blame(out, lead, ev, note)
    if ev.repaired_share:
        best = sorted(ev.repaired_share.items(), key=lambda kv: -kv[1])
        out = [_repaired(c, ev.repaired_share) for c in out]
        note += "; repair shares: " + ", ".join(f"{f} {v * 100:.0f} %" for f, v in best[:4])
    return out, note


def merge_same_cause(tr: Triage, cands: Sequence[Candidate]) -> list[Candidate]:
    """Material candidates first, strongest first; those of the same cause, scope and time become one.

    The strongest keeps its score and gathers the others' culprits and (at most two of each's) evidence.
    """
    tol = tr.th.merge_windows
    merged: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (not c.material, -c.score)):
        k = next((i for i, m in enumerate(merged) if m.cause is c.cause and m.material == c.material
                  and _scope(m) == _scope(c) and (m.onset_index is None) == (c.onset_index is None)
                  and (m.onset_index is None or abs(m.onset_index - (c.onset_index or 0)) <= tol)), None)
        if k is None:
            merged.append(c)
            continue
        m = merged[k]
        merged[k] = replace(m, features=m.features + tuple(f for f in c.features if f not in m.features),
                            inputs=m.inputs + tuple(i for i in c.inputs if i not in m.inputs),
                            evidence=m.evidence + tuple([e for e in c.evidence if e not in m.evidence][:2]))
    return merged


def drop_immaterial(merged: Sequence[Candidate]) -> tuple[list[Candidate], list[Finding]]:
    """When the strongest candidate is material, the immaterial ones become findings (drift that moved nothing)."""
    if not merged or not merged[0].material:
        return list(merged), []
    findings = [Finding("drift", next(iter(c.columns), "") or None,
                        (c.evidence or (c.cause.value,))[0] + " (no effect on the model's outputs)")
                for c in merged if not c.material]
    return [m for m in merged if m.material], findings


def _events_decide(tr: Triage, c: Candidate, at: datetime | None, segments: Sequence[dict[str, str]],
                   log_start: datetime | None) -> Cause:
    """A source change recorded near the onset says upstream; a business event (a campaign) says shift."""
    kw = dict(onset=at, columns=list(c.columns), lineage=tr.case.lineage, segments=segments, model_names=tr.models,
              log_start=log_start, gradual=c.gradual, thresholds=tr.th)
    cut = tr.th.event_min_score
    up = [r for r in rank_events(tr.case.events, cause=Cause.UPSTREAM_DATA_CHANGE, **kw)  # type: ignore[arg-type]
          if r.score >= cut and (r.event.target_kind or "").startswith("source")]
    shift = [r for r in rank_events(tr.case.events, cause=Cause.DISTRIBUTION_SHIFT, **kw)  # type: ignore[arg-type]
             if r.score >= cut and any(k in r.event.kind.lower() or k in (r.event.target_kind or "")
                                       for k in SHIFT_WORDS)]
    if up and (not shift or up[0].score >= shift[0].score):
        return Cause.UPSTREAM_DATA_CHANGE
    return Cause.DISTRIBUTION_SHIFT


def settle_data_cause(tr: Triage, c: Candidate, at: datetime | None, segments: Sequence[dict[str, str]],
                      log_start: datetime | None) -> Candidate:
    """Upstream change or population shift? Only a broken domain or an upstream change record says upstream.

    Both move inputs and the features computed from them. A change in what a source means
    shows as values the training data never had (new categories, out-of-range values), or
    is recorded as a change on that source; a population shift is recorded, if at all, as a
    business event (a campaign, a market launch). With no events at all, the shape decides:
    one input moving at once points upstream, several moving or a gradual drift to a shift.
    Labelled outcomes, when they can tell, decide before all of these.
    """
    if at is not None and (held := calibration_holds(tr, at, segments)) is not None:
        return replace(c, cause=Cause.DISTRIBUTION_SHIFT if held[0] else Cause.UPSTREAM_DATA_CHANGE,
                       evidence=(*c.evidence, held[1]))
    if any((cc := tr.columns.get(col)) is not None and cc.quality in DOMAIN_QUALITIES for col in c.columns):
        return _recaused(c, Cause.UPSTREAM_DATA_CHANGE, "a culprit column holds values the training data never "
                                                        "had: a source changed what it sends, not who arrives")
    if not tr.case.events:
        return c
    cause = _events_decide(tr, c, at, segments, log_start)
    return _recaused(c, cause, "a change event on a source near the onset points upstream, not to who arrives"
                     if cause is Cause.UPSTREAM_DATA_CHANGE else "no change event on a source near the onset "
                     "outranks the business events: a shift in who arrives")


def _recaused(c: Candidate, cause: Cause, why: str) -> Candidate:
    return c if cause is c.cause else replace(c, cause=cause, evidence=(*c.evidence, why))


def settle_cause(tr: Triage, c: Candidate, began: datetime | None, segments: Sequence[dict[str, str]],
                 log_start: datetime | None) -> Candidate:
    """The cause-changing rules of one hypothesis, once its onset and segments are known.

    An upstream change or a shift is settled by :func:`settle_data_cause`. A feature that moved while its
    logged inputs did not (a skew), yet the outcomes moved with the scores: the population changed in a
    way the logged inputs do not show.
    """
    if c.cause in (Cause.UPSTREAM_DATA_CHANGE, Cause.DISTRIBUTION_SHIFT):
        return settle_data_cause(tr, c, began, segments, log_start)
    if c.cause is Cause.TRAINING_SERVING_SKEW and began is not None and c.onset_index is not None:
        held = calibration_holds(tr, began, segments)
        if held is not None and held[0]:
            return replace(c, cause=Cause.DISTRIBUTION_SHIFT, evidence=(*c.evidence, held[1]))
    return c
