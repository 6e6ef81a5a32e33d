"""Distribution shift: who arrives changed (several inputs, gradually or through the traffic mix)."""

from __future__ import annotations

from collections.abc import Sequence

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis._sentences import metric_sentence
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, own, terms
from mlsleuth.diagnosis.signatures._examples import Example, column, metric, scope
from mlsleuth.diagnosis.signatures._rowsignal import metric_signal
from mlsleuth.diagnosis.signatures.upstream_data_change import data_change_material
from mlsleuth.schema import Role

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

    def examples(self) -> Sequence[Example]:
        """An input and its feature drift together; the outputs move with nothing logged to blame."""
        moved = [metric("positive_rate", "model", before=0.05, after=0.08, gradual=True)]
        return (
            Example("an input and its feature drift gradually", True, scope(metrics=moved, columns=[
                column("feature.amount", gradual=True), column("input.amount", role=Role.INPUT, gradual=True)])),
            Example("the outputs move, nothing logged did", True, scope(metrics=moved)),
            Example("only errors jump", False, scope(metrics=[
                metric("error_rate", "serving", before=0.001, after=0.05)])),
        )
