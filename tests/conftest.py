"""Fixtures shared by test files: one local Spark engine for every Spark test (the JVM starts once)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


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
