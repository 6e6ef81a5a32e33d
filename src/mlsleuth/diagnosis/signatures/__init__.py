"""One signature per root cause, and the registry the diagnosis runs them from.

Each module here holds one cause: how it is matched on a scope's signals (its candidates with their
evidence and named score terms), where in the stack it sits (``layer``) and when a candidate of it is
material. The diagnosis runs every signature in :data:`REGISTRY`; an eighth cause is one module, its
runbook (``diagnosis/runbooks/<cause>.md``) and one line below (tests/test_signatures.py checks all three).
"""

from __future__ import annotations

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._result import Cause, Finding
from mlsleuth.diagnosis._sentences import describe_column
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature
from mlsleuth.diagnosis.signatures._context import context
from mlsleuth.diagnosis.signatures.distribution_shift import DistributionShift
from mlsleuth.diagnosis.signatures.model_change import ModelChange
from mlsleuth.diagnosis.signatures.model_degradation import ModelDegradation, quality_timing
from mlsleuth.diagnosis.signatures.serving_infrastructure import ServingInfrastructure
from mlsleuth.diagnosis.signatures.silent_pipeline_failure import SilentPipelineFailure
from mlsleuth.diagnosis.signatures.training_serving_skew import TrainingServingSkew
from mlsleuth.diagnosis.signatures.upstream_data_change import UpstreamDataChange

__all__ = ["REGISTRY", "Candidate", "Context", "Signature", "context", "is_material", "match_all",
           "quality_timing", "signature_of"]

#: Every cause the diagnosis can name, from the serving layer down.
REGISTRY: tuple[Signature, ...] = (
    ServingInfrastructure(),
    ModelChange(),
    UpstreamDataChange(),
    DistributionShift(),
    SilentPipelineFailure(),
    TrainingServingSkew(),
    ModelDegradation(),
)

_BY_CAUSE = {s.cause: s for s in REGISTRY}


def signature_of(cause: Cause) -> Signature:
    """The registered signature of ``cause``."""
    return _BY_CAUSE[cause]


def is_material(tr: Triage, c: Candidate, *, zmin: float = 0.0) -> bool:
    """Whether a candidate explains a material change in outputs, quality or serving, or is a defect.

    ``zmin`` asks for more than noise (a slice is one of many tested: it needs a stronger change).
    """
    return c.explains and signature_of(c.cause).material(tr, c, zmin)


def match_all(tr: Triage, *, in_slice: bool = False) -> tuple[list[Candidate], list[Finding]]:
    """Every signature's candidates in one scope, in the order they were found, and the drift that moved nothing.

    A signature's fallback is offered only when no signature matched at all.
    """
    ctx = context(tr, in_slice=in_slice)
    cands = [c for s in REGISTRY for c in s.match(tr, ctx)]
    if not cands:
        cands = [c for s in REGISTRY for c in s.fallback(tr, ctx)]
    cands.sort(key=lambda c: c.order)
    claimed = {col for c in cands for col in c.columns}
    findings = [Finding("drift", c.column, describe_column(c, tr.time_of(c.onset_index))
                        + " (no effect on the model's outputs, quality or serving health)")
                for c in ctx.features + ctx.inputs if c.column not in claimed]
    return cands, findings
