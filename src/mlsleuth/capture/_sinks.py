"""Where the logger's batches go: one ``write(table)`` protocol, with in-memory, local-store and HTTP sinks."""

from __future__ import annotations

import atexit
import enum
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from mlsleuth.capture._spool import _Entry, _Spool
from mlsleuth.errors import CaptureError, ConfigError

__all__ = ["ARROW_STREAM_MEDIA_TYPE", "Compression", "HttpSink", "HttpSinkStats", "MemorySink", "Sink", "StoreSink",
           "table_to_ipc"]

_log = logging.getLogger("mlsleuth.capture")

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


@dataclass(frozen=True)
class HttpSinkStats:
    """A snapshot of an :class:`HttpSink`'s counters (rows, unless named otherwise).

    The logger counts a batch as written once the sink took it, sent or spooled; what happens to spooled
    batches after that is counted here.

    Attributes
    ----------
    sent_rows, sent_batches
        Accepted by the server (a 2xx answer), sent at once or from the spool.
    resent_rows
        The part of ``sent_rows`` that was sent from the spool.
    spooled_rows, spooled_batches, spooled_bytes
        Waiting in the spool now (adopted from a dead process included).
    dropped_rows, dropped_batches
        Taken into the spool and then given up: pushed out by ``spool_max_bytes``, or rejected by the server
        (a 4xx other than 429) when resent.
    last_error
        The latest failure to send, ``None`` when there has been none.
    """

    sent_rows: int
    sent_batches: int
    resent_rows: int
    spooled_rows: int
    spooled_batches: int
    spooled_bytes: int
    dropped_rows: int
    dropped_batches: int
    last_error: str | None


class _Retryable(Exception):
    """A failure worth trying again: no connection, a timeout, 429 or 5xx."""


class _Rejected(Exception):
    """The server refused the request itself (4xx other than 429): sending it again cannot help."""


def _at_exit(ref: weakref.ref[HttpSink]) -> None:
    sink = ref()
    if sink is not None:
        # after this, nothing would drain an in-memory spool: write() raises instead, and the logger counts it
        sink._exiting = True
        sink.close(sink.timeout)


