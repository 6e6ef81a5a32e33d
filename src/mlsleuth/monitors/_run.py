"""A full monitor pass: one shared context, every monitor, one report."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mlsleuth.errors import InputError
from mlsleuth.monitors._checks import Monitor, default_monitors
from mlsleuth.monitors._context import MonitorContext, MonitorSkipped
from mlsleuth.monitors._findings import Finding
from mlsleuth.monitors._reference import StoredReference, build_reference
from mlsleuth.monitors._source import ArrowSource, LogSource, TimeRange, parse_window, to_utc_time
from mlsleuth.schema import DataKind, read_table, validate
from mlsleuth.schema._tables import is_table_like, read_log_rows, source_path

__all__ = ["MonitorReport", "run_monitors"]


@dataclass(frozen=True)
class MonitorReport:
    """The findings of a monitor pass.

    Attributes
    ----------
    findings
        Most severe first, then by window, monitor and column.
    skipped
        ``(monitor, reason)`` for monitors that could not run on this data.
    window_seconds
        The window size.
    windows
        Windows examined.
    rows
        Requests examined.
    segment
        Segment columns examined.
    seconds
        Wall time of the pass.
    """

    findings: tuple[Finding, ...]
    skipped: tuple[tuple[str, str], ...]
    window_seconds: int
    windows: int
    rows: int
    segment: tuple[str, ...] = ()
    seconds: float = 0.0

    def _repr_html_(self) -> str:
        """The ``--format html`` report, shown inline by Jupyter."""
        # The renderers live in mlsleuth.report, above this module: imported only when a notebook shows it.
        from mlsleuth.report._notebook import notebook_html

        return notebook_html(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "window_seconds": self.window_seconds, "windows": self.windows, "rows": self.rows,
            "segment": list(self.segment), "seconds": round(self.seconds, 3),
            "findings": [f.to_dict() for f in self.findings],
            "skipped": [{"monitor": m, "reason": r} for m, r in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorReport:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(tuple(Finding.from_dict(f) for f in data["findings"]),
                       tuple((str(s["monitor"]), str(s["reason"])) for s in data.get("skipped", ())),
                       int(data["window_seconds"]), int(data["windows"]), int(data["rows"]),
                       tuple(data.get("segment", ())), float(data.get("seconds", 0.0)))
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a monitor report: {exc!r}") from exc


def _order(f: Finding) -> tuple[Any, ...]:
    return (-f.severity.rank, f.window_start, f.monitor, f.column or "", f.segment, f.statistic)


def run_monitors(
    source: LogSource | Any,
    reference: StoredReference | Any,
    monitors: Sequence[Monitor] | None = None,
    *,
    window: str | int | timedelta = "1d",
    segment: Sequence[str] = (),
    model: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    labels: Any = None,
) -> MonitorReport:
    """Run monitors over windows of a log against a stored reference.

    Parameters
    ----------
    source
        A store (or :class:`~mlsleuth.monitors.ArrowSource`) with the ``log`` view (and ``labels``);
        or the log itself, as a file or a pandas/polars DataFrame (read and validated, bad rows left out).
    reference
        From :func:`~mlsleuth.monitors.build_reference` or :func:`~mlsleuth.monitors.load_reference`;
        or the reference rows (a file or a DataFrame), profiled with :func:`~mlsleuth.monitors.build_reference`.
    monitors
        Monitor specs (default: :func:`~mlsleuth.monitors.default_monitors`).
    window
        Window size: ``"1h"``, ``"1d"``, seconds.
    segment
        Segment columns: each value is examined on its own as well as all traffic.
    model, since, until
        Which rows: a model and ``since <= ts < until``.
    labels
        With a log given as a file or a DataFrame: its labels (``request_id``, ``label``[, ``label_ts``]),
        as a file, a DataFrame or an Arrow table. A store has its own.

    Examples
    --------
    >>> from mlsleuth.monitors import ArrowSource, Volume, build_reference, run_monitors
    >>> from mlsleuth.testing import make_case
    >>> case = make_case(None, seed=1, rows=5_000)
    >>> report = run_monitors(ArrowSource(case.log), build_reference(case.reference), [Volume()])
    >>> report.findings
    ()
    """
    t0 = time.perf_counter()
    # Before the protocol check: a polars DataFrame has a ``sql`` method too, but not over a ``log`` view.
    if is_table_like(source) or isinstance(source, str | Path):
        lab = None if labels is None else validate(read_table(labels), DataKind.LABELS, path=source_path(labels)).good
        source = ArrowSource(read_log_rows(source), lab)
    elif labels is not None:
        raise InputError("labels= is for a log given as a file or a DataFrame: a store reads its own labels")
    if not isinstance(reference, StoredReference):
        reference = build_reference(reference)
    ws = parse_window(window)
    tr = TimeRange(model, to_utc_time(since, "since"), to_utc_time(until, "until"))
    ctx = MonitorContext(source, reference, window_seconds=ws, segment=segment, time_range=tr)
    findings: list[Finding] = []
    skipped: list[tuple[str, str]] = []
    for m in default_monitors() if monitors is None else monitors:
        try:
            findings.extend(m.run(ctx))
        except MonitorSkipped as exc:
            skipped.append((m.name, str(exc)))
    unique = list(dict.fromkeys(findings))
    unique.sort(key=_order)
    rows = sum(w.rows for w in ctx.profiles.windows)
    return MonitorReport(tuple(unique), tuple(skipped), ws, len(ctx.profiles.starts), rows, tuple(segment),
                         time.perf_counter() - t0)
