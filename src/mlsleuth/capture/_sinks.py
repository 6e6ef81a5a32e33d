"""Where the logger's batches go: one ``write(table)`` protocol, with in-memory, local-store and HTTP sinks."""

from __future__ import annotations

import enum
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from mlsleuth.errors import CaptureError, ConfigError

__all__ = ["ARROW_STREAM_MEDIA_TYPE", "Compression", "HttpSink", "MemorySink", "Sink", "StoreSink", "table_to_ipc"]

#: The content type of an Arrow IPC stream, as ``HttpSink`` sends it.
ARROW_STREAM_MEDIA_TYPE = "application/vnd.apache.arrow.stream"


@runtime_checkable
class Sink(Protocol):
    """Anything that can take a batch of log rows.

    ``write`` is called from the logger's background thread only, one batch at a time. It raises on
    failure (any exception); the logger then counts the batch's rows as dropped and keeps going.
    """

    def write(self, table: pa.Table) -> None:
        """Persist or forward one batch of log rows; raise if it could not."""
        ...


class MemorySink:
    """Keeps every batch in memory; for tests and notebooks.

    Examples
    --------
    >>> import pyarrow as pa
    >>> sink = MemorySink()
    >>> sink.write(pa.table({"request_id": ["a"]}))
    >>> sink.table().num_rows
    1
    """

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self._lock = threading.Lock()

    def write(self, table: pa.Table) -> None:
        """Keep ``table``."""
        with self._lock:
            self._tables.append(table)

    @property
    def tables(self) -> tuple[pa.Table, ...]:
        """The batches written so far, in order."""
        with self._lock:
            return tuple(self._tables)

    @property
    def num_rows(self) -> int:
        """Rows written so far."""
        return sum(t.num_rows for t in self.tables)

    def table(self) -> pa.Table:
        """All batches as one table; columns missing from a batch are null there, types are unified."""
        tables = self.tables
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")

    def clear(self) -> None:
        """Forget the batches written so far."""
        with self._lock:
            self._tables.clear()


class StoreSink:
    """Appends each batch to a local mlsleuth store (``store.append_log``).

    The store validates rows and quarantines bad ones (a duplicate ``request_id``, no score and no
    prediction, ...); the logger counts such rows as written, since the store took them, and the sink
    keeps the store's own tally in :attr:`accepted`, :attr:`quarantined` and :attr:`last_result`.

    Parameters
    ----------
    store
        An open store (e.g. ``mlsleuth.store.LocalStore.open(path)``), or anything with an
        ``append_log(table)`` method.
    source
        Passed to ``append_log`` as the rows' source, when given.
    reopen_after_fork
        When the store has a ``path`` and the sink is used in a forked child process, reopen the
        store there (``type(store).open(path)``) rather than share the parent's handles.

    Examples
    --------
    >>> from mlsleuth.store import LocalStore  # doctest: +SKIP
    >>> sink = StoreSink(LocalStore.open("store/"))  # doctest: +SKIP
    """

    def __init__(self, store: Any, *, source: str | None = None, reopen_after_fork: bool = True) -> None:
        if not callable(getattr(store, "append_log", None)):
            raise ConfigError(f"StoreSink needs a store with an append_log(table) method, got {type(store).__name__}")
        self._store = store
        self._source = source
        self._pid = os.getpid()
        self._reopen = reopen_after_fork
        self._lock = threading.Lock()
        self.accepted = 0
        self.quarantined = 0
        self.last_result: Any = None

    def __repr__(self) -> str:
        return f"StoreSink({self._store!r})"

    @property
    def store(self) -> Any:
        """The store the batches go to (reopened in a forked child when possible)."""
        if self._reopen and os.getpid() != self._pid:
            path = getattr(self._store, "path", None)
            opener = getattr(type(self._store), "open", None)
            if path is not None and callable(opener):
                self._store = opener(path)
            self._pid = os.getpid()
            self._lock = threading.Lock()
        return self._store

    def write(self, table: pa.Table) -> None:
        """Append ``table`` to the store's log."""
        store = self.store
        result = store.append_log(table) if self._source is None else store.append_log(table, source=self._source)
        with self._lock:
            self.accepted += int(getattr(result, "accepted", table.num_rows))
            self.quarantined += int(getattr(result, "quarantined", 0))
            self.last_result = result


