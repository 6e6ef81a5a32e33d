"""The incident report (``--format html|md``): charts from the diagnosis's chart data, and the post-mortem."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from html import escape
from html.parser import HTMLParser

import pytest

from mlsleuth import ChangeEvent, Lineage
from mlsleuth.diagnosis import Diagnosis, diagnose
from mlsleuth.diagnosis._result import IncidentCharts, MarkerKind, iso
from mlsleuth.report import SECTIONS, TO_FILL, postmortem, render, to_html, to_markdown
from mlsleuth.report._svg import _LEFT, _RIGHT, WIDTH
from mlsleuth.testing import Case, Cause, Variation, demo_case, make_case


@dataclass(frozen=True)
class Reported:
    case: Case
    d: Diagnosis
    html: str
    md: str


def _diagnose(case: Case) -> Diagnosis:
    return diagnose(case.log, reference=case.reference, labels=case.labels,
                    events=[ChangeEvent.from_mapping(e) for e in case.events or []],
                    lineage=Lineage.from_mapping(case.lineage or {}))


def _report(case: Case) -> Reported:
    d = _diagnose(case)
    return Reported(case, d, to_html(d), to_markdown(d))


@pytest.fixture(scope="module")
def demo() -> Reported:
    """The seed's incident (the warehouse change of Friday 18:00 UTC), diagnosed and reported once."""
    return _report(demo_case(0, rows=40_000))


@pytest.fixture(scope="module")
def healthy() -> Reported:
    return _report(make_case(None, seed=2, rows=20_000))


