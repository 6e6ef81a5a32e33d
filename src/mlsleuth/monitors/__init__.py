"""Production monitors: drift, schema, data quality, volume and freshness, predictions, performance, serving.

A monitor is a frozen, hashable spec of its settings whose ``run(context)`` returns typed
:class:`Finding` objects; :func:`run_monitors` runs several over one shared
:class:`MonitorContext`, whose windowed production profiles the query engine computes in one scan
(:func:`window_profiles`) against a reference profiled once and kept in the store
(:func:`build_reference`, :func:`save_reference`, :func:`load_reference`).
"""

from mlsleuth.monitors._checks import (
    DEFAULT_TOLERANCES,
    MONITORS,
    DataQuality,
    EstimatedPerformance,
    FeatureDrift,
    Freshness,
    InputDrift,
    MetricChange,
    Monitor,
    Performance,
    PredictionDrift,
    SchemaCheck,
    ServingHealth,
    Volume,
    WindowMetric,
    default_monitors,
)
from mlsleuth.monitors._context import MonitorContext, MonitorSkipped
from mlsleuth.monitors._findings import Baseline, Finding, Segment, Severity, findings_from_dicts, findings_to_dicts
from mlsleuth.monitors._matrix import DriftMatrix, drift_matrix
from mlsleuth.monitors._profiles import WindowProfile, WindowProfiles, window_profiles
from mlsleuth.monitors._reference import (
    StoredReference,
    build_reference,
    load_reference,
    reference_dir,
    save_reference,
)
from mlsleuth.monitors._run import MonitorReport, run_monitors
from mlsleuth.monitors._source import ArrowSource, LogSource, TimeRange, parse_window

__all__ = [
    "DEFAULT_TOLERANCES",
    "MONITORS",
    "ArrowSource",
    "Baseline",
    "DataQuality",
    "DriftMatrix",
    "EstimatedPerformance",
    "FeatureDrift",
    "Finding",
    "Freshness",
    "InputDrift",
    "LogSource",
    "MetricChange",
    "Monitor",
    "MonitorContext",
    "MonitorReport",
    "MonitorSkipped",
    "Performance",
    "PredictionDrift",
    "SchemaCheck",
    "Segment",
    "ServingHealth",
    "Severity",
    "StoredReference",
    "TimeRange",
    "Volume",
    "WindowMetric",
    "WindowProfile",
    "WindowProfiles",
    "build_reference",
    "default_monitors",
    "drift_matrix",
    "findings_from_dicts",
    "findings_to_dicts",
    "load_reference",
    "parse_window",
    "reference_dir",
    "run_monitors",
    "save_reference",
    "window_profiles",
]
