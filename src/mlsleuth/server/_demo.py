"""Stream a recorded week of traffic into a running server in accelerated time (``mlsleuth serve --demo``).

The log goes through the capture SDK's :class:`~mlsleuth.capture.HttpSink` one slice of data time
after another; change events and labels are sent once the stream's clock passes their time.
:func:`demo_config` is the server's side of the demo: a write token for the stream, the demo's alert
rule, and alerts and incident detection run every two seconds, since a week of data passes in minutes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.capture import ARROW_STREAM_MEDIA_TYPE, Compression, HttpSink, table_to_ipc
from mlsleuth.errors import CaptureError
from mlsleuth.schema import parse_timestamp
from mlsleuth.server._config import AlertRule, Scope, ServerConfig

__all__ = ["demo_config", "stream_week"]

#: Seconds between alert evaluations and incident checks while the demo streams (a week passes in minutes).
DEMO_INTERVAL = 2.0


def demo_config(config: ServerConfig, token: str) -> ServerConfig:
    """``config`` for ``mlsleuth serve --demo``: ``token`` may write, the demo's rule, short intervals.

    The operator's alert rules, if any, replace the demo's score-drift rule; alerts and incident
    detection run at least every :data:`DEMO_INTERVAL` seconds.

    Examples
    --------
    >>> from pathlib import Path
    >>> cfg = demo_config(ServerConfig(store=Path("s")), "t")
    >>> cfg.tokens["t"].value, cfg.incidents.interval, [r.name for r in cfg.rules]
    ('write', 2.0, ['fraud-score-drift'])
    """
    rules = config.rules or (AlertRule("fraud-score-drift", "fraud", "prediction_drift", column="score",
                                       window=timedelta(hours=1), lookback=timedelta(days=1),
                                       cooldown=timedelta(days=1)),)
    return replace(config, tokens={**config.tokens, token: Scope.WRITE}, rules=rules,
                   alert_interval=min(config.alert_interval, DEMO_INTERVAL) or DEMO_INTERVAL,
                   incidents=replace(config.incidents, interval=min(config.incidents.interval, DEMO_INTERVAL)))


def _post(url: str, token: str, body: bytes, content_type: str) -> None:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=120) as resp:
        resp.read()


def wait_until_up(base_url: str, *, timeout: float = 60.0) -> None:
    """Block until ``GET /health`` answers; raises :class:`~mlsleuth.errors.CaptureError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(f"{base_url}/health", timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise CaptureError(f"the server at {base_url} did not come up within {timeout:.0f} s") from exc
            time.sleep(0.2)


def stream_week(base_url: str, token: str, *, model: str, log: pa.Table, reference: pa.Table,
                labels: pa.Table | None = None, events: Sequence[Mapping[str, Any]] = (),
                lineage: Mapping[str, Sequence[str]] | None = None, step: timedelta = timedelta(hours=1),
                seconds_per_step: float = 1.0, stop: threading.Event | None = None,
                on_step: Callable[[datetime, int], None] | None = None,
                check_every: timedelta | None = None) -> int:
    """Send ``log`` to the server ``step`` of data time at a time, ``seconds_per_step`` apart.

    The reference and lineage go first; each event and label is sent once the clock passes its
    ``ts`` / ``label_ts`` (labels without one go with their request). Returns the rows sent.

    Parameters
    ----------
    base_url, token
        The server and a write token.
    model
        The model the reference belongs to.
    log, reference, labels, events, lineage
        The week's tables (docs/contract.md layout).
    step, seconds_per_step
        Data time per slice, and wall time between slices (the acceleration).
    stop
        Set it to end the stream early.
    on_step
        Called with the stream clock and the rows sent so far after each slice.
    check_every
        Run incident detection (``POST /v1/incidents/check``) once this much data time has streamed
        since the last run, and wait for it: detection then keeps up with the stream's clock however
        fast it runs, so an incident opens this close to its onset in data time. ``None``: the
        server's own schedule only.
    """
    wait_until_up(base_url)
    _post(f"{base_url}/v1/models/{model}/reference", token, table_to_ipc(reference, Compression.ZSTD),
          ARROW_STREAM_MEDIA_TYPE)
    if lineage:
        _post(f"{base_url}/v1/lineage", token, json.dumps({k: list(v) for k, v in lineage.items()}).encode(),
              "application/json")
    sink = HttpSink(base_url, token=token, trust_env=False)
    log = log.sort_by("ts")
    ts = log.column("ts")
    start = ts[0].as_py().replace(minute=0, second=0, microsecond=0)
    end = ts[-1].as_py()
    pending = sorted(events, key=lambda e: parse_timestamp(e["ts"]))
    label_ts = None
    if labels is not None and "label_ts" in labels.column_names:
        label_ts = labels.column("label_ts")
    sent = 0
    clock = start
    checked = start
    while clock <= end and not (stop is not None and stop.is_set()):
        nxt = clock + step
        part = log.filter(pc.and_(pc.greater_equal(ts, pa.scalar(clock, ts.type)),
                                  pc.less(ts, pa.scalar(nxt, ts.type))))
        due = [e for e in pending if parse_timestamp(e["ts"]) < nxt]
        if due:
            pending = pending[len(due):]
            _post(f"{base_url}/v1/events", token, json.dumps([dict(e) for e in due], default=str).encode(),
                  "application/json")
        if part.num_rows:
            sink.write(part)
            sent += part.num_rows
        if labels is not None and label_ts is not None:
            lo = pa.scalar(clock, label_ts.type)
            hi = pa.scalar(nxt, label_ts.type)
            got = labels.filter(pc.and_(pc.greater_equal(label_ts, lo), pc.less(label_ts, hi)))
            if got.num_rows:
                _post(f"{base_url}/v1/labels", token, table_to_ipc(got, Compression.ZSTD), ARROW_STREAM_MEDIA_TYPE)
        if check_every is not None and nxt - checked >= check_every:
            _post(f"{base_url}/v1/incidents/check", token, b"", "application/json")
            checked = nxt
        if on_step is not None:
            on_step(nxt, sent)
        clock = nxt
        if stop is not None:
            stop.wait(seconds_per_step)
        else:
            time.sleep(seconds_per_step)
    return sent
