"""The request logger: a cheap ``log()`` on the serving path, batching and writing on a background thread.

Design
------
``Logger.log`` does three things: a sampling draw (only when sampling), a length check of a
``collections.deque`` and one ``deque.append`` of a tuple. ``deque.append``/``popleft`` are atomic under
the GIL, so serving threads never wait on a lock in the common case; the queue bound is checked before
the append, so with T threads appending at once it may be exceeded by at most T - 1 records.
(``deque(maxlen=...)`` is not used: it silently evicts the oldest records.)

A background daemon thread (one per logger) wakes when a full batch is waiting or ``flush_interval``
has passed, pops records, builds one Arrow table per batch (:func:`records_to_table`) and hands it to the
sink. Every record that enters ``log`` ends up in exactly one counter of :class:`LoggerStats`:
``logged == sampled_out + queued + written + dropped_queue_full + dropped_sink_error + dropped_internal
+ dropped_closed``.

The serving-path counters that are not on the common path (sampled out, queue full, internal error)
are guarded by a small lock; the common path derives its count from the queue itself, so it takes none.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mlsleuth.capture._batch import Record, Redaction, records_to_table
from mlsleuth.capture._sinks import Sink
from mlsleuth.errors import ConfigError

__all__ = ["Logger", "LoggerStats"]

_log = logging.getLogger("mlsleuth.capture")
_time_ns = time.time_ns
_ERROR_TEXT_MAX = 500

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class LoggerStats:
    """A snapshot of a logger's counters (records, not batches, unless named otherwise).

    Attributes
    ----------
    logged
        Calls to ``log`` (every request offered to the logger, sampled or not).
    sampled_out
        Calls skipped by sampling.
    queued
        Records waiting in the queue or being written right now.
    written
        Records the sink accepted.
    dropped_queue_full
        Records dropped because the queue was full (the sink was slower than the traffic).
    dropped_sink_error
        Records in batches the sink failed to write (after the logger's retries).
    dropped_internal
        Records dropped because the logger itself failed on them (e.g. ``inputs`` not a mapping).
    dropped_closed
        Calls to ``log`` after ``close``.
    batches_written
        Batches the sink accepted.
    last_error
        The text of the latest sink or internal error, ``None`` when there has been none.
    """

    logged: int
    sampled_out: int
    queued: int
    written: int
    dropped_queue_full: int
    dropped_sink_error: int
    dropped_internal: int
    dropped_closed: int
    batches_written: int
    last_error: str | None

    @property
    def dropped(self) -> int:
        """All records dropped, for any reason (sampling is not a drop)."""
        return self.dropped_queue_full + self.dropped_sink_error + self.dropped_internal + self.dropped_closed


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 3] + "..."


class _Core:
    """The logger's state and worker; holds no reference to the ``Logger`` so that it can be collected."""

    def __init__(
        self,
        sink: Sink,
        *,
        batch_size: int,
        flush_interval: float,
        max_queue: int,
        sample_rate: float,
        seed: int | None,
        retries: int,
        retry_backoff: float,
        model: str | None,
        model_version: str | None,
        redaction: Redaction,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.sample_rate = sample_rate
        self.sampling = sample_rate < 1.0
        self.seed = seed
        self.rng = random.Random(seed)
        self.rand = self.rng.random
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.model = model
        self.model_version = model_version
        self.redaction = redaction
        self.q: deque[Record] = deque()
        self.closed = False
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        """Fresh locks, counters and no worker: at construction, and in a forked child."""
        self.q.clear()
        self.count_lock = threading.Lock()  # serving-path counters (rare paths only)
        self.pop_lock = threading.Lock()  # popping records + ``popped``
        self.work_lock = threading.Lock()  # one drainer at a time
        self.start_lock = threading.Lock()
        self.done_cond = threading.Condition(threading.Lock())  # ``done`` and the outcome counters
        self.wake = threading.Event()
        self.wake_is_set = self.wake.is_set
        self.running = False
        self.stopping = False
        self.flush_requested = False
        self.thread: threading.Thread | None = None
        self.sampled_out = 0
        self.dropped_full = 0
        self.dropped_closed = 0
        self.internal_in_log = 0
        self.popped = 0
        self.done = 0
        self.written = 0
        self.dropped_sink = 0
        self.dropped_internal = 0
        self.batches = 0
        self.last_error: str | None = None
        self.failing = False
        self.last_flush = time.monotonic()

    def after_fork_in_child(self) -> None:
        # Records queued in the parent are the parent's to write; the child starts empty, with new locks
        # (a lock held by a parent thread at fork time would never be released) and starts its own worker on
        # its first log() call.
        self._reset_runtime()
        if self.seed is None:
            self.rng.seed()

    # -- serving-path helpers (rare paths) ---------------------------------------------------------

    def internal_error(self, e: BaseException) -> None:
        try:
            with self.count_lock:
                self.internal_in_log += 1
            self.last_error = _error_text(e)
        except Exception:  # pragma: no cover - nothing left to count with
            pass

    def start(self) -> None:
        with self.start_lock:
            if self.running or self.closed:
                return
            t = threading.Thread(target=self._run, name="mlsleuth-capture", daemon=True)
            self.thread = t
            self.stopping = False
            t.start()
            self.running = True

    # -- worker ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.wake.wait(max(0.0, self.last_flush + self.flush_interval - time.monotonic()))
            self.wake.clear()
            stop = self.stopping
            try:
                self.drain(everything=stop or self.flush_requested)
            except Exception as e:  # a bug in the logger itself; records are accounted for in drain
                self.last_error = _error_text(e)
            if stop:
                return

    def drain(self, *, everything: bool) -> None:
        """Write full batches; and the partial last one when asked to or when ``flush_interval`` has passed."""
        with self.work_lock:
            if everything or self.flush_requested or time.monotonic() - self.last_flush >= self.flush_interval:
                self.flush_requested = False
                everything = True
            q, bs = self.q, self.batch_size
            # everything: what is queued now, not what producers keep adding meanwhile (that could never end)
            owed = len(q) if everything else 0
            while len(q) >= bs or (owed > 0 and q):
                with self.pop_lock:
                    k = min(bs, len(q))
                    popleft = q.popleft
                    batch = [popleft() for _ in range(k)]
                    self.popped += k
                owed -= k
                self._write(batch)
            if everything:
                self.last_flush = time.monotonic()
        with self.done_cond:
            self.done_cond.notify_all()

    def _write(self, batch: list[Record]) -> None:
        # Every record of the batch ends in exactly one of written / dropped_sink / dropped_internal.
        n = len(batch)
        written = sink_dropped = 0
        error: str | None = None
        try:
            try:
                table = records_to_table(
                    batch, model=self.model, model_version=self.model_version, redaction=self.redaction
                )
            except Exception as e:
                error = _error_text(e)
                table = self._convert_good_records(batch)
            if table is not None and table.num_rows:
                attempt, delay = 0, self.retry_backoff
                while True:
                    try:
                        self.sink.write(table)
                        written = table.num_rows
                        break
                    except Exception as e:
                        error = _error_text(e)
                        if attempt >= self.retries or self.stopping:
                            sink_dropped = table.num_rows
                            break
                        attempt += 1
                        time.sleep(delay)
                        delay *= 2
        except Exception as e:
            error = _error_text(e)
        finally:
            with self.done_cond:
                self.done += n
                self.written += written
                self.dropped_sink += sink_dropped
                self.dropped_internal += n - written - sink_dropped
                if written:
                    self.batches += 1
                if error is not None:
                    self.last_error = error
            if sink_dropped and not self.failing:
                _log.warning("mlsleuth capture sink %r failed, dropping %d rows: %s", self.sink, sink_dropped, error)
            self.failing = bool(sink_dropped)

    def _convert_good_records(self, batch: list[Record]) -> Any:
        """Convert records one by one to find those the batch conversion failed on; convert the rest."""
        good: list[Record] = []
        for rec in batch:
            try:
                records_to_table([rec], model=self.model, model_version=self.model_version, redaction=self.redaction)
                good.append(rec)
            except Exception:
                continue
        if not good:
            return None
        return records_to_table(good, model=self.model, model_version=self.model_version, redaction=self.redaction)

    # -- caller-side control -----------------------------------------------------------------------

    def submitted(self) -> int:
        """Records that have entered the queue so far (popped ones included), read consistently."""
        with self.pop_lock:
            return self.popped + len(self.q)

    def flush(self, timeout: float | None) -> bool:
        target = self.submitted()
        self.flush_requested = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.done_cond:
                if self.done >= target:
                    return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            t = self.thread
            if t is None or not t.is_alive():
                self.drain(everything=True)  # no worker (closed, or not restarted since a fork): do it here
                continue
            self.wake.set()
            with self.done_cond:
                if self.done < target:
                    # the worker notifies after each drain; the timeout re-sends the request in case it arrived
                    # while the worker was mid-drain and so served only the next round
                    self.done_cond.wait(0.05 if remaining is None else min(remaining, 0.05))

    def close(self, timeout: float | None) -> bool:
        self.closed = True
        t = self.thread
        if t is not None and t.is_alive():
            self.stopping = True
            self.wake.set()
            t.join(timeout)
            finished = not t.is_alive()
        else:
            finished = True
        if finished and self.q:
            self.drain(everything=True)
        self.running = False
        return finished and not self.q

    def stats(self) -> LoggerStats:
        with self.pop_lock:
            popped, qlen = self.popped, len(self.q)
        with self.done_cond:
            done, written, sink, internal, batches = (
                self.done, self.written, self.dropped_sink, self.dropped_internal, self.batches
            )
        with self.count_lock:
            sampled, full, closed, internal_log = (
                self.sampled_out, self.dropped_full, self.dropped_closed, self.internal_in_log
            )
        queued = qlen + popped - done
        return LoggerStats(
            logged=sampled + full + closed + internal_log + popped + qlen,
            sampled_out=sampled,
            queued=queued,
            written=written,
            dropped_queue_full=full,
            dropped_sink_error=sink,
            dropped_internal=internal + internal_log,
            dropped_closed=closed,
            batches_written=batches,
            last_error=self.last_error,
        )


_LIVE_CORES: weakref.WeakSet[_Core] = weakref.WeakSet()
_FORK_HOOK_REGISTERED = False
_FORK_HOOK_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    for core in list(_LIVE_CORES):
        core.after_fork_in_child()


def _register_fork_hook(core: _Core) -> None:
    global _FORK_HOOK_REGISTERED
    with _FORK_HOOK_LOCK:
        _LIVE_CORES.add(core)
        if not _FORK_HOOK_REGISTERED and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _FORK_HOOK_REGISTERED = True


def _shutdown(core: _Core, timeout: float) -> None:
    # Called at interpreter exit or when the Logger is garbage-collected (weakref.finalize).
    try:
        core.close(timeout)
    except Exception as e:  # pragma: no cover - shutting down; nowhere to report but the log
        _log.warning("mlsleuth capture logger failed to flush on shutdown: %s", e)


class Logger:
    """Logs model requests to a sink without slowing down or failing the serving code.

    ``log`` never raises and never blocks: when the queue is full, the sink fails, or the logger itself
    fails, the record is dropped and counted (see :meth:`stats`). Records are written in batches by a
    background thread, by size (``batch_size``) and by time (``flush_interval``), and flushed at
    interpreter exit. In a forked child (e.g. gunicorn workers with ``preload``) the logger starts
    empty and starts its own thread.

    Parameters
    ----------
    sink
        Where batches go: :class:`MemorySink`, :class:`StoreSink`, :class:`HttpSink` or any object with a
        ``write(table)`` method.
    model, model_version
        Defaults for ``log`` calls that do not name them.
    batch_size
        Records per batch written to the sink.
    flush_interval
        Seconds after which a partial batch is written anyway.
    max_queue
        Records that may wait for the sink; more are dropped and counted in ``dropped_queue_full``.
    sample_rate
        Fraction of calls kept (``1.0`` keeps all; the draw is random, reproducible with ``seed``).
    seed
        Seed of the sampling draw.
    redact
        Fields whose values are replaced by ``redact_with`` before writing; a bare name means the input and
        the metadata column of that name (``"email"`` is ``"input.email"`` and ``"email"``); other columns
        are named in full (``"feature.x"``, ``"lineage.source"``).
    hash_fields
        Fields replaced by a keyed hash (HMAC-SHA256 with ``hash_key``, first 16 hex characters), so equal
        values still match across rows and tables but the raw value is not stored.
    hash_key
        The secret key for ``hash_fields``.
    redact_with
        The value redacted fields get (``None`` stores null).
    retries
        How many times a failed ``sink.write`` is retried (with doubling backoff from ``retry_backoff``
        seconds) before the batch is dropped.
    retry_backoff
        Seconds before the first retry.

    Raises
    ------
    ConfigError
        When a parameter is out of range (only at construction; ``log`` never raises).

    Examples
    --------
    >>> from mlsleuth.capture import Logger, MemorySink
    >>> sink = MemorySink()
    >>> logger = Logger(sink, model="fraud", model_version="3")
    >>> logger.log("r1", inputs={"amount": 12.5}, features={"amount": 12.5}, score=0.91, region="EU")
    >>> logger.flush()
    True
    >>> sink.table().column_names
    ['request_id', 'ts', 'model', 'model_version', 'input.amount', 'feature.amount', 'score', 'prediction', \
'latency_ms', 'error', 'region']
    >>> logger.close()
    True
    """

    def __init__(
        self,
        sink: Sink,
        *,
        model: str | None = None,
        model_version: str | None = None,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        sample_rate: float = 1.0,
        seed: int | None = None,
        redact: Iterable[str] = (),
        hash_fields: Iterable[str] = (),
        hash_key: bytes | str | None = None,
        redact_with: str | None = "[redacted]",
        retries: int = 0,
        retry_backoff: float = 0.05,
        shutdown_timeout: float = 10.0,
    ) -> None:
        if not callable(getattr(sink, "write", None)):
            raise ConfigError(f"sink must have a write(table) method, got {type(sink).__name__}", column="sink")
        checks = {
            "batch_size": (batch_size, batch_size >= 1, ">= 1"),
            "flush_interval": (flush_interval, flush_interval > 0, "> 0 seconds"),
            "max_queue": (max_queue, max_queue >= 1, ">= 1"),
            "sample_rate": (sample_rate, 0.0 <= sample_rate <= 1.0, "between 0 and 1"),
            "retries": (retries, retries >= 0, ">= 0"),
            "retry_backoff": (retry_backoff, retry_backoff >= 0, ">= 0 seconds"),
        }
        for name, (value, ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"Logger {name} must be {expected}, got {value!r}", column=name)
        redaction = Redaction.build(redact=redact, hash_fields=hash_fields, hash_key=hash_key, replacement=redact_with)
        self._core = _Core(
            sink,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue=max_queue,
            sample_rate=sample_rate,
            seed=seed,
            retries=retries,
            retry_backoff=retry_backoff,
            model=model,
            model_version=model_version,
            redaction=redaction,
        )
        _register_fork_hook(self._core)
        self._finalizer = weakref.finalize(self, _shutdown, self._core, shutdown_timeout)
        self._core.start()

    def __repr__(self) -> str:
        c = self._core
        return f"Logger(sink={c.sink!r}, model={c.model!r}, batch_size={c.batch_size}, sample_rate={c.sample_rate})"

    @property
    def sink(self) -> Sink:
        """The sink batches are written to."""
        return self._core.sink

    def log(
        self,
        request_id: Any,
        *,
        model: str | None = None,
        model_version: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        features: Mapping[str, Any] | None = None,
        prediction: Any = None,
        score: float | None = None,
        latency_ms: float | None = None,
        error: str | None = None,
        lineage: Mapping[str, Any] | None = None,
        **meta: Any,
    ) -> None:
        """Queue one request for logging; returns at once, never raises.

        The row gets ``ts`` = now (UTC). Mappings are not copied: do not mutate them after the call.

        Parameters
        ----------
        request_id
            Unique per request (stringified when not a string).
        model, model_version
            The model that answered; default to the logger's.
        inputs
            Raw inputs as they arrived, stored as ``input.<name>`` columns.
        features
            Features as the model received them, stored as ``feature.<name>`` columns.
        prediction
            The decision or predicted value.
        score
            The model's score / confidence.
        latency_ms
            Serving latency in milliseconds.
        error
            The error or fallback the serving layer recorded, ``None`` when none.
        lineage
            Per-request provenance (e.g. feature-store snapshot ids), stored as ``lineage.<name>`` columns.
        **meta
            Other request metadata (``region="EU"``), one column each.
        """
        c = self._core
        try:
            if c.sampling and c.rand() >= c.sample_rate:
                with c.count_lock:
                    c.sampled_out += 1
                return
            q = c.q
            if len(q) >= c.max_queue or c.closed:
                with c.count_lock:
                    if c.closed:
                        c.dropped_closed += 1
                    else:
                        c.dropped_full += 1
                return
            if not c.running:
                c.start()
            q.append(
                (request_id, _time_ns(), model, model_version, inputs, features, prediction, score, latency_ms, error,
                 lineage, meta)
            )
            if len(q) >= c.batch_size and not c.wake_is_set():
                c.wake.set()
        except Exception as e:
            c.internal_error(e)

    def stats(self) -> LoggerStats:
        """Current counters; after :meth:`flush` returns True, ``queued`` is 0 for records logged before it."""
        return self._core.stats()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Block until every record queued before the call is written or dropped.

        Meant for tests, batch jobs and shutdown, not for the serving path.

        Returns
        -------
        bool
            False if ``timeout`` seconds passed first (e.g. the sink hangs).
        """
        try:
            return self._core.flush(timeout)
        except Exception as e:
            self._core.internal_error(e)
            return False

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, stop the background thread and refuse further records (they count as ``dropped_closed``).

        Returns
        -------
        bool
            True when everything was written or dropped within ``timeout``.
        """
        self._finalizer.detach()
        try:
            return self._core.close(timeout)
        except Exception as e:
            self._core.internal_error(e)
            return False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._core.closed

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def capture(
        self,
        *,
        model: str | None = None,
        model_version: str | None = None,
        request_id: Callable[..., Any] | None = None,
        inputs: Callable[..., Mapping[str, Any] | None] | None = None,
        features: Callable[..., Mapping[str, Any] | None] | None = None,
        extract: Callable[[Any], tuple[float | None, Any]] | None = None,
        **meta: Any,
    ) -> Callable[[F], F]:
        """Decorate a predict function (sync or async) so that each call is logged.

        Parameters
        ----------
        model, model_version
            Logged with each call; default to the logger's.
        request_id
            Called with the function's arguments, returns the request id; default a random uuid4 hex.
        inputs
            Called with the function's arguments, returns the inputs mapping; default the first positional
            argument when it is a mapping, else the keyword arguments.
        features
            Called with the function's arguments, returns the features mapping; default none.
        extract
            Called with the return value, returns ``(score, prediction)``. Default: a number is the score, a
            bool or string the prediction, a mapping gives its ``score`` and ``prediction`` keys.
        **meta
            Constant metadata columns logged with every call.

        Notes
        -----
        The latency of each call is measured. When the function raises, the error text is logged and the
        function's own exception propagates unchanged; failures of the logging itself are swallowed.

        Examples
        --------
        >>> from mlsleuth.capture import Logger, MemorySink
        >>> logger = Logger(MemorySink(), model="fraud")
        >>> @logger.capture(model_version="3")
        ... def predict(row):
        ...     return 0.25
        >>> predict({"amount": 3.0})
        0.25
        >>> logger.close()
        True
        """
        from mlsleuth.capture._decorator import make_capture

        return make_capture(
            self,
            model=model,
            model_version=model_version,
            request_id=request_id,
            inputs=inputs,
            features=features,
            extract=extract,
            meta=meta,
        )
