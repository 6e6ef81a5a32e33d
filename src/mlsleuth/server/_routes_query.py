"""Query routes: what the store holds, stored rows and events, monitors and version comparisons (read scope)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from mlsleuth.monitors import run_monitors
from mlsleuth.server._state import READ, RangeDep, StateDep, jsonable, model_status, parse_window_param
from mlsleuth.server._views import model_reference

__all__ = ["REPORT_MEDIA", "router"]

#: The media type of each report format.
REPORT_MEDIA = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html"}

try:
    from fastapi import APIRouter, HTTPException, Query, Response
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["query"], dependencies=[READ])


@router.get("/v1/status")
def status(state: StateDep) -> dict[str, Any]:
    """What the store holds, per model (no server path: that stays in the server's own config)."""
    s = state.store.status()
    return {"rows": s.rows, "labels": s.labels, "quarantined": s.quarantined, "events": s.events,
            "files": s.files, "bytes": s.bytes,
            "models": [{"name": m.name, "versions": list(m.versions), "rows": m.rows,
                        "first_ts": m.first_ts.isoformat() if m.first_ts else None,
                        "last_ts": m.last_ts.isoformat() if m.last_ts else None,
                        "last_request_id": m.last_request_id, "labelled_fraction": m.labelled_fraction}
                       for m in s.models]}


@router.get("/v1/log")
def read_log(state: StateDep, rng: RangeDep, model: str | None = None,
             limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> dict[str, Any]:
    """Stored log rows of a model and time window (``[since, until)``), oldest first, at most ``limit``."""
    table = state.store.read_log(model=model, since=rng.since, until=rng.until)
    rows = table.slice(0, limit).to_pylist()
    return {"rows": json.loads(json.dumps(rows, default=jsonable)), "total": table.num_rows}


@router.get("/v1/events")
def list_events(state: StateDep, rng: RangeDep) -> list[dict[str, Any]]:
    """Change events in ``[since, until)``."""
    return [e.to_dict() for e in state.store.events(rng.since, rng.until)]


@router.get("/v1/models/{model}/monitors")
def monitors(model: str, state: StateDep, rng: RangeDep, window: str = "1h",
             segment: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    """Run every monitor over windows of the model's requests against its stored reference."""
    ref = model_reference(state.store, model)
    if ref is None:
        raise HTTPException(404, f"path.model: no reference stored for {model!r}; upload one to "
                                 f"/v1/models/{model}/reference")
    report = run_monitors(state.store, ref, window=parse_window_param(window), segment=tuple(segment or ()),
                          model=model, since=rng.since, until=rng.until)
    return report.to_dict()


@router.get("/v1/models/{model}/compare")
def compare_versions(model: str, a: str, b: str, state: StateDep, rng: RangeDep, by: str = "model_version",
                     format: Annotated[str, Query(pattern="^(json|md|html)$")] = "json") -> Response:
    """Compare two versions' logged traffic (A/B split or shadow): rates with tests, power, segments.

    Only logged versions are compared: the server never loads model files sent over HTTP.
    """
    from mlsleuth.replay import Selection
    from mlsleuth.replay import compare as run_compare
    from mlsleuth.report import render

    model_status(state, model)
    sel = Selection(since=rng.since, until=rng.until, model=model)
    labels = state.store.sql("SELECT request_id, label FROM labels")
    result = run_compare(state.store, a=a, b=b, by=by, selection=sel, labels=labels if labels.num_rows else None)
    return Response(render(result, format), media_type=REPORT_MEDIA[format])
