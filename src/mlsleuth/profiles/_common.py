"""Helpers shared by the profile types (private)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import InputError

__all__ = ["decode_float", "encode_float", "to_arrow", "to_float_array"]


def encode_float(x: float) -> float | str:
    """JSON has no infinities or NaN: write them as strings."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def decode_float(x: Any, field: str) -> float:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    if x in ("nan", "inf", "-inf"):
        return float(x)
    raise InputError(f"expected a number or 'inf'/'-inf'/'nan', got {x!r}", column=field)


def to_arrow(values: Any) -> pa.Array:
    """Any 1-D array-like (numpy, list, pyarrow) as one pyarrow array; None and NaN become null."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = np.asarray(values, dtype=object)
        return pa.array([None if v is None else str(v) for v in arr.tolist()], type=pa.string())


def to_float_array(values: npt.ArrayLike | pa.Array | pa.ChunkedArray, column: str | None = None) -> np.ndarray:
    """Numeric values as float64 with nulls as NaN."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        try:
            cast = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"expected numeric values, got {values.type}", column=column) from exc
        return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"expected numeric values: {exc}", column=column) from exc
