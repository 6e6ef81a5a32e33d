"""Generation speed of the scenario generator (mlsleuth.testing).

Measures: training the fraud world once, one 150k-row case, the demo case, a suite of N varied cases,
and chunked generation with iter_log_batches. Prints one line per measurement, then a JSON object of
figures as the last line.
Run: .venv/bin/python bench/bench_scenarios.py [--suite N] [--batch-rows R] [--rows R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from mlsleuth.testing import Cause, demo_case, fraud_world, iter_log_batches, make_case, plan_case, scenario_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=int, default=24, help="cases in the suite run")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows generated with iter_log_batches")
    parser.add_argument("--batch-rows", type=int, default=250_000)
    args = parser.parse_args()
    figures: dict[str, float] = {}

    t = time.perf_counter()
    fraud_world(0)
    figures["world_train_s"] = time.perf_counter() - t
    print(f"world (train model + reference, once per process): {figures['world_train_s']:.2f} s")

    times = []
    for seed, cause in enumerate((Cause.UPSTREAM_DATA_CHANGE, Cause.SILENT_PIPELINE_FAILURE, None)):
        t = time.perf_counter()
        make_case(cause, seed=seed, rows=150_000)
        times.append(time.perf_counter() - t)
    figures["case_150k_median_s"] = statistics.median(times)
    print(f"one 150k-row case: median {figures['case_150k_median_s']:.2f} s over {len(times)}")

    t = time.perf_counter()
    demo = demo_case(0)
    figures["demo_s"] = time.perf_counter() - t
    print(f"demo case ({demo.log.num_rows} rows): {figures['demo_s']:.2f} s")

    t = time.perf_counter()
    rows = 0
    n = 0
    for case in scenario_suite(args.suite, seed=0):
        rows += case.log.num_rows
        n += 1
    elapsed = time.perf_counter() - t
    figures["suite_cases"] = n
    figures["suite_s"] = elapsed
    figures["suite_rows_per_s"] = rows / elapsed
    print(f"suite of {n} cases, {rows} rows: {elapsed:.1f} s ({rows / elapsed:,.0f} rows/s, "
          f"{elapsed / max(n, 1):.2f} s per case)")

    spec = plan_case(Cause.UPSTREAM_DATA_CHANGE, seed=1)
    t = time.perf_counter()
    total = 0
    peak_batch = 0
    for batch in iter_log_batches(spec, rows=args.rows, batch_rows=args.batch_rows):
        total += batch.num_rows
        peak_batch = max(peak_batch, batch.nbytes)
    elapsed = time.perf_counter() - t
    figures["batches_rows"] = total
    figures["batches_rows_per_s"] = total / elapsed
    figures["batch_mb"] = peak_batch / 1e6
    print(f"iter_log_batches: {total} rows in {elapsed:.1f} s ({total / elapsed:,.0f} rows/s), "
          f"largest batch {peak_batch / 1e6:.0f} MB in Arrow")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
