"""JSON, Markdown and HTML renderings of replay, verification, skew and comparison results.

Each result is first laid out as a few blocks (headings, paragraphs, bullet lists, tables); one
writer turns blocks into Markdown, another into a self-contained HTML page. Text that comes from
the user's data (version names, segment values, feature names, request ids) is marked as such and
escaped by both writers: a Markdown code span (``|`` escaped inside tables), HTML-escaped code in
HTML. Nothing here computes: every number is read off the result and formatted.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlsleuth.errors import ConfigError
from mlsleuth.replay import (
    Comparison,
    FeatureSkew,
    Metric,
    Metrics,
    MetricTest,
    Rate,
    ReplayResult,
    Selection,
    SkewReport,
    Verification,
)

__all__ = ["replay_to_html", "replay_to_json", "replay_to_markdown"]

ReplayReport = ReplayResult | Verification | SkewReport | Comparison
_TYPES = (ReplayResult, Verification, SkewReport, Comparison)


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class _Data:
    """Text from the user's data: escaped by every writer."""

    text: str


Inline = str | _Data | tuple[str | _Data, ...]


@dataclass(frozen=True)
class _Heading:
    level: int
    text: Inline


@dataclass(frozen=True)
class _Para:
    text: Inline
    strong: bool = False


@dataclass(frozen=True)
class _Bullets:
    items: tuple[Inline, ...]


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Inline, ...], ...]


Block = _Heading | _Para | _Bullets | _Table


# --------------------------------------------------------------------------- formatting


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pts"


def _rate(r: Rate | None) -> str:
    return "n/a" if r is None or r.n == 0 else f"{_pct(r.value)} ({r.k:,}/{r.n:,})"


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _iso(ts: datetime | None) -> str:
    return "open" if ts is None else ts.isoformat().replace("+00:00", "Z")


def _metric_value(metric: Metric, x: float | None) -> str:
    return _num(x) if metric is Metric.SCORE_MEAN else _pct(x)


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _join(parts: Iterable[str | _Data], sep: str = ", ") -> tuple[str | _Data, ...]:
    out: list[str | _Data] = []
    for i, part in enumerate(parts):
        if i:
            out.append(sep)
        out.append(part)
    return tuple(out)


def _segment_text(segments: Sequence[dict[str, Any]]) -> tuple[str | _Data, ...]:
    alternatives = []
    for seg in segments:
        terms: list[str | _Data] = []
        for k, v in seg.items():
            vals = v if isinstance(v, list) else [v]
            if terms:
                terms.append(" and ")
            terms += [_Data(str(k)), " in " if len(vals) > 1 else " = ", *_join(_Data(str(x)) for x in vals)]
        alternatives.append(tuple(terms))
    out: list[str | _Data] = []
    for i, alt in enumerate(alternatives):
        if i:
            out.append(" or ")
        out += alt
    return tuple(out)


def _selection(sel: Selection) -> tuple[str | _Data, ...]:
    d = sel.to_dict()
    parts: list[str | _Data] = [f"from {d['since'] or 'the start'} to {d['until'] or 'the end'}"]
    if d["segments"]:
        parts += ["; segments ", *_segment_text(d["segments"])]
    if d["model"] is not None:
        parts += ["; model ", _Data(d["model"])]
    if d["version"] is not None:
        parts += ["; version ", _Data(d["version"])]
    if d["request_ids"] is not None:
        parts.append(f"; {len(d['request_ids']):,} listed request ids")
    return tuple(parts)


def _metrics_rows(*sides: Metrics | None) -> tuple[tuple[Inline, ...], ...]:
    def row(name: str, get: Any) -> tuple[Inline, ...]:
        return (name, *("-" if m is None else get(m) for m in sides))

    return (
        row("requests", lambda m: f"{m.n:,}"),
        row("positive rate", lambda m: _rate(m.positive_rate)),
        row("score mean", lambda m: "n/a" if m.score is None else _num(m.score.mean)),
        row("score median", lambda m: "n/a" if m.score is None else _num(m.score.p50)),
        row("score p95", lambda m: "n/a" if m.score is None else _num(m.score.p95)),
        row("labelled", lambda m: f"{m.n_labeled:,}"),
        row("false-positive rate", lambda m: _rate(m.fpr)),
        row("true-positive rate", lambda m: _rate(m.tpr)),
        row("precision", lambda m: _rate(m.precision)),
    )


