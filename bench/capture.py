"""Capture benchmarks: Logger.log() call overhead, store ingest rate and bytes on disk per row.

Run: ``.venv/bin/python bench/capture.py [--quick]``

1. ``Logger.log()`` overhead: 200k calls with realistic arguments (8 inputs, 12 features, score,
   prediction, latency, one metadata field) to a Logger whose sink discards, with the background thread
   running (it converts every batch to Arrow, so it competes with the caller for the GIL as in a real
   server). Each call is timed on its own with ``time.perf_counter_ns``; the timer's own cost (median of
   back-to-back reads, ~50-100 ns here) is subtracted. Per-call timing is what gives a p99 at all; as a
   check on resolution, the mean over blocks of 1000 untimed calls is printed next to it.
2. Ingest: a 30-column prediction log (1M rows as ten 100k-row Arrow batches) appended with
   ``LocalStore.append_log`` per batch, against ``pandas.DataFrame.to_parquet`` per batch (the DataFrames are
   built before the clock starts) into the same kind of folder. Rows/s is rows over the summed per-batch
   time; bytes per row is the folder's size over rows. Median of ``--repeats`` runs, each into a new folder.
3. End to end: 30-column rows logged one by one through a Logger into a LocalStore (``log()`` calls,
   conversion to Arrow on the background thread and the store's append), rows/s until ``flush()`` returns.

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.capture import Logger, StoreSink
from mlsleuth.schema import TIMESTAMP

N_INPUTS, N_FEATURES = 8, 12


class DiscardSink:
    """A sink that accepts and forgets every batch."""

    def write(self, table: pa.Table) -> None:
        pass


def request_args(n: int, seed: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``n`` distinct (inputs, features) pairs as a serving process would hold them."""
    rng = np.random.default_rng(seed)
    countries = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL"]
    out = []
    for _ in range(n):
        amount = round(float(rng.gamma(2.0, 40.0)), 2)
        inputs: dict[str, Any] = {
            "amount": amount,
            "country": countries[int(rng.integers(len(countries)))],
            "merchant_id": int(rng.integers(10_000)),
            "card_age_days": int(rng.integers(3_000)),
            "avg_amount_30d": round(float(rng.gamma(2.0, 40.0)), 2),
            "n_tx_24h": int(rng.poisson(3)),
            "device": "mobile" if rng.random() < 0.6 else "web",
            "is_new_device": bool(rng.random() < 0.1),
        }
        features = {f"f{k}": float(rng.normal()) for k in range(N_FEATURES)}
        out.append((inputs, features))
    return out


# -- 1. log() overhead -----------------------------------------------------------------------------------------


def bench_log_overhead(n_calls: int) -> dict[str, float]:
    args = request_args(1000)
    logger = Logger(DiscardSink(), model="fraud", model_version="3", max_queue=2 * n_calls + 1)
    log = logger.log
    pc = time.perf_counter_ns
    timer = np.empty(20_000, dtype=np.int64)
    for i in range(len(timer)):
        t0 = pc()
        timer[i] = pc() - t0
    timer_ns = float(np.median(timer))
    per_call = np.empty(n_calls, dtype=np.int64)
    for i in range(n_calls):
        inputs, features = args[i % 1000]
        t0 = pc()
        log(i, inputs=inputs, features=features, score=0.42, prediction=1, latency_ms=3.1, region="EU")
        per_call[i] = pc() - t0
    # blocks of 1000 untimed calls: the mean per call, free of timer resolution and timer overhead
    block_means = []
    for b in range(n_calls // 1000):
        t0 = pc()
        for j in range(1000):
            inputs, features = args[j]
            log(b * 1000 + j, inputs=inputs, features=features, score=0.42, prediction=1, latency_ms=3.1,
                region="EU")
        block_means.append((pc() - t0) / 1000)
    logger.flush(timeout=120)
    stats = logger.stats()
    logger.close()
    # the block loop also pays for unpacking args[j] and the loop itself (~40-60 ns): left in, conservative
    us = (per_call - timer_ns) / 1000
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p90_us": float(np.percentile(us, 90)),
        "p99_us": float(np.percentile(us, 99)),
        "p999_us": float(np.percentile(us, 99.9)),
        "block_mean_us": float(np.median(block_means)) / 1000,
        "timer_ns": timer_ns,
        "written": float(stats.written),
        "dropped": float(stats.dropped),
    }


