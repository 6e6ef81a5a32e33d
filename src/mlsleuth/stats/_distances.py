"""Distances between two distributions, on histograms over the same bins or on raw samples.

Histogram functions take *counts* (or any non-negative weights) over the same bins and
normalise them; they accept extra leading axes and then return one value per row, which
the noise-floor simulation in :mod:`mlsleuth.stats._drift` relies on. Raw-sample functions
take 1-D arrays of finite values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlsleuth.errors import InputError
from mlsleuth.stats._arrays import FloatArray, as_pair, as_sample, normalise

__all__ = [
    "ChiSquareResult",
    "KSResult",
    "chi_square",
    "cohen_w",
    "hellinger",
    "js_distance",
    "ks_2samp",
    "ks_binned",
    "linf",
    "psi",
    "wasserstein",
    "wasserstein_binned",
]

#: Default floor for empty bins in :func:`psi` and :func:`cohen_w` (a proportion).
PSI_EPS = 1e-4


@dataclass(frozen=True)
class KSResult:
    """A two-sample Kolmogorov-Smirnov result.

    Attributes
    ----------
    statistic
        The largest absolute difference between the two empirical CDFs, in [0, 1].
    p_value
        Two-sided p-value from Smirnov's asymptotic distribution (``scipy.stats.kstwo`` with the
        effective size ``round(n*m/(n+m))``, as ``scipy.stats.ks_2samp(method="asymp")``).
    n_ref, n_cur
        Sample sizes.
    """

    statistic: float
    p_value: float
    n_ref: int
    n_cur: int


@dataclass(frozen=True)
class ChiSquareResult:
    """A chi-square goodness-of-fit result of current counts against reference proportions.

    Attributes
    ----------
    statistic
        Pearson's statistic ``sum((obs - exp)**2 / exp)``; ``inf`` when a bin the reference never
        saw holds current observations.
    p_value
        Upper tail of chi-square with ``dof`` degrees of freedom.
    dof
        Number of bins with reference mass, minus one.
    """

    statistic: float
    p_value: float
    dof: int


def _scalar(x: FloatArray) -> float | FloatArray:
    return float(x) if np.ndim(x) == 0 else x


# --------------------------------------------------------------------------- histograms


def _psi_props(p: FloatArray, q: FloatArray, eps: float) -> FloatArray:
    pc = np.maximum(p, eps)
    qc = np.maximum(q, eps)
    out: FloatArray = np.sum((qc - pc) * np.log(qc / pc), axis=-1)
    return out


def psi(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike, eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))`` between two histograms.

    Parameters
    ----------
    ref_counts, cur_counts
        Counts over the same bins (normalised here).
    eps
        Proportions below ``eps`` are raised to ``eps`` so that empty bins give a finite value.

    Returns
    -------
    float
        PSI in nats; it equals ``KL(p||q) + KL(q||p)`` when no bin is empty.

    Examples
    --------
    >>> round(psi([50, 50], [40, 60]), 4)
    0.0405
    """
    p, q = as_pair(ref_counts, cur_counts)
    return _scalar(_psi_props(normalise(p, "ref_counts"), normalise(q, "cur_counts"), eps))  # type: ignore[return-value]


def _js_div_props(p: FloatArray, q: FloatArray) -> FloatArray:
    m = 0.5 * (p + q)
    from scipy import special  # lazily: importing scipy.stats takes ~1.5 s
    out: FloatArray = 0.5 * (np.sum(special.rel_entr(p, m), axis=-1) + np.sum(special.rel_entr(q, m), axis=-1))
    return np.maximum(out, 0.0)


def js_distance(p: npt.ArrayLike, q: npt.ArrayLike, base: float | None = None) -> float:
    """Jensen-Shannon distance, the square root of the Jensen-Shannon divergence.

    Matches ``scipy.spatial.distance.jensenshannon``: natural logarithm by default (the distance
    lies in ``[0, sqrt(ln 2)] ~ [0, 0.833]``); ``base=2`` gives a distance in ``[0, 1]``.

    Parameters
    ----------
    p, q
        Counts or proportions over the same bins.
    base
        Logarithm base; ``None`` for natural.

    Examples
    --------
    >>> js_distance([1, 0], [0, 1], base=2)
    1.0
    """
    a, b = as_pair(p, q)
    div = _js_div_props(normalise(a, "p"), normalise(b, "q"))
    if base is not None:
        div = div / math.log(base)
    return _scalar(np.sqrt(div))  # type: ignore[return-value]


def _hellinger_props(p: FloatArray, q: FloatArray) -> FloatArray:
    out: FloatArray = np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=-1))
    return out


