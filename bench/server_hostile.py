"""Hostile inputs against ``mlsleuth serve``: how fast each is refused, and whether ``/health`` stalls meanwhile.

Starts the server (``mlsleuth serve``, a subprocess over a fresh temporary store) on 127.0.0.1 and
sends, one at a time: a row of 100,000 fields, JSON nested 100,000 deep, a zstd Arrow body of a few
KB that expands to 5M rows, a row with a year-9999 time, a model named ``team/fraud``, then a large
valid JSON batch (``--json-rows`` rows, about 55 MiB at the default) while a thread polls
``/health``. Prints each answer's status and time; the last line is JSON with them, the worst
``/health`` latency during the large batch and the rows stored (only the large batch's). Loopback
only, each request bounded by a timeout.

    .venv/bin/python bench/server_hostile.py
    .venv/bin/python bench/server_hostile.py --json-rows 50000     # a quick run
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
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa

from mlsleuth.capture import ARROW_STREAM_MEDIA_TYPE, Compression, table_to_ipc

TOKEN = "bench-writer"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: bytes | None = None, ctype: str = "application/json") -> tuple[int, float]:
    """POST ``body`` (GET without one); the status and the seconds it took."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype}
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers)
    t = time.perf_counter()
    try:
        with OPENER.open(req, timeout=300) as resp:
            resp.read()
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        code = int(exc.code)
    return code, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json-rows", type=int, default=350_000)
    args = ap.parse_args()
    if not 1 <= args.json_rows <= 1_000_000:
        ap.error("keep --json-rows in 1..1000000")

    def row(i: int, **extra: object) -> dict[str, object]:
        return {"request_id": f"r{i}", "ts": "2026-03-02T00:00:00Z", "model": "m", "score": 0.5,
                "feature.a": i * 1.5, "feature.b": "x" * 20, "feature.c": i, **extra}

    n = 5_000_000
    bomb = table_to_ipc(pa.table({"ts": pa.array([0] * n, pa.int64()), "score": pa.array([0.0] * n)}),
                        Compression.ZSTD)
    hostile = {
        "fields_100k": (json.dumps([row(0, **{f"f{i}": 0 for i in range(100_000)})]).encode(), "application/json"),
        "nested_100k": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        "arrow_bomb_5m_rows": (bomb, ARROW_STREAM_MEDIA_TYPE),
        "year_9999": (json.dumps([row(1, ts="9999-12-31T23:59:59.999999Z")]).encode(), "application/json"),
        "model_with_slash": (json.dumps([row(2, model="team/fraud")]).encode(), "application/json"),
    }
    big = json.dumps([row(i) for i in range(args.json_rows)]).encode()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="mlsleuth-hostile-") as tmp:
        env = {**os.environ, "MLSLEUTH_TOKENS": f"{TOKEN}:write", "no_proxy": "127.0.0.1"}
        cli = Path(sys.executable).with_name("mlsleuth")
        server = subprocess.Popen([str(cli), "serve", "--store", str(Path(tmp) / "store"), "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with OPENER.open(f"{base}/health", timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.2)
            out: dict[str, object] = {}
            for name, (body, ctype) in hostile.items():
                code, secs = request(f"{base}/v1/log", body, ctype)
                out[name] = {"status": code, "ms": round(secs * 1000, 1), "body_bytes": len(body)}
                print(f"{name}: {len(body):,} bytes -> {code} in {secs * 1000:.0f} ms", flush=True)

            health: list[float] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    t = time.perf_counter()
                    with OPENER.open(f"{base}/health", timeout=60) as resp:
                        resp.read()
                    health.append(time.perf_counter() - t)
                    time.sleep(0.005)

            poller = threading.Thread(target=poll)
            poller.start()
            time.sleep(0.3)
            code, secs = request(f"{base}/v1/log", big)
            stop.set()
            poller.join()
            health.sort()
            out["big_json"] = {"status": code, "ms": round(secs * 1000, 1), "body_bytes": len(big),
                               "health_max_ms": round(health[-1] * 1000, 1),
                               "health_p50_ms": round(health[len(health) // 2] * 1000, 1)}
            print(f"big JSON batch: {len(big) / 2**20:.1f} MiB -> {code} in {secs:.1f} s; /health worst "
                  f"{health[-1] * 1000:.0f} ms, median {health[len(health) // 2] * 1000:.1f} ms", flush=True)
            req = urllib.request.Request(f"{base}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
            with OPENER.open(req, timeout=120) as resp:
                out["rows_stored"] = int(json.loads(resp.read())["rows"])
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:  # busy with a request it should have refused
                server.kill()
                server.wait(30)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