# -- 2. ingest -------------------------------------------------------------------------------------------------


def make_log(n_rows: int, seed: int = 1) -> pa.Table:
    """A 30-column prediction log: ids, time, model, 8 inputs, 12 features, outputs, metadata."""
    rng = np.random.default_rng(seed)
    hexed = rng.bytes(16 * n_rows).hex()  # uuid4-like request ids: 32 random hex characters
    t0 = np.datetime64("2026-03-06T00:00:00", "us").astype(np.int64)
    ts = t0 + np.cumsum(rng.integers(0, 2_000, size=n_rows))  # ~1k requests/s
    countries = np.array(["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL"])
    regions = np.array(["EU", "US", "APAC"])
    score = rng.beta(1.2, 6.0, size=n_rows)
    err = pa.array(np.where(rng.random(n_rows) < 0.002, "timeout: feature store", ""))
    err = pc.if_else(pc.equal(err, ""), pa.scalar(None, pa.string()), err)
    cols: dict[str, Any] = {
        "request_id": pa.array([hexed[i : i + 32] for i in range(0, 32 * n_rows, 32)]),
        "ts": pa.array(ts, type=TIMESTAMP),
        "model": pa.array(np.full(n_rows, "fraud")),
        "model_version": pa.array(np.where(rng.random(n_rows) < 0.9, "3", "4")),
        "input.amount": np.round(rng.gamma(2.0, 40.0, n_rows), 2),
        "input.country": pa.array(countries[rng.integers(len(countries), size=n_rows)]),
        "input.merchant_id": rng.integers(10_000, size=n_rows),
        "input.card_age_days": rng.integers(3_000, size=n_rows),
        "input.avg_amount_30d": np.round(rng.gamma(2.0, 40.0, n_rows), 2),
        "input.n_tx_24h": rng.poisson(3, n_rows),
        "input.device": pa.array(np.where(rng.random(n_rows) < 0.6, "mobile", "web")),
        "input.is_new_device": rng.random(n_rows) < 0.1,
    }
    for k in range(N_FEATURES):
        # features as models see them: standardised numbers, half at float32 precision, some one-hot
        if k < 6:
            cols[f"feature.f{k}"] = rng.normal(size=n_rows)
        elif k < 9:
            cols[f"feature.f{k}"] = rng.normal(size=n_rows).astype(np.float32).astype(np.float64)
        else:
            cols[f"feature.f{k}"] = (rng.random(n_rows) < 0.3).astype(np.float64)
    cols |= {
        "score": score,
        "prediction": (score > 0.5).astype(np.int64),
        "latency_ms": np.round(rng.lognormal(1.0, 0.4, n_rows), 3),
        "error": err,
        "region": pa.array(regions[rng.integers(len(regions), size=n_rows)]),
        "channel": pa.array(np.where(rng.random(n_rows) < 0.5, "app", "api")),
    }
    table = pa.table(cols)
    assert table.num_columns == 30, table.num_columns
    return table


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_store(batches: list[pa.Table], root: Path) -> tuple[float, float]:
    from mlsleuth.store import LocalStore

    store = LocalStore.init(root)
    elapsed = 0.0
    for b in batches:
        t0 = time.perf_counter()
        store.append_log(b)
        elapsed += time.perf_counter() - t0
    rows = sum(b.num_rows for b in batches)
    if hasattr(store, "close"):
        store.close()
    return rows / elapsed, folder_bytes(root) / rows


def bench_pandas(frames: list[pd.DataFrame], root: Path) -> tuple[float, float]:
    root.mkdir(parents=True)
    elapsed = 0.0
    for i, df in enumerate(frames):
        t0 = time.perf_counter()
        df.to_parquet(root / f"part-{i:05d}.parquet")
        elapsed += time.perf_counter() - t0
    rows = sum(len(f) for f in frames)
    return rows / elapsed, folder_bytes(root) / rows


