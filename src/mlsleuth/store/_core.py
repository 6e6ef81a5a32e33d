"""What every store shares: result types, the ``Store`` protocol, validation of batches, SQL over views.

A store keeps five kinds of table. Each is exposed to SQL under a fixed view name:

========== ==========================================================================
view       rows
========== ==========================================================================
log        one per model request; ``model`` and ``date`` (UTC day of ``ts``) partition it
labels_all every label row ever ingested, with ``ingested_at``
labels     the latest label per ``request_id`` (by ``label_ts``, then ``ingested_at``)
events     change events, one per ``id`` (the latest ingested wins)
lineage    lineage edges ``child``, ``parent``
quarantine rejected rows: ``ingested_at, kind, source, row, reason, data``
========== ==========================================================================

Subclasses decide where the rows live (Parquet files, memory); the validation, duplicate
checks and every query are written once here.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import json
import os
import re
import threading
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import ConfigError, EngineError, SchemaError
from mlsleuth.schema import (
    MAX_SEGMENT_CARDINALITY,
    REJECTED_SCHEMA,
    TIMESTAMP,
    ChangeEvent,
    DataKind,
    Lineage,
    LogSchema,
    ModelConfig,
    Role,
    infer_schema,
    parse_timestamp,
    read_events,
    read_lineage,
    read_table,
    role_of,
    validate,
)
from mlsleuth.store._engine import DuckDBEngine, Engine, quote_ident, quote_literal
from mlsleuth.store._sql_case import latest_labels

__all__ = [
    "DEFAULT_MODEL",
    "RENAMED_DATE_COLUMN",
    "AppendResult",
    "ModelStatus",
    "Store",
    "StoreStatus",
    "TableKind",
]

#: The ``model`` of rows that name none (no ``model`` column, or a null or empty value).
DEFAULT_MODEL = "_default"
#: The store partitions by ``date``; a column of that name in the input is kept under this name.
RENAMED_DATE_COLUMN = "date_orig"
#: Rows per batch when a file is ingested.
INGEST_BATCH_ROWS = 250_000

_DAY_US = 86_400_000_000


class TableKind(enum.Enum):
    """The kinds of table a store keeps; ``ingest`` takes one of these (or a :class:`DataKind`)."""

    LOG = "log"
    LABELS = "labels"
    EVENTS = "events"
    LINEAGE = "lineage"
    QUARANTINE = "quarantine"

    @classmethod
    def parse(cls, kind: TableKind | DataKind | str) -> TableKind:
        """Accept a :class:`TableKind`, a :class:`DataKind` (log, labels) or its name."""
        if isinstance(kind, TableKind):
            return kind
        value = kind.value if isinstance(kind, DataKind) else str(kind).strip().lower()
        try:
            out = cls(value)
        except ValueError:
            out = None
        if out is None or out is TableKind.QUARANTINE:
            raise ConfigError(f"a store ingests log, labels, events or lineage files; got kind {value!r}")
        return out


@dataclass(frozen=True)
class AppendResult:
    """What an append or ingest did.

    Attributes
    ----------
    accepted
        Rows stored.
    quarantined
        Rows rejected and written to the quarantine table instead.
    reasons
        The most common rejection reasons (values elided) with their counts, most common first.
    files
        The files written (paths relative to the store; chunk names for a memory store).
    """

    accepted: int
    quarantined: int = 0
    reasons: tuple[tuple[str, int], ...] = ()
    files: tuple[str, ...] = ()

    def __add__(self, other: AppendResult) -> AppendResult:
        counts: collections.Counter[str] = collections.Counter(dict(self.reasons))
        counts.update(dict(other.reasons))
        return AppendResult(self.accepted + other.accepted, self.quarantined + other.quarantined,
                            tuple(counts.most_common(10)), self.files + other.files)


@dataclass(frozen=True)
class ModelStatus:
    """What a store holds for one model.

    Attributes
    ----------
    name
        The model (``_default`` for rows that named none).
    versions
        The distinct ``model_version`` values, sorted.
    rows
        Log rows stored.
    first_ts, last_ts
        The earliest and latest ``ts``.
    last_request_id
        The ``request_id`` of the latest request, when the log has request ids.
    labelled_fraction
        The share of rows whose ``request_id`` has a label.
    """

    name: str
    versions: tuple[str, ...]
    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    last_request_id: str | None
    labelled_fraction: float


@dataclass(frozen=True)
class StoreStatus:
    """A summary of a store's contents (``mlsleuth status``).

    Attributes
    ----------
    path
        The store's folder, ``None`` for a memory store.
    models
        One entry per model, sorted by name.
    labels
        Distinct labelled request ids.
    quarantined
        Rows in quarantine.
    events
        Distinct change events.
    files
        Data files (Parquet) in the store, or chunks for a memory store.
    bytes
        Bytes on disk (in memory for a memory store).
    """

    path: str | None
    models: tuple[ModelStatus, ...]
    labels: int
    quarantined: int
    events: int
    files: int
    bytes: int

    @property
    def rows(self) -> int:
        """Log rows over all models."""
        return sum(m.rows for m in self.models)

    def model(self, name: str) -> ModelStatus:
        """The status of one model.

        Raises
        ------
        KeyError
            When the store holds no rows of ``name``.
        """
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in the store; it has {[m.name for m in self.models]}")


@runtime_checkable
class Store(Protocol):
    """The methods every store offers (:class:`LocalStore`, :class:`MemoryStore`)."""

    def append_log(self, table: pa.Table, *, source: str | None = None,
                   config: ModelConfig | None = None) -> AppendResult:
        """Validate and store prediction-log rows; bad rows go to quarantine."""
        ...

    def append_labels(self, table: pa.Table, *, source: str | None = None,
                      config: ModelConfig | None = None) -> AppendResult:
        """Store label rows; the latest label of a request wins."""
        ...

    def ingest(self, path: str | Path, kind: TableKind | DataKind | str, *,
               config: ModelConfig | None = None) -> AppendResult:
        """Read a file of the given kind and store its rows."""
        ...

    def add_events(self, events: Iterable[ChangeEvent]) -> AppendResult:
        """Store change events."""
        ...

    def events(self, since: datetime | str | None = None,
               until: datetime | str | None = None) -> tuple[ChangeEvent, ...]:
        """Change events in ``[since, until)``, one per id, ordered by time."""
        ...

    def add_lineage(self, lineage: Lineage) -> AppendResult:
        """Store lineage edges."""
        ...

    def lineage(self) -> Lineage:
        """All lineage edges stored."""
        ...

    def read_log(self, *, model: str | None = None, version: str | None = None,
                 since: datetime | str | None = None, until: datetime | str | None = None,
                 where: Mapping[str, str] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Log rows of a model, version, time window and segment, ordered by ``ts``."""
        ...

    def read_log_with_labels(self, *, model: str | None = None, version: str | None = None,
                             since: datetime | str | None = None, until: datetime | str | None = None,
                             where: Mapping[str, str] | None = None,
                             columns: Sequence[str] | None = None) -> pa.Table:
        """``read_log`` left-joined with the latest label of each request."""
        ...

    def sql(self, query: str) -> pa.Table:
        """Run a query over the views ``log``, ``labels``, ``labels_all``, ``events``, ``lineage``, ``quarantine``."""
        ...

    def status(self) -> StoreStatus:
        """What the store holds."""
        ...

    def schema(self, model: str | None = None) -> LogSchema:
        """The roles and types of the stored log's columns."""
        ...

    def compact(self, model: str | None = None, date: str | date | None = None) -> int:
        """Merge small files; returns how many were merged."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


# --------------------------------------------------------------------------------------------- empty tables

EMPTY_SCHEMAS: Mapping[TableKind, pa.Schema] = {
    TableKind.LOG: pa.schema([("request_id", pa.string()), ("ts", TIMESTAMP), ("model_version", pa.string()),
                              ("score", pa.float64()), ("prediction", pa.string()), ("date", pa.date32()),
                              ("model", pa.string())]),
    TableKind.LABELS: pa.schema([("request_id", pa.string()), ("label", pa.float64()), ("label_ts", TIMESTAMP),
                                 ("ingested_at", TIMESTAMP), ("date", pa.date32())]),
    TableKind.EVENTS: pa.schema([("id", pa.string()), ("ts", TIMESTAMP), ("kind", pa.string()),
                                 ("target", pa.string()), ("description", pa.string()),
                                 ("attributes", pa.string()), ("ingested_at", TIMESTAMP)]),
    TableKind.LINEAGE: pa.schema([("child", pa.string()), ("parent", pa.string()), ("ingested_at", TIMESTAMP)]),
    TableKind.QUARANTINE: pa.schema([("ingested_at", TIMESTAMP), ("kind", pa.string()), ("source", pa.string()),
                                     ("row", pa.int64()), ("reason", pa.string()), ("data", pa.string()),
                                     ("date", pa.date32())]),
}

#: The columns a stored file holds for each kind, without the partition columns.
PARTITION_COLUMNS: Mapping[TableKind, tuple[str, ...]] = {
    TableKind.LOG: ("model", "date"),
    TableKind.LABELS: ("date",),
    TableKind.EVENTS: (),
    TableKind.LINEAGE: (),
    TableKind.QUARANTINE: ("date",),
}

#: Views derived from the raw tables, written once for every engine (DuckDB dialect).
LABELS_LATEST_SQL = latest_labels("labels_all")
EVENTS_LATEST_SQL = (
    "SELECT * EXCLUDE (_rn) FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY ingested_at DESC) AS _rn "
    "FROM events_all) WHERE _rn = 1"
)


# --------------------------------------------------------------------------------------------- helpers


def to_utc(value: datetime | date | str | None, *, name: str) -> datetime | None:
    """Parse a time bound given by a caller; raises ConfigError naming the parameter."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ConfigError(f"expected an ISO-8601 timestamp such as 2026-03-06T18:00:00Z, got {value!r}",
                          column=name) from None


