"""The facts of one traffic scope that every signature reads, gathered once."""

from __future__ import annotations

from dataclasses import replace

from mlsleuth.diagnosis._analysis import ColumnChange, Triage
from mlsleuth.diagnosis._metrics import QUALITY, SERVING, near, output_metrics
from mlsleuth.diagnosis.signatures._base import Context
from mlsleuth.diagnosis.signatures._columns import classify_columns, column_weight
from mlsleuth.schema import Role

__all__ = ["context"]


def _subtle(tr: Triage, changed: list[ColumnChange], ctx: Context) -> list[ColumnChange]:
    """A feature that moved little but far beyond noise exactly when the outputs did, when no changed column did.

    The outputs moved and no changed column did so with them: such a feature is what the model reacted to
    (a subtle recomputation). The scores' own change point marks that window too: a rate of decisions lags
    a few windows.
    """
    th = tr.th
    if not ctx.outputs or any(near(c.onset_index, m.split.index, ctx.tol) for c in changed for m in ctx.outputs):
        return []
    moved: list[int | None] = [m.split.index for m in ctx.outputs]
    if (sc := tr.columns.get("score")) is not None and sc.split is not None and sc.z >= th.subtle_z * sc.z_scale:
        moved.append(sc.onset_index)
    subtle = [c for c in tr.columns.values() if c.role is Role.FEATURE and not c.changed and c.split is not None
              and min(c.rows_before, c.rows_after) >= th.min_side_rows and c.z >= th.subtle_z * c.z_scale
              and c.shift >= th.subtle_shift and any(near(c.onset_index, i, 1) for i in moved)]
    return sorted(subtle, key=lambda c: -c.z)[:1]


def context(tr: Triage, *, in_slice: bool = False) -> Context:
    """What changed in one scope (all traffic, or a slice), with its column layer classified."""
    th = tr.th
    changed = [c for c in tr.columns.values() if c.changed and c.column != "score"]
    vm = tr.metrics.get("version_mix")
    ctx = Context(
        in_slice=in_slice, tol=th.windows(th.near_hours, tr.window, at_least=2), outputs=tuple(output_metrics(tr)),
        quality=tuple(tr.metrics[k] for k in QUALITY if k in tr.metrics and tr.metrics[k].material),
        serving=tuple(tr.metrics[k] for k in SERVING if k in tr.metrics and tr.metrics[k].material),
        features=(), inputs=(), version_changed=vm is not None and vm.material)
    subtle = _subtle(tr, changed, ctx)
    feats = [c for c in changed if c.role is Role.FEATURE] + subtle
    feats.sort(key=lambda c: -column_weight(tr, c))
    inps = sorted((c for c in changed if c.role is Role.INPUT), key=lambda c: -c.magnitude)
    ctx = replace(ctx, features=tuple(feats), inputs=tuple(inps), subtle=tuple(subtle))
    return replace(ctx, columns=classify_columns(tr, ctx))
