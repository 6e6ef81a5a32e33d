"""Distribution shift: who arrives changed (several inputs, gradually or through the traffic mix)."""

from __future__ import annotations

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis._sentences import metric_sentence
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, own, terms
from mlsleuth.diagnosis.signatures._rowsignal import metric_signal
from mlsleuth.diagnosis.signatures.upstream_data_change import data_change_material

__all__ = ["DistributionShift"]

#: The outputs moved and nothing logged explains it ("unlogged_shift"): a shift in something the log lacks.
UNLOGGED_PRIOR = 0.4


class DistributionShift(Signature):
    """Inputs moved together (or the features unlike the reference have inputs unlike it too)."""

    cause = Cause.DISTRIBUTION_SHIFT
    layer = "inputs"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """The column-layer candidates classified as a population shift."""
        return own(ctx.columns, self.cause)

    def fallback(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """Outputs moved with no column to blame and no version change: a shift in something unlogged."""
        if not ctx.outputs:
            return []
        om = max(ctx.outputs, key=lambda m: m.strength)
        return [Candidate(self.cause, om.split.index, terms(("unlogged_shift", UNLOGGED_PRIOR)),
                          evidence=(metric_sentence(om, tr.time_of(om.split.index)),
                                    "no logged feature, input, version or serving metric explains it"),
                          signal=metric_signal(tr, om.metric), gradual=om.gradual, order=(6,))]

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """As an upstream change: see :func:`~.upstream_data_change.data_change_material`."""
        return data_change_material(tr, c, zmin)
