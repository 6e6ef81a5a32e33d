"""Model degradation: labelled quality fell with nothing else to blame (the world changed under the model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._metrics import QUALITY, got_worse, near
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis._sentences import metric_sentence
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, terms
from mlsleuth.diagnosis.signatures._examples import Example, metric, scope
from mlsleuth.diagnosis.signatures._rowsignal import metric_signal

__all__ = ["ModelDegradation", "quality_timing"]

#: The prior of quality that got worse with no serving fault or new version ("quality_fell").
PRIOR = 0.45
#: For inputs and features that stayed put ("columns_stayed"), against when one drifted then ("columns_drifted").
STAYED_WEIGHT = 0.3
DRIFTED_WEIGHT = -0.25
#: For outputs that did not move then ("outputs_stayed"), against when they did ("outputs_moved").
OUTPUTS_STAYED_WEIGHT = 0.1
OUTPUTS_MOVED_WEIGHT = -0.1
#: For a gradual fall ("gradual_fall"), the usual shape of a model going stale.
GRADUAL_WEIGHT = 0.1
#: Against when some quality metric improved meanwhile ("mixed_quality"): the outputs moved, not the edge.
MIXED_WEIGHT = -0.2


def quality_timing(tr: Triage) -> tuple[bool, int] | None:
    """Whether labelled quality fell gradually, and from which window, pooled over its metrics.

    Each labelled metric alone is noisy, so the material ones are read together: gradual when
    those that found a ramp hold at least half their total strength, or when the median fitted
    ramp spans ``gradual_ramp_hours`` (a sparse metric's broken stick spreads over its noise, so a width of
    several hours alone does not say gradual). The median split is the window.
    """
    quality = [m for m in tr.metrics.values() if m.layer == "quality" and m.material and m.ramp is not None]
    if not quality:
        return None
    ramps = sum(m.strength for m in quality if m.gradual)
    width = float(np.median([m.ramp[1] - m.ramp[0] for m in quality if m.ramp is not None])) * tr.window
    return (ramps >= 0.5 * sum(m.strength for m in quality) or width >= tr.th.gradual_ramp_hours * 3600,
            int(np.median([m.split.index for m in quality])))


class ModelDegradation(Signature):
    """Quality got worse while no serving metric or model version did."""

    cause = Cause.MODEL_DEGRADATION
    layer = "model"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """One candidate timed by the pooled quality metrics (or the strongest that got worse)."""
        # A metric that improved meanwhile (fewer false positives as recall falls) says the outputs
        # moved, not that the model lost its edge.
        worse = [m for m in ctx.quality if got_worse(m)]
        if not worse or ctx.serving or ctx.version_changed:
            return []
        qm = max(worse, key=lambda m: m.strength)
        gradual, onset_index = quality_timing(tr) or (qm.gradual, qm.split.index)
        tol = ctx.tol
        # A slow drift is near anywhere along its ramp, not only at its midpoint.
        drift_near = [c for c in ctx.features + ctx.inputs if near(c.onset_index, onset_index, tol) or (
            c.start_index is not None and c.onset_index is not None
            and c.start_index - tol <= onset_index <= c.onset_index + tol)]
        out_changed = any(near(m.split.index, onset_index, tol) for m in ctx.outputs)
        ev = [metric_sentence(m, tr.time_of(m.split.index)) for m in ctx.quality][:3]
        ev.append("inputs and features stayed within their usual range" if not drift_near
                  else "inputs drifted at the same time, which may explain it")
        return [Candidate(
            self.cause, onset_index,
            terms(("quality_fell", PRIOR),
                  ("columns_drifted", DRIFTED_WEIGHT) if drift_near else ("columns_stayed", STAYED_WEIGHT),
                  ("outputs_moved", OUTPUTS_MOVED_WEIGHT) if out_changed else ("outputs_stayed",
                                                                              OUTPUTS_STAYED_WEIGHT),
                  ("gradual_fall", GRADUAL_WEIGHT if gradual else 0.0),
                  ("mixed_quality", MIXED_WEIGHT if len(worse) < len(ctx.quality) else 0.0)),
            evidence=tuple(ev), signal=metric_signal(tr, qm.metric), gradual=gradual, order=(5,))]

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """Quality itself must have fallen: outputs that moved in a slice belong to whatever moved them.

        Two labelled metrics falling together are stronger evidence than either alone.
        """
        fell = [m.strength for k, m in tr.metrics.items() if k in QUALITY and m.material and got_worse(m)]
        return any(z >= zmin for z in fell) or sum(z >= tr.th.pair_strength * zmin for z in fell) >= 2

    def examples(self) -> Sequence[Example]:
        """Recall falls with nothing else moving; not when serving broke, nor when recall rose."""
        fell = metric("recall", "quality", before=0.8, after=0.6, gradual=True)
        return (
            Example("recall falls gradually, nothing else moves", True, scope(metrics=[fell])),
            Example("recall falls as errors jump", False, scope(metrics=[
                fell, metric("error_rate", "serving", before=0.001, after=0.05)])),
            Example("recall rises", False, scope(metrics=[metric("recall", "quality", before=0.6, after=0.8)])),
        )
