"""``mlsleuth diagnose`` on a 1M-request week: wall time of the real command line and its peak RSS.

Steps:

1. in a child process (so that its memory does not count), generate an upstream-data-change week of ``--rows``
   requests with ``make_case`` (reference, late labels, change events, lineage and the model included) and write
   it as a CASE_DIR to a temporary folder;
2. run ``mlsleuth diagnose CASE_DIR`` (the installed entry point next to this interpreter) ``--repeat`` times as a
   subprocess, JSON written to a file; each run's wall time, and its peak RSS from ``os.wait4`` (the rusage of
   that one child, not of every child so far);
3. after each diagnosis run, time a raw DuckDB one-pass summary of the same ``log.parquet`` (per hour, for
   every column: count, min, max, approximate distinct count, and for numbers mean, standard deviation and
   three ``approx_quantile``; one query, in a child process, query time only; a wide log's in queries of
   RAW_SCAN_COLUMNS columns, where DuckDB's limits force it): ``vs_raw_scan`` is the
   diagnosis's median wall over the raw scan's median, what the diagnosis costs in scans of the log;
4. check the diagnosis found the planted incident (so a fast wrong answer does not pass unnoticed).

``--features N`` adds N extra noise features (``widen_case``: numeric, every tenth categorical) to the log
and the reference, as a wide fraud or ads model logs them (the model is then left out).

Goals: median wall time <= 15 s on the project's machine and ``vs_raw_scan <= 2.5``; with ``--rows 10000000``,
<= 20 s and a peak RSS <= 2 GB; with ``--features 1000 --rows 200000``, <= 30 s.

Usage: ``.venv/bin/python bench/diagnosis_speed.py [--rows 1000000] [--features 0] [--repeat 3] [--seed 11]
[--keep DIR]``. Prints readable lines, then one JSON object of figures as the last line: ``rows``,
``features`` (extra), ``wall_s`` (median), ``cpu_s`` (median CPU time of the child, all threads),
``peak_rss_mb`` (largest of the runs), ``raw_scan_s`` (median), ``vs_raw_scan``, ``vs_raw_scan_cpu`` (the same
ratio in CPU seconds, steadier on a shared machine), ``load_avg_1m``, ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_S = 15.0
#: The diagnosis's wall time over the raw one-pass scan's, at most (what two and a half scans of the log cost).
VS_RAW_GOAL = 2.5
#: With ``--rows`` of 10M or more: the wall time and peak RSS goals.
BIG_ROWS = 10_000_000
BIG_GOAL_S = 20.0
BIG_RSS_MB = 2048.0
#: The goal for a wide log (``--features``): 1,000 extra features over 200,000 requests.
WIDE_GOAL_S = 30.0
TIMEOUT_S = 900


def generate(folder: Path, rows: int, seed: int, features: int) -> dict[str, Any]:
    """Build and write the case (runs in a child: ``--generate``)."""
    from mlsleuth.testing import Cause, make_case, widen_case

    t0 = time.perf_counter()
    case = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=seed, rows=rows)
    if features:
        case = widen_case(case, features, seed=seed)
    case.write(folder)
    return {"rows": case.log.num_rows, "generate_s": round(time.perf_counter() - t0, 1),
            "log_mb": round((folder / "log.parquet").stat().st_size / 1e6, 1), "truth": case.truth.to_dict()}


#: Columns summarised in one query of the raw scan at most: DuckDB dies with SIGFPE on one query of a
#: thousand-column log's seven thousand aggregates; a wide log's raw scan is several queries (their times added).
RAW_SCAN_COLUMNS = 30


def raw_scan_sql(path: Path, schema: Any) -> list[str]:
    """Queries that summarise every column of the log per hour (one for a log of up to RAW_SCAN_COLUMNS columns)."""
    import pyarrow as pa

    from mlsleuth.store._engine import quote_ident, quote_literal

    fields = list(schema)
    out = []
    for start in range(0, len(fields), RAW_SCAN_COLUMNS):
        aggs = []
        for i, f in enumerate(fields[start:start + RAW_SCAN_COLUMNS], start=start):
            q = quote_ident(f.name)
            aggs += [f"count({q}) AS c{i}", f"min({q}) AS lo{i}", f"max({q}) AS hi{i}",
                     f"approx_count_distinct({q}) AS d{i}"]
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                x = f"CAST({q} AS DOUBLE)"
                aggs += [f"avg({x}) AS m{i}", f"stddev_samp({x}) AS s{i}",
                         f"approx_quantile({x}, [0.1, 0.5, 0.9]) AS q{i}"]
        out.append(f"SELECT date_trunc('hour', ts) AS h, count(*) AS n, {', '.join(aggs)} "
                   f"FROM read_parquet({quote_literal(str(path))}) GROUP BY 1")
    return out


def raw_scan(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of the raw one-pass summary of ``path`` (runs in a child: ``--raw-scan``)."""
    import duckdb
    import pyarrow.parquet as pq

    queries = raw_scan_sql(path, pq.read_schema(path))
    con = duckdb.connect()
    t0, c0 = time.perf_counter(), time.process_time()
    for sql in queries:
        con.execute(sql).fetchall()
    return time.perf_counter() - t0, time.process_time() - c0


