"""Serving infrastructure: errors, latency or fallback scores rose (the model itself may be fine)."""

from __future__ import annotations

from collections.abc import Sequence

from mlsleuth.diagnosis._analysis import Triage
from mlsleuth.diagnosis._metrics import SERVING
from mlsleuth.diagnosis._result import Cause
from mlsleuth.diagnosis._sentences import metric_sentence
from mlsleuth.diagnosis.signatures._base import Candidate, Context, Signature, terms
from mlsleuth.diagnosis.signatures._examples import Example, metric, scope
from mlsleuth.diagnosis.signatures._rowsignal import metric_signal

__all__ = ["ServingInfrastructure"]

#: The prior of a serving metric that moved materially ("serving_metric_moved"): a defect users feel at once.
PRIOR = 0.75
#: Up to this much for how far above noise the strongest one moved ("serving_strength"), reached at STRENGTH_FULL.
STRENGTH_WEIGHT = 0.2
STRENGTH_FULL = 30.0


class ServingInfrastructure(Signature):
    """Error rate, latency or fallback rate changed materially."""

    cause = Cause.SERVING_INFRASTRUCTURE
    layer = "serving"

    def match(self, tr: Triage, ctx: Context) -> list[Candidate]:
        """One candidate timed by the strongest serving metric."""
        if not ctx.serving:
            return []
        top = max(ctx.serving, key=lambda m: m.strength)
        # A p99 jumps as soon as a sliver of requests is hit: when error or fallback rates moved, they
        # and the mean latency say whether the fault spread; a majority of the metrics decides.
        rates = any(m.metric in ("error_rate", "fallback_rate") for m in ctx.serving)
        linear = [m for m in ctx.serving if not (rates and m.metric == "latency_p99_ms")]
        return [Candidate(
            self.cause, top.split.index,
            terms(("serving_metric_moved", PRIOR),
                  ("serving_strength", STRENGTH_WEIGHT * min(top.strength / STRENGTH_FULL, 1.0))),
            evidence=tuple(metric_sentence(m, tr.time_of(m.split.index)) for m in ctx.serving),
            signal=metric_signal(tr, top.metric), gradual=2 * sum(m.gradual for m in linear) > len(linear),
            metrics=tuple(m.metric for m in linear), order=(0,))]

    def material(self, tr: Triage, c: Candidate, zmin: float) -> bool:
        """A serving metric moved materially, by at least ``zmin`` in a slice."""
        return any(m.material and m.strength >= zmin for k, m in tr.metrics.items() if k in SERVING)

    def examples(self) -> Sequence[Example]:
        """Errors jump; not when only the decisions moved."""
        return (
            Example("error rate jumps", True, scope(metrics=[
                metric("error_rate", "serving", before=0.001, after=0.05)])),
            Example("p99 latency doubles", True, scope(metrics=[
                metric("latency_p99_ms", "serving", before=80.0, after=160.0, unit="ms")])),
            Example("only the positive rate moved", False, scope(metrics=[
                metric("positive_rate", "model", before=0.05, after=0.08)])),
        )
