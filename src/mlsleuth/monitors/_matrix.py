"""Per-window drift and null rates of every column against the stored reference (dashboards, alerts, metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from mlsleuth.monitors._profiles import window_profiles
from mlsleuth.monitors._reference import StoredReference
from mlsleuth.monitors._source import TimeRange
from mlsleuth.profiles import aligned_counts
from mlsleuth.schema import Role, role_of
from mlsleuth.stats import js_distance
from mlsleuth.store import LocalStore

__all__ = ["DriftMatrix", "drift_matrix"]


@dataclass(frozen=True)
class DriftMatrix:
    """Per-window drift (Jensen-Shannon distance to the reference) and null rates of each column.

    Attributes
    ----------
    starts
        Window starts (UTC).
    columns
        ``feature.*`` then ``input.*`` columns, reference order.
    drift
        ``len(columns) x len(starts)``; ``nan`` where a window has no values of a column.
    null_rate
        Same shape: share of the window's requests with the column null.
    rows
        Requests per window.
    """

    starts: tuple[datetime, ...]
    columns: tuple[str, ...]
    drift: np.ndarray
    null_rate: np.ndarray
    rows: np.ndarray


def drift_matrix(store: LocalStore, reference: StoredReference, model: str, *, window: timedelta,
                 since: datetime | None = None, until: datetime | None = None) -> DriftMatrix:
    """Profile each window of the model's log on the reference's bins and measure drift per column.

    The profiling runs in the query engine (:func:`~mlsleuth.monitors.window_profiles`); the loop
    here is over windows and columns, never rows.
    """
    ref = reference.profile
    cols = [c for c in ref.columns if role_of(c) is Role.FEATURE] + \
           [c for c in ref.columns if role_of(c) is Role.INPUT]
    have = set(store.sql("SELECT * FROM log LIMIT 0").column_names)
    cols = [c for c in cols if c in have]
    wp = window_profiles(store, ref, window_seconds=int(window.total_seconds()),
                         time_range=TimeRange(model, since, until), columns=cols)
    series = wp.series()
    starts = tuple(w.start for w in series)
    drift = np.full((len(cols), len(series)), np.nan)
    nulls = np.full((len(cols), len(series)), np.nan)
    for j, w in enumerate(series):
        for i, c in enumerate(cols):
            cur = w.columns.get(c)
            if cur is None or w.rows == 0:
                continue
            nulls[i, j] = getattr(cur, "nulls", 0) / w.rows
            r, q = aligned_counts(ref.columns[c], cur)
            if r.sum() > 0 and q.sum() > 0:
                drift[i, j] = js_distance(r, q)
    return DriftMatrix(starts, tuple(cols), drift, nulls, np.array([w.rows for w in series], dtype=np.int64))
