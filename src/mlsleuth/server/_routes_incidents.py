"""Incident routes: list and read incidents (read scope), acknowledge one and run detection now (write scope)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from mlsleuth.errors import ConfigError
from mlsleuth.incidents import Incident, IncidentChange, IncidentStatus
from mlsleuth.server._state import READ, WRITE, AppState, StateDep, incident_link

__all__ = ["find_incident", "router"]

try:
    from fastapi import APIRouter, HTTPException, Query, Request
    from fastapi.responses import RedirectResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as _exc:  # pragma: no cover - the server extra installs them
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["incidents"])

_STATUSES = "|".join(s.value for s in IncidentStatus)


def find_incident(state: AppState, model: str, ident: str) -> Incident:
    """One incident of ``model``; 404 naming it when there is none."""
    incident = state.incidents.log.get(model, ident)
    if incident is None:
        raise HTTPException(404, f"path.id: no incident {ident!r} of model {model!r}")
    return incident


def _body(state: AppState, incident: Incident) -> dict[str, Any]:
    return {**incident.to_dict(), "link": incident_link(state.config.public_url, incident.model, incident.id)}


def _change(state: AppState, change: IncidentChange) -> dict[str, Any]:
    return {"kind": change.kind.value, "incident": _body(state, change.incident),
            "previous": change.previous.to_dict() if change.previous is not None else None}


@router.get("/v1/incidents", dependencies=[READ])
def list_incidents(state: StateDep, model: str | None = None,
                   status: Annotated[str | None, Query(pattern=f"^({_STATUSES})$")] = None) -> dict[str, Any]:
    """Incidents, most recently opened first; ``model`` and ``status`` (open, acknowledged, resolved) filter them."""
    found = [i for i in state.incidents.log.all(model) if status is None or i.status.value == status]
    return {"incidents": [_body(state, i) for i in found]}


@router.get("/v1/models/{model}/incidents/{ident}", dependencies=[READ])
def get_incident(model: str, ident: str, state: StateDep) -> dict[str, Any]:
    """One incident with its history."""
    return _body(state, find_incident(state, model, ident))


@router.post("/v1/models/{model}/incidents/{ident}/acknowledge", dependencies=[WRITE], response_model=None)
def acknowledge_incident(model: str, ident: str, state: StateDep, request: Request,
                         by: Annotated[str, Query(max_length=200)] = "") -> dict[str, Any] | RedirectResponse:
    """Mark an open incident acknowledged (it stays active until it resolves); ``by`` goes in its history.

    The time recorded is data time, like the rest of the incident's history: the model's latest request.
    The incident page's button (a browser asking for HTML) is sent back to the page.
    """
    incident = find_incident(state, model, ident)
    try:
        last = state.store.status().model(model).last_ts
    except KeyError:
        last = None
    at = max(incident.updated_at, last or datetime.now(UTC))
    try:
        done = state.incidents.acknowledge(model, ident, at, by=by)
    except ConfigError as exc:  # removed between the two reads
        raise HTTPException(404, f"path.id: {exc}") from exc
    state.refresh_incident_gauge()
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(incident_link("", model, ident), status_code=303)
    return _body(state, done)


@router.post("/v1/incidents/check", dependencies=[WRITE])
async def check_incidents(state: StateDep, model: str | None = None) -> dict[str, Any]:
    """Run detection now (every model whose data moved since its last check, or only ``model``).

    Returns the changes notified: incidents opened, whose cause changed, or resolved.
    """
    changes = await run_in_threadpool(state.detect, None if model is None else [model])
    return {"changes": [_change(state, c) for c in changes], "skipped": dict(state.check_skipped)}
