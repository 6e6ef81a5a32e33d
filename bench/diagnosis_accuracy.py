"""Diagnosis accuracy over generated worlds, on a development set and a held-out set: full credit per world and cause.

The worlds (:mod:`mlsleuth.testing`): ``fraud`` (``scenario_suite``, the card-fraud week), ``regression`` (delivery
time), ``multiclass`` (content moderation), ``loan`` (loan default: ten weeks, monthly cycle, labels after weeks,
discrete tree scores, a model config naming the roles) and ``ads`` (click-through: high volume, labels within
minutes, logistic scores, canaries). The split:

- ``--set dev``: what the project tunes on: the fraud suite of ``--dev-seeds`` (default 7) and the regression and
  multiclass scenarios of seeds 0 and 1;
- ``--set heldout``: what no change may be tuned on: the fraud suite of ``--heldout-seed`` (default 21), the
  regression and multiclass scenarios of seeds 100 and up, and every scenario of the loan and ads worlds (seeds
  100 and up). A change that raises dev and lowers held-out is reverted;
- ``--set all``: both.

Each case is written as a CASE_DIR (docs/contract.md, the diagnose command, with ``truth.json``) to a temporary
folder and diagnosed through the library exactly as ``mlsleuth diagnose CASE_DIR`` does (``find_case_files``, the
case's ``model.toml`` read with ``ModelConfig.from_toml``, then ``diagnose``). A case earns full credit when

- the verdict is right (``incident`` / ``healthy``), and for incidents also:
- the top hypothesis names the right cause;
- a truth culprit column (feature or input) is among the first three named columns (features, then inputs);
  right when the truth names no culprit column (model, serving and degradation causes);
- the onset is within 1 h of the truth's (both null is right; one null and the other not is wrong);
- the segments equal the truth's as sets of ``{column: value}`` objects (both empty is right);
- the first named event is among the truth's events (both empty is right).

Usage: ``.venv/bin/python bench/diagnosis_accuracy.py [--set dev|heldout|all] [--workers 2] [--show-misses]``
(``--n`` and ``--seed`` run the fraud suite alone, as before). Prints tables per world and per cause for each set,
the machine and the median seconds per diagnosis, then one JSON object of figures as the last line: ``cases``,
``worlds``, ``full_credit``, ``dev_full_credit``, ``heldout_full_credit``, ``false_incidents`` (healthy periods
called incidents), ``per_world``, ``per_cause``, ``per_set``, ``components``...
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
from typing import Any, NamedTuple

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


class Job(NamedTuple):
    """One case to build: its world, its set, and what the world's generator takes (a CaseSpec for fraud)."""

    world: str
    set: str
    payload: Any


#: Seeds of the generated worlds' scenarios in each set (fraud's come from --dev-seeds / --heldout-seed).
DEV_KIND_SEEDS = (0, 1)
WORLDS = ("fraud", "regression", "multiclass", "loan", "ads")


