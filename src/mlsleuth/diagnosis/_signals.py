"""Change detection on small per-window aggregates (numpy only, no I/O).

Two shapes of signal come out of the windowed queries:

* proportions: per window ``t`` a count ``x[t, k]`` of rows with property ``k`` out of
  ``n[t]`` rows (values at or below a reference decile, nulls, zeros, a category...).
  The best single split is the one that maximises the largest pooled before/after
  difference scaled by its binomial standard error, computed for every split at once
  from cumulative sums (O(T·K)).
* levels: one value per window (latency p99, an error rate, FPR), split by the same
  before/after contrast against the within-segment spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Split", "deseason", "level_split", "nanmedian", "proportion_split", "proportion_splits",
           "ramp_bounds", "row_split",
           "seasonal_rate", "split_effects", "transition_width"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Split:
    """The best single change: the index of the first window after it, and its size.

    Attributes
    ----------
    index
        First window (or row) of the "after" segment.
    effect
        Size of the change in the signal's own unit (a proportion difference, or a level difference).
    z
        The change divided by its standard error: how far above noise it is.
    dim
        Which column of a multi-column signal moved the most.
    before, after
        The signal's value in that column before and after.
    """

    index: int
    effect: float
    z: float
    dim: int
    before: float
    after: float


def _phase_expected(xs: FloatArray, ns: FloatArray, period: int | None,
                    fit_until: int | npt.NDArray[np.int64] | None = None) -> FloatArray | None:
    """Expected counts per window from the time-of-day profile (None when there is no usable cycle).

    ``fit_until`` estimates the profile from the windows before it only (the clean part when
    a change follows); the profile is then applied to every window. An array gives each column its own.
    """
    t = len(ns)
    if period is None or period < 2 or t < 2 * period:
        return None
    phase = np.arange(t) % period
    if isinstance(fit_until, np.ndarray):
        return _phase_expected_each(xs, ns, period, fit_until)
    upto = t if fit_until is None else fit_until
    px = np.zeros((period, xs.shape[1]))
    pn = np.zeros(period)
    np.add.at(px, phase[:upto], xs[:upto])
    np.add.at(pn, phase[:upto], ns[:upto])
    rate = np.where(pn[:, None] > 0, px / np.maximum(pn, 1)[:, None], 0.0)
    return ns[:, None] * rate[phase]


def _phase_expected_each(xs: FloatArray, ns: FloatArray, period: int,
                         fit_until: npt.NDArray[np.int64]) -> FloatArray:
    """:func:`_phase_expected` with column ``d``'s profile fitted on its windows before ``fit_until[d]``.

    The per-phase sums are running sums over the days (the same additions, in the same order, as
    :func:`_phase_expected`'s), read at each column's last day before its own cut.
    """
    t, d = xs.shape
    days = -(-t // period)
    pad = days * period - t
    cx = np.cumsum(np.pad(xs, ((0, pad), (0, 0))).reshape(days, period, d), axis=0)
    cn = np.cumsum(np.pad(ns, (0, pad)).reshape(days, period), axis=0)
    phases = np.arange(period)[:, None]
    last = (fit_until[None, :] - 1 - phases) // period  # the last day (period x columns) before the cut; -1: none
    day = np.clip(last, 0, None)
    px = np.where(last >= 0, cx[day, phases, np.arange(d)[None, :]], 0.0)
    pn = np.where(last >= 0, cn[day, phases], 0.0)
    rate = np.where(pn > 0, px / np.maximum(pn, 1), 0.0)
    out: FloatArray = ns[:, None] * rate[np.arange(t) % period]
    return out


def proportion_splits(x: FloatArray, n: npt.ArrayLike, starts: Sequence[int], *, min_size: int = 2,
                      period: int | None = None) -> list[Split | None]:
    """:func:`proportion_split` of many signals that share their windows' rows ``n``, in one pass.

    ``x`` holds the signals side by side (T x all their columns); signal ``c`` is columns
    ``starts[c]`` up to the next start. The same numbers as one :func:`proportion_split` per signal,
    for the cost of a few: a thousand-feature log's columns are split as one matrix.
    """
    ns = np.asarray(n, dtype=np.float64)
    bounds = [*starts, x.shape[1]]
    first = _proportion_splits(x, ns, starts, min_size=min_size, period=period)
    if period is None:
        return first
    redo = [c for c, sp in enumerate(first) if sp is not None and sp.index >= period]
    if not redo:
        return first
    cols = np.concatenate([np.arange(bounds[c], bounds[c + 1]) for c in redo])
    sizes = [bounds[c + 1] - bounds[c] for c in redo]
    sub_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cut = np.repeat(np.array([first[c].index for c in redo], dtype=np.int64), sizes)  # type: ignore[union-attr]
    second = _proportion_splits(x[:, cols], ns, sub_starts, min_size=min_size, period=period, fit_until=cut)
    out = list(first)
    for c, sp in zip(redo, second, strict=True):
        one = first[c]
        if sp is not None and one is not None and sp.z >= one.z:
            out[c] = sp
    return out


def _proportion_splits(xs: FloatArray, ns: FloatArray, starts: Sequence[int] | npt.NDArray[np.int64], *,
                       min_size: int, period: int | None,
                       fit_until: npt.NDArray[np.int64] | None = None) -> list[Split | None]:
    """:func:`_proportion_split` (with overdispersion) of each signal of ``xs`` (see :func:`proportion_splits`)."""
    t, width = xs.shape
    n_sig = len(starts)
    if t < 2 * min_size or ns.sum() <= 0:
        return [None] * n_sig
    expected = _phase_expected(xs, ns, period, fit_until)
    resid = xs - expected if expected is not None else xs
    cx = np.cumsum(resid, axis=0)
    craw = np.cumsum(xs, axis=0)
    cn = np.cumsum(ns)
    total_x, total_n, total_raw = cx[-1], cn[-1], craw[-1]
    idx = np.arange(min_size, t - min_size + 1)
    nb = cn[idx - 1]
    na = total_n - nb
    ok = (nb > 0) & (na > 0)
    if not ok.any():
        return [None] * n_sig
    idx, nb, na = idx[ok], nb[ok], na[ok]
    pb = cx[idx - 1] / nb[:, None]
    pa = (total_x - cx[idx - 1]) / na[:, None]
    p = total_raw / total_n
    var = np.clip(p * (1 - p), 1e-12, None)
    phi = _dispersion(resid, ns, p)
    z = np.abs(pa - pb) / np.sqrt(var * phi * (1 / nb[:, None] + 1 / na[:, None]))
    starts = np.asarray(starts, dtype=np.int64)
    group = np.repeat(np.arange(n_sig), np.diff(np.append(starts, width)))
    flat = np.argmax(np.maximum.reduceat(z, starts, axis=1), axis=0)  # per signal: its best split
    at = z[flat[group], np.arange(width)]
    # The first column of each signal that reaches its best z at that split.
    dim = np.minimum.reduceat(np.where(at == np.maximum.reduceat(at, starts)[group], np.arange(width), width), starts)
    i = idx[flat]
    # Does one step explain the windows? (see _proportion_split)
    side = np.where(np.arange(t)[:, None] < i[None, :], pb[flat, dim][None, :], pa[flat, dim][None, :])
    okr = ns > 0
    rr = np.where(okr[:, None], resid[:, dim] / np.maximum(ns, 1)[:, None], 0.0) - side
    vv = np.clip(var[dim], 1e-12, None)[None, :] / np.maximum(ns, 1)[:, None]
    phi_r = np.median((rr[okr] ** 2) / vv[okr], axis=0) / 0.455 if okr.sum() >= 4 else np.ones(n_sig)
    zs = z[flat, dim] / np.sqrt(np.maximum(phi_r / np.maximum(phi[dim], 1.0), 1.0))
    rb = craw[i - 1, dim] / cn[i - 1]
    ra = (total_raw[dim] - craw[i - 1, dim]) / (total_n - cn[i - 1])
    effect = pa[flat, dim] - pb[flat, dim]
    return [Split(index=int(i[c]), effect=float(effect[c]), z=float(zs[c]), dim=int(dim[c] - starts[c]),
                  before=float(rb[c]), after=float(ra[c])) for c in range(n_sig)]


def proportion_split(x: npt.ArrayLike, n: npt.ArrayLike, *, min_size: int = 2, period: int | None = None,
                     overdispersion: bool = True) -> Split | None:
    """Best split of per-window counts, refined once with the daily profile fitted before the change."""
    first = _proportion_split(x, n, min_size=min_size, period=period, overdispersion=overdispersion)
    if first is None or period is None or first.index < period:
        return first
    second = _proportion_split(x, n, min_size=min_size, period=period, overdispersion=overdispersion,
                               fit_until=first.index)
    return second if second is not None and second.z >= first.z else first


def _proportion_split(x: npt.ArrayLike, n: npt.ArrayLike, *, min_size: int = 2, period: int | None = None,
                      overdispersion: bool = True, fit_until: int | None = None) -> Split | None:
    """Best split of per-window counts ``x`` (T×K) out of ``n`` (T) rows.

    With ``period`` (windows per day), each window is compared with the same time of day on
    the other days, so a daily cycle (traffic mix, hour-of-day features) is not a change.
    With ``overdispersion`` the binomial standard error is inflated by how much more the
    windows vary than binomial noise alone would make them (bursts, weekly patterns).
    ``before``/``after`` are the pooled raw proportions either side of the split.
    """
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs[:, None]
    ns = np.asarray(n, dtype=np.float64)
    t = len(ns)
    if t < 2 * min_size or ns.sum() <= 0:
        return None
    expected = _phase_expected(xs, ns, period, fit_until)
    resid = xs - expected if expected is not None else xs
    cx = np.cumsum(resid, axis=0)
    craw = np.cumsum(xs, axis=0)
    cn = np.cumsum(ns)
    total_x, total_n, total_raw = cx[-1], cn[-1], craw[-1]
    idx = np.arange(min_size, t - min_size + 1)  # split before window idx
    nb = cn[idx - 1]
    na = total_n - nb
    ok = (nb > 0) & (na > 0)
    if not ok.any():
        return None
    idx, nb, na = idx[ok], nb[ok], na[ok]
    pb = cx[idx - 1] / nb[:, None]
    pa = (total_x - cx[idx - 1]) / na[:, None]
    p = total_raw / total_n
    var = np.clip(p * (1 - p), 1e-12, None)
    phi = _dispersion(resid, ns, p) if overdispersion else np.ones_like(p)
    se = np.sqrt(var * phi * (1 / nb[:, None] + 1 / na[:, None]))
    z = np.abs(pa - pb) / se
    flat = int(np.argmax(z.max(axis=1)))
    dim = int(np.argmax(z[flat]))
    i = int(idx[flat])
    if overdispersion:
        # Does one step explain the windows? Left-over variation beyond binomial noise (a cycle the
        # log is too short to remove, a drift) means the split is one of many shapes: deflate it.
        side = np.where(np.arange(t) < i, pb[flat, dim], pa[flat, dim])
        ok = ns > 0
        rr = np.where(ok, resid[:, dim] / np.maximum(ns, 1), 0.0) - side
        vv = np.clip(var[dim], 1e-12, None) / np.maximum(ns, 1)
        phi_r = float(np.median((rr[ok] ** 2) / vv[ok])) / 0.455 if ok.sum() >= 4 else 1.0
        z = z / np.sqrt(max(phi_r / max(float(phi[dim]), 1.0), 1.0))
    rb = craw[i - 1, dim] / cn[i - 1]
    ra = (total_raw[dim] - craw[i - 1, dim]) / (total_n - cn[i - 1])
    return Split(index=i, effect=float(pa[flat, dim] - pb[flat, dim]), z=float(z[flat, dim]), dim=dim,
                 before=float(rb), after=float(ra))


def nanmedian(a: npt.ArrayLike) -> FloatArray:
    """``np.nanmedian(a, axis=0)``, the same numbers, without its slow masked path (NaN where a column has none).

    A wide log runs this some ten thousand times on small arrays, where numpy's own takes a millisecond.
    """
    v = np.asarray(a, dtype=np.float64)
    s = np.sort(v, axis=0)  # NaNs sort last
    k = np.sum(~np.isnan(v), axis=0)
    lo, hi = np.maximum((k - 1) // 2, 0), np.maximum(k // 2, 0)
    if v.ndim == 1:
        out = np.asarray(0.5 * (s[lo] + s[hi]) if k else np.nan, dtype=np.float64)
        return out
    cols = np.arange(v.shape[1])
    return np.where(k > 0, 0.5 * (s[lo, cols] + s[hi, cols]), np.nan)


def _dispersion(xs: FloatArray, ns: FloatArray, p: FloatArray) -> FloatArray:
    """Per-column ratio of the windows' variance to binomial variance (at least 1), robust to one step."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(ns[:, None] > 0, xs / ns[:, None], np.nan)
    d = np.diff(rate, axis=0)  # differences cancel a step, keep the noise
    if d.shape[0] < 3:
        return np.ones_like(p)
    mad = nanmedian(np.abs(d - nanmedian(d))) * 1.4826 / np.sqrt(2)
    sd = np.nanstd(d, axis=0) / np.sqrt(2)
    # MAD misses rare large jumps (bursts); the plain spread, damped, catches them.
    spread = np.maximum(mad, 0.5 * sd)
    binom = np.sqrt(np.clip(p * (1 - p), 1e-12, None) / max(float(np.median(ns)), 1.0))
    ratio = (spread / binom) ** 2
    return np.clip(np.nan_to_num(ratio, nan=1.0), 1.0, 1e6)


def split_effects(x: npt.ArrayLike, n: npt.ArrayLike, index: int, period: int | None = None) -> FloatArray:
    """Per-column change in proportion at ``index`` (after minus before), the daily cycle removed."""
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs[:, None]
    ns = np.asarray(n, dtype=np.float64)
    expected = _phase_expected(xs, ns, period)
    resid = xs - expected if expected is not None else xs
    nb, na = ns[:index].sum(), ns[index:].sum()
    if nb <= 0 or na <= 0:
        return np.zeros(xs.shape[1])
    return np.asarray(resid[index:].sum(axis=0) / na - resid[:index].sum(axis=0) / nb, dtype=np.float64)


def seasonal_rate(x: npt.ArrayLike, n: npt.ArrayLike, period: int | None = None) -> FloatArray:
    """Per-window proportion with the daily cycle removed (NaN where a window has no rows)."""
    xs = np.asarray(x, dtype=np.float64)
    ns = np.asarray(n, dtype=np.float64)
    exp = _phase_expected(xs[:, None], ns, period)
    base = xs - exp[:, 0] + ns * (xs.sum() / max(ns.sum(), 1.0)) if exp is not None else xs
    return np.where(ns > 0, base / np.maximum(ns, 1), np.nan)


def deseason(v: npt.ArrayLike, period: int | None, fit_until: int | None = None) -> FloatArray:
    """Subtract each time-of-day's median from a per-window level (unchanged without a usable cycle).

    ``fit_until`` takes the medians from the windows before it only.
    """
    raw = np.asarray(v, dtype=np.float64)
    vs = raw.copy()
    t = len(vs)
    if period is None or period < 2 or t < 2 * period:
        return vs
    phase = np.arange(t) % period
    upto = np.arange(t) < (t if fit_until is None else fit_until)
    for ph in range(period):
        sel = (phase == ph) & np.isfinite(raw)
        fit = sel & upto
        if fit.any():
            vs[sel] -= np.median(raw[fit])
        elif sel.any():
            vs[sel] -= np.median(raw[sel])
    return vs + np.nanmedian(raw[upto] if upto.any() else raw)


def level_split(v: npt.ArrayLike, *, min_size: int = 2, period: int | None = None) -> Split | None:
    """Best split of a per-window level (NaN windows ignored) against its within-segment noise.

    ``before``/``after`` are the means of the raw level either side; the location and ``z``
    come from the level with its time-of-day cycle removed (with ``period``).
    """
    raw = np.asarray(v, dtype=np.float64)
    first = _level_split(raw, deseason(raw, period), min_size)
    if first is None or period is None or first.index < period:
        return first
    second = _level_split(raw, deseason(raw, period, first.index), min_size)
    return second if second is not None and second.z >= first.z else first


def _level_split(raw: FloatArray, vs: FloatArray, min_size: int) -> Split | None:
    keep = np.isfinite(vs)
    pos = np.flatnonzero(keep)
    vals = vs[keep]
    t = len(vals)
    if t < 2 * min_size:
        return None
    c = np.cumsum(vals)
    c2 = np.cumsum(vals * vals)
    idx = np.arange(min_size, t - min_size + 1)
    nb = idx.astype(np.float64)
    na = t - nb
    mb = c[idx - 1] / nb
    ma = (c[-1] - c[idx - 1]) / na
    rss = (c2[idx - 1] - nb * mb**2) + (c2[-1] - c2[idx - 1] - na * ma**2)
    best = int(np.argmin(rss))
    i = int(idx[best])
    resid = np.concatenate([vals[:i] - mb[best], vals[i:] - ma[best]])
    # Robust noise: MAD of successive differences (a cycle counts as noise, one step does not).
    d = np.diff(vals)
    sigma = max(float(np.median(np.abs(d - np.median(d)))) * 1.4826 / np.sqrt(2),
                float(np.std(resid)) * 0.25, 1e-12)
    z = abs(ma[best] - mb[best]) / (sigma * np.sqrt(1 / nb[best] + 1 / na[best]))
    rv = raw[keep]
    return Split(index=int(pos[i]), effect=float(ma[best] - mb[best]), z=float(z), dim=0,
                 before=float(np.mean(rv[:i])), after=float(np.mean(rv[i:])))


def transition_width(v: npt.ArrayLike, split: int, *, smooth: int = 5) -> float:
    """How many windows the change takes to go from 20 % to 80 % of its size, around ``split``.

    A sudden change takes about the smoothing width; a ramp over days takes most of its length.
    The series is smoothed with a running median so noise does not look like a slow change.
    """
    vs = np.asarray(v, dtype=np.float64)
    t = len(vs)
    if t < 8 or not 0 < split < t:
        return 0.0
    idx = np.arange(t)
    good = np.isfinite(vs)
    if good.sum() < 8:
        return 0.0
    filled = np.interp(idx, idx[good], vs[good])
    half = smooth // 2
    padded = np.pad(filled, half, mode="edge")
    sm = np.median(np.lib.stride_tricks.sliding_window_view(padded, smooth), axis=1)
    lo = np.median(filled[: max(split // 2, 1)])
    hi = np.median(filled[split + (t - split) // 2:]) if split + (t - split) // 2 < t else np.median(filled[split:])
    if hi == lo:
        return 0.0
    prog = (sm - lo) / (hi - lo)
    before = np.flatnonzero(prog[:split] < 0.2)
    after = np.flatnonzero(prog[split:] > 0.8)
    start = int(before[-1]) + 1 if len(before) else 0
    end = split + int(after[0]) if len(after) else t
    return float(max(end - start, 0))


def ramp_bounds(v: npt.ArrayLike, split: int, *, max_grid: int = 120) -> tuple[int, int] | None:
    """Where a gradual change starts and ends: the two knots of a broken-stick fit through ``split``.

    The series is modelled as flat, then a straight ramp from window ``start`` to ``end``, then flat
    again (least squares over every pair of knots with ``start <= split <= end``, on a grid of at most
    ``max_grid`` positions). A binary split lands mid-ramp; the event that caused a slow change
    precedes the ramp's start, which is what this finds.
    """
    vs = np.asarray(v, dtype=np.float64)
    t = len(vs)
    idx = np.arange(t, dtype=np.float64)
    good = np.isfinite(vs)
    if t < 8 or good.sum() < 8 or not 0 < split < t:
        return None
    y = np.where(good, vs - vs[good].mean(), 0.0)
    step = max(1, t // max_grid)
    starts = np.arange(0, split + 1, step)
    ends = np.arange(split, t, step)
    grid_a, grid_b = np.meshgrid(starts, ends, indexing="ij")
    a, b = grid_a.ravel().astype(np.float64), grid_b.ravel().astype(np.float64)
    # The ramp g(x) = clip((x - a) / (b - a), 0, 1) of every pair of knots from prefix sums over the
    # windows (O(pairs), not O(pairs x windows)): g is 0 before a, (x - a) / d on [a, b] and 1 after b.
    w = good.astype(np.float64)

    def prefix(v: FloatArray) -> FloatArray:
        return np.concatenate([[0.0], np.cumsum(v)])

    pc, px, pxx, py, pxy = prefix(w), prefix(w * idx), prefix(w * idx * idx), prefix(y), prefix(y * idx)
    lo, hi = grid_a.ravel(), grid_b.ravel() + 1  # the ramp's windows are lo <= x < hi
    d = np.maximum(b - a, 1.0)

    def on(p: FloatArray) -> FloatArray:
        return p[hi] - p[lo]

    c, s1, s2 = on(pc), on(px), on(pxx)
    c_after, y_after = pc[t] - pc[hi], py[t] - py[hi]
    sum_g = (s1 - a * c) / d + c_after
    sum_gg = (s2 - 2 * a * s1 + a * a * c) / (d * d) + c_after
    sgy = (on(pxy) - a * on(py)) / d + y_after
    sgg = sum_gg - sum_g * sum_g / pc[t]
    gain = np.where(sgg > 1e-12, sgy * sgy / np.maximum(sgg, 1e-12), -np.inf)  # variance the ramp explains
    best = float(np.max(gain))
    if not np.isfinite(best):
        return int(a[0]), int(b[0])
    # Knot pairs whose ramps are the same line on the windows (a trend through the whole log, NaN at its
    # edges) fit equally well: the ramps are then fitted as one matrix, whose rounding has always picked one.
    near = np.flatnonzero(gain >= best - 1e-6 * abs(best))
    k = int(near[0]) if len(near) == 1 else int(_ramp_gains(vs, good, a, b).argmax())
    return int(a[k]), int(b[k])


def _ramp_gains(vs: FloatArray, good: npt.NDArray[np.bool_], a: FloatArray, b: FloatArray) -> FloatArray:
    """The variance each ramp of knots ``a``, ``b`` explains, from the ramps as a matrix (pairs x windows)."""
    y = vs[good] - vs[good].mean()
    x = np.arange(len(vs), dtype=np.float64)[good]
    g = np.clip((x[None, :] - a[:, None]) / np.maximum(b - a, 1.0)[:, None], 0.0, 1.0)
    g -= g.mean(axis=1, keepdims=True)
    sgg = (g * g).sum(axis=1)
    sgy = g @ y
    out: FloatArray = np.where(sgg > 0, sgy * sgy / np.maximum(sgg, 1e-12), -np.inf)
    return out


def row_split(indicator: npt.ArrayLike, *, min_size: int = 20) -> Split | None:
    """Best split of a per-row 0/1 (or real) sequence in time order: the exact row a change starts."""
    x = np.asarray(indicator, dtype=np.float64)
    n = len(x)
    if n < 2 * min_size:
        return None
    c = np.cumsum(x)
    idx = np.arange(min_size, n - min_size + 1)
    nb = idx.astype(np.float64)
    na = n - nb
    mb = c[idx - 1] / nb
    ma = (c[-1] - c[idx - 1]) / na
    # Maximise the between-segment sum of squares (the CUSUM statistic).
    gain = nb * na / n * (ma - mb) ** 2
    best = int(np.argmax(gain))
    sd = max(float(np.std(x)), 1e-12)
    z = abs(ma[best] - mb[best]) / (sd * np.sqrt(1 / nb[best] + 1 / na[best]))
    return Split(index=int(idx[best]), effect=float(ma[best] - mb[best]), z=float(z), dim=0,
                 before=float(mb[best]), after=float(ma[best]))