# --------------------------------------------------------------------------- layouts


def _skew_table(features: Sequence[FeatureSkew]) -> _Table:
    return _Table(
        ("feature", "requests", "mismatches", "share", "max abs diff", "mean abs diff", "max rel diff",
         "KS served vs reference", "KS recomputed vs reference", "example requests"),
        tuple((_Data(f.feature), f"{f.n:,}", f"{f.n_mismatch:,}", _pct(f.mismatch_rate), _g(f.max_abs_diff),
               _g(f.mean_abs_diff), _g(f.max_rel_diff), _g(f.ks_serving_vs_reference),
               _g(f.ks_expected_vs_reference), _join(_Data(e) for e in f.examples) or "-")
              for f in features))


def _replay_blocks(r: ReplayResult, level: int, title: str) -> list[Block]:
    blocks: list[Block] = [
        _Heading(level, title),
        _Para((f"{r.n:,} requests replayed, ", *_selection(r.selection),
               f". Decision threshold {r.threshold:g} ({r.threshold_source}).")),
    ]
    share = (lambda k: f"{k:,} of {r.n:,} ({_pct(k / r.n)})") if r.n else (lambda k: f"{k:,}")
    if r.after is not None:
        blocks.append(_Bullets((
            f"scores changed: {share(r.n_changed)}",
            f"decisions flipped: {share(r.n_flipped)}",
            f"mean |score change|: {_g(r.mean_abs_score_diff)}; largest: {_g(r.max_abs_score_diff)}",
            f"score distribution shift (KS): {_g(r.score_shift_ks)}",
        )))
        blocks += [_Heading(level + 1, "Logged vs replayed"),
                   _Table(("metric", "logged", "replayed"), _metrics_rows(r.before, r.after))]
    else:
        blocks += [_Para("Only the feature pipeline ran: the recomputed features are compared with the logged "
                         "ones below; no model scored them."),
                   _Heading(level + 1, "As logged"), _Table(("metric", "logged"), _metrics_rows(r.before))]
    if r.features is not None:
        blocks += [_Heading(level + 1, "Features: logged vs recomputed"),
                   _Para(f"{len(r.features.skewed)} of {len(r.features.features)} features differ from what was "
                         "logged."),
                   _skew_table(r.features.features)]
    if r.segments:
        blocks += [_Heading(level + 1, "By segment"), _Table(
            ("column", "value", "requests", "positive rate logged", "positive rate replayed", "FPR logged",
             "FPR replayed"),
            tuple((_Data(s.column), _Data(s.value), f"{s.before.n:,}", _rate(s.before.positive_rate),
                   "-" if s.after is None else _rate(s.after.positive_rate), _rate(s.before.fpr),
                   "-" if s.after is None else _rate(s.after.fpr)) for s in r.segments))]
    if r.examples:
        blocks += [_Heading(level + 1, "Largest changes"), _Table(
            ("request", "logged score", "replayed score", "logged decision", "replayed decision", "label"),
            tuple((_Data(e.request_id), _num(e.score_logged), _num(e.score_replayed),
                   _yes(e.decision_logged), _yes(e.decision_replayed), _yes(e.label)) for e in r.examples))]
    return blocks