def hellinger(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Hellinger distance ``sqrt(0.5 * sum((sqrt(p) - sqrt(q))**2))``, in ``[0, 1]``.

    Examples
    --------
    >>> hellinger([1, 0], [0, 1])
    1.0
    """
    a, b = as_pair(p, q)
    return _scalar(_hellinger_props(normalise(a, "p"), normalise(b, "q")))  # type: ignore[return-value]


def _linf_props(p: FloatArray, q: FloatArray) -> FloatArray:
    out: FloatArray = np.max(np.abs(p - q), axis=-1)
    return out


def linf(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """L-infinity distance: the largest change in any bin's (category's) share, in ``[0, 1]``.

    Examples
    --------
    >>> round(linf([30, 70], [45, 55]), 3)
    0.15
    """
    a, b = as_pair(p, q)
    return _scalar(_linf_props(normalise(a, "p"), normalise(b, "q")))  # type: ignore[return-value]


def _cohen_w_props(p: FloatArray, q: FloatArray, eps: float) -> FloatArray:
    pc = np.maximum(p, eps)
    out: FloatArray = np.sqrt(np.sum((q - p) ** 2 / pc, axis=-1))
    return out


def cohen_w(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike, eps: float = PSI_EPS) -> float:
    """Cohen's w, the chi-square effect size ``sqrt(sum((q - p)**2 / p))`` (equal to ``sqrt(chi2 / n_cur)``).

    Reference proportions below ``eps`` are raised to ``eps``. Cohen calls 0.1 small, 0.3 medium.
    """
    p, q = as_pair(ref_counts, cur_counts)
    return _scalar(_cohen_w_props(normalise(p, "ref_counts"), normalise(q, "cur_counts"), eps))  # type: ignore[return-value]


def chi_square(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> ChiSquareResult:
    """Pearson chi-square test of the current counts against the reference proportions.

    The reference is treated as the expected distribution (as ``scipy.stats.chisquare(cur, f_exp)``
    with ``f_exp`` the reference scaled to the current total); bins empty in both are dropped.

    Examples
    --------
    >>> r = chi_square([50, 50], [40, 60])
    >>> r.statistic, r.dof
    (4.0, 1)
    """
    p, q = as_pair(ref_counts, cur_counts)
    if p.ndim != 1:
        raise InputError("chi_square takes 1-D counts")
    n_cur = q.sum()
    if n_cur <= 0:
        raise InputError("cur_counts sums to zero; the test needs at least one observation")
    expected = normalise(p, "ref_counts") * n_cur
    keep = (expected > 0) | (q > 0)
    expected, observed = expected[keep], q[keep]
    dof = int(np.count_nonzero(expected > 0)) - 1
    if np.any((expected == 0) & (observed > 0)):
        return ChiSquareResult(math.inf, 0.0, max(dof, 0))
    stat = float(np.sum((observed - expected) ** 2 / expected))
    from scipy.stats import distributions  # lazily: importing scipy.stats takes ~1.5 s
    p_value = float(distributions.chi2.sf(stat, dof)) if dof > 0 else 1.0
    return ChiSquareResult(stat, p_value, dof)


def _ks_props(p: FloatArray, q: FloatArray) -> FloatArray:
    out: FloatArray = np.max(np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)), axis=-1)
    return out


def _ks_p_value(d: float, n: int, m: int) -> float:
    en = n * m / (n + m)
    from scipy.stats import distributions  # lazily: importing scipy.stats takes ~1.5 s
    return float(np.clip(distributions.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks_binned(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> KSResult:
    """Kolmogorov-Smirnov statistic from counts over the same ordered bins.

    The CDFs are compared at the bin edges only, so the statistic is a lower bound of the raw-sample
    statistic (equal when every value sits on an edge, e.g. integers binned one per bin); the
    p-value uses the continuous asymptotic distribution and is therefore conservative.
    """
    p, q = as_pair(ref_counts, cur_counts)
    if p.ndim != 1:
        raise InputError("ks_binned takes 1-D counts")
    d = float(_ks_props(normalise(p, "ref_counts"), normalise(q, "cur_counts")))
    n, m = round(float(p.sum())), round(float(q.sum()))
    return KSResult(d, _ks_p_value(d, max(n, 1), max(m, 1)), n, m)


# --------------------------------------------------------------------------- raw samples


def ks_2samp(ref: npt.ArrayLike, cur: npt.ArrayLike) -> KSResult:
    """Two-sample Kolmogorov-Smirnov test on raw samples.

    The statistic equals ``scipy.stats.ks_2samp``'s; the p-value is Smirnov's asymptotic one (scipy's
    ``method="asymp"``), which is accurate for the window sizes mlsleuth compares.

    Examples
    --------
    >>> ks_2samp([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).statistic
    0.0
    """
    a = np.sort(as_sample(ref, "ref"))
    b = np.sort(as_sample(cur, "cur"))
    both = np.concatenate([a, b])
    diff = np.searchsorted(a, both, side="right") / a.size - np.searchsorted(b, both, side="right") / b.size
    d = float(np.max(np.abs(diff)))
    return KSResult(d, _ks_p_value(d, a.size, b.size), int(a.size), int(b.size))


def _normalised(distance: float, scale: float | None) -> float:
    if scale is None:
        return distance
    if scale > 0:
        return distance / scale
    return 0.0 if distance == 0 else math.inf


def wasserstein(ref: npt.ArrayLike, cur: npt.ArrayLike, *, normalise: bool = True) -> float:
    """First Wasserstein (earth mover's) distance between two raw samples.

    Parameters
    ----------
    ref, cur
        Raw samples.
    normalise
        Divide by the reference standard deviation (``ddof=0``), so that the value reads "the mass moved
        this many reference standard deviations on average" and is unit-free; a location shift of
        ``d`` standard deviations gives ``d``. A constant reference gives ``0`` or ``inf``. With
        ``normalise=False`` the value equals ``scipy.stats.wasserstein_distance``.

    Examples
    --------
    >>> wasserstein([0.0, 1.0], [1.0, 2.0], normalise=False)
    1.0
    """
    a = np.sort(as_sample(ref, "ref"))
    b = np.sort(as_sample(cur, "cur"))
    both = np.sort(np.concatenate([a, b]))
    widths = np.diff(both)
    fa = np.searchsorted(a, both[:-1], side="right") / a.size
    fb = np.searchsorted(b, both[:-1], side="right") / b.size
    dist = float(np.sum(np.abs(fa - fb) * widths))
    return _normalised(dist, float(np.std(a)) if normalise else None)


def _bin_bounds(edges: FloatArray, lo: float, hi: float) -> FloatArray:
    return np.concatenate([[min(lo, edges[0])], edges, [max(hi, edges[-1])]])


def _wasserstein_props(p: FloatArray, q: FloatArray, bounds: FloatArray) -> FloatArray:
    """Exact W1 between two histogram densities (uniform within each bin), vectorised over rows."""
    widths = np.diff(bounds)
    zeros = np.zeros((*p.shape[:-1], 1))
    d = np.cumsum(p - q, axis=-1)
    da = np.concatenate([zeros, d[..., :-1]], axis=-1)  # CDF difference at each bin's left bound
    db = d  # ... and at its right bound
    same_sign = da * db >= 0
    denom = np.abs(da) + np.abs(db)
    crossing = np.divide(da**2 + db**2, 2 * denom, out=np.zeros_like(denom), where=denom > 0)
    per_bin = np.where(same_sign, 0.5 * denom, crossing) * widths
    out: FloatArray = np.sum(per_bin, axis=-1)
    return out


def wasserstein_binned(
    edges: npt.ArrayLike,
    ref_counts: npt.ArrayLike,
    cur_counts: npt.ArrayLike,
    *,
    lo: float,
    hi: float,
    scale: float | None = None,
) -> float:
    """First Wasserstein distance between two histograms on the same edges, with outer bins.

    Parameters
    ----------
    edges
        Strictly increasing bin edges, ``k >= 2`` of them.
    ref_counts, cur_counts
        ``k + 1`` counts: below ``edges[0]``, the ``k - 1`` inner bins, above ``edges[-1]``.
    lo, hi
        The smallest and largest value of either sample; they close the outer bins.
    scale
        Divide by this (the reference standard deviation in :mod:`mlsleuth.profiles`); ``None`` keeps
        the raw distance.

    Notes
    -----
    Mass is taken as uniform within each bin, so the result is exact for histogram densities and
    differs from the raw-sample distance by at most the widest bin's width times the mass that moved
    within it.
    """
    e = np.asarray(edges, dtype=np.float64)
    p, q = as_pair(ref_counts, cur_counts)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise InputError(f"edges must be strictly increasing with at least 2 values, got {e!r}")
    if p.shape[-1] != e.size + 1:
        raise InputError(f"{e.size} edges need {e.size + 1} counts (with underflow and overflow), got {p.shape[-1]}")
    dist = _wasserstein_props(normalise(p, "ref_counts"), normalise(q, "cur_counts"), _bin_bounds(e, lo, hi))
    if dist.ndim:
        raise InputError("wasserstein_binned takes 1-D counts")
    return _normalised(float(dist), scale)
