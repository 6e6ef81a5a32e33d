"""Where monitors read production rows from: anything that answers SQL over a ``log`` view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import pyarrow as pa

from mlsleuth.errors import ConfigError, InputError
from mlsleuth.schema import parse_duration, parse_timestamp
from mlsleuth.schema._tables import plain_types
from mlsleuth.store import DuckDBEngine, Engine
from mlsleuth.store._engine import quote_ident, quote_literal

__all__ = ["ArrowSource", "LogSource", "TimeRange", "parse_window", "to_utc_time"]


@runtime_checkable
class LogSource(Protocol):
    """Runs DuckDB-dialect SQL over the views ``log`` (and ``labels`` when labels exist).

    Every :class:`mlsleuth.store.Store` is a source; :class:`ArrowSource` wraps in-memory tables.
    """

    def sql(self, query: str) -> pa.Table:
        """Run ``query`` and return the rows."""
        ...


class ArrowSource:
    """A :class:`LogSource` over Arrow tables held in memory (tests, notebooks, one-off files).

    Parameters
    ----------
    log
        The prediction log (docs/contract.md columns).
    labels
        Optional ``request_id, label[, label_ts]`` rows; the latest ``label_ts`` of a request wins.
    threads
        DuckDB threads.
    engine
        Run on this engine instead of a new DuckDB (e.g. a :class:`~mlsleuth.store.SparkEngine`:
        the tables are sent to Spark). The source does not close an engine it was given.

    Examples
    --------
    >>> src = ArrowSource(pa.table({"ts": [1, 2], "score": [0.1, 0.9]}))
    >>> src.sql("SELECT count(*) AS n FROM log").column("n").to_pylist()
    [2]
    """

    def __init__(self, log: pa.Table, labels: pa.Table | None = None, *, threads: int | None = None,
                 engine: Engine | None = None) -> None:
        if labels is not None and ("request_id" not in labels.column_names or "label" not in labels.column_names):
            raise InputError(f"labels need request_id and label columns, got {labels.column_names}")
        self._own_engine = engine is None
        self._engine: Engine = DuckDBEngine(threads=threads) if engine is None else engine
        # Plain types (string_view, dictionary, float32 as every reader gives them) for every engine.
        self._log, self._labels = plain_types(log), None if labels is None else plain_types(labels)
        # An engine whose views are shared by threads and sources (Spark's session) has a lock: such an
        # engine gets the views bound again, under the lock, before each query (a no-op when unchanged).
        self._lock = getattr(self._engine, "lock", None)
        self._bind()
        self.has_labels = labels is not None

    def _bind(self) -> None:
        self._engine.register("log", self._log)
        if self._labels is not None:
            self._engine.register("labels_all", self._labels)
            order = "label_ts DESC NULLS LAST" if "label_ts" in self._labels.column_names else "request_id"
            self._engine.query(
                "CREATE OR REPLACE TEMP VIEW labels AS SELECT * EXCLUDE (_rn) FROM (SELECT *, row_number() OVER "
                f"(PARTITION BY request_id ORDER BY {order}) AS _rn FROM labels_all) WHERE _rn = 1")

    def sql(self, query: str) -> pa.Table:
        """Run ``query`` over ``log`` (and ``labels``)."""
        if self._lock is None:
            return self._engine.query(query)
        with self._lock:
            self._bind()
            return self._engine.query(query)

    def close(self) -> None:
        """Release the engine (when the source made it)."""
        if self._own_engine:
            self._engine.close()


def to_utc_time(value: datetime | str | None, name: str) -> datetime | None:
    """An aware UTC datetime from ISO-8601 text or a datetime (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise InputError(f"expected an ISO-8601 time such as 2026-03-06T18:00:00Z, got {value!r}",
                             column=name) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_window(window: str | int | float | timedelta) -> int:
    """A window size in whole seconds (``"1h"``, ``"15min"``, ``"1d"`` or seconds)."""
    seconds = parse_duration(window, field_name="window").total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise ConfigError(f"a window must be a whole number of seconds >= 1, got {window!r}", column="window")
    return int(seconds)


@dataclass(frozen=True)
class TimeRange:
    """The rows a monitor pass looks at: a model and ``since <= ts < until``."""

    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, columns: Sequence[str], extra: Sequence[str] = ()) -> str:
        """A SQL ``WHERE`` clause (empty when nothing filters), with partition pruning on ``date``."""
        cond = list(extra)
        if self.model is not None and "model" in columns:
            cond.append(f"model = {quote_literal(self.model)}")
        for bound, op in ((self.since, ">="), (self.until, "<")):
            if bound is not None:
                cond.append(f"ts {op} TIMESTAMPTZ {quote_literal(bound.astimezone(UTC).isoformat())}")
                if "date" in columns:
                    day = bound.astimezone(UTC).date()
                    if op == "<" and bound.astimezone(UTC) == datetime(day.year, day.month, day.day, tzinfo=UTC):
                        day = day - timedelta(days=1)
                    cond.append(f"date {op if op == '>=' else '<='} DATE {quote_literal(day.isoformat())}")
        return (" WHERE " + " AND ".join(cond)) if cond else ""


def log_schema(source: LogSource) -> pa.Schema:
    """The ``log`` view's columns."""
    return source.sql("SELECT * FROM log LIMIT 0").schema


def window_key(seconds: int) -> str:
    """The SQL of a row's window number: ``floor(epoch(ts) / seconds)``."""
    return f"CAST(floor(epoch(ts) / {int(seconds)}) AS BIGINT)"


def q(name: str) -> str:
    """Quote an identifier."""
    return quote_ident(name)
