"""A store's Parquet layout read from object storage (``s3://``, ``gs://``, ``abfs://``, ``file://``, ``memory://``).

The layout is the one :class:`~mlsleuth.store.LocalStore` writes (``log/model=.../date=.../*.parquet``
and the rest), copied or synced to a bucket as it is (``aws s3 sync``, ``gsutil rsync``, ``azcopy``).
:class:`RemoteStore` opens it **read-only**: ``status``, ``sql``, ``read_log``, ``events``, monitors
and the diagnosis work; appends, ingest and compaction raise :class:`~mlsleuth.errors.StoreError`.

DuckDB scans the files through a lazy pyarrow dataset on the bucket's filesystem (pyarrow's S3 and
GCS filesystems, fsspec for the rest), so no DuckDB extension is downloaded at run time; Spark reads
the URLs itself (``s3://`` as ``s3a://``), with the credentials of its Hadoop configuration.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlsleuth.errors import StoreError, StoreNotFoundError
from mlsleuth.schema import ChangeEvent, DataKind, Lineage, ModelConfig
from mlsleuth.store._choice import EngineKind
from mlsleuth.store._core import (
    EMPTY_SCHEMAS,
    AppendResult,
    StoreCore,
    TableKind,
    is_data_file,
    is_manifest,
    live_files,
)
from mlsleuth.store._engine import Engine
from mlsleuth.store._fs import dataset_of, is_url, open_filesystem
from mlsleuth.store._local import _DIRS, _VIEWS, MARKER, LocalStore, _encode, settings_from_text

__all__ = ["RemoteStore", "open_store"]

_READ_ONLY = ("stores at URLs are read-only: write to a local store and copy its folder to the bucket "
              "(aws s3 sync, gsutil rsync, azcopy sync)")


class RemoteStore(StoreCore):
    """A store's Parquet layout at a URL, opened read-only; queries run on DuckDB or Spark.

    Parameters
    ----------
    url
        ``s3://bucket/prefix``, ``gs://...``, ``abfs://container@account.dfs.core.windows.net/...``,
        ``file:///abs/path``, ``memory://...`` or any fsspec URL: the folder holding ``mlsleuth.toml``.
    engine
        As for :meth:`LocalStore.open`: an engine, ``"duckdb"``, ``"spark"`` or ``None``
        (``$MLSLEUTH_ENGINE``, then the store's ``mlsleuth.toml``, then DuckDB).
    threads, spark_master
        As for :meth:`LocalStore.open`.

    Raises
    ------
    StoreNotFoundError
        When the URL holds no ``mlsleuth.toml``.
    StoreError
        When the filesystem cannot be reached.

    Examples
    --------
    >>> import tempfile, pyarrow as pa
    >>> folder = tempfile.mkdtemp()
    >>> with LocalStore.init(folder) as local:
    ...     _ = local.append_log(pa.table({"ts": ["2026-03-06T18:00:00Z"], "score": [0.5]}))
    >>> RemoteStore("file://" + folder).status().rows
    1
    """

    def __init__(self, url: str, *, engine: Engine | EngineKind | str | None = None, threads: int | None = None,
                 spark_master: str | None = None) -> None:
        self._url = url.rstrip("/")
        self._fs, self._base = open_filesystem(self._url)
        marker = f"{self._base}/{MARKER}"
        try:
            with self._fs.open_input_stream(marker) as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            raise StoreNotFoundError(f"{self._url}: no mlsleuth store here (no {MARKER})") from None
        except OSError as e:
            raise StoreError(f"{self._url}/{MARKER}: cannot read: {e}") from e
        self.settings = settings_from_text(text, f"{self._url}/{MARKER}")
        if engine is None or isinstance(engine, EngineKind | str):
            chosen = self.settings.engine_choice(engine, spark_master=spark_master, threads=threads).make()
            super().__init__(chosen, own_engine=True)
        else:
            super().__init__(engine, own_engine=False)

    def __enter__(self) -> RemoteStore:
        return self

    def __repr__(self) -> str:
        return f"RemoteStore({self._url!r})"

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._url

    @property
    def location(self) -> str:
        """The store's URL."""
        return self._url

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem the files are read through."""
        return self._fs

    # ---------------------------------------------------------------- listing
    def _listing(self, kind: TableKind) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(f"{self._base}/{_DIRS[kind]}", recursive=True, allow_not_found=True)
        try:
            infos = self._fs.get_file_info(sel)
        except OSError as e:
            raise StoreError(f"{self._url}/{_DIRS[kind]}: cannot list: {e}") from e
        files = [i for i in infos if i.type == pafs.FileType.File]
        data = {i.path: i for i in files if is_data_file(i.base_name)}
        # A copy synced while a compaction ran may hold its inputs beside the merged file.
        texts = []
        for i in files:
            if is_manifest(i.base_name):
                try:
                    with self._fs.open_input_stream(i.path) as f:
                        texts.append((i.path.rsplit("/", 1)[0], f.read().decode("utf-8")))
                except (OSError, UnicodeDecodeError):
                    continue  # deleted since the listing, or not a manifest: nothing to apply
        return [data[p] for p in live_files(data, texts)]

    def _paths(self, kind: TableKind, *, model: str | None = None, lo: date | None = None,
               hi: date | None = None) -> list[str]:
        prefix = f"{self._base}/{_DIRS[kind]}/"
        lo_s, hi_s = (None if lo is None else lo.isoformat()), (None if hi is None else hi.isoformat())
        if kind is not TableKind.LOG:
            lo_s = hi_s = None  # labels are joined by request id: every day counts
        out = []
        for info in self._listing(kind):
            parts = info.path[len(prefix):].split("/")[:-1]
            keys = dict(p.split("=", 1) for p in parts if "=" in p)
            if model is not None and kind is TableKind.LOG and keys.get("model") != _encode(model):
                continue
            day = keys.get("date")
            if day is not None and ((lo_s is not None and day < lo_s) or (hi_s is not None and day > hi_s)):
                continue
            out.append(info.path)
        return sorted(out)

    def _bind(self, kinds: Iterable[TableKind], *, model: str | None = None,
              lo: date | None = None, hi: date | None = None) -> None:
        kinds = tuple(kinds)
        for kind in kinds:
            paths = self._paths(kind, model=model, lo=lo, hi=hi)
            if not paths:
                self._engine.register(_VIEWS[kind], EMPTY_SCHEMAS[kind].empty_table())
            elif self._engine.dialect == "duckdb":
                self._engine.register(_VIEWS[kind], dataset_of(self._fs, paths))
            else:  # Spark and the like read the URLs themselves
                self._engine.register(_VIEWS[kind], [self._url_of(p) for p in paths])
        self._bind_derived(kinds)

    def _url_of(self, path: str) -> str:
        """The URL of a listed file: the store's URL (with its host or account) and the path below it."""
        return self._url + path[len(self._base):]

    def _stored_schema(self, kind: TableKind) -> pa.Schema:
        paths = self._paths(kind)
        if not paths:
            return pa.schema([])
        try:
            return pa.unify_schemas([pq.read_schema(p, filesystem=self._fs) for p in paths],
                                    promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
            raise StoreError(f"{self._url}/{_DIRS[kind]}: cannot read the stored files' schemas: {e}") from e

    def status_has_rows(self, kind: TableKind) -> bool:
        """Whether any file of ``kind`` is stored."""
        return bool(self._listing(kind))

    def _footprint(self) -> tuple[int, int]:
        files = nbytes = 0
        for kind in TableKind:
            for info in self._listing(kind):
                files += 1
                nbytes += int(info.size or 0)
        return files, nbytes

    def download(self, prefix: str, dest: str | Path) -> list[Path]:
        """Copy the files under ``prefix`` (e.g. ``profiles``) to the folder ``dest``; returns the local copies.

        Used to read a stored reference profile of a remote store with
        :func:`~mlsleuth.monitors.load_reference`.
        """
        sel = pafs.FileSelector(f"{self._base}/{prefix.strip('/')}", recursive=True, allow_not_found=True)
        out = []
        try:
            for info in self._fs.get_file_info(sel):
                if info.type != pafs.FileType.File:
                    continue
                target = Path(dest) / info.path[len(self._base) + len(prefix.strip("/")) + 2:]
                target.parent.mkdir(parents=True, exist_ok=True)
                with self._fs.open_input_stream(info.path) as f:
                    target.write_bytes(f.read())
                out.append(target)
        except OSError as e:
            raise StoreError(f"{self._url}/{prefix}: cannot copy: {e}") from e
        return out

    # ---------------------------------------------------------------- read-only
    def _refuse(self) -> StoreError:
        return StoreError(f"{self._url}: {_READ_ONLY}")

    def append_log(self, table: pa.Table, *, source: str | None = None,
                   config: ModelConfig | None = None) -> AppendResult:
        """Refused: a store at a URL is read-only."""
        raise self._refuse()

    def append_labels(self, table: pa.Table, *, source: str | None = None,
                      config: ModelConfig | None = None) -> AppendResult:
        """Refused: a store at a URL is read-only."""
        raise self._refuse()

    def add_events(self, events: Iterable[ChangeEvent]) -> AppendResult:
        """Refused: a store at a URL is read-only."""
        raise self._refuse()

    def add_lineage(self, lineage: Lineage) -> AppendResult:
        """Refused: a store at a URL is read-only."""
        raise self._refuse()

    def ingest(self, path: str | Path, kind: TableKind | DataKind | str, *,
               config: ModelConfig | None = None) -> AppendResult:
        """Refused: a store at a URL is read-only."""
        raise self._refuse()

    def compact(self, model: str | None = None, date: str | date | None = None) -> int:
        """Refused: a store at a URL is read-only."""
        raise self._refuse()

    def _write(self, kind: TableKind, table: pa.Table, partition: Mapping[str, str]) -> str:
        raise self._refuse()

    def _id_chunks(self, model: str, day: str, seen: set[Hashable]) -> list[tuple[Hashable, pa.Array]]:
        raise self._refuse()

    def _confirm_ids(self, model: str, day: str, candidates: pa.Array) -> pa.Array:
        raise self._refuse()


def open_store(location: str | Path, *, engine: Engine | EngineKind | str | None = None,
               threads: int | None = None, spark_master: str | None = None) -> LocalStore | RemoteStore:
    """Open the store at a folder (:class:`LocalStore`) or a URL (:class:`RemoteStore`, read-only).

    Parameters
    ----------
    location
        A local folder, or ``s3://``, ``gs://``, ``abfs://``, ``file://``, ``memory://``... URL.
    engine, threads, spark_master
        As for :meth:`LocalStore.open`.

    Raises
    ------
    StoreNotFoundError
        When no store is there.
    """
    text = str(location)
    if is_url(text):
        return RemoteStore(text, engine=engine, threads=threads, spark_master=spark_master)
    return LocalStore.open(location, engine=engine, threads=threads, spark_master=spark_master)

