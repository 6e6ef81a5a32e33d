"""The triage's batched computations give what their one-at-a-time forms give.

A thousand-feature log's columns are split as one matrix (``proportion_splits``), ramps are fitted from
prefix sums (``ramp_bounds``), and a wide log's per-slice re-summary leaves out the whole traffic
(``window_summary(whole=False)``): each must give the numbers the plain form gives, or a wide log's
diagnosis would differ from a narrow one's on the same columns.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from mlsleuth.diagnosis._signals import proportion_split, proportion_splits, ramp_bounds
from mlsleuth.monitors._windows import NumericRef, window_summary
from mlsleuth.store import DuckDBEngine


def _signals(rng: np.random.Generator, t: int, n: np.ndarray, count: int) -> list[np.ndarray]:
    out = []
    for c in range(count):
        k = int(rng.integers(2, 12))
        p = rng.random(k) * 0.5
        x = rng.binomial(n[:, None].astype(int), p[None, :]).astype(float)
        if c % 3 == 0:  # a step in some of them
            at = int(rng.integers(1, t))
            x[at:] = rng.binomial(n[at:, None].astype(int), np.clip(p * 1.6, 0, 1)[None, :])
        if c % 7 == 0:
            x[:] = 0.0
        out.append(x)
    return out


@pytest.mark.parametrize("period", [None, 24])
def test_proportion_splits_equal_one_split_per_signal(period: int | None) -> None:
    rng = np.random.default_rng(5)
    for t in (7, 60, 200):
        n = rng.integers(0, 400, size=t).astype(float)
        n[:2] = 0.0
        sigs = _signals(rng, t, n, 25)
        starts = list(np.cumsum([0] + [s.shape[1] for s in sigs[:-1]]))
        together = proportion_splits(np.concatenate(sigs, axis=1), n, starts, min_size=3, period=period)
        assert together == [proportion_split(s, n, min_size=3, period=period) for s in sigs]
    # A daily profile refitted before each signal's own change: the second pass must run.
    assert any(sp is not None and sp.index >= 24 for sp in together)


def _ramp_by_matrix(v: np.ndarray, split: int, max_grid: int = 120) -> tuple[int, int]:
    """The broken-stick fit as every pair of knots times every window (what ramp_bounds must equal)."""
    good = np.isfinite(v)
    y = v[good] - v[good].mean()
    x = np.arange(len(v), dtype=np.float64)[good]
    step = max(1, len(v) // max_grid)
    a, b = (g.ravel().astype(np.float64) for g in np.meshgrid(np.arange(0, split + 1, step),
                                                              np.arange(split, len(v), step), indexing="ij"))
    g = np.clip((x[None, :] - a[:, None]) / np.maximum(b - a, 1.0)[:, None], 0.0, 1.0)
    g -= g.mean(axis=1, keepdims=True)
    sgg = (g * g).sum(axis=1)
    gain = np.where(sgg > 0, (g @ y) ** 2 / np.maximum(sgg, 1e-12), -np.inf)
    k = int(np.argmax(gain))
    return int(a[k]), int(b[k])


def test_ramp_bounds_equal_the_matrix_fit() -> None:
    rng = np.random.default_rng(3)
    for trial in range(300):
        t = int(rng.integers(8, 300))
        split = int(rng.integers(1, t))
        v = rng.normal(size=t)
        if trial % 2:
            v += np.clip((np.arange(t) - rng.integers(0, t)) / rng.integers(1, 40), 0, 1) * 4
        if trial % 3 == 0:  # NaN windows, at the edges too: knots in them tie
            v[rng.random(t) < 0.3] = np.nan
            v[0] = v[-1] = np.nan
        if np.isfinite(v).sum() < 8:
            continue
        assert ramp_bounds(v, split) == _ramp_by_matrix(v, split), trial


def test_slices_without_the_whole_traffic_are_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    log = pa.table({
        "ts": pa.array([t0 + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 6 * 3600, n))],
                       type=pa.timestamp("us", tz="UTC")),
        "region": rng.choice(["eu", "us", "apac"], n),
        "x": rng.normal(size=n),
    })
    ref = NumericRef("x", (-1.0, 0.0, 1.0), (0.16, 0.5, 0.84), -3.0, 3.0, 0.0, 1.0, 0.0, 0.0, 1000)
    with DuckDBEngine() as eng:
        eng.register("log", log)
        both = window_summary(eng, "log", window_seconds=1800, refs={"x": ref}, slices=["region"])
        only = window_summary(eng, "log", window_seconds=1800, refs={"x": ref}, slices=["region"], whole=False)
    assert only.column("slice:region").null_count == 0  # no whole-traffic rows
    key = ["w", "slice:region"]
    sliced = both.filter(both.column("slice:region").is_valid()).sort_by([(k, "ascending") for k in key])
    assert only.sort_by([(k, "ascending") for k in key]).select(sliced.column_names).equals(sliced)
