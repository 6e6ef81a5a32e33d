"""The model's metrics by layer, and the few facts about them every signature reads."""

from __future__ import annotations

from mlsleuth.diagnosis._analysis import MetricChange, Triage

__all__ = ["LEVEL_QUALITY", "LOWER_IS_BETTER", "OUTPUT", "QUALITY", "SERVING", "got_worse", "near", "output_metrics"]

#: What the model outputs: a move in these is what users see first.
OUTPUT = ("positive_rate", "mean_prediction", "class_mix")
#: Labelled quality.
QUALITY = ("false_positive_rate", "recall", "accuracy", "precision", "mae", "bias", "class_recall")
#: Serving health.
SERVING = ("error_rate", "latency_p99_ms", "latency_mean_ms", "fallback_rate")
#: Quality metrics where a rise is worse.
LOWER_IS_BETTER = ("false_positive_rate", "mae")
#: Quality metrics measured in the label's own unit (a regressor's error), not as rates.
LEVEL_QUALITY = ("mae", "bias")


def output_metrics(tr: Triage) -> list[MetricChange]:
    """The output metrics that moved, with the score distribution when it moved by ``score_shift``."""
    out = [m for k, m in tr.metrics.items() if k in OUTPUT and m.material]
    sc = tr.columns.get("score")
    if sc is not None and sc.changed and sc.shift >= tr.th.score_shift and sc.split is not None:
        out.append(MetricChange("score_distribution", sc.split, True, sc.gradual, "model"))
    return out


def got_worse(m: MetricChange) -> bool:
    """Whether a quality metric moved the bad way."""
    if m.metric == "bias":  # a bias is worse the further from zero, either way
        return abs(m.split.after) > abs(m.split.before)
    return (m.split.after > m.split.before) == (m.metric in LOWER_IS_BETTER)


def near(a: int | None, b: int | None, tol: int) -> bool:
    """Two window indexes at most ``tol`` apart (never when either is unknown)."""
    return a is not None and b is not None and abs(a - b) <= tol
