"""Filesystems for the store's Parquet layout: local folders and object storage URLs through pyarrow / fsspec.

A store can live at ``s3://bucket/prefix``, ``gs://...``, ``abfs://...``, ``file:///...`` or any
fsspec URL (``memory://`` in tests). Credentials come from where each library usually finds them:
pyarrow's S3/GCS filesystems read ``AWS_*`` variables, ``~/.aws``, instance roles and Google's
application default credentials; fsspec's ``s3fs``/``gcsfs``/``adlfs`` read the same plus their
``FSSPEC_*`` config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs

from mlsleuth.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import pyarrow.dataset as ds

__all__ = ["is_url", "open_filesystem", "read_parquet_urls"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and bool(_URL.match(path))


def open_filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for ``url`` and the path inside it.

    ``file://``, ``s3://``, ``gs://`` (and ``hdfs://``) use pyarrow's own filesystems; every other
    scheme (``abfs://``, ``az://``, ``memory://``, ...) goes through fsspec.

    Raises
    ------
    ConfigError
        When the scheme needs fsspec (or one of its backends, e.g. ``adlfs`` for ``abfs://``) and
        it is not installed.
    StoreError
        When the filesystem cannot be opened (bad URL, no credentials).
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("file", "s3", "gs", "gcs", "hdfs"):
        try:
            fs, path = pafs.FileSystem.from_uri(url)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise StoreError(f"{url}: cannot open its filesystem with pyarrow: {e}") from e
        return fs, path.rstrip("/")
    try:
        import fsspec
    except ImportError as e:
        raise ConfigError(f"{url}: {scheme}:// URLs need fsspec: pip install 'mlsleuth[cloud]'") from e
    try:
        fs_, path = fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise ConfigError(f"{url}: fsspec needs a backend for {scheme}:// ({e}); e.g. pip install adlfs "
                          "for abfs://, s3fs for s3://, gcsfs for gs://") from e
    except (ValueError, OSError) as e:
        raise StoreError(f"{url}: cannot open its filesystem with fsspec: {e}") from e
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs_)), str(path).rstrip("/")


def read_parquet_urls(urls: Sequence[str]) -> pa.Table:
    """Read Parquet files at URLs (one filesystem) as one table, hive partitions as text (``date`` as DATE)."""
    if not urls:
        raise StoreError("no Parquet files to read")
    fs, _ = open_filesystem(urls[0])
    paths = [open_filesystem(u)[1] for u in urls]
    try:
        return dataset_of(fs, paths).to_table()
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{urls[0]}: cannot read Parquet: {e}") from e


def dataset_of(fs: pafs.FileSystem, paths: Sequence[str]) -> ds.Dataset:
    """A lazy dataset of Parquet files on ``fs`` with hive partitions (values as text, ``date`` as DATE)."""
    import pyarrow.dataset as ds  # imports pandas: only when a store is read from a URL
    keys: list[str] = []
    for part in paths[0].split("/")[:-1]:
        if "=" in part:
            keys.append(part.partition("=")[0])
    base = _base(paths[0])
    partitioning = None
    if keys and base is not None:
        # Sorted, as DuckDB and the Spark engine order partition columns.
        schema = pa.schema([(k, pa.date32() if k == "date" else pa.string()) for k in sorted(keys)])
        partitioning = ds.partitioning(schema, flavor="hive")
    return ds.dataset(list(paths), filesystem=fs, format="parquet", partitioning=partitioning,
                      partition_base_dir=base)


def _base(path: str) -> str | None:
    parts = path.split("/")
    for i, part in enumerate(parts):
        if "=" in part:
            return "/".join(parts[:i])
    return None
