"""Training-serving skew: serving computes a feature differently from training, its inputs unchanged."""

from __future__ import annotations

from collections.abc import Sequence

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._outcomes import error_held
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, own
from mlsleuth.diagnosis.signatures._examples import Example, column, metric, scope
from mlsleuth.schema import Role

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

    def examples(self) -> Sequence[Example]:
        """A feature is computed differently while its logged input stays put; not when the input moved too."""
        return (
            Example("a feature moves, its input does not", True, scope(columns=[
                column("feature.amount", shift=0.4), column("input.amount", role=Role.INPUT, at=None)])),
            Example("a feature moves with its input", False, scope(
                metrics=[metric("positive_rate", "model", before=0.05, after=0.08)],
                columns=[column("feature.amount"), column("input.amount", role=Role.INPUT)])),
        )
