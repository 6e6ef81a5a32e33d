"""Results shown in Jupyter: the ``--format html`` report, in a frame so its page styles stay inside it."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["notebook_html"]


def notebook_html(result: Any) -> str:
    """The HTML report of a diagnosis, monitor report or replay result, framed for a notebook cell.

    The report is the page ``--format html`` writes, as the ``srcdoc`` of an ``iframe``: its
    ``body``/``table`` styles would otherwise restyle the whole notebook.
    """
    from mlsleuth.diagnosis import Diagnosis
    from mlsleuth.monitors import MonitorReport
    from mlsleuth.report._monitors import monitor_html
    from mlsleuth.report._render import render

    page = monitor_html(result) if isinstance(result, MonitorReport) else render(result, "html")
    height = "48em" if isinstance(result, Diagnosis) else "32em"
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" title="mlsleuth report" '
            f'style="width:100%;height:{height};border:1px solid #ddd;border-radius:4px"></iframe>')