class Compression(enum.Enum):
    """Body compression of the Arrow IPC stream ``HttpSink`` sends (Arrow's own buffer compression)."""

    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"

    @classmethod
    def parse(cls, value: Compression | str | None) -> Compression:
        """Accept an enum member, its name or value in any case, or ``None`` for no compression."""
        if value is None:
            return cls.NONE
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ConfigError(
                f"compression must be one of {[c.value for c in cls]}, got {value!r}", column="compression"
            ) from None


def table_to_ipc(table: pa.Table, compression: Compression = Compression.NONE) -> bytes:
    """Serialise ``table`` as an Arrow IPC stream (the body ``HttpSink`` posts)."""
    codec = None if compression is Compression.NONE else compression.value
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=codec)) as w:
        w.write_table(table)
    return bytes(sink.getvalue())


class HttpSink:
    """POSTs each batch as an Arrow IPC stream to an mlsleuth server's ``<url>/v1/log``.

    Parameters
    ----------
    url
        The server's base URL, e.g. ``http://mlsleuth:8000``.
    token
        Sent as ``Authorization: Bearer <token>`` when given.
    timeout
        Seconds per attempt.
    compression
        Arrow buffer compression of the body.
    retries
        Further attempts after a failed one, on connection errors, timeouts, 429 and 5xx responses
        (other 4xx responses are not retried: the request itself is wrong).
    backoff
        Seconds before the first retry, doubled before each next one.
    trust_env
        Whether to honour proxy settings from the environment (``http_proxy``, ``no_proxy``).

    Examples
    --------
    >>> sink = HttpSink("http://127.0.0.1:8000", token="s3cret")
    >>> sink.endpoint
    'http://127.0.0.1:8000/v1/log'
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 5.0,
        compression: Compression | str | None = Compression.ZSTD,
        *,
        retries: int = 3,
        backoff: float = 0.2,
        trust_env: bool = True,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"HttpSink url must start with http:// or https://, got {url!r}", column="url")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ConfigError(
                f"HttpSink needs retries >= 0, backoff >= 0 and timeout > 0, got {retries}, {backoff}, {timeout}"
            )
        self.endpoint = url.rstrip("/") + "/v1/log"
        self.token = token
        self.timeout = timeout
        self.compression = Compression.parse(compression)
        self.retries = retries
        self.backoff = backoff
        handlers: list[urllib.request.BaseHandler] = [] if trust_env else [urllib.request.ProxyHandler({})]
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"HttpSink({self.endpoint!r}, compression={self.compression.value!r})"

    def write(self, table: pa.Table) -> None:
        """POST ``table``; retry transient failures, then raise :class:`CaptureError`."""
        body = table_to_ipc(table, self.compression)
        headers = {"Content-Type": ARROW_STREAM_MEDIA_TYPE, "X-Mlsleuth-Rows": str(table.num_rows)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        delay = self.backoff
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    resp.read()
                return
            except urllib.error.HTTPError as e:
                detail = e.read(300).decode("utf-8", "replace") if e.fp is not None else ""
                last = f"HTTP {e.code} {e.reason}: {detail}".strip()
                if e.code != 429 and e.code < 500:
                    raise CaptureError(
                        f"{self.endpoint} rejected a batch of {table.num_rows} rows with {last}; check the url "
                        "and token"
                    ) from e
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise CaptureError(
            f"could not POST a batch of {table.num_rows} rows to {self.endpoint} after {self.retries + 1} attempts; "
            f"last failure: {last}"
        )
