"""The query engine behind the store: one small protocol, DuckDB as the default implementation.

SQL in mlsleuth is written once, in DuckDB's dialect, and transpiled with sqlglot for any other
engine (Spark, Trino, ...), so that analyses stay portable.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
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


def parquet_scan(paths: Sequence[str | Path], *, hive_types: dict[str, str] | None = None) -> str:
    """The DuckDB SQL that reads Parquet files as one table (union by name, hive partitions)."""
    listed = "[" + ", ".join(quote_literal(str(p)) for p in paths) + "]"
    opts = "hive_partitioning=true, union_by_name=true"
    if hive_types:
        opts += ", hive_types={" + ", ".join(f"{quote_literal(k)}: {v}" for k, v in hive_types.items()) + "}"
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


#: Settings fixed at connect: no extension is installed or loaded behind a query's back, none from the community.
_CONNECT_LOCKDOWN: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
    "allow_extension_repositories": "forbidden",
}
#: What a caller cannot override through ``config`` (the lockdown is not optional).
_LOCKED_SETTINGS = frozenset({*_CONNECT_LOCKDOWN, "enable_external_access", "allowed_directories", "allowed_paths",
                              "lock_configuration", "allowed_configs", "disabled_filesystems"})
_QUERY_KINDS = frozenset({"SELECT", "EXPLAIN", "CREATE VIEW"})
_EXECUTE_KINDS = _QUERY_KINDS | {"DROP"}
_CREATE_VIEW = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+|TEMPORARY\s+)?VIEW\b", re.IGNORECASE)


def check_statement(sql: str, kinds: frozenset[str] = _QUERY_KINDS) -> duckdb.Statement:
    """Refuse SQL that is not exactly one statement of the given kinds (``SELECT``, ``EXPLAIN``, ``CREATE VIEW``...).

    Returns the parsed statement, which DuckDB runs without parsing the text again.

    An engine runs one statement per call, so a name or value that broke out of its quotes cannot
    stack a ``COPY ... TO`` or an ``ATTACH`` after the query it was spliced into.

    Raises
    ------
    EngineError
        Naming the query, how many statements it holds or which kind it is.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise EngineError(f"query {_first_line(sql)!r} failed: {e}") from e
    if len(statements) != 1:
        raise EngineError(f"query {_first_line(sql)!r} holds {len(statements)} statements; the engine runs exactly "
                          "one per call")
    st = statements[0]
    kind = st.type.name
    if kind == "CREATE" and _CREATE_VIEW.match(st.query):
        kind = "CREATE VIEW"
    if kind not in kinds:
        raise EngineError(f"query {_first_line(sql)!r} is a {kind} statement; the engine runs only "
                          f"{', '.join(sorted(kinds))}")
    return st