def run_raw_scan(path: Path) -> tuple[float, float]:
    """The raw scan in a fresh child process (its memory and caches apart from the bench's): wall and CPU seconds."""
    out = subprocess.run([sys.executable, __file__, "--raw-scan", str(path)], capture_output=True, text=True,
                         timeout=TIMEOUT_S, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return float(got["raw_scan_s"]), float(got["raw_scan_cpu_s"])


def mlsleuth_exe() -> str:
    exe = Path(sys.executable).parent / "mlsleuth"
    found = str(exe) if exe.exists() else shutil.which("mlsleuth")
    if not found:
        raise SystemExit(f"the mlsleuth entry point is not installed next to {sys.executable} nor on PATH")
    return found


def run_cli(case_dir: Path, out: Path) -> tuple[float, float, float, int]:
    """One ``mlsleuth diagnose`` run: (wall seconds, CPU seconds and peak RSS MB of that child, exit status)."""
    with out.open("wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen([mlsleuth_exe(), "diagnose", str(case_dir)], stdout=fh, stderr=subprocess.PIPE)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by wait4 above
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        print(f"mlsleuth diagnose exited {code}: {err.strip()}", file=sys.stderr)
    if proc.stderr:
        proc.stderr.close()
    # CPU time (user + system, every thread of the child) says what the run costs when other work on
    # the machine stretches its wall time.
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=0, help="extra noise features in the log and reference")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", type=Path, default=None, help="write the case here and keep it")
    ap.add_argument("--generate", type=Path, default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--raw-scan", type=Path, default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse the case already written there")
    args = ap.parse_args(argv)

    if args.raw_scan is not None:
        wall, cpu = raw_scan(args.raw_scan)
        print(json.dumps({"raw_scan_s": wall, "raw_scan_cpu_s": cpu}))
        return 0

    if args.generate is not None:
        print(json.dumps(generate(args.generate, args.rows, args.seed, args.features)))
        return 0

    root = args.keep or Path(tempfile.mkdtemp(prefix="mlsleuth-speed-"))
    case_dir = root / "case"
    try:
        wide = f", {args.features:,} extra features" if args.features else ""
        print(f"generating a {args.rows:,}-request week (upstream data change{wide}, seed {args.seed}) in {case_dir}",
              flush=True)
        info_file = root / "case-info.json"
        if args.reuse and args.keep is not None and info_file.exists():
            info = json.loads(info_file.read_text(encoding="utf-8"))
        else:
            gen = subprocess.run([sys.executable, __file__, "--generate", str(case_dir), "--rows", str(args.rows),
                                  "--seed", str(args.seed), "--features", str(args.features)], capture_output=True,
                                 text=True, timeout=TIMEOUT_S, check=False)
            if gen.returncode != 0:
                print(gen.stderr, file=sys.stderr)
                return 1
            info = json.loads(gen.stdout.strip().splitlines()[-1])
            info_file.write_text(json.dumps(info), encoding="utf-8")
        print(f"  {info['rows']:,} rows, log {info['log_mb']} MB, generated in {info['generate_s']} s", flush=True)

        walls: list[float] = []
        cpus: list[float] = []
        peaks: list[float] = []
        raws: list[float] = []
        raw_cpus: list[float] = []
        loads: list[float] = []
        result: dict[str, Any] = {}
        for i in range(args.repeat):
            out = root / f"diagnosis-{i}.json"
            wall, cpu, peak, code = run_cli(case_dir, out)
            if code != 0:
                return 1
            walls.append(wall)
            cpus.append(cpu)
            peaks.append(peak)
            loads.append(os.getloadavg()[0])
            result = json.loads(out.read_text(encoding="utf-8"))
            # The raw scan right after, so that both see the same load on the machine.
            raw_wall, raw_cpu = run_raw_scan(case_dir / "log.parquet")
            raws.append(raw_wall)
            raw_cpus.append(raw_cpu)
            print(f"  run {i + 1}: {wall:.2f} s ({cpu:.1f} s of CPU), peak RSS {peak:.0f} MB, verdict "
                  f"{result['verdict']}; raw one-pass scan {raws[-1]:.2f} s", flush=True)

        want = info["truth"]["hypotheses"][0]
        top = result["hypotheses"][0] if result.get("hypotheses") else {}
        found = top.get("cause") == want["cause"]
        wall_s = statistics.median(walls)
        raw_s = statistics.median(raws)
        vs_raw = wall_s / raw_s if raw_s > 0 else float("inf")
        # The same ratio in CPU seconds: steadier than wall time when other work shares the machine.
        cpu_s, raw_cpu_s = statistics.median(cpus), statistics.median(raw_cpus)
        vs_raw_cpu = cpu_s / raw_cpu_s if raw_cpu_s > 0 else float("inf")
        big = info["rows"] >= BIG_ROWS
        goal = WIDE_GOAL_S if args.features else BIG_GOAL_S if big else GOAL_S
        rss_ok = not big or max(peaks) <= BIG_RSS_MB
        print(f"mlsleuth diagnose, {info['rows']:,} requests{wide}: median {wall_s:.2f} s of {args.repeat} "
              f"(min {min(walls):.2f}, max {max(walls):.2f}), peak RSS {max(peaks):.0f} MB; goal <= {goal:.0f} s"
              f"{f' and <= {BIG_RSS_MB:.0f} MB' if big else ''}: {'met' if wall_s <= goal and rss_ok else 'NOT met'}")
        print(f"raw one-pass hourly summary of every column: median {raw_s:.2f} s ({raw_cpu_s:.1f} s of CPU); the "
              f"diagnosis costs {vs_raw:.1f} such scans (goal <= {VS_RAW_GOAL}: "
              f"{'met' if vs_raw <= VS_RAW_GOAL else 'NOT met'}), {vs_raw_cpu:.1f} in CPU time")
        print(f"diagnosis: {result.get('verdict')}, top cause {top.get('cause')} (planted: {want['cause']}), "
              f"onset {top.get('onset')} (planted: {want['onset']}), features {top.get('features')} "
              f"(planted: {want['features']})")
        load = statistics.median(loads)
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {load:.1f} after the runs (median; other work on the machine slows every run)")
        figures = {
            "rows": info["rows"],
            "features": args.features,
            "wall_s": round(wall_s, 2),
            "wall_s_runs": [round(w, 2) for w in walls],
            "cpu_s": round(cpu_s, 2),
            "peak_rss_mb": round(max(peaks), 1),
            "raw_scan_s": round(raw_s, 2),
            "raw_scan_s_runs": [round(r, 2) for r in raws],
            "vs_raw_scan": round(vs_raw, 2),
            "raw_scan_cpu_s": round(raw_cpu_s, 2),
            "vs_raw_scan_cpu": round(vs_raw_cpu, 2),
            "vs_raw_goal": VS_RAW_GOAL,
            "vs_raw_goal_met": vs_raw <= VS_RAW_GOAL,
            "goal_s": goal,
            "goal_met": wall_s <= goal and rss_ok,
            "found_planted_cause": found,
            "generate_s": info["generate_s"],
            "log_mb": info["log_mb"],
            "cpus": os.cpu_count(),
            "load_avg_1m": round(load, 2),
            "load_avg_1m_runs": [round(x, 2) for x in loads],
            "platform": platform.platform(),
        }
        print(json.dumps(figures))
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
