"""What every signature shares: the candidate record, the facts it matches against and its protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from mlsleuth.diagnosis._analysis import ColumnChange, MetricChange, Triage
from mlsleuth.diagnosis._metrics import QUALITY, output_metrics
from mlsleuth.diagnosis._result import Cause, ScoreTerm
from mlsleuth.diagnosis.signatures._examples import Example

__all__ = ["Candidate", "Context", "Layer", "Signature", "default_material", "own", "terms"]

#: Where in the stack a cause sits (the ``layers`` of the diagnosis JSON).
Layer = str


@dataclass(frozen=True)
class Candidate:
    """One possible cause found in one traffic scope, before arbitration and ranking.

    ``terms`` are the named parts of its score: the score *is* their sum (in order), so the JSON shows
    why a hypothesis outranks another. Rules that change a candidate return a new one
    (:func:`dataclasses.replace`), adding a term for any change of score and a sentence saying why.
    """

    cause: Cause
    onset_index: int | None
    terms: tuple[ScoreTerm, ...] = ()
    features: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    signal: str | None = None  # per-row signal SQL (store._sql_hypotheses) to locate segments and the onset
    signal_up: bool = True  # whether the signal rises after the onset
    material: bool = False  # the model's outputs, quality or serving moved, or a defect is present
    tr: Triage | None = field(default=None, compare=False)  # the slice it was found in (None: all traffic)
    canary: str | None = None  # a new model version serving only part of the traffic
    explains: bool = True  # its timing matches a change in outputs or quality (or it is a defect)
    culprit: str | None = None
    gradual: bool = False
    decisions_only: bool = False  # a model version that decides differently on the same scores
    metrics: tuple[str, ...] = ()  # the metrics that time it, when no column does
    order: tuple[int, ...] = (0,)  # where it was found: layer from serving down, then the column's rank

    @property
    def score(self) -> float:
        """The sum of the score terms, in order."""
        return sum(t.value for t in self.terms)

    @property
    def columns(self) -> tuple[str, ...]:
        """Its culprit features, then inputs."""
        return self.features + self.inputs

    def scored(self, name: str, value: float, *evidence: str) -> Candidate:
        """This candidate with one more score term (and the sentences that justify it)."""
        return replace(self, terms=(*self.terms, ScoreTerm(name, value)), evidence=(*self.evidence, *evidence))

    def told(self, *evidence: str) -> Candidate:
        """This candidate with more evidence."""
        return replace(self, evidence=(*self.evidence, *evidence))


def terms(*parts: tuple[str, float]) -> tuple[ScoreTerm, ...]:
    """Score terms from (name, value) pairs, leaving out those worth exactly nothing."""
    return tuple(ScoreTerm(n, v) for n, v in parts if v != 0.0)


@dataclass(frozen=True)
class Context:
    """The facts of one traffic scope that signatures match against, computed once per scope.

    ``features`` and ``inputs`` are the changed columns of each role, strongest first; ``subtle`` the
    features that moved little but far beyond noise exactly when the outputs did.
    """

    in_slice: bool
    tol: int  # windows within which two changes are one (thresholds.near_hours)
    outputs: tuple[MetricChange, ...]
    quality: tuple[MetricChange, ...]
    serving: tuple[MetricChange, ...]
    features: tuple[ColumnChange, ...]
    inputs: tuple[ColumnChange, ...]
    subtle: tuple[ColumnChange, ...] = ()
    version_changed: bool = False  # a new model version took a material share of traffic
    columns: tuple[Candidate, ...] = ()  # the column layer's candidates (signatures._columns), each classified

    @property
    def effect_idx(self) -> list[int]:
        """Windows where the outputs or quality moved."""
        return [m.split.index for m in self.outputs + self.quality]

    @property
    def has_effect(self) -> bool:
        """Whether the outputs or labelled quality moved at all."""
        return bool(self.outputs or self.quality)


class Signature:
    """One root cause: where it sits, how it is matched, when it is material.

    A subclass sets ``cause`` and ``layer`` and implements :meth:`match`; the contract test
    (tests/test_signatures.py) runs every registered signature on its :meth:`examples`.
    """

    cause: ClassVar[Cause]
    layer: ClassVar[Layer]

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """The candidates of this cause in one scope."""
        raise NotImplementedError

    def fallback(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """Candidates offered only when no signature matched at all (none by default)."""
        return []

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """Whether ``c`` explains a material change (``zmin``: the strength a slice's change needs)."""
        return default_material(tr, zmin)

    def examples(self) -> Sequence[Example]:
        """Hand-built scopes where the signature fires and where it does not (for the contract test)."""
        return ()


def own(cands: Sequence[Candidate], cause: Cause) -> list[Candidate]:
    """The candidates of ``cause`` among ``cands`` (a signature's share of the column layer)."""
    return [c for c in cands if c.cause is cause]


def default_material(tr: Triage, zmin: float) -> bool:
    """The outputs or labelled quality moved by at least ``zmin``."""
    return any(m.strength >= zmin for m in output_metrics(tr)) or any(
        m.material and m.strength >= zmin for k, m in tr.metrics.items() if k in QUALITY)
