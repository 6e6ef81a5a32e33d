"""Load test of ``mlsleuth serve`` through the capture SDK, with the server killed (kill -9) and restarted mid-load.

Starts the server (``mlsleuth serve``, a subprocess over a fresh temporary store) on 127.0.0.1. ``--clients``
threads, each with its own ``Logger`` and ``HttpSink`` (zstd Arrow IPC, one shared on-disk ``spool_dir``, as
several workers of one model server would have), log ``--rows`` requests between them at ``--rate`` rows/s.
Meanwhile the server is killed with SIGKILL ``--restarts`` times, evenly spread over the load, and started again
on the same port and store. At the end every logger and sink is flushed and the store is counted.

``lost`` is the rows the SDK logged minus the distinct request ids stored: a batch that was stored but whose
answer died with the server is sent again, and the store keeps each request id once. The last line is JSON with
``rows``, ``lost``, ``restarts``, ``rows_per_s``, the SDK's own counters and the mean downtime of a restart.
Bounded: at most ``--rows`` rows and ``--max-seconds`` of logging; loopback only.

    .venv/bin/python bench/server_load.py                          # 200k rows, 4 clients, 5 restarts
    .venv/bin/python bench/server_load.py --rows 1000000 --rate 20000 --restarts 0   # throughput, no restarts
    .venv/bin/python bench/server_load.py --spool-mb 0             # the spool off: restarts lose rows
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

from mlsleuth.capture import HttpSink, Logger
from mlsleuth.store import LocalStore

TOKEN = "bench-writer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``mlsleuth serve`` as a subprocess that can be killed and started again on the same port and store."""

    def __init__(self, store: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.cmd = [str(Path(sys.executable).with_name("mlsleuth")), "serve", "--store", str(store), "--host",
                    "127.0.0.1", "--port", str(port)]
        self.env = {**os.environ, "MLSLEUTH_TOKENS": f"{TOKEN}:write", "no_proxy": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                with self._opener.open(f"{self.base}/health", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                    raise SystemExit(f"the server did not start: {err}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no shutdown hook runs, an answer in flight is lost
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2_000, help="the loggers' batch_size")
    ap.add_argument("--rate", type=float, default=4_000.0, help="rows per second, all clients together")
    ap.add_argument("--restarts", type=int, default=5, help="kill -9 and restart the server this many times")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--spool-mb", type=float, default=64.0,
                    help="each HttpSink's spool_max_bytes in MiB; 0 turns the spool off (retries only), to see loss")
    args = ap.parse_args()
    if (not 1 <= args.clients <= 64 or not 1 <= args.batch <= 200_000 or not 1 <= args.rows <= 5_000_000
            or not 0 <= args.restarts <= 100 or args.rate <= 0 or args.spool_mb < 0):
        ap.error("keep --clients in 1..64, --batch in 1..200000, --rows in 1..5000000, --restarts in 0..100, "
                 "--rate > 0 and --spool-mb >= 0")

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="mlsleuth-load-") as tmp:
        store, spool = Path(tmp) / "store", Path(tmp) / "spool"
        server = Server(store, port)
        server.start()
        load_s = args.rows / args.rate
        print(f"server up on {server.base} (store {store}); {args.clients} clients log {args.rows:,} rows at "
              f"{args.rate:,.0f} rows/s (~{load_s:.0f} s), batches of {args.batch:,}; {args.restarts} kill -9 "
              "restarts", flush=True)
        sinks = [HttpSink(server.base, token=TOKEN, trust_env=False, spool_dir=spool,
                          spool_max_bytes=int(args.spool_mb * 2**20)) for _ in range(args.clients)]
        loggers = [Logger(s, model="bench", model_version="v1", batch_size=args.batch, flush_interval=0.5)
                   for s in sinks]
        stop_at = time.monotonic() + args.max_seconds
        downtimes: list[float] = []
        try:
            t0 = time.monotonic()

            def client(k: int) -> None:
                rng = np.random.default_rng(k)
                n = args.rows // args.clients + (k < args.rows % args.clients)
                per_s = args.rate / args.clients
                amount = rng.lognormal(3, 1, n).tolist()
                velocity = rng.poisson(2, n).astype(float).tolist()
                score = rng.beta(1, 20, n).tolist()
                latency = rng.gamma(2, 5, n).tolist()
                region = rng.choice(["EU", "US", "APAC"], n).tolist()
                log = loggers[k].log
                start = time.monotonic()
                for i in range(n):
                    if i % 200 == 0:  # keep to the rate, so that the restarts fall inside the load
                        ahead = start + i / per_s - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
                        if time.monotonic() > stop_at:
                            return
                    log(f"req-{k}-{i}", features={"amount": amount[i], "velocity": velocity[i]}, score=score[i],
                        prediction=int(score[i] > 0.5), latency_ms=latency[i], region=region[i])

            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for th in threads:
                th.start()
            for r in range(args.restarts):
                time.sleep(max(0.0, t0 + (r + 1) * load_s / (args.restarts + 1) - time.monotonic()))
                t_kill = time.monotonic()
                server.kill()
                server.start()
                downtimes.append(time.monotonic() - t_kill)
                print(f"restart {r + 1}: killed at {t_kill - t0:.1f} s, answering again after {downtimes[-1]:.1f} s",
                      flush=True)
            for th in threads:
                th.join()
            for lg in loggers:
                lg.flush(timeout=120)
            drained = all(s.flush(timeout=300) for s in sinks)
            wall = time.monotonic() - t0
            for lg in loggers:
                lg.close()
        finally:
            server.stop()
        counts = LocalStore.open(store).sql(
            "SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM log").to_pylist()[0]
        quarantined = LocalStore.open(store).status().quarantined

    logged = sum(lg.stats().logged for lg in loggers)
    logger_dropped = sum(lg.stats().dropped for lg in loggers)
    ss = [s.stats() for s in sinks]
    resent, spool_dropped = sum(s.resent_rows for s in ss), sum(s.dropped_rows for s in ss)
    ids, stored = int(counts["ids"]), int(counts["n"])
    lost = logged - ids
    rate = ids / wall if wall > 0 else 0.0
    mean_down = float(np.mean(downtimes)) if downtimes else 0.0
    print(f"logged {logged:,} rows in {wall:.1f} s; stored {ids:,} distinct request ids ({stored - ids:,} stored "
          f"twice); lost {lost:,}; resent from the spool {resent:,}; dropped by the loggers {logger_dropped:,}, by "
          f"the spools {spool_dropped:,}; {quarantined:,} resent rows quarantined as already stored; spools "
          f"drained: {drained}")
    print(f"{len(downtimes)} restarts, mean downtime {mean_down:.1f} s; throughput {rate:,.0f} rows/s")
    print(json.dumps({"rows": ids, "lost": lost, "restarts": len(downtimes), "logged": logged,
                      "duplicates_stored": stored - ids, "resent_rows": resent, "quarantined": quarantined,
                      "logger_dropped": logger_dropped, "spool_dropped": spool_dropped,
                      "mean_downtime_s": round(mean_down, 2), "rows_per_s": round(rate, 1),
                      "clients": args.clients, "batch_rows": args.batch, "seconds": round(wall, 2)}))


if __name__ == "__main__":
    main()
