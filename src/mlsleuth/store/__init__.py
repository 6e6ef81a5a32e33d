"""The log store: append, read windows, join labels, change events, lineage; the engine behind it.

:class:`LocalStore` (the default) keeps one folder of hive-partitioned Parquet that DuckDB,
Spark, Trino and pyarrow read as it is; :class:`MemoryStore` keeps the same tables in memory.
Both satisfy :class:`Store`. Queries run on an :class:`Engine` (DuckDB by default) and are
written in DuckDB's dialect; :func:`transpile` turns them into another engine's.
"""

from mlsleuth.store._choice import ENGINE_ENV, SPARK_MASTER_ENV, EngineChoice, EngineKind, make_engine
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
from mlsleuth.store._remote import RemoteStore, open_store
from mlsleuth.store._spark import SparkEngine

__all__ = [
    "DEFAULT_MODEL",
    "ENGINE_ENV",
    "RENAMED_DATE_COLUMN",
    "SPARK_MASTER_ENV",
    "AppendResult",
    "DuckDBEngine",
    "Engine",
    "EngineChoice",
    "EngineKind",
    "LocalStore",
    "MemoryStore",
    "ModelStatus",
    "RemoteStore",
    "SparkEngine",
    "Store",
    "StoreSettings",
    "StoreStatus",
    "TableKind",
    "make_engine",
    "open_store",
    "transpile",
]
