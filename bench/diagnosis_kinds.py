"""Diagnosis accuracy on regression and multiclass cases: full credit per scenario (as diagnosis_accuracy.py scores).

Each case of ``regression_case`` / ``multiclass_case`` (``mlsleuth.testing``) is written as a CASE_DIR and diagnosed
as ``mlsleuth diagnose CASE_DIR`` does. Develop on seeds 0-9; report on seeds never looked at while tuning.

Usage: ``.venv/bin/python bench/diagnosis_kinds.py [--seeds 100-109]``. The last line is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnosis_accuracy import score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", default="100-109", help="a range a-b or a comma list (default 100-109)")
    args = ap.parse_args(argv)
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi) + 1)) if hi else [int(s) for s in args.seeds.split(",")]
    warnings.filterwarnings("ignore")
    from mlsleuth.diagnosis import diagnose, find_case_files
    from mlsleuth.testing import MULTICLASS_SCENARIOS, REGRESSION_SCENARIOS, multiclass_case, regression_case

    per: dict[str, list[bool]] = {}
    for kind, make, scenarios in (("regression", regression_case, REGRESSION_SCENARIOS),
                                  ("multiclass", multiclass_case, MULTICLASS_SCENARIOS)):
        for scenario in scenarios:
            for seed in seeds:
                case = make(scenario, seed)
                with tempfile.TemporaryDirectory() as tmp:
                    case.write(tmp)
                    files: dict[str, Any] = dict(find_case_files(Path(tmp)))
                    got = diagnose(files.pop("log"), **files).to_dict()
                marks = score(case.truth.to_dict(), got)
                per.setdefault(f"{kind}-{scenario}", []).append(all(marks.values()))
                missed = [k for k, v in marks.items() if not v]
                print(f"{case.name:40s} {'full' if not missed else 'MISS ' + ','.join(missed)}", flush=True)
    total = [x for xs in per.values() for x in xs]
    figures = {"cases": len(total), "full_credit": round(sum(total) / len(total), 4),
               "per_scenario": {k: round(sum(v) / len(v), 4) for k, v in per.items()}, "seeds": args.seeds}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
