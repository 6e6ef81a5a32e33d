"""Model change: a new model version took traffic and behaves differently from the one before it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsleuth.diagnosis._analysis import Triage, _literal
from mlsleuth.diagnosis._locate import scope_sql
from mlsleuth.diagnosis._metrics import near
from mlsleuth.diagnosis._result import Cause, fmt_num
from mlsleuth.diagnosis._sentences import metric_sentence, pct, when
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, default_material, terms
from mlsleuth.diagnosis.signatures._examples import Example, metric, scope
from mlsleuth.monitors._windows import NumericRef
from mlsleuth.schema._tables import at_most
from mlsleuth.store import _sql_hypotheses as sql

__all__ = ["ModelChange", "VersionContrast"]

#: The prior of a version that took a material share of traffic ("version_took_traffic").
PRIOR = 0.5
#: When the outputs or quality moved with it, or it behaves differently on the same hours ("version_explains").
EXPLAINS_WEIGHT = 0.3
#: When no feature or input moved at the same time ("no_column_moved") ...
QUIET_WEIGHT = 0.1
#: ... and against it when one did and the versions do not differ ("column_moved_too").
COLUMN_MOVED_WEIGHT = -0.2


@dataclass(frozen=True)
class VersionContrast:
    """Two model versions on the same hours: whether they differ, said in a sentence."""

    material: bool
    text: str
    decisions_only: bool  # the decisions differ while the scores agree: a threshold or post-processing change


def _versions(tr: Triage, index: int) -> tuple[str, str | None, float, float]:
    """The version that gained traffic at ``index``, the one that served most before, and the new one's shares."""
    sh = tr.version_shares
    before = sh[:index].sum(0) / max(tr.rows[:index].sum(), 1)
    after = sh[index:].sum(0) / max(tr.rows[index:].sum(), 1)
    new = tr.versions[int(np.argmax(after - before))]
    old = tr.versions[int(np.argmax(before))] if before.sum() > 0 else None
    k = tr.versions.index(new)
    return new, old, float(before[k]), float(after[k])


