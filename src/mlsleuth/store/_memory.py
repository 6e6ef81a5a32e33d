"""A store that keeps its tables in memory: the same behaviour as the local store, for tests and notebooks."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable, Iterable, Mapping
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.store._core import EMPTY_SCHEMAS, PARTITION_COLUMNS, StoreCore, TableKind
from mlsleuth.store._engine import Engine

__all__ = ["MemoryStore"]

_VIEWS = {
    TableKind.LOG: "log",
    TableKind.LABELS: "labels_all",
    TableKind.EVENTS: "events_all",
    TableKind.LINEAGE: "lineage",
    TableKind.QUARANTINE: "quarantine",
}


class _Chunk:
    __slots__ = ("name", "partition", "table")

    def __init__(self, name: str, partition: Mapping[str, str], table: pa.Table) -> None:
        self.name = name
        self.partition = dict(partition)
        self.table = table


class MemoryStore(StoreCore):
    """A store held in memory: every method of :class:`LocalStore`, nothing on disk.

    Validation, quarantine, duplicate checks, label precedence and every query are the
    same code as the local store's; only where the rows live differs.

    Examples
    --------
    >>> import pyarrow as pa
    >>> store = MemoryStore()
    >>> store.append_log(pa.table({"ts": ["2026-03-06T18:00:00Z", "oops"], "score": [0.2, 0.3]})).quarantined
    1
    """

    def __init__(self, *, engine: Engine | None = None, threads: int | None = None) -> None:
        super().__init__(engine, threads=threads)
        self._chunks: dict[TableKind, list[_Chunk]] = {k: [] for k in TableKind}
        self._views: dict[TableKind, pa.Table] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def __enter__(self) -> MemoryStore:
        return self

    def __repr__(self) -> str:
        return f"MemoryStore(rows={sum(c.table.num_rows for c in self._chunks[TableKind.LOG])})"

    def _write(self, kind: TableKind, table: pa.Table, partition: Mapping[str, str]) -> str:
        name = f"{kind.value}/chunk-{next(self._counter)}"
        with self._lock:
            self._chunks[kind].append(_Chunk(name, partition, table))
            self._views.pop(kind, None)
        return name

    def _view(self, kind: TableKind) -> pa.Table:
        with self._lock:
            cached = self._views.get(kind)
            if cached is not None:
                return cached
            chunks = list(self._chunks[kind])
            if not chunks:
                out = EMPTY_SCHEMAS[kind].empty_table()
            else:
                parts = []
                for c in chunks:
                    t = c.table
                    for key in PARTITION_COLUMNS[kind]:
                        value = pa.scalar(c.partition[key])
                        col = pa.repeat(value, t.num_rows) if t.num_rows else pa.array([], pa.string())
                        t = t.append_column(key, col.cast(pa.date32()) if key == "date" else col)
                    parts.append(t)
                out = pa.concat_tables(parts, promote_options="permissive")
            self._views[kind] = out
            return out

    def _bind(self, kinds: Iterable[TableKind], *, model: str | None = None,
              lo: date | None = None, hi: date | None = None) -> None:
        kinds = tuple(kinds)
        for kind in kinds:
            self._engine.register(_VIEWS[kind], self._view(kind))
        self._bind_derived(kinds)

    def _stored_schema(self, kind: TableKind) -> pa.Schema:
        return self._view(kind).schema if self._chunks[kind] else pa.schema([])

    def status_has_rows(self, kind: TableKind) -> bool:
        """Whether any rows of ``kind`` are held."""
        return bool(self._chunks[kind])

    def _log_chunks(self, model: str, day: str) -> list[_Chunk]:
        with self._lock:
            return [c for c in self._chunks[TableKind.LOG]
                    if c.partition["model"] == model and c.partition["date"] == day]

    def _id_chunks(self, model: str, day: str, seen: set[Hashable]) -> list[tuple[Hashable, pa.Array]]:
        return [(c.name, c.table.column("request_id").combine_chunks()) for c in self._log_chunks(model, day)
                if c.name not in seen and "request_id" in c.table.column_names]

    def _confirm_ids(self, model: str, day: str, candidates: pa.Array) -> pa.Array:
        found = []
        for c in self._log_chunks(model, day):
            if "request_id" in c.table.column_names:
                ids = c.table.column("request_id").combine_chunks()
                found.append(ids.filter(pc.is_in(ids, value_set=candidates)))
        return pa.concat_arrays(found) if found else pa.array([], pa.string())

    def _footprint(self) -> tuple[int, int]:
        with self._lock:
            chunks = [c for k in TableKind for c in self._chunks[k]]
        return len(chunks), sum(c.table.nbytes for c in chunks)

    def compact(self, model: str | None = None, date: str | date | None = None) -> int:
        """Merge each partition's chunks into one; returns how many chunks were merged."""
        day = None if date is None else (date if isinstance(date, str) else date.isoformat())
        merged = 0
        self._after_fork()
        with self._write_lock, self._lock:
            for kind in TableKind:
                if model is not None and kind is not TableKind.LOG:
                    continue
                groups: dict[tuple[tuple[str, str], ...], list[_Chunk]] = {}
                for c in self._chunks[kind]:
                    if model is not None and c.partition.get("model") != model:
                        groups.setdefault((("_keep", c.name),), []).append(c)
                        continue
                    if day is not None and c.partition.get("date", day) != day:
                        groups.setdefault((("_keep", c.name),), []).append(c)
                        continue
                    groups.setdefault(tuple(sorted(c.partition.items())), []).append(c)
                out = []
                for key, chunks in groups.items():
                    if len(chunks) < 2:
                        out.extend(chunks)
                        continue
                    table = pa.concat_tables([c.table for c in chunks], promote_options="permissive")
                    sort_key = "ts" if kind is TableKind.LOG else "ingested_at"
                    if sort_key in table.column_names:
                        table = table.sort_by([(sort_key, "ascending")])
                    out.append(_Chunk(f"{kind.value}/chunk-{next(self._counter)}", dict(key), table))
                    merged += len(chunks)
                self._chunks[kind] = out
                self._views.pop(kind, None)
            self._ids.forget()
        return merged
