"""Diagnosis accuracy on real public data: full credit per scenario and dataset (as diagnosis_accuracy.py scores).

Each case of ``real_cases()`` (``mlsleuth.testing``: models trained on an early period of Minneapolis police stops or
Victoria's electricity demand, served on a later window with the data's own drift and seasonality, a fault injected
on top or none) is written as a CASE_DIR and diagnosed as ``mlsleuth diagnose CASE_DIR`` does. These cases are a
measurement: nothing in the diagnosis is to be tuned on them.

Usage: ``.venv/bin/python bench/diagnosis_real.py [--show-misses]``. The last line is one JSON object of figures:
``cases``, ``full_credit`` (a fraction), ``per_scenario``, ``per_dataset``, ``false_incidents`` (healthy windows
called incidents), ``misses`` (per scenario, the components that were wrong, with counts).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnosis_accuracy import score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--show-misses", action="store_true", help="print what was wanted and got for each miss")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from mlsleuth.diagnosis import diagnose, find_case_files
    from mlsleuth.testing import real_case, real_cases

    per_scenario: dict[str, list[bool]] = {}
    per_dataset: dict[str, list[bool]] = {}
    missed_parts: dict[str, Counter[str]] = {}
    false_incidents = 0
    crashes = 0
    t0 = time.perf_counter()
    for dataset, scenario, seed in real_cases():
        case = real_case(dataset, scenario, seed)
        truth = case.truth.to_dict()
        with tempfile.TemporaryDirectory() as tmp:
            case.write(tmp)
            files: dict[str, Any] = dict(find_case_files(Path(tmp)))
            try:
                got = diagnose(files.pop("log"), **files).to_dict()
            except Exception as e:  # a crash is a miss, and the bench goes on
                crashes += 1
                print(f"CRASH {case.name}: {type(e).__name__}: {e}", flush=True)
                got = {"verdict": "error", "hypotheses": []}
        marks = score(truth, got)
        full = all(marks.values())
        per_scenario.setdefault(scenario, []).append(full)
        per_dataset.setdefault(dataset, []).append(full)
        if scenario == "healthy" and got["verdict"] != "healthy":
            false_incidents += 1
        missed = [k for k, v in marks.items() if not v]
        if missed:
            missed_parts.setdefault(scenario, Counter()).update(missed)
        top = got["hypotheses"][0] if got["hypotheses"] else {}
        print(f"{case.name:48s} {case.log.num_rows:>6,} rows  {'full' if full else 'MISS ' + ','.join(missed)}"
              + (f"  (got {got['verdict']} {top.get('cause', '')})" if missed else ""), flush=True)
        if missed and args.show_misses:
            want = truth["hypotheses"][0] if truth["hypotheses"] else {}
            keys = ("cause", "onset", "features", "inputs", "segments", "events")
            print(f"     want {json.dumps({k: want.get(k) for k in keys})}")
            print(f"     got  {json.dumps({k: top.get(k) for k in keys} | {'verdict': got['verdict']})}")
    total = [x for xs in per_scenario.values() for x in xs]
    figures = {
        "cases": len(total),
        "full_credit": round(sum(total) / len(total), 4),
        "per_scenario": {k: round(sum(v) / len(v), 4) for k, v in per_scenario.items()},
        "per_dataset": {k: round(sum(v) / len(v), 4) for k, v in per_dataset.items()},
        "false_incidents": false_incidents,
        "crashes": crashes,
        "misses": {k: dict(v) for k, v in missed_parts.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
