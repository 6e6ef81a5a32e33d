"""The log store: append, read windows, join labels, change events, lineage; the engine behind it.

:class:`LocalStore` (the default) keeps one folder of hive-partitioned Parquet that DuckDB,
Spark, Trino and pyarrow read as it is; :class:`MemoryStore` keeps the same tables in memory.
Both satisfy :class:`Store`. Queries run on an :class:`Engine` (DuckDB by default) and are
written in DuckDB's dialect; :func:`transpile` turns them into another engine's.
"""

from mlsleuth.store._core import (
    DEFAULT_MODEL,
    RENAMED_DATE_COLUMN,
    AppendResult,
    ModelStatus,
    Store,
    StoreStatus,
    TableKind,
)
from mlsleuth.store._engine import DuckDBEngine, Engine, transpile
from mlsleuth.store._local import LocalStore, StoreSettings
from mlsleuth.store._memory import MemoryStore
from mlsleuth.store._spark import SparkEngine

__all__ = [
    "DEFAULT_MODEL",
    "RENAMED_DATE_COLUMN",
    "AppendResult",
    "DuckDBEngine",
    "Engine",
    "LocalStore",
    "MemoryStore",
    "ModelStatus",
    "SparkEngine",
    "Store",
    "StoreSettings",
    "StoreStatus",
    "TableKind",
    "transpile",
]
