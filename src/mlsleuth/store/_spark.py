"""Apache Spark as the store's query engine: the same DuckDB-dialect SQL, transpiled, over the same Parquet.

PySpark is an optional dependency (``pip install 'mlsleuth[spark]'``), imported only when a
:class:`SparkEngine` is made. Starting a JVM takes 10-60 s, so one session per process is shared
by every engine made without one (:func:`shared_session`).

Results come back through Arrow, normalised so that Python code downstream does not care which
engine ran: integers are ``int64``, decimals ``float64``, timestamps UTC-aware, every field
nullable; the column names are the query's aliases.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot
import sqlglot.errors
from sqlglot import exp

from mlsleuth.errors import ConfigError, EngineError
from mlsleuth.store._engine import Source, _first_line, check_statement, is_dataset, transpile_statements

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["DEFAULT_SPARK_CONF", "SparkEngine", "shared_session"]

INSTALL_HINT = "pip install 'mlsleuth[spark]' (PySpark and a Java 17+ runtime)"

#: Settings every session mlsleuth starts gets (an existing session given to it is not changed,
#: except that its time zone must be UTC and partition values are read as text).
DEFAULT_SPARK_CONF: Mapping[str, str] = {
    # Timestamps are stored as instants; rendered and truncated in UTC like DuckDB's, on any machine.
    "spark.sql.session.timeZone": "UTC",
    # mlsleuth's aggregates are small: 200 shuffle partitions would be 200 tiny tasks per query.
    "spark.sql.shuffle.partitions": "8",
    # A window summary has hundreds of aggregates; past 100 fields Spark gives up whole-stage code
    # generation and interprets each row, about twice as slow (a 400-aggregate scan: 29 s -> 15 s).
    "spark.sql.codegen.maxFields": "10000",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "true",
    # Hive partition values as text (a model named 123 stays "123"); `date` is cast to DATE on bind.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    # DuckDB's semantics: a failed cast or a division by zero gives NULL, not a failed query.
    "spark.sql.ansi.enabled": "false",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}

#: A JVM option for the local sessions mlsleuth starts. Spark's generated code for a window summary
#: (hundreds of aggregates) has methods past HotSpot's 8,000-byte limit, which the JVM then never
#: compiles and interprets instead: with the option, a 580-aggregate scan of 1M rows took 30 s, not 93 s.
#: On a cluster, add it to ``spark.executor.extraJavaOptions`` (see docs/spark.md).
_LOCAL_JAVA_OPTION = "-XX:-DontCompileHugeMethods"

#: Settings forced on every session used, given or made: the queries' results depend on them.
_REQUIRED_CONF = ("spark.sql.session.timeZone", "spark.sql.sources.partitionColumnTypeInference.enabled",
                  "spark.sql.ansi.enabled")

_SESSION_LOCK = threading.Lock()
_STATE: dict[int, _SessionState] = {}


class _SessionState:
    """What every engine on one session shares: its lock and what each temp view is bound to."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.bound: dict[str, tuple[object, ...]] = {}


def _import_pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError as e:
        raise ConfigError(f"the Spark engine needs PySpark, which is not installed: {INSTALL_HINT}") from e
    return pyspark.sql


