"""Dashboard charts drawn by Plotly (figures built here, drawn by plotly.js in the page; no chart code of our own)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from mlsleuth.diagnosis import Timeline
from mlsleuth.schema import ChangeEvent
from mlsleuth.server._views import DriftMatrix

__all__ = ["drift_heatmap", "nan_to_none", "plotly_js", "series_chart", "timeline_chart", "to_div"]

_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "height": 320, "template": "plotly_white"}


def nan_to_none(values: np.ndarray) -> list[float | None]:
    """A 1-d array as a list with ``nan`` as ``None`` (a gap in a chart), rounded to 4 decimals."""
    return [None if not np.isfinite(x) else round(float(x), 4) for x in np.asarray(values, dtype=float)]


def _go() -> object:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - the server extra installs it
        raise ImportError("the dashboard needs plotly: pip install 'mlsleuth[server]'") from exc
    return go


@functools.cache
def plotly_js() -> str:
    """plotly.js as bundled with the plotly package (served by the dashboard; no CDN)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _mark_events(fig: object, events: Sequence[ChangeEvent], lo: datetime | None, hi: datetime | None) -> None:
    """Vertical lines at change events, labelled by kind and id (hover for the description)."""
    go = _go()
    shown = [e for e in events if (lo is None or e.ts >= lo) and (hi is None or e.ts <= hi)]
    for e in shown:
        fig.add_shape(type="line", x0=e.ts, x1=e.ts, yref="paper", y0=0, y1=1,  # type: ignore[attr-defined]
                      line={"color": "#d62728", "width": 1, "dash": "dot"})
    if shown:
        fig.add_trace(go.Scatter(  # type: ignore[attr-defined]
            x=[e.ts for e in shown], y=[1.0] * len(shown), yaxis="y2", mode="markers", name="change events",
            marker={"symbol": "triangle-down", "color": "#d62728", "size": 9},
            text=[f"{e.kind} {e.id}: {e.target} {e.description}" for e in shown], hoverinfo="text+x"))
        fig.update_layout(yaxis2={"overlaying": "y", "range": [0, 1.05], "visible": False})  # type: ignore[attr-defined]


def to_div(fig: object, div_id: str) -> str:
    """The figure as an HTML ``<div>`` plus the script that draws it (plotly.js loaded by the page)."""
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,  # type: ignore[attr-defined]
                           config={"displaylogo": False, "responsive": True}))


def drift_heatmap(m: DriftMatrix, events: Sequence[ChangeEvent], title: str) -> object:
    """Columns x windows heat map of drift against the reference, change events marked."""
    go = _go()
    fig = go.Figure(go.Heatmap(  # type: ignore[attr-defined]
        z=[nan_to_none(row) for row in m.drift], x=list(m.starts), y=list(m.columns),
        colorscale="Reds", zmin=0.0, zmax=max(0.3, float(np.nanmax(m.drift)) if np.isfinite(m.drift).any() else 0.3),
        colorbar={"title": "JS distance"}, hovertemplate="%{y}<br>%{x}<br>drift %{z}<extra></extra>"))
    fig.update_layout(title=title, **{**_LAYOUT, "height": max(320, 24 * len(m.columns) + 120)})
    _mark_events(fig, events, m.starts[0] if m.starts else None, m.starts[-1] if m.starts else None)
    return fig


def series_chart(table: pa.Table, x: str, ys: Sequence[tuple[str, str]], events: Sequence[ChangeEvent], title: str,
                 *, kind: str = "line", yaxis_title: str = "") -> object:
    """Lines (or bars) of ``(column, label)`` pairs of ``table`` against the time column ``x``."""
    go = _go()
    fig = go.Figure()  # type: ignore[attr-defined]
    xs = table.column(x).to_pylist() if table.num_rows else []
    for col, label in ys:
        if col not in table.column_names:
            continue
        vals = table.column(col).to_pylist()
        trace = go.Bar if kind == "bar" else go.Scatter  # type: ignore[attr-defined]
        fig.add_trace(trace(x=xs, y=vals, name=label))
    fig.update_layout(title=title, yaxis_title=yaxis_title, **_LAYOUT)
    _mark_events(fig, events, xs[0] if xs else None, xs[-1] if xs else None)
    return fig


def timeline_chart(timeline: Timeline, events: Sequence[ChangeEvent], onset: datetime | None, title: str) -> object:
    """The diagnosis's affected metric per window, its levels before and after, the onset and change events."""
    go = _go()
    fig = go.Figure()  # type: ignore[attr-defined]
    xs = list(timeline.starts)
    for s in timeline.series[:1]:
        label = f"{s.name} ({s.statistic})" if s.statistic else s.name
        fig.add_trace(go.Scatter(x=xs, y=nan_to_none(np.asarray(s.values)), name=label))  # type: ignore[attr-defined]
    if onset is not None:
        fig.add_shape(type="line", x0=onset, x1=onset, yref="paper", y0=0, y1=1,
                      line={"color": "#111827", "width": 2})
        fig.add_annotation(x=onset, y=1, yref="paper", text="onset", showarrow=False,
                           yanchor="bottom")
    fig.update_layout(title=title, **_LAYOUT)
    _mark_events(fig, events, xs[0] if xs else None, xs[-1] if xs else None)
    return fig
