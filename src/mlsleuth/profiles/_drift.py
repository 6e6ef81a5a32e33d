"""Drift between a reference column profile and a current one (profiles import stats, not vice versa)."""

from __future__ import annotations

import numpy as np

from mlsleuth.errors import InputError
from mlsleuth.profiles._categorical import CategoricalProfile
from mlsleuth.profiles._numeric import NumericProfile
from mlsleuth.stats import DEFAULT_ALPHA, DriftKind, DriftMethod, DriftResult, compare_counts

__all__ = ["aligned_counts", "drift"]


def aligned_counts(
    ref: NumericProfile | CategoricalProfile, cur: NumericProfile | CategoricalProfile
) -> tuple[np.ndarray, np.ndarray]:
    """The two profiles' counts over the same bins or categories (categoricals: the reference's
    vocabulary plus an ``other`` bucket; an open reference's vocabulary is all its values)."""
    if isinstance(ref, NumericProfile) and isinstance(cur, NumericProfile):
        if ref.edges != cur.edges:
            raise InputError("numeric profiles on different edges cannot be compared; profile_like(ref, values)")
        return np.asarray(ref.counts, dtype=np.float64), np.asarray(cur.counts, dtype=np.float64)
    if isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalProfile):
        vocab = ref.values
        r = ref if ref.closed else ref.restricted(vocab)
        c = cur.restricted(vocab)
        return (
            np.asarray([*r.counts, r.other], dtype=np.float64),
            np.asarray([*c.counts, c.other], dtype=np.float64),
        )
    raise InputError(f"cannot compare a {type(ref).__name__} with a {type(cur).__name__}")


def drift(
    ref: NumericProfile | CategoricalProfile,
    cur: NumericProfile | CategoricalProfile,
    *,
    method: DriftMethod | None = None,
    materiality: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_sim: int = 256,
    seed: int = 0,
) -> DriftResult:
    """Decide whether a column's distribution drifted from the reference profile.

    Null rates are not part of this comparison (they are a data-quality check of their own); both
    profiles need at least one non-null value.

    Parameters
    ----------
    ref, cur
        Reference profile and current (window) profile on the same edges / vocabulary.
    method
        An effect size; ``None`` lets :func:`mlsleuth.stats.choose_method` choose and explain.
    materiality, alpha, n_sim, seed
        See :func:`mlsleuth.stats.compare_counts`.

    Examples
    --------
    >>> from mlsleuth.profiles import profile_categorical
    >>> ref = profile_categorical(["a"] * 500 + ["b"] * 500).capped(10)
    >>> drift(ref, profile_categorical(["a"] * 300 + ["c"] * 200)).drifted
    True
    """
    r, c = aligned_counts(ref, cur)
    if r.sum() == 0 or c.sum() == 0:
        raise InputError(
            f"cannot compare distributions: the reference has {int(r.sum())} and the current window "
            f"{int(c.sum())} non-null values"
        )
    if isinstance(ref, NumericProfile) and isinstance(cur, NumericProfile):
        extra = {}
        if method is DriftMethod.WASSERSTEIN:
            extra = {
                "edges": np.asarray(ref.edges),
                "lo": min(ref.min, cur.min),
                "hi": max(ref.max, cur.max),
                "scale": ref.std,
            }
        return compare_counts(
            r, c, kind=DriftKind.NUMERIC, method=method, materiality=materiality, alpha=alpha, n_sim=n_sim,
            seed=seed, **extra,  # type: ignore[arg-type]
        )  # fmt: skip
    return compare_counts(
        r, c, kind=DriftKind.CATEGORICAL, method=method, materiality=materiality, alpha=alpha, n_sim=n_sim, seed=seed
    )
