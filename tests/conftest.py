"""Fixtures shared by test files: one local Spark engine for every Spark test (the JVM starts once), and
a real uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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
