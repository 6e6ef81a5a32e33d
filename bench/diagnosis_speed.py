"""``mlsleuth diagnose`` on a 1M-request week: wall time of the real command line and its peak RSS.

Steps:

1. in a child process (so that its memory does not count), generate an upstream-data-change week of ``--rows``
   requests with ``make_case`` (reference, late labels, change events, lineage and the model included) and write
   it as a CASE_DIR to a temporary folder;
2. run ``mlsleuth diagnose CASE_DIR`` (the installed entry point next to this interpreter) ``--repeat`` times as a
   subprocess, JSON written to a file; each run's wall time, and its peak RSS from ``os.wait4`` (the rusage of
   that one child, not of every child so far);
3. check the diagnosis found the planted incident (so a fast wrong answer does not pass unnoticed).

``--features N`` adds N extra noise features (``widen_case``: numeric, every tenth categorical) to the log
and the reference, as a wide fraud or ads model logs them (the model is then left out).

Goals: median wall time <= 15 s on the project's machine; with ``--features 1000 --rows 200000``, <= 30 s.

Usage: ``.venv/bin/python bench/diagnosis_speed.py [--rows 1000000] [--features 0] [--repeat 3] [--seed 11]
[--keep DIR]``. Prints readable lines, then one JSON object of figures as the last line: ``rows``,
``features`` (extra), ``wall_s`` (median), ``cpu_s`` (median CPU time of the child, all threads),
``peak_rss_mb`` (largest of the runs), ...
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
    args = ap.parse_args(argv)

    if args.generate is not None:
        print(json.dumps(generate(args.generate, args.rows, args.seed, args.features)))
        return 0

    root = args.keep or Path(tempfile.mkdtemp(prefix="mlsleuth-speed-"))
    case_dir = root / "case"
    try:
        wide = f", {args.features:,} extra features" if args.features else ""
        print(f"generating a {args.rows:,}-request week (upstream data change{wide}, seed {args.seed}) in {case_dir}",
              flush=True)
        gen = subprocess.run([sys.executable, __file__, "--generate", str(case_dir), "--rows", str(args.rows),
                              "--seed", str(args.seed), "--features", str(args.features)], capture_output=True,
                             text=True, timeout=TIMEOUT_S, check=False)
        if gen.returncode != 0:
            print(gen.stderr, file=sys.stderr)
            return 1
        info = json.loads(gen.stdout.strip().splitlines()[-1])
        print(f"  {info['rows']:,} rows, log {info['log_mb']} MB, generated in {info['generate_s']} s", flush=True)

        walls: list[float] = []
        cpus: list[float] = []
        peaks: list[float] = []
        result: dict[str, Any] = {}
        for i in range(args.repeat):
            out = root / f"diagnosis-{i}.json"
            wall, cpu, peak, code = run_cli(case_dir, out)
            if code != 0:
                return 1
            walls.append(wall)
            cpus.append(cpu)
            peaks.append(peak)
            result = json.loads(out.read_text(encoding="utf-8"))
            print(f"  run {i + 1}: {wall:.2f} s ({cpu:.1f} s of CPU), peak RSS {peak:.0f} MB, verdict "
                  f"{result['verdict']}", flush=True)

        want = info["truth"]["hypotheses"][0]
        top = result["hypotheses"][0] if result.get("hypotheses") else {}
        found = top.get("cause") == want["cause"]
        wall_s = statistics.median(walls)
        goal = WIDE_GOAL_S if args.features else GOAL_S
        print(f"mlsleuth diagnose, {info['rows']:,} requests{wide}: median {wall_s:.2f} s of {args.repeat} "
              f"(min {min(walls):.2f}, max {max(walls):.2f}), peak RSS {max(peaks):.0f} MB; goal <= {goal:.0f} s: "
              f"{'met' if wall_s <= goal else 'NOT met'}")
        print(f"diagnosis: {result.get('verdict')}, top cause {top.get('cause')} (planted: {want['cause']}), "
              f"onset {top.get('onset')} (planted: {want['onset']}), features {top.get('features')} "
              f"(planted: {want['features']})")
        load = os.getloadavg()[0]
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {load:.1f} (other work on the machine slows every run)")
        figures = {
            "rows": info["rows"],
            "features": args.features,
            "wall_s": round(wall_s, 2),
            "wall_s_runs": [round(w, 2) for w in walls],
            "cpu_s": round(statistics.median(cpus), 2),
            "peak_rss_mb": round(max(peaks), 1),
            "goal_s": goal,
            "goal_met": wall_s <= goal,
            "found_planted_cause": found,
            "generate_s": info["generate_s"],
            "log_mb": info["log_mb"],
            "cpus": os.cpu_count(),
            "load_avg_1m": round(load, 2),
            "platform": platform.platform(),
        }
        print(json.dumps(figures))
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
