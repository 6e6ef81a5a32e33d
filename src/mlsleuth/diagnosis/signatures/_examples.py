"""Hand-built scopes for the signatures' examples: a few changed metrics and columns, no log to scan.

Each signature declares, through :meth:`~mlsleuth.diagnosis.signatures._base.Signature.examples`, scopes
where it fires and scopes where it does not; tests/test_signatures.py runs them all. A scope here is a
:class:`~mlsleuth.diagnosis._analysis.Triage` of ``WINDOWS`` hourly windows of ``ROWS`` requests each,
with no engine (so no query runs) and only the changes it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.diagnosis._analysis import ColumnChange, MetricChange, Triage
from mlsleuth.diagnosis._data import CaseInput
from mlsleuth.diagnosis._signals import Split
from mlsleuth.schema import Role, infer_schema

__all__ = ["WINDOWS", "Example", "column", "metric", "scope"]

WINDOWS = 96
ROWS = 500.0
_T0 = datetime(2026, 3, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Example:
    """A hand-built scope and whether the signature that declares it should fire on it."""

    name: str
    fires: bool
    triage: Triage


def metric(name: str, layer: str, *, before: float, after: float, at: int = 48, z: float = 30.0,
           gradual: bool = False, unit: str = "rate") -> MetricChange:
    """A metric that changed materially at window ``at``."""
    return MetricChange(name, Split(at, after - before, z, 0, before, after), True, gradual, layer, unit)


def column(name: str, *, role: Role = Role.FEATURE, at: int | None = 48, shift: float = 0.3, z: float = 30.0,
           gradual: bool = False, **detail: Any) -> ColumnChange:
    """A numeric column that changed at window ``at`` by a KS distance ``shift`` (unchanged when ``at`` is None)."""
    split = None if at is None else Split(at, shift, z, 0, 0.0, shift)
    half = ROWS * WINDOWS / 2
    return ColumnChange(name, role, True, split, at, shift if at is not None else 0.0, z if at is not None else 0.0,
                        gradual, rows_before=half, rows_after=half, **detail)


def scope(*, metrics: Sequence[MetricChange] = (), columns: Sequence[ColumnChange] = (),
          versions: Sequence[str] = ("v1",), switch_at: int | None = None) -> Triage:
    """A scope holding only these changes; with ``switch_at``, traffic moves from the first version to the last."""
    log = pa.table({"ts": pa.array([_T0], pa.timestamp("us", tz="UTC")), "score": [0.5], "prediction": [0],
                    **{c.column: [0.0] for c in columns}})
    shares = np.zeros((WINDOWS, len(versions)))
    shares[:, 0] = ROWS
    ms = {m.metric: m for m in metrics}
    if switch_at is not None:
        shares[switch_at:, 0], shares[switch_at:, -1] = 0.0, ROWS
        ms["version_mix"] = metric("version_mix", "model", before=0.0, after=1.0, at=switch_at)
    return Triage(case=CaseInput(log=log, schema=infer_schema(log)), window=3600,
                  starts=[_T0 + timedelta(hours=i) for i in range(WINDOWS)], rows=np.full(WINDOWS, ROWS),
                  columns={c.column: c for c in columns}, metrics=ms, series={}, refs={}, positive=1,
                  versions=list(versions), version_shares=shares)
