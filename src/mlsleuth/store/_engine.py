"""The query engine behind the store: one small protocol, DuckDB as the default implementation.

SQL in mlsleuth is written once, in DuckDB's dialect, and transpiled with sqlglot for any other
engine (Spark, Trino, ...), so that analyses stay portable.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import duckdb
import pyarrow as pa
import sqlglot
import sqlglot.errors
from sqlglot import exp

from mlsleuth.errors import EngineError

__all__ = ["DuckDBEngine", "Engine", "Source", "transpile"]

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: only when a caller made a dataset
    import pyarrow.dataset as ds

#: What a name can be bound to: an Arrow table, a pyarrow dataset (scanned lazily), or Parquet files or globs.
Source: TypeAlias = "pa.Table | ds.Dataset | str | Path | Sequence[str | Path]"


def is_dataset(obj: object) -> bool:
    """Whether ``obj`` is a ``pyarrow.dataset.Dataset`` (without importing pyarrow.dataset, which pulls pandas)."""
    mod = sys.modules.get("pyarrow.dataset")
    return mod is not None and isinstance(obj, mod.Dataset)


def transpile(sql: str, dialect: str) -> str:
    """Translate SQL written in DuckDB's dialect into ``dialect``'s.

    Parameters
    ----------
    sql
        One or more statements in DuckDB SQL.
    dialect
        A sqlglot dialect name: ``duckdb`` (returned unchanged), ``spark``, ``trino``, ``clickhouse``, ...

    Returns
    -------
    str
        The statements in the target dialect, separated by ``;`` and a new line.

    Raises
    ------
    EngineError
        When sqlglot cannot parse the query or does not know the dialect.

    Examples
    --------
    >>> transpile("SELECT count_if(score > 0.5) AS n FROM log", "spark")
    'SELECT COUNT_IF(score > 0.5) AS n FROM log'
    """
    if dialect == "duckdb":
        return sql
    return ";\n".join(transpile_statements(sql, dialect))


def transpile_statements(sql: str, dialect: str) -> list[str]:
    """:func:`transpile`, one string per statement (engines run statements one at a time)."""
    if dialect == "duckdb":
        return [sql]
    try:
        trees = sqlglot.parse(sql, read="duckdb")
        rewrite = _REWRITES.get(dialect)
        out = []
        for tree in trees:
            if tree is None:
                continue
            if rewrite is not None:
                tree = tree.transform(rewrite)
            out.append(tree.sql(dialect=dialect))
        return out
    except (sqlglot.errors.SqlglotError, ValueError) as e:
        raise EngineError(f"cannot translate the query {_first_line(sql)!r} to {dialect}: {e}") from e


def _spark_rewrite(node: exp.Expression) -> exp.Expression:
    """Where sqlglot's DuckDB -> Spark translation changes a result, say what DuckDB means.

    - ``epoch(ts)``: DuckDB gives seconds with the fraction (DOUBLE); sqlglot's ``UNIX_TIMESTAMP``
      drops the fraction, so it becomes ``UNIX_MICROS(ts) / 1e6``.
    - ``quantile_cont(x, p)`` (exact, linear interpolation, ``p`` a number or a list): sqlglot's
      ``PERCENTILE_CONT(x, p)`` does not exist in Spark; Spark's ``percentile`` is the same
      exact statistic with the same interpolation.
    """
    if isinstance(node, exp.TimeToUnix):
        micros = exp.Anonymous(this="UNIX_MICROS", expressions=[node.this])
        return exp.Div(this=micros, expression=exp.cast(exp.Literal.number(1_000_000), "DOUBLE"))
    if isinstance(node, exp.PercentileCont) and node.expression is not None:
        return exp.Anonymous(this="PERCENTILE", expressions=[node.this, node.expression])
    return node


_REWRITES = {"spark": _spark_rewrite, "databricks": _spark_rewrite}


def _first_line(sql: str) -> str:
    for line in sql.strip().splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""


@runtime_checkable
class Engine(Protocol):
    """A SQL engine that mlsleuth runs its queries on.

    Queries are written in DuckDB's dialect; an engine whose ``dialect`` is another one runs
    ``transpile(sql, self.dialect)``.
    """

    @property
    def dialect(self) -> str:
        """The sqlglot name of the engine's SQL dialect."""
        ...

    def query(self, sql: str) -> pa.Table:
        """Run one query (DuckDB dialect) and return its result as an Arrow table."""
        ...

    def register(self, name: str, source: Source) -> None:
        """Make ``name`` refer to an Arrow table or to Parquet files (hive-partitioned) in later queries."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


def _quote_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def parquet_scan(paths: Sequence[str | Path], *, hive_types: dict[str, str] | None = None) -> str:
    """The DuckDB SQL that reads Parquet files as one table (union by name, hive partitions)."""
    listed = "[" + ", ".join(_quote_str(str(p)) for p in paths) + "]"
    opts = "hive_partitioning=true, union_by_name=true"
    if hive_types:
        opts += ", hive_types={" + ", ".join(f"{_quote_str(k)}: {v}" for k, v in hive_types.items()) + "}"
    return f"read_parquet({listed}, {opts})"


def _hive_types(path: str | Path) -> dict[str, str]:
    """Partition columns of a hive path, typed: ``date`` as DATE, every other one as text."""
    keys = [part.partition("=")[0] for part in Path(path).parts[:-1] if "=" in part and "*" not in part]
    return {k: ("DATE" if k == "date" else "VARCHAR") for k in keys if k}


def _utc(table: pa.Table) -> pa.Table:
    """Name DuckDB's ``Etc/UTC`` zone ``UTC``, as the rest of mlsleuth does."""
    fields = []
    changed = False
    for f in table.schema:
        if pa.types.is_timestamp(f.type) and f.type.tz in ("Etc/UTC", "UTC+00:00", "+00:00"):
            fields.append(f.with_type(pa.timestamp(f.type.unit, tz="UTC")))
            changed = True
        else:
            fields.append(f)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata)) if changed else table


