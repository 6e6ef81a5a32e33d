"""The typed result of a diagnosis and its contract JSON (docs/contract.md, the diagnosis JSON)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Cause",
    "Diagnosis",
    "Distribution",
    "Example",
    "Finding",
    "Hypothesis",
    "IncidentCharts",
    "Layer",
    "LayerStatus",
    "Marker",
    "MarkerKind",
    "ScoreTerm",
    "SegmentBar",
    "SegmentChart",
    "Series",
    "Symptom",
    "Timeline",
    "Verdict",
    "iso",
]


def fmt_num(x: float) -> str:
    """A number as evidence sentences and charts write it: thousands separated, three significant digits."""
    if not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


class Cause(enum.Enum):
    """The root causes the diagnosis JSON names (docs/contract.md)."""

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
class ScoreTerm:
    """One named part of a hypothesis's score: the rule that added it and how much (negative: it counted against).

    A hypothesis's score is the sum of its terms (capped below 1); its confidence is that score shared
    against the other hypotheses' (docs/diagnosis.md).
    """

    name: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"term": self.name, "value": round(float(self.value), 4)}


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
    score_terms: tuple[ScoreTerm, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The contract's hypothesis object, plus ``sources``, ``examples`` and ``score_terms``."""
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
            "score_terms": [t.to_dict() for t in self.score_terms],
        }


class MarkerKind(enum.Enum):
    """What a marker on a time chart stands for."""

    ONSET = "onset"  # when the diagnosed change started
    EVENT = "event"  # a change event (``culprit`` when the hypothesis names it)
    VISIBLE = "visible"  # the first window where the affected metric had made half of its change


def _num(x: float) -> float | None:
    """A float for JSON: ``None`` for NaN and infinities, rounded to 6 significant digits."""
    return float(f"{x:.6g}") if math.isfinite(x) else None


@dataclass(frozen=True)
class Marker:
    """A moment marked on the time charts: the onset, a change event, when the symptom became visible."""

    ts: datetime
    kind: MarkerKind
    label: str
    detail: str = ""
    culprit: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ts": iso(self.ts), "kind": self.kind.value, "label": self.label, "detail": self.detail,
                "culprit": self.culprit}