def _as_dir(path: str | Path) -> str:
    """An absolute folder path ending with ``/``, as DuckDB's ``allowed_directories`` matches prefixes."""
    return os.path.normpath(os.path.abspath(str(path))).rstrip("/") + "/"


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
    allowed_directories
        The only folders whose files queries may read (a store's data folders). Every other file
        access is off: DuckDB runs with ``enable_external_access = false``, no extension is
        installed or autoloaded, and ``lock_configuration = true`` freezes that, so no query can
        read ``/etc/passwd``, ``COPY ... TO`` a file, ``ATTACH`` a database or ``LOAD`` code.
    temp_directory
        Where DuckDB spills when a query exceeds memory (``None``: DuckDB's ``.tmp``).
    config
        Other DuckDB settings for the connection (``preserve_insertion_order``...); the lockdown's
        own settings cannot be overridden.

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

    def __init__(self, *, threads: int | None = None, memory_limit: str | None = None,
                 allowed_directories: Sequence[str | Path] = (), temp_directory: str | Path | None = None,
                 config: Mapping[str, str | bool | int | float] | None = None) -> None:
        self._config: dict[str, str | bool | int | float | list[str]] = {}
        for key, value in (config or {}).items():
            if key.lower() in _LOCKED_SETTINGS:
                raise EngineError(f"the DuckDB setting {key!r} is fixed by mlsleuth's lockdown and cannot be passed "
                                  "in config; name the folders to read with allowed_directories")
            self._config[key] = value
        if threads is not None:
            self._config["threads"] = int(threads)
        if memory_limit is not None:
            self._config["memory_limit"] = memory_limit
        self._config.update(_CONNECT_LOCKDOWN)
        self._allowed = tuple(_as_dir(d) for d in allowed_directories)
        self._temp = None if temp_directory is None else str(Path(temp_directory).absolute())
        self._closed = False
        self._start()

    def _start(self) -> None:
        try:
            self._con = duckdb.connect(":memory:", config=self._config)
            # Settings that cannot be passed to connect, then the lock: after it no statement changes any setting.
            self._con.execute("SET GLOBAL TimeZone = 'UTC'")
            if self._temp is not None:
                self._con.execute(f"SET temp_directory = {quote_literal(self._temp)}")
            listed = "[" + ", ".join(quote_literal(d) for d in self._allowed) + "]"
            self._con.execute(f"SET allowed_directories = {listed}")
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            raise EngineError(f"cannot start DuckDB with {self._config}: {e}") from e
        self._pid = os.getpid()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

    @property
    def allowed_directories(self) -> tuple[str, ...]:
        """The folders whose files the engine may read (each ends with ``/``); it reads no other file."""
        return self._allowed

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
            self._local.cursor = cur
            self._local.kinds = {}
        return cur

    def query(self, sql: str) -> pa.Table:
        """Run one query (``SELECT``, ``EXPLAIN`` or ``CREATE VIEW``) and return its rows as Arrow (timestamps in UTC).

        Raises
        ------
        EngineError
            When DuckDB fails; the message starts with the query's first line. Also when ``sql``
            holds more than one statement or a statement of another kind (``COPY``, ``ATTACH``,
            ``INSTALL``, ``SET``...): a query never writes a file nor changes a setting.
        """
        statement = check_statement(sql, _QUERY_KINDS)
        cur = self._cursor()
        try:
            rel = cur.sql(statement)
            if rel is None:
                return pa.table({})
            return _utc(rel.to_arrow_table())
        except duckdb.Error as e:
            raise EngineError(f"query {_first_line(sql)!r} failed: {e}") from e

    def execute(self, sql: str) -> None:
        """Run one statement that returns no rows (``CREATE VIEW``, ``DROP VIEW``): checked as :meth:`query` is."""
        statement = check_statement(sql, _EXECUTE_KINDS)
        try:
            self._cursor().execute(statement)
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
                self._check_readable(name, paths)
                scan = parquet_scan(paths, hive_types=_hive_types(paths[0]))
                cur.execute(f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS SELECT * FROM {scan}")
                kinds[name] = "view"
        except duckdb.Error as e:
            kinds.pop(name, None)
            raise EngineError(f"cannot bind {name!r}: {e}") from e

    def _check_readable(self, name: str, paths: Sequence[str | Path]) -> None:
        """Refuse a file outside the allowed folders up front, with the fix (DuckDB would refuse it at query time)."""
        for p in paths:
            full = os.path.normpath(os.path.abspath(str(p)))
            if not any((full + "/").startswith(d) for d in self._allowed):
                where = list(self._allowed) if self._allowed else "no folder"
                raise EngineError(f"cannot bind {name!r} to {str(p)!r}: this engine reads files under {where} only; "
                                  "make it with DuckDBEngine(allowed_directories=[...]) naming the folder")

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
    """Quote a column or table name for SQL (``feature.x`` becomes ``"feature.x"``, ``a"b`` becomes ``"a""b"``).

    This and :func:`quote_literal` are the only ways a name or a value that came from data reaches SQL
    in mlsleuth (sqlglot carries the quoting to other dialects: backticks on Spark).

    Raises
    ------
    EngineError
        For an empty name, which SQL cannot quote (:func:`mlsleuth.schema.validate` names such a
        column ``unnamed_<position>``), or one holding a NUL character, which DuckDB cuts off there
        (``validate`` refuses such names).
    """
    if not name:
        raise EngineError("cannot use an empty name in SQL; name the column")
    if "\x00" in name:
        raise EngineError(f"cannot use {name!r} as a SQL name: it holds a NUL character; rename the column")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string as a SQL literal (``it's`` becomes ``'it''s'``; backslashes are plain characters in DuckDB)."""
    return "'" + value.replace("'", "''") + "'"
