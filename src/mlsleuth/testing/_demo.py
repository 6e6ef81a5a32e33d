"""The demo: the seed's incident built, stored, diagnosed and reported, end to end."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mlsleuth.diagnosis import Diagnosis, diagnose
from mlsleuth.errors import StoreError
from mlsleuth.monitors import build_reference, reference_dir, save_reference
from mlsleuth.report import render
from mlsleuth.schema import DataKind
from mlsleuth.store import LocalStore, TableKind
from mlsleuth.testing._case import demo_case

__all__ = ["DemoResult", "build_demo", "ingest_case"]

_MARKER = ".mlsleuth-demo"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo put things, and what the diagnosis said."""

    case_dir: Path
    store_dir: Path
    report: Path
    diagnosis: Diagnosis


def ingest_case(case_dir: str | Path, store: str | Path, *, model: str = "fraud") -> LocalStore:
    """A store holding a CASE_DIR's log, labels, events and lineage, and ``model``'s reference.

    The reference goes where ``mlsleuth serve`` keeps an uploaded one: its profile (monitors, the dashboard's
    drift) and its rows (the server's diagnoses and incident checks), so the store is complete on its own.

    Examples
    --------
    >>> store = ingest_case("demo/case", "demo/store")  # doctest: +SKIP
    >>> store.status().model("fraud").rows  # doctest: +SKIP
    200000
    """
    folder = Path(case_dir)
    st = LocalStore.init(store)
    st.ingest(folder / "log.parquet", DataKind.LOG)
    for name, kind in (("labels.parquet", DataKind.LABELS), ("events.jsonl", TableKind.EVENTS),
                       ("lineage.json", TableKind.LINEAGE)):
        if (folder / name).exists():
            st.ingest(folder / name, kind)
    save_reference(st.path, model, build_reference(folder / "reference.parquet"))
    shutil.copyfile(folder / "reference.parquet", reference_dir(st.path, model) / "reference.parquet")
    return st


def build_demo(folder: str | Path, *, seed: int = 0, rows: int = 200_000) -> DemoResult:
    """Build the card-fraud demo week, ingest it into an embedded store, diagnose it, write the report.

    The folder gets ``case/`` (the CASE_DIR files), ``store/`` (an mlsleuth store holding the log, labels,
    events, lineage and the model's reference profile and rows), ``report.html`` and ``diagnosis.json``. A
    folder from an earlier demo is rebuilt; any other non-empty folder is refused, so the demo never deletes
    data it did not write.

    Raises
    ------
    StoreError
        When ``folder`` is a non-empty folder that is not an earlier demo.
    """
    root = Path(folder)
    if root.exists() and any(root.iterdir()) and not (root / _MARKER).exists():
        raise StoreError(f"{root}: not empty and not an mlsleuth demo folder; pick another --dir")
    for sub in ("case", "store"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text("written by `mlsleuth demo`; safe to delete\n", encoding="utf-8")
    case = demo_case(seed, rows=rows)
    case_dir = case.write(root / "case")
    store = ingest_case(case_dir, root / "store")
    # The diagnosis reads what the store holds; the reference and the model come from the case.
    result = diagnose(store.read_log(model="fraud"), reference=case_dir / "reference.parquet",
                      labels=store.sql("SELECT request_id, label FROM labels"), events=store.events(),
                      lineage=store.lineage(), model=case_dir / "model.joblib")
    report = root / "report.html"
    report.write_text(render(result, "html"), encoding="utf-8")
    (root / "diagnosis.json").write_text(render(result, "json"), encoding="utf-8")
    return DemoResult(case_dir=case_dir, store_dir=root / "store", report=report, diagnosis=result)
