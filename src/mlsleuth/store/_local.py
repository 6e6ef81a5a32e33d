"""The embedded default store: one folder of hive-partitioned Parquet, plus a DuckDB catalog of views.

Layout of a store folder (every engine reads it as it is: DuckDB, Spark, Trino, pyarrow)::

    mlsleuth.toml                         marker and settings
    catalog.duckdb                        views over the Parquet below, for `duckdb catalog.duckdb`
    log/model=<name>/date=YYYY-MM-DD/part-<uuid>.parquet
    labels/date=YYYY-MM-DD/part-<uuid>.parquet      (date of ingestion)
    quarantine/date=YYYY-MM-DD/part-<uuid>.parquet  (date of ingestion)
    events/part-<uuid>.parquet
    lineage/part-<uuid>.parquet
    _staging/                             files being written (outside every read glob)

Partition columns live in the path only, never in the files (Spark refuses a column that is
in both). Model names are percent-encoded in the path (``a/b`` becomes ``model=a%2Fb``), as
Hive, Spark, DuckDB and pyarrow decode them. Read partition values as text (DuckDB:
``hive_types={'model': VARCHAR, 'date': DATE}``; Spark:
``spark.sql.sources.partitionColumnTypeInference.enabled=false``), or a model named ``123``
becomes a number.

``catalog.duckdb`` holds views whose paths are absolute: DuckDB resolves a relative path
against the working directory of the process that queries, so relative views fail as soon as
a user runs ``duckdb store/catalog.duckdb`` from another folder. When the store is opened from
a new location (it was moved or copied), the views are rewritten. The catalog is written only
when a table kind first appears, and closed at once; this store never keeps it open.

Writes are atomic: a file is written in ``_staging/`` and renamed into its partition, so a
reader (or a crash) never sees part of a file. A batch that spans several partitions is one
file per partition, so a crash may leave some of those files stored, never part of one.

Compaction writes the merged file, records which files it replaces in a
``_compact-<pid>-<uuid>.json`` manifest beside them, renames the merged file in, deletes the
old ones and then the manifest. This store's readers take a stable listing (two equal
listings in a row) and apply the manifests, so they never count a row twice nor miss one.
Other engines reading the glob during a compaction may, for a moment, see both copies;
compact when nothing else reads. ``open`` finishes or undoes the work of a compactor that died.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
import urllib.parse
import uuid
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlsleuth.errors import ConfigError, EngineError, StoreError, StoreNotFoundError
from mlsleuth.store._choice import EngineChoice, EngineKind
from mlsleuth.store._core import (
    EMPTY_SCHEMAS,
    EVENTS_LATEST_SQL,
    LABELS_LATEST_SQL,
    PARTITION_COLUMNS,
    StoreCore,
    TableKind,
    is_data_file,
    is_manifest,
    live_files,
)
from mlsleuth.store._engine import Engine, quote_literal

__all__ = ["LocalStore", "StoreSettings"]

MARKER = "mlsleuth.toml"
CATALOG = "catalog.duckdb"
_CATALOG_STATE = "_catalog.json"
_STAGING = "_staging"
_FORMAT = 1
_DIRS: Mapping[TableKind, str] = {
    TableKind.LOG: "log",
    TableKind.LABELS: "labels",
    TableKind.EVENTS: "events",
    TableKind.LINEAGE: "lineage",
    TableKind.QUARANTINE: "quarantine",
}
_VIEWS: Mapping[TableKind, str] = {
    TableKind.LOG: "log",
    TableKind.LABELS: "labels_all",
    TableKind.EVENTS: "events_all",
    TableKind.LINEAGE: "lineage",
    TableKind.QUARANTINE: "quarantine",
}
_COMPRESSIONS = ("zstd", "snappy", "lz4", "gzip", "brotli", "none")


@dataclass(frozen=True)
class StoreSettings:
    """Settings of a local store, kept in its ``mlsleuth.toml``.

    Appends favour speed and compaction favours size: on 30-column batches of 100k rows
    (bench/bench_store.py, best of 3 on a shared 2-core machine) ``snappy`` appended about
    790k rows/s at 144 bytes/row and ``zstd`` level 1 about 580k rows/s at 117 bytes/row;
    compaction with ``zstd`` level 3 brings the files to 115 bytes/row. So appends use
    ``snappy`` and compaction rewrites the data with ``zstd``.

    Parameters
    ----------
    compression
        Parquet compression of appended files.
    compression_level
        The codec's level for appended files (``None``: its default; snappy has none).
    compact_compression
        Parquet compression of the files compaction writes.
    compact_compression_level
        The codec's level for compacted files.
    fsync
        Flush each file to disk before renaming it in, so a power cut cannot leave an empty file.
    engine
        The engine that runs the store's queries when neither ``--engine`` nor
        ``$MLSLEUTH_ENGINE`` names one (``None``: DuckDB).
    spark_master
        The Spark master URL when the engine is Spark (``None``: the active session's, else ``local[2]``).
    spark_conf
        More Spark settings, ``(key, value)`` pairs (``[store.spark_conf]`` in the TOML).
    """

    compression: str = "snappy"
    compression_level: int | None = None
    compact_compression: str = "zstd"
    compact_compression_level: int | None = 3
    fsync: bool = True
    engine: EngineKind | None = None
    spark_master: str | None = None
    spark_conf: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for key in ("compression", "compact_compression"):
            value = getattr(self, key)
            if value not in _COMPRESSIONS:
                raise ConfigError(f"expected one of {list(_COMPRESSIONS)}, got {value!r}", column=key)

    def to_toml(self) -> str:
        """The ``[store]`` table of ``mlsleuth.toml``."""
        lines = [f'compression = "{self.compression}"']
        if self.compression_level is not None:
            lines.append(f"compression_level = {int(self.compression_level)}")
        lines.append(f'compact_compression = "{self.compact_compression}"')
        if self.compact_compression_level is not None:
            lines.append(f"compact_compression_level = {int(self.compact_compression_level)}")
        lines.append(f"fsync = {'true' if self.fsync else 'false'}")
        if self.engine is not None:
            lines.append(f'engine = "{self.engine.value}"')
        if self.spark_master is not None:
            lines.append(f"spark_master = {json.dumps(self.spark_master)}")
        if self.spark_conf:
            lines.append("\n[store.spark_conf]")
            lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in self.spark_conf]
        return "\n".join(lines) + "\n"

    def engine_choice(self, engine: EngineKind | str | None = None, *, spark_master: str | None = None,
                      threads: int | None = None, environ: Mapping[str, str] | None = None) -> EngineChoice:
        """The engine to run on: ``engine`` (a flag), else ``$MLSLEUTH_ENGINE``, else this config's."""
        return EngineChoice.resolve(engine, spark_master=spark_master, configured=self.engine,
                                    configured_master=self.spark_master, spark_conf=dict(self.spark_conf),
                                    threads=threads, environ=environ)


def _encode(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(name: str) -> int | None:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


class LocalStore(StoreCore):
    """The embedded store: a folder of hive-partitioned Parquet, queried with DuckDB.

    Create one with :meth:`init`, open one with :meth:`open`. Several threads may append and
    read at once; several processes may read while one appends. The store never keeps a
    ``.duckdb`` file open: queries run on an in-memory DuckDB over the Parquet files.

    Examples
    --------
    >>> import tempfile, pyarrow as pa
    >>> folder = tempfile.mkdtemp()
    >>> with LocalStore.init(folder) as store:
    ...     r = store.append_log(pa.table({"request_id": ["a", "b"], "ts": ["2026-03-06T18:00:00Z"] * 2,
    ...                                    "model": ["fraud"] * 2, "score": [0.1, 0.9]}))
    ...     (r.accepted, store.read_log(model="fraud").num_rows)
    (2, 2)
    """

    def __init__(self, path: str | Path, settings: StoreSettings | None = None, *,
                 engine: Engine | EngineKind | str | None = None, threads: int | None = None,
                 spark_master: str | None = None) -> None:
        root = Path(path).absolute()
        if not (root / MARKER).is_file():
            raise StoreNotFoundError(f"{root}: no mlsleuth store here (no {MARKER}); "
                                     f"create one with `mlsleuth init {path}`")
        self._root = root
        self.settings = settings if settings is not None else _read_settings(root / MARKER)
        if engine is None or isinstance(engine, EngineKind | str):
            # DuckDB may read the data folders only: not the config, the profiles or anything outside the store.
            chosen = self.settings.engine_choice(engine, spark_master=spark_master, threads=threads).make(
                allowed_directories=data_dirs(root))
            super().__init__(chosen, own_engine=True)
        else:
            super().__init__(engine, own_engine=False)
        self._catalog_kinds: set[TableKind] | None = None
        self._recover()
        self._refresh_catalog()

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def init(cls, path: str | Path, *, settings: StoreSettings | None = None, threads: int | None = None,
             engine: Engine | EngineKind | str | None = None, spark_master: str | None = None) -> LocalStore:
        """Create a store in ``path`` (made if missing) and open it; an existing store is opened as it is.

        ``engine`` and ``spark_master`` are as in :meth:`open`.

        Raises
        ------
        StoreError
            When the folder cannot be created or written.
        """
        root = Path(path).absolute()
        marker = root / MARKER
        if not marker.is_file():
            s = settings or StoreSettings()
            try:
                root.mkdir(parents=True, exist_ok=True)
                for d in (*_DIRS.values(), _STAGING):
                    (root / d).mkdir(exist_ok=True)
                created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
                text = (
                    "# An mlsleuth store: hive-partitioned Parquet under log/, labels/, events/, lineage/,\n"
                    "# quarantine/; catalog.duckdb has views over it: duckdb catalog.duckdb -c 'FROM log LIMIT 5'\n"
                    f"format = {_FORMAT}\ncreated = \"{created}\"\n\n[store]\n{s.to_toml()}"
                )
                _atomic_text(marker, text, root / _STAGING)
            except OSError as e:
                raise StoreError(f"{root}: cannot create a store here: {e}") from e
        return cls(root, threads=threads, engine=engine, spark_master=spark_master)

    @classmethod
    def open(cls, path: str | Path, *, engine: Engine | EngineKind | str | None = None, threads: int | None = None,
             spark_master: str | None = None) -> LocalStore:
        """Open the store in ``path``.

        Leftovers of a writer that crashed (files in ``_staging/``, an unfinished compaction)
        are cleaned up first.

        Parameters
        ----------
        path
            The store's folder.
        engine
            What runs the queries: an :class:`~mlsleuth.store.Engine` (shared, not closed by the
            store), ``"duckdb"``, ``"spark"``, or ``None`` for ``$MLSLEUTH_ENGINE``, else the
            ``engine`` of the store's ``mlsleuth.toml``, else DuckDB.
        threads
            DuckDB threads per query.
        spark_master
            With Spark: the master URL (else ``$MLSLEUTH_SPARK_MASTER``, else the config's
            ``spark_master``, else the active session's or ``local[2]``).

        Raises
        ------
        StoreNotFoundError
            When ``path`` holds no store (run ``mlsleuth init PATH``).
        ConfigError
            When the engine named is unknown, or Spark is asked for without PySpark.
        EngineError
            When Spark cannot start.
        """
        return cls(path, engine=engine, threads=threads, spark_master=spark_master)

    def __enter__(self) -> LocalStore:
        return self

    @property
    def path(self) -> Path:
        """The store's folder (absolute)."""
        return self._root

    def __repr__(self) -> str:
        return f"LocalStore({str(self._root)!r})"

    # ---------------------------------------------------------------- writing
    def _write(self, kind: TableKind, table: pa.Table, partition: Mapping[str, str]) -> str:
        d = self._root / _DIRS[kind]
        for key in PARTITION_COLUMNS[kind]:
            d = d / f"{key}={_encode(partition[key])}"
        tmp = self._staging_file(".parquet")
        final = d / f"part-{uuid.uuid4().hex}.parquet"
        try:
            self._write_parquet(table, tmp)
            d.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"{final}: cannot write: {e}") from e
        if self._catalog_kinds is not None and kind not in self._catalog_kinds and os.getpid() == self._origin_pid:
            self._refresh_catalog()  # not in a forked child: DuckDB is not fork-safe; the next open does it
        return final.relative_to(self._root).as_posix()

    def _staging_file(self, suffix: str) -> Path:
        staging = self._root / _STAGING
        staging.mkdir(exist_ok=True)
        return staging / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}"

    def _write_parquet(self, table: pa.Table, path: Path, *, compacting: bool = False) -> None:
        s = self.settings
        codec, level = (s.compact_compression, s.compact_compression_level) if compacting \
            else (s.compression, s.compression_level)
        # Dictionary-encode text only: on float columns it costs half the write time for nothing.
        strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, path, compression=codec,
                       compression_level=level if codec in ("zstd", "gzip", "brotli") else None,
                       use_dictionary=strings if strings else False)
        if s.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # ---------------------------------------------------------------- listing files
    def files(self, kind: TableKind | str, *, model: str | None = None, lo: date | None = None,
              hi: date | None = None) -> list[Path]:
        """The live Parquet files of one table, for an engine to scan where they lie.

        A consistent listing with finished compactions applied: each row is in exactly one file.

        Parameters
        ----------
        kind
            The table: ``log``, ``labels``, ``events``, ``lineage`` or ``quarantine``.
        model
            Only this model's log files (all models' when None).
        lo, hi
            Only the log's partitions of these UTC days, both included (open when None). Labels are
            joined by request id whatever the day, so all of theirs are listed.

        Raises
        ------
        ConfigError
            When ``kind`` names no table.
        StoreError
            When the files kept changing (a compaction racing the listing); try again.
        """
        try:
            table = TableKind(kind.value if isinstance(kind, TableKind) else str(kind).strip().lower())
        except ValueError:
            raise ConfigError(f"a store has the tables {[k.value for k in TableKind]}; got {kind!r}") from None
        return self._files(self._leaf_dirs(table, model=model, lo=lo, hi=hi))

    def log_models(self) -> list[str]:
        """The models whose logs the store holds a partition of, sorted (a listing: no file is read)."""
        base = self._root / _DIRS[TableKind.LOG]
        return sorted(urllib.parse.unquote(p.name[len("model="):]) for p in _subdirs(base)
                      if p.name.startswith("model="))

    def _leaf_dirs(self, kind: TableKind, *, model: str | None = None, lo: date | None = None,
                   hi: date | None = None) -> list[Path]:
        base = self._root / _DIRS[kind]
        if kind in (TableKind.EVENTS, TableKind.LINEAGE):
            return [base]
        if kind is TableKind.LOG:
            if model is not None:
                parents = [base / f"model={_encode(model)}"]
            else:
                parents = sorted(p for p in _subdirs(base) if p.name.startswith("model="))
        else:
            parents = [base]
            lo = hi = None  # labels are joined by request id: every day counts
        lo_s, hi_s = (None if lo is None else lo.isoformat()), (None if hi is None else hi.isoformat())
        out = []
        for parent in parents:
            for d in _subdirs(parent):
                if not d.name.startswith("date="):
                    continue
                day = d.name[5:]
                if (lo_s is None or day >= lo_s) and (hi_s is None or day <= hi_s):
                    out.append(d)
        return sorted(out)

    def _files(self, dirs: Iterable[Path]) -> list[Path]:
        """A consistent listing of the data files in ``dirs``, with compactions applied."""
        dirs = list(dirs)
        for _ in range(10):
            prev = _listing(dirs)
            for _ in range(5):
                cur = _listing(dirs)
                if cur == prev:
                    break
                prev = cur
            files, manifests = cur
            try:
                texts = [(str(m.parent), m.read_text(encoding="utf-8")) for m in manifests]
            except FileNotFoundError:
                continue  # a compaction finished meanwhile: list again
            return [Path(f) for f in live_files(map(str, files), texts)]
        raise StoreError(f"{self._root}: the files kept changing while listing them; try again")

    def _bind(self, kinds: Iterable[TableKind], *, model: str | None = None,
              lo: date | None = None, hi: date | None = None) -> None:
        kinds = tuple(kinds)
        for kind in kinds:
            files = self._files(self._leaf_dirs(kind, model=model, lo=lo, hi=hi))
            if files:
                self._engine.register(_VIEWS[kind], [str(f) for f in files])
            else:
                self._engine.register(_VIEWS[kind], EMPTY_SCHEMAS[kind].empty_table())
        self._bind_derived(kinds)

    def _is_retryable(self, error: EngineError) -> bool:
        return isinstance(error.__cause__, duckdb.IOException)

    def _stored_schema(self, kind: TableKind) -> pa.Schema:
        files = self._files(self._leaf_dirs(kind))
        if not files:
            return pa.schema([])
        try:
            return pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
            raise StoreError(f"{self._root / _DIRS[kind]}: cannot read the stored files' schemas: {e}") from e

    def status_has_rows(self, kind: TableKind) -> bool:
        """Whether any file of ``kind`` is stored."""
        return any(is_data_file(n) for _, _, names in os.walk(self._root / _DIRS[kind]) for n in names)

    # ---------------------------------------------------------------- duplicate index
    def _id_chunks(self, model: str, day: str, seen: set[Hashable]) -> list[tuple[Hashable, pa.Array]]:
        d = self._root / "log" / f"model={_encode(model)}" / f"date={day}"
        out: list[tuple[Hashable, pa.Array]] = []
        for f in self._files([d]):
            token = f.relative_to(self._root).as_posix()
            if token in seen:
                continue
            ids = _read_ids(f)
            if ids is not None:
                out.append((token, ids))
        return out

    def _confirm_ids(self, model: str, day: str, candidates: pa.Array) -> pa.Array:
        d = self._root / "log" / f"model={_encode(model)}" / f"date={day}"
        found = []
        for f in self._files([d]):
            ids = _read_ids(f)
            if ids is not None:
                found.append(ids.filter(pc.is_in(ids, value_set=candidates)))
        return pa.concat_arrays(found) if found else pa.array([], pa.string())

    # ---------------------------------------------------------------- maintenance
    def _footprint(self) -> tuple[int, int]:
        files = nbytes = 0
        for dirpath, _, names in os.walk(self._root):
            inside_data = Path(dirpath).relative_to(self._root).parts[:1] in [(d,) for d in _DIRS.values()]
            for n in names:
                with contextlib.suppress(OSError):
                    nbytes += (Path(dirpath) / n).stat().st_size
                if inside_data and is_data_file(n):
                    files += 1
        return files, nbytes

    def compact(self, model: str | None = None, date: str | date | None = None) -> int:
        """Merge the files of each partition into one file (log rows sorted by ``ts``).

        Parameters
        ----------
        model
            Compact only this model's log partitions (labels, events and the rest are
            compacted only when no model is given).
        date
            Compact only this UTC day's partitions.

        Returns
        -------
        int
            How many files were merged (0 when every partition already has one file).
        """
        day = None if date is None else (date if isinstance(date, str) else date.isoformat())
        lo = hi = None if day is None else _parse_day(day)
        self._after_fork()
        with self._write_lock:
            self._recover()
            dirs = [(TableKind.LOG, d) for d in self._leaf_dirs(TableKind.LOG, model=model, lo=lo, hi=hi)]
            if model is None:
                for kind in (TableKind.LABELS, TableKind.QUARANTINE):
                    dirs += [(kind, d) for d in self._leaf_dirs(kind)
                             if day is None or d.name == f"date={day}"]
                if day is None:
                    dirs += [(TableKind.EVENTS, self._root / "events"), (TableKind.LINEAGE, self._root / "lineage")]
            return sum(self._compact_dir(kind, d) for kind, d in dirs)

    def _compact_dir(self, kind: TableKind, d: Path) -> int:
        files = self._files([d])
        if len(files) < 2:
            return 0
        try:
            table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
            raise StoreError(f"{d}: cannot merge its files: {e}") from e
        sort_key = "ts" if kind is TableKind.LOG else "ingested_at"
        if sort_key in table.column_names:
            table = table.sort_by([(sort_key, "ascending")])
        new_name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self._staging_file(".parquet")
        self._write_parquet(table, tmp, compacting=True)
        manifest = d / f"_compact-{os.getpid()}-{uuid.uuid4().hex}.json"
        _atomic_text(manifest, json.dumps({"new": new_name, "old": [f.name for f in files], "pid": os.getpid()}),
                     self._root / _STAGING)
        os.rename(tmp, d / new_name)
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        manifest.unlink()
        if kind is TableKind.LOG:
            model = urllib.parse.unquote(d.parent.name.partition("=")[2])
            part = self._ids.part((model, d.name.partition("=")[2]))
            if all(f.relative_to(self._root).as_posix() in part.seen for f in files):
                part.seen.add((d / new_name).relative_to(self._root).as_posix())
        return len(files)

    def _recover(self) -> None:
        """Remove what crashed writers left: staging files, and finish or undo their compactions."""
        staging = self._root / _STAGING
        for f in _safe_iterdir(staging):
            pid = _pid_of(f.name)
            if pid is None or not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    f.unlink()
        for kind in (TableKind.LOG, TableKind.LABELS, TableKind.QUARANTINE, TableKind.EVENTS, TableKind.LINEAGE):
            for d in self._leaf_dirs(kind):
                for m in d.glob("_compact-*.json"):
                    pid = _pid_of(m.name.removeprefix("_compact-"))
                    if pid is not None and _pid_alive(pid):
                        continue
                    try:
                        data = json.loads(m.read_text(encoding="utf-8"))
                        if (d / data["new"]).exists():
                            for old in data["old"]:
                                with contextlib.suppress(FileNotFoundError):
                                    (d / old).unlink()
                    except (OSError, ValueError, KeyError):
                        pass
                    with contextlib.suppress(OSError):
                        m.unlink()

    # ---------------------------------------------------------------- the DuckDB catalog
    def _refresh_catalog(self) -> None:
        """Write ``catalog.duckdb`` (views with absolute paths) when the store moved or a table kind appeared.

        The file is opened only for this and closed at once. When another process holds it
        open (a user's ``duckdb catalog.duckdb``), it is left as it is and retried later.
        """
        present = {k for k in TableKind if self.status_has_rows(k)}
        state_path = self._root / _CATALOG_STATE
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        known = {TableKind(k) for k in state.get("kinds", []) if k in {t.value for t in TableKind}}
        if state.get("root") == str(self._root) and present <= known and (self._root / CATALOG).exists():
            self._catalog_kinds = known
            return
        try:
            con = duckdb.connect(str(self._root / CATALOG))
        except duckdb.Error:
            self._catalog_kinds = known
            return
        try:
            con.execute("SET TimeZone = 'UTC'")
            for stmt in catalog_views(self._root, present):
                con.execute(stmt)
        except duckdb.Error:
            self._catalog_kinds = known
            return
        finally:
            con.close()
        _atomic_text(state_path, json.dumps({"root": str(self._root), "kinds": sorted(k.value for k in present)}),
                     self._root / _STAGING)
        self._catalog_kinds = present


