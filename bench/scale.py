"""Monitors and diagnosis on a large week from disk, on DuckDB (memory-limited) and on local Spark.

Writes a week with the demo's incident (``mlsleuth.testing.write_week``; 100M requests by
default) into ``--dir``, or reuses the one already there, then runs, in a child process per
engine, the full monitor pass (hourly windows) and ``diagnose_store``. Peak memory is the
largest sum of resident memory over the child's process tree (Python, and Spark's JVM),
polled from /proc every 0.2 s; for DuckDB also the kernel's ``ru_maxrss`` of the child.

Usage: python bench/scale.py [--dir /tmp/mlsleuth-week] [--rows 100000000] [--engines duckdb,spark]
                             [--memory-limit 1200MB] [--no-monitors]
Last line: JSON with rows, duckdb_wall_s, duckdb_peak_rss_mb, spark_wall_s, spark_peak_rss_mb, ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, ()))
    return total


def _run_child(args: list[str]) -> tuple[dict[str, Any], float, int]:
    """Run this script as a child; returns its JSON result, wall seconds and peak tree RSS in bytes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with status {proc.returncode}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]), wall, peak


def _count(folder: Path) -> dict[str, Any]:
    """Rows, labels and log files of a week on disk, from the Parquet footers."""
    import pyarrow.parquet as pq

    logs = list((folder / "store" / "log").rglob("*.parquet"))
    labels = list((folder / "store" / "labels").rglob("*.parquet"))
    return {"rows": sum(pq.read_metadata(f).num_rows for f in logs),
            "labels": sum(pq.read_metadata(f).num_rows for f in labels), "files": len(logs)}


def _child_generate(folder: Path, rows: int, batch_rows: int) -> None:
    from mlsleuth.testing import write_week

    def progress(n: int, s: float) -> None:
        print(f"  generated {n:,} rows in {s:.0f} s", file=sys.stderr, flush=True)

    week = write_week(folder, rows=rows, batch_rows=batch_rows, progress=progress)
    info = {"rows": week.rows, "labels": week.labels, "files": week.files, "seconds": week.seconds}
    (folder / "week.json").write_text(json.dumps(info) + "\n", encoding="utf-8")
    print(json.dumps(info))


def _child_analyse(folder: Path, engine_name: str, memory_limit: str, monitors: bool, threads: int) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from mlsleuth.diagnosis import diagnose_store
    from mlsleuth.monitors import load_reference, run_monitors
    from mlsleuth.store import DuckDBEngine, Engine, LocalStore, SparkEngine

    engine: Engine
    t0 = time.perf_counter()
    if engine_name == "duckdb":
        tmp = folder / "_duckdb_tmp"
        tmp.mkdir(exist_ok=True)
        duck = DuckDBEngine(threads=threads, memory_limit=memory_limit, allowed_directories=[folder / "store"],
                            temp_directory=tmp, config={"preserve_insertion_order": False})
        engine = duck
    else:
        engine = SparkEngine(master=f"local[{threads}]", conf={"spark.driver.memory": "6g",
                                                               "spark.sql.shuffle.partitions": "16"})
    start_s = time.perf_counter() - t0
    out: dict[str, Any] = {"engine": engine_name, "start_s": round(start_s, 1)}
    store = LocalStore.open(folder / "store", engine=engine)
    if monitors:
        t = time.perf_counter()
        report = run_monitors(store, load_reference(store.path, "fraud"), window="1h", model="fraud")
        out["monitors_s"] = round(time.perf_counter() - t, 1)
        out["monitor_findings"] = len(report.findings)
        out["monitor_rows"] = report.rows
    t = time.perf_counter()
    d = diagnose_store(store, model_name="fraud", reference=folder / "reference.parquet", engine=engine)
    out["diagnosis_s"] = round(time.perf_counter() - t, 1)
    top = d.top
    out.update({"verdict": d.verdict.value, "cause": top.cause.value if top else None,
                "features": list(top.features) if top else [], "inputs": list(top.inputs) if top else [],
                "onset": top.onset.isoformat() if top and top.onset else None,
                "events": list(top.events) if top else [], "confidence": top.confidence if top else None,
                "rows": d.triage.get("rows")})
    print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mlsleuth-week"))
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--engines", default="duckdb,spark")
    ap.add_argument("--memory-limit", default="1200MB",
                    help="DuckDB's memory_limit (peak RSS adds ~500 MB at 100M rows: 1200MB keeps it under 2 GB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-monitors", action="store_true")
    ap.add_argument("--child", choices=["generate", "duckdb", "spark"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "generate":
        _child_generate(a.dir, a.rows, a.batch_rows)
        return
    if a.child in ("duckdb", "spark"):
        _child_analyse(a.dir, a.child, a.memory_limit, not a.no_monitors, a.threads)
        return

    figures: dict[str, Any] = {}
    info_path = a.dir / "week.json"
    if (a.dir / "truth.json").exists():  # a week written earlier (by this bench or write_week)
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else _count(a.dir)
        print(f"reusing the week in {a.dir}: {info['rows']:,} rows, {info['labels']:,} labels, {info['files']} files")
    else:
        print(f"writing a week of {a.rows:,} requests into {a.dir} (batches of {a.batch_rows:,}) ...", flush=True)
        info, wall, peak = _run_child(["--child", "generate", "--dir", str(a.dir), "--rows", str(a.rows),
                                       "--batch-rows", str(a.batch_rows)])
        figures.update({"generate_wall_s": round(wall, 1), "generate_rows_per_s": round(info["rows"] / wall),
                        "generate_peak_rss_mb": round(peak / 2**20)})
        print(f"  {info['rows']:,} rows in {wall:.0f} s ({info['rows'] / wall:,.0f} rows/s), "
              f"peak RSS {peak / 2**20:,.0f} MB")
    figures["rows"] = info["rows"]
    log_bytes = sum(f.stat().st_size for f in (a.dir / "store" / "log").rglob("*.parquet"))
    figures["log_gb_on_disk"] = round(log_bytes / 1e9, 2)
    print(f"log on disk: {log_bytes / 1e9:.2f} GB ({log_bytes / info['rows']:.0f} bytes/row)")
    for eng in [e.strip() for e in a.engines.split(",") if e.strip()]:
        print(f"{eng}: monitors{'' if not a.no_monitors else ' (skipped)'} + diagnosis ...", flush=True)
        args = ["--child", eng, "--dir", str(a.dir), "--memory-limit", a.memory_limit, "--threads", str(a.threads)]
        res, wall, peak = _run_child(args + (["--no-monitors"] if a.no_monitors else []))
        peak_mb = peak / 2**20
        if eng == "duckdb":
            figures["duckdb_ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        figures[f"{eng}_wall_s"] = round(wall, 1)
        figures[f"{eng}_peak_rss_mb"] = round(peak_mb)
        for k in ("monitors_s", "diagnosis_s", "start_s", "verdict", "cause", "onset"):
            if k in res:
                figures[f"{eng}_{k}"] = res[k]
        print(f"  {wall:.0f} s wall (start {res['start_s']} s, monitors {res.get('monitors_s', '-')} s, "
              f"diagnosis {res['diagnosis_s']} s), peak RSS {peak_mb:,.0f} MB")
        print(f"  {res['verdict']}: {res['cause']}, features {res['features']}, inputs {res['inputs']}, "
              f"onset {res['onset']}, events {res['events']}")
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
