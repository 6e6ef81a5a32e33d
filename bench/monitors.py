"""A full monitor pass over a 10M-row, 30-column week against a 1M-row reference, and drift vs Evidently/NannyML.

Steps (each measured step runs in its own child process, so the generator's memory does not count):

1. generate the week once into a temporary store (1M-row batches written as Parquet in the store layout)
   and a 1M-row reference, in bounded memory;
2. ``mlsleuth profile``-equivalent: profile the reference and keep it in the store (timed apart);
3. the full monitor pass (every default monitor, daily windows, segments by region) against the stored
   reference: wall time and peak RSS of the child;
4. on a 1M-row slice, the same drift work (every feature, input, score and prediction column vs the
   reference) by mlsleuth (from raw reference data, profiling included), Evidently's ``DataDriftPreset``
   and NannyML's ``UnivariateDriftCalculator``, each in a child; ratios are their time over ours.

Evidently 0.7 does not import beside our pandas pin (3.x). When it fails in this interpreter, the Evidently
child runs (the same script, same slice, same timing) with the python of a separate virtual environment,
``.venv-bench-evidently/`` at the repo root, created once (evidently, ``pandas<3`` and pyarrow) and reused.
If that cannot be built, the reason is printed and ``vs_evidently`` stays null.

Usage: ``.venv/bin/python bench/monitors.py [--rows 10000000] [--ref-rows 1000000] [--keep DIR] [--slice-only]``
(``--slice-only``: generate only the reference and the 1M-row slice, and run only the slice comparison).
Prints readable lines, then one JSON object of figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODEL = "fraud"
TIMEOUT_S = 1800
EVIDENTLY_VENV = Path(__file__).resolve().parent.parent / ".venv-bench-evidently"
INSTALL_TIMEOUT_S = 1200


# ----------------------------------------------------------------------------------------------- generation


def generate(root: Path, rows: int, ref_rows: int, week: bool = True) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mlsleuth.store import LocalStore
    from mlsleuth.testing import Cause, Variation, iter_log_batches, plan_case
    from mlsleuth.testing._spec import UpstreamChange

    store = LocalStore.init(root / "store")
    onset = datetime(2026, 3, 6, 18, tzinfo=UTC)
    spec = plan_case(Cause.UPSTREAM_DATA_CHANGE, seed=7, rows=rows,
                     variation=Variation(mode=UpstreamChange.SCALE, onset=onset))
    t0 = time.perf_counter()
    n = 0
    ncols = 0
    for b, batch in enumerate(iter_log_batches(spec, rows, batch_rows=1_000_000) if week else ()):
        day = pc.strftime(batch.column("ts"), format="%Y-%m-%d")
        for d in pc.unique(day).to_pylist():
            part = batch.filter(pc.equal(day, d)).drop_columns(["model"])
            out = store.path / "log" / f"model={MODEL}" / f"date={d}"
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, out / f"part-{b:04d}.parquet", compression="snappy")
        n += batch.num_rows
        ncols = batch.num_columns
    gen_s = time.perf_counter() - t0
    healthy = plan_case(None, seed=11, rows=ref_rows)
    ref = next(iter_log_batches(healthy, ref_rows, batch_rows=ref_rows))
    ref = ref.drop_columns([c for c in ("request_id", "ts", "model") if c in ref.column_names])
    pq.write_table(ref, root / "reference.parquet", compression="snappy")
    first = next(iter_log_batches(spec, 1_000_000, batch_rows=1_000_000))
    pq.write_table(first, root / "slice.parquet", compression="snappy")
    if not week:
        ncols = first.num_columns
    del first, ref
    _ = pa
    return {"rows": n if week else None, "columns": ncols, "generate_s": round(gen_s, 1) if week else None}


# ----------------------------------------------------------------------------------------------- children


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_profile(root: Path) -> dict[str, Any]:
    from mlsleuth.monitors import build_reference, save_reference

    t0 = time.perf_counter()
    ref = build_reference(root / "reference.parquet")
    save_reference(root / "store", MODEL, ref)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb()}


def child_pass(root: Path, window: str) -> dict[str, Any]:
    from mlsleuth.monitors import load_reference, run_monitors
    from mlsleuth.store import LocalStore

    t0 = time.perf_counter()
    store = LocalStore.open(root / "store")
    ref = load_reference(root / "store", MODEL)
    report = run_monitors(store, ref, window=window, segment=("region",), model=MODEL)
    wall = time.perf_counter() - t0
    by: dict[str, int] = {}
    for f in report.findings:
        by[f.monitor] = by.get(f.monitor, 0) + 1
    return {"seconds": wall, "peak_rss_mb": _peak_mb(), "rows": report.rows, "windows": report.windows,
            "findings": len(report.findings), "by_monitor": by, "skipped": [m for m, _ in report.skipped]}


def _drift_columns(names: list[str]) -> list[str]:
    return [c for c in names if c.startswith(("feature.", "input.")) or c in ("score", "prediction")]


def child_ours_slice(root: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from mlsleuth.monitors import ArrowSource, FeatureDrift, InputDrift, PredictionDrift, build_reference, run_monitors

    ref_t = pq.read_table(root / "reference.parquet")
    cur = pq.read_table(root / "slice.parquet")
    cols = _drift_columns(ref_t.column_names)
    t0 = time.perf_counter()
    ref = build_reference(ref_t.select(cols))
    report = run_monitors(ArrowSource(cur), ref, [FeatureDrift(), InputDrift(), PredictionDrift()], window="7d")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb(), "columns": len(cols),
            "findings": len(report.findings)}


def child_evidently(root: Path) -> dict[str, Any]:
    from importlib.metadata import version

    import pandas as pd
    import pyarrow.parquet as pq

    try:
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except ImportError as exc:
        raise SystemExit(f"evidently {version('evidently')} does not import with pandas {version('pandas')} "
                         f"(our pin): {exc}") from None
    ref_t = pq.read_table(root / "reference.parquet")
    cols = _drift_columns(ref_t.column_names)
    ref = ref_t.select(cols).to_pandas()
    cur = pq.read_table(root / "slice.parquet", columns=cols).to_pandas()
    t0 = time.perf_counter()
    report = Report([DataDriftPreset()])
    kwargs = {"reference_data": ref, "current_data": cur}
    result = report.run(**kwargs)
    if result is not None and hasattr(result, "dict"):
        result.dict()
    _ = pd
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb(), "columns": len(cols),
            "evidently": version("evidently"), "pandas": version("pandas"), "python": sys.executable}


def child_nannyml(root: Path) -> dict[str, Any]:
    import nannyml as nml
    import pyarrow.parquet as pq

    ref_t = pq.read_table(root / "reference.parquet")
    cols = _drift_columns(ref_t.column_names)
    ref = ref_t.select(cols).to_pandas()
    cur = pq.read_table(root / "slice.parquet", columns=cols).to_pandas()
    t0 = time.perf_counter()
    calc = nml.UnivariateDriftCalculator(column_names=cols, chunk_number=1,
                                         continuous_methods=["jensen_shannon"], categorical_methods=["jensen_shannon"])
    calc.fit(ref)
    calc.calculate(cur)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_mb(), "columns": len(cols)}


CHILDREN = {"profile": child_profile, "ours_slice": child_ours_slice, "evidently": child_evidently,
            "nannyml": child_nannyml}


_PROBE = ("import evidently, pandas; from evidently import Report; from evidently.presets import DataDriftPreset; "
          "import pyarrow; from importlib.metadata import version; print(version('evidently'), version('pandas'))")


def _probe_evidently(python: str) -> tuple[str | None, str]:
    """("<evidently> <pandas>" versions, "") if ``python`` imports Evidently's DataDriftPreset, else (None, why)."""
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip().splitlines()[-1], ""
    return None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]


