"""The notebook example runs top to bottom and shows the diagnosis inline as the HTML report."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mlsleuth.testing import demo_case

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def test_the_notebook_example_diagnoses_a_pandas_dataframe_and_shows_the_report_inline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(EXAMPLE, as_version=4)
    src = str(Path(__file__).resolve().parents[1] / "src")
    # The kernel is a new process: it imports this checkout's mlsleuth, as the test process does.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    shown = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})
             and "<iframe srcdoc=" in o["data"]["text/html"]]
    assert len(shown) == 1 and "mlsleuth diagnosis: incident (upstream_data_change)" in shown[0]
    last = nb.cells[-1]["outputs"][0]["data"]["text/plain"]
    assert "'incident'" in last and "'upstream_data_change'" in last and "input.avg_amount_30d" in last


def test_results_render_as_the_html_report_in_jupyter() -> None:
    import html

    from mlsleuth.diagnosis import diagnose
    from mlsleuth.monitors import run_monitors
    from mlsleuth.replay import compare
    from mlsleuth.report import monitor_html, render

    case = demo_case(0, rows=20_000)
    d = diagnose(case.log.to_pandas(), reference=case.reference.to_pandas())
    assert html.escape(render(d, "html"), quote=True) in d._repr_html_()
    report = run_monitors(case.log.to_pandas(), case.reference.to_pandas())
    assert report.findings and html.escape(monitor_html(report), quote=True) in report._repr_html_()
    version = case.log.column("model_version")[0].as_py()
    cmp = compare(case.log.to_pandas(), a=version, b=version)
    assert html.escape(render(cmp, "html"), quote=True) in cmp._repr_html_()