def data_dirs(root: Path) -> list[Path]:
    """The folders of a store that hold the tables engines read (``log/``, ``labels/``...)."""
    return [root / d for d in _DIRS.values()]


def catalog_views(root: Path, kinds: Iterable[TableKind]) -> list[str]:
    """The ``CREATE VIEW`` statements of ``catalog.duckdb`` for the table kinds present."""
    kinds = set(kinds)
    r = str(root)

    def scan(glob: str, hive: str | None) -> str:
        opts = "union_by_name=true"
        if hive:
            opts += f", hive_partitioning=true, hive_types={hive}"
        return f"read_parquet({quote_literal(r + '/' + glob)}, {opts})"

    out = [f"CREATE OR REPLACE VIEW mlsleuth_store AS SELECT {quote_literal(r)} AS root, {_FORMAT} AS format"]
    if TableKind.LOG in kinds:
        out.append("CREATE OR REPLACE VIEW log AS SELECT * FROM "
                   + scan("log/*/*/*.parquet", "{'model': VARCHAR, 'date': DATE}"))
    if TableKind.LABELS in kinds:
        out.append("CREATE OR REPLACE VIEW labels_all AS SELECT * FROM " + scan("labels/*/*.parquet", "{'date': DATE}"))
        out.append(f"CREATE OR REPLACE VIEW labels AS {LABELS_LATEST_SQL}")
    if TableKind.EVENTS in kinds:
        out.append("CREATE OR REPLACE VIEW events_all AS SELECT * FROM " + scan("events/*.parquet", None))
        out.append(f"CREATE OR REPLACE VIEW events AS {EVENTS_LATEST_SQL}")
    if TableKind.LINEAGE in kinds:
        out.append("CREATE OR REPLACE VIEW lineage AS SELECT * FROM " + scan("lineage/*.parquet", None))
    if TableKind.QUARANTINE in kinds:
        out.append("CREATE OR REPLACE VIEW quarantine AS SELECT * FROM "
                   + scan("quarantine/*/*.parquet", "{'date': DATE}"))
    return out