class HttpSink:
    """POSTs each batch as an Arrow IPC stream to an mlsleuth server's ``<url>/v1/log``; spools what it cannot.

    Delivery guarantee: at-least-once delivery, exactly-once storage per ``request_id``. A batch the
    server does not accept within the retry budget (no connection, a timeout, 429, 5xx) is kept in a
    bounded spool and resent, oldest first and with backoff, by the sink's background thread until the
    server answers 2xx; batches taken while the spool is not empty queue behind it, so order is kept. A
    batch the server stored but whose answer was lost (a crash or a restart) is therefore sent again;
    the server's store quarantines rows whose ``request_id`` it already holds for that model and UTC
    day, so each id is stored once (rows without a ``request_id`` may be stored twice). Nothing here
    raises into serving code: what the spool gives up (over ``spool_max_bytes``) is counted in
    :meth:`stats` and logged. At shutdown, :meth:`close` (after ``Logger.close``) gives the spool a last
    chance to drain; it also runs at interpreter exit.

    Parameters
    ----------
    url
        The server's base URL, e.g. ``http://mlsleuth:8000``.
    token
        Sent as ``Authorization: Bearer <token>`` when given.
    timeout
        Seconds per attempt; also how long the exit hook waits for the spool to drain.
    compression
        Arrow buffer compression of the body.
    retries
        Further attempts after a failed one, on connection errors, timeouts, 429 and 5xx responses,
        before the batch goes to the spool (other 4xx responses are not retried: the request itself is
        wrong, and the logger counts the batch as dropped).
    backoff
        Seconds before the first retry, doubled before each next one; also the first wait of the spool's
        resending, which doubles up to ``max_backoff``.
    trust_env
        Whether to honour proxy settings from the environment (``http_proxy``, ``no_proxy``).
    spool_dir
        A folder for the spool, so that unsent batches also outlive this process: one file per batch
        (the body it POSTs, written atomically), resent by the next process that opens an ``HttpSink``
        on the same folder after a crash. Several processes may share one folder. ``None`` (the default)
        keeps the spool in memory: it rides out a restart of the server, not of this process, and writes
        no request data to disk. Use one folder per server URL, on a volume that outlives the process.
    spool_max_bytes
        The spool's size cap (bodies, compressed). When a new batch does not fit, the oldest spooled
        batches are dropped and counted: monitoring reads the latest traffic first, so a long outage
        should leave its gap in the past rather than in the present. ``0`` turns the spool off: a batch
        that fails its retries raises and the logger drops it.
    max_backoff
        The longest wait between two attempts to resend the spool.

    Examples
    --------
    >>> sink = HttpSink("http://127.0.0.1:8000", token="s3cret")
    >>> sink.endpoint
    'http://127.0.0.1:8000/v1/log'
    >>> sink.stats().spooled_rows
    0
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
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 64 * 1024 * 1024,
        max_backoff: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"HttpSink url must start with http:// or https://, got {url!r}", column="url")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ConfigError(
                f"HttpSink needs retries >= 0, backoff >= 0 and timeout > 0, got {retries}, {backoff}, {timeout}"
            )
        if spool_max_bytes < 0:
            raise ConfigError(f"HttpSink spool_max_bytes must be >= 0 (0 turns the spool off), got {spool_max_bytes}",
                              column="spool_max_bytes")
        if max_backoff <= 0:
            raise ConfigError(f"HttpSink max_backoff must be > 0 seconds, got {max_backoff}", column="max_backoff")
        root = None if spool_dir is None else Path(spool_dir)
        if root is not None and root.exists() and not root.is_dir():
            raise ConfigError(f"HttpSink spool_dir {str(root)!r} exists and is not a folder; pass a folder path",
                              column="spool_dir")
        self.endpoint = url.rstrip("/") + "/v1/log"
        self.token = token
        self.timeout = timeout
        self.compression = Compression.parse(compression)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.spool_dir = root
        self.spool_max_bytes = spool_max_bytes
        handlers: list[urllib.request.BaseHandler] = [] if trust_env else [urllib.request.ProxyHandler({})]
        self._opener = urllib.request.build_opener(*handlers)
        self._spool = _Spool(root, spool_max_bytes)
        self._sent_rows = self._sent_batches = self._resent_rows = 0
        self._dropped_rows = self._dropped_batches = 0
        self._last_error: str | None = None
        self._warned = False
        self._exit_registered = False
        self._exiting = False
        self._reset_runtime()
        if spool_max_bytes and self._spool.has_orphans():
            with self._lock:  # a previous process left batches: adopt them and resend now, not after a failure
                try:
                    self._spool.open()
                except OSError as e:  # the resender tries again
                    self._last_error = f"spool folder {self.spool_dir}: {e}"
                self._start_locked()

    def _reset_runtime(self) -> None:
        """Fresh lock, events and no resender: at construction and in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _check_fork(self) -> None:
        # In a forked child the parent's locks may be held and its thread is gone; the spool notices the fork
        # itself on next use (it leaves the parent's batches to the parent and takes a folder of its own).
        if os.getpid() != self._pid:
            self._reset_runtime()

    def __repr__(self) -> str:
        return f"HttpSink({self.endpoint!r}, compression={self.compression.value!r})"

    # -- sending ----------------------------------------------------------------------------------------

    def _post(self, body: bytes, rows: int) -> None:
        """One attempt; raises :class:`_Retryable` or :class:`_Rejected` with a message naming the failure."""
        headers = {"Content-Type": ARROW_STREAM_MEDIA_TYPE, "X-Mlsleuth-Rows": str(rows)}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace") if e.fp is not None else ""
            last = f"HTTP {e.code} {e.reason}: {detail}".strip()
            if e.code != 429 and e.code < 500:
                raise _Rejected(last) from e
            raise _Retryable(last) from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise _Retryable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e

    def write(self, table: pa.Table) -> None:
        """POST ``table``, retrying transient failures; then spool it, or raise :class:`CaptureError` if it can't.

        Raises
        ------
        CaptureError
            When the server rejects the batch (4xx other than 429), or it could not be sent and not spooled
            (the spool is off, or its folder cannot be written).
        """
        self._check_fork()
        body = table_to_ipc(table, self.compression)
        rows = table.num_rows
        with self._lock:
            behind = bool(self._spool.entries) and self.spool_max_bytes > 0
        last = ""
        if not behind:  # with batches spooled, this one waits its turn so that the server sees them in order
            delay = self.backoff
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(delay)
                    delay *= 2
                try:
                    self._post(body, rows)
                except _Rejected as e:
                    raise CaptureError(
                        f"{self.endpoint} rejected a batch of {rows} rows with {e}; check the url and token"
                    ) from e
                except _Retryable as e:
                    last = str(e)
                    continue
                with self._lock:
                    self._sent_rows += rows
                    self._sent_batches += 1
                return
            self._last_error = f"could not POST to {self.endpoint}: {last}"
            if not self.spool_max_bytes or (self._exiting and self.spool_dir is None):
                raise CaptureError(
                    f"could not POST a batch of {rows} rows to {self.endpoint} after {self.retries + 1} attempts; "
                    f"last failure: {last}" + ("" if self.spool_max_bytes else " (the spool is off)")
                )
        try:
            with self._lock:
                evicted = self._spool.put(body, rows)
                self._start_locked(wait_first=True)  # it has just failed: trying again at once is pointless
                self._changed.notify_all()
        except OSError as e:
            raise CaptureError(
                f"could not POST a batch of {rows} rows to {self.endpoint} ({last or 'batches already waiting'}) "
                f"nor spool it in {self.spool_dir}: {e}; check that the folder is writable and has room"
            ) from e
        if evicted:
            self._count_drop(evicted, f"the spool is over spool_max_bytes={self.spool_max_bytes}")

    def _count_drop(self, entries: list[_Entry], why: str) -> None:
        n = sum(e.rows for e in entries)
        with self._lock:
            self._dropped_rows += n
            self._dropped_batches += len(entries)
            self._changed.notify_all()
        if not self._warned:  # once per episode, like the logger: a long outage must not flood the log
            _log.warning("mlsleuth HttpSink to %s dropped %d spooled rows: %s", self.endpoint, n, why)
            self._warned = True

    # -- the spool's resender ---------------------------------------------------------------------------

    def _start_locked(self, *, wait_first: bool = False) -> None:
        """Start the resender unless it runs; called with ``_lock`` held, right after a batch was spooled."""
        if self._thread is not None or self._exiting:  # at exit a spool on disk waits for the next process
            return
        t = threading.Thread(target=self._resend_loop, args=(wait_first,), name="mlsleuth-http-spool", daemon=True)
        self._thread = t
        t.start()
        if not self._exit_registered:
            # at interpreter exit the spool gets one timeout to drain; what stays on disk waits for the next run
            atexit.register(_at_exit, weakref.ref(self))
            self._exit_registered = True

    def _resend_loop(self, wait_first: bool) -> None:
        """Send the oldest spooled batch until none is left; back off while the server does not answer."""
        delay = self.backoff or 0.05
        if wait_first:
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_backoff)
        while not self._stop.is_set():
            with self._lock:
                try:
                    entry = self._spool.oldest()
                except OSError as e:  # the folder cannot be opened: say so, wait, try again
                    entry, self._last_error = None, f"spool folder {self.spool_dir}: {e}"
                    failed = True
                else:
                    failed = False
                if entry is None and not failed:  # drained: the next spooled batch starts a new thread
                    self._spool.busy = None
                    self._thread = None
                    return
                self._spool.busy = None if entry is None else entry.name
            if entry is None:
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            try:
                self._post(self._spool.read(entry), entry.rows)
            except _Rejected as e:
                with self._lock:
                    self._spool.busy = None
                    self._spool.remove(entry)
                self._last_error = f"{self.endpoint} rejected a spooled batch of {entry.rows} rows with {e}"
                self._count_drop([entry], self._last_error)
                continue
            except FileNotFoundError as e:  # removed behind our back (by hand): nothing left to send, count it
                with self._lock:
                    self._spool.busy = None
                    known = entry in self._spool.entries
                    self._spool.remove(entry)
                self._last_error = f"spooled batch {entry.name} vanished: {e}"
                if known:
                    self._count_drop([entry], self._last_error)
                continue
            except Exception as e:  # _Retryable, or the spool could not be read: wait and try again
                with self._lock:  # not in flight while waiting: the cap may push it out meanwhile
                    self._spool.busy = None
                    self._last_error = (f"could not POST to {self.endpoint}: {e}" if isinstance(e, _Retryable)
                                        else f"could not read spooled batch {entry.name}: {type(e).__name__}: {e}")
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            with self._lock:
                self._spool.remove(entry)
                self._spool.busy = None
                self._sent_rows += entry.rows
                self._sent_batches += 1
                self._resent_rows += entry.rows
                self._changed.notify_all()
            delay = self.backoff or 0.05
            self._warned = False
        with self._lock:
            self._spool.busy = None
            self._thread = None
            self._changed.notify_all()

    # -- caller-side control ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the spool is empty (every batch sent or dropped); meant for tests, jobs and shutdown.

        Returns
        -------
        bool
            False if ``timeout`` seconds passed first (e.g. the server is still down).
        """
        self._check_fork()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._spool.entries:
                if self._thread is None:  # e.g. stopped by close(): nobody would empty it
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(0.1 if remaining is None else min(remaining, 0.1))
            return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Give the spool ``timeout`` seconds to drain, then stop resending.

        Batches still spooled on disk stay there, unlocked, and the next ``HttpSink`` on the same
        ``spool_dir`` resends them; in memory they are lost, and counted in ``dropped_rows``. Also runs at
        interpreter exit. A later ``write`` starts the sink again.

        Returns
        -------
        bool
            True when the spool was empty.
        """
        empty = self.flush(timeout)
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(self.timeout + 1)
        with self._lock:
            left = list(self._spool.entries)
            if self.spool_dir is None:
                for e in left:
                    self._spool.remove(e)
            elif self._thread is None:  # the next HttpSink on the folder (or this one, written to again) adopts it
                self._spool.release()
        if left:
            rows = sum(e.rows for e in left)
            if self.spool_dir is None:
                self._count_drop(left, "closed with the server unreachable (the spool is in memory)")
            else:
                _log.warning("mlsleuth HttpSink to %s left %d rows in %s; the next HttpSink on that folder sends "
                             "them", self.endpoint, rows, self.spool_dir)
        self._stop.clear()
        return empty

    def stats(self) -> HttpSinkStats:
        """Current counters of sent, spooled and dropped rows."""
        with self._lock:
            return HttpSinkStats(
                sent_rows=self._sent_rows,
                sent_batches=self._sent_batches,
                resent_rows=self._resent_rows,
                spooled_rows=self._spool.rows,
                spooled_batches=len(self._spool.entries),
                spooled_bytes=self._spool.bytes,
                dropped_rows=self._dropped_rows,
                dropped_batches=self._dropped_batches,
                last_error=self._last_error,
            )
