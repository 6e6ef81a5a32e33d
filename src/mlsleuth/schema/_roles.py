"""Column roles and the schema of a prediction log, inferred from column names."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import SchemaError

__all__ = [
    "Column",
    "LogSchema",
    "Role",
    "infer_schema",
    "role_of",
]

INPUT_PREFIX = "input."
FEATURE_PREFIX = "feature."
PROVENANCE_PREFIX = "lineage."


class Role(enum.Enum):
    """What a column means to mlsleuth (docs/contract.md, the inputs)."""

    REQUEST_ID = "request_id"
    TIME = "time"
    MODEL = "model"
    MODEL_VERSION = "model_version"
    INPUT = "input"
    FEATURE = "feature"
    SCORE = "score"
    PREDICTION = "prediction"
    LATENCY = "latency"
    ERROR = "error"
    LABEL = "label"
    LABEL_TIME = "label_time"
    PROVENANCE = "provenance"
    SEGMENT = "segment"
    METADATA = "metadata"


#: Column names the contract reserves, with their role.
RESERVED: Mapping[str, Role] = {
    "request_id": Role.REQUEST_ID,
    "ts": Role.TIME,
    "model": Role.MODEL,
    "model_version": Role.MODEL_VERSION,
    "score": Role.SCORE,
    "prediction": Role.PREDICTION,
    "latency_ms": Role.LATENCY,
    "error": Role.ERROR,
    "label": Role.LABEL,
    "label_ts": Role.LABEL_TIME,
}

#: A metadata column with at most this many distinct values is a segment attribute.
MAX_SEGMENT_CARDINALITY = 50


def role_of(name: str) -> Role:
    """Return the role a column name implies, before looking at its values.

    Parameters
    ----------
    name
        A column name as it appears in a log or reference file.

    Returns
    -------
    Role
        A reserved name's role, ``INPUT``/``FEATURE``/``PROVENANCE`` by prefix, else
        ``METADATA`` (which :func:`infer_schema` may promote to ``SEGMENT``).

    Examples
    --------
    >>> role_of("feature.amount").name, role_of("ts").name, role_of("region").name
    ('FEATURE', 'TIME', 'METADATA')
    """
    if name in RESERVED:
        return RESERVED[name]
    if name.startswith(INPUT_PREFIX):
        return Role.INPUT
    if name.startswith(FEATURE_PREFIX):
        return Role.FEATURE
    if name.startswith(PROVENANCE_PREFIX):
        return Role.PROVENANCE
    return Role.METADATA


@dataclass(frozen=True)
class Column:
    """One column of a log: its name, role and Arrow type (as text, e.g. ``double``)."""

    name: str
    role: Role
    dtype: str

    @property
    def is_numeric(self) -> bool:
        """Whether the column holds numbers (integers, floats, decimals or booleans)."""
        return self.dtype.startswith(("int", "uint", "float", "double", "decimal", "bool", "halffloat"))


@dataclass(frozen=True)
class LogSchema:
    """The columns of a prediction log (or reference set) and their roles.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"ts": ["2026-03-06T18:00:00Z"], "score": [0.4], "feature.x": [1.0], "region": ["EU"]})
    >>> s = infer_schema(t)
    >>> s.features, s.segments
    (('feature.x',), ('region',))
    """

    columns: tuple[Column, ...]
    _by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"no such column; the log has {sorted(self._by_name)}", column=name) from None

    @property
    def names(self) -> tuple[str, ...]:
        """All column names, in order."""
        return tuple(c.name for c in self.columns)

    def with_role(self, role: Role) -> tuple[str, ...]:
        """Names of the columns that play ``role``, in order."""
        return tuple(c.name for c in self.columns if c.role is role)

    def has(self, role: Role) -> bool:
        """Whether at least one column plays ``role``."""
        return any(c.role is role for c in self.columns)

    @property
    def features(self) -> tuple[str, ...]:
        """The ``feature.*`` columns."""
        return self.with_role(Role.FEATURE)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The ``input.*`` columns."""
        return self.with_role(Role.INPUT)

    @property
    def segments(self) -> tuple[str, ...]:
        """The low-cardinality metadata columns used to slice traffic."""
        return self.with_role(Role.SEGMENT)

    @property
    def provenance(self) -> tuple[str, ...]:
        """The per-request lineage columns (``lineage.*``)."""
        return self.with_role(Role.PROVENANCE)


def _is_categorical_type(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_dictionary(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string_view(t)
    )


def infer_schema(
    data: pa.Table | pa.Schema,
    *,
    roles: Mapping[str, Role] | None = None,
    segments: Iterable[str] | None = None,
    max_segment_cardinality: int = MAX_SEGMENT_CARDINALITY,
) -> LogSchema:
    """Infer each column's role from its name and, for metadata, its cardinality.

    Parameters
    ----------
    data
        A table (cardinality is then measured) or only its schema (then no metadata
        column becomes a segment unless named in ``segments``).
    roles
        Explicit roles that override the names, e.g. from a :class:`ModelConfig`.
    segments
        When given, exactly these columns are segments, and no others.
    max_segment_cardinality
        A string or boolean metadata column with at most this many distinct values
        (and fewer than half as many as rows) becomes a segment.

    Returns
    -------
    LogSchema
    """
    schema = data.schema if isinstance(data, pa.Table) else data
    roles = dict(roles or {})
    chosen = None if segments is None else set(segments)
    if chosen is not None:
        missing = sorted(chosen - set(schema.names))
        if missing:
            raise SchemaError(f"segment columns {missing} are not in the data; it has {schema.names}")
    cols = []
    for f in schema:
        role = roles.get(f.name) or role_of(f.name)
        if chosen is not None:
            if f.name in chosen:
                role = Role.SEGMENT
            elif role is Role.SEGMENT:
                role = Role.METADATA
        elif role is Role.METADATA and isinstance(data, pa.Table) and _is_categorical_type(f.type):
            arr = data.column(f.name)
            n = pc.count_distinct(arr, mode="only_valid").as_py()
            if 0 < n <= max_segment_cardinality and n * 2 <= max(len(arr), 2):
                role = Role.SEGMENT
        cols.append(Column(f.name, role, str(f.type)))
    return LogSchema(tuple(cols))
