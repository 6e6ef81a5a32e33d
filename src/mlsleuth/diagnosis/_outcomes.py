"""What the labels say about a change: did the outcomes follow the model's outputs, did its error hold?

These read labelled outcomes only; the arbitration rules (:mod:`mlsleuth.diagnosis._arbitration`) and the
signatures' materiality decide what the answers mean for a hypothesis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mlsleuth.diagnosis._analysis import Triage, _literal
from mlsleuth.diagnosis._locate import scope_sql
from mlsleuth.diagnosis._metrics import QUALITY, got_worse
from mlsleuth.diagnosis._result import Cause, fmt_num
from mlsleuth.diagnosis._thresholds import Thresholds
from mlsleuth.store import Engine
from mlsleuth.store import _sql_hypotheses as sql

__all__ = ["DRIFT_CAUSES", "calibration_holds", "error_held", "outcome_meaning", "which_fits"]

#: Causes that are a change in the data the model sees: labels can show the model stayed right about it.
DRIFT_CAUSES = (Cause.UPSTREAM_DATA_CHANGE, Cause.DISTRIBUTION_SHIFT, Cause.TRAINING_SERVING_SKEW)

Holds = tuple[bool, str]


def which_fits(z_follow: float, z_stay: float, th: Thresholds) -> bool | None:
    """True when the outcomes followed the outputs, False when they stayed, None when that cannot be told."""
    if min(z_follow, z_stay) >= th.unfit_z or abs(z_follow - z_stay) < th.apart_z:
        return None
    return z_follow < z_stay


def outcome_meaning(followed: bool, outputs: str) -> str:
    """What outcomes that followed (or did not follow) the model's ``outputs`` (scores, predictions) mean."""
    return ("the model stays right about the new traffic: a shift in who arrives" if followed
            else f"the {outputs} moved without the outcomes: what the data means changed")


def _where(tr: Triage, segments: Sequence[Mapping[str, str]]) -> str:
    return " AND ".join(x for x in (scope_sql(tr.scope), scope_sql(dict(segments[0])) if segments else "") if x)


def calibration_holds(tr: Triage, at: datetime, segments: Sequence[Mapping[str, str]]) -> Holds | None:
    """Did the outcomes follow the scores across the change? None when the labels cannot tell.

    A population shift moves inputs and outcomes together (the model meets different people
    but stays right about them: observed / expected positives hold), while a change in what
    the data means moves the scores and leaves the outcomes behind (the label rate stays
    where it was). The two predictions of the after-onset positives are weighed by
    :func:`which_fits`.
    """
    if tr.kind in ("regression", "multiclass") and tr.engine is not None and tr.case.has_labels:
        return _outcomes_follow(tr, at, segments)
    if tr.engine is None or not tr.score_is_prob or tr.positive is None or not tr.case.has_labels:
        return None
    th = tr.th
    rows = tr.engine.query(sql.calibration_counts(at, _literal(tr.positive), _where(tr, segments))).to_pylist()
    got = {int(r["after"]): (float(r["n"]), float(r["e"] or 0.0), float(r["o"] or 0.0)) for r in rows}
    if set(got) != {0, 1}:
        return None
    (nb, eb, ob), (na, ea, oa) = got[0], got[1]
    if min(ob, eb) < th.min_outcome_events or na < th.min_labelled_side or ea <= 0:
        return None
    follows = ob / eb * ea  # outcomes move with the scores
    stays = ob / nb * na  # outcomes stay where they were
    # Each prediction's error: the after-onset count's own noise and that of the before-onset rate.
    z_follow = abs(oa - follows) / math.sqrt(follows + (ea / eb) ** 2 * ob)
    z_stay = abs(oa - stays) / math.sqrt(stays + (na / nb) ** 2 * ob)
    holds = which_fits(z_follow, z_stay, th)
    if holds is None:
        return None
    sentence = (f"labelled outcomes {'followed' if holds else 'did not follow'} the scores: {oa:.0f} positives "
                f"after the change where the scores expected {follows:.0f} and the earlier rate {stays:.0f} "
                f"({outcome_meaning(holds, 'scores')})")
    return holds, sentence


def _outcomes_follow(tr: Triage, at: datetime, segments: Sequence[Mapping[str, str]]) -> Holds | None:
    """The regression and multi-class form of :func:`calibration_holds`: did the labels follow the predictions?

    A regressor's predictions moved; if its bias (mean of prediction - label) held, the true values moved with
    them (a shift in who arrives); if the mean true value held instead, the predictions moved alone (what the
    data means changed). A classifier's predicted class mix moved; the labelled mix either followed it (each
    class's labels over predictions held) or stayed. Decided only when one explanation fits and the other does not.
    """
    assert tr.engine is not None
    if tr.kind == "regression":
        return _regression_follows(tr, tr.engine, at, _where(tr, segments))
    rows = tr.engine.query(sql.class_outcome_counts(at, _where(tr, segments))).to_pylist()
    return _classes_follow(tr.th, rows)