def _spark_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        from pyspark.errors import PySparkException

        errors.append(PySparkException)
    except ImportError:  # pragma: no cover - PySpark < 3.4
        pass
    try:
        from py4j.protocol import Py4JError

        errors.append(Py4JError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _short(e: BaseException) -> str:
    """The first line of a Spark error (the JVM stack trace follows it)."""
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else type(e).__name__


def shared_session(master: str | None = None, conf: Mapping[str, str] | None = None,
                   app_name: str = "mlsleuth") -> SparkSession:
    """The process's Spark session: the active one, or a new one with :data:`DEFAULT_SPARK_CONF`.

    Parameters
    ----------
    master
        The master URL (``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://...``) used when a
        session is started here (default: spark-submit's master, else ``$MASTER``, else
        ``local[2]``). Ignored when a session is already active.
    conf
        More Spark settings for a new session (they win over the defaults).
    app_name
        The application name shown by the cluster manager.

    Raises
    ------
    ConfigError
        When PySpark is not installed.
    EngineError
        When Spark fails to start (no Java runtime, a bad master URL).
    """
    sql = _import_pyspark()
    with _SESSION_LOCK:
        active = sql.SparkSession.getActiveSession()
        if active is not None:
            return active
        builder = sql.SparkSession.builder.appName(app_name)
        local = False
        if master:
            builder = builder.master(master)
            local = master.startswith("local")
        elif not os.environ.get("MASTER") and not os.environ.get("PYSPARK_GATEWAY_PORT"):
            # Not under spark-submit (which sets the gateway and the master) and no $MASTER: local.
            builder = builder.master("local[2]")
            local = True
        settings = {**DEFAULT_SPARK_CONF, **dict(conf or {})}
        if local:  # the tasks run in the JVM started here: let it compile wide aggregates' generated code
            opts = settings.get("spark.driver.extraJavaOptions", "")
            if _LOCAL_JAVA_OPTION not in opts:
                settings["spark.driver.extraJavaOptions"] = f"{opts} {_LOCAL_JAVA_OPTION}".strip()
        for key, value in settings.items():
            builder = builder.config(key, value)
        failures: tuple[type[BaseException], ...] = (*_spark_errors(), OSError, RuntimeError)
        try:
            session = builder.getOrCreate()
        except failures as e:
            raise EngineError(f"cannot start Spark (master {master or 'local[2]'!r}); it needs a Java 17+ "
                              f"runtime on PATH or JAVA_HOME: {_short(e)}") from e
        # Failed queries reach the caller as EngineError; Spark would also log each at ERROR, with its stack.
        session.sparkContext.setLogLevel("FATAL")
        return session


def _state(session: SparkSession) -> _SessionState:
    key = id(session)
    with _SESSION_LOCK:
        st = _STATE.get(key)
        if st is None:
            st = _STATE[key] = _SessionState()
        return st


# --------------------------------------------------------------------------------------------- results


def _normal_type(t: pa.DataType) -> pa.DataType:
    """The type DuckDB-minded code expects: int64, float64, UTC timestamps, plain strings."""
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_normal_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _normal_type(f.type)) for f in t])
    return t


def normalise_result(table: pa.Table) -> pa.Table:
    """Give a Spark result DuckDB's conventions: int64, float64 for decimals, UTC timestamps, nullable fields."""
    fields = [pa.field(f.name, _normal_type(f.type)) for f in table.schema]
    target = pa.schema(fields)
    if target == table.schema:
        return table
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise EngineError(f"cannot convert Spark's result types {table.schema.types} to {target.types}: {e}") from e


def _to_arrow(df: DataFrame) -> pa.Table:
    if hasattr(df, "toArrow"):
        table = df.toArrow()
    else:  # pragma: no cover - PySpark 3.5
        batches = df._collect_as_arrow()  # type: ignore[operator]
        table = pa.Table.from_batches(batches) if batches else pa.table({})
    return normalise_result(table)


# --------------------------------------------------------------------------------------------- paths