def day_of(value: datetime) -> date:
    """The UTC day of a time."""
    return value.astimezone(UTC).date()


def days_of(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """UTC days since the epoch of a timestamp column, as int32 (vectorised)."""
    us = ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    arr = us.to_numpy() if isinstance(us, pa.Array) else us.combine_chunks().to_numpy()
    return np.floor_divide(arr, _DAY_US).astype(np.int32)


def day_text(day: int) -> str:
    """``YYYY-MM-DD`` of a day number since the epoch."""
    return (date(1970, 1, 1) + np.timedelta64(int(day), "D").astype(object)).isoformat()


def now_us() -> int:
    """The current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000


_ELIDE = [(re.compile(r", got '.*'$", re.S), ", got ..."), (re.compile(r" \(.*\)$", re.S), "")]


def summarise_reasons(reasons: pa.Array | pa.ChunkedArray, top: int = 10) -> tuple[tuple[str, int], ...]:
    """Count rejection reasons with the offending values elided, most common first."""
    if len(reasons) == 0:
        return ()
    vc = pc.value_counts(reasons)
    counts: collections.Counter[str] = collections.Counter()
    for item in vc.to_pylist():
        text = str(item["values"])
        for pat, repl in _ELIDE:
            text = pat.sub(repl, text)
        counts[text] += int(item["counts"])
    return tuple(counts.most_common(top))


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _normalise_type(t: pa.DataType) -> pa.DataType:
    """The type a column is stored with: one integer type, one float type, plain strings, UTC timestamps."""
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.float64()
    if _is_text(t) or pa.types.is_dictionary(t):
        return pa.string()
    if pa.types.is_timestamp(t):
        return TIMESTAMP
    return t


def _rows_json(table: pa.Table) -> list[str]:
    return [json.dumps(r, default=str) for r in table.to_pylist()]


def is_data_file(name: str) -> bool:
    """Whether a file name in the layout is a stored Parquet file (not staging, hidden or a manifest)."""
    return name.endswith(".parquet") and not name.startswith(("_", "."))


def is_manifest(name: str) -> bool:
    """Whether a file name in the layout is a compaction manifest (``_compact-<pid>-<uuid>.json``)."""
    return name.startswith("_compact-") and name.endswith(".json")


def live_files(files: Iterable[str], manifests: Iterable[tuple[str, str]]) -> list[str]:
    """The data files a reader should see, once the compaction manifests beside them are applied.

    A compaction writes a manifest (``{"new": merged file, "old": [its inputs]}``) into the
    folder, renames the merged file in, deletes the inputs and then the manifest. While the
    manifest is there and the merged file too, the inputs may still be listed: they are left out,
    so no row counts twice. ``manifests`` are (folder, manifest text) pairs, with folders spelt
    as in ``files``; an unreadable manifest (one not written by a compaction) is ignored.
    """
    live = set(files)
    for folder, text in manifests:
        try:
            m = json.loads(text)
            new, old = f"{folder}/{m['new']}", {f"{folder}/{o}" for o in m["old"]}
        except (ValueError, KeyError, TypeError):
            continue
        if new in live:
            live -= old
    return sorted(live)


_FNV_PRIME = np.uint64(0x100000001B3)


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of strings, vectorised with numpy (no query engine, so it is safe after a fork).

    A polynomial hash of the bytes (Horner form unrolled: byte ``i`` times ``P**(i+1)``, summed
    per string with a cumulative sum) mixed with the length, then splitmix64's finaliser.
    Nulls hash as empty strings. Equal strings always get equal hashes; the store confirms a
    hash hit against the stored ids, so a rare collision costs a look-up, never a wrong answer.
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    n = len(arr)
    if n == 0:
        return np.empty(0, np.uint64)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    base = int(offsets[0])
    data = data[base: int(offsets[-1])]
    starts = offsets[:-1] - base
    lengths = np.diff(offsets)
    with np.errstate(over="ignore"):
        longest = int(lengths.max()) if n else 0
        powers = np.cumprod(np.full(max(longest, 1), _FNV_PRIME, dtype=np.uint64))
        pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
        contrib = (data.astype(np.uint64) + np.uint64(1)) * powers[pos]
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(contrib, dtype=np.uint64)])
        h = sums[starts + lengths] - sums[starts]
        h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


class IdIndex:
    """Hashes of the request ids stored in each partition, for a fast "already stored?" check.

    Each partition keeps a sorted array of 64-bit hashes plus a few small sorted runs that are
    merged into it when they grow (an LSM in miniature), so a check costs O(batch * log n).
    A hash hit is only a candidate: the store confirms it against the stored ids. The least
    recently used partitions are forgotten beyond ``max_partitions``.
    """

    def __init__(self, max_partitions: int = 16) -> None:
        self._parts: collections.OrderedDict[Hashable, _Part] = collections.OrderedDict()
        self._max = max_partitions

    def part(self, key: Hashable) -> _Part:
        p = self._parts.get(key)
        if p is None:
            p = self._parts[key] = _Part()
            while len(self._parts) > self._max:
                self._parts.popitem(last=False)
        else:
            self._parts.move_to_end(key)
        return p

    def forget(self, key: Hashable | None = None) -> None:
        if key is None:
            self._parts.clear()
        else:
            self._parts.pop(key, None)


class _Part:
    def __init__(self) -> None:
        self.base = np.empty(0, np.uint64)
        self.runs: list[np.ndarray] = []
        self.seen: set[Hashable] = set()

    def add(self, hashes: np.ndarray, *, is_sorted: bool = False) -> None:
        if len(hashes) == 0:
            return
        self.runs.append(hashes if is_sorted else np.sort(hashes))
        small = sum(len(r) for r in self.runs)
        if len(self.runs) > 16 or small > max(len(self.base) // 4, 1 << 20):
            # Timsort ("stable") merges sorted runs in about linear time.
            self.base = np.sort(np.concatenate([self.base, *self.runs]), kind="stable")
            self.runs = []

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Which of ``hashes`` (sorted) are in the index."""
        out = np.zeros(len(hashes), dtype=bool)
        for arr in (self.base, *self.runs):
            if len(arr) == 0 or len(hashes) == 0 or hashes[-1] < arr[0] or hashes[0] > arr[-1]:
                continue
            idx = np.searchsorted(arr, hashes)
            idx[idx >= len(arr)] = len(arr) - 1
            out |= arr[idx] == hashes
        return out


@dataclass(frozen=True)
class _Prepared:
    """A validated log batch: good rows with their partition and input row numbers, and the rejects."""

    good: pa.Table  # includes ``model``
    days: np.ndarray  # int32 UTC day of each good row
    rows: np.ndarray  # int64 1-based input row of each good row
    rejected: pa.Table  # REJECTED_SCHEMA


# --------------------------------------------------------------------------------------------- the shared core


class StoreCore:
    """The logic every store shares; subclasses provide where rows are kept.

    Subclasses implement ``_bind`` (make the views visible to this thread's engine connection),
    ``_write`` (keep one batch of one kind in one partition), ``_id_chunks`` (stored request ids
    of a log partition not yet in the duplicate index), ``_confirm_ids``, ``_footprint`` and
    ``compact``.
    """

    _retries = 4

    def __init__(self, engine: Engine | None = None, *, threads: int | None = None,
                 own_engine: bool | None = None) -> None:
        self._engine: Engine = engine if engine is not None else DuckDBEngine(threads=threads)
        self._own_engine = engine is None if own_engine is None else own_engine
        self._write_lock = threading.RLock()
        self._pid = self._origin_pid = os.getpid()
        self._ids = IdIndex()
        self._log_types: dict[str, pa.DataType] | None = None
        self._label_types: dict[str, pa.DataType] | None = None
        self._last_ingest_us = 0

    def _after_fork(self) -> None:
        """In a forked child, drop locks a parent thread may have held at the fork."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._write_lock = threading.RLock()

    # ---- hooks
    @property
    def path(self) -> Path | None:
        """The store's folder, ``None`` for a memory store."""
        return None

    @property
    def location(self) -> str | None:
        """Where the store is: its folder or URL, ``None`` for a memory store."""
        return None if self.path is None else str(self.path)

    def _bind(self, kinds: Iterable[TableKind], *, model: str | None = None,
              lo: date | None = None, hi: date | None = None) -> None:
        raise NotImplementedError

    def _write(self, kind: TableKind, table: pa.Table, partition: Mapping[str, str]) -> str:
        raise NotImplementedError

    def _id_chunks(self, model: str, day: str, seen: set[Hashable]) -> list[tuple[Hashable, pa.Array]]:
        raise NotImplementedError

    def _confirm_ids(self, model: str, day: str, candidates: pa.Array) -> pa.Array:
        raise NotImplementedError

    def _footprint(self) -> tuple[int, int]:
        raise NotImplementedError

    def compact(self, model: str | None = None, date: str | date | None = None) -> int:
        """Merge each partition's files into one; returns how many files were merged."""
        raise NotImplementedError

    def _is_retryable(self, error: EngineError) -> bool:
        return False

    # ---- lifecycle
    def close(self) -> None:
        """Release the engine (when the store created it)."""
        if self._own_engine:
            self._engine.close()

    def __enter__(self) -> StoreCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The engine the store runs its queries on (DuckDB unless another was chosen)."""
        return self._engine

    # ---- querying
    def _run(self, sql: str, kinds: Iterable[TableKind], *, model: str | None = None,
             lo: date | None = None, hi: date | None = None) -> pa.Table:
        kinds = tuple(kinds)
        # An engine whose views are shared by threads (Spark's session) has a lock: bind and query under it.
        lock = getattr(self._engine, "lock", None)
        for attempt in range(self._retries + 4):
            try:
                with lock if lock is not None else contextlib.nullcontext():
                    self._bind(kinds, model=model, lo=lo, hi=hi)  # binding opens the files: inside the retry
                    return self._engine.query(sql)
            except EngineError as e:
                if attempt < self._retries + 3 and self._is_retryable(e):
                    time.sleep(0.01 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")

    def _bind_derived(self, kinds: Iterable[TableKind]) -> None:
        kinds = set(kinds)
        if TableKind.LABELS in kinds:
            self._engine.query(f"CREATE OR REPLACE TEMP VIEW labels AS {LABELS_LATEST_SQL}")
        if TableKind.EVENTS in kinds:
            self._engine.query(f"CREATE OR REPLACE TEMP VIEW events AS {EVENTS_LATEST_SQL}")

    def sql(self, query: str) -> pa.Table:
        """Run a query (DuckDB dialect) over the store's views.

        The views are ``log``, ``labels`` (latest label per request), ``labels_all``, ``events``,
        ``lineage`` and ``quarantine``; ``log`` has the partition columns ``model`` and ``date``.

        Raises
        ------
        EngineError
            When the query fails; the message starts with its first line.

        Examples
        --------
        >>> store = MemoryStore()
        >>> store.sql("SELECT count(*) AS n FROM log").column("n").to_pylist()
        [0]
        """
        return self._run(query, tuple(TableKind))

    def _log_schema(self, model: str | None = None) -> pa.Schema:
        where = "" if model is None else f" WHERE model = {quote_literal(model)}"
        return self._run(f"SELECT * FROM log{where} LIMIT 0", [TableKind.LOG], model=model).schema

    def _stored_schema(self, kind: TableKind) -> pa.Schema:
        """The union of the stored files' schemas of ``kind``, read without the query engine."""
        raise NotImplementedError

    def _stored_types(self, kind: TableKind) -> dict[str, pa.DataType]:
        # The write path stays off the query engine (DuckDB is not safe to use in a forked child).
        if kind is TableKind.LOG:
            if self._log_types is None:
                schema = self._stored_schema(kind)
                self._log_types = {f.name: f.type for f in schema if f.name not in ("date", "model")}
            return self._log_types
        if self._label_types is None:
            schema = self._stored_schema(kind)
            self._label_types = {f.name: f.type for f in schema
                                 if f.name not in ("date", "ingested_at", "request_id")}
        return self._label_types

    def status_has_rows(self, kind: TableKind) -> bool:
        """Whether any rows of ``kind`` are stored (cheap: looks for files, not rows)."""
        raise NotImplementedError

    # ---- the log
    def _prepare_log(self, table: pa.Table, *, source: str | None, config: ModelConfig | None) -> _Prepared:
        if "date" in table.column_names:
            if RENAMED_DATE_COLUMN in table.column_names:
                raise SchemaError(f"the store partitions by 'date', so a column 'date' is kept as "
                                  f"{RENAMED_DATE_COLUMN!r}; the table has both", path=source, column="date")
            table = table.rename_columns([RENAMED_DATE_COLUMN if c == "date" else c for c in table.column_names])
        expected = self._stored_types(TableKind.LOG)
        roles = dict(config.roles) if config is not None else {}
        checked = validate(table, DataKind.LOG, path=source, expected_types=expected, roles=roles)
        good, rejected = checked.good, checked.rejected
        n = table.num_rows
        if rejected.num_rows:
            keep = np.ones(n, dtype=bool)
            keep[rejected.column("row").to_numpy() - 1] = False
            rows = np.flatnonzero(keep).astype(np.int64) + 1
        else:
            rows = np.arange(1, n + 1, dtype=np.int64)
        default = config.name if config is not None and config.name else DEFAULT_MODEL
        if "model" in good.column_names:
            m = good.column("model")
            m = pc.if_else(pc.fill_null(pc.equal(m, ""), True), default, m)
            good = good.set_column(good.column_names.index("model"), "model", m)
        else:
            good = good.append_column("model", pa.repeat(pa.scalar(default), good.num_rows)
                                      if good.num_rows else pa.array([], pa.string()))
        good, bad_mask, why = self._conform(good, expected)
        if bad_mask is not None:
            idx = np.flatnonzero(bad_mask)
            extra = pa.table({"row": pa.array(rows[idx], pa.int64()), "reason": why.take(pa.array(idx)),
                              "data": _rows_json(table.take(pa.array(rows[idx] - 1)))}, schema=REJECTED_SCHEMA)
            rejected = pa.concat_tables([rejected, extra])
            good = good.filter(pa.array(~bad_mask))
            rows = rows[~bad_mask]
        return _Prepared(good, days_of(good.column("ts")) if good.num_rows else np.empty(0, np.int32),
                         rows, rejected)

    @staticmethod
    def _conform(good: pa.Table, expected: Mapping[str, pa.DataType]
                 ) -> tuple[pa.Table, np.ndarray | None, pa.Array]:
        """Give each column its stored type; rows whose value cannot take it are marked bad."""
        bad: np.ndarray | None = None
        why = pa.nulls(good.num_rows, pa.string())
        for i, name in enumerate(good.column_names):
            col = good.column(i)
            target = expected.get(name)
            if target is None:
                target = _normalise_type(col.type)
            if col.type == target:
                continue
            try:
                good = good.set_column(i, name, col.cast(target))
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                pass
            if _is_numeric(target) and _is_numeric(col.type):
                # e.g. 1.5 arriving in an integer column: the column widens to float64.
                good = good.set_column(i, name, col.cast(pa.float64()))
                continue
            mask = pc.is_valid(col).to_numpy(zero_copy_only=False)
            text = pc.utf8_slice_codeunits(col.cast(pa.string()), 0, 40) if not _is_text(col.type) else col
            reason = pc.binary_join_element_wise(f"{name}: expected {target} like the stored rows, got '",
                                                 text, "'", "")
            why = pc.if_else(pa.array(mask) if bad is None else pa.array(mask & ~bad),
                             reason.combine_chunks() if isinstance(reason, pa.ChunkedArray) else reason, why)
            bad = mask if bad is None else (bad | mask)
            good = good.set_column(i, name, pa.nulls(good.num_rows, target))
        return good, bad, why

    @staticmethod
    def _hash(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return hash_strings(ids)

    def _stored_duplicates(self, model: str, day: str, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Mask of ``ids`` (non-null, distinct) already stored in the partition; sorted hashes of the others."""
        part = self._ids.part((model, day))
        for token, chunk in self._id_chunks(model, day, part.seen):
            part.add(self._hash(chunk.drop_null()))
            part.seen.add(token)
        hashes = self._hash(ids)
        order = np.argsort(hashes)
        sorted_hashes = hashes[order]
        hit_sorted = part.contains(sorted_hashes)
        hit = np.zeros(len(hashes), dtype=bool)
        if hit_sorted.any():
            hit[order[hit_sorted]] = True
            cand = ids.filter(pa.array(hit))
            confirmed = self._confirm_ids(model, day, cand)
            hit &= pc.is_in(ids, value_set=confirmed).to_numpy(zero_copy_only=False)
            sorted_hashes = np.sort(hashes[~hit])
        return hit, sorted_hashes

    def append_log(self, table: pa.Table, *, source: str | None = None,
                   config: ModelConfig | None = None) -> AppendResult:
        """Validate prediction-log rows and store the good ones; the others go to quarantine.

        A row is quarantined (with the reason) for a missing or unparseable ``ts``, a value of
        the wrong type (``score`` not a number, a column whose stored type it cannot take),
        neither ``score`` nor ``prediction``, or a ``request_id`` seen earlier in the batch or
        already stored in the same ``model``/``date`` partition (ids are unique per model and
        UTC day; two processes appending the same id at the same moment are not detected).
        Rows without a ``model`` are stored under ``_default`` (or ``config.name``).

        Parameters
        ----------
        table
            The rows, with the contract's column names.
        source
            Where the rows came from (a file name), recorded with quarantined rows.
        config
            Role mappings and the model name of rows that name none.

        Raises
        ------
        SchemaError
            When the table lacks a required column (``ts``; ``score`` or ``prediction``).
        """
        self._after_fork()
        with self._write_lock:
            prep = self._prepare_log(table, source=source, config=config)
            return self._append_prepared(prep, source=source)

    def _append_prepared(self, prep: _Prepared, *, source: str | None) -> AppendResult:
        good, rejected = prep.good, prep.rejected
        groups = self._partitions(good, prep.days)
        keep = np.ones(good.num_rows, dtype=bool)
        dup_reasons: list[pa.Table] = []
        new_hashes: dict[tuple[str, str], tuple[pa.Array, np.ndarray]] = {}
        has_ids = "request_id" in good.column_names
        for (model, day), idx in groups:
            if not has_ids:
                continue
            ids_all = good.column("request_id").take(idx) if idx is not None else good.column("request_id")
            valid = pc.is_valid(ids_all)
            ids = ids_all.filter(valid)
            if isinstance(ids, pa.ChunkedArray):
                ids = ids.combine_chunks()
            dup, hashes = self._stored_duplicates(model, day, ids)
            if dup.any():
                pos = np.flatnonzero(valid.to_numpy(zero_copy_only=False))[dup]
                absolute = pos if idx is None else idx.to_numpy()[pos]
                keep[absolute] = False
                dup_ids = ids.filter(pa.array(dup))
                dup_reasons.append(pa.table({
                    "row": pa.array(prep.rows[absolute], pa.int64()),
                    "reason": pc.binary_join_element_wise(
                        "request_id: already stored for this model and day (", dup_ids, ")", ""),
                    "data": _rows_json(good.take(pa.array(absolute))),
                }, schema=REJECTED_SCHEMA))
            new_hashes[(model, day)] = (ids, hashes)
        if dup_reasons:
            rejected = pa.concat_tables([rejected, *dup_reasons])
            good = good.filter(pa.array(keep))
            groups = self._partitions(good, prep.days[keep])
        files: list[str] = []
        for (model, day), idx in groups:
            part = good if idx is None else good.take(idx)
            written = self._write(TableKind.LOG, part.drop_columns(["model"]), {"model": model, "date": day})
            files.append(written)
            if (model, day) in new_hashes:
                index = self._ids.part((model, day))
                index.add(new_hashes[(model, day)][1], is_sorted=True)
                index.seen.add(written)
        self._remember_types(TableKind.LOG, good)
        result = AppendResult(good.num_rows, 0, (), tuple(files))
        if rejected.num_rows:
            result = result + self._quarantine(rejected, kind=TableKind.LOG, source=source)
        return result

    @staticmethod
    def _partitions(good: pa.Table, days: np.ndarray) -> list[tuple[tuple[str, str], pa.Array | None]]:
        """Row indices of each (model, day) partition; ``None`` when one partition holds every row."""
        if good.num_rows == 0:
            return []
        models = good.column("model")
        if days.min() == days.max() and pc.count_distinct(models).as_py() == 1:
            return [((str(models[0].as_py()), day_text(int(days[0]))), None)]
        keys = pa.table({"model": models, "day": pa.array(days), "i": pa.array(np.arange(good.num_rows))})
        grouped = keys.group_by(["model", "day"], use_threads=False).aggregate([("i", "list")])
        out = []
        for model, day, idx in zip(grouped.column("model").to_pylist(), grouped.column("day").to_pylist(),
                                   grouped.column("i_list").chunks[0] if grouped.column("i_list").num_chunks == 1
                                   else grouped.column("i_list").combine_chunks(), strict=True):
            out.append(((str(model), day_text(int(day))), idx.values))
        return sorted(out, key=lambda kv: kv[0])

    def _remember_types(self, kind: TableKind, table: pa.Table) -> None:
        types = self._log_types if kind is TableKind.LOG else self._label_types
        if types is None:
            return
        for f in table.schema:
            if f.name not in types and f.name not in ("model", "date", "ingested_at"):
                types[f.name] = f.type

    def _ingest_stamp(self, n: int) -> pa.Array:
        """Strictly increasing ingestion times for ``n`` rows, so later rows win ties."""
        start = max(now_us(), self._last_ingest_us + 1)
        self._last_ingest_us = start + n - 1
        return pa.array(np.arange(start, start + n, dtype=np.int64)).cast(TIMESTAMP)

    def _quarantine(self, rejected: pa.Table, *, kind: TableKind, source: str | None) -> AppendResult:
        n = rejected.num_rows
        stamp = self._ingest_stamp(n)
        table = pa.table({
            "ingested_at": stamp,
            "kind": pa.repeat(pa.scalar(kind.value), n),
            "source": pa.array([source] * n, pa.string()),
            "row": rejected.column("row"),
            "reason": rejected.column("reason"),
            "data": rejected.column("data"),
        })
        day = day_text(int(days_of(stamp)[0]))
        self._write(TableKind.QUARANTINE, table, {"date": day})
        return AppendResult(0, n, summarise_reasons(rejected.column("reason")))

    # ---- labels
    def append_labels(self, table: pa.Table, *, source: str | None = None,
                      config: ModelConfig | None = None) -> AppendResult:
        """Store labels (``request_id``, ``label``, optional ``label_ts``); bad rows go to quarantine.

        Labels are stored under ``labels/date=<UTC day of ingestion>/`` with an ``ingested_at``
        column. A request may be labelled again, late or repeatedly: readers take the label
        with the latest ``label_ts``, then the latest ``ingested_at`` (a later row of the same
        batch counts as later).

        Raises
        ------
        SchemaError
            When ``request_id`` or ``label`` is missing.
        """
        self._after_fork()
        with self._write_lock:
            expected = self._stored_types(TableKind.LABELS)
            roles = dict(config.roles) if config is not None else {}
            checked = validate(table, DataKind.LABELS, path=source, expected_types=expected, roles=roles)
            good, _, _ = self._conform(checked.good.drop_columns(
                [c for c in ("date", "ingested_at") if c in checked.good.column_names]), expected)
            if "label_ts" not in good.column_names:
                good = good.append_column("label_ts", pa.nulls(good.num_rows, TIMESTAMP))
            files: tuple[str, ...] = ()
            if good.num_rows:
                stamp = self._ingest_stamp(good.num_rows)
                good = good.append_column("ingested_at", stamp)
                files = (self._write(TableKind.LABELS, good, {"date": day_text(int(days_of(stamp)[0]))}),)
                self._remember_types(TableKind.LABELS, good)
            result = AppendResult(good.num_rows, 0, (), files)
            if checked.rejected.num_rows:
                result = result + self._quarantine(checked.rejected, kind=TableKind.LABELS, source=source)
            return result

    # ---- events and lineage
    def add_events(self, events: Iterable[ChangeEvent]) -> AppendResult:
        """Store change events; an event whose ``id`` is stored again replaces the earlier one."""
        evs = list(events)
        if not evs:
            return AppendResult(0)
        self._after_fork()
        with self._write_lock:
            table = pa.table({
                "id": [e.id for e in evs],
                "ts": pa.array([e.ts for e in evs], TIMESTAMP),
                "kind": [e.kind for e in evs],
                "target": [e.target for e in evs],
                "description": [e.description for e in evs],
                "attributes": [json.dumps(dict(e.attributes)) for e in evs],
                "ingested_at": self._ingest_stamp(len(evs)),
            })
            return AppendResult(len(evs), 0, (), (self._write(TableKind.EVENTS, table, {}),))

    def events(self, since: datetime | str | None = None,
               until: datetime | str | None = None) -> tuple[ChangeEvent, ...]:
        """Change events with ``since <= ts < until``, one per id (the latest stored wins), by time."""
        lo, hi = to_utc(since, name="since"), to_utc(until, name="until")
        cond = []
        if lo is not None:
            cond.append(f"ts >= {_ts_literal(lo)}")
        if hi is not None:
            cond.append(f"ts < {_ts_literal(hi)}")
        where = f" WHERE {' AND '.join(cond)}" if cond else ""
        t = self._run(f"SELECT id, ts, kind, target, description, attributes FROM events{where} ORDER BY ts, id",
                      [TableKind.EVENTS])
        out = []
        for r in t.to_pylist():
            attrs = json.loads(r["attributes"] or "{}")
            out.append(ChangeEvent(id=r["id"], ts=r["ts"].astimezone(UTC), kind=r["kind"], target=r["target"] or "",
                                   description=r["description"] or "",
                                   attributes=tuple(sorted((str(k), str(v)) for k, v in attrs.items()))))
        return tuple(out)

    def add_lineage(self, lineage: Lineage) -> AppendResult:
        """Store lineage edges (merged with those already stored)."""
        if not lineage.edges:
            return AppendResult(0)
        self._after_fork()
        with self._write_lock:
            table = pa.table({"child": [c for c, _ in lineage.edges], "parent": [p for _, p in lineage.edges],
                              "ingested_at": self._ingest_stamp(len(lineage.edges))})
            return AppendResult(len(lineage.edges), 0, (), (self._write(TableKind.LINEAGE, table, {}),))

    def lineage(self) -> Lineage:
        """Every lineage edge stored, in the order first stored."""
        t = self._run("SELECT child, parent, min(ingested_at) AS first FROM lineage GROUP BY child, parent "
                      "ORDER BY first, child, parent", [TableKind.LINEAGE])
        return Lineage(tuple(zip(t.column("child").to_pylist(), t.column("parent").to_pylist(), strict=True)))

    # ---- files
    def ingest(self, path: str | Path, kind: TableKind | DataKind | str, *,
               config: ModelConfig | None = None) -> AppendResult:
        """Read a file and store its rows: a log, labels, change events or lineage.

        Parameters
        ----------
        path
            A Parquet file or folder, CSV or JSON Lines (log, labels); JSON Lines (events);
            JSON (lineage).
        kind
            ``log``, ``labels``, ``events`` or ``lineage`` (a :class:`TableKind`, a
            :class:`DataKind` or its name).
        config
            Role mappings for the columns and the model name of rows that name none.

        Raises
        ------
        ReadError
            When the file cannot be read (missing, truncated, not its format); nothing is stored.
        SchemaError
            When a required column is missing; nothing is stored.
        """
        which = TableKind.parse(kind)
        src = str(path)
        if which is TableKind.EVENTS:
            return self.add_events(read_events(path))
        if which is TableKind.LINEAGE:
            return self.add_lineage(read_lineage(path))
        table = read_table(path)
        if which is TableKind.LABELS:
            return self.append_labels(table, source=src, config=config)
        self._after_fork()
        with self._write_lock:
            prep = self._prepare_log(table, source=src, config=config)
            result = AppendResult(0)
            rejected_done = False
            for start in range(0, max(prep.good.num_rows, 1), INGEST_BATCH_ROWS):
                stop = start + INGEST_BATCH_ROWS
                part = _Prepared(prep.good.slice(start, INGEST_BATCH_ROWS), prep.days[start:stop],
                                 prep.rows[start:stop],
                                 prep.rejected if not rejected_done else REJECTED_SCHEMA.empty_table())
                rejected_done = True
                result = result + self._append_prepared(part, source=src)
            return result

    # ---- reading
    def _filters(self, *, model: str | None, version: str | None, lo: datetime | None, hi: datetime | None,
                 where: Mapping[str, str] | None, names: Sequence[str]) -> str:
        cond = []
        if model is not None:
            cond.append(f"model = {quote_literal(model)}")
        if version is not None:
            if "model_version" not in names:
                raise SchemaError("cannot select a version: the stored log has no model_version column",
                                  column="model_version")
            cond.append(f"model_version = {quote_literal(str(version))}")
        if lo is not None:
            cond.append(f"ts >= {_ts_literal(lo)}")
        if hi is not None:
            cond.append(f"ts < {_ts_literal(hi)}")
        for col, value in (where or {}).items():
            if col not in names:
                raise SchemaError(f"no such column to filter on; the stored log has {sorted(names)}", column=col)
            cond.append(f"CAST({quote_ident(col)} AS VARCHAR) = {quote_literal(str(value))}")
        return f" WHERE {' AND '.join(cond)}" if cond else ""

    def _log_select(self, *, model: str | None, version: str | None, since: datetime | str | None,
                    until: datetime | str | None, where: Mapping[str, str] | None,
                    columns: Sequence[str] | None) -> tuple[str, date | None, date | None, list[str]]:
        lo, hi = to_utc(since, name="since"), to_utc(until, name="until")
        names = [n for n in self._log_schema(model).names]
        shown = [n for n in names if n != "date"]
        lead = [c for c in ("request_id", "ts", "model", "model_version") if c in shown]
        shown = lead + [c for c in shown if c not in lead]
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise SchemaError(f"no such columns {missing}; the stored log has {sorted(shown)}",
                                  column=missing[0])
            shown = list(dict.fromkeys(columns))
        cols = ", ".join(quote_ident(c) for c in shown)
        filt = self._filters(model=model, version=version, lo=lo, hi=hi, where=where, names=names)
        order = " ORDER BY ts" + (", request_id" if "request_id" in names else "") if "ts" in names else ""
        sql = f"SELECT {cols} FROM log{filt}{order}"
        return sql, (None if lo is None else day_of(lo)), (None if hi is None else day_of(hi)), shown

    def read_log(self, *, model: str | None = None, version: str | None = None,
                 since: datetime | str | None = None, until: datetime | str | None = None,
                 where: Mapping[str, str] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Log rows of one model, version, time window and segment, ordered by ``ts``.

        Only the partitions that can hold matching rows are read (``model`` and the UTC days
        from ``since`` to ``until``).

        Parameters
        ----------
        model, version
            Keep rows of this model / ``model_version``.
        since, until
            Keep rows with ``since <= ts < until`` (ISO-8601 text or aware datetimes).
        where
            Segment equality, e.g. ``{"region": "EU"}`` (values compared as text).
        columns
            Return only these columns (default: all but the ``date`` partition column).

        Raises
        ------
        SchemaError
            When a column named in ``where``/``columns`` (or ``model_version``) is not stored.
        """
        sql, lo, hi, _ = self._log_select(model=model, version=version, since=since, until=until, where=where,
                                          columns=columns)
        return self._run(sql, [TableKind.LOG], model=model, lo=lo, hi=hi)

    def read_log_with_labels(self, *, model: str | None = None, version: str | None = None,
                             since: datetime | str | None = None, until: datetime | str | None = None,
                             where: Mapping[str, str] | None = None,
                             columns: Sequence[str] | None = None) -> pa.Table:
        """:meth:`read_log` with the latest ``label`` and ``label_ts`` of each request (null when unlabelled).

        Raises
        ------
        SchemaError
            When the stored log has no ``request_id`` to join labels on.
        """
        sql, lo, hi, shown = self._log_select(model=model, version=version, since=since, until=until,
                                              where=where, columns=columns)
        if "request_id" not in self._log_schema(model).names:
            raise SchemaError("cannot join labels: the stored log has no request_id column", column="request_id")
        inner = [c for c in shown if c not in ("label", "label_ts")]
        need_id = "request_id" not in inner
        cols = inner + (["request_id"] if need_id else [])
        body = sql.replace(f"SELECT {', '.join(quote_ident(c) for c in shown)} FROM log",
                           f"SELECT {', '.join(quote_ident(c) for c in cols)} FROM log", 1)
        body = body.split(" ORDER BY ")[0]
        outer = ", ".join(f"l.{quote_ident(c)}" for c in inner)
        order = " ORDER BY l.ts, l.request_id" if "ts" in inner else ""
        query = (f"SELECT {outer}, b.label, b.label_ts FROM ({body}) AS l "
                 f"LEFT JOIN labels AS b ON l.request_id = b.request_id{order}")
        return self._run(query, [TableKind.LOG, TableKind.LABELS], model=model, lo=lo, hi=hi)

    def status(self) -> StoreStatus:
        """Count what the store holds, per model and in all."""
        names = self._log_schema().names
        has_id, has_ver = "request_id" in names, "model_version" in names
        # Sorted in Python: Spark's collect_list has no ORDER BY.
        versions = ("list(DISTINCT model_version) FILTER (WHERE model_version IS NOT NULL)"
                    if has_ver else "[]::VARCHAR[]")
        last = "arg_max(l.request_id, l.ts)" if has_id else "NULL::VARCHAR"
        labelled = "count(b.request_id)" if has_id else "0"
        join = " LEFT JOIN labels AS b ON l.request_id = b.request_id" if has_id else ""
        per_model = self._run(
            f"SELECT l.model AS model, {versions} AS versions, count(*) AS n, min(l.ts) AS first_ts, "
            f"max(l.ts) AS last_ts, {last} AS last_id, {labelled} AS labelled "
            f"FROM log AS l{join} GROUP BY l.model ORDER BY l.model",
            [TableKind.LOG, TableKind.LABELS])
        totals = self._run(
            "SELECT (SELECT count(*) FROM quarantine) AS q, (SELECT count(*) FROM events) AS e, "
            "(SELECT count(*) FROM labels) AS lb", [TableKind.QUARANTINE, TableKind.EVENTS, TableKind.LABELS])
        models = []
        for r in per_model.to_pylist():
            n = int(r["n"])
            models.append(ModelStatus(
                name=str(r["model"]), versions=tuple(sorted(str(v) for v in (r["versions"] or []))), rows=n,
                first_ts=r["first_ts"], last_ts=r["last_ts"], last_request_id=r["last_id"],
                labelled_fraction=(int(r["labelled"]) / n) if n else 0.0))
        t = totals.to_pylist()[0]
        files, nbytes = self._footprint()
        return StoreStatus(path=self.location, models=tuple(models),
                           labels=int(t["lb"]), quarantined=int(t["q"]), events=int(t["e"]), files=files,
                           bytes=nbytes)

    def schema(self, model: str | None = None) -> LogSchema:
        """The stored log's columns with their roles and types.

        A string or boolean metadata column is a segment when it has at most
        ``MAX_SEGMENT_CARDINALITY`` distinct values and fewer than half as many as rows, counted
        exactly by the engine over all stored rows (of ``model``, when given). The partition
        column ``date`` is left out.
        """
        arrow = self._log_schema(model)
        fields = [f for f in arrow if f.name != "date"]
        cands = [f.name for f in fields if role_of(f.name) is Role.METADATA and f.name != "model"
                 and (_is_text(f.type) or pa.types.is_boolean(f.type))]
        segments: list[str] = []
        if cands:
            where = "" if model is None else f" WHERE model = {quote_literal(model)}"
            counts = ", ".join(f"count(DISTINCT {quote_ident(c)}) AS {quote_ident('nd:' + c)}" for c in cands)
            row = self._run(f"SELECT count(*) AS n, {counts} FROM log{where}", [TableKind.LOG],
                            model=model).to_pylist()[0]
            n = int(row["n"])
            segments = [c for c in cands
                        if 0 < int(row["nd:" + c]) <= MAX_SEGMENT_CARDINALITY and int(row["nd:" + c]) * 2 <= max(n, 2)]
        return infer_schema(pa.schema(fields), segments=segments)


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ {quote_literal(value.astimezone(UTC).isoformat())}"

