"""JSON, Markdown and HTML incident reports of a :class:`~mlsleuth.diagnosis.Diagnosis`; :func:`render` for all.

The Markdown and HTML reports have the same sections, in the same order (:data:`SECTIONS`): the summary,
the affected metric over time with the onset and change events marked, the culprit's distribution before
and after the onset against the reference, the affected segments, the ranked hypotheses (evidence, example
requests), the runbook, the layers, other findings, the analyses that were skipped, and a pre-filled
post-mortem. HTML draws the charts as inline SVG (one self-contained file, no JavaScript, no network);
Markdown as text sparklines and tables. Charts are drawn from ``Diagnosis.charts``, which the diagnosis
computed: nothing here computes. Every text that comes from the data (column names, segment values,
event descriptions, evidence) is escaped: HTML-escaped in HTML, ``<`` and ``&`` as entities (and ``|`` in
tables) in Markdown.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from mlsleuth.diagnosis import Diagnosis, Hypothesis
from mlsleuth.diagnosis._result import Distribution, IncidentCharts, MarkerKind, SegmentChart, Series, Timeline, iso
from mlsleuth.errors import ConfigError
from mlsleuth.report._postmortem import TO_FILL, PostMortem, pct, postmortem, segments_text, symptom_text, when
from mlsleuth.report._replay import ReplayReport, replay_to_html, replay_to_json, replay_to_markdown
from mlsleuth.report._svg import axis_title, distribution_svg, esc, fmt_value, segments_svg, timeline_svg

__all__ = ["SECTIONS", "render", "to_html", "to_json", "to_markdown"]

#: Section headings of an incident report, in order (both formats; a healthy report has no chart sections
#: and no post-mortem).
SECTIONS = (
    "Summary",
    "What changed over time",
    "Culprit distribution before and after the onset",
    "Who is affected",
    "Hypotheses",
    "Runbook",
    "Layers",
    "Other findings",
    "Not checked",
    "Post-mortem (draft)",
)
_SPARK = "▁▂▃▄▅▆▇█"


def to_json(d: Diagnosis) -> str:
    """the diagnosis JSON of docs/contract.md, indented."""
    return json.dumps(d.to_dict(), indent=2, default=str) + "\n"


# --------------------------------------------------------------------------- Markdown


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?\w+;)")


def _md(text: object) -> str:
    """Data text made inert in Markdown: what could open an HTML tag or entity is written as an entity.

    Only a ``<`` before a letter, ``/``, ``!`` or ``?`` can start raw HTML (CommonMark), so ``a <- b``
    stays readable while ``<script>`` becomes ``&lt;script>``.
    """
    out = _ENTITY.sub("&amp;", str(text))
    return _TAG_START.sub("&lt;", out).replace("\r", " ").replace("\n", " ")


def _cell(text: object) -> str:
    return _md(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _sparkline(s: Series, tl: Timeline, width: int = 84) -> list[str]:
    """A series as one line of block characters (one per bucket of windows), with a marker line under it."""
    n = len(s.values)
    per = max(1, math.ceil(n / width))
    buckets = []
    for i in range(0, n, per):
        chunk = [v for v in s.values[i:i + per] if math.isfinite(v)]
        buckets.append(sum(chunk) / len(chunk) if chunk else math.nan)
    ok = [v for v in buckets if math.isfinite(v)]
    if not ok:
        return []
    lo, hi = min(ok), max(ok)
    line = "".join(" " if not math.isfinite(v) else _SPARK[0] if hi == lo else
                   _SPARK[min(int((v - lo) / (hi - lo) * len(_SPARK)), len(_SPARK) - 1)] for v in buckets)
    marks = [" "] * len(buckets)
    t0 = tl.starts[0]
    for m in tl.markers:
        k = int((m.ts - t0).total_seconds() // (tl.window_seconds * per))
        if 0 <= k < len(marks) and (m.kind is MarkerKind.ONSET or m.culprit):
            marks[k] = "^" if m.kind is MarkerKind.ONSET else "e"
    title = axis_title(s)
    levels = ""
    if math.isfinite(s.before) and math.isfinite(s.after):
        levels = f"; before the onset {fmt_value(s.before, s.unit)}, after {fmt_value(s.after, s.unit)}"
    # The title is Markdown (escaped); only the characters drawn go in the code block, so no data text
    # can close the fence.
    return [f"**{_md(title)}**: range {fmt_value(lo, s.unit)} to {fmt_value(hi, s.unit)}{levels}", "",
            "```text", line, "".join(marks).rstrip(), "```", ""]


def _md_timeline(tl: Timeline) -> list[str]:
    per = max(1, math.ceil(len(tl.starts) / 84))
    scope = f" (in {', '.join(f'{k}={v}' for k, v in tl.scope.items())})" if tl.scope else ""
    out = [f"From {when(tl.starts[0])}; one character = {per * tl.window_seconds // 60} min (UTC){_md(scope)}. "
           "`^` marks the onset, `e` an implicated change event.", ""]
    for s in tl.series:
        out += _sparkline(s, tl)
    out += ["Marked on the charts:", ""]
    for m in tl.markers:
        if m.kind is MarkerKind.EVENT and not m.culprit:
            continue
        if m.kind is MarkerKind.EVENT:
            out.append(f"- {when(m.ts)}: implicated change event {_md(m.label)}: {_md(m.detail)}")
        else:
            out.append(f"- {when(m.ts)}: {_md(m.detail or m.label)}")
    others = [m for m in tl.markers if m.kind is MarkerKind.EVENT and not m.culprit]
    if others:
        out.append(f"- {len(others)} other change events in the span (not implicated): "
                   + ", ".join(_md(m.label) for m in others))
    return [*out, ""]


def _md_distribution(d: Distribution) -> list[str]:
    scope = f" in {', '.join(f'{k}={v}' for k, v in d.scope.items())}" if d.scope else ""
    split = f"the onset ({when(d.split)})" if d.split else "no onset: the whole log"
    out = [f"**{_md(d.column)}**{_md(scope)}: share of non-null values per bin; before/after {split}; "
           f"n = {d.n_reference:,} training, {d.n_before:,} before, {d.n_after:,} after.", ""]
    bins, cols = list(d.bins), [list(d.reference), list(d.before), list(d.after)]
    if d.edges and len(bins) > 15:  # pairs of bins, to keep the table short
        def pair(v: list[float]) -> list[float]:
            return [sum(v[i:i + 2]) for i in range(0, len(v), 2)] if v else []
        bins = [f"{_short(d.edges[i])} to {_short(d.edges[min(i + 2, len(d.edges) - 1)])}"
                for i in range(0, len(d.bins), 2)]
        cols = [pair(c) for c in cols]
    peak = max([v for c in cols for v in c] or [1.0]) or 1.0
    rows = []
    for i, b in enumerate(bins):
        vals = [c[i] if c else math.nan for c in cols]
        bar = "█" * round(12 * vals[2] / peak) if math.isfinite(vals[2]) else ""
        rows.append([b, *(pct(v) if math.isfinite(v) else "-" for v in vals), bar])
    nulls = [d.null_reference, d.null_before, d.null_after]
    if any(math.isfinite(v) and v > 0 for v in nulls):
        rows.append(["(null)", *(pct(v) if math.isfinite(v) else "-" for v in nulls), ""])
    return out + _table(["bin", "training", "before", "after", "after (bar)"], rows)


def _short(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _md_segments(sc: SegmentChart) -> list[str]:
    out = [f"**{_md(sc.metric)}** by **{_md(sc.column)}** (bold value: the affected segment)", ""]
    rows = []
    for b in sc.bars:
        change = ""
        if math.isfinite(b.before) and math.isfinite(b.after) and b.before:
            change = f"{b.after / b.before:.2f}x"
        rows.append([f"**{b.value}**" if b.affected else b.value, pct(b.share), fmt_value(b.before, sc.unit),
                     fmt_value(b.after, sc.unit), change])
    return out + _table(["value", "share of traffic", "before", "after", "after / before"], rows)


def _md_hypothesis(i: int, h: Hypothesis) -> list[str]:
    out = [f"### {i}. {h.cause.value} (confidence {h.confidence:.2f})", "",
           f"- onset: {iso(h.onset) or 'no single start'}"]
    for name, vals in (("features", h.features), ("inputs", h.inputs), ("sources", h.sources),
                       ("events", h.events)):
        if vals:
            out.append(f"- {name}: {_md(', '.join(vals))}")
    out.append(f"- segments: {_md(segments_text(h))}")
    out += ["", "Evidence:", ""] + [f"- {_md(e)}" for e in h.evidence]
    if h.next_steps:
        out += ["", "Next steps:", ""] + [f"{k}. {_md(s)}" for k, s in enumerate(h.next_steps, 1)]
    if h.examples:
        keys = list(dict.fromkeys(k for ex in h.examples for k in ex.values))
        out += ["", "Example requests:", ""]
        out += _table(["request", "ts (UTC)", "when", *keys],
                      [[ex.request_id or "-", iso(ex.ts) or "-", "typical before onset" if ex.typical else
                        "after onset", *(_fmt_cell(ex.values.get(k)) for k in keys)] for ex in h.examples])
    return [*out, ""]


def _fmt_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _md_postmortem(pm: PostMortem) -> list[str]:
    out = [f"_{_md(pm.title)}. Filled from the diagnosis; every `{TO_FILL}` is for people to complete._", "",
           "### Summary", "", _md(pm.summary), "", "### Impact", ""]
    out += [f"- {_md(x)}" for x in pm.impact]
    out += ["", "### Timeline (UTC)", ""]
    out += [f"- {_md(e.text)}" if e.ts is None else f"- {when(e.ts)}: {_md(e.text)}" for e in pm.timeline]
    out += ["", "### Root cause", ""] + [f"- {_md(x)}" for x in pm.root_cause]
    out += ["", "### Trigger", "", _md(pm.trigger), "", "### Detection", ""] + [f"- {_md(x)}" for x in pm.detection]
    out += ["", "### Resolution and next steps", ""] + [f"{k}. {_md(s)}" for k, s in enumerate(pm.resolution, 1)]
    out += ["", "### Action items", ""]
    out += _table(["action", "owner", "due"], [[a.text, a.owner or TO_FILL, a.due or TO_FILL]
                                               for a in pm.action_items])
    for head, prompt in pm.prompts:
        out += [f"### {head}", "", f"- {_md(prompt)}", ""]
    return out


def _overview(d: Diagnosis) -> str:
    tri = d.triage
    if not tri:
        return ""
    return (f"Log: {int(tri.get('rows', 0)):,} requests from {tri.get('from')} to {tri.get('to')} "
            f"(windows of {int(tri.get('window_seconds', 0)) // 60} min).")


def _summary(d: Diagnosis) -> list[str]:
    """Plain sentences (data not yet escaped) for the report's summary."""
    top = d.top
    if top is None:
        return ["Healthy: no material change in the model's outputs, quality or serving health, and no defect "
                "in its features." + (f" {len(d.findings)} finding(s) below, with no effect on the model."
                                      if d.findings else "")]
    out = [f"Incident: {top.cause.value} (confidence {top.confidence:.2f}), "
           f"{'onset ' + when(top.onset) if top.onset else 'no single start (gradual or present throughout)'}."]
    if d.symptoms:
        out.append("What changed: " + "; ".join(symptom_text(s) for s in d.symptoms) + ".")
    cols = [*top.features, *top.inputs, *top.sources]
    if cols:
        out.append("Culprits: " + " <- ".join(cols[:3]) + ".")
    out.append(f"Who: {segments_text(top)}.")
    if top.events:
        out.append(f"Change events: {', '.join(top.events)}.")
    if "affected_requests" in d.triage:
        out.append(f"Requests since the onset: {int(d.triage['affected_requests']):,}.")
    return out