class DuckDBEngine:
    """The default engine: an in-memory DuckDB database, one connection (cursor) per thread.

    The engine never opens a ``.duckdb`` file: a file held open read-write would lock out every
    other process (the ``mlsleuth`` CLI, a notebook, the server). Names bound with
    :meth:`register` are views on the calling thread's connection, so threads never see each
    other's bindings; register a name in the thread that queries it.

    Parameters
    ----------
    threads
        How many threads DuckDB may use per query (``None``: DuckDB's default, the core count).
    memory_limit
        DuckDB's memory limit, e.g. ``"2GB"`` (``None``: DuckDB's default).

    Examples
    --------
    >>> import pyarrow as pa
    >>> eng = DuckDBEngine(threads=1)
    >>> eng.register("t", pa.table({"x": [1, 2, 3]}))
    >>> eng.query("SELECT sum(x) AS s FROM t").column("s").to_pylist()
    [6]
    >>> eng.close()
    """

    dialect = "duckdb"

    def __init__(self, *, threads: int | None = None, memory_limit: str | None = None) -> None:
        self._config: dict[str, str | bool | int | float | list[str]] = {}
        if threads is not None:
            self._config["threads"] = int(threads)
        if memory_limit is not None:
            self._config["memory_limit"] = memory_limit
        self._closed = False
        self._start()

    def _start(self) -> None:
        try:
            self._con = duckdb.connect(":memory:", config=self._config)
            self._con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error as e:
            raise EngineError(f"cannot start DuckDB with {self._config}: {e}") from e
        self._pid = os.getpid()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    @property
    def threads(self) -> int:
        """How many threads DuckDB uses per query."""
        rows = self._cursor().execute("SELECT current_setting('threads')").fetchall()
        return int(rows[0][0]) if rows else 1

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._pid != os.getpid() and not self._closed:
            # A forked child: DuckDB's threads did not survive the fork, so start afresh (the parent's
            # connection is left alone, not closed, as it belongs to the parent).
            self._start()
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                if self._closed:
                    raise EngineError("the engine is closed")
                cur = self._con.cursor()
                self._cursors.append(cur)
            cur.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cur
            self._local.kinds = {}
        return cur

    def query(self, sql: str) -> pa.Table:
        """Run ``sql`` and return the result as an Arrow table (timestamps in UTC).

        Raises
        ------
        EngineError
            When DuckDB fails; the message starts with the query's first line.
        """
        cur = self._cursor()
        try:
            rel = cur.sql(sql)
            if rel is None:
                return pa.table({})
            return _utc(rel.to_arrow_table())
        except duckdb.Error as e:
            raise EngineError(f"query {_first_line(sql)!r} failed: {e}") from e

    def execute(self, sql: str) -> None:
        """Run a statement that returns no rows (``SET``, ``CREATE VIEW``...)."""
        try:
            self._cursor().execute(sql)
        except duckdb.Error as e:
            raise EngineError(f"statement {_first_line(sql)!r} failed: {e}") from e

    def register(self, name: str, source: Source) -> None:
        """Bind ``name`` to an Arrow table or dataset, or to Parquet files or globs, on this thread's connection.

        Parquet sources are read with ``union_by_name`` and ``hive_partitioning``; a list of
        files that is empty is an error (bind an empty Arrow table with the schema instead).
        """
        cur = self._cursor()
        kinds: dict[str, str] = self._local.kinds
        try:
            old = kinds.get(name)
            if old == "arrow":
                cur.unregister(name)
            elif old == "view":
                cur.execute(f"DROP VIEW IF EXISTS {quote_ident(name)}")
            if isinstance(source, pa.Table) or is_dataset(source):
                cur.register(name, source)  # a dataset is scanned lazily, with projection and filter pushdown
                kinds[name] = "arrow"
            else:
                paths = [source] if isinstance(source, str | Path) else list(source)
                if not paths:
                    raise EngineError(f"cannot bind {name!r} to an empty list of Parquet files")
                scan = parquet_scan(paths, hive_types=_hive_types(paths[0]))
                cur.execute(f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS SELECT * FROM {scan}")
                kinds[name] = "view"
        except duckdb.Error as e:
            kinds.pop(name, None)
            raise EngineError(f"cannot bind {name!r}: {e}") from e

    def close(self) -> None:
        """Close every connection of the engine; later queries raise :class:`EngineError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
            self._con.close()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quote_ident(name: str) -> str:
    """Quote a column or table name for SQL (``feature.x`` becomes ``"feature.x"``)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string as a SQL literal."""
    return _quote_str(value)
