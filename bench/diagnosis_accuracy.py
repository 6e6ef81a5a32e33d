"""Diagnosis accuracy over generated scenario cases: full-credit rate per cause and overall.

Each case of ``scenario_suite(n, seed)`` is written as a CASE_DIR (docs/contract.md, the diagnose command, with
``truth.json``) to a temporary folder and diagnosed through the library exactly as ``mlsleuth diagnose CASE_DIR`` does
(``find_case_files`` then ``diagnose``). A case earns full credit when

- the verdict is right (``incident`` / ``healthy``), and for incidents also:
- the top hypothesis names the right cause;
- a truth culprit column (feature or input) is among the first three named columns (features, then inputs);
  right when the truth names no culprit column (model, serving and degradation causes);
- the onset is within 1 h of the truth's (both null is right; one null and the other not is wrong);
- the segments equal the truth's as sets of ``{column: value}`` objects (both empty is right);
- the first named event is among the truth's events (both empty is right).

Usage: ``.venv/bin/python bench/diagnosis_accuracy.py [--n 104] [--seed 7] [--workers 2] [--show-misses]``.
Prints a table per cause, the machine and the median seconds per diagnosis, then one JSON object of figures
as the last line: ``cases``, ``full_credit`` (a fraction), ``per_cause`` (fraction per cause), components...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

COMPONENTS = ("verdict", "cause", "culprit", "onset", "segment", "event")
ONSET_TOLERANCE = timedelta(hours=1)


def _parse(ts: str | None) -> datetime | None:
    return None if ts is None else datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _segment_set(segments: list[dict[str, str]]) -> set[frozenset[tuple[str, str]]]:
    return {frozenset(s.items()) for s in segments}


def score(truth: dict[str, Any], got: dict[str, Any]) -> dict[str, bool]:
    """Score one diagnosis (contract JSON) against a ``truth.json`` object; components of a healthy truth are
    only ``verdict``."""
    marks = {"verdict": got["verdict"] == truth["verdict"]}
    if truth["verdict"] == "healthy" or not truth["hypotheses"]:
        return marks
    want = truth["hypotheses"][0]
    top = got["hypotheses"][0] if got["hypotheses"] else None
    if top is None:
        return {**marks, **{k: False for k in COMPONENTS[1:]}}
    marks["cause"] = top["cause"] == want["cause"]
    culprits = set(want["features"]) | set(want["inputs"])
    named = (list(top["features"]) + list(top["inputs"]))[:3]
    marks["culprit"] = not culprits or bool(culprits & set(named))
    t_on, g_on = _parse(want["onset"]), _parse(top["onset"])
    marks["onset"] = (t_on is None and g_on is None) or (
        t_on is not None and g_on is not None and abs(g_on - t_on) <= ONSET_TOLERANCE)
    marks["segment"] = _segment_set(want["segments"]) == _segment_set(top["segments"])
    if not want["events"]:
        marks["event"] = not top["events"]
    else:
        marks["event"] = bool(top["events"]) and top["events"][0] in want["events"]
    return marks


def run_one(spec: Any) -> dict[str, Any]:
    """Generate, write and diagnose one case (in a worker); return its marks and timing."""
    warnings.filterwarnings("ignore")
    from mlsleuth.diagnosis import diagnose, find_case_files
    from mlsleuth.testing import build_case

    folder = Path(tempfile.mkdtemp(prefix="mlsleuth-acc-"))
    try:
        case = build_case(spec)
        case.write(folder)
        rows = case.log.num_rows
        del case
        truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
        t0 = time.perf_counter()
        error = None
        try:
            files: dict[str, Any] = dict(find_case_files(folder))  # as the CLI does for a CASE_DIR
            got = diagnose(files.pop("log"), **files).to_dict()
        except Exception as e:  # a crash is a miss, and the bench goes on
            error = f"{type(e).__name__}: {e}"
            got = {"verdict": "error", "hypotheses": []}
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    marks = score(truth, got)
    top = got["hypotheses"][0] if got["hypotheses"] else {}
    want = truth["hypotheses"][0] if truth["hypotheses"] else {}
    return {
        "name": spec.name,
        "cause": want.get("cause", "healthy"),
        "mode": (truth.get("truth") or {}).get("mode"),
        "rows": rows,
        "seconds": seconds,
        "marks": marks,
        "full": all(marks.values()),
        "error": error,
        "got": {k: top.get(k) for k in ("cause", "onset", "features", "inputs", "segments", "events")}
        | {"verdict": got["verdict"]},
        "want": {k: want.get(k) for k in ("cause", "onset", "features", "inputs", "segments", "events")},
    }


def _results(specs: list[Any], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        yield from map(run_one, specs)
        return
    # A fresh interpreter per few cases keeps memory bounded (each case's tables and engine go with it).
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=8) as pool:
        yield from pool.imap_unordered(run_one, specs, chunksize=1)


def _rate(xs: list[bool]) -> str:
    return f"{sum(xs) / len(xs):6.1%}" if xs else "     -"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=104, help="number of cases (default 104)")
    ap.add_argument("--seed", type=int, default=7, help="suite seed (default 7)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--min-rows", type=int, default=20_000)
    ap.add_argument("--max-rows", type=int, default=200_000)
    ap.add_argument("--show-misses", action="store_true", help="print every case without full credit")
    args = ap.parse_args(argv)

    from mlsleuth.testing import Cause, suite_specs

    specs = list(suite_specs(args.n, args.seed, min_rows=args.min_rows, max_rows=args.max_rows))
    print(f"diagnosing {len(specs)} generated cases (scenario_suite n={args.n} seed={args.seed}, "
          f"{sum(s.rows for s in specs):,} requests) with {args.workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    for i, r in enumerate(_results(specs, args.workers), 1):
        results.append(r)
        if i % 10 == 0 or i == len(specs):
            done = sum(x["full"] for x in results)
            print(f"  {i}/{len(specs)} done, {done} full credit, {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0

    order = [c.value for c in Cause] + ["healthy"]
    header = f"{'cause':<26}{'n':>4}  {'full':>6}" + "".join(f"  {k:>7}" for k in COMPONENTS)
    print()
    print(header)
    print("-" * len(header))
    per_cause: dict[str, float] = {}
    components: dict[str, dict[str, float]] = {}
    for cause in [*order, "overall"]:
        rs = results if cause == "overall" else [r for r in results if r["cause"] == cause]
        if not rs:
            continue
        full = [r["full"] for r in rs]
        comp = {k: [r["marks"][k] for r in rs if k in r["marks"]] for k in COMPONENTS}
        if cause != "overall":
            per_cause[cause] = round(sum(full) / len(full), 4)
            components[cause] = {k: round(sum(v) / len(v), 4) for k, v in comp.items() if v}
        if cause == "overall":
            print("-" * len(header))
        print(f"{cause:<26}{len(rs):>4}  {_rate(full)}" + "".join(f"  {_rate(comp[k]):>7}" for k in COMPONENTS))

    seconds = [r["seconds"] for r in results]
    incidents = [r for r in results if r["cause"] != "healthy"]
    healthy = [r for r in results if r["cause"] == "healthy"]
    false_alarms = sum(r["got"]["verdict"] != "healthy" for r in healthy)
    errors = [r for r in results if r["error"]]
    full_credit = sum(r["full"] for r in results) / len(results) if results else 0.0
    print()
    print(f"full credit: {sum(r['full'] for r in results)}/{len(results)} = {full_credit:.1%} "
          f"(incidents {sum(r['full'] for r in incidents)}/{len(incidents)}, "
          f"healthy weeks raised as incidents: {false_alarms}/{len(healthy)}, crashes: {len(errors)})")
    print(f"median {statistics.median(seconds):.2f} s per diagnosis (max {max(seconds):.2f} s); "
          f"whole run {wall:.0f} s with {args.workers} worker(s)")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    if args.show_misses:
        print()
        for r in sorted(results, key=lambda r: (r["cause"], r["name"])):
            if not r["full"]:
                missed = [k for k, v in r["marks"].items() if not v]
                print(f"MISS {r['name']} ({r['rows']:,} rows): {', '.join(missed)}"
                      + (f" [{r['error']}]" if r["error"] else ""))
                print(f"     want {json.dumps(r['want'])}")
                print(f"     got  {json.dumps(r['got'])}")
    figures = {
        "cases": len(results),
        "full_credit": round(full_credit, 4),
        "per_cause": per_cause,
        "components": components,
        "incident_full_credit": round(sum(r["full"] for r in incidents) / len(incidents), 4) if incidents else None,
        "healthy_false_alarms": false_alarms,
        "crashes": len(errors),
        "median_s_per_case": round(statistics.median(seconds), 3),
        "wall_s": round(wall, 1),
        "n": args.n,
        "seed": args.seed,
        "workers": args.workers,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
