"""Inline SVG charts of a diagnosis's chart data: no JavaScript, no network, every text escaped.

Three shapes, drawn from :class:`~mlsleuth.diagnosis._result.IncidentCharts` as the diagnosis computed
it (nothing is computed here beyond placing numbers on axes): per-window series stacked on one time axis
with the onset and change events marked, a culprit's histogram before and after the onset against the
reference, and a metric per segment value before and after. Hovering a marker, bin or bar shows its
numbers (an SVG ``<title>``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from mlsleuth.diagnosis._result import Distribution, MarkerKind, SegmentChart, Series, Timeline, iso

__all__ = ["distribution_svg", "segments_svg", "timeline_svg"]

WIDTH = 880
_LEFT, _RIGHT = 72, 24
_BEFORE, _AFTER, _REFERENCE = "#7f7f7f", "#d62728", "#1f77b4"
_ONSET, _EVENT, _CULPRIT, _VISIBLE = "#d62728", "#b0b0b0", "#ff7f0e", "#9467bd"
_FONT = "font-family='system-ui,sans-serif' font-size='11'"


def esc(text: object) -> str:
    """Text and attribute values escaped for HTML and SVG."""
    return html.escape(str(text), quote=True)


def fmt_value(x: float, unit: str) -> str:
    """A value as the report prints it: rates in percent, the rest with a few significant digits."""
    if not math.isfinite(x):
        return "n/a"
    if unit == "rate":
        return f"{x * 100:.1f} %" if abs(x) >= 0.001 or x == 0 else f"{x * 100:.3f} %"
    a = abs(x)
    text = f"{x:,.0f}" if a >= 1000 else f"{x:.1f}" if a >= 10 else f"{x:.3g}"
    return f"{text} {unit}" if unit else text


def axis_title(s: Series | SegmentChart, statistic: str = "") -> str:
    """``name: statistic (unit)`` with rates in percent."""
    name = s.name if isinstance(s, Series) else s.metric
    unit = "%" if s.unit == "rate" else s.unit
    stat = statistic or (s.statistic if isinstance(s, Series) and s.statistic not in ("rate", "value") else "")
    return f"{name}{' ' + stat if stat else ''}{f' ({unit})' if unit else ''}"


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_label(v: float, unit: str) -> str:
    if unit == "rate":
        return f"{v * 100:.3g}"
    a = abs(v)
    return f"{v:,.0f}" if a >= 1000 else f"{v:.3g}"


def _time_ticks(t0: datetime, t1: datetime) -> tuple[list[datetime], str]:
    """Midnight ticks (UTC) for spans over two days, else every few hours."""
    span = (t1 - t0).total_seconds()
    if span >= 2 * 86400:
        step, form = timedelta(days=max(1, round(span / 86400 / 8))), "%a %m-%d"
    else:
        hours = next(h for h in (1, 2, 3, 6, 12, 24) if span / (h * 3600) <= 8)
        step, form = timedelta(hours=hours), "%a %H:%M"
    first = t0.replace(minute=0, second=0, microsecond=0)
    if step >= timedelta(days=1):
        first = first.replace(hour=0)
    ticks = []
    t = first
    while t <= t1:
        if t >= t0:
            ticks.append(t)
        t += step
    return ticks, form


def timeline_svg(tl: Timeline, *, panel_height: int = 130) -> str:
    """Each series in its own panel over one UTC time axis; onset, change events and "visible" marked."""
    if not tl.starts or not tl.series:
        return ""
    t0 = tl.starts[0]
    t1 = tl.starts[-1] + timedelta(seconds=tl.window_seconds)
    plot_w = WIDTH - _LEFT - _RIGHT
    top_pad, gap, bottom = 48, 34, 40
    height = top_pad + len(tl.series) * panel_height + (len(tl.series) - 1) * gap + bottom
    span = (t1 - t0).total_seconds()

    def x_of(t: datetime) -> float:
        return _LEFT + plot_w * (t - t0).total_seconds() / span

    half = timedelta(seconds=tl.window_seconds / 2)
    ticks, form = _time_ticks(t0, t1)
    out = [f"<svg class='chart timeline' xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
           f"viewBox='0 0 {WIDTH} {height}' role='img' {_FONT}>",
           f"<title>{esc(', '.join(s.name for s in tl.series))} per {tl.window_seconds // 60}-minute window "
           f"(UTC){_scope_text(tl.scope)}</title>"]
    for k, s in enumerate(tl.series):
        y0 = top_pad + k * (panel_height + gap)
        vals = [v for v in s.values if math.isfinite(v)]
        levels = [v for v in (s.before, s.after) if math.isfinite(v)]
        lo, hi = (min(vals + levels), max(vals + levels)) if vals else (0.0, 1.0)
        if s.unit == "rate":
            lo = 0.0
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
        lo_ax, hi_ax = (lo if s.unit == "rate" else lo - pad), hi + pad

        def y_of(v: float, y0: int = y0, lo_ax: float = lo_ax, hi_ax: float = hi_ax) -> float:
            return y0 + panel_height - panel_height * (v - lo_ax) / (hi_ax - lo_ax)

        out.append(f"<g class='panel' data-series='{esc(s.name)}'>")
        out.append(f"<rect x='{_LEFT}' y='{y0}' width='{plot_w}' height='{panel_height}' fill='#fafafa' "
                   "stroke='#ddd'/>")
        out += [f"<line x1='{x_of(t):.1f}' x2='{x_of(t):.1f}' y1='{y0}' y2='{y0 + panel_height}' stroke='#eee'/>"
                for t in ticks]
        out.append(f"<text x='{_LEFT}' y='{y0 - 6}' font-weight='bold'>{esc(axis_title(s))}"
                   f"{esc(_scope_text(tl.scope))}</text>")
        for tv in _nice_ticks(lo_ax, hi_ax):
            y = y_of(tv)
            out.append(f"<line x1='{_LEFT}' x2='{_LEFT + plot_w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>"
                       f"<text x='{_LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{esc(_tick_label(tv, s.unit))}"
                       "</text>")
        # Levels before and after the onset (dashed), then the series, broken at windows without data.
        onset = next((m.ts for m in tl.markers if m.kind is MarkerKind.ONSET), None)
        if onset is not None and math.isfinite(s.before) and math.isfinite(s.after):
            xo = x_of(onset)
            out.append(f"<g class='levels'><title>{esc(s.name)}: {esc(fmt_value(s.before, s.unit))} before the "
                       f"onset, {esc(fmt_value(s.after, s.unit))} after</title>"
                       f"<line x1='{_LEFT}' x2='{xo:.1f}' y1='{y_of(s.before):.1f}' y2='{y_of(s.before):.1f}' "
                       f"stroke='{_BEFORE}' stroke-dasharray='6 3'/>"
                       f"<line x1='{xo:.1f}' x2='{_LEFT + plot_w}' y1='{y_of(s.after):.1f}' y2='{y_of(s.after):.1f}' "
                       f"stroke='{_AFTER}' stroke-dasharray='6 3'/></g>")
        runs: list[list[str]] = [[]]
        for t, v in zip(tl.starts, s.values, strict=True):
            if math.isfinite(v):
                runs[-1].append(f"{x_of(t + half):.1f},{y_of(v):.1f}")
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if len(run) > 1:
                out.append(f"<polyline class='series' fill='none' stroke='#333' stroke-width='1.2' "
                           f"points='{' '.join(run)}'><title>{esc(s.name)}</title></polyline>")
            elif run:
                cx, cy = run[0].split(",")
                out.append(f"<circle cx='{cx}' cy='{cy}' r='1.5' fill='#333'/>")
        out.append("</g>")
    # Time axis under the last panel.
    y_axis = top_pad + len(tl.series) * panel_height + (len(tl.series) - 1) * gap
    for t in ticks:
        x = x_of(t)
        anchor = "end" if x > WIDTH - _RIGHT - 30 else "middle"  # the last label stays inside the picture
        out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{y_axis}' y2='{y_axis + 4}' stroke='#555'/>"
                   f"<text x='{x:.1f}' y='{y_axis + 14}' text-anchor='{anchor}'>{esc(t.strftime(form))}</text>")
    out.append(f"<text x='{_LEFT + plot_w / 2:.0f}' y='{y_axis + 32}' text-anchor='middle'>time (UTC), "
               f"{tl.window_seconds // 60}-minute windows</text>")
    # Markers across every panel: events (culprit events highlighted), the onset, when it became visible.
    for m in tl.markers:
        if not t0 <= m.ts <= t1:
            continue
        x = x_of(m.ts)
        tip = f"{m.label} at {iso(m.ts)}" + (f": {m.detail}" if m.detail else "")
        if m.kind is MarkerKind.ONSET:
            color, dash, width, cls = _ONSET, "", 2.0, "onset"
        elif m.kind is MarkerKind.VISIBLE:
            color, dash, width, cls = _VISIBLE, "2 3", 1.5, "visible"
        else:
            color, dash, width, cls = (_CULPRIT, "4 2", 2.0, "event culprit") if m.culprit else \
                (_EVENT, "2 3", 1.0, "event")
        out.append(f"<g class='marker {cls}' data-ts='{esc(iso(m.ts))}' data-label='{esc(m.label)}'>"
                   f"<title>{esc(tip)}</title>"
                   f"<line x1='{x:.1f}' x2='{x:.1f}' y1='24' y2='{y_axis}' stroke='{color}' "
                   f"stroke-width='{width}'{f' stroke-dasharray={chr(39)}{dash}{chr(39)}' if dash else ''}/>"
                   f"<polygon points='{x - 4:.1f},16 {x + 4:.1f},16 {x:.1f},24' "
                   f"fill='{color}'/>")
        if m.kind is MarkerKind.ONSET or m.culprit:
            anchor = "start" if m.kind is MarkerKind.ONSET else "end"
            dx = 5 if anchor == "start" else -5
            out.append(f"<text x='{x + dx:.1f}' y='12' text-anchor='{anchor}' fill='{color}' "
                       f"font-weight='bold'>{esc(m.label)} {esc(m.ts.strftime('%a %H:%M'))}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _scope_text(scope: Mapping[str, str]) -> str:
    items = scope.items()
    return f" in {', '.join(f'{k}={v}' for k, v in items)}" if items else ""


def _x_ticks_numeric(edges: Sequence[float], log_scale: bool) -> list[float]:
    lo, hi = edges[0], edges[-1]
    if not log_scale:
        return _nice_ticks(lo, hi, 6)
    ticks = []
    for p in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** p
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def distribution_svg(d: Distribution, *, height: int = 240) -> str:
    """Shares per bin: the reference (filled), before the onset and after it (lines)."""
    k = len(d.bins)
    if k == 0 or not (d.after or d.before or d.reference):
        return ""
    plot_w = WIDTH - _LEFT - _RIGHT
    top, bottom = 44, 44
    plot_h = height - top - bottom
    layers = [(d.reference, _REFERENCE, "training reference", d.n_reference, d.null_reference),
              (d.before, _BEFORE, "before the onset" if d.split else "", d.n_before, d.null_before),
              (d.after, _AFTER, "after the onset" if d.split else "serving (whole log)", d.n_after, d.null_after)]
    layers = [(v, c, name, n, nul) for v, c, name, n, nul in layers if v]
    ymax = max(max(v) for v, *_ in layers) * 1.1 or 1.0

    def y_of(v: float) -> float:
        return top + plot_h - plot_h * v / ymax

    bw = plot_w / k
    numeric = bool(d.edges)
    out = [f"<svg class='chart distribution' data-column='{esc(d.column)}' xmlns='http://www.w3.org/2000/svg' "
           f"width='{WIDTH}' height='{height}' viewBox='0 0 {WIDTH} {height}' role='img' {_FONT}>",
           f"<title>distribution of {esc(d.column)}{esc(_scope_text(d.scope))}</title>",
           f"<rect x='{_LEFT}' y='{top}' width='{plot_w}' height='{plot_h}' fill='#fafafa' stroke='#ddd'/>"]
    for tv in _nice_ticks(0.0, ymax):
        y = y_of(tv)
        out.append(f"<line x1='{_LEFT}' x2='{_LEFT + plot_w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>"
                   f"<text x='{_LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{tv * 100:.3g}</text>")
    out.append(f"<text x='14' y='{top + plot_h / 2:.0f}' transform='rotate(-90 14 {top + plot_h / 2:.0f})' "
               "text-anchor='middle'>share of requests (%)</text>")
    # Legend with sample sizes and null rates.
    lx = float(_LEFT)
    for _v, color, name, n, nul in layers:
        null = f", {nul * 100:.1f} % null" if math.isfinite(nul) and nul > 0 else ""
        text = f"{name} (n={n:,}{null})"
        out.append(f"<rect x='{lx}' y='8' width='12' height='10' fill='{color}' opacity='0.8'/>"
                   f"<text x='{lx + 16}' y='17'>{esc(text)}</text>")
        lx += 24 + 6.2 * len(text)
    if numeric:
        # Reference as filled bars, before/after as step lines.
        for i, (v, color, name, _n, _nul) in enumerate(layers):
            if name == "training reference":
                for j, share in enumerate(v):
                    out.append(f"<rect x='{_LEFT + j * bw + 1:.1f}' y='{y_of(share):.1f}' width='{bw - 2:.1f}' "
                               f"height='{top + plot_h - y_of(share):.1f}' fill='{color}' opacity='0.25'/>")
                continue
            pts = []
            for j, share in enumerate(v):
                pts += [f"{_LEFT + j * bw:.1f},{y_of(share):.1f}", f"{_LEFT + (j + 1) * bw:.1f},{y_of(share):.1f}"]
            out.append(f"<polyline class='{'after' if i == len(layers) - 1 else 'before'}' fill='none' "
                       f"stroke='{color}' stroke-width='2' points='{' '.join(pts)}'><title>{esc(name)}</title>"
                       "</polyline>")
        lo, hi = d.edges[0], d.edges[-1]
        for tv in _x_ticks_numeric(d.edges, d.log_scale):
            frac = (math.log(tv / lo) / math.log(hi / lo)) if d.log_scale else (tv - lo) / (hi - lo)
            x = _LEFT + plot_w * frac
            out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top + plot_h}' y2='{top + plot_h + 4}' stroke='#555'/>"
                       f"<text x='{x:.1f}' y='{top + plot_h + 16}' text-anchor='middle'>{esc(_tick_label(tv, ''))}"
                       "</text>")
        scale = ", log scale" if d.log_scale else ""
        out.append(f"<text x='{_LEFT + plot_w / 2:.0f}' y='{height - 8}' text-anchor='middle'>{esc(d.column)} "
                   f"(the column's own unit{scale}; values beyond the ends are counted in the end bins)</text>")
    else:
        inner = bw / (len(layers) + 1)
        for i, (v, color, _name, _n, _nul) in enumerate(layers):
            for j, share in enumerate(v):
                out.append(f"<rect x='{_LEFT + j * bw + (i + 0.5) * inner:.1f}' y='{y_of(share):.1f}' "
                           f"width='{inner:.1f}' height='{top + plot_h - y_of(share):.1f}' fill='{color}' "
                           "opacity='0.8'/>")
        for j, b in enumerate(d.bins):
            out.append(f"<text x='{_LEFT + (j + 0.5) * bw:.1f}' y='{top + plot_h + 16}' text-anchor='middle'>"
                       f"{esc(b)}</text>")
        out.append(f"<text x='{_LEFT + plot_w / 2:.0f}' y='{height - 8}' text-anchor='middle'>{esc(d.column)} "
                   "(category)</text>")
    # Hover targets: one per bin with every layer's share.
    for j, b in enumerate(d.bins):
        tip = f"{d.column} {b}: " + "; ".join(f"{name} {v[j] * 100:.2f} %" for v, _c, name, _n, _nul in layers)
        out.append(f"<rect class='bin' x='{_LEFT + j * bw:.1f}' y='{top}' width='{bw:.1f}' height='{plot_h}' "
                   f"fill='transparent'><title>{esc(tip)}</title></rect>")
    out.append("</svg>")
    return "\n".join(out)


def segments_svg(sc: SegmentChart) -> str:
    """Horizontal bars per segment value: the metric before (grey) and after (red) the onset."""
    if not sc.bars:
        return ""
    row_h, top, bottom, label_w = 34, 30, 36, 190
    height = top + row_h * len(sc.bars) + bottom
    x0 = _LEFT + label_w - 60
    plot_w = WIDTH - x0 - _RIGHT - 70
    vmax = max([v for b in sc.bars for v in (b.before, b.after) if math.isfinite(v)] or [1.0]) * 1.05 or 1.0

    def w_of(v: float) -> float:
        return plot_w * max(v, 0.0) / vmax if math.isfinite(v) else 0.0

    out = [f"<svg class='chart segments' data-column='{esc(sc.column)}' xmlns='http://www.w3.org/2000/svg' "
           f"width='{WIDTH}' height='{height}' viewBox='0 0 {WIDTH} {height}' role='img' {_FONT}>",
           f"<title>{esc(sc.metric)} by {esc(sc.column)}</title>",
           f"<rect x='{x0}' y='8' width='12' height='10' fill='{_BEFORE}'/><text x='{x0 + 16}' y='17'>before the "
           f"onset</text><rect x='{x0 + 120}' y='8' width='12' height='10' fill='{_AFTER}'/>"
           f"<text x='{x0 + 136}' y='17'>after the onset</text>"
           f"<text x='{x0 + 250}' y='17' fill='#555'>(bold: the affected segment)</text>"]
    for i, b in enumerate(sc.bars):
        y = top + i * row_h
        weight = " font-weight='bold'" if b.affected else ""
        tip = (f"{sc.column}={b.value}: {sc.metric} {fmt_value(b.before, sc.unit)} before "
               f"(n={b.n_before:,}), {fmt_value(b.after, sc.unit)} after (n={b.n_after:,}); "
               f"{b.share * 100:.1f} % of traffic after the onset")
        out.append(f"<g class='bar{' affected' if b.affected else ''}' data-value='{esc(b.value)}'>"
                   f"<title>{esc(tip)}</title>"
                   f"<text x='{x0 - 8}' y='{y + 13}' text-anchor='end'{weight}>{esc(b.value)}</text>"
                   f"<text x='{x0 - 8}' y='{y + 26}' text-anchor='end' fill='#777'>{b.share * 100:.1f} % of traffic"
                   "</text>"
                   f"<rect x='{x0}' y='{y + 3}' width='{w_of(b.before):.1f}' height='12' fill='{_BEFORE}'/>"
                   f"<rect x='{x0}' y='{y + 16}' width='{w_of(b.after):.1f}' height='12' fill='{_AFTER}'/>"
                   f"<text x='{x0 + w_of(b.before) + 4:.1f}' y='{y + 13}'>{esc(fmt_value(b.before, sc.unit))}</text>"
                   f"<text x='{x0 + w_of(b.after) + 4:.1f}' y='{y + 26}'>{esc(fmt_value(b.after, sc.unit))}</text>"
                   "</g>")
    ya = top + row_h * len(sc.bars)
    for tv in _nice_ticks(0.0, vmax, 5):
        x = x0 + w_of(tv)
        out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{ya}' stroke='#eee'/>"
                   f"<text x='{x:.1f}' y='{ya + 14}' text-anchor='middle'>{esc(_tick_label(tv, sc.unit))}</text>")
    out.append(f"<text x='{x0 + plot_w / 2:.0f}' y='{ya + 30}' text-anchor='middle'>"
               f"{esc(axis_title(sc))} per {esc(sc.column)} value</text>")
    out.append("</svg>")
    return "\n".join(out)
