"""Input coercion shared by the statistics functions (private)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mlsleuth.errors import InputError

__all__ = ["as_counts", "as_pair", "as_sample", "normalise"]

FloatArray = npt.NDArray[np.float64]


def as_sample(values: npt.ArrayLike, name: str, *, allow_empty: bool = False) -> FloatArray:
    """Return a 1-D float array of finite values, or raise naming the argument."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise InputError(f"{name} is empty; a sample needs at least one value")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(f"{name} holds {bad} NaN or infinite values; drop or profile them as nulls first")
    return arr


def as_counts(counts: npt.ArrayLike, name: str) -> FloatArray:
    """Return histogram counts (or weights) as floats over the last axis; non-negative and finite."""
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise InputError(f"{name} must hold at least one bin, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError(f"{name} must be finite and non-negative counts, got {arr!r}")
    return arr


def as_pair(ref: npt.ArrayLike, cur: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Two count vectors over the same bins; broadcasting over leading axes is allowed."""
    p = as_counts(ref, "ref_counts")
    q = as_counts(cur, "cur_counts")
    if p.shape[-1] != q.shape[-1]:
        raise InputError(
            f"ref_counts and cur_counts must cover the same bins: got {p.shape[-1]} and {q.shape[-1]} bins"
        )
    return p, q


def normalise(counts: FloatArray, name: str) -> FloatArray:
    """Counts to proportions along the last axis; an all-zero histogram is an error."""
    total = counts.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise InputError(f"{name} sums to zero; a distribution needs at least one observation")
    return counts / total
