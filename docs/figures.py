"""Copy the incident report's charts into docs/img/ for the getting-started page.

Run after ``make demo`` (the default demo: seed 0, 200,000 requests)::

    .venv/bin/python docs/figures.py mlsleuth-demo/report.html

The report draws its charts as inline SVG with their colours in attributes, so each chart is a standalone
image once it is cut out of the page.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("img")
#: Which chart of the report goes to which file: (its class, its position among charts of that class).
FIGURES = {"report-timeline.svg": ("timeline", 0), "report-distribution.svg": ("distribution", 0),
           "report-distribution-input.svg": ("distribution", 1), "report-segments.svg": ("segments", 0)}


def main(report: str) -> None:
    html = Path(report).read_text(encoding="utf-8")
    charts: dict[str, list[str]] = {}
    for m in re.finditer(r"<svg class='chart (\w+)'.*?</svg>", html, re.S):
        charts.setdefault(m.group(1), []).append(m.group(0))
    OUT.mkdir(exist_ok=True)
    for name, (kind, i) in FIGURES.items():
        (OUT / name).write_text(charts[kind][i] + "\n", encoding="utf-8")
        print(f"{OUT / name}: the report's {kind} chart #{i + 1}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mlsleuth-demo/report.html")