_GLOB = re.compile(r"[*?\[{]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def spark_path(path: str | Path) -> str:
    """A path or URL as Spark (Hadoop) reads it: ``s3://`` becomes ``s3a://``, local paths absolute."""
    text = str(path)
    if _URL.match(text):
        if text.startswith("s3://"):
            return "s3a://" + text[5:]
        return text
    return str(Path(text).absolute())


def _base_path(path: str) -> str | None:
    """The folder above a path's first ``key=value`` segment (Spark's ``basePath``), if it has one."""
    head, sep, rest = path.partition("://")
    parts = (rest if sep else head).split("/")
    for i, part in enumerate(parts):
        if "=" in part and not _GLOB.search(part):
            base = "/".join(parts[:i]) or "/"
            return f"{head}://{base}" if sep else base
    return None


def _partition_keys(path: str) -> list[str]:
    """The ``key`` of each ``key=value`` folder in a path."""
    return [p.partition("=")[0] for p in path.split("/")[:-1] if "=" in p and not _GLOB.search(p)]


def _is_plain_file(path: str) -> bool:
    if _GLOB.search(path):
        return False
    if _URL.match(path) and not path.startswith("file://"):
        return path.endswith(".parquet")
    return Path(path.removeprefix("file://")).is_file()


# --------------------------------------------------------------------------------------------- the engine


class SparkEngine:
    """Runs mlsleuth's DuckDB-dialect SQL on Apache Spark (``transpile(sql, "spark")`` first).

    Names bound with :meth:`register` are Spark temporary views of the session, so every thread
    (and every engine on the same session) sees them; hold :attr:`lock` around a ``register`` and
    the ``query`` that reads it when threads share a session (the stores do).

    Parameters
    ----------
    session
        An existing ``SparkSession`` (a cluster's, a notebook's). Its time zone is set to UTC,
        ANSI mode off and partition type inference off, as mlsleuth's queries assume.
    master
        When no session is given and none is active: the master URL of the session to start
        (default ``local[2]``).
    conf
        More settings for a session started here.
    app_name
        The name of a session started here.

    Raises
    ------
    ConfigError
        When PySpark is not installed.
    EngineError
        When Spark cannot start.

    Examples
    --------
    >>> import pyarrow as pa
    >>> eng = SparkEngine(master="local[1]")  # doctest: +SKIP
    >>> eng.register("t", pa.table({"x": [1, 2, 3]}))  # doctest: +SKIP
    >>> eng.query("SELECT sum(x) AS s FROM t").column("s").to_pylist()  # doctest: +SKIP
    [6]
    """

    dialect = "spark"

    def __init__(self, session: SparkSession | None = None, *, master: str | None = None,
                 conf: Mapping[str, str] | None = None, app_name: str = "mlsleuth") -> None:
        _import_pyspark()
        self._errors = _spark_errors()
        self._session = session if session is not None else shared_session(master, conf, app_name)
        try:
            for key in _REQUIRED_CONF:
                self._session.conf.set(key, DEFAULT_SPARK_CONF[key])
        except self._errors as e:
            raise EngineError(f"cannot configure the Spark session: {_short(e)}") from e
        self._shared = _state(self._session)
        self._names: set[str] = set()
        self._closed = False

    @property
    def session(self) -> SparkSession:
        """The Spark session queries run on."""
        return self._session

    @property
    def lock(self) -> threading.RLock:
        """Held by the stores around binding views and querying them (views are shared by the session)."""
        return self._shared.lock

    def _check(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed")

    def query(self, sql: str) -> pa.Table:
        """Run one DuckDB-dialect statement (``SELECT``, ``EXPLAIN`` or ``CREATE VIEW``) on Spark; its rows as Arrow.

        Raises
        ------
        EngineError
            When the SQL cannot be translated or Spark fails; the message starts with the query's
            first line.
        """
        self._check()
        # One SELECT, EXPLAIN or CREATE VIEW, as on DuckDB: Spark has no lockdown of its own, so a query
        # must not be able to write (CREATE TABLE ... LOCATION, INSERT OVERWRITE DIRECTORY) or stack another.
        check_statement(sql)
        statements = transpile_statements(sql, self.dialect)
        result = pa.table({})
        with self.lock:
            for stmt in statements:
                try:
                    df = self._session.sql(stmt)
                    if _is_command(stmt):
                        self._note_views(stmt)
                        result = pa.table({})
                    else:
                        result = _to_arrow(df)
                except self._errors as e:
                    raise EngineError(f"query {_first_line(sql)!r} failed on Spark: {_short(e)}") from e
        return result

    def _note_views(self, stmt: str) -> None:
        """A view created by SQL replaces whatever the name was bound to."""
        try:
            tree = sqlglot.parse_one(stmt, read="spark")
        except sqlglot.errors.SqlglotError:  # pragma: no cover - it was just generated by sqlglot
            return
        if isinstance(tree, exp.Create | exp.Drop) and isinstance(tree.this, exp.Table | exp.Schema):
            table = tree.this if isinstance(tree.this, exp.Table) else tree.this.this
            if isinstance(table, exp.Table):
                self._shared.bound.pop(table.name, None)
                if isinstance(tree, exp.Create):
                    self._names.add(table.name)

    def register(self, name: str, source: Source) -> None:
        """Bind ``name`` to an Arrow table, or to Parquet files, globs, folders or URLs, as a temp view.

        Parquet is read with ``mergeSchema`` (files with different columns union by name) and
        hive partitions (``key=value`` folders, values as text, ``date`` as DATE). ``s3://`` URLs
        are read as ``s3a://``; ``memory://`` and other fsspec-only URLs are read with pyarrow
        and sent to Spark (small data only). Binding a name again to the same list of files (or
        the same Arrow table) costs nothing: files are taken as immutable, as the store's are.

        Raises
        ------
        EngineError
            When the files cannot be read, or the list is empty.
        """
        self._check()
        with self.lock:
            key, make = self._plan(name, source)
            if key is not None and self._shared.bound.get(name) == key:
                self._names.add(name)
                return
            try:
                df = make()
                df.createOrReplaceTempView(name)
            except self._errors as e:
                self._shared.bound.pop(name, None)
                raise EngineError(f"cannot bind {name!r} on Spark: {_short(e)}") from e
            if key is None:
                self._shared.bound.pop(name, None)
            else:
                self._shared.bound[name] = key
            self._names.add(name)

    def _plan(self, name: str, source: Source) -> tuple[tuple[object, ...] | None, Any]:
        """A cache key for ``source`` (``None``: never reuse) and the function that makes its DataFrame."""
        if isinstance(source, pa.Table):
            table = source
            key: tuple[object, ...] | None = (("empty", table.schema) if table.num_rows == 0
                                              else ("arrow", _Same(table)))
            return key, lambda: self._from_arrow(table)
        if is_dataset(source):
            dataset: Any = source
            return None, lambda: self._from_arrow(dataset.to_table())
        paths = [source] if isinstance(source, str | Path) else list(source)
        if not paths:
            raise EngineError(f"cannot bind {name!r} to an empty list of Parquet files")
        texts = [str(p) for p in paths]
        if any(_URL.match(t) and not t.startswith(("file://", "s3://", "s3a://", "gs://", "abfs://", "abfss://",
                                                   "hdfs://", "wasb://", "wasbs://", "dbfs:/"))
               for t in texts):
            return None, lambda: self._from_arrow(_read_with_pyarrow(texts))
        located = [spark_path(t) for t in texts]
        key = ("parquet", tuple(located)) if all(_is_plain_file(t) for t in texts) else None
        return key, lambda: self._read_parquet(located)

    def _from_arrow(self, table: pa.Table) -> DataFrame:
        fields = [f.with_type(pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
                  for f in table.schema]
        table = table.cast(pa.schema(fields))
        if not hasattr(self._session, "createDataFrame"):  # pragma: no cover
            raise EngineError("this Spark session cannot take Arrow tables")
        try:
            return self._session.createDataFrame(table)
        except TypeError:  # pragma: no cover - PySpark 3.5 takes pandas, not Arrow
            return self._session.createDataFrame(table.to_pandas())

    def _read_parquet(self, paths: Sequence[str]) -> DataFrame:
        from pyspark.sql import functions as F

        reader = self._session.read.option("mergeSchema", "true")
        base = _base_path(paths[0])
        if base is not None:
            reader = reader.option("basePath", base)
        df = reader.parquet(*paths)
        keys = _partition_keys(paths[0]) if base is not None else []
        if "date" in keys:
            df = df.withColumn("date", F.col("date").cast("date"))
        if keys:  # DuckDB puts partition columns last, sorted by name: so does this view
            rest = [F.col(_backtick(c)) for c in df.columns if c not in keys]
            df = df.select(*rest, *(F.col(_backtick(k)) for k in sorted(keys)))
        return df

    def close(self, *, stop: bool = False) -> None:
        """Drop the views this engine bound; with ``stop=True`` also stop the Spark session."""
        if self._closed:
            return
        self._closed = True
        with self.lock:
            for name in self._names:
                self._shared.bound.pop(name, None)
                with contextlib.suppress(*self._errors):  # a stopped session has no views left
                    self._session.catalog.dropTempView(name)
            self._names.clear()
        if stop:
            with _SESSION_LOCK:
                _STATE.pop(id(self._session), None)
            self._session.stop()

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            master = self._session.sparkContext.master
        except Exception:  # only for the repr
            master = "?"
        return f"SparkEngine(master={master!r})"


class _Same:
    """Equal only to a wrapper of the very same object (a bound Arrow table is reused only if unchanged)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


_COMMANDS = ("CREATE", "DROP", "SET", "USE", "CACHE", "UNCACHE", "REFRESH", "ALTER", "INSERT", "MSCK")


def _is_command(stmt: str) -> bool:
    return stmt.lstrip().split(None, 1)[0].upper() in _COMMANDS if stmt.strip() else False


def _read_with_pyarrow(urls: Sequence[str]) -> pa.Table:
    """Parquet at fsspec URLs Spark cannot reach (``memory://``, ...) read with pyarrow."""
    from mlsleuth.store._fs import read_parquet_urls

    return read_parquet_urls(urls)


def _backtick(name: str) -> str:
    """A Spark column reference that keeps dots, spaces and backticks of a name literal."""
    return "`" + name.replace("`", "``") + "`"