def _verification_blocks(v: Verification) -> list[Block]:
    tol = v.tolerance
    blocks: list[Block] = [
        _Heading(1, f"mlsleuth verify: {v.verdict.value.upper()}"),
        _Para(v.summary, strong=True),
        _Bullets((
            f"onset: {_iso(v.onset)}",
            f"baseline (as logged): {_iso(v.baseline_window[0])} to {_iso(v.baseline_window[1])}, "
            f"{v.baseline.n:,} requests",
            f"incident window (replayed): {_iso(v.incident_window[0])} to {_iso(v.incident_window[1])}, "
            f"{v.replay.n:,} requests",
            f"restored when |replayed - baseline| <= max({100 * tol.relative:g}% of baseline, {tol.absolute:g}, "
            f"{tol.z:g} standard errors)",
        )),
        _Heading(2, "Checks"),
        _Table(("metric", "baseline", "incident (logged)", "replayed", "allowed deviation", "moved by the incident",
                "restored"),
               tuple((c.metric.value, _metric_value(c.metric, c.baseline), _metric_value(c.metric, c.incident),
                      _metric_value(c.metric, c.replayed), "±" + _metric_value(c.metric, c.allowed),
                      _yes(c.detectable), _yes(c.restored)) for c in v.checks)),
    ]
    return blocks + _replay_blocks(v.replay, 2, "Replay of the incident window")


def _skew_blocks(s: SkewReport) -> list[Block]:
    how = ("the training feature code recomputed each request's features from its logged inputs"
           if s.method == "recompute" else "an offline feature table was joined to the requests on a key")
    blocks: list[Block] = [
        _Heading(1, f"mlsleuth skew: {len(s.skewed)} of {len(s.features)} features skewed"),
        _Para(f"{s.n:,} requests: {how}. A value matches when |served - expected| <= {s.atol:g} + "
              f"{s.rtol:g} x |expected|."),
        _skew_table(s.features),
    ]
    notes: list[Inline] = []
    if s.not_recomputed:
        notes.append(("logged but not recomputed: ", *_join(_Data(f) for f in s.not_recomputed)))
    if s.not_logged:
        notes.append(("recomputed but not logged: ", *_join(_Data(f) for f in s.not_logged)))
    if notes:
        blocks.append(_Bullets(tuple(notes)))
    return blocks


def _test_row(t: MetricTest) -> tuple[Inline, ...]:
    more = "-" if t.more_requests_needed is None else f"{t.more_requests_needed:,}"
    return (t.metric.value, _rate(t.a), _rate(t.b), f"{_pts(t.difference)} [{_pts(t.ci_low)}, {_pts(t.ci_high)}]",
            f"{t.p_value:.3g}", t.method, t.outcome.value.replace("_", " "),
            "-" if t.required_per_arm is None else f"{t.required_per_arm:,}", more)


def _comparison_blocks(c: Comparison) -> list[Block]:
    facts: list[Inline] = [
        f"design: {c.design.value} ({c.design_reason})",
        f"decision threshold {c.threshold:g} ({c.threshold_source}); alpha {c.alpha:g}, power {c.power:g}, "
        f"smallest effect of interest {'the observed difference' if c.min_effect is None else _pts(c.min_effect)}",
        f"score distribution shift (KS): {_g(c.score_shift_ks)}, p = {_g(c.score_shift_p)}",
    ]
    if c.agreement is not None:
        facts.append(f"paired requests: decisions agree on {_pct(c.agreement)}; score correlation "
                     f"{_g(c.score_correlation)}; mean |score difference| {_g(c.mean_abs_score_diff)}")
    blocks: list[Block] = [
        _Heading(1, ("mlsleuth compare: ", _Data(c.b), " vs ", _Data(c.a))),
        _Para(f"Verdict: {c.verdict.value.replace('_', ' ')}", strong=True),
        _Para(("A = ", _Data(c.a), ", B = ", _Data(c.b), ".")),
        _Bullets(tuple(facts)),
        _Heading(2, "Metrics"),
        _Table(("metric", "A", "B"), _metrics_rows(c.metrics_a, c.metrics_b)),
        _Heading(2, "Tests (B - A)"),
        _Table(("metric", "A", "B", "B - A [95% CI]", "p", "test", "outcome", "requests needed", "more needed"),
               tuple(_test_row(t) for t in c.tests)),
    ]
    seg_rows = tuple((_Data(s.column), _Data(s.value), *_test_row(t)[:5], _test_row(t)[6])
                     for s in c.segments for t in s.tests)
    if seg_rows:
        blocks += [_Heading(2, "By segment"),
                   _Table(("column", "value", "metric", "A", "B", "B - A [95% CI]", "p", "outcome"), seg_rows)]
    return blocks


