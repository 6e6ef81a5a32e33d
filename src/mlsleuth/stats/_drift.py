"""Drift decisions whose thresholds mean the same at any sample size and any number of categories.

The rule
--------
Every method yields an *effect size* (a property of the two distributions, not of the sample
size). A window is drifted when the effect size exceeds

    threshold = max(materiality, noise_floor)

* ``materiality`` is a fixed, method-specific effect size, calibrated so that all methods agree
  on what "material" means: the change produced by a **0.1-standard-deviation location shift of a
  normal** seen through 20 equal-mass bins, which for categoricals is about **5 percentage points
  of share moved between two categories** (see :data:`MATERIALITY`).
* ``noise_floor`` is the ``1 - alpha`` quantile of the same effect size when *nothing changed*:
  the pooled observations are redealt ``n_sim`` times between a reference of ``n_ref`` and a window
  of ``n_cur`` rows (a permutation null, drawn per bin with the multivariate hypergeometric
  distribution, so it costs ``O(bins)`` per draw even at 10 million rows; seeded, so the function
  stays deterministic), and a scaled chi-square ``a * chi2(d)`` is moment-matched to the squared
  effect size (Satterthwaite) to read off a tail quantile far beyond what ``n_sim`` draws give
  directly. The floor follows the sampling bias that grows with the number of non-empty bins or
  categories and shrinks as ``1/n_ref + 1/n_cur``, including the sparse regime (1000 categories,
  1000 rows) where chi-square approximations and a plug-in bootstrap (which ignores the mass of
  categories neither side saw) both fail.

So at small windows the noise floor dominates and the rule is a significance test at level
``alpha``; at large windows the materiality dominates and a tiny, real but immaterial shift at 10
million rows is not flagged. The chosen method, the reason for it and both thresholds are stored
in the :class:`DriftResult`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlsleuth.errors import InputError
from mlsleuth.schema._tables import VALUE_RTOL
from mlsleuth.stats._arrays import FloatArray, as_pair, as_sample, normalise
from mlsleuth.stats._distances import (
    PSI_EPS,
    _bin_bounds,
    _cohen_w_props,
    _hellinger_props,
    _js_div_props,
    _ks_p_value,
    _ks_props,
    _linf_props,
    _psi_props,
    _wasserstein_props,
    ks_2samp,
    wasserstein,
)

__all__ = [
    "DEFAULT_ALPHA",
    "MATERIALITY",
    "DriftKind",
    "DriftMethod",
    "DriftResult",
    "choose_method",
    "compare_counts",
    "compare_samples",
    "noise_floor",
    "quantile_edges",
]

#: Default per-comparison false-alarm level of the noise floor.
DEFAULT_ALPHA = 1e-3
#: Default number of null redraws behind the noise floor.
DEFAULT_N_SIM = 256


class DriftKind(enum.Enum):
    """What kind of column is compared."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class DriftMethod(enum.Enum):
    """An effect size for comparing two distributions."""

    JENSEN_SHANNON = "jensen_shannon"
    """Jensen-Shannon distance (natural log, in [0, 0.833]) over bins or categories."""
    HELLINGER = "hellinger"
    """Hellinger distance, in [0, 1]."""
    PSI = "psi"
    """Population stability index (nats)."""
    LINF = "linf"
    """Largest change of one bin's or category's share (TFDV's categorical check)."""
    CHI_SQUARE = "chi_square"
    """Cohen's w, the chi-square effect size ``sqrt(chi2 / n_cur)``."""
    KOLMOGOROV_SMIRNOV = "kolmogorov_smirnov"
    """Largest CDF difference (numeric only)."""
    WASSERSTEIN = "wasserstein"
    """Earth mover's distance in reference standard deviations (numeric only)."""


_ORDERED_ONLY = frozenset({DriftMethod.KOLMOGOROV_SMIRNOV, DriftMethod.WASSERSTEIN})

