"""What the model itself says: is it still the model that served, and which feature repair undoes the symptom.

With a model (``--model``), three checks run on a few thousand logged requests on each
side of the onset:

* consistency: re-scoring the logged features reproduces the logged scores before the
  onset but not after it -> the serving model changed (even with no new version label);
* reference check: the model still ranks the reference well -> the model is cleared;
* counterfactual repair: each suspect feature's post-onset values are mapped back onto
  its pre-onset distribution (quantile mapping), the rows re-scored, and the share of the
  score shift that disappears is that feature's responsibility.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.diagnosis._data import ScoreFn
from mlsleuth.diagnosis._thresholds import DEFAULT_THRESHOLDS, Thresholds
from mlsleuth.store import Engine
from mlsleuth.store._sql_case import sample_rows, time_range

__all__ = ["ModelEvidence", "check_model"]

#: Logged requests re-scored on each side of the onset.
SAMPLE = 5000
#: Fewer re-scored requests than this on a side say nothing.
MIN_SIDE = 50
#: A re-score differs from the logged score by more than this, relative (plus as much absolute).
SCORE_RTOL = 1e-3
#: Reference rows the model's AUC is read on.
REFERENCE_ROWS = 20_000
#: A score shift smaller than this has no share to attribute to features.
MIN_SHIFT = 1e-4


@dataclass(frozen=True)
class ModelEvidence:
    """The outcome of the model checks."""

    mismatch_before: float
    mismatch_after: float
    score_shift: float
    repaired_share: dict[str, float] = field(default_factory=dict)
    reference_auc: float | None = None
    thresholds: Thresholds = DEFAULT_THRESHOLDS

    @property
    def model_changed(self) -> bool:
        """Logged scores stopped matching the model's own scores at the onset."""
        th = self.thresholds
        return self.mismatch_before < th.model_match_share and self.mismatch_after > th.model_mismatch_share

    @property
    def model_consistent(self) -> bool:
        """The model reproduces the logged scores on both sides of the onset."""
        th = self.thresholds
        return self.mismatch_before < th.model_match_share and self.mismatch_after < th.model_match_share


def _rows(engine: Engine, cols: Sequence[str], onset: datetime, *, before: bool) -> pa.Table:
    """The ``SAMPLE`` requests nearest the onset on one side of it."""
    cond = time_range("ts", None, onset) if before else time_range("ts", onset, None)
    return engine.query(sample_rows(cols, cond, latest_first=before, limit=SAMPLE))


def _score(fn: ScoreFn, t: pa.Table, features: Sequence[str]) -> np.ndarray:
    return np.asarray(fn(t.select(list(features))), dtype=np.float64).ravel()


def _quantile_map(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Map each post-onset value to the pre-onset value at the same rank."""
    ok_b = np.sort(before[np.isfinite(before)])
    if len(ok_b) == 0:
        return after
    ranks = np.argsort(np.argsort(after, kind="stable"), kind="stable") / max(len(after) - 1, 1)
    return np.quantile(ok_b, ranks)


def check_model(engine: Engine, fn: ScoreFn, features: Sequence[str], onset: datetime, suspects: Sequence[str],
                *, reference: pa.Table | None = None,
                thresholds: Thresholds = DEFAULT_THRESHOLDS) -> ModelEvidence | None:
    """Run the consistency, reference and counterfactual-repair checks around ``onset``."""
    cols = [*features, "score"]
    before = _rows(engine, cols, onset, before=True)
    after = _rows(engine, cols, onset, before=False)
    if before.num_rows < MIN_SIDE or after.num_rows < MIN_SIDE:
        return None
    try:
        sb = _score(fn, before, features)
        sa = _score(fn, after, features)
    except Exception:  # a model that cannot score the logged features says nothing here
        return None
    lb = np.asarray(before.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    la = np.asarray(after.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    mis_b = float(np.mean(np.abs(sb - lb) > SCORE_RTOL + SCORE_RTOL * np.abs(lb)))
    mis_a = float(np.mean(np.abs(sa - la) > SCORE_RTOL + SCORE_RTOL * np.abs(la)))
    shift = float(np.mean(sa) - np.mean(sb))
    shares: dict[str, float] = {}
    if abs(shift) > MIN_SHIFT:
        for f in suspects:
            if f not in features or (not pa.types.is_floating(after.schema.field(f).type) and not \
                    pa.types.is_integer(after.schema.field(f).type)):
                continue
            va = np.asarray(after.column(f).to_numpy(zero_copy_only=False), dtype=np.float64)
            vb = np.asarray(before.column(f).to_numpy(zero_copy_only=False), dtype=np.float64)
            repaired = after.set_column(after.column_names.index(f), f,
                                        pa.array(_quantile_map(np.nan_to_num(va, nan=np.nanmedian(vb)), vb)))
            try:
                sr = _score(fn, repaired, features)
            except Exception:
                continue
            shares[f] = float(np.clip(1.0 - (np.mean(sr) - np.mean(sb)) / shift, -1.0, 1.0))
    ref_auc = None
    if reference is not None and "label" in reference.column_names and all(f in reference.column_names
                                                                            for f in features):
        ref = reference.slice(0, REFERENCE_ROWS).filter(pc.is_valid(reference.slice(0, REFERENCE_ROWS).column("label")))
        y = np.asarray(ref.column("label").to_numpy(zero_copy_only=False))
        if len(np.unique(y)) == 2:
            try:
                s = _score(fn, ref, features)
                pos = y == np.max(y)
                ranks = np.argsort(np.argsort(s)) + 1
                ref_auc = float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))
            except Exception:
                ref_auc = None
    return ModelEvidence(mis_b, mis_a, shift, shares, ref_auc, thresholds)