def _blocks(result: ReplayReport) -> tuple[str, list[Block]]:
    if isinstance(result, Verification):
        return f"mlsleuth verify: {result.verdict.value}", _verification_blocks(result)
    if isinstance(result, ReplayResult):
        return "mlsleuth replay", _replay_blocks(result, 1, "mlsleuth replay")
    if isinstance(result, SkewReport):
        return "mlsleuth skew", _skew_blocks(result)
    if isinstance(result, Comparison):
        return "mlsleuth compare", _comparison_blocks(result)
    raise ConfigError(f"cannot render a {type(result).__name__}; expected one of "
                      f"{[t.__name__ for t in _TYPES]}")


# --------------------------------------------------------------------------- writers


def _md_inline(text: Inline, *, cell: bool = False) -> str:
    parts = text if isinstance(text, tuple) else (text,)
    out = []
    for part in parts:
        if isinstance(part, _Data):
            value = " ".join(part.text.splitlines()) or " "
            longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
            fence = "`" * (longest + 1)
            pad = " " if value[0] in "` " or value[-1] in "` " else ""
            span = f"{fence}{pad}{value}{pad}{fence}"
            out.append(span.replace("|", "\\|") if cell else span)
        else:
            out.append(part.replace("|", "\\|") if cell else part)
    return "".join(out)


def _markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            lines += ["#" * b.level + " " + _md_inline(b.text), ""]
        elif isinstance(b, _Para):
            text = _md_inline(b.text)
            lines += [f"**{text}**" if b.strong else text, ""]
        elif isinstance(b, _Bullets):
            lines += [f"- {_md_inline(i)}" for i in b.items] + [""]
        else:
            lines.append("| " + " | ".join(_md_inline(h, cell=True) for h in b.header) + " |")
            lines.append("|" + "---|" * len(b.header))
            lines += ["| " + " | ".join(_md_inline(c, cell=True) for c in row) + " |" for row in b.rows]
            lines.append("")
    return "\n".join(lines)


def _html_inline(text: Inline) -> str:
    parts = text if isinstance(text, tuple) else (text,)
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, _Data) else html.escape(p) for p in parts)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:.95em}li{margin:.2em 0}")


def _html(title: str, blocks: Sequence[Block]) -> str:
    body: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            body.append(f"<h{b.level}>{_html_inline(b.text)}</h{b.level}>")
        elif isinstance(b, _Para):
            text = _html_inline(b.text)
            body.append(f"<p><strong>{text}</strong></p>" if b.strong else f"<p>{text}</p>")
        elif isinstance(b, _Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        else:
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def replay_to_json(result: ReplayReport) -> str:
    """The result's ``to_dict()`` as indented JSON.

    Parameters
    ----------
    result
        A :class:`~mlsleuth.replay.ReplayResult`, :class:`~mlsleuth.replay.Verification`,
        :class:`~mlsleuth.replay.SkewReport` or :class:`~mlsleuth.replay.Comparison`.
    """
    if not isinstance(result, _TYPES):
        _blocks(result)  # raises the error naming the accepted types
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


def replay_to_markdown(result: ReplayReport) -> str:
    """A Markdown report of a replay, verification, skew check or comparison (user data in code spans).

    Examples
    --------
    >>> from mlsleuth.replay import SkewReport
    >>> report = SkewReport(n=0, method="recompute", rtol=1e-6, atol=1e-9, features=())
    >>> replay_to_markdown(report).splitlines()[0]
    '# mlsleuth skew: 0 of 0 features skewed'
    """
    return _markdown(_blocks(result)[1])


def replay_to_html(result: ReplayReport) -> str:
    """A self-contained HTML page of a replay, verification, skew check or comparison (user data escaped)."""
    title, blocks = _blocks(result)
    return _html(title, blocks)
