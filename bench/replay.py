"""Replay throughput through a scikit-learn model, against a per-row Python loop in the same run.

Replays a synthetic prediction log (10 features, 2 segment columns, labels) end to end with
``mlsleuth.replay.replay``: selection, batching into DataFrames, the model, the comparison with
the logged scores, metrics before/after and per segment, and the per-request difference table.
The loop baseline scores one request at a time the way a hand-written script would (a one-row
DataFrame per call to ``predict_proba``), timed on a subsample.

Usage: ``python bench/replay.py [--rows 1000000] [--loop-rows 2000] [--repeats 3]``. The last line is JSON
(``replay_rows_per_s`` and ``vs_loop`` are the logistic-regression figures).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from mlsleuth.replay import EstimatorRunner, replay

N_FEATURES = 10


def make_log(model: object, n: int, rng: np.random.Generator) -> pa.Table:
    x = rng.normal(size=(n, N_FEATURES))
    feats = {f"feature.f{i}": x[:, i] for i in range(N_FEATURES)}
    score = EstimatorRunner(model).run(pa.table(feats))
    start = datetime(2026, 3, 6, tzinfo=UTC)
    ts = pa.array(start + np.arange(n) * timedelta(milliseconds=50), pa.timestamp("us", tz="UTC"))
    return pa.table({
        "request_id": pa.array(np.char.add("r", np.arange(n).astype(str))), "ts": ts,
        "region": rng.choice(np.array(["EU", "US", "APAC", "LATAM"]), n),
        "channel": rng.choice(np.array(["web", "app", "pos"]), n), **feats, "score": score,
        "prediction": (score >= 0.5).astype(np.int64), "label": (rng.random(n) < score).astype(np.int64)})


def per_row_loop(model: object, log: pa.Table, rows: int, budget_s: float = 5.0) -> float:
    """Requests/s of a per-row loop: one DataFrame and one predict_proba call per request.

    Runs ``rows`` requests or for ``budget_s`` seconds, whichever ends first.
    """
    names = [f"f{i}" for i in range(N_FEATURES)]
    sub = log.slice(0, rows).to_pylist()
    flipped = done = 0
    t0 = time.perf_counter()
    for rec in sub:
        frame = pd.DataFrame([[rec[f"feature.{c}"] for c in names]], columns=names)
        s = float(model.predict_proba(frame)[0, 1])  # type: ignore[attr-defined]
        flipped += (s >= 0.5) != (rec["score"] >= 0.5)
        done += 1
        if time.perf_counter() - t0 > budget_s:
            break
    return done / (time.perf_counter() - t0)


def best_of(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--loop-rows", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    xt = rng.normal(size=(50_000, N_FEATURES))
    yt = (xt[:, 0] + 0.5 * xt[:, 1] - 0.3 * xt[:, 2] + rng.normal(size=50_000) > 1.5).astype(int)
    frame = pd.DataFrame(xt, columns=[f"f{i}" for i in range(N_FEATURES)])
    figures: dict[str, float | int] = {"rows": args.rows}
    for name, model in (("logistic_regression", LogisticRegression().fit(frame, yt)),
                        ("hist_gradient_boosting", HistGradientBoostingClassifier(max_iter=50).fit(frame, yt))):
        log = make_log(model, args.rows, rng)
        runner = EstimatorRunner(model)
        result = replay(log, model=runner)
        assert result.n_changed == 0, "replaying the logging model must reproduce its scores"
        secs = best_of(lambda log=log, runner=runner: replay(log, model=runner), args.repeats)
        rate = args.rows / secs
        loop = per_row_loop(model, log, args.loop_rows)
        print(f"{name}: replay {args.rows:,} requests in {secs:.3f} s = {rate:,.0f} requests/s; "
              f"per-row loop {loop:,.0f} requests/s; {rate / loop:,.0f}x")
        figures[f"{name}_rows_per_s"] = round(rate)
        figures[f"{name}_loop_rows_per_s"] = round(loop)
        figures[f"{name}_vs_loop"] = round(rate / loop, 1)
    figures["replay_rows_per_s"] = figures["logistic_regression_rows_per_s"]
    figures["vs_loop"] = figures["logistic_regression_vs_loop"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
