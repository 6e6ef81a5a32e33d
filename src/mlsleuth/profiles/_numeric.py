"""Numeric column profiles: a histogram on fixed edges plus null, zero and moment counts."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mlsleuth.errors import InputError
from mlsleuth.profiles._common import decode_float, encode_float, to_float_array
from mlsleuth.schema._tables import VALUE_RTOL
from mlsleuth.stats import quantile_edges

__all__ = ["NumericProfile", "edges_from_reference", "profile_numeric"]

_REL_TOL = 1e-9


def edges_from_reference(values: npt.ArrayLike | pa.Array | pa.ChunkedArray, n_bins: int = 20) -> tuple[float, ...]:
    """Quantile-based bin edges from reference values, deduplicated (nulls and infinities ignored).

    ``n_bins + 1`` edges at the ``0, 1/n_bins, ..., 1`` quantiles: each inner bin holds about
    ``1/n_bins`` of the reference; values outside the reference range fall in the underflow and
    overflow bins. Ties (e.g. a spike at 0) merge edges, so there may be fewer bins.

    Examples
    --------
    >>> edges_from_reference([0.0, 1.0, 2.0, 3.0, 4.0], n_bins=2)
    (0.0, 2.0, 4.0)
    """
    return tuple(float(e) for e in quantile_edges(to_float_array(values), n_bins))


def _check_edges(edges: Any) -> tuple[float, ...]:
    e = tuple(float(x) for x in edges)
    if len(e) < 2 or not all(math.isfinite(x) for x in e) or any(b <= a for a, b in itertools.pairwise(e)):
        raise InputError(f"edges must be at least 2 finite, strictly increasing values, got {e!r}")
    return e


def bin_counts(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Counts per bin (underflow, inner bins, overflow) of non-NaN values; the last edge closes the last inner bin."""
    e = np.asarray(edges, dtype=np.float64)
    # A value equal to an edge up to VALUE_RTOL (float32, rounded JSON) is counted as equal to it.
    idx = np.searchsorted(e - np.abs(e) * VALUE_RTOL, values, side="right")
    idx[(idx == e.size) & (values <= e[-1] + abs(e[-1]) * VALUE_RTOL)] = e.size - 1
    return np.bincount(idx, minlength=e.size + 1)


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """A mergeable summary of a numeric column.

    Attributes
    ----------
    edges
        Strictly increasing bin edges, ``k >= 2``.
    counts
        ``k + 1`` counts: values below ``edges[0]``, the inner bins ``[e_i, e_{i+1})`` (the last one
        closed), values above ``edges[-1]``. Infinite values count in the outer bins.
    nulls
        Null or NaN values.
    zeros
        Values equal to 0.
    infinite
        Values equal to plus or minus infinity.
    total, total_sq
        Sum and sum of squares of the finite values.
    min, max
        Smallest and largest value; ``inf`` and ``-inf`` when there is none (the merge identities).

    Notes
    -----
    Profiles form a monoid: :meth:`zero` is the identity and :meth:`merge` is associative and
    commutative. Counts, min and max merge exactly; the float sums merge up to rounding, so ``==``
    compares ``total`` and ``total_sq`` within a relative 1e-9 and everything else exactly.

    Examples
    --------
    >>> edges = (0.0, 1.0, 2.0)
    >>> a = profile_numeric([0.5, 1.5, None], edges)
    >>> b = profile_numeric([3.0, 0.0], edges)
    >>> a.merge(b) == profile_numeric([0.5, 1.5, None, 3.0, 0.0], edges)
    True
    >>> a.merge(b).counts
    (0, 2, 1, 1)
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    nulls: int = 0
    zeros: int = 0
    infinite: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def __post_init__(self) -> None:
        edges = _check_edges(self.edges)
        counts = tuple(int(c) for c in self.counts)
        if len(counts) != len(edges) + 1 or any(c < 0 for c in counts):
            raise InputError(
                f"{len(edges)} edges need {len(edges) + 1} non-negative counts (underflow, inner, overflow), "
                f"got {counts!r}"
            )
        for name in ("nulls", "zeros", "infinite"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)}")
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "counts", counts)
        for name in ("total", "total_sq", "min", "max"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # ----------------------------------------------------------------- monoid

    @classmethod
    def zero(cls, edges: Any) -> NumericProfile:
        """The empty profile on ``edges`` (the identity of :meth:`merge`)."""
        e = _check_edges(edges)
        return cls(e, (0,) * (len(e) + 1))

    @classmethod
    def from_counts(
        cls,
        edges: Any,
        counts: Any,
        *,
        nulls: int = 0,
        zeros: int = 0,
        infinite: int = 0,
        total: float,
        total_sq: float,
        min: float,
        max: float,
    ) -> NumericProfile:
        """Build a profile from counts computed elsewhere (e.g. a SQL ``CASE`` over the same edges).

        ``counts`` follow :attr:`counts`'s layout; pass ``min=inf, max=-inf`` for an empty window.
        """
        return cls(
            tuple(edges), tuple(int(c) for c in np.asarray(counts).tolist()), nulls, zeros, infinite,
            total, total_sq, min, max,
        )  # fmt: skip

    def merge(self, other: NumericProfile) -> NumericProfile:
        """The profile of both inputs' rows together; edges must match."""
        if not isinstance(other, NumericProfile):
            raise InputError(f"cannot merge a NumericProfile with {type(other).__name__}")
        if other.edges != self.edges:
            raise InputError(
                f"cannot merge numeric profiles on different edges: {len(self.edges)} edges "
                f"{self.edges[:3]}... vs {len(other.edges)} edges {other.edges[:3]}...; profile both on the "
                "reference's edges"
            )
        return NumericProfile(
            self.edges,
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.nulls + other.nulls,
            self.zeros + other.zeros,
            self.infinite + other.infinite,
            self.total + other.total,
            self.total_sq + other.total_sq,
            min(self.min, other.min),
            max(self.max, other.max),
        )

    # ----------------------------------------------------------------- equality

    def _exact(self) -> tuple[Any, ...]:
        return (self.edges, self.counts, self.nulls, self.zeros, self.infinite, self.min, self.max)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericProfile):
            return NotImplemented
        if self._exact() != other._exact():
            return False
        spread = math.sqrt(max(self.total_sq, other.total_sq) * max(self.finite, 1))
        return math.isclose(self.total, other.total, rel_tol=_REL_TOL, abs_tol=_REL_TOL * spread) and math.isclose(
            self.total_sq, other.total_sq, rel_tol=_REL_TOL, abs_tol=1e-300
        )

    def __hash__(self) -> int:
        return hash(self._exact())

    # ----------------------------------------------------------------- derived figures

    @property
    def count(self) -> int:
        """Non-null values."""
        return sum(self.counts)

    @property
    def finite(self) -> int:
        """Finite values (those behind ``total`` and ``total_sq``)."""
        return self.count - self.infinite

    @property
    def rows(self) -> int:
        """All rows, nulls included."""
        return self.count + self.nulls

    @property
    def null_rate(self) -> float:
        """Share of rows that are null (``nan`` for an empty profile)."""
        return self.nulls / self.rows if self.rows else math.nan

    @property
    def zero_rate(self) -> float:
        """Share of non-null values equal to 0 (``nan`` when there are none)."""
        return self.zeros / self.count if self.count else math.nan

    @property
    def mean(self) -> float:
        """Mean of the finite values."""
        return self.total / self.finite if self.finite else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation of the finite values."""
        if not self.finite:
            return math.nan
        m = self.mean
        return math.sqrt(max(self.total_sq / self.finite - m * m, 0.0))

    def quantile(self, q: float | npt.ArrayLike) -> float | np.ndarray:
        """Approximate quantiles from the histogram.

        Mass is spread uniformly within each bin (outer bins span ``min`` to ``edges[0]`` and
        ``edges[-1]`` to ``max``), so a quantile is exact up to the width of the bin holding it: the
        rank error is at most that bin's share of the values, about ``1/n_bins`` under the reference
        for quantile edges. ``nan`` for an empty profile.
        """
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if np.any((qs < 0) | (qs > 1)):
            raise InputError(f"quantiles must be in [0, 1], got {q!r}")
        if self.count == 0:
            out = np.full(qs.shape, math.nan)
        else:
            lo = self.min if self.counts[0] else self.edges[0]
            hi = self.max if self.counts[-1] else self.edges[-1]
            bounds = np.array([min(lo, self.edges[0]), *self.edges, max(hi, self.edges[-1])])
            cum = np.concatenate([[0.0], np.cumsum(self.counts)]) / self.count
            out = np.interp(qs, cum, bounds)
            out = np.clip(out, self.min, self.max)
        return float(out[0]) if np.ndim(q) == 0 else out

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (infinities written as strings)."""
        return {
            "kind": "numeric",
            "edges": list(self.edges),
            "counts": list(self.counts),
            "nulls": self.nulls,
            "zeros": self.zeros,
            "infinite": self.infinite,
            "total": encode_float(self.total),
            "total_sq": encode_float(self.total_sq),
            "min": encode_float(self.min),
            "max": encode_float(self.max),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericProfile:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                tuple(data["edges"]), tuple(data["counts"]), int(data["nulls"]), int(data["zeros"]),
                int(data.get("infinite", 0)), decode_float(data["total"], "total"),
                decode_float(data["total_sq"], "total_sq"), decode_float(data["min"], "min"),
                decode_float(data["max"], "max"),
            )  # fmt: skip
        except KeyError as exc:
            raise InputError(f"numeric profile lacks the field {exc.args[0]!r}") from exc


def profile_numeric(values: npt.ArrayLike | pa.Array | pa.ChunkedArray, edges: Any) -> NumericProfile:
    """Profile numeric values on fixed edges (None, NaN and Arrow nulls count as nulls).

    Examples
    --------
    >>> p = profile_numeric([1.0, 2.0, float("nan"), 0.0], (0.0, 1.0, 2.0))
    >>> p.counts, p.nulls, p.zeros, p.mean
    ((0, 1, 2, 0), 1, 1, 1.0)
    """
    e = _check_edges(edges)
    raw = to_float_array(values)
    x = raw[~np.isnan(raw)]
    nulls = int(raw.size - x.size)
    finite = x[np.isfinite(x)]
    return NumericProfile(
        e,
        tuple(bin_counts(x, e).tolist()),
        nulls,
        int(np.count_nonzero(x == 0)),
        int(x.size - finite.size),
        float(np.sum(finite)),
        float(np.sum(finite * finite)),
        float(np.min(x)) if x.size else math.inf,
        float(np.max(x)) if x.size else -math.inf,
    )
