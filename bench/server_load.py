"""Load test of ``mlsleuth serve``: concurrent clients on loopback ingest a million requests in batches.

Starts the server (``mlsleuth serve``, a subprocess over a fresh temporary store) on 127.0.0.1,
runs ``--clients`` threads that each POST Arrow IPC batches (zstd, like the capture SDK's
HttpSink) to ``/v1/log``, then counts the rows the store holds. Prints rows/s and the p50/p99
latency of a batch; the last line is JSON with ``rows``, ``lost``, ``rows_per_s``, ``p50_ms``,
``p99_ms``. Bounded: at most ``--rows`` rows and ``--max-seconds`` of sending; loopback only.

    .venv/bin/python bench/server_load.py                   # 1M rows, 8 clients, 5,000-row batches
    .venv/bin/python bench/server_load.py --rows 100000     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa

from mlsleuth.capture import ARROW_STREAM_MEDIA_TYPE, Compression, table_to_ipc

TOKEN = "bench-writer"
T0 = np.datetime64("2026-03-02T00:00:00", "us")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def batch(client: int, index: int, rows: int, rng: np.random.Generator) -> pa.Table:
    """One batch of synthetic requests with ids unique across clients and batches."""
    first = (client * 1_000_000 + index) * rows
    ids = np.char.add("req-", np.arange(first, first + rows).astype(str))
    ts = T0 + (rng.integers(0, 3 * 86_400_000_000, rows)).astype("timedelta64[us]")
    score = rng.beta(1, 20, rows)
    return pa.table({
        "request_id": pa.array(ids.tolist(), pa.string()),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "model": pa.array(["bench"] * rows, pa.string()),
        "model_version": pa.array(["v1"] * rows, pa.string()),
        "region": pa.array(rng.choice(["EU", "US", "APAC"], rows).tolist(), pa.string()),
        "feature.amount": rng.lognormal(3, 1, rows),
        "feature.velocity": rng.poisson(2, rows).astype(np.float64),
        "score": score,
        "prediction": (score > 0.5).astype(np.int64),
        "latency_ms": rng.gamma(2, 5, rows),
    })


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": ARROW_STREAM_MEDIA_TYPE, "Authorization": f"Bearer {TOKEN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=120) as resp:
        answer = json.loads(resp.read())
    if answer.get("quarantined"):
        raise RuntimeError(f"the server quarantined rows: {answer}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.batch <= 200_000 or not 1 <= args.rows <= 5_000_000:
        ap.error("keep --clients in 1..64, --batch in 1..200000 and --rows in 1..5000000")

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="mlsleuth-load-") as tmp:
        store = Path(tmp) / "store"
        env = {**os.environ, "MLSLEUTH_TOKENS": f"{TOKEN}:write", "no_proxy": "127.0.0.1"}
        cli = Path(sys.executable).with_name("mlsleuth")
        server = subprocess.Popen([str(cli), "serve", "--store", str(store), "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{base}/health",
                                                                                           timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-2000:]}"
                                         if server.stderr else "the server did not start") from None
                    time.sleep(0.2)
            print(f"server up on {base} (store {store}); {args.clients} clients send {args.rows:,} rows in batches "
                  f"of {args.batch:,}", flush=True)

            n_batches = -(-args.rows // args.batch)
            latencies: list[float] = []
            sent = [0] * args.clients
            failures: list[str] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.max_seconds

            def client(k: int) -> None:
                rng = np.random.default_rng(k)
                for b in range(k, n_batches, args.clients):
                    if time.monotonic() > stop_at:
                        return
                    rows = min(args.batch, args.rows - b * args.batch)
                    body = table_to_ipc(batch(k, b, rows, rng), Compression.ZSTD)
                    t = time.perf_counter()
                    try:
                        post(f"{base}/v1/log", body)
                    except Exception as exc:  # a lost batch is counted, not fatal
                        with lock:
                            failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        latencies.append(time.perf_counter() - t)
                    sent[k] += rows

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            req = urllib.request.Request(f"{base}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=120) as resp:
                stored = int(json.loads(resp.read())["rows"])
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()

    attempted = min(args.rows, sum(sent) + args.batch * len(failures))
    lost = attempted - stored
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    rate = stored / wall if wall > 0 else 0.0
    print(f"sent {sum(sent):,} rows in {len(latencies)} batches in {wall:.1f} s; stored {stored:,}; lost {lost:,}; "
          f"failed batches {len(failures)}{' (first: ' + failures[0] + ')' if failures else ''}")
    print(f"throughput {rate:,.0f} rows/s; batch latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(json.dumps({"rows": stored, "lost": lost, "rows_per_s": round(rate, 1), "p50_ms": round(p50, 2),
                      "p99_ms": round(p99, 2), "clients": args.clients, "batch_rows": args.batch,
                      "seconds": round(wall, 2), "failed_batches": len(failures)}))


if __name__ == "__main__":
    main()
