"""The diagnosis route, and the one function the dashboard's incident page shares with it (read scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from mlsleuth.server._routes_query import REPORT_MEDIA
from mlsleuth.server._state import READ, AppState, RangeDep, StateDep, TimeRange, span

__all__ = ["diagnose_span", "router"]

try:
    from fastapi import APIRouter, HTTPException, Query, Response
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["diagnosis"], dependencies=[READ])


def diagnose_span(state: AppState, model: str, rng: TimeRange) -> tuple[Any, datetime, datetime]:
    """The diagnosis of ``model`` over ``rng`` (default: the week up to its latest request), and that span.

    Cached until the store's rows, labels or events change; see :meth:`AppState.diagnosis`.
    """
    whole = state.store.status()
    try:
        status = whole.model(model)
    except KeyError:
        raise HTTPException(404, f"path.model: no requests of model {model!r} in the store") from None
    lo, hi = span(status, rng)
    key = (model, lo, hi, status.rows, whole.labels, whole.events)
    return state.diagnosis(key, model, lo, hi), lo, hi


@router.get("/v1/models/{model}/diagnosis")
def diagnosis(model: str, state: StateDep, rng: RangeDep,
              format: Annotated[str, Query(pattern="^(json|md|html)$")] = "json") -> Response:
    """Diagnose the model over ``[since, until)`` (default: the week up to its latest request).

    ``format`` picks the report: ``json`` (the diagnosis JSON of docs/contract.md), ``md`` or ``html``
    (the post-mortem).
    """
    from mlsleuth.report import render

    d, _, _ = diagnose_span(state, model, rng)
    return Response(render(d, format), media_type=REPORT_MEDIA[format])
