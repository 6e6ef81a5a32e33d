"""Which engine runs a store's queries: a flag, then ``$MLSLEUTH_ENGINE``, then the store's config, then DuckDB."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlsleuth.errors import ConfigError
from mlsleuth.store._engine import DuckDBEngine, Engine

__all__ = ["ENGINE_ENV", "SPARK_MASTER_ENV", "EngineChoice", "EngineKind", "make_engine"]

#: The environment variable naming the engine (``duckdb`` or ``spark``).
ENGINE_ENV = "MLSLEUTH_ENGINE"
#: The environment variable naming the Spark master URL.
SPARK_MASTER_ENV = "MLSLEUTH_SPARK_MASTER"


class EngineKind(enum.Enum):
    """The query engines mlsleuth ships."""

    DUCKDB = "duckdb"
    SPARK = "spark"

    @classmethod
    def parse(cls, value: EngineKind | str, *, where: str = "engine") -> EngineKind:
        """An engine kind from its name (case-insensitive); ``where`` names the setting in the error."""
        if isinstance(value, EngineKind):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(f"{where}: expected one of {[k.value for k in cls]}, got {value!r}",
                              column=where) from None


@dataclass(frozen=True)
class EngineChoice:
    """An engine to make: its kind and, for Spark, the master URL and settings.

    Parameters
    ----------
    kind
        DuckDB (embedded, the default) or Spark.
    spark_master
        The Spark master URL (``local[4]``, ``spark://host:7077``, ``yarn``...); ``None``: the
        active session's, else ``local[2]``.
    spark_conf
        More Spark settings, ``(key, value)`` pairs.
    threads
        DuckDB threads (``None``: one per core).

    Examples
    --------
    >>> EngineChoice.resolve("spark", environ={}).kind.value
    'spark'
    >>> EngineChoice.resolve(None, environ={"MLSLEUTH_ENGINE": "spark"}).kind.value
    'spark'
    >>> EngineChoice.resolve(None, environ={}).kind.value
    'duckdb'
    """

    kind: EngineKind = EngineKind.DUCKDB
    spark_master: str | None = None
    spark_conf: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    threads: int | None = None

    @classmethod
    def resolve(cls, engine: EngineKind | str | None = None, *, spark_master: str | None = None,
                configured: EngineKind | None = None, configured_master: str | None = None,
                spark_conf: Mapping[str, str] | None = None, threads: int | None = None,
                environ: Mapping[str, str] | None = None) -> EngineChoice:
        """The engine asked for: ``engine`` (a flag) wins over ``$MLSLEUTH_ENGINE``, which wins over ``configured``.

        The master URL follows the same order: ``spark_master``, ``$MLSLEUTH_SPARK_MASTER``,
        ``configured_master``.

        Raises
        ------
        ConfigError
            When a name is not ``duckdb`` or ``spark``.
        """
        env = os.environ if environ is None else environ
        if engine is not None:
            kind = EngineKind.parse(engine, where="--engine")
        elif env.get(ENGINE_ENV, "").strip():
            kind = EngineKind.parse(env[ENGINE_ENV], where=ENGINE_ENV)
        else:
            kind = configured or EngineKind.DUCKDB
        master = spark_master or env.get(SPARK_MASTER_ENV, "").strip() or configured_master
        return cls(kind, master, tuple(sorted((spark_conf or {}).items())), threads)

    def make(self, *, allowed_directories: Sequence[str | Path] = ()) -> Engine:
        """Start the engine (Spark: the process's shared session, started when none is active).

        DuckDB reads files under ``allowed_directories`` only (a store's data folders); see
        :class:`~mlsleuth.store.DuckDBEngine`.
        """
        if self.kind is EngineKind.SPARK:
            from mlsleuth.store._spark import SparkEngine

            return SparkEngine(master=self.spark_master, conf=dict(self.spark_conf))
        return DuckDBEngine(threads=self.threads, allowed_directories=allowed_directories)


def make_engine(engine: Engine | EngineKind | str | None = None, *, spark_master: str | None = None,
                spark_conf: Mapping[str, str] | None = None, threads: int | None = None,
                environ: Mapping[str, str] | None = None) -> Engine:
    """An engine from a command-line style choice: an :class:`Engine` is returned as it is.

    Parameters
    ----------
    engine
        An engine, ``"duckdb"``, ``"spark"``, an :class:`EngineKind`, or ``None`` for
        ``$MLSLEUTH_ENGINE`` (default DuckDB).
    spark_master, spark_conf
        For Spark: the master URL (else ``$MLSLEUTH_SPARK_MASTER``) and more settings.
    threads
        For DuckDB: threads per query.

    Raises
    ------
    ConfigError
        When the name is unknown, or Spark is asked for and PySpark is not installed.
    EngineError
        When Spark cannot start.
    """
    if engine is not None and not isinstance(engine, EngineKind | str):
        return engine
    return EngineChoice.resolve(engine, spark_master=spark_master, spark_conf=spark_conf, threads=threads,
                                environ=environ).make()