def _runbook_md(text: str) -> list[str]:
    """The runbook with its headings moved under the report's section."""
    out = []
    for line in text.splitlines():
        out.append("###" + line.lstrip("#") if line.startswith("#") else _md(line))
    return [*out, ""]


def to_markdown(d: Diagnosis) -> str:
    """An incident report in Markdown: the same sections as the HTML, with text charts and a post-mortem."""
    lines = [f"# mlsleuth diagnosis: {d.verdict.value}", ""]
    if ov := _overview(d):
        lines += [ov, ""]
    lines += [f"## {SECTIONS[0]}", ""] + [f"- {_md(s)}" for s in _summary(d)] + [""]
    ch: IncidentCharts | None = d.charts
    if d.top is not None and ch is not None:
        if ch.timeline is not None:
            lines += [f"## {SECTIONS[1]}", "", *_md_timeline(ch.timeline)]
        if ch.distributions:
            lines += [f"## {SECTIONS[2]}", ""]
            for dist in ch.distributions:
                lines += _md_distribution(dist)
        if ch.segments:
            lines += [f"## {SECTIONS[3]}", "", f"Affected: {_md(segments_text(d.top))}.", ""]
            for sc in ch.segments:
                lines += _md_segments(sc)
    if d.hypotheses:
        lines += [f"## {SECTIONS[4]}", ""]
        for i, h in enumerate(d.hypotheses, 1):
            lines += _md_hypothesis(i, h)
    if d.runbook:
        source = [f"Runbook override: {_md(d.runbook_source)}", ""] if d.runbook_source else []
        lines += [f"## {SECTIONS[5]}", "", *source, *_runbook_md(d.runbook)]
    if d.layers:
        lines += [f"## {SECTIONS[6]}", ""]
        lines += _table(["layer", "status", "evidence"],
                        [[x.name, x.status.value, "; ".join(x.evidence) or "-"] for x in d.layers])
    if d.findings:
        lines += [f"## {SECTIONS[7]}", ""] + [f"- {_md(f.message)}" for f in d.findings] + [""]
    if d.skipped:
        lines += [f"## {SECTIONS[8]}", ""] + [f"- {_md(s)}" for s in d.skipped] + [""]
    pm = postmortem(d)
    if pm is not None:
        lines += [f"## {SECTIONS[9]}", "", *_md_postmortem(pm)]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:62em;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1 .verdict{padding:.1em .5em;border-radius:.3em;font-size:.8em}