# -- 3. end to end ---------------------------------------------------------------------------------------------


def bench_logger_to_store(n_rows: int, root: Path) -> tuple[float, int]:
    from mlsleuth.store import LocalStore

    args = request_args(1000, seed=3)
    store = LocalStore.init(root)
    logger = Logger(StoreSink(store), model="fraud", model_version="3", batch_size=10_000, max_queue=n_rows + 1)
    t0 = time.perf_counter()
    for i in range(n_rows):
        inputs, features = args[i % 1000]
        logger.log(f"r{i}", inputs=inputs, features=features, score=0.42, prediction=0, latency_ms=3.1,
                   error=None, region="EU", channel="app", country="DE")
    logger.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    s = logger.stats()
    logger.close()
    return s.written / elapsed, s.dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--repeats", type=int, default=3)
    opts = ap.parse_args()
    n_calls = 20_000 if opts.quick else 200_000
    n_rows, batch_rows = (100_000, 10_000) if opts.quick else (1_000_000, 100_000)
    n_e2e = 20_000 if opts.quick else 200_000

    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"pyarrow {pa.__version__}, pandas {pd.__version__}")

    overhead = [bench_log_overhead(n_calls) for _ in range(opts.repeats)]
    med = {k: statistics.median(o[k] for o in overhead) for k in overhead[0]}
    print(f"Logger.log() over {n_calls} calls x {opts.repeats}: p50 {med['p50_us']:.2f} us, "
          f"p90 {med['p90_us']:.2f} us, p99 {med['p99_us']:.2f} us, p99.9 {med['p999_us']:.2f} us; "
          f"mean over 1000-call blocks {med['block_mean_us']:.2f} us "
          f"(timer cost {med['timer_ns']:.0f} ns subtracted from per-call times); "
          f"dropped {med['dropped']:.0f}")

    table = make_log(n_rows)
    batches = [table.slice(i, batch_rows) for i in range(0, n_rows, batch_rows)]
    frames = [b.to_pandas() for b in batches]
    store_runs, pandas_runs = [], []
    tmp = Path(tempfile.mkdtemp(prefix="mlsleuth-bench-"))
    try:
        for r in range(opts.repeats):
            store_runs.append(bench_store(batches, tmp / f"store{r}"))
            pandas_runs.append(bench_pandas(frames, tmp / f"pandas{r}"))
        e2e_rate, e2e_dropped = bench_logger_to_store(n_e2e, tmp / "e2e")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s_rate = statistics.median(r for r, _ in store_runs)
    s_bytes = statistics.median(b for _, b in store_runs)
    p_rate = statistics.median(r for r, _ in pandas_runs)
    p_bytes = statistics.median(b for _, b in pandas_runs)
    print(f"ingest of {n_rows} rows x {table.num_columns} columns in {batch_rows}-row Arrow batches "
          f"(median of {opts.repeats}):")
    print(f"  LocalStore.append_log : {s_rate:12,.0f} rows/s, {s_bytes:6.1f} bytes/row on disk")
    print(f"  DataFrame.to_parquet  : {p_rate:12,.0f} rows/s, {p_bytes:6.1f} bytes/row on disk")
    print(f"  store vs pandas       : {s_rate / p_rate:.2f}x the rate, {s_bytes / p_bytes:.2f}x the bytes")
    print(f"Logger -> StoreSink end to end ({n_e2e} log() calls, 30 columns): {e2e_rate:,.0f} rows/s, "
          f"dropped {e2e_dropped}")
    print(json.dumps({
        "log_call_p50_us": round(med["p50_us"], 2),
        "log_call_p99_us": round(med["p99_us"], 2),
        "log_call_block_mean_us": round(med["block_mean_us"], 2),
        "ingest_rows_per_s": round(s_rate),
        "bytes_per_row": round(s_bytes, 1),
        "pandas_rows_per_s": round(p_rate),
        "pandas_bytes_per_row": round(p_bytes, 1),
        "vs_pandas": round(s_rate / p_rate, 2),
        "bytes_vs_pandas": round(s_bytes / p_bytes, 2),
        "logger_to_store_rows_per_s": round(e2e_rate),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
