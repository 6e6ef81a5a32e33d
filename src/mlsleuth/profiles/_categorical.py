"""Categorical column profiles: counts per value, an 'other' bucket and a null count."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import InputError
from mlsleuth.profiles._common import to_arrow

__all__ = ["CategoricalProfile", "profile_categorical"]


@dataclass(frozen=True)
class CategoricalProfile:
    """A mergeable summary of a categorical column.

    Values are kept as strings (Arrow's string cast of the input). A profile is either *open*
    (``closed=False``: every observed value is listed; merging takes the union) or *closed* over a
    fixed vocabulary (``values``), for instance the reference's top-K values: then a value outside
    the vocabulary counts in ``other``. In a production window profiled against the reference's
    vocabulary, ``other`` is the "unseen" bucket.

    Attributes
    ----------
    values
        Sorted distinct values (the vocabulary when closed).
    counts
        Count per value, aligned with ``values``.
    other
        Non-null values outside a closed vocabulary (always 0 when open).
    nulls
        Null values.
    closed
        Whether ``values`` is a fixed vocabulary.

    Examples
    --------
    >>> a = profile_categorical(["EU", "US", None])
    >>> b = profile_categorical(["EU", "APAC"])
    >>> a.merge(b) == profile_categorical(["EU", "US", None, "EU", "APAC"])
    True
    >>> ref = a.merge(b).capped(2)
    >>> ref.values, ref.counts, ref.other
    (('APAC', 'EU'), (1, 2), 1)
    """

    values: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    other: int = 0
    nulls: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        values = tuple(str(v) for v in self.values)
        counts = tuple(int(c) for c in self.counts)
        if len(values) != len(counts):
            raise InputError(f"categorical profile has {len(values)} values but {len(counts)} counts")
        if len(set(values)) != len(values):
            raise InputError("categorical profile values must be distinct")
        if any(c < 0 for c in counts) or self.other < 0 or self.nulls < 0:
            raise InputError("categorical profile counts must be non-negative")
        if not self.closed and self.other:
            raise InputError("an open categorical profile has no 'other' bucket; use closed=True")
        order = sorted(range(len(values)), key=values.__getitem__)
        keep = [i for i in order if self.closed or counts[i] > 0]
        object.__setattr__(self, "values", tuple(values[i] for i in keep))
        object.__setattr__(self, "counts", tuple(counts[i] for i in keep))
        object.__setattr__(self, "other", int(self.other))
        object.__setattr__(self, "nulls", int(self.nulls))
        object.__setattr__(self, "closed", bool(self.closed))

    # ----------------------------------------------------------------- monoid

    @classmethod
    def zero(cls, vocabulary: Iterable[Any] | None = None) -> CategoricalProfile:
        """The empty profile: open, or closed over ``vocabulary``."""
        if vocabulary is None:
            return cls()
        vocab = tuple(str(v) for v in vocabulary)
        return cls(vocab, (0,) * len(vocab), 0, 0, True)

    def restricted(self, vocabulary: Iterable[Any]) -> CategoricalProfile:
        """This profile closed over ``vocabulary``: other values move to ``other``."""
        vocab = tuple(dict.fromkeys(str(v) for v in vocabulary))
        mine = dict(zip(self.values, self.counts, strict=True))
        kept = tuple(mine.get(v, 0) for v in vocab)
        moved = sum(mine.values()) - sum(kept)
        return CategoricalProfile(vocab, kept, self.other + moved, self.nulls, True)

    def capped(self, top_k: int) -> CategoricalProfile:
        """Closed over the ``top_k`` most frequent values (ties broken by value); the rest in ``other``."""
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}")
        ranked = sorted(zip(self.values, self.counts, strict=True), key=lambda vc: (-vc[1], vc[0]))
        return self.restricted(v for v, _ in ranked[:top_k])

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        """The profile of both inputs' rows together.

        Open with open: union of values. Closed with closed: the vocabularies must match. Open with
        closed: the open one is first restricted to the closed vocabulary.
        """
        if not isinstance(other, CategoricalProfile):
            raise InputError(f"cannot merge a CategoricalProfile with {type(other).__name__}")
        if self.closed and other.closed and self.values != other.values:
            raise InputError(
                f"cannot merge categorical profiles closed over different vocabularies ({len(self.values)} and "
                f"{len(other.values)} values); profile both against the reference's vocabulary"
            )
        if self.closed != other.closed:
            a = self if self.closed else self.restricted(other.values)
            b = other if other.closed else other.restricted(self.values)
            return a.merge(b)
        mine = dict(zip(self.values, self.counts, strict=True))
        for v, c in zip(other.values, other.counts, strict=True):
            mine[v] = mine.get(v, 0) + c
        return CategoricalProfile(
            tuple(mine), tuple(mine.values()), self.other + other.other, self.nulls + other.nulls, self.closed
        )

    # ----------------------------------------------------------------- derived figures

    @property
    def count(self) -> int:
        """Non-null values."""
        return sum(self.counts) + self.other

    @property
    def rows(self) -> int:
        """All rows, nulls included."""
        return self.count + self.nulls

    @property
    def null_rate(self) -> float:
        """Share of rows that are null (``nan`` when empty)."""
        return self.nulls / self.rows if self.rows else math.nan

    @property
    def other_rate(self) -> float:
        """Share of non-null values outside the vocabulary (the unseen rate against a reference)."""
        return self.other / self.count if self.count else math.nan

    def frequencies(self) -> dict[str, float]:
        """Share of non-null values per value; a closed profile adds the ``other`` share under ``"__other__"``."""
        n = self.count
        out = {v: c / n for v, c in zip(self.values, self.counts, strict=True)} if n else {}
        if self.closed and n:
            out["__other__"] = self.other / n
        return out

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": "categorical",
            "values": list(self.values),
            "counts": list(self.counts),
            "other": self.other,
            "nulls": self.nulls,
            "closed": self.closed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalProfile:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                tuple(data["values"]), tuple(data["counts"]), int(data["other"]), int(data["nulls"]),
                bool(data["closed"]),
            )  # fmt: skip
        except KeyError as exc:
            raise InputError(f"categorical profile lacks the field {exc.args[0]!r}") from exc


def profile_categorical(values: Any, *, vocabulary: Iterable[Any] | None = None) -> CategoricalProfile:
    """Profile categorical values (None, NaN and Arrow nulls count as nulls).

    Parameters
    ----------
    values
        A list, numpy array or Arrow array; values are compared as strings.
    vocabulary
        Close the profile over these values (e.g. ``reference_profile.values``): others count in
        ``other``, the unseen bucket.

    Examples
    --------
    >>> p = profile_categorical(["a", "b", "z"], vocabulary=["a", "b"])
    >>> p.counts, p.other
    ((1, 1), 1)
    """
    arr = to_arrow(values)
    nulls = arr.null_count
    if pa.types.is_floating(arr.type):
        nan = pc.is_nan(arr)
        nulls += int(pc.sum(pc.fill_null(nan, False)).as_py() or 0)
        arr = pc.filter(arr, pc.invert(pc.fill_null(nan, True)))
    try:
        as_str = pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"cannot read {arr.type} values as categories") from exc
    vc = pc.value_counts(pc.drop_null(as_str))
    names = vc.field("values").to_pylist()
    counts = vc.field("counts").to_numpy(zero_copy_only=False).astype(np.int64).tolist()
    open_profile = CategoricalProfile(tuple(names), tuple(counts), 0, int(nulls), False)
    return open_profile if vocabulary is None else open_profile.restricted(vocabulary)
