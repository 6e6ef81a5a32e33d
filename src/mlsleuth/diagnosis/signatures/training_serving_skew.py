"""Training-serving skew: serving computes a feature differently from training, its inputs unchanged."""

from __future__ import annotations

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._outcomes import error_held
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, own

__all__ = ["TrainingServingSkew"]


class TrainingServingSkew(Signature):
    """A feature changed (or is unlike the reference from the start) while its logged inputs did not."""

    cause = Cause.TRAINING_SERVING_SKEW
    layer = "features"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """The column-layer candidates classified as a skew."""
        return own(ctx.columns, self.cause)

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """A defect, unless a regressor's or classifier's labels show the error stayed where training had it."""
        held = error_held(tr, c.cause, c.onset_index)
        return True if held is None else not held
