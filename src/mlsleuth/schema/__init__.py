"""Column roles, data specs and validation at the boundary (docs/contract.md, the inputs)."""

from mlsleuth.schema._config import ModelConfig, parse_duration
from mlsleuth.schema._events import EVENT_KINDS, ChangeEvent, Lineage, parse_timestamp, read_events, read_lineage
from mlsleuth.schema._roles import (
    FEATURE_PREFIX,
    INPUT_PREFIX,
    MAX_SEGMENT_CARDINALITY,
    PROVENANCE_PREFIX,
    RESERVED,
    Column,
    LogSchema,
    Role,
    infer_schema,
    role_of,
)
from mlsleuth.schema._tables import (
    MAX_COLUMN_NAME,
    REJECTED_SCHEMA,
    TIMESTAMP,
    DataKind,
    Validated,
    check_column_names,
    read_table,
    validate,
)

__all__ = [
    "EVENT_KINDS",
    "FEATURE_PREFIX",
    "INPUT_PREFIX",
    "MAX_COLUMN_NAME",
    "MAX_SEGMENT_CARDINALITY",
    "PROVENANCE_PREFIX",
    "REJECTED_SCHEMA",
    "RESERVED",
    "TIMESTAMP",
    "ChangeEvent",
    "Column",
    "DataKind",
    "Lineage",
    "LogSchema",
    "ModelConfig",
    "Role",
    "Validated",
    "check_column_names",
    "infer_schema",
    "parse_duration",
    "parse_timestamp",
    "read_events",
    "read_lineage",
    "read_table",
    "role_of",
    "validate",
]
