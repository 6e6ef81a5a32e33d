"""Terminal and JSON renderings of a :class:`~mlsleuth.monitors.MonitorReport`."""

from __future__ import annotations

import json

from rich.table import Table

from mlsleuth.monitors import MonitorReport, Severity
from mlsleuth.report._replay import Block, _Data, _Heading, _html, _Para, _Table

__all__ = ["monitor_html", "monitor_json", "monitor_table"]

_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def monitor_json(report: MonitorReport) -> str:
    """The report as indented JSON (:meth:`MonitorReport.to_dict`)."""
    return json.dumps(report.to_dict(), indent=2) + "\n"


def monitor_table(report: MonitorReport, *, limit: int = 200) -> Table:
    """A rich table of the findings, most severe first (at most ``limit`` rows)."""
    t = Table(title=f"mlsleuth monitor: {len(report.findings)} findings over {report.windows} windows of "
                    f"{report.window_seconds // 60} min, {report.rows:,} requests")
    for col in ("severity", "monitor", "column", "window", "segment", "statistic", "value", "threshold", "n",
                "baseline"):
        t.add_column(col, justify="right" if col in ("value", "threshold", "n") else "left")
    for f in report.findings[:limit]:
        t.add_row(f.severity.value, f.monitor, f.column or "-", f.window_start.strftime("%Y-%m-%d %H:%M"),
                  f.segment_label, f.statistic, f"{f.value:.4g}", f"{f.threshold:.4g}", f"{f.sample_size:,}",
                  f.baseline.value, style=_STYLE[f.severity])
    return t


def monitor_html(report: MonitorReport, *, limit: int = 200) -> str:
    """A self-contained HTML page of the findings, most severe first (user data escaped), as ``--format html``."""
    title = (f"mlsleuth monitor: {len(report.findings)} findings over {report.windows} windows of "
             f"{report.window_seconds // 60} min, {report.rows:,} requests")
    rows = tuple((f.severity.value, f.monitor, _Data(f.column or "-"), f.window_start.strftime("%Y-%m-%d %H:%M"),
                  _Data(f.segment_label), f.statistic, f"{f.value:.4g}", f"{f.threshold:.4g}", f"{f.sample_size:,}",
                  _Data(f.reason)) for f in report.findings[:limit])
    blocks: list[Block] = [_Heading(1, title)]
    if rows:
        blocks.append(_Table(("severity", "monitor", "column", "window", "segment", "statistic", "value",
                              "threshold", "n", "reason"), rows))
    else:
        blocks.append(_Para("No findings.", strong=True))
    if len(report.findings) > limit:
        blocks.append(_Para(f"{len(report.findings) - limit} more findings not shown."))
    blocks += [_Para((f"skipped {name}: ", _Data(reason))) for name, reason in report.skipped]
    return _html(title, blocks)