def evidently_python() -> tuple[str | None, str]:
    """The interpreter to run the Evidently child with, and a note on it (or None and the reason)."""
    found, why = _probe_evidently(sys.executable)
    if found:
        return sys.executable, "project venv"
    py = EVIDENTLY_VENV / "bin" / "python"
    note = f"separate venv {EVIDENTLY_VENV.name}/ (evidently does not import here: {why})"
    if py.exists() and _probe_evidently(str(py))[0]:
        return str(py), note
    from importlib.metadata import PackageNotFoundError, version

    try:
        want = f"evidently=={version('evidently')}"  # the same Evidently release as the project venv has
    except PackageNotFoundError:
        want = "evidently"
    reqs = [want, "pandas<3", "pyarrow"]
    print(f"evidently does not import in this venv ({why}); creating {EVIDENTLY_VENV} with {' '.join(reqs)} ...",
          flush=True)
    try:
        steps = [[sys.executable, "-m", "venv", str(EVIDENTLY_VENV)],
                 [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs]]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                return None, f"{why}; building {EVIDENTLY_VENV.name} failed ({step[2]}): {tail[:300]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{why}; building {EVIDENTLY_VENV.name} failed: {exc}"
    if _probe_evidently(str(py))[0] is None:
        return None, f"{why}; evidently does not import in {EVIDENTLY_VENV.name} either: {_probe_evidently(str(py))[1]}"
    return str(py), note


