"""Turning a batch of queued log records into one Arrow table (runs on the logger's background thread).

The serving thread only appends a tuple per request (:data:`Record`); everything costly happens here,
column-wise: one Python list per column, one ``pa.array`` call per column, redaction and keyed hashing
applied to whole columns.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.errors import ConfigError
from mlsleuth.schema import FEATURE_PREFIX, INPUT_PREFIX, PROVENANCE_PREFIX, TIMESTAMP, check_column_names

__all__ = ["Record", "Redaction", "records_to_table"]

#: One queued request, exactly as ``Logger.log`` appended it:
#: ``(request_id, ts_ns, model, model_version, inputs, features, prediction, score, latency_ms, error,
#: lineage, meta)``.
Record = tuple[Any, int, Any, Any, Any, Any, Any, Any, Any, Any, Any, dict[str, Any]]

_HASH_HEX_CHARS = 16


@dataclass(frozen=True)
class Redaction:
    """Which columns the logger blanks out or replaces with a keyed hash before they reach a sink.

    Parameters
    ----------
    redact
        Column names whose non-null values are replaced by ``replacement``. A bare name (no dot)
        means both the input and the metadata column of that name: ``"email"`` is ``"input.email"``
        and ``"email"``.
    hash_fields
        Column names whose non-null values are replaced by the first 16 hex characters of
        HMAC-SHA256(``hash_key``, UTF-8 of ``str(value)``), so equal values still join but the raw
        value is not stored. Bare names mean inputs, as for ``redact``.
    hash_key
        The secret HMAC key; required when ``hash_fields`` is not empty.
    replacement
        What a redacted value becomes: a marker string, or ``None`` for null.

    Examples
    --------
    >>> r = Redaction.build(redact=["email"], hash_fields=["input.card"], hash_key=b"k")
    >>> sorted(r.redact), sorted(r.hash_fields)
    (['email', 'input.email'], ['input.card'])
    """

    redact: frozenset[str] = frozenset()
    hash_fields: frozenset[str] = frozenset()
    hash_key: bytes | None = None
    replacement: str | None = "[redacted]"

    @staticmethod
    def column_names(name: str) -> tuple[str, ...]:
        """The columns a configured field refers to: a full name is itself; a bare name (no dot) is the input
        of that name and the metadata column of that name (PII can arrive as either)."""
        return (name,) if "." in name else (INPUT_PREFIX + name, name)

    @classmethod
    def build(
        cls,
        *,
        redact: Iterable[str] = (),
        hash_fields: Iterable[str] = (),
        hash_key: bytes | str | None = None,
        replacement: str | None = "[redacted]",
    ) -> Redaction:
        """Normalise field names and check the combination.

        Raises
        ------
        ConfigError
            When ``hash_fields`` is given without a ``hash_key``, when a field is both redacted and
            hashed, or when a field name is not a string.
        """
        for name in (*redact, *hash_fields):
            if not isinstance(name, str) or not name:
                raise ConfigError(f"redact/hash_fields entries must be non-empty column names, got {name!r}")
        red = frozenset(c for n in redact for c in cls.column_names(n))
        hsh = frozenset(c for n in hash_fields for c in cls.column_names(n))
        if "ts" in red | hsh:
            raise ConfigError("the ts column cannot be redacted or hashed: every log row needs its time")
        both = sorted(red & hsh)
        if both:
            raise ConfigError(f"fields {both} are both redacted and hashed; choose one for each")
        key = hash_key.encode() if isinstance(hash_key, str) else hash_key
        if hsh and not key:
            raise ConfigError(
                f"hash_fields {sorted(hsh)} need a secret hash_key (bytes); without one the hashes could be "
                "reversed by hashing guessed values"
            )
        return cls(red, hsh, key, replacement)

    @property
    def active(self) -> bool:
        """Whether any column is redacted or hashed."""
        return bool(self.redact or self.hash_fields)

    def hash_value(self, value: Any) -> str:
        """The keyed hash the logger stores for ``value`` (16 hex characters)."""
        assert self.hash_key is not None
        raw = value if isinstance(value, bytes) else str(value).encode()
        return hmac.digest(self.hash_key, raw, "sha256").hex()[:_HASH_HEX_CHARS]

    def apply(self, name: str, values: list[Any]) -> list[Any]:
        """Return the column's values redacted or hashed as configured (unchanged otherwise)."""
        if name in self.redact:
            rep = self.replacement
            return [None if v is None else rep for v in values]
        if name in self.hash_fields:
            h = self.hash_value
            return [None if v is None else h(v) for v in values]
        return values


_NO_REDACTION = Redaction()


def _strings(values: Sequence[Any]) -> pa.Array:
    """A string column; non-string values are stringified (ids given as ints, for instance)."""
    return pa.array(
        [v if v.__class__ is str or v is None else str(v) for v in values],
        type=pa.string(),
    )