#: Materiality per method: the effect size of a 0.1-sd location shift of a normal through 20 equal-mass
#: bins (measured, then rounded); for LINF, 5 percentage points, the share that gives the same
#: Jensen-Shannon distance when moved between two equal categories.
MATERIALITY: dict[DriftMethod, float] = {
    DriftMethod.JENSEN_SHANNON: 0.035,
    DriftMethod.HELLINGER: 0.035,
    DriftMethod.PSI: 0.01,
    DriftMethod.LINF: 0.05,
    DriftMethod.CHI_SQUARE: 0.1,
    DriftMethod.KOLMOGOROV_SMIRNOV: 0.04,
    DriftMethod.WASSERSTEIN: 0.1,
}


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift comparison.

    Attributes
    ----------
    method
        The effect size used.
    kind
        Numeric or categorical.
    statistic
        The effect size between reference and current.
    threshold
        ``max(materiality, noise_floor)``; drifted when ``statistic > threshold``.
    materiality
        The smallest effect size that counts as material for this method.
    noise_floor
        The effect size sampling noise alone exceeds with probability ``alpha``.
    drifted
        Whether the statistic exceeds the threshold.
    n_ref, n_cur
        Observations compared (nulls excluded).
    n_bins
        Bins or categories (with an "other" bucket) compared.
    reason
        Why this method was used (from :func:`choose_method` or the caller's explicit choice).
    alpha
        The false-alarm level of the noise floor.
    p_value
        A classical p-value where the method has one (KS, chi-square), for reference only; it plays
        no part in the decision.

    Examples
    --------
    >>> r = compare_counts([500, 500], [400, 600], kind=DriftKind.CATEGORICAL)
    >>> r.method.value, r.drifted, r.statistic > r.threshold
    ('jensen_shannon', True, True)
    """

    method: DriftMethod
    kind: DriftKind
    statistic: float
    threshold: float
    materiality: float
    noise_floor: float
    drifted: bool
    n_ref: int
    n_cur: int
    n_bins: int
    reason: str
    alpha: float = DEFAULT_ALPHA
    p_value: float | None = None

    @property
    def limited_by_noise(self) -> bool:
        """True when the sample is too small for materiality alone to decide (the noise floor is higher)."""
        return self.noise_floor > self.materiality

    @property
    def ratio(self) -> float:
        """``statistic / threshold``: above 1 is drift; comparable across methods and sample sizes."""
        return self.statistic / self.threshold if self.threshold > 0 else math.inf


def choose_method(kind: DriftKind, n_categories: int, n_ref: int, n_cur: int) -> tuple[DriftMethod, str]:
    """Choose the drift effect size for a column and say why.

    The choice depends on the kind of column only: Jensen-Shannon distance for both kinds. Sample
    sizes and category counts deliberately do not switch methods (no hidden cut-offs); they enter
    the decision through the noise floor (see module notes), and they are quoted in the reason.

    Parameters
    ----------
    kind
        Numeric (compared over the reference's quantile bins) or categorical.
    n_categories
        Bins or categories compared, including outer bins or the "other" bucket.
    n_ref, n_cur
        Non-null observations in the reference and in the current window.

    Returns
    -------
    tuple of (DriftMethod, str)
        The method and the reason to record in the finding.

    Raises
    ------
    InputError
        When a side is empty or there are no bins.

    Examples
    --------
    >>> choose_method(DriftKind.CATEGORICAL, 3, 1000, 1000)[0]
    <DriftMethod.JENSEN_SHANNON: 'jensen_shannon'>
    """
    if n_ref <= 0 or n_cur <= 0:
        raise InputError(f"cannot compare distributions with n_ref={n_ref}, n_cur={n_cur}; both need observations")
    if n_categories <= 0:
        raise InputError(f"n_categories must be positive, got {n_categories}")
    sizes = f"n_ref={n_ref}, n_cur={n_cur}, {n_categories} {'bins' if kind is DriftKind.NUMERIC else 'categories'}"
    if kind is DriftKind.NUMERIC:
        why = (
            "numeric column: Jensen-Shannon distance over the reference's equal-mass quantile bins; scale-free, "
            "bounded, sensitive to location, spread and spikes (e.g. a -1 error code) alike, and computable from "
            "mergeable profiles"
        )
    else:
        why = (
            "categorical column: Jensen-Shannon distance over category shares, unseen values in an 'other' bucket; "
            "one effect size whatever the number of categories, bounded even for categories one side never saw"
        )
    return DriftMethod.JENSEN_SHANNON, (
        f"{why}; threshold = max(materiality, sampling-noise floor) so it means the same at any size ({sizes})"
    )


# --------------------------------------------------------------------------- effect sizes on proportion rows

StatFn = Callable[[FloatArray, FloatArray], FloatArray]


def _stat_fn(method: DriftMethod, bounds: FloatArray | None, eps: float) -> tuple[StatFn, bool]:
    """The vectorised effect size on proportions, and whether it is a distance (to be squared for the fit)."""
    if method is DriftMethod.JENSEN_SHANNON:
        return (lambda p, q: np.sqrt(_js_div_props(p, q))), True
    if method is DriftMethod.HELLINGER:
        return _hellinger_props, True
    if method is DriftMethod.PSI:
        return (lambda p, q: _psi_props(p, q, eps)), False
    if method is DriftMethod.LINF:
        return _linf_props, True
    if method is DriftMethod.CHI_SQUARE:
        return (lambda p, q: _cohen_w_props(p, q, eps)), True
    if method is DriftMethod.KOLMOGOROV_SMIRNOV:
        return _ks_props, True
    if bounds is None:
        raise InputError("the Wasserstein method on counts needs the bin edges and the lo/hi value range")
    b = bounds
    return (lambda p, q: _wasserstein_props(p, q, b)), True


def _fit_quantile(values: FloatArray, alpha: float) -> float:
    """Upper ``1 - alpha`` quantile of a scaled chi-square moment-matched to ``values``."""
    mean = float(np.mean(values))
    var = float(np.var(values, ddof=1)) if values.size > 1 else 0.0
    if mean <= 0 or var <= 0:
        return max(mean, float(np.max(values)))
    scale = var / (2 * mean)
    dof = 2 * mean * mean / var
    from scipy.stats import distributions  # lazily: importing scipy.stats takes ~1.5 s
    return float(scale * distributions.chi2.isf(alpha, dof))


def _null_quantile(
    stat: StatFn,
    is_distance: bool,
    ref: FloatArray,
    cur: FloatArray,
    alpha: float,
    n_sim: int,
    seed: int,
) -> float:
    """Permutation null: redeal the pooled observations between the two sides ``n_sim`` times."""
    rng = np.random.default_rng(seed)
    pooled = np.rint(ref + cur).astype(np.int64)
    n_ref = round(float(ref.sum()))
    live = pooled > 0
    sims_ref = np.zeros((n_sim, pooled.size))
    sims_ref[:, live] = rng.multivariate_hypergeometric(pooled[live], n_ref, size=n_sim, method="marginals")
    sims_cur = pooled - sims_ref
    values = stat(sims_ref / n_ref, sims_cur / sims_cur.sum(axis=-1, keepdims=True))
    if is_distance:
        return math.sqrt(_fit_quantile(values**2, alpha))
    return _fit_quantile(values, alpha)


def _integral(counts: FloatArray, name: str) -> FloatArray:
    if not np.allclose(counts, np.rint(counts)):
        raise InputError(f"{name} must be whole counts of observations (the noise floor redeals them), got {counts!r}")
    return np.rint(counts)


def _validate_common(alpha: float, n_sim: int) -> None:
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if n_sim < 16:
        raise InputError(f"n_sim must be at least 16 for a stable noise floor, got {n_sim}")


def noise_floor(
    method: DriftMethod,
    ref_counts: npt.ArrayLike,
    cur_counts: npt.ArrayLike,
    *,
    alpha: float = DEFAULT_ALPHA,
    n_sim: int = DEFAULT_N_SIM,
    seed: int = 0,
    bounds: npt.ArrayLike | None = None,
    eps: float = PSI_EPS,
) -> float:
    """The effect size that sampling noise alone exceeds with probability about ``alpha``.

    Both histograms are redrawn from the pooled proportions with their observed totals (see the
    module notes). ``bounds`` (``[lo, *edges, hi]``) is needed for the Wasserstein method only.
    The result is deterministic for a given ``seed``.
    """
    _validate_common(alpha, n_sim)
    p, q = as_pair(ref_counts, cur_counts)
    n_ref, n_cur = round(float(p.sum())), round(float(q.sum()))
    if n_ref <= 0 or n_cur <= 0:
        raise InputError(f"cannot compute a noise floor with n_ref={n_ref}, n_cur={n_cur}")
    b = None if bounds is None else np.asarray(bounds, dtype=np.float64)
    fn, is_distance = _stat_fn(method, b, eps)
    return _null_quantile(fn, is_distance, _integral(p, "ref_counts"), _integral(q, "cur_counts"), alpha, n_sim, seed)


def compare_counts(
    ref_counts: npt.ArrayLike,
    cur_counts: npt.ArrayLike,
    *,
    kind: DriftKind,
    method: DriftMethod | None = None,
    edges: npt.ArrayLike | None = None,
    lo: float | None = None,
    hi: float | None = None,
    scale: float | None = None,
    materiality: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_sim: int = DEFAULT_N_SIM,
    seed: int = 0,
) -> DriftResult:
    """Decide drift between two histograms over the same bins (or categories).

    Parameters
    ----------
    ref_counts, cur_counts
        Counts over the same bins; for numerics, ordered (underflow, inner bins, overflow).
    kind
        Numeric or categorical.
    method
        The effect size; ``None`` lets :func:`choose_method` pick and explain.
    edges, lo, hi, scale
        Only for ``WASSERSTEIN``: the ``k`` bin edges (counts then have ``k + 1`` bins), the value
        range closing the outer bins, and the reference standard deviation to normalise by.
    materiality
        Override of :data:`MATERIALITY` for the method.
    alpha, n_sim, seed
        Noise-floor level, number of null redraws, and their seed.

    Returns
    -------
    DriftResult

    Examples
    --------
    >>> compare_counts([100] * 10, [100] * 10, kind=DriftKind.NUMERIC).drifted
    False
    """
    _validate_common(alpha, n_sim)
    p, q = as_pair(ref_counts, cur_counts)
    if p.ndim != 1:
        raise InputError("compare_counts takes 1-D counts")
    n_ref, n_cur = round(float(p.sum())), round(float(q.sum()))
    n_bins = int(np.count_nonzero((p + q) > 0))
    if method is None:
        method, reason = choose_method(kind, max(n_bins, 1), n_ref, n_cur)
    else:
        if n_ref <= 0 or n_cur <= 0:
            raise InputError(f"cannot compare distributions with n_ref={n_ref}, n_cur={n_cur}")
        reason = f"{method.value} requested by the caller"
    if kind is DriftKind.CATEGORICAL and method in _ORDERED_ONLY:
        raise InputError(f"{method.value} needs ordered values; it does not apply to a categorical column")
    bounds = None
    if method is DriftMethod.WASSERSTEIN:
        if edges is None or lo is None or hi is None:
            raise InputError("the Wasserstein method on counts needs edges, lo and hi")
        e = np.asarray(edges, dtype=np.float64)
        if e.size + 1 != p.size:
            raise InputError(f"{e.size} edges need {e.size + 1} counts, got {p.size}")
        bounds = _bin_bounds(e, lo, hi)
    fn, is_distance = _stat_fn(method, bounds, PSI_EPS)
    statistic = float(fn(normalise(p, "ref_counts"), normalise(q, "cur_counts")))
    floor = _null_quantile(fn, is_distance, _integral(p, "ref_counts"), _integral(q, "cur_counts"), alpha, n_sim, seed)
    if method is DriftMethod.WASSERSTEIN and scale is not None:
        statistic, floor = (_div(statistic, scale), _div(floor, scale))
    mat = MATERIALITY[method] if materiality is None else materiality
    threshold = max(mat, floor)
    p_value = None
    if method is DriftMethod.KOLMOGOROV_SMIRNOV:
        p_value = _ks_p_value(statistic, n_ref, n_cur)
    elif method is DriftMethod.CHI_SQUARE:
        dof = max(n_bins - 1, 1)
        from scipy.stats import distributions  # lazily: importing scipy.stats takes ~1.5 s
        p_value = float(distributions.chi2.sf(statistic**2 * n_cur, dof))
    return DriftResult(
        method=method,
        kind=kind,
        statistic=statistic,
        threshold=threshold,
        materiality=mat,
        noise_floor=floor,
        drifted=statistic > threshold,
        n_ref=n_ref,
        n_cur=n_cur,
        n_bins=n_bins,
        reason=reason,
        alpha=alpha,
        p_value=p_value,
    )


def _div(x: float, scale: float) -> float:
    if scale > 0:
        return x / scale
    return 0.0 if x == 0 else math.inf


def quantile_edges(values: npt.ArrayLike, n_bins: int = 20) -> FloatArray:
    """Bin edges at the ``0, 1/n_bins, ..., 1`` quantiles of finite ``values``, deduplicated.

    The first and last edges are the sample's min and max. A constant sample gets the two edges
    ``(c, nextafter(c, inf))`` so that every edge set has at least one inner bin.

    Examples
    --------
    >>> quantile_edges([1, 2, 3, 4, 5], n_bins=4).tolist()
    [1.0, 2.0, 3.0, 4.0, 5.0]
    """
    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise InputError("cannot compute bin edges: no finite values")
    edges = np.unique(np.quantile(arr, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], np.nextafter(edges[0], np.inf)])
    return edges


def _bin(values: FloatArray, edges: FloatArray) -> FloatArray:
    # A value equal to an edge up to VALUE_RTOL (float32, rounded JSON) is counted as equal to it.
    idx = np.searchsorted(edges - np.abs(edges) * VALUE_RTOL, values, side="right")
    idx[(idx == edges.size) & (values <= edges[-1] + abs(edges[-1]) * VALUE_RTOL)] = edges.size - 1
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


def compare_samples(
    ref: npt.ArrayLike,
    cur: npt.ArrayLike,
    *,
    kind: DriftKind = DriftKind.NUMERIC,
    method: DriftMethod | None = None,
    n_bins: int = 20,
    materiality: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_sim: int = DEFAULT_N_SIM,
    seed: int = 0,
) -> DriftResult:
    """Decide drift between two raw samples.

    Numeric samples are compared over ``n_bins`` reference-quantile bins (with outer bins), except
    for ``KOLMOGOROV_SMIRNOV`` and ``WASSERSTEIN``, which use the raw samples for the statistic: KS
    with the distribution-free Kolmogorov critical value as noise floor, Wasserstein (in reference
    standard deviations) with the floor simulated on 100 reference-quantile bins. Categorical samples
    (any values; compared as strings) are compared over the union of observed categories.
    """
    _validate_common(alpha, n_sim)
    if kind is DriftKind.CATEGORICAL:
        r = np.asarray(ref).astype(str)
        c = np.asarray(cur).astype(str)
        cats, inv = np.unique(np.concatenate([r, c]), return_inverse=True)
        rc = np.bincount(inv[: r.size], minlength=cats.size)
        cc = np.bincount(inv[r.size :], minlength=cats.size)
        return compare_counts(
            rc, cc, kind=kind, method=method, materiality=materiality, alpha=alpha, n_sim=n_sim, seed=seed
        )
    a = as_sample(ref, "ref")
    b = as_sample(cur, "cur")
    if method is DriftMethod.KOLMOGOROV_SMIRNOV:
        res = ks_2samp(a, b)
        from scipy.stats import distributions  # lazily: importing scipy.stats takes ~1.5 s
        floor = float(distributions.kstwo.isf(alpha, round(a.size * b.size / (a.size + b.size))))
        mat = MATERIALITY[method] if materiality is None else materiality
        threshold = max(mat, floor)
        return DriftResult(
            method, kind, res.statistic, threshold, mat, floor, res.statistic > threshold,
            a.size, b.size, 0, "kolmogorov_smirnov requested by the caller", alpha, res.p_value,
        )  # fmt: skip
    if method is DriftMethod.WASSERSTEIN:
        edges = quantile_edges(a, 100)
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        base = compare_counts(
            _bin(a, edges), _bin(b, edges), kind=kind, method=method, edges=edges, lo=lo, hi=hi,
            scale=float(np.std(a)), materiality=materiality, alpha=alpha, n_sim=n_sim, seed=seed,
        )  # fmt: skip
        stat = wasserstein(a, b)
        return DriftResult(
            method, kind, stat, base.threshold, base.materiality, base.noise_floor, stat > base.threshold,
            base.n_ref, base.n_cur, base.n_bins, base.reason, alpha, None,
        )  # fmt: skip
    edges = quantile_edges(a, n_bins)
    return compare_counts(
        _bin(a, edges), _bin(b, edges), kind=kind, method=method, materiality=materiality,
        alpha=alpha, n_sim=n_sim, seed=seed,
    )  # fmt: skip