.incident{background:#fde2e1;color:#a1120f}.healthy{background:#e1f5e4;color:#17652a}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f5f5f5}
.chart{max-width:100%;height:auto;display:block;margin:.6em 0 1.2em}
.hypothesis{border:1px solid #ddd;border-radius:.4em;padding:.2em 1em;margin:1em 0}
.tofill{background:#fff3bf;border:1px dashed #e0a800;padding:0 .3em;font-style:italic}
.scroll{overflow-x:auto}.muted{color:#666}code{background:#f3f3f3;padding:0 .2em}.postmortem h3{margin-bottom:.2em}
@media print{.chart{page-break-inside:avoid}}
"""


def _h_list(items: Iterable[str], ordered: bool = False) -> str:
    tag = "ol" if ordered else "ul"
    return f"<{tag}>" + "".join(f"<li>{i}</li>" for i in items) + f"</{tag}>"


def _h_fill(text: str) -> str:
    """Escaped text, with a ``TO FILL`` prompt styled as a placeholder."""
    if TO_FILL in text:
        head, _, rest = text.partition(TO_FILL)
        return f"{esc(head)}<span class='tofill'>{esc(TO_FILL + rest)}</span>"
    return esc(text)


def _h_table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table; cells are already HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{f' class={chr(39)}{cls}{chr(39)}' if cls else ''}><tr>{head}</tr>{body}</table>"


def _h_hypothesis(i: int, h: Hypothesis) -> str:
    facts = [f"<b>onset</b>: {esc(iso(h.onset) or 'no single start')}"]
    for name, vals in (("features", h.features), ("inputs", h.inputs), ("sources", h.sources),
                       ("events", h.events)):
        if vals:
            facts.append(f"<b>{name}</b>: <code class='culprit'>{esc(', '.join(vals))}</code>")
    facts.append(f"<b>segments</b>: {esc(segments_text(h))}")
    out = [f"<div class='hypothesis' id='hypothesis-{i}'><h3>{i}. {esc(h.cause.value)} "
           f"<span class='muted'>(confidence {h.confidence:.2f})</span></h3>", _h_list(facts),
           "<h4>Evidence</h4>", _h_list(esc(e) for e in h.evidence)]
    if h.next_steps:
        out += ["<h4>Next steps</h4>", _h_list((_inline(s) for s in h.next_steps), ordered=True)]
    if h.examples:
        keys = list(dict.fromkeys(k for ex in h.examples for k in ex.values))
        out += ["<h4>Example requests</h4><div class='scroll'>",
                _h_table(["request", "ts (UTC)", "when", *keys],
                         [[esc(ex.request_id or "-"), esc(iso(ex.ts) or "-"),
                           "typical before onset" if ex.typical else "<b>after onset</b>",
                           *(esc(_fmt_cell(ex.values.get(k))) for k in keys)] for ex in h.examples], "examples"),
                "</div>"]
    return "\n".join([*out, "</div>"])


def _inline(text: str) -> str:
    """Escaped text with Markdown code spans as ``<code>`` (safe: the escaping comes first)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def _runbook_html(text: str) -> str:
    """The runbook's Markdown (headings, bullets, paragraphs, code spans) as HTML, every text escaped."""
    out: list[str] = []
    items: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items.clear()
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    for line in [*text.splitlines(), ""]:
        s = line.strip()
        if s.startswith(("- ", "* ")):
            if para:
                flush()
            items.append(f"<li>{_inline(s[2:])}</li>")
        elif s.startswith("#"):
            flush()
            level = min(len(s) - len(s.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{_inline(s.lstrip('#').strip())}</h{level}>")
        elif s:
            if items:
                flush()
            para.append(s)
        else:
            flush()
    return "\n".join(out)


def _h_postmortem(pm: PostMortem) -> str:
    out = [f"<p class='muted'>{esc(pm.title)}. Filled from the diagnosis; every <span class='tofill'>{TO_FILL}"
           "</span> is for people to complete.</p>",
           "<h3>Summary</h3>", f"<p>{esc(pm.summary)}</p>",
           "<h3>Impact</h3>", _h_list(_h_fill(x) for x in pm.impact),
           "<h3>Timeline (UTC)</h3>",
           _h_table(["time (UTC)", "what happened"],
                    [[("<span class='tofill'>to fill</span>" if e.to_fill else "-") if e.ts is None
                      else esc(when(e.ts)), _h_fill(e.text)] for e in pm.timeline], "pm-timeline"),
           "<h3>Root cause</h3>", _h_list(esc(x) for x in pm.root_cause),
           "<h3>Trigger</h3>", f"<p>{_h_fill(pm.trigger)}</p>",
           "<h3>Detection</h3>", _h_list(_h_fill(x) for x in pm.detection),
           "<h3>Resolution and next steps</h3>", _h_list((_inline(s) for s in pm.resolution), ordered=True),
           "<h3>Action items</h3>",
           _h_table(["action", "owner", "due"],
                    [[_inline(a.text), esc(a.owner) if a.owner else f"<span class='tofill'>{TO_FILL}</span>",
                      esc(a.due) if a.due else f"<span class='tofill'>{TO_FILL}</span>"] for a in pm.action_items],
                    "actions")]
    for head, prompt in pm.prompts:
        out += [f"<h3>{esc(head)}</h3>", f"<p>{_h_fill(prompt)}</p>"]
    return "\n".join(out)


def _section(key: int, body: str) -> str:
    ident = ["summary", "timeline", "distribution", "segments", "hypotheses", "runbook", "layers", "findings",
             "skipped", "postmortem"][key]
    return f"<section id='{ident}'{' class=' + chr(39) + ident + chr(39) if ident == 'postmortem' else ''}>" \
           f"<h2>{esc(SECTIONS[key])}</h2>\n{body}\n</section>"


def to_html(d: Diagnosis) -> str:
    """One self-contained HTML page (inline SVG charts, no JavaScript): the Markdown report's sections, drawn."""
    parts = [f"<h1>mlsleuth diagnosis: <span id='verdict' class='verdict {esc(d.verdict.value)}'>"
             f"{esc(d.verdict.value)}</span></h1>"]
    if ov := _overview(d):
        parts.append(f"<p class='muted'>{esc(ov)}</p>")
    parts.append(_section(0, _h_list(esc(s) for s in _summary(d))))
    ch = d.charts
    if d.top is not None and ch is not None:
        if ch.timeline is not None:
            tl = ch.timeline
            note = ("<p class='muted'>Per window; dashed lines: the level before and after the onset. Red line: "
                    "the onset; orange: the implicated change event; grey: other change events; purple: the first "
                    "window where the metric had made half of its change. Hover a marker for its details.</p>")
            parts.append(_section(1, note + timeline_svg(tl)))
        if ch.distributions:
            note = ("<p class='muted'>Share of requests per bin (non-null values): training reference (blue bars), "
                    "before the onset (grey) and after it (red). Hover a bin for its numbers.</p>")
            parts.append(_section(2, note + "\n".join(f"<h3>{esc(x.column)}</h3>{distribution_svg(x)}"
                                                       for x in ch.distributions)))
        if ch.segments:
            note = f"<p>Affected: <b>{esc(segments_text(d.top))}</b>.</p>"
            parts.append(_section(3, note + "\n".join(f"<h3>{esc(x.metric)} by {esc(x.column)}</h3>{segments_svg(x)}"
                                                       for x in ch.segments)))
    if d.hypotheses:
        parts.append(_section(4, "\n".join(_h_hypothesis(i, h) for i, h in enumerate(d.hypotheses, 1))))
    if d.runbook:
        source = f"<p>Runbook override: <code>{esc(d.runbook_source)}</code></p>" if d.runbook_source else ""
        parts.append(_section(5, source + _runbook_html(d.runbook)))
    if d.layers:
        parts.append(_section(6, _h_table(["layer", "status", "evidence"],
                                          [[esc(x.name), esc(x.status.value), esc("; ".join(x.evidence) or "-")]
                                           for x in d.layers], "layers")))
    if d.findings:
        parts.append(_section(7, _h_list(esc(f.message) for f in d.findings)))
    if d.skipped:
        parts.append(_section(8, _h_list(esc(s) for s in d.skipped)))
    pm = postmortem(d)
    if pm is not None:
        parts.append(_section(9, _h_postmortem(pm)))
    title = f"mlsleuth diagnosis: {d.verdict.value}" + (f" ({d.top.cause.value})" if d.top else "")
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def render(d: Diagnosis | ReplayReport, fmt: str) -> str:
    """Render a diagnosis, or a replay, verification, skew or comparison result, in ``json``, ``md`` or ``html``."""
    if not isinstance(d, Diagnosis):
        if fmt == "json":
            return replay_to_json(d)
        if fmt == "md":
            return replay_to_markdown(d)
        if fmt == "html":
            return replay_to_html(d)
        raise ConfigError(f"unknown format {fmt!r}; expected json, md or html", column="format")
    if fmt == "json":
        return to_json(d)
    if fmt == "md":
        return to_markdown(d)
    if fmt == "html":
        return to_html(d)
    raise ConfigError(f"unknown format {fmt!r}; expected json, md or html", column="format")