def jobs_for(which: str, *, dev_seeds: tuple[int, ...], heldout_seed: int, fraud_n: int, heldout_fraud_n: int,
             kind_seeds: int, binary_seeds: int, min_rows: int, max_rows: int) -> list[Job]:
    """The cases of a set, as cheap plans (no data generated yet)."""
    from mlsleuth.testing import ADS_SCENARIOS, LOAN_SCENARIOS, MULTICLASS_SCENARIOS, REGRESSION_SCENARIOS, suite_specs

    out: list[Job] = []
    if which in ("dev", "all"):
        for seed in dev_seeds:
            out += [Job("fraud", "dev", s) for s in suite_specs(fraud_n, seed, min_rows=min_rows, max_rows=max_rows)]
        for seed in DEV_KIND_SEEDS:
            out += [Job("regression", "dev", (sc, seed)) for sc in REGRESSION_SCENARIOS]
            out += [Job("multiclass", "dev", (sc, seed)) for sc in MULTICLASS_SCENARIOS]
    if which in ("heldout", "all"):
        out += [Job("fraud", "heldout", s)
                for s in suite_specs(heldout_fraud_n, heldout_seed, min_rows=min_rows, max_rows=max_rows)]
        for seed in range(100, 100 + kind_seeds):
            out += [Job("regression", "heldout", (sc, seed)) for sc in REGRESSION_SCENARIOS]
            out += [Job("multiclass", "heldout", (sc, seed)) for sc in MULTICLASS_SCENARIOS]
        for seed in range(100, 100 + binary_seeds):
            out += [Job("loan", "heldout", (sc, seed)) for sc in LOAN_SCENARIOS]
            out += [Job("ads", "heldout", (sc, seed)) for sc in ADS_SCENARIOS]
    # Round-robin over the worlds (each in its own order), so that a run stopped early has seen every world.
    queues = [[j for j in out if j.world == w] for w in WORLDS]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _build(job: Job) -> Any:
    from mlsleuth import testing

    if job.world == "fraud":
        return testing.build_case(job.payload)
    make = {"regression": testing.regression_case, "multiclass": testing.multiclass_case,
            "loan": testing.loan_case, "ads": testing.ads_case}[job.world]
    scenario, seed = job.payload
    return make(scenario, seed)


def run_one(job: Job) -> dict[str, Any]:
    """Generate, write and diagnose one case (in a worker); return its marks and timing."""
    warnings.filterwarnings("ignore")
    from mlsleuth.diagnosis import diagnose, find_case_files
    from mlsleuth.schema import ModelConfig

    folder = Path(tempfile.mkdtemp(prefix="mlsleuth-acc-"))
    try:
        case = _build(job)
        name = case.name
        case.write(folder)
        rows = case.log.num_rows
        del case
        truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
        t0 = time.perf_counter()
        error = None
        try:
            files: dict[str, Any] = dict(find_case_files(folder))  # as the CLI does for a CASE_DIR
            if "config" in files:
                files["config"] = ModelConfig.from_toml(files["config"])
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
        "name": name,
        "world": job.world,
        "set": job.set,
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


def _results(jobs: list[Job], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        yield from map(run_one, jobs)
        return
    # A fresh interpreter per few cases keeps memory bounded (each case's tables and engine go with it).
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=8) as pool:
        yield from pool.imap_unordered(run_one, jobs, chunksize=1)


def _rate(xs: list[bool]) -> str:
    return f"{sum(xs) / len(xs):6.1%}" if xs else "     -"


