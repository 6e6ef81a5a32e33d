"""Alert routes: evaluate the rules now (write scope) and list the alerts (read scope)."""

from __future__ import annotations

from typing import Any

from mlsleuth.server._state import READ, WRITE, StateDep

__all__ = ["router"]

try:
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool
except ImportError as _exc:  # pragma: no cover - the server extra installs them
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["alerts"])


@router.post("/v1/alerts/evaluate", dependencies=[WRITE])
async def evaluate_alerts(state: StateDep) -> dict[str, Any]:
    """Evaluate every alert rule now; returns the alerts sent (after de-duplication and cooldown)."""
    sent = await run_in_threadpool(state.evaluate)
    return {"sent": [a.to_dict() for a in sent], "skipped": dict(state.alerts.status.skipped)}


@router.get("/v1/alerts", dependencies=[READ])
def list_alerts(state: StateDep) -> dict[str, Any]:
    """The latest alert of each rule and column, and which are firing."""
    return {"alerts": [a.to_dict() for a in state.alerts.alerts()],
            "firing": [{"rule": r, "column": c} for (r, c), s in state.alerts.states.items() if s.firing]}
