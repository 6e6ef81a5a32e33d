"""Prometheus text exposition (format 0.0.4), written by hand: a few counters and gauges with labels."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

__all__ = ["Metrics"]

_HELP = {
    "mlsleuth_ingested_rows_total": ("counter", "Rows stored, by model and table kind."),
    "mlsleuth_quarantined_rows_total": ("counter", "Rows rejected into quarantine, by model and table kind."),
    "mlsleuth_http_requests_total": ("counter", "HTTP requests served, by route and status code."),
    "mlsleuth_drift_score": ("gauge", "Jensen-Shannon distance to the reference in the latest window."),
    "mlsleuth_null_rate": ("gauge", "Share of requests with the column null in the latest window."),
    "mlsleuth_window_requests": ("gauge", "Requests in the latest complete window."),
    "mlsleuth_alert_firing": ("gauge", "1 while an alert rule fires on a column, else 0."),
    "mlsleuth_alerts_sent_total": ("counter", "Alert notifications sent, by rule and column."),
    "mlsleuth_alert_evaluations_total": ("counter", "Alert rule evaluations run."),
    "mlsleuth_incidents_open": ("gauge", "Incidents open or acknowledged, by model and cause."),
    "mlsleuth_incident_notifications_total": ("counter", "Incident messages sent, by model and kind of change."),
    "mlsleuth_incident_notify_failures_total": ("counter", "Incident messages a webhook did not take."),
    "mlsleuth_incident_checks_total": ("counter", "Incident detection checks run, by model."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metrics:
    """A thread-safe registry of labelled samples.

    Examples
    --------
    >>> m = Metrics()
    >>> m.inc("mlsleuth_ingested_rows_total", {"model": "fraud", "kind": "log"}, 10)
    >>> 'mlsleuth_ingested_rows_total{kind="log",model="fraud"} 10.0' in m.render()
    True
    """

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {name: {} for name in _HELP}
        self._lock = threading.Lock()

    @staticmethod
    def _key(labels: Mapping[str, str | None]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, "" if v is None else str(v)) for k, v in labels.items()))

    def inc(self, name: str, labels: Mapping[str, str | None], by: float = 1.0) -> None:
        """Add ``by`` to a counter."""
        with self._lock:
            series = self._values[name]
            key = self._key(labels)
            series[key] = series.get(key, 0.0) + by

    def set(self, name: str, labels: Mapping[str, str | None], value: float) -> None:
        """Set a gauge."""
        with self._lock:
            self._values[name][self._key(labels)] = float(value)

    def clear(self, name: str, **match: str) -> None:
        """Drop a gauge's series whose labels include ``match`` (e.g. before refreshing one model's)."""
        with self._lock:
            series = self._values[name]
            for key in [k for k in series if all((m, v) in k for m, v in match.items())]:
                del series[key]

    def render(self) -> str:
        """The exposition text."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in _HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, value in sorted(self._values[name].items()):
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                    lines.append(f"{name}{{{labels}}} {_fmt(value)}" if labels else f"{name} {_fmt(value)}")
        return "\n".join(lines) + "\n"