def run_child(name: str, root: Path, *extra: str, python: str | None = None) -> dict[str, Any]:
    """Run one step in a fresh interpreter (``python``, default this one); its last stdout line is its JSON result."""
    cmd = [python or sys.executable, __file__, "--child", name, "--root", str(root), *extra]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    out: dict[str, Any] = json.loads(lines[-1])
    return out


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--ref-rows", type=int, default=1_000_000)
    ap.add_argument("--window", default="1d")
    ap.add_argument("--keep", type=Path, default=None, help="Generate into (or reuse) this folder and keep it.")
    ap.add_argument("--child", choices=[*CHILDREN, "pass"], default=None)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--slice-only", action="store_true",
                    help="Generate only the reference and the 1M-row slice; run only the slice comparison.")
    args = ap.parse_args()
    if args.child is not None:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        import warnings

        warnings.filterwarnings("ignore")
        res = child_pass(args.root, args.window) if args.child == "pass" else CHILDREN[args.child](args.root)
        print(json.dumps(res))
        return

    root = args.keep or Path(tempfile.mkdtemp(prefix="mlsleuth-bench-monitors-"))
    try:
        have_week = (root / "store" / "log").exists() or args.slice_only
        if have_week and (root / "slice.parquet").exists() and (root / "reference.parquet").exists():
            gen: dict[str, Any] = {"rows": None if args.slice_only else args.rows, "columns": None,
                                   "generate_s": None}
            print(f"reusing the generated data in {root}")
        else:
            root.mkdir(parents=True, exist_ok=True)
            gen = generate(root, args.rows, args.ref_rows, week=not args.slice_only)
            if args.slice_only:
                print(f"generated the {args.ref_rows:,}-row reference and the 1M-row slice only ({root})")
            else:
                print(f"generated {gen['rows']:,} rows x {gen['columns']} columns and a {args.ref_rows:,}-row "
                      f"reference in {gen['generate_s']} s ({root})")
        prof: dict[str, Any] = {}
        full: dict[str, Any] = {}
        if not args.slice_only:
            prof = run_child("profile", root)
            print(f"reference profile (once, stored): {prof.get('seconds', float('nan')):.2f} s, "
                  f"peak RSS {prof.get('peak_rss_mb', float('nan')):.0f} MB {prof.get('error', '')}")
            full = run_child("pass", root, "--window", args.window)
        if args.slice_only:
            print("full monitor pass: skipped (--slice-only)")
        elif "error" in full:
            print(f"monitor pass failed: {full['error']}")
        else:
            print(f"full monitor pass over {full['rows']:,} rows, {full['windows']} windows of {args.window}, "
                  f"segments by region: {full['seconds']:.2f} s wall, peak RSS {full['peak_rss_mb']:.0f} MB "
                  f"(goal 10 s, 2048 MB); {full['findings']} findings {full['by_monitor']}")
        ours = run_child("ours_slice", root)
        print(f"1M-row slice drift, mlsleuth (reference profiled from raw data, included): "
              f"{ours.get('seconds', float('nan')):.2f} s, peak RSS {ours.get('peak_rss_mb', float('nan')):.0f} MB")
        ratios: dict[str, Any] = {}
        for name in ("evidently", "nannyml"):
            where = ""
            if name == "evidently":
                py, note = evidently_python()
                res = run_child(name, root, python=py) if py else {"error": note}
                if "evidently" in res:
                    where = f" [evidently {res['evidently']}, pandas {res['pandas']}, {note}]"
            else:
                res = run_child(name, root)
            if "error" in res or "error" in ours:
                ratios[name] = None
                print(f"1M-row slice drift, {name}: not measured ({res.get('error') or ours.get('error')})")
            else:
                ratios[name] = round(res["seconds"] / ours["seconds"], 2)
                print(f"1M-row slice drift, {name}: {res['seconds']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB "
                      f"-> {ratios[name]}x mlsleuth's time{where}")
        figures = {
            "rows": full.get("rows", gen["rows"]),
            "columns": gen["columns"],
            "reference_rows": args.ref_rows,
            "window": args.window,
            "wall_s": round(full["seconds"], 2) if "seconds" in full else None,
            "peak_rss_mb": round(full["peak_rss_mb"]) if "peak_rss_mb" in full else None,
            "findings": full.get("findings"),
            "reference_profile_s": round(prof["seconds"], 2) if "seconds" in prof else None,
            "slice_ours_s": round(ours["seconds"], 2) if "seconds" in ours else None,
            "vs_evidently": ratios.get("evidently"),
            "vs_nannyml": ratios.get("nannyml"),
            "generate_s": gen["generate_s"],
        }
        print(json.dumps(figures))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