def _read_settings(marker: Path) -> StoreSettings:
    try:
        text = marker.read_text(encoding="utf-8")
    except OSError as e:
        raise StoreError(f"{marker}: cannot read the store's settings: {e}") from e
    return settings_from_text(text, marker)


def settings_from_text(text: str, marker: Path | str) -> StoreSettings:
    """The settings in the text of a store's ``mlsleuth.toml`` (``marker`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StoreError(f"{marker}: cannot read the store's settings: {e}") from e
    fmt = data.get("format", _FORMAT)
    if fmt != _FORMAT:
        raise StoreError(f"{marker}: store format {fmt!r}; this mlsleuth reads format {_FORMAT}. Upgrade mlsleuth")
    s = data.get("store", {})
    known = {"compression", "compression_level", "compact_compression", "compact_compression_level", "fsync",
             "engine", "spark_master", "spark_conf"}
    unknown = sorted(set(s) - known)
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in [store]; expected some of {sorted(known)}", path=marker)
    d = StoreSettings()
    return StoreSettings(compression=str(s.get("compression", d.compression)),
                         compression_level=s.get("compression_level"),
                         compact_compression=str(s.get("compact_compression", d.compact_compression)),
                         compact_compression_level=s.get("compact_compression_level"),
                         fsync=bool(s.get("fsync", d.fsync)),
                         engine=None if s.get("engine") is None else EngineKind.parse(s["engine"],
                                                                                      where="store.engine"),
                         spark_master=None if s.get("spark_master") is None else str(s["spark_master"]),
                         spark_conf=tuple(sorted((str(k), str(v)) for k, v in dict(s.get("spark_conf", {})).items())))


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"expected a day such as 2026-03-06, got {text!r}", column="date") from None


def _subdirs(p: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(p) if e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _safe_iterdir(p: Path) -> list[Path]:
    try:
        return list(p.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _listing(dirs: list[Path]) -> tuple[frozenset[Path], tuple[Path, ...]]:
    files: set[Path] = set()
    manifests: list[Path] = []
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if is_data_file(e.name):
                files.add(d / e.name)
            elif is_manifest(e.name):
                manifests.append(d / e.name)
    return frozenset(files), tuple(sorted(manifests))


def _read_ids(path: Path) -> pa.Array | None:
    try:
        pf = pq.ParquetFile(path)
        if "request_id" not in pf.schema_arrow.names:
            return None
        col = pf.read(columns=["request_id"]).column(0)
    except FileNotFoundError:
        return None
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{path}: cannot read stored request ids: {e}") from e
    col = col.cast(pa.string())
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _atomic_text(path: Path, text: str, staging: Path) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{os.getpid()}-{uuid.uuid4().hex}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
