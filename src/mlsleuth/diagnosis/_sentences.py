"""Evidence sentences: how a changed column or metric reads in a hypothesis."""

from __future__ import annotations

import math
from datetime import datetime

from mlsleuth.diagnosis._analysis import ColumnChange, MetricChange
from mlsleuth.diagnosis._metrics import LEVEL_QUALITY, QUALITY
from mlsleuth.diagnosis._result import fmt_num

__all__ = ["describe_column", "metric_sentence", "pct", "when"]


def pct(x: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{x * 100:.1f} %"


def when(t: datetime | None) -> str:
    """A moment as evidence writes it."""
    return "-" if t is None else t.strftime("%a %Y-%m-%d %H:%M UTC")


def describe_column(cc: ColumnChange, at: datetime | None) -> str:
    """What happened to a column that changed, in one sentence."""
    at_ = f" at {when(at)}" if at else ""
    if cc.quality in ("null", "zero"):
        b, a = (cc.null_before, cc.null_after) if cc.quality == "null" else (cc.zero_before, cc.zero_after)
        return f"{cc.column} {cc.quality} rate rose from {pct(b)} to {pct(a)}{at_}"
    if cc.quality == "decoupled":
        return (f"{cc.column} no longer follows {cc.parent}{at_}: {pct(cc.mismatch_after)} of its values differ "
                f"from the one training gives their {cc.parent} (was {pct(cc.mismatch_before)}), and "
                f"{cc.parent} leaves {pct(cc.unexplained_after)} of its variance unexplained (none in "
                "training): stale or mis-joined values")
    if cc.quality in ("constant", "stale"):
        return (f"{cc.column} stopped varying{at_}: distinct values per window fell from "
                f"{pct(cc.distinct_before)} to {pct(cc.distinct_after)} of rows ({cc.quality} values)")
    if cc.numeric and math.isfinite(cc.median_before) and math.isfinite(cc.median_after) and cc.median_before \
            and cc.median_after / cc.median_before > 0 and abs(cc.median_after / cc.median_before - 1) < 10:
        ch = cc.median_after / cc.median_before - 1
        verb = "rose" if ch > 0 else "fell"
        extra = ""
        if math.isfinite(cc.mean_before) and cc.mean_before:
            extra = f"; mean {fmt_num(cc.mean_before)} -> {fmt_num(cc.mean_after)}"
        oor = f"; {pct(cc.oor_after)} of values now outside the training range" if cc.oor_after > 0.01 else ""
        return (f"{cc.column} median {verb} {abs(ch) * 100:.0f} % ({fmt_num(cc.median_before)} -> "
                f"{fmt_num(cc.median_after)}){at_}{extra}{oor}; KS distance before/after {cc.shift:.2f}")
    if cc.numeric and math.isfinite(cc.median_before) and math.isfinite(cc.median_after):
        return (f"{cc.column} median moved from {fmt_num(cc.median_before)} to {fmt_num(cc.median_after)}{at_}; "
                f"mean {fmt_num(cc.mean_before)} -> {fmt_num(cc.mean_after)}; KS distance before/after {cc.shift:.2f}")
    if not cc.numeric:
        unseen = f"; {pct(cc.unseen_after)} unseen values" if cc.unseen_after > 0.01 else ""
        return f"{cc.column} category mix changed{at_}: total variation {cc.shift:.2f}{unseen}"
    return f"{cc.column} distribution changed{at_}: KS distance before/after {cc.shift:.2f}"


def metric_sentence(m: MetricChange, at: datetime | None) -> str:
    """What happened to a metric that changed, in one sentence."""
    b, a = m.split.before, m.split.after
    if m.metric == "score_distribution":
        return (f"the score distribution moved at {when(at)} "
                f"(share at or below a training decile {pct(b)} -> {pct(a)})")
    if m.unit == "rate" or (m.metric in QUALITY and m.metric not in LEVEL_QUALITY) or m.metric == "positive_rate":
        ratio = f" ({a / b:.1f}x)" if b > 0 and a / b >= 1.5 else ""
        name = f"recall of class {m.subject}" if m.metric == "class_recall" and m.subject else m.metric
        return f"{name} went from {pct(b)} to {pct(a)}{ratio} at {when(at)}" + (
            " (gradually)" if m.gradual else "")
    return f"{m.metric} went from {fmt_num(b)} to {fmt_num(a)}{(' ' + m.unit) if m.unit else ''} at {when(at)}" + (
        " (gradually)" if m.gradual else "")
