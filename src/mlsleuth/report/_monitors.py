"""Terminal and JSON renderings of a :class:`~mlsleuth.monitors.MonitorReport`."""

from __future__ import annotations

import json

from rich.table import Table

from mlsleuth.monitors import MonitorReport, Severity

__all__ = ["monitor_json", "monitor_table"]

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
