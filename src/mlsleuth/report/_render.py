"""JSON, Markdown and HTML renderings of a :class:`~mlsleuth.diagnosis.Diagnosis`; :func:`render` for every result."""

from __future__ import annotations

import html
import json

from mlsleuth.diagnosis import Diagnosis
from mlsleuth.diagnosis._result import iso
from mlsleuth.errors import ConfigError
from mlsleuth.report._replay import ReplayReport, replay_to_html, replay_to_json, replay_to_markdown

__all__ = ["render", "to_html", "to_json", "to_markdown"]


def to_json(d: Diagnosis) -> str:
    """CONTRACT.md section 3's JSON, indented."""
    return json.dumps(d.to_dict(), indent=2, default=str) + "\n"


def to_markdown(d: Diagnosis) -> str:
    """An incident report in Markdown, with a post-mortem skeleton."""
    lines = [f"# mlsleuth diagnosis: {d.verdict.value}", ""]
    tri = d.triage
    if tri:
        lines += [f"Log: {tri.get('rows', 0):,} requests from {tri.get('from')} to {tri.get('to')} "
                  f"(windows of {tri.get('window_seconds', 0) // 60} min).", ""]
    if d.symptoms:
        lines += ["## What changed", ""]
        for s in d.symptoms:
            lines.append(f"- **{s.metric}**: {s.before:.4g} -> {s.after:.4g} from {s.onset or 'gradually'} "
                         f"({s.trend})")
        lines.append("")
    for i, h in enumerate(d.hypotheses, 1):
        lines += [f"## {i}. {h.cause.value} (confidence {h.confidence:.2f})", ""]
        lines.append(f"- onset: {iso(h.onset) or 'no single start'}")
        if h.features:
            lines.append(f"- features: {', '.join(h.features)}")
        if h.inputs:
            lines.append(f"- inputs: {', '.join(h.inputs)}")
        if h.sources:
            lines.append(f"- sources: {', '.join(h.sources)}")
        if h.segments:
            lines.append("- segments: " + "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in h.segments))
        if h.events:
            lines.append(f"- events: {', '.join(h.events)}")
        lines += ["", "Evidence:", ""] + [f"- {e}" for e in h.evidence]
        if h.next_steps:
            lines += ["", "Next steps:", ""] + [f"{k}. {s}" for k, s in enumerate(h.next_steps, 1)]
        if h.examples:
            lines += ["", "Example requests:", ""]
            for ex in h.examples:
                tag = "typical before onset" if ex.typical else "after onset"
                lines.append(f"- `{ex.request_id}` ({tag}): " + ", ".join(f"{k}={v}" for k, v in ex.values.items()))
        lines.append("")
    if d.layers:
        lines += ["## Layers", "", "| layer | status | evidence |", "|---|---|---|"]
        for layer in d.layers:
            lines.append(f"| {layer.name} | {layer.status.value} | {'; '.join(layer.evidence) or '-'} |")
        lines.append("")
    if d.findings:
        lines += ["## Findings", ""] + [f"- {f.message}" for f in d.findings] + [""]
    if d.skipped:
        lines += ["## Not checked", ""] + [f"- {s}" for s in d.skipped] + [""]
    if d.hypotheses:
        top = d.hypotheses[0]
        lines += ["## Post-mortem (draft)", "",
                  f"- **Summary**: {top.cause.value.replace('_', ' ')} starting "
                  f"{iso(top.onset) or 'gradually'}.",
                  f"- **Impact**: {tri.get('affected_requests', 'n/a')} requests after the onset; "
                  f"{', '.join(d2.metric for d2 in d.symptoms) or 'no output metric moved'}.",
                  f"- **Root cause**: {top.evidence[0] if top.evidence else ''}",
                  f"- **Trigger**: {', '.join(top.events) or 'no change event matched'}",
                  "- **Detection**: mlsleuth diagnose", "- **Action items**: see next steps above", ""]
    return "\n".join(lines)


def to_html(d: Diagnosis) -> str:
    """A self-contained HTML page of the Markdown report (user data escaped)."""
    body = []
    for line in to_markdown(d).splitlines():
        esc = html.escape(line)
        if line.startswith("# "):
            body.append(f"<h1>{esc[2:]}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{esc[3:]}</h2>")
        elif line.startswith("- "):
            body.append(f"<li>{esc[2:]}</li>")
        elif line.strip():
            body.append(f"<p>{esc}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mlsleuth diagnosis</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
            "li{margin:.2em 0}</style></head><body>" + "\n".join(body) + "</body></html>\n")


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
