"""Service routes: liveness (the one route without authentication), the OpenAPI spec and Prometheus metrics."""

from __future__ import annotations

from mlsleuth._version import __version__
from mlsleuth.server._state import READ, StateDep

__all__ = ["router"]

try:
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["service"])


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness; the only route without authentication."""
    return {"status": "ok", "version": __version__}


@router.get("/openapi.json", include_in_schema=False, dependencies=[READ])
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI spec of every route."""
    return JSONResponse(request.app.openapi())


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[READ])
def metrics(state: StateDep) -> PlainTextResponse:
    """Prometheus exposition: ingested rows, drift scores, null rates and alert states per model and column."""
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")