def _regression_follows(tr: Triage, eng: Engine, at: datetime, where: str) -> Holds | None:
    th = tr.th
    got = {int(r["after"]): r for r in eng.query(sql.regression_outcomes(at, where)).to_pylist()}
    if set(got) != {0, 1} or min(float(got[k]["n"]) for k in (0, 1)) < th.min_labelled_side:
        return None
    b, a = got[0], got[1]
    nb, na = float(b["n"]), float(a["n"])
    # With thousands of labels both means move beyond noise with the hours a split happens to cut, so
    # the two explanations are weighed by distance: the true values moved with the predictions
    # (the bias held) or stayed (the bias took the whole move). The predictions must have moved first.
    d_follow, d_stay = abs(a["e"] - b["e"]), abs(a["y"] - b["y"])
    moved = abs((a["e"] + a["y"]) - (b["e"] + b["y"]))
    se = math.sqrt((b["vy"] or 0.0) / nb + (a["vy"] or 0.0) / na + 1e-12)
    if moved < th.outcome_moved_se * se or min(d_follow, d_stay) > th.outcome_ratio * max(d_follow, d_stay):
        return None
    holds = d_follow < d_stay
    return holds, (f"labelled outcomes {'followed' if holds else 'did not follow'} the predictions: the mean "
                   f"prediction went from {fmt_num(b['e'] + b['y'])} to {fmt_num(a['e'] + a['y'])}, the mean "
                   f"true value from {fmt_num(b['y'])} to {fmt_num(a['y'])} "
                   f"({outcome_meaning(holds, 'predictions')})")


def _classes_follow(th: Thresholds, rows: Sequence[Mapping[str, Any]]) -> Holds | None:
    cls = sorted({str(r["c"]) for r in rows})
    cnt = {(int(r["after"]), str(r["c"]), int(r["lab"])): float(r["n"]) for r in rows}
    nb = sum(cnt.get((0, c, 1), 0.0) for c in cls)
    na = sum(cnt.get((1, c, 1), 0.0) for c in cls)
    if len(cls) < 2 or min(nb, na) < th.min_labelled_side:
        return None
    chi_follow = chi_stay = 0.0
    df = 0
    for c in cls:
        ob, oa = cnt.get((0, c, 1), 0.0), cnt.get((1, c, 1), 0.0)
        eb, ea = cnt.get((0, c, 0), 0.0), cnt.get((1, c, 0), 0.0)
        if ob < th.min_outcome_events or eb < th.min_outcome_events:
            continue  # too rare a class to weigh
        df += 1
        follows, stays = ob / eb * ea, ob / nb * na
        chi_follow += (oa - follows) ** 2 / (follows + (ea / eb) ** 2 * ob)
        chi_stay += (oa - stays) ** 2 / (stays + (na / nb) ** 2 * ob)
    if df < 2:
        return None
    # Chi-square with df degrees of freedom as a z (its mean df, its variance 2 df).
    z_follow, z_stay = ((x - df) / math.sqrt(2 * df) for x in (chi_follow, chi_stay))
    holds = which_fits(z_follow, z_stay, th)
    if holds is None:
        return None
    detail = f"the labelled class mix against the predicted mix (chi-square {chi_follow:.0f} if it followed, " \
             f"{chi_stay:.0f} if it stayed, {df} classes)"
    return holds, (f"labelled outcomes {'followed' if holds else 'did not follow'} the predictions: {detail} "
                   f"({outcome_meaning(holds, 'predictions')})")


def error_held(tr: Triage, cause: Cause, onset_index: int | None) -> bool | None:
    """For a regressor or multi-class model with labels after the change: True when its labelled error held.

    Drift that leaves the labelled error (MAE and bias, or accuracy) where it was is the model meeting new
    traffic and staying right about it: a finding, not an incident, however far the inputs moved (a heat wave
    is out of the training range and still predicted well). None when labels cannot tell (a binary model keeps
    its own rules: its decisions moving is itself a change users see).
    """
    if tr.kind not in ("regression", "multiclass"):
        return None
    if onset_index is None:
        return _error_matches_reference(tr)
    if cause is Cause.TRAINING_SERVING_SKEW:
        return None  # a feature computed differently inside the log is a defect, whatever the labels say
    labelled = tr.series.get("labelled")
    if labelled is None or float(labelled[onset_index:].sum()) < tr.th.min_labelled_after:
        return None
    return not any(m.material and got_worse(m) for k, m in tr.metrics.items() if k in QUALITY)


def _labelled_error(eng: Engine, table: str, kind: str, where: str) -> tuple[float, float, float] | None:
    """(labelled rows, MAE or error rate, bias) of a table: the error of the predictions against the labels."""
    r = eng.query(sql.labelled_error(table, regression=kind == "regression", where=where)).to_pylist()[0]
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
    if got is None or want is None or min(got[0], want[0]) < tr.th.min_labelled_after:
        return None
    th = tr.th
    if tr.kind == "regression":
        return got[1] <= want[1] * (1 + th.mae_rel_change) and abs(got[2] - want[2]) < th.bias_shift_of_mae * want[1]
    return got[1] <= want[1] + th.multiclass_accuracy_drop
