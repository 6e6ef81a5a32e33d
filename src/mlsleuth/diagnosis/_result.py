"""The typed result of a diagnosis and its contract JSON (CONTRACT.md section 3)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Cause",
    "Diagnosis",
    "Example",
    "Finding",
    "Hypothesis",
    "Layer",
    "LayerStatus",
    "Symptom",
    "Verdict",
    "iso",
]


class Cause(enum.Enum):
    """The root causes CONTRACT.md section 3 names."""

    UPSTREAM_DATA_CHANGE = "upstream_data_change"
    SILENT_PIPELINE_FAILURE = "silent_pipeline_failure"
    TRAINING_SERVING_SKEW = "training_serving_skew"
    DISTRIBUTION_SHIFT = "distribution_shift"
    MODEL_DEGRADATION = "model_degradation"
    MODEL_CHANGE = "model_change"
    SERVING_INFRASTRUCTURE = "serving_infrastructure"


class Verdict(enum.Enum):
    """Whether something material is wrong."""

    INCIDENT = "incident"
    HEALTHY = "healthy"


class LayerStatus(enum.Enum):
    """What layer isolation concluded about one layer."""

    OK = "ok"
    SUSPECT = "suspect"
    BROKEN = "broken"
    UNKNOWN = "unknown"


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 UTC with a ``Z``, or None."""
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Symptom:
    """A monitored metric of the model's behaviour, quality or serving health that changed."""

    metric: str
    before: float
    after: float
    onset: datetime | None
    gradual: bool
    strength: float
    unit: str = ""
    trend: str = "stable"

    @property
    def change(self) -> float:
        """Relative change, after over before minus one (inf when before is zero)."""
        return (self.after / self.before - 1.0) if self.before else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"metric": self.metric, "before": self.before, "after": self.after, "onset": iso(self.onset),
                "gradual": self.gradual, "strength": round(self.strength, 3), "unit": self.unit,
                "trend": self.trend}


@dataclass(frozen=True)
class Finding:
    """Something notable that is not necessarily an incident (e.g. drift with no effect)."""

    kind: str
    column: str | None
    message: str
    severity: str = "info"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "column": self.column, "message": self.message, "severity": self.severity}


@dataclass(frozen=True)
class Layer:
    """One layer of the stack (serving, model, features, inputs, external) and its status."""

    name: str
    status: LayerStatus
    evidence: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"layer": self.name, "status": self.status.value, "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Example:
    """A request that shows a hypothesis, beside a typical pre-onset one."""

    request_id: str | None
    ts: datetime | None
    values: Mapping[str, Any]
    typical: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"request_id": self.request_id, "ts": iso(self.ts), "typical_before_onset": self.typical,
                "values": dict(self.values)}


@dataclass(frozen=True)
class Hypothesis:
    """A ranked explanation: a cause with its onset, culprits, scope, events and evidence."""

    cause: Cause
    confidence: float
    onset: datetime | None
    features: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    segments: tuple[Mapping[str, str], ...] = ()
    events: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The contract's hypothesis object, plus ``sources`` and ``examples``."""
        return {
            "cause": self.cause.value,
            "confidence": round(float(self.confidence), 3),
            "onset": iso(self.onset),
            "features": list(self.features),
            "inputs": list(self.inputs),
            "segments": [dict(s) for s in self.segments],
            "events": list(self.events),
            "evidence": list(self.evidence),
            "next_steps": list(self.next_steps),
            "sources": list(self.sources),
            "examples": [e.to_dict() for e in self.examples],
        }


@dataclass(frozen=True)
class Diagnosis:
    """The full result of ``diagnose``: verdict, ranked hypotheses and how they were reached."""

    verdict: Verdict
    hypotheses: tuple[Hypothesis, ...] = ()
    symptoms: tuple[Symptom, ...] = ()
    layers: tuple[Layer, ...] = ()
    findings: tuple[Finding, ...] = ()
    skipped: tuple[str, ...] = ()
    triage: Mapping[str, Any] = field(default_factory=dict)
    runbook: str = ""

    @property
    def top(self) -> Hypothesis | None:
        """The most likely hypothesis, if any."""
        return self.hypotheses[0] if self.hypotheses else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of CONTRACT.md section 3, with the extra top-level fields it welcomes."""
        return {
            "verdict": self.verdict.value,
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "symptom": self.symptoms[0].to_dict() if self.symptoms else None,
            "symptoms": [s.to_dict() for s in self.symptoms],
            "triage": dict(self.triage),
            "layers": [layer.to_dict() for layer in self.layers],
            "findings": [f.to_dict() for f in self.findings],
            "skipped": list(self.skipped),
            "runbook": self.runbook,
        }
