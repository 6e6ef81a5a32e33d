"""The pre-filled post-mortem of a diagnosis: what the data says, filled in; what only people know, marked to fill.

One builder (:func:`postmortem`) lays it out as a :class:`PostMortem`; the Markdown and HTML reports (and
the server's export, which calls them) render that same object, so there is one post-mortem in mlsleuth.
Every sentence is read off the :class:`~mlsleuth.diagnosis.Diagnosis` (numbers, times, names); nothing is
invented, and the parts the data cannot know (business impact, who noticed, what went well or badly,
owners and dates) are left as explicit to-fill prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from mlsleuth.diagnosis import Diagnosis, Hypothesis, Symptom
from mlsleuth.diagnosis._result import MarkerKind

__all__ = ["TO_FILL", "ActionItem", "PostMortem", "TimelineEntry", "postmortem"]

#: The mark of a placeholder that people must fill in (never fake content).
TO_FILL = "TO FILL"

_CAUSE_TEXT = {
    "upstream_data_change": "an upstream data change",
    "silent_pipeline_failure": "a silent feature-pipeline failure",
    "training_serving_skew": "training-serving skew",
    "distribution_shift": "a shift in the traffic's distribution",
    "model_degradation": "model degradation",
    "model_change": "a model change",
    "serving_infrastructure": "a serving-infrastructure fault",
}


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the post-mortem's timeline; ``ts`` None and ``to_fill`` for what people must add."""

    ts: datetime | None
    text: str
    to_fill: bool = False


@dataclass(frozen=True)
class ActionItem:
    """A follow-up; ``owner`` and ``due`` stay empty (to fill) unless a person sets them."""

    text: str
    owner: str = ""
    due: str = ""


@dataclass(frozen=True)
class PostMortem:
    """A blameless post-mortem draft: every field from the diagnosis, ``prompts`` for people to answer.

    Examples
    --------
    >>> pm = postmortem(diagnosis)  # doctest: +SKIP
    >>> pm.summary  # doctest: +SKIP
    'From Fri 2026-03-06 18:00 UTC, positive_rate went from 2.0 % to 5.0 % (2.5x) for all traffic. ...'
    """

    title: str
    summary: str
    impact: tuple[str, ...]
    timeline: tuple[TimelineEntry, ...]
    root_cause: tuple[str, ...]
    trigger: str
    detection: tuple[str, ...]
    resolution: tuple[str, ...]
    action_items: tuple[ActionItem, ...]
    prompts: tuple[tuple[str, str], ...]


def when(t: datetime | None) -> str:
    """A time as the report prints it (UTC, with the weekday)."""
    return "-" if t is None else t.strftime("%a %Y-%m-%d %H:%M UTC")


def pct(x: float) -> str:
    """A fraction in percent."""
    return f"{x * 100:.1f} %" if math.isfinite(x) else "n/a"


def _value(x: float, unit: str) -> str:
    if unit == "rate":
        return pct(x)
    if not math.isfinite(x):
        return "n/a"
    text = f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return f"{text} {unit}".strip()


def symptom_text(s: Symptom) -> str:
    """``metric: before -> after (ratio)``."""
    ratio = ""
    if s.before and math.isfinite(s.after / s.before) and s.after / s.before > 0:
        r = s.after / s.before
        ratio = f" ({r:.1f}x)" if r >= 1.5 or r <= 0.67 else f" ({(r - 1) * 100:+.0f} %)"
    return f"{s.metric} {_value(s.before, s.unit)} -> {_value(s.after, s.unit)}{ratio}"


def segments_text(h: Hypothesis) -> str:
    """``region=EU; channel=web`` or ``all traffic``."""
    if not h.segments:
        return "all traffic (no segment stands out)"
    return "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in h.segments)


def _duration(a: datetime, b: datetime) -> str:
    secs = max((b - a).total_seconds(), 0.0)
    days, rest = divmod(int(secs), 86400)
    hours = rest // 3600
    return f"{days} d {hours} h" if days else f"{hours} h {rest % 3600 // 60} min"


def _parse(ts: object) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _runbook_intro(runbook: str) -> str:
    """The runbook's first paragraph (what the cause is), without its title."""
    para: list[str] = []
    for line in runbook.splitlines():
        if line.startswith("#"):
            if para:
                break
            continue
        if not line.strip():
            if para:
                break
            continue
        para.append(line.strip())
    return " ".join(para)


