"""Diagnosing what a store holds, with its log left on disk and scanned by the store's engine."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa

from mlsleuth.diagnosis._data import ScoreFn, store_case
from mlsleuth.diagnosis._diagnose import diagnose_case
from mlsleuth.diagnosis._result import Diagnosis
from mlsleuth.schema import ModelConfig
from mlsleuth.store import Engine, LocalStore, Store

__all__ = ["diagnose_store"]


def diagnose_store(
    store: Store | str | Path,
    *,
    model_name: str | None = None,
    engine: Engine | None = None,
    reference: str | Path | pa.Table | None = None,
    model: str | Path | ScoreFn | None = None,
    config: ModelConfig | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    symptom: str | None = None,
    charts: bool = True,
) -> Diagnosis:
    """Diagnose one model's traffic in a store, with no symptom given.

    The log and labels stay where the store keeps them: the engine scans the Parquet files
    (hive-partitioned, only the model's and the ``since``/``until`` days' partitions) and
    returns per-window summaries, so memory does not grow with the log. Change events and
    lineage are the store's.

    Parameters
    ----------
    store
        A store, or the folder of a :class:`~mlsleuth.store.LocalStore`. A local store's files are
        scanned where they lie; other stores' rows are read into memory first.
    model_name
        The model whose requests to diagnose; may be left out when the store holds one model.
    engine
        The engine that scans the files, e.g. :class:`~mlsleuth.store.SparkEngine` (default: the
        store's own DuckDB).
    reference, model, config, since, until, symptom
        As for :func:`~mlsleuth.diagnosis.diagnose`.
    charts
        Compute the chart data of md/html reports (``Diagnosis.charts``); False skips its queries.

    Returns
    -------
    Diagnosis
        The same result :func:`~mlsleuth.diagnosis.diagnose` gives on the same rows.

    Raises
    ------
    InputError
        When the store holds no rows for the selection, or several models and none was named.
    StoreNotFoundError
        When ``store`` is a folder with no store.

    Examples
    --------
    >>> d = diagnose_store("week/store", model_name="fraud", reference="week/reference.parquet")  # doctest: +SKIP
    >>> d.verdict.value, d.top.cause.value  # doctest: +SKIP
    ('incident', 'upstream_data_change')
    """
    opened = isinstance(store, str | Path)
    st = LocalStore.open(store) if isinstance(store, str | Path) else store
    try:
        case, eng = store_case(st, model_name=model_name, engine=engine, reference=reference, model=model,
                               config=config, since=since, until=until)
        return diagnose_case(case, engine=eng, symptom=symptom, charts=charts)
    finally:
        if opened:
            st.close()