def _to_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _floats(values: Sequence[Any]) -> pa.Array:
    """A float64 column; values that are not numbers become null rather than failing the batch."""
    try:
        return pa.array(values, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return pa.array([_to_float(v) for v in values], type=pa.float64())


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    try:
        return json.dumps(v, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(v)


def _infer(values: Sequence[Any]) -> pa.Array:
    """A column of whatever scalar type the values share; mixed or nested values become text.

    Nested values (dicts, lists) are stored as JSON text so that every logged column is a scalar the
    monitors can profile.
    """
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return pa.array([_text(v) for v in values], type=pa.string())
    t = arr.type
    if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pa.array([_text(v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for v in values],
                        type=pa.string())
    return arr


def _mapping_columns(maps: Sequence[Any], n: int) -> dict[str, list[Any]]:
    """Union the keys of per-row mappings into one value list per key (missing -> None).

    Fast path when every row has the same keys (the usual case for one endpoint): same number of keys
    as the first row and every key of the first row found in each, so the key sets are equal; one list
    ``map`` per key then builds the columns.
    """
    first = None
    for m in maps:
        if m:
            first = m
            break
    if first is None:
        return {}
    keys = tuple(first)
    nk = len(keys)
    try:
        if set(map(len, maps)) == {nk}:
            return {k if k.__class__ is str else str(k): list(map(itemgetter(k), maps)) for k in keys}
    except (KeyError, TypeError):  # a row with other keys, or None / not a mapping: the general path
        pass
    cols: dict[str, list[Any]] = {}
    for i, m in enumerate(maps):
        if not m:
            continue
        for k, v in m.items():
            name = k if k.__class__ is str else str(k)
            col = cols.get(name)
            if col is None:
                col = cols[name] = [None] * n
            col[i] = v
    return cols


def records_to_table(
    records: Sequence[Record],
    *,
    model: str | None = None,
    model_version: str | None = None,
    redaction: Redaction = _NO_REDACTION,
) -> pa.Table:
    """Build the log table (docs/contract.md, the inputs) for a batch of queued records.

    Parameters
    ----------
    records
        Tuples as queued by ``Logger.log``.
    model, model_version
        Defaults for records that did not name their model or version.
    redaction
        Columns to redact or hash.

    Returns
    -------
    pyarrow.Table
        Columns ``request_id``, ``ts`` (timestamp[us, UTC]), ``model``, ``model_version``, ``input.*``,
        ``feature.*``, ``score``, ``prediction``, ``latency_ms``, ``error``, ``lineage.*`` and one column per
        metadata key, in that order.

    Raises
    ------
    Exception
        Whatever a malformed record provokes (for instance ``inputs`` that is not a mapping); the logger
        isolates and counts such records.
    """
    n = len(records)
    (rid, ts, mdl, ver, inputs, features, prediction, score, latency, error, lineage, meta) = (
        list(c) for c in zip(*records, strict=True)
    ) if n else ([[] for _ in range(12)])
    if model is not None:
        mdl = [model if v is None else v for v in mdl]
    if model_version is not None:
        ver = [model_version if v is None else v for v in ver]
    ts_us = np.fromiter(ts, dtype=np.int64, count=n) // 1000

    names: list[str] = ["request_id", "ts", "model", "model_version"]
    arrays: list[Any] = [rid, pa.array(ts_us, type=TIMESTAMP), mdl, ver]
    kinds: list[str] = ["s", "-", "s", "s"]

    def add_mapping(maps: list[Any], prefix: str) -> None:
        for k, vals in _mapping_columns(maps, n).items():
            names.append(prefix + k)
            arrays.append(vals)
            kinds.append("i")

    add_mapping(inputs, INPUT_PREFIX)
    add_mapping(features, FEATURE_PREFIX)
    names += ["score", "prediction", "latency_ms", "error"]
    arrays += [score, prediction, latency, error]
    kinds += ["f", "i", "f", "s"]
    add_mapping(lineage, PROVENANCE_PREFIX)
    taken = set(names)
    for k, vals in _mapping_columns(meta, n).items():
        name = k if k not in taken else "meta." + k
        names.append(name)
        arrays.append(vals)
        kinds.append("i")

    out: list[pa.Array] = []
    for name, vals, kind in zip(names, arrays, kinds, strict=True):
        if kind == "-":
            out.append(vals)
            continue
        if redaction.active and (name in redaction.redact or name in redaction.hash_fields):
            vals = redaction.apply(name, vals)
            kind = "s" if redaction.replacement is not None or name in redaction.hash_fields else kind
        if kind == "s":
            out.append(_strings(vals))
        elif kind == "f":
            out.append(_floats(vals))
        else:
            out.append(_infer(vals))
    # A key of a caller's mapping (raw request JSON) becomes a column name: one outside the rule of
    # check_column_names fails this batch, and the logger drops (and counts) only the records holding it.
    check_column_names(names)
    return pa.Table.from_arrays(out, names=names)