def postmortem(d: Diagnosis) -> PostMortem | None:
    """The post-mortem draft of a diagnosis's top hypothesis (None when the verdict is healthy)."""
    top = d.top
    if top is None:
        return None
    tri = d.triage
    cause = _CAUSE_TEXT.get(top.cause.value, top.cause.value.replace("_", " "))
    culprit = (top.features or top.inputs or ("",))[0]
    start = top.onset or (d.symptoms[0].onset if d.symptoms else None)
    end = _parse(tri.get("to"))
    markers = d.charts.timeline.markers if d.charts is not None and d.charts.timeline is not None else ()
    culprit_events = [m for m in markers if m.kind is MarkerKind.EVENT and m.culprit]

    # Summary: what moved, from when, for whom, and why.
    moved = symptom_text(d.symptoms[0]) if d.symptoms else "no output metric moved (a defect in the data)"
    chain = ""
    if top.inputs and top.features:
        chain = f" {top.inputs[0]} changed and moved {top.features[0]}"
    elif culprit:
        chain = f" {culprit} changed"
    src = f" (from {top.sources[0]})" if top.sources else ""
    trig = f"; change event {culprit_events[0].label} ({culprit_events[0].detail}) is the likely trigger" \
        if culprit_events else (f"; change event {top.events[0]} is the likely trigger" if top.events else "")
    summary = (f"{'From ' + when(start) if top.onset else 'Gradually'}{', ' if top.onset else ' '}{moved} for "
               f"{segments_text(top)}. Most likely cause (confidence {top.confidence:.2f}): {cause}:"
               f"{chain or ' see the root cause'}{src}{trig}.")

    # Impact, with the numbers the diagnosis has.
    impact: list[str] = []
    if "affected_requests" in tri and start is not None:
        span = f" over {_duration(start, end)} until the log ends at {when(end)}" if end is not None else ""
        impact.append(f"{int(tri['affected_requests']):,} of {int(tri.get('rows', 0)):,} logged requests were "
                      f"served after the onset{span}.")
    impact += [f"{symptom_text(s)}{' (' + s.trend + ')' if s.trend != 'stable' else ''}" for s in d.symptoms]
    ch = d.charts
    if ch is not None and ch.excess_metric and math.isfinite(ch.excess):
        noun = {"positive_rate": "positive predictions (decisions such as blocks or alerts)",
                "error_rate": "errors", "fallback_rate": "fallback scores"}.get(ch.excess_metric, ch.excess_metric)
        impact.append(f"About {abs(ch.excess):,.0f} {'more' if ch.excess >= 0 else 'fewer'} {noun} than the "
                      "pre-onset rate would give, since the onset.")
    impact.append(f"Affected: {segments_text(top)}.")
    impact.append(f"{TO_FILL}: business impact (customers affected, money, SLAs, manual reviews).")

    # Timeline: the events that explain it, the onset, when it showed, the log's end; people add the rest.
    entries: list[TimelineEntry] = []
    for m in markers:
        near = start is not None and abs(m.ts - start) <= timedelta(hours=1)
        if m.kind is MarkerKind.EVENT and (m.culprit or near):
            tag = "change event (implicated)" if m.culprit else "change event (not implicated)"
            entries.append(TimelineEntry(m.ts, f"{tag} {m.label}: {m.detail}"))
        elif m.kind is MarkerKind.VISIBLE:
            entries.append(TimelineEntry(m.ts, f"{m.label.removesuffix(' visible')} had made half of its change "
                                               "(first window)"))
    if not culprit_events:
        entries += [TimelineEntry(None, f"change event {e} (implicated)") for e in top.events]
    if top.onset is not None:
        entries.append(TimelineEntry(top.onset, f"onset: {top.evidence[0] if top.evidence else cause}"))
    if end is not None:
        entries.append(TimelineEntry(end, "end of the diagnosed log"))
    entries.sort(key=lambda e: (e.ts is None, e.ts.timestamp() if e.ts is not None else 0.0))
    entries += [TimelineEntry(None, f"{TO_FILL}: when and how people noticed (alert, customer report, dashboard)",
                              True),
                TimelineEntry(None, f"{TO_FILL}: when it was mitigated, and how", True),
                TimelineEntry(None, f"{TO_FILL}: when it was resolved", True)]

    root = [_runbook_intro(d.runbook)] if d.runbook else []
    root += [e for e in top.evidence if not e.startswith("change event")][:4]
    trigger = "; ".join(f"{m.label} at {when(m.ts)}: {m.detail}" for m in culprit_events) or (
        ", ".join(top.events) if top.events else "no recorded change event matched; "
        f"{TO_FILL}: what changed at {when(start)}")
    detection = [f"mlsleuth diagnose named {top.cause.value} with confidence {top.confidence:.2f}"
                 + (f" from the symptoms {', '.join(s.metric for s in d.symptoms)}" if d.symptoms else ""),
                 f"{TO_FILL}: which alert or person noticed first, and how long after the onset"]
    if d.skipped:
        detection.append("not checked for lack of data: " + "; ".join(d.skipped))

    actions: list[ActionItem] = []
    what = f"the change to {top.sources[0]}" if top.sources else f"the cause of the change in {culprit or 'outputs'}"
    actions.append(ActionItem(f"Fix or roll back {what}, then verify on the affected window "
                              f"({when(start)} to {when(end)}) with `mlsleuth replay --verify`."))
    if "affected_requests" in tri:
        actions.append(ActionItem(f"Decide whether the {int(tri['affected_requests']):,} requests served since the "
                                  "onset need re-scoring or a review of their decisions."))
    if culprit:
        actions.append(ActionItem(f"Add a monitor and alert on {culprit} (drift and range against the reference) so "
                                  "the next change alerts before the model's outputs move."))
    if not top.events:
        actions.append(ActionItem("Record changes to upstream sources, pipelines and deployments as change events, "
                                  "so the next diagnosis can name the trigger."))
    return PostMortem(
        title=f"Post-mortem (draft): {cause} {'from ' + when(start) if start else ''}".strip(),
        summary=summary, impact=tuple(impact), timeline=tuple(entries), root_cause=tuple(root), trigger=trigger,
        detection=tuple(detection), resolution=top.next_steps, action_items=tuple(actions),
        prompts=(("What went well", f"{TO_FILL}: what helped detect, diagnose or mitigate it"),
                 ("What went badly", f"{TO_FILL}: what slowed detection or resolution"),
                 ("Where we got lucky", f"{TO_FILL}: what could have made it worse")))
