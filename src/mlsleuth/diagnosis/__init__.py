"""Diagnosis: triage, layer isolation, failure signatures and ranked root-cause hypotheses."""

from mlsleuth.diagnosis._data import CaseInput, LogView, find_case_files, load_case
from mlsleuth.diagnosis._diagnose import diagnose, diagnose_case
from mlsleuth.diagnosis._result import (
    Cause,
    Diagnosis,
    Distribution,
    Example,
    Finding,
    Hypothesis,
    IncidentCharts,
    Layer,
    LayerStatus,
    Marker,
    MarkerKind,
    ScoreTerm,
    SegmentBar,
    SegmentChart,
    Series,
    Symptom,
    Timeline,
    Verdict,
)
from mlsleuth.diagnosis._runbooks import runbook_source, runbook_steps, runbook_text
from mlsleuth.diagnosis._store import diagnose_store
from mlsleuth.diagnosis._thresholds import DEFAULT_THRESHOLDS, ThresholdInfo, Thresholds

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CaseInput",
    "Cause",
    "Diagnosis",
    "Distribution",
    "Example",
    "Finding",
    "Hypothesis",
    "IncidentCharts",
    "Layer",
    "LayerStatus",
    "LogView",
    "Marker",
    "MarkerKind",
    "ScoreTerm",
    "SegmentBar",
    "SegmentChart",
    "Series",
    "Symptom",
    "ThresholdInfo",
    "Thresholds",
    "Timeline",
    "Verdict",
    "diagnose",
    "diagnose_case",
    "diagnose_store",
    "find_case_files",
    "load_case",
    "runbook_source",
    "runbook_steps",
    "runbook_text",
]
