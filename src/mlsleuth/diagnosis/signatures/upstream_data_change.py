"""Upstream data change: a source changed what its values mean (units, codes, a new category, a range)."""

from __future__ import annotations

from collections.abc import Sequence

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._outcomes import error_held
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, default_material, own
from mlsleuth.diagnosis.signatures._columns import domain_broke
from mlsleuth.diagnosis.signatures._examples import Example, column, metric, scope
from mlsleuth.schema import Role

__all__ = ["UpstreamDataChange", "data_change_material"]


def data_change_material(tr: Triage, c: Candidate, zmin: float) -> bool:
    """Material unless labels show the model's error held; always when the data's domain broke."""
    if (held := error_held(tr, c.cause, c.onset_index)) is not None:
        return not held
    return domain_broke(tr, c, zmin) or default_material(tr, zmin)


class UpstreamDataChange(Signature):
    """An input (or a feature with no input logged) changed at one moment, or broke its training domain.

    Which changed columns are this cause is decided once for the column layer
    (:func:`~mlsleuth.diagnosis.signatures._columns.classify_columns`); the arbitration settles it against
    a population shift by the labels, the domain and the change events.
    """

    cause = Cause.UPSTREAM_DATA_CHANGE
    layer = "inputs"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """The column-layer candidates classified as an upstream change."""
        return own(ctx.columns, self.cause)

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """See :func:`data_change_material`."""
        return data_change_material(tr, c, zmin)

    def examples(self) -> Sequence[Example]:
        """A feature with no input logged moves at once with the decisions; not when nothing moved."""
        moved = [metric("positive_rate", "model", before=0.05, after=0.08)]
        return (
            Example("a feature steps with the positive rate", True,
                    scope(metrics=moved, columns=[column("feature.amount")])),
            Example("an input breaks its domain", True, scope(metrics=moved, columns=[
                column("feature.amount"), column("input.amount", role=Role.INPUT, oor_after=0.2)])),
            Example("only the positive rate moved", False, scope(metrics=moved)),
        )
