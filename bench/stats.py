"""Timing of the statistics layer: drift decisions, change points and profiling.

Prints readable lines, then one JSON object of figures as the last line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from mlsleuth.profiles import edges_from_reference, profile_categorical, profile_numeric
from mlsleuth.stats import DriftKind, compare_counts, detect_change_points


def _ms(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    p22 = np.full(22, 1 / 22)
    ref22, cur22 = rng.multinomial(200_000, p22), rng.multinomial(10_000_000, p22)
    zipf = 1 / np.arange(1, 1001) ** 1.1
    zipf /= zipf.sum()
    ref1k, cur1k = rng.multinomial(100_000, zipf), rng.multinomial(1_000, zipf)
    x = rng.normal(size=10_000)
    x[3000:] += 1
    values = rng.lognormal(size=1_000_000)
    edges = edges_from_reference(values[:100_000])
    cats = rng.choice([f"v{i}" for i in range(200)], size=1_000_000)
    figures = {
        "drift_numeric_22_bins_10M_rows_ms": _ms(lambda: compare_counts(ref22, cur22, kind=DriftKind.NUMERIC), 50),
        "drift_categorical_1000_values_ms": _ms(lambda: compare_counts(ref1k, cur1k, kind=DriftKind.CATEGORICAL), 10),
        "change_points_10k_points_ms": _ms(lambda: detect_change_points(x), 20),
        "profile_numeric_1M_rows_ms": _ms(lambda: profile_numeric(values, edges), 5),
        "profile_categorical_1M_rows_ms": _ms(lambda: profile_categorical(cats), 3),
    }
    for name, value in figures.items():
        print(f"{name:40s} {value:9.2f}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
