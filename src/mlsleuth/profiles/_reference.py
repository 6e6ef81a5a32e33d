"""Reference profiles: one profile per column of the training data, stored as versioned JSON."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.errors import InputError, ReadError, StoreError
from mlsleuth.profiles._categorical import CategoricalProfile, profile_categorical
from mlsleuth.profiles._common import to_arrow
from mlsleuth.profiles._numeric import NumericProfile, edges_from_reference, profile_numeric

__all__ = ["FORMAT_VERSION", "ColumnProfile", "ReferenceProfile", "profile_like", "profile_reference"]

#: Version of the JSON layout written by :meth:`ReferenceProfile.to_json`.
FORMAT_VERSION = 1

ColumnProfile = NumericProfile | CategoricalProfile


def _column_from_dict(name: str, data: Mapping[str, Any]) -> ColumnProfile:
    kind = data.get("kind")
    if kind == "numeric":
        return NumericProfile.from_dict(dict(data))
    if kind == "categorical":
        return CategoricalProfile.from_dict(dict(data))
    raise InputError(f"unknown profile kind {kind!r}; expected 'numeric' or 'categorical'", column=name)


@dataclass(frozen=True)
class ReferenceProfile:
    """Profiles of every column of a reference (training) data set.

    Attributes
    ----------
    columns
        Column name to its profile (read-only mapping).
    rows
        Rows profiled.
    version
        A label for the reference data (e.g. ``"train-2026-03"``); free text.
    created_at
        ISO-8601 UTC time of profiling.

    Notes
    -----
    A monoid like its columns: :meth:`zero` and :meth:`merge` (columns present on one side only are
    kept; ``version`` keeps the first non-empty label, ``created_at`` the latest), so shards of a
    reference can be profiled separately on shared edges and merged.

    Examples
    --------
    >>> ref = profile_reference({"feature.x": [1.0, 2.0, 3.0, 4.0], "region": ["EU", "EU", "US", None]}, n_bins=2)
    >>> ref["feature.x"].edges, ref["region"].values
    ((1.0, 2.5, 4.0), ('EU', 'US'))
    >>> ReferenceProfile.from_json(ref.to_json()) == ref
    True
    """

    columns: Mapping[str, ColumnProfile]
    rows: int
    version: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", types.MappingProxyType(dict(sorted(self.columns.items()))))

    def __getitem__(self, name: str) -> ColumnProfile:
        try:
            return self.columns[name]
        except KeyError:
            raise InputError(
                f"the reference profile has no column {name!r}; it has {sorted(self.columns)}", column=name
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceProfile):
            return NotImplemented
        return (dict(self.columns), self.rows, self.version, self.created_at) == (
            dict(other.columns), other.rows, other.version, other.created_at,
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def zero(cls) -> ReferenceProfile:
        """The empty reference profile."""
        return cls({}, 0, "", "")

    def merge(self, other: ReferenceProfile) -> ReferenceProfile:
        """Combine two reference profiles (e.g. shards profiled on the same edges and vocabularies)."""
        cols: dict[str, ColumnProfile] = dict(self.columns)
        for name, prof in other.columns.items():
            cols[name] = cols[name].merge(prof) if name in cols else prof  # type: ignore[arg-type]
        return ReferenceProfile(
            cols, self.rows + other.rows, self.version or other.version, max(self.created_at, other.created_at)
        )

    def to_json(self) -> str:
        """Versioned JSON text (``format_version`` key)."""
        body = {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "created_at": self.created_at,
            "rows": self.rows,
            "columns": {name: prof.to_dict() for name, prof in self.columns.items()},
        }
        return json.dumps(body, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, *, path: str | Path | None = None) -> ReferenceProfile:
        """Parse :meth:`to_json` output; older format versions are read, newer ones refused."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReadError(f"not valid JSON: {exc}", path=path) from exc
        if not isinstance(data, dict) or "format_version" not in data:
            raise ReadError("not a reference profile: expected an object with a 'format_version' key", path=path)
        fv = data["format_version"]
        if not isinstance(fv, int) or fv < 1 or fv > FORMAT_VERSION:
            raise ReadError(
                f"reference profile format_version {fv!r} is not supported (this mlsleuth reads 1..{FORMAT_VERSION}); "
                "upgrade mlsleuth or re-profile the reference",
                path=path,
            )
        try:
            cols = {name: _column_from_dict(name, prof) for name, prof in data["columns"].items()}
            return cls(cols, int(data["rows"]), str(data.get("version", "")), str(data.get("created_at", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ReadError(f"malformed reference profile: {exc!r}", path=path) from exc

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``; returns the path."""
        p = Path(path)
        try:
            p.write_text(self.to_json(), encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot write the reference profile to {p}: {exc.strerror}") from exc
        return p

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """Read a profile written by :meth:`save`."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReadError(f"cannot read the reference profile: {exc.strerror}", path=p) from exc
        return cls.from_json(text, path=p)


def _is_numeric(arr: pa.Array) -> bool:
    return bool(pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type))


def profile_reference(
    data: pa.Table | Mapping[str, Any],
    *,
    n_bins: int = 20,
    top_k: int = 1000,
    version: str = "",
    created_at: str | None = None,
) -> ReferenceProfile:
    """Profile every column of reference data.

    Numeric columns (integer, float, decimal; booleans are categorical) get quantile edges from
    :func:`edges_from_reference`; other columns a categorical profile closed over their ``top_k`` most
    frequent values, the rest in ``other``. An all-null numeric column is profiled as categorical.

    Parameters
    ----------
    data
        An Arrow table or a mapping of column name to values.
    n_bins, top_k
        Numeric bins and categorical vocabulary size.
    version, created_at
        Labels stored with the profile (``created_at`` defaults to now, UTC).
    """
    names = data.column_names if isinstance(data, pa.Table) else list(data)
    cols: dict[str, ColumnProfile] = {}
    rows = 0
    for name in names:
        arr = to_arrow(data[name])
        rows = max(rows, len(arr))
        if _is_numeric(arr) and arr.null_count < len(arr):
            values = np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False))
            if np.any(np.isfinite(values)):
                cols[name] = profile_numeric(values, edges_from_reference(values, n_bins))
                continue
        cols[name] = profile_categorical(arr).capped(top_k)
    kwargs = {} if created_at is None else {"created_at": created_at}
    return ReferenceProfile(cols, rows, version, **kwargs)


def profile_like(template: ColumnProfile, values: Any) -> ColumnProfile:
    """Profile new values (e.g. a production window) on a reference column's edges or vocabulary.

    Examples
    --------
    >>> ref = profile_reference({"x": [0.0, 1.0, 2.0, 3.0]}, n_bins=3)["x"]
    >>> profile_like(ref, [5.0, 1.5]).counts
    (0, 0, 1, 0, 1)
    """
    if isinstance(template, NumericProfile):
        return profile_numeric(values, template.edges)
    return profile_categorical(values, vocabulary=template.values if template.closed else None)
