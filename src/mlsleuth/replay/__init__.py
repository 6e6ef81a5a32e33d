"""Fix and verify: model and pipeline runners, replay, verification, skew checks and A/B comparison.

Runners score logged requests again (:func:`load_runner`, :func:`load_pipeline`); :func:`replay`
compares a replay with what was logged; :func:`verify` judges a fix against the pre-onset
baseline; :func:`skew_check` and :func:`compare_offline` find training-serving skew per request;
:func:`compare` puts two model versions side by side with tests and power. :func:`parse_segments`,
:func:`read_request_ids`, :func:`read_hypothesis` and :func:`read_checked` turn command-line text and
files into the arguments of these calls.
"""

from mlsleuth.replay._compare import Comparison, Design, MetricTest, Outcome, SegmentComparison, compare
from mlsleuth.replay._inputs import parse_segments, read_checked, read_hypothesis, read_request_ids
from mlsleuth.replay._metrics import Metric, Metrics, Rate, ScoreSummary, infer_threshold
from mlsleuth.replay._replay import (
    MetricCheck,
    ReplayResult,
    RequestDiff,
    SegmentReplay,
    Tolerance,
    Verdict,
    Verification,
    replay,
    verify,
)
from mlsleuth.replay._runners import (
    EstimatorRunner,
    Frame,
    FunctionRunner,
    HttpRunner,
    MemoryRunner,
    PipelineRunner,
    Runner,
    load_pipeline,
    load_runner,
)
from mlsleuth.replay._select import LogSource, Selection, select
from mlsleuth.replay._skew import FeatureSkew, SkewReport, compare_offline, skew_check

__all__ = [
    "Comparison",
    "Design",
    "EstimatorRunner",
    "FeatureSkew",
    "Frame",
    "FunctionRunner",
    "HttpRunner",
    "LogSource",
    "MemoryRunner",
    "Metric",
    "MetricCheck",
    "MetricTest",
    "Metrics",
    "Outcome",
    "PipelineRunner",
    "Rate",
    "ReplayResult",
    "RequestDiff",
    "Runner",
    "ScoreSummary",
    "SegmentComparison",
    "SegmentReplay",
    "Selection",
    "SkewReport",
    "Tolerance",
    "Verdict",
    "Verification",
    "compare",
    "compare_offline",
    "infer_threshold",
    "load_pipeline",
    "load_runner",
    "parse_segments",
    "read_checked",
    "read_hypothesis",
    "read_request_ids",
    "replay",
    "select",
    "skew_check",
    "verify",
]