@dataclass(frozen=True)
class Series:
    """One per-window series of a time chart (NaN where a window has no data).

    ``statistic`` says what each value is (``rate``, ``median``, ``null rate``, ...) and ``unit`` its unit
    (``rate`` for a fraction in [0, 1], ``ms``, or empty for the column's own unit). ``before`` and
    ``after`` are the levels on each side of the onset (NaN when there is no onset).
    """

    name: str
    statistic: str
    unit: str
    values: tuple[float, ...]
    before: float = math.nan
    after: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as null)."""
        return {"name": self.name, "statistic": self.statistic, "unit": self.unit,
                "values": [_num(v) for v in self.values], "before": _num(self.before), "after": _num(self.after)}


@dataclass(frozen=True)
class Timeline:
    """The affected metrics and the culprit's signal per window, with the onset and change events marked.

    ``starts`` are the windows' start times (UTC), ``window_seconds`` their length; ``scope`` the segment the
    series are restricted to (empty for all traffic).
    """

    starts: tuple[datetime, ...]
    window_seconds: int
    series: tuple[Series, ...]
    markers: tuple[Marker, ...] = ()
    scope: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"starts": [iso(t) for t in self.starts], "window_seconds": self.window_seconds,
                "series": [s.to_dict() for s in self.series], "markers": [m.to_dict() for m in self.markers],
                "scope": dict(self.scope)}


@dataclass(frozen=True)
class Distribution:
    """A culprit column's distribution before and after the onset, against the reference.

    For a number, ``edges`` holds the ``len(bins) + 1`` bin edges (values beyond the ends are counted in the
    end bins; ``log_scale`` when the bins are spaced evenly on a log scale); for a category ``edges`` is empty
    and ``bins`` holds the categories. Shares are of the non-null values; ``before`` is empty when there is
    no onset (the whole log is then ``after``) and ``reference`` when the reference lacks the column.
    """

    column: str
    bins: tuple[str, ...]
    edges: tuple[float, ...]
    before: tuple[float, ...]
    after: tuple[float, ...]
    reference: tuple[float, ...]
    null_before: float = math.nan
    null_after: float = math.nan
    null_reference: float = math.nan
    n_before: int = 0
    n_after: int = 0
    n_reference: int = 0
    split: datetime | None = None
    log_scale: bool = False
    scope: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"column": self.column, "bins": list(self.bins), "edges": [_num(e) for e in self.edges],
                "log_scale": self.log_scale, "split": iso(self.split), "scope": dict(self.scope),
                "before": [_num(v) for v in self.before], "after": [_num(v) for v in self.after],
                "reference": [_num(v) for v in self.reference],
                "null": {"before": _num(self.null_before), "after": _num(self.null_after),
                         "reference": _num(self.null_reference)},
                "n": {"before": self.n_before, "after": self.n_after, "reference": self.n_reference}}


@dataclass(frozen=True)
class SegmentBar:
    """One value of a segment column: its share of traffic and the metric before and after the onset."""

    value: str
    share: float
    before: float
    after: float
    n_before: int
    n_after: int
    affected: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"value": self.value, "share": _num(self.share), "before": _num(self.before),
                "after": _num(self.after), "n_before": self.n_before, "n_after": self.n_after,
                "affected": self.affected}


@dataclass(frozen=True)
class SegmentChart:
    """A metric per value of one segment column, before and after the onset (the rest lumped as ``(other)``)."""

    column: str
    metric: str
    unit: str
    bars: tuple[SegmentBar, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"column": self.column, "metric": self.metric, "unit": self.unit,
                "bars": [b.to_dict() for b in self.bars]}


@dataclass(frozen=True)
class IncidentCharts:
    """What the report draws for the top hypothesis, computed by the diagnosis (small aggregates only).

    ``excess`` estimates the extra occurrences of the first affected rate since the onset (for a rate
    over all requests, such as the positive or error rate), with ``excess_metric`` naming it.

    Examples
    --------
    >>> d = diagnose("case/log.parquet", reference="case/reference.parquet")  # doctest: +SKIP
    >>> d.charts.timeline.series[0].name, d.charts.distributions[0].column  # doctest: +SKIP
    ('positive_rate', 'feature.amount_to_avg_ratio')
    """

    timeline: Timeline | None = None
    distributions: tuple[Distribution, ...] = ()
    segments: tuple[SegmentChart, ...] = ()
    excess: float = math.nan
    excess_metric: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"timeline": self.timeline.to_dict() if self.timeline is not None else None,
                "distributions": [d.to_dict() for d in self.distributions],
                "segments": [s.to_dict() for s in self.segments],
                "excess": {"metric": self.excess_metric, "value": _num(self.excess)} if self.excess_metric else None}


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
    charts: IncidentCharts | None = None  # chart data of the top hypothesis; None when healthy
    runbook_source: str = ""  # the override file the runbook came from; "" when the shipped one was used
    thresholds: Mapping[str, float] = field(default_factory=dict)  # the thresholds table applied, by name

    def _repr_html_(self) -> str:
        """The ``--format html`` report, shown inline by Jupyter."""
        # The renderers live in mlsleuth.report, above this module: imported only when a notebook shows it.
        from mlsleuth.report._notebook import notebook_html

        return notebook_html(self)

    @property
    def top(self) -> Hypothesis | None:
        """The most likely hypothesis, if any."""
        return self.hypotheses[0] if self.hypotheses else None

    def to_dict(self) -> dict[str, Any]:
        """The diagnosis JSON of docs/contract.md, with the extra top-level fields it welcomes."""
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
            "runbook_source": self.runbook_source or None,
            "charts": self.charts.to_dict() if self.charts is not None else None,
            "thresholds": dict(self.thresholds),
        }