def _final_share(tr: Triage, version: str, index: int) -> float:
    """The share ``version`` serves at the end of the log: a rollout still ramping up is judged where it ended
    (the last quarter of the windows after ``index``), not by its average since."""
    tail = max(index, len(tr.rows) - max(1, (len(tr.rows) - index) // 4))
    return float(tr.version_shares[tail:, tr.versions.index(version)].sum() / max(tr.rows[tail:].sum(), 1))


def _differ(a: dict[str, Any], b: dict[str, Any], tr: Triage) -> tuple[bool, bool]:
    """Whether the versions' decisions (positive rates) and their score distributions differ beyond noise."""
    th = tr.th
    decisions = scores = False
    if a["pos"] is not None and b["pos"] is not None:
        pa_, pb_ = float(a["pos"]), float(b["pos"])
        se = math.sqrt(max(pa_ * (1 - pa_), 1e-6) / a["n"] + max(pb_ * (1 - pb_), 1e-6) / b["n"])
        rel = (pb_ / pa_ - 1) if pa_ > 0 else math.inf
        decisions = abs(pb_ - pa_) > th.version_contrast_z * se and (
            abs(rel) >= th.version_rel_change or abs(pb_ - pa_) >= th.version_abs_change)
    if a["lo"] is not None and b["lo"] is not None:
        d = abs(float(b["lo"]) - float(a["lo"]))
        scores = d > th.version_contrast_z * math.sqrt(0.25 / a["n"] + 0.25 / b["n"]) and d >= th.score_shift
    return decisions, scores


def version_contrast(tr: Triage, new: str, old: str | None, index: int) -> VersionContrast | None:
    """Compare the new and the old version on the same hours after the onset: decisions and scores."""
    if tr.engine is None or old is None or old == new:
        return None
    at = tr.time_of(index)
    assert at is not None
    sc = tr.refs.get("score")
    median = at_most(sc.edges[len(sc.edges) // 2]) if isinstance(sc, NumericRef) and sc.edges else None
    rows = {r["v"]: r for r in tr.engine.query(sql.version_contrast(
        new, old, at, scope_sql(tr.scope), positive_lit=_literal(tr.positive) if tr.positive is not None else None,
        score_mean=tr.score_is_prob, score_median=median)).to_pylist()}
    a, b = rows.get(old), rows.get(new)
    if a is None or b is None or min(a["n"], b["n"]) < tr.th.version_min_rows:
        return None
    decisions, scores = _differ(a, b, tr)
    reasons = []
    if a["pos"] is not None and b["pos"] is not None:
        reasons.append(f"positive rate {pct(float(b['pos']))} on {new} vs {pct(float(a['pos']))} on {old}")
    if a["lo"] is not None and b["lo"] is not None:
        reasons.append(f"mean score {fmt_num(float(b['s']))} vs {fmt_num(float(a['s']))}")
    only = decisions and not scores and a["lo"] is not None
    text = f"on the same hours after the onset, {', '.join(reasons)}" + (
        ": the new version decides differently on alike scores (a threshold or post-processing change)" if only
        else ": the new version behaves differently" if decisions or scores else ": the versions behave alike")
    return VersionContrast(decisions or scores, text, only)


def threshold_change(tr: Triage, new: str, old: str | None) -> str | None:
    """Whether two versions flag from different scores: each version's decisions as a threshold.

    Where a version flags every score above a cut and none below, the highest unflagged and the
    lowest flagged score bracket its threshold; two versions whose brackets do not overlap decide
    by different thresholds. Versions that do not decide by a threshold give overlapping brackets.
    """
    if tr.engine is None or old is None or old == new or tr.positive is None or not tr.score_is_prob:
        return None
    rows = {r["v"]: r for r in tr.engine.query(
        sql.threshold_brackets(new, old, _literal(tr.positive), scope_sql(tr.scope))).to_pylist()}
    a, b = rows.get(old), rows.get(new)
    if a is None or b is None or min(a["n"], b["n"]) < tr.th.version_min_rows \
            or None in (a["lo"], a["hi"], b["lo"], b["hi"]):
        return None
    if a["hi"] > a["lo"] or b["hi"] > b["lo"]:
        return None  # a version flags some scores below others it does not: no single threshold
    if b["lo"] <= a["hi"] or a["lo"] <= b["hi"]:
        # Disjoint brackets: one version's lowest flagged score is below the other's highest unflagged.
        return (f"{new} flags scores from {fmt_num(float(b['lo']))} up where {old} flagged from "
                f"{fmt_num(float(a['lo']))}: the decision threshold changed")
    return None


class ModelChange(Signature):
    """The version mix changed materially: a new version took traffic (all of it, or a canary's share)."""

    cause = Cause.MODEL_CHANGE
    layer = "model"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """One candidate for the version that gained traffic, weighed by whether it behaves differently."""
        vm = tr.metrics.get("version_mix")
        if not ctx.version_changed or vm is None:
            return []
        i = vm.split.index
        new, old, before, after = _versions(tr, i)
        contrast = version_contrast(tr, new, old, i)
        threshold = threshold_change(tr, new, old)
        # The contrast compares versions on the same traffic, so a feature moving at the same time
        # cannot explain a difference it shows.
        feat_quiet = not any(near(c.onset_index, i, ctx.tol) for c in ctx.features + ctx.inputs)
        aligned = any(near(i, j, ctx.tol) for j in ctx.effect_idx)
        differs = (contrast is not None and contrast.material) or threshold is not None
        explains = (ctx.has_effect and aligned) or differs
        ev = [f"model_version {new} went from {pct(before)} to {pct(after)} of traffic at {when(tr.time_of(i))}"]
        ev += [contrast.text] if contrast is not None else []
        ev += [threshold] if threshold is not None else []
        ev += [metric_sentence(m, tr.time_of(m.split.index)) for m in ctx.outputs + ctx.quality if aligned][:2]
        ev += ["no feature or input changed at the same time"] if feat_quiet else []
        share_new = _final_share(tr, new, i)
        canary = new if share_new < tr.th.canary_share else None
        if canary:
            ev.append(f"{new} serves {pct(share_new)} of traffic at the end of the log: a partial rollout (canary)")
        return [Candidate(
            self.cause, i, terms(("version_took_traffic", PRIOR), ("version_explains", EXPLAINS_WEIGHT if explains
                                                                   else 0.0),
                                 ("no_column_moved" if feat_quiet else "column_moved_too",
                                  QUIET_WEIGHT if feat_quiet else 0.0 if differs else COLUMN_MOVED_WEIGHT)),
            evidence=tuple(ev), signal=sql.served_by(new), canary=canary, explains=explains, gradual=vm.gradual,
            decisions_only=contrast.decisions_only if contrast is not None else threshold is not None, order=(1,))]

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """In all traffic it explains by construction (the outputs moved with it, or it differs on the same
        hours); in a slice the outputs or quality must have moved by ``zmin``."""
        return True if zmin == 0.0 else default_material(tr, zmin)

    def examples(self) -> Sequence[Example]:
        """A new version takes all traffic as the decisions move; not when one version serves throughout."""
        moved = [metric("positive_rate", "model", before=0.05, after=0.08)]
        return (
            Example("v2 replaces v1 as the positive rate moves", True,
                    scope(metrics=moved, versions=("v1", "v2"), switch_at=48)),
            Example("one version throughout", False, scope(metrics=moved, versions=("v1", "v2"))),
        )