class _Svg(HTMLParser):
    """The attributes of every element, and the text of each ``<title>``, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles.append(data)


def _parse(text: str) -> _Svg:
    p = _Svg()
    p.feed(text)
    return p


def _h2(page: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h2>(.*?)</h2>", page)]


def _md_h2(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


# --------------------------------------------------------------------------- the demo incident


def test_the_demo_is_diagnosed_as_the_seed_story(demo: Reported) -> None:
    top = demo.d.top
    assert top is not None and top.cause is Cause.UPSTREAM_DATA_CHANGE
    assert top.features[0] == "feature.amount_to_avg_ratio" and "ev-1028" in top.events
    assert demo.d.charts is not None


def test_html_is_one_self_contained_file_without_scripts(demo: Reported) -> None:
    page = demo.html
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    # Nothing fetched: no external resources (the SVG namespace is a name, not a download).
    elements = _parse(page).elements
    assert not [a for _t, a in elements if "src" in a or a.get("rel") == "stylesheet"]
    assert not [a for t, a in elements if t == "a" and a.get("href", "").startswith("http")]
    assert "@import" not in page and "url(" not in page


def test_time_chart_marks_the_onset_at_the_diagnosed_time(demo: Reported) -> None:
    top, charts = demo.d.top, demo.d.charts
    assert top is not None and top.onset is not None and charts is not None and charts.timeline is not None
    tl = charts.timeline
    svg = re.search(r"<svg class='chart timeline'.*?</svg>", demo.html, re.S)
    assert svg is not None
    els = _parse(svg.group(0)).elements
    onset = [(i, a) for i, (t, a) in enumerate(els) if t == "g" and "onset" in a.get("class", "").split()]
    assert len(onset) == 1
    i, attrs = onset[0]
    assert attrs["data-ts"] == iso(top.onset)
    # The onset line is where the onset falls on the time axis.
    line = next(a for t, a in els[i:] if t == "line")
    t0 = tl.starts[0]
    span = (tl.starts[-1] - t0).total_seconds() + tl.window_seconds
    expected = _LEFT + (WIDTH - _LEFT - _RIGHT) * (top.onset - t0).total_seconds() / span
    assert float(line["x1"]) == pytest.approx(expected, abs=0.6)
    # The onset is Friday 18:00 UTC (within a window), the implicated event is marked with its description.
    assert top.onset.strftime("%a %H") == "Fri 18"
    culprit = [a for t, a in els if t == "g" and "culprit" in a.get("class", "").split()]
    assert [a["data-label"] for a in culprit] == ["ev-1028"]
    titles = " ".join(_parse(svg.group(0)).titles)
    assert "warehouse.customer_stats" in titles and "(UTC)" in svg.group(0)
    # The affected metric and the culprit are drawn, each with its unit.
    names = [s.name for s in tl.series]
    assert names[0] in {s.metric for s in demo.d.symptoms}
    assert "feature.amount_to_avg_ratio" in names and "input.avg_amount_30d" in names
    assert f"data-series='{names[0]}'" in svg.group(0) and "positive_rate (%)" in svg.group(0)


def test_the_culprit_series_steps_at_the_onset(demo: Reported) -> None:
    assert demo.d.charts is not None and demo.d.charts.timeline is not None
    tl = demo.d.charts.timeline
    ratio = next(s for s in tl.series if s.name == "feature.amount_to_avg_ratio")
    avg = next(s for s in tl.series if s.name == "input.avg_amount_30d")
    assert ratio.statistic == "median"
    # avg_amount_30d scaled by 0.7, so the ratio's median rises by about 1/0.7.
    assert ratio.after / ratio.before == pytest.approx(1 / 0.7, rel=0.12)
    assert avg.after / avg.before == pytest.approx(0.7, rel=0.12)


def test_distribution_chart_shows_the_culprit_before_and_after_against_training(demo: Reported) -> None:
    assert demo.d.charts is not None
    dist = demo.d.charts.distributions[0]
    assert dist.column == "feature.amount_to_avg_ratio" and dist.split == demo.d.top.onset  # type: ignore[union-attr]
    assert len(dist.edges) == len(dist.bins) + 1 and len(dist.before) == len(dist.after) == len(dist.reference)
    assert sum(dist.after) == pytest.approx(1.0) and sum(dist.reference) == pytest.approx(1.0)

    def tv(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return 0.5 * sum(abs(x - y) for x, y in zip(a, b, strict=True))

    # Training and pre-onset serving agree; after the onset the ratio moved to higher bins.
    assert tv(dist.reference, dist.before) < 0.05
    assert tv(dist.before, dist.after) > 0.15

    def mean_bin(v: tuple[float, ...]) -> float:
        return sum(i * x for i, x in enumerate(v))

    assert mean_bin(dist.after) > mean_bin(dist.before) + 1
    svg = re.search(r"<svg class='chart distribution' data-column='feature.amount_to_avg_ratio'.*?</svg>",
                    demo.html, re.S)
    assert svg is not None
    for legend in ("training reference", "before the onset", "after the onset", "share of requests (%)"):
        assert legend in svg.group(0)
    assert len(re.findall(r"class='bin'", svg.group(0))) == len(dist.bins)


def test_segments_show_that_all_regions_were_hit(demo: Reported) -> None:
    assert demo.d.charts is not None and demo.d.top is not None
    assert demo.d.top.segments == ()
    region = next(s for s in demo.d.charts.segments if s.column == "region")
    assert {b.value for b in region.bars} >= {"EU", "US"}
    assert sum(b.share for b in region.bars) == pytest.approx(1.0)
    for b in region.bars:
        assert b.after > 1.7 * b.before, b  # the positive rate rose everywhere: all traffic
        assert not b.affected
    svg = re.search(r"<svg class='chart segments' data-column='region'.*?</svg>", demo.html, re.S)
    assert svg is not None and all(f"data-value='{b.value}'" in svg.group(0) for b in region.bars)
    assert "Affected: <b>all traffic" in demo.html


def test_report_lists_runbook_steps_evidence_examples_layers_and_skipped(demo: Reported) -> None:
    top = demo.d.top
    assert top is not None
    text = re.sub(r"<[^>]+>", "", demo.html)
    for step in top.next_steps:
        assert escape(step.replace("`", "")) in text
    runbook = demo.html.split("<section id='runbook'>", 1)[1].split("</section>", 1)[0]
    assert all(escape(step.replace("`", "")) in re.sub(r"<[^>]+>", "", runbook) for step in top.next_steps)
    assert all(escape(e) in demo.html for e in top.evidence)
    assert top.examples and top.examples[0].request_id in demo.html  # type: ignore[operator]
    assert "class='examples'" in demo.html and "class='layers'" in demo.html
    for s in demo.d.skipped:
        assert escape(s) in demo.html


def test_post_mortem_is_prefilled_with_the_event_and_numbers_and_marks_what_to_fill(demo: Reported) -> None:
    pm = postmortem(demo.d)
    assert pm is not None and demo.d.top is not None
    affected = int(demo.d.triage["affected_requests"])
    assert "ev-1028" in pm.trigger and "warehouse.customer_stats" in pm.trigger
    assert any(f"{affected:,}" in x for x in pm.impact)
    assert any("positive_rate 2." in x and "->" in x for x in pm.impact)
    events = [e for e in pm.timeline if e.ts is not None and "ev-1028" in e.text]
    assert events and events[0].ts < demo.d.top.onset  # type: ignore[operator]
    onset = [e for e in pm.timeline if e.text.startswith("onset")]
    assert onset and onset[0].ts == demo.d.top.onset
    assert list(pm.resolution) == list(demo.d.top.next_steps)
    assert pm.action_items and all(not a.owner and not a.due for a in pm.action_items)
    # What people must add is a placeholder, never invented.
    assert [h for h, _ in pm.prompts] == ["What went well", "What went badly", "Where we got lucky"]
    assert all(p.startswith(TO_FILL) for _, p in pm.prompts)
    assert [e for e in pm.timeline if e.to_fill] and all(TO_FILL in e.text for e in pm.timeline if e.to_fill)
    section = demo.html.split("<section id='postmortem'", 1)[1]
    assert "ev-1028" in section and f"{affected:,}" in section and "Fri 2026-03-06 18:00 UTC" in section
    assert section.count("class='tofill'") >= 6


def test_markdown_has_the_same_sections_as_html_with_text_charts(demo: Reported) -> None:
    assert _h2(demo.html) == _md_h2(demo.md)
    assert _md_h2(demo.md) == [s for s in SECTIONS if s != "Not checked" or demo.d.skipped]
    md = demo.md
    block = md.split("## What changed over time", 1)[1].split("## ", 1)[0]
    spark = [line for line in block.splitlines() if line and set(line) <= set("▁▂▃▄▅▆▇█ ")]
    assert len(spark) == len(demo.d.charts.timeline.series)  # type: ignore[union-attr]
    marks = [line for line in block.splitlines() if "^" in line and set(line) <= set(" ^e")]
    assert marks and "ev-1028" in block
    assert "| bin | training | before | after |" in md and "| value | share of traffic |" in md
    pm = md.split("## Post-mortem (draft)", 1)[1]
    assert "ev-1028" in pm and TO_FILL in pm and "### What went badly" in pm
    assert f"{int(demo.d.triage['affected_requests']):,}" in pm


def test_json_carries_the_chart_data_without_nan(demo: Reported) -> None:
    out = json.loads(render(demo.d, "json"))
    text = json.dumps(out, allow_nan=False)  # NaN (windows without data) is null, not invalid JSON
    assert out["verdict"] == "incident" and out["hypotheses"][0]["cause"] == "upstream_data_change"
    charts = out["charts"]
    onset = next(m for m in charts["timeline"]["markers"] if m["kind"] == "onset")
    assert onset["ts"] == out["hypotheses"][0]["onset"]
    assert len(charts["timeline"]["starts"]) == len(charts["timeline"]["series"][0]["values"])
    assert charts["distributions"][0]["column"] == "feature.amount_to_avg_ratio"
    assert charts["excess"]["metric"] == "positive_rate" and charts["excess"]["value"] > 0
    assert "NaN" not in text


# --------------------------------------------------------------------------- healthy, hostile names, segments


def test_a_healthy_report_says_healthy_and_has_no_incident_charts(healthy: Reported) -> None:
    d = healthy.d
    assert d.verdict.value == "healthy" and d.charts is None and postmortem(d) is None
    assert "<svg" not in healthy.html and "Post-mortem" not in healthy.html
    assert "id='verdict' class='verdict healthy'" in healthy.html
    assert "Healthy: no material change" in healthy.html and "Healthy: no material change" in healthy.md
    for section in ("What changed over time", "Culprit distribution before and after the onset", "Who is affected",
                    "Hypotheses", "Post-mortem (draft)"):
        assert section not in _h2(healthy.html) and section not in _md_h2(healthy.md)
    assert _h2(healthy.html) == _md_h2(healthy.md)


HOSTILE = "feature.<script>alert(1)</script>"
HOSTILE_VALUE = "<img src=x onerror=alert(2)>"


def _hostile(d: Diagnosis) -> Diagnosis:
    """The demo diagnosis with a column name, segment value, event text and evidence that hold markup."""
    top, ch = d.top, d.charts
    assert top is not None and ch is not None and ch.timeline is not None
    old = top.features[0]
    h = replace(top, features=(HOSTILE,), segments=({"region": HOSTILE_VALUE},),
                evidence=tuple(e.replace(old, HOSTILE) for e in top.evidence))
    series = tuple(replace(s, name=HOSTILE) if s.name == old else s for s in ch.timeline.series)
    tl = replace(ch.timeline, series=series,
                 markers=tuple(replace(m, detail=m.detail + HOSTILE_VALUE) for m in ch.timeline.markers))
    seg = replace(ch.segments[0], bars=(replace(ch.segments[0].bars[0], value=HOSTILE_VALUE, affected=True),
                                        *ch.segments[0].bars[1:]))
    dist = replace(ch.distributions[0], column=HOSTILE, bins=(HOSTILE_VALUE, *ch.distributions[0].bins[1:]))
    charts = IncidentCharts(tl, (dist,), (seg,), ch.excess, ch.excess_metric)
    return replace(d, hypotheses=(h, *d.hypotheses[1:]), charts=charts)


def test_text_from_the_data_is_escaped_in_html_and_markdown(demo: Reported) -> None:
    d = _hostile(demo.d)
    page = to_html(d)
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert postmortem(d) is not None
    md = to_markdown(d)
    assert "<script" not in md.lower() and "<img" not in md.lower()
    assert "&lt;script>alert(1)&lt;/script>" in md and "&lt;img src=x onerror=alert(2)>" in md
    # Readable arrows are not mangled by the escaping.
    assert "<- input.avg_amount_30d" in md


@pytest.fixture(scope="module")
def confined() -> Reported:
    """A pipeline failure that writes nulls in one region only."""
    return _report(make_case(Cause.SILENT_PIPELINE_FAILURE, seed=5, rows=30_000,
                             variation=Variation(segment=("region", "EU"))))


def test_a_segment_confined_incident_is_drawn_in_its_segment(confined: Reported) -> None:
    d = confined.d
    assert d.top is not None and d.charts is not None and d.charts.timeline is not None
    assert {"region": "EU"} in [dict(s) for s in d.top.segments] or any(
        s.get("region") == "EU" for s in d.top.segments)
    region = next(s for s in d.charts.segments if s.column == "region")
    eu = next(b for b in region.bars if b.value == "EU")
    assert eu.affected and not any(b.affected for b in region.bars if b.value != "EU")
    # The null feature stopped the model flagging anything in EU; elsewhere the rate stayed about the same.
    assert eu.after < 0.5 * eu.before
    others = [b for b in region.bars if b.value not in ("EU", "(other)", "(null)")]
    assert others and all(0.6 < b.after / b.before < 1.6 for b in others)
    assert d.charts.timeline.scope == {"region": "EU"}
    null_rate = next(s for s in d.charts.timeline.series if s.statistic == "null rate")
    assert null_rate.before < 0.05 and null_rate.after > 0.5
    assert "class='bar affected' data-value='EU'" in confined.html
    assert "**EU**" in confined.md


def test_marker_times_are_utc_and_inside_or_named_by_the_hypothesis(demo: Reported) -> None:
    assert demo.d.charts is not None and demo.d.charts.timeline is not None
    tl = demo.d.charts.timeline
    for m in tl.markers:
        assert m.ts.utcoffset() is not None and m.ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert m.kind is not MarkerKind.EVENT or m.culprit or tl.starts[0] <= m.ts
    assert isinstance(tl.starts[0], datetime) and all(math.isfinite(v) or math.isnan(v) for v in tl.series[0].values)
