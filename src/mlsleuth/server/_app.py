"""The HTTP service: ingest and query API, dashboard pages, alerts on a schedule, Prometheus metrics.

:func:`create_app` builds the state and includes one router per resource (service, ingest, query,
diagnosis, alerts, dashboard). Routes are thin: each parses and checks its input, calls the library
(store, monitors, diagnosis, report) and shapes the answer. Every route needs a bearer token (or a
browser session) except ``/health`` and the login form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from mlsleuth._version import __version__
from mlsleuth.errors import InputError, MlsleuthError, ReadError
from mlsleuth.server import (
    _routes_alerts,
    _routes_dashboard,
    _routes_diagnosis,
    _routes_incidents,
    _routes_ingest,
    _routes_query,
    _routes_service,
)
from mlsleuth.server._bodies import parse_table
from mlsleuth.server._config import ServerConfig
from mlsleuth.server._state import AppState, schedule

__all__ = ["create_app", "parse_table"]

log = logging.getLogger("mlsleuth.server")

try:
    from fastapi import FastAPI, Request, Response
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, RedirectResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as _exc:  # pragma: no cover - the server extra installs them
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc


def create_app(config: ServerConfig, *,
               notify: Callable[[str, Mapping[str, object]], None] | None = None) -> FastAPI:
    """The ASGI application of ``mlsleuth serve``.

    Parameters
    ----------
    config
        Store, tokens, limits, alert rules (see :class:`ServerConfig`).
    notify
        Replaces the webhook POST (``notify(url, payload)``) of alerts and incidents, for tests.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from fastapi.testclient import TestClient
    >>> from mlsleuth.server import Scope
    >>> app = create_app(ServerConfig(store=Path(tempfile.mkdtemp()) / "s", tokens={"t": Scope.READ}))
    >>> TestClient(app).get("/health").json()["status"]
    'ok'
    """
    state = AppState(config, notify)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if config.rules and config.alert_interval > 0:
            tasks.append(asyncio.create_task(schedule(state.evaluate, config.alert_interval, "alert evaluation")))
        if config.incidents.enabled:
            tasks.append(asyncio.create_task(schedule(state.detect, config.incidents.interval, "incident detection")))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="mlsleuth", version=__version__, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="Ingest prediction logs, labels, change events and lineage; monitor, alert and "
                              "diagnose production ML models. Send `Authorization: Bearer <token>`.")
    app.state.mlsleuth = state

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        paths = [".".join(str(p) for p in e.get("loc", ())) + f": {e.get('msg', '')}" for e in errs]
        return JSONResponse({"detail": "; ".join(paths), "errors": json.loads(json.dumps(errs, default=str))},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # A browser that opens a page without a session is sent to the login form, not shown JSON.
        if exc.status_code == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login", status_code=303)
        return await http_exception_handler(request, exc)

    @app.exception_handler(MlsleuthError)
    async def _library_error(request: Request, exc: MlsleuthError) -> JSONResponse:
        if isinstance(exc, InputError):
            # A user's mistake: say what, but not where the store keeps its files.
            code = 404 if isinstance(exc, ReadError) else 422
            log.info("mlsleuth: %s %s answered %d: %s", request.method, request.url.path, code, exc)
            return JSONResponse({"detail": _public_message(exc, state.store.path)}, status_code=code)
        return _internal_error(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)

    @app.middleware("http")
    async def _count(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        state.metrics.inc("mlsleuth_http_requests_total",
                          {"route": getattr(route, "path", "unmatched"), "code": str(response.status_code)})
        return response

    for module in (_routes_service, _routes_ingest, _routes_query, _routes_diagnosis, _routes_alerts,
                   _routes_incidents, _routes_dashboard):
        app.include_router(module.router)
    return app


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """A 500 whose body names no file, path or SQL: the detail goes to the server log under an id."""
    ref = secrets.token_hex(6)
    log.error("mlsleuth: %s %s failed (error id %s)", request.method, request.url.path, ref,
              exc_info=(type(exc), exc, exc.__traceback__))
    return JSONResponse({"detail": f"internal error; the server log has the details under error id {ref}"},
                        status_code=500)


def _public_message(exc: InputError, store: str | Path) -> str:
    """``exc``'s message without server paths: the store folder and the file at fault are cut to names."""
    text = str(exc)
    for p in sorted({str(store), str(Path(store).resolve()), *([exc.path] if exc.path else [])}, key=len,
                    reverse=True):
        if p and p in text:
            text = text.replace(p, Path(p).name if p == exc.path else "<store>")
    return text

