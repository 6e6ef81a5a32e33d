"""Read-side helpers shared by the dashboard, the metrics and the alerts: thin calls into the library."""

from __future__ import annotations

from pathlib import Path

from mlsleuth.errors import ReadError
from mlsleuth.monitors import DriftMatrix, StoredReference, drift_matrix, load_reference, reference_dir
from mlsleuth.store import LocalStore

__all__ = ["DriftMatrix", "drift_matrix", "model_reference", "reference_data_path"]


def reference_data_path(store: LocalStore, model: str) -> Path:
    """Where the server keeps a model's raw reference rows (``profiles/<model>/reference.parquet``)."""
    return reference_dir(store.path, model) / "reference.parquet"


def model_reference(store: LocalStore, model: str) -> StoredReference | None:
    """The stored reference profile of ``model``, ``None`` when none was uploaded."""
    try:
        return load_reference(store.path, model)
    except ReadError:
        return None
