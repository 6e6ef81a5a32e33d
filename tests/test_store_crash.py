"""A writer killed with SIGKILL in the middle of an ingest or a compaction leaves a readable store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from mlsleuth.store import LocalStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

BATCH = 20_000

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import pyarrow as pa
    from mlsleuth.store import LocalStore

    root, offset, batch, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = LocalStore.open(root)
    rng = np.random.default_rng(offset)
    day = 1_772_755_200_000_000 + (offset // 1_000_000) * 86_400_000_000  # one UTC day per child
    i = 0
    while True:
        start = offset + i * batch
        cols = {
            "request_id": pa.array(np.char.add("r", np.arange(start, start + batch).astype(str))),
            "ts": pa.array(day + rng.integers(0, 86_400_000_000, batch), pa.timestamp("us", tz="UTC")),
            "model": pa.array(["fraud"] * batch),
            "score": rng.random(batch),
            "region": pa.array(rng.choice(["EU", "US", "APAC"], batch)),
        }
        for j in range(12):
            cols[f"feature.f{j}"] = rng.normal(size=batch)
        store.append_log(pa.table(cols))
        i += 1
        if i == 1:
            print("ready", flush=True)
        if mode == "compact" and i % 3 == 0:
            store.compact()
""")


def run_and_kill(root: Path, offset: int, mode: str, after: float) -> None:
    """Start a writer, wait until its first batch is stored, let it run ``after`` seconds, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(offset), str(BATCH), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        reader = LocalStore.open(root)
        deadline = time.monotonic() + after
        while time.monotonic() < deadline:  # read while the writer writes: never a partial file
            n = reader.sql("SELECT count(*) AS n FROM log").column("n")[0].as_py()
            assert n % BATCH == 0
        reader.close()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def check_store(root: Path) -> int:
    """Every file under log/ reads fully, and every way of counting agrees on a whole number of batches."""
    # Open first: a compactor killed between renaming its merged file in and deleting its inputs leaves both
    # on disk until open() finishes its work, and counting the files before that counts those rows twice.
    store = LocalStore.open(root)
    total = 0
    for f in (root / "log").rglob("*.parquet"):
        total += pq.read_table(f).num_rows  # raises on a partial file
    assert total % BATCH == 0
    assert not list((root / "_staging").iterdir()), "open() cleans a dead writer's staging files"
    assert not list((root / "log").rglob("_compact-*.json")), "open() finishes a dead compactor's work"
    assert store.status().rows == total
    assert store.read_log(model="fraud", columns=["request_id"]).num_rows == total
    glob = duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/log/**/*.parquet', hive_partitioning=true)")
    assert glob.fetchall() == [(total,)]
    assert pads.dataset(root / "log", format="parquet", partitioning="hive").count_rows() == total
    ids = store.sql("SELECT count(DISTINCT request_id) AS n FROM log").column("n")[0].as_py()
    assert ids == total, "no row is stored twice"
    store.close()
    return total


def test_a_writer_killed_mid_ingest_leaves_a_readable_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    LocalStore.init(root).close()
    before = 0
    for k, after in enumerate((0.5, 0.3, 0.8)):
        run_and_kill(root, offset=k * 1_000_000, mode="append", after=after)
        total = check_store(root)
        assert total >= before + BATCH  # nothing already stored is lost
        before = total


def test_a_writer_killed_mid_compaction_leaves_a_readable_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    LocalStore.init(root).close()
    for k, after in enumerate((0.6, 1.0)):
        run_and_kill(root, offset=k * 1_000_000, mode="compact", after=after)
        check_store(root)
