"""Public fixtures: a generator of realistic production-ML incident cases for a card-fraud model, and
smaller generators for a delivery-time regressor and a content-moderation classifier
(:func:`regression_case`, :func:`multiclass_case`), a loan-default model (:func:`loan_case`: monthly cycles,
labels after weeks, discrete tree-ensemble scores, a model config naming the roles), an ad click-through model
(:func:`ads_case`: high volume, labels within minutes, logistic scores, canary rollouts), and cases built on real
public data with faults injected on top (:func:`real_case`, :func:`real_cases`).

Each case is a week of prediction logs with reference data, late labels, change events, lineage,
the fitted model and its ground truth, in the data layout of docs/contract.md; see :func:`make_case`,
:func:`demo_case` and :func:`scenario_suite`.

Examples
--------
>>> from mlsleuth.testing import Cause, Variation, make_case, PipelineFault
>>> case = make_case(Cause.SILENT_PIPELINE_FAILURE, seed=4, rows=5_000, variation=Variation(mode=PipelineFault.ZEROS))
>>> case.truth.cause.value, len(case.truth.features)
('silent_pipeline_failure', 1)
"""

from mlsleuth.testing._ads import ADS_SCENARIOS, ads_case
from mlsleuth.testing._case import (
    DEMO_ONSET,
    Case,
    build_case,
    demo_case,
    demo_spec,
    iter_log_batches,
    make_case,
    scenario_suite,
    suite_specs,
    widen_case,
)
from mlsleuth.testing._demo import DemoResult, build_demo, ingest_case
from mlsleuth.testing._loan import LOAN_SCENARIOS, loan_case
from mlsleuth.testing._plan import DEFAULT_START, plan_case
from mlsleuth.testing._real import REAL_DATASETS, REAL_SCENARIOS, real_case, real_cases
from mlsleuth.testing._regression import (
    MULTICLASS_SCENARIOS,
    REGRESSION_SCENARIOS,
    KindCase,
    multiclass_case,
    regression_case,
)
from mlsleuth.testing._simulate import DEFAULT_SCORE
from mlsleuth.testing._spec import (
    CaseSpec,
    Cause,
    DegradationKind,
    IncidentSpec,
    InfraFault,
    LabelSpec,
    Mode,
    ModelChangeKind,
    PipelineFault,
    Progression,
    ShiftKind,
    SkewKind,
    Truth,
    UpstreamChange,
    Variation,
    Verdict,
    modes_of,
    read_truth,
)
from mlsleuth.testing._week import LargeWeek, write_week
from mlsleuth.testing._world import (
    FEATURES,
    INPUTS,
    LINEAGE,
    MODEL_FEATURES,
    FraudWorld,
    compute_features,
    feature_frame,
    fraud_world,
)

__all__ = [
    "ADS_SCENARIOS",
    "DEFAULT_SCORE",
    "DEFAULT_START",
    "DEMO_ONSET",
    "FEATURES",
    "INPUTS",
    "LINEAGE",
    "LOAN_SCENARIOS",
    "MODEL_FEATURES",
    "MULTICLASS_SCENARIOS",
    "REAL_DATASETS",
    "REAL_SCENARIOS",
    "REGRESSION_SCENARIOS",
    "Case",
    "CaseSpec",
    "Cause",
    "DegradationKind",
    "DemoResult",
    "FraudWorld",
    "IncidentSpec",
    "InfraFault",
    "KindCase",
    "LabelSpec",
    "LargeWeek",
    "Mode",
    "ModelChangeKind",
    "PipelineFault",
    "Progression",
    "ShiftKind",
    "SkewKind",
    "Truth",
    "UpstreamChange",
    "Variation",
    "Verdict",
    "ads_case",
    "build_case",
    "build_demo",
    "compute_features",
    "demo_case",
    "demo_spec",
    "feature_frame",
    "fraud_world",
    "ingest_case",
    "iter_log_batches",
    "loan_case",
    "make_case",
    "modes_of",
    "multiclass_case",
    "plan_case",
    "read_truth",
    "real_case",
    "real_cases",
    "regression_case",
    "scenario_suite",
    "suite_specs",
    "widen_case",
    "write_week",
]