def _frac(xs: list[bool]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _table(title: str, key: str, order: list[str], results: list[dict[str, Any]]) -> None:
    header = f"{title:<26}{'n':>4}  {'full':>6}" + "".join(f"  {k:>7}" for k in COMPONENTS)
    print()
    print(header)
    print("-" * len(header))
    for group in [*order, "overall"]:
        rs = results if group == "overall" else [r for r in results if r[key] == group]
        if not rs:
            continue
        comp = {k: [r["marks"][k] for r in rs if k in r["marks"]] for k in COMPONENTS}
        if group == "overall":
            print("-" * len(header))
        print(f"{group:<26}{len(rs):>4}  {_rate([r['full'] for r in rs])}"
              + "".join(f"  {_rate(comp[k]):>7}" for k in COMPONENTS))


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    healthy = [r for r in rs if r["cause"] == "healthy"]
    return {"cases": len(rs), "full_credit": _frac([r["full"] for r in rs]),
            "false_incidents": sum(r["got"]["verdict"] != "healthy" for r in healthy), "healthy": len(healthy)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--set", dest="which", choices=("dev", "heldout", "all"), default=None,
                    help="which cases: the development set, the held-out set, or both (default: dev)")
    ap.add_argument("--n", type=int, default=None, help="the fraud suite alone: number of cases")
    ap.add_argument("--seed", type=int, default=7, help="with --n: the fraud suite's seed (default 7)")
    ap.add_argument("--dev-seeds", default="7", help="fraud suite seeds of the dev set, comma-separated (default 7)")
    ap.add_argument("--fraud-n", type=int, default=104, help="fraud cases per dev seed (default 104)")
    ap.add_argument("--heldout-seed", type=int, default=21, help="fraud suite seed of the held-out set (default 21)")
    ap.add_argument("--heldout-fraud-n", type=int, default=48, help="held-out fraud cases (default 48)")
    ap.add_argument("--kind-seeds", type=int, default=6,
                    help="held-out seeds (100, 101, ...) of the regression and multiclass scenarios (default 6)")
    ap.add_argument("--binary-seeds", type=int, default=5,
                    help="held-out seeds (100, 101, ...) of the loan and ads scenarios (default 5)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--min-rows", type=int, default=20_000)
    ap.add_argument("--max-rows", type=int, default=100_000)
    ap.add_argument("--show-misses", action="store_true", help="print every case without full credit")
    ap.add_argument("--jsonl", type=Path, default=None,
                    help="also append each case's result to this JSON Lines file as it finishes")
    ap.add_argument("--report", type=Path, default=None,
                    help="diagnose nothing: print the tables and figures of the results in this JSON Lines file "
                         "(as --jsonl wrote them, e.g. of a run cut short)")
    args = ap.parse_args(argv)
    if args.report is not None:
        lines = args.report.read_text(encoding="utf-8").splitlines()
        saved = [json.loads(x) for x in lines if x.strip()]
        sets = sorted({r["set"] for r in saved})
        report(saved, which=sets[0] if len(sets) == 1 else "all", workers=0, wall=0.0,
               show_misses=args.show_misses)
        return 0

    from mlsleuth.testing import suite_specs

    if args.n is not None and args.which is None:
        which = "fraud suite"
        jobs = [Job("fraud", "dev" if args.seed in {int(x) for x in args.dev_seeds.split(",")} else "heldout", s)
                for s in suite_specs(args.n, args.seed, min_rows=args.min_rows, max_rows=args.max_rows)]
    else:
        which = args.which or "dev"
        jobs = jobs_for(which, dev_seeds=tuple(int(x) for x in args.dev_seeds.split(",")),
                        heldout_seed=args.heldout_seed, fraud_n=args.fraud_n, heldout_fraud_n=args.heldout_fraud_n,
                        kind_seeds=args.kind_seeds, binary_seeds=args.binary_seeds, min_rows=args.min_rows,
                        max_rows=args.max_rows)
    worlds = [w for w in WORLDS if any(j.world == w for j in jobs)]
    print(f"diagnosing {len(jobs)} generated cases ({which}: "
          + ", ".join(f"{w} {sum(j.world == w for j in jobs)}" for w in worlds)
          + f") with {args.workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    for i, r in enumerate(_results(jobs, args.workers), 1):
        results.append(r)
        if args.jsonl is not None:
            with args.jsonl.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(r) + "\n")
        if i % 10 == 0 or i == len(jobs):
            done = sum(x["full"] for x in results)
            print(f"  {i}/{len(jobs)} done, {done} full credit, {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    report(results, which=which, workers=args.workers, wall=wall, show_misses=args.show_misses, n=args.n,
           seed=args.seed)
    return 0


def report(results: list[dict[str, Any]], *, which: str, workers: int, wall: float, show_misses: bool,
           n: int | None = None, seed: int | None = None) -> None:
    """Print the tables per world and cause of each set, and the figures as the last line (one JSON object)."""
    from mlsleuth.testing import Cause

    worlds = [w for w in WORLDS if any(r["world"] == w for r in results)]
    causes = [c.value for c in Cause] + ["healthy"]
    sets = [s for s in ("dev", "heldout") if any(r["set"] == s for r in results)]
    for st in sets:
        rs = [r for r in results if r["set"] == st]
        _table(f"{st}: world", "world", worlds, rs)
        _table(f"{st}: cause", "cause", causes, rs)
    if len(worlds) > 1:  # full credit of each cause in each world
        print()
        print(f"{'full credit':<26}" + "".join(f"{w:>12}" for w in worlds))
        for cause in causes:
            cells = []
            for w in worlds:
                xs = [r["full"] for r in results if r["world"] == w and r["cause"] == cause]
                cells.append(f"{sum(xs)}/{len(xs)}" if xs else "-")
            print(f"{cause:<26}" + "".join(f"{c:>12}" for c in cells))

    seconds = [r["seconds"] for r in results]
    incidents = [r for r in results if r["cause"] != "healthy"]
    healthy = [r for r in results if r["cause"] == "healthy"]
    false_alarms = sum(r["got"]["verdict"] != "healthy" for r in healthy)
    errors = [r for r in results if r["error"]]
    full_credit = sum(r["full"] for r in results) / len(results) if results else 0.0
    print()
    for st in sets:
        s = _summary([r for r in results if r["set"] == st])
        print(f"{st}: {s['full_credit']:.1%} full credit over {s['cases']} cases, "
              f"{s['false_incidents']}/{s['healthy']} healthy periods called incidents")
    print(f"full credit: {sum(r['full'] for r in results)}/{len(results)} = {full_credit:.1%} "
          f"(incidents {sum(r['full'] for r in incidents)}/{len(incidents)}, "
          f"healthy periods raised as incidents: {false_alarms}/{len(healthy)}, crashes: {len(errors)})")
    print(f"median {statistics.median(seconds):.2f} s per diagnosis (max {max(seconds):.2f} s); "
          f"whole run {wall:.0f} s with {workers} worker(s)")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    if show_misses:
        print()
        for r in sorted(results, key=lambda r: (r["set"], r["world"], r["cause"], r["name"])):
            if not r["full"]:
                missed = [k for k, v in r["marks"].items() if not v]
                print(f"MISS [{r['set']}] {r['name']} ({r['rows']:,} rows): {', '.join(missed)}"
                      + (f" [{r['error']}]" if r["error"] else ""))
                print(f"     want {json.dumps(r['want'])}")
                print(f"     got  {json.dumps(r['got'])}")
    per_cause: dict[str, float] = {}
    components: dict[str, dict[str, float]] = {}
    for cause in causes:
        rs = [r for r in results if r["cause"] == cause]
        if rs:
            per_cause[cause] = round(sum(r["full"] for r in rs) / len(rs), 4)
            comp = {k: [r["marks"][k] for r in rs if k in r["marks"]] for k in COMPONENTS}
            components[cause] = {k: round(sum(v) / len(v), 4) for k, v in comp.items() if v}
    per_world = {}
    for w in worlds:
        rs = [r for r in results if r["world"] == w]
        per_world[w] = _summary(rs) | {"per_cause": {c: _frac([r["full"] for r in rs if r["cause"] == c])
                                                     for c in causes if any(r["cause"] == c for r in rs)}}
    per_set = {st: _summary([r for r in results if r["set"] == st])
               | {"per_cause": {c: _frac([r["full"] for r in results if r["set"] == st and r["cause"] == c])
                                for c in causes if any(r["set"] == st and r["cause"] == c for r in results)},
                  "per_world": {w: _frac([r["full"] for r in results if r["set"] == st and r["world"] == w])
                                for w in worlds if any(r["set"] == st and r["world"] == w for r in results)}}
               for st in sets}
    figures = {
        "set": which,
        "cases": len(results),
        "worlds": worlds,
        "full_credit": round(full_credit, 4),
        "dev_full_credit": per_set.get("dev", {}).get("full_credit"),
        "heldout_full_credit": per_set.get("heldout", {}).get("full_credit"),
        "false_incidents": false_alarms,
        "per_world": per_world,
        "per_cause": per_cause,
        "per_set": per_set,
        "components": components,
        "incident_full_credit": round(sum(r["full"] for r in incidents) / len(incidents), 4) if incidents else None,
        "healthy_false_alarms": false_alarms,
        "crashes": len(errors),
        "median_s_per_case": round(statistics.median(seconds), 3),
        "wall_s": round(wall, 1),
        "n": n if n is not None else len(results),
        "seed": seed,
        "workers": workers,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
