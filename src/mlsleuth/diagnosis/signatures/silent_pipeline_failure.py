"""Silent pipeline failure: a feature degenerated (nulls, zeros, a constant, stale or mis-joined values)."""

from __future__ import annotations

from collections.abc import Sequence

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, default_material, own
from mlsleuth.diagnosis.signatures._examples import Example, column, metric, scope
from mlsleuth.schema import Role

__all__ = ["SilentPipelineFailure"]


class SilentPipelineFailure(Signature):
    """A feature took degenerate values while its inputs did not (classified in the column layer)."""

    cause = Cause.SILENT_PIPELINE_FAILURE
    layer = "features"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """The column-layer candidates classified as a pipeline failure."""
        return own(ctx.columns, self.cause)

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """A defect: material when its culprit changed by ``zmin`` (always in all traffic)."""
        if c.culprit and (cc := tr.columns.get(c.culprit)) is not None:
            return cc.z >= zmin
        return default_material(tr, zmin)

    def examples(self) -> Sequence[Example]:
        """A feature turns null; not when it merely moves with its input."""
        return (
            Example("a feature's null rate jumps", True, scope(columns=[
                column("feature.amount", null_before=0.0, null_after=0.4)])),
            Example("a feature moves with its input", False, scope(
                metrics=[metric("positive_rate", "model", before=0.05, after=0.08)],
                columns=[column("feature.amount"), column("input.amount", role=Role.INPUT)])),
        )
