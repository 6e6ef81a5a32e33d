"""Fixtures shared by test files: one local Spark engine for every Spark test (the JVM starts once), a
real uvicorn server on a free loopback port, and a comparison of results that tolerates float summation order."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

#: Asserts two results equal, floats within 1e-6 (relative for large values); ``path`` names where.
AssertClose = Callable[[object, object, str], None]

#: ``errors_between(log, lo, hi)``: the log with serving failures (an error and a default score) from ``lo`` to ``hi``.
ErrorsBetween = Callable[[Any, datetime, datetime], Any]

#: Serves the app that ``build(base_url)`` returns on a free loopback port; yields the base URL.
ServeApp = Callable[[Callable[[str], Any]], contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def _served(build: Callable[[str], Any]) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(build(base), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def serve_app() -> ServeApp:
    """``with serve_app(lambda base_url: app) as base_url:`` runs the app in a thread for the block."""
    return _served


def _java() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and (Path(home) / "bin" / "java").exists()))


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] SparkEngine; the test is skipped, saying why, without PySpark or a Java runtime."""
    pytest.importorskip("pyspark", reason="PySpark is not installed (pip install 'mlsleuth[spark]')")
    if not _java():
        pytest.skip("no Java runtime (java on PATH or JAVA_HOME): Spark cannot start")
    from mlsleuth.store import SparkEngine

    eng = SparkEngine(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    yield eng
    eng.close()


def _close(a: object, b: object, path: str = "") -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), path
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.fixture(scope="session")
def assert_close() -> AssertClose:
    """Equal results from two engines or two readers of the same data: a sum's order changes its last bits."""
    return _close


def _errors_between(log: Any, lo: datetime, hi: datetime) -> Any:
    import numpy as np
    import pyarrow as pa

    ts = np.array([t.timestamp() for t in log.column("ts").to_pylist()])
    hit = (ts >= lo.timestamp()) & (ts < hi.timestamp()) & (np.random.default_rng(0).random(len(ts)) < 0.3)
    error = pa.array(np.where(hit, "timeout: feature store", None), pa.string())
    score = np.where(hit, 0.0, log.column("score").to_numpy(zero_copy_only=False))
    log = log.set_column(log.column_names.index("error"), "error", error)
    return log.set_column(log.column_names.index("score"), "score", pa.array(score))


@pytest.fixture(scope="session")
def errors_between() -> ErrorsBetween:
    """A third of the requests failing, with a default score of 0, between two times: a serving fault."""
    return _errors_between
