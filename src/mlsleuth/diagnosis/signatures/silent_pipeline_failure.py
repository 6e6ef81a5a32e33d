"""Silent pipeline failure: a feature degenerated (nulls, zeros, a constant, stale or mis-joined values)."""

from __future__ import annotations

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, default_material, own

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
