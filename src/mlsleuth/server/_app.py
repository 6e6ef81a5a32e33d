"""The HTTP service: ingest and query API, dashboard pages, alerts on a schedule, Prometheus metrics.

Routes are thin: each parses and checks its input, calls the library (store, monitors, diagnosis,
report) and shapes the answer. Every route needs a bearer token except ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlsleuth._version import __version__
from mlsleuth.errors import InputError, MlsleuthError, ReadError
from mlsleuth.monitors import build_reference, parse_window, run_monitors, save_reference
from mlsleuth.schema import ChangeEvent, Lineage, parse_timestamp
from mlsleuth.server._alerts import DIAGNOSIS_SPAN, AlertEngine
from mlsleuth.server._auth import SESSION_COOKIE, Authenticator
from mlsleuth.server._bodies import (
    check_event_year,
    check_model_name,
    check_years,
    json_body,
    parse_table,
    read_body,
    type_name,
)
from mlsleuth.server._charts import drift_heatmap, nan_to_none, plotly_js, series_chart, to_div
from mlsleuth.server._config import Scope, ServerConfig
from mlsleuth.server._metrics import Metrics
from mlsleuth.server._templates import render_page
from mlsleuth.server._views import drift_matrix, model_reference, reference_data_path
from mlsleuth.store import AppendResult, LocalStore, ModelStatus

__all__ = ["create_app", "parse_table"]

log = logging.getLogger("mlsleuth.server")

#: The largest login form accepted.
_LOGIN_BODY = 4096

try:
    from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as _exc:  # pragma: no cover - the server extra installs them
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc


# ------------------------------------------------------------------------------------------------ state


class _State:
    """What the app holds: the store, the alert engine, metrics and a small diagnosis cache."""

    def __init__(self, config: ServerConfig, notify: Callable[[str, Mapping[str, object]], None] | None) -> None:
        self.config = config
        # An existing store is opened as it is, on the engine the config (serve --engine) names, else the store's.
        self.store = LocalStore.init(config.store, engine=config.engine, spark_master=config.spark_master)
        self.metrics = Metrics()
        self.alerts = AlertEngine(self.store, config.rules, config.webhooks, base_url=config.public_url,
                                  notify=notify)
        self.auth = Authenticator(config.tokens, config.auth, config.public_url)
        self.write_lock = threading.Lock()
        self.diagnoses: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.diag_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self.cache_lock = threading.Lock()

    def diagnosis(self, key: tuple[Any, ...], model: str, lo: datetime, hi: datetime) -> Any:
        """The diagnosis of ``model`` over ``[lo, hi)``, cached by ``key`` (which changes when the store does).

        One lock per key: two requests for the same diagnosis compute it once, and diagnoses of
        other models or spans run side by side. The scoring model, if any, is the one the
        operator's config names for ``model``; nothing in the store is ever unpickled.
        """
        from mlsleuth.diagnosis import diagnose_store

        with self.cache_lock:
            if key in self.diagnoses:
                self.diagnoses.move_to_end(key)
                return self.diagnoses[key]
            lock = self.diag_locks.setdefault(key, threading.Lock())
        with lock:
            with self.cache_lock:
                if key in self.diagnoses:
                    return self.diagnoses[key]
            ref_path = reference_data_path(self.store, model)
            d = diagnose_store(self.store, model_name=model, reference=ref_path if ref_path.exists() else None,
                               model=self.config.models.get(model), since=lo, until=hi)
            with self.cache_lock:
                self.diagnoses[key] = d
                while len(self.diagnoses) > 16:
                    self.diagnoses.popitem(last=False)
                self.diag_locks.pop(key, None)
            return d

    def record(self, result: AppendResult, model: str, kind: str) -> None:
        self.metrics.inc("mlsleuth_ingested_rows_total", {"model": model, "kind": kind}, result.accepted)
        if result.quarantined:
            self.metrics.inc("mlsleuth_quarantined_rows_total", {"model": model, "kind": kind}, result.quarantined)


def _needs(scope: Scope) -> Any:
    def dep(request: Request) -> Scope:
        st: _State = request.app.state.mlsleuth
        return st.auth.check(request, scope)

    return Depends(dep)


READ = _needs(Scope.READ)
WRITE = _needs(Scope.WRITE)


def _result(r: AppendResult) -> dict[str, Any]:
    return {"accepted": r.accepted, "quarantined": r.quarantined,
            "reasons": [{"reason": k, "rows": n} for k, n in r.reasons]}


def _ts(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value)
    except (InputError, ValueError, TypeError) as exc:
        raise HTTPException(422, f"query.{name}: expected an ISO-8601 time, got {value!r}") from exc


def _window(value: str, name: str = "window") -> int:
    try:
        return parse_window(value)
    except (InputError, ValueError) as exc:
        raise HTTPException(422, f"query.{name}: expected a duration such as 15min, 1h or 1d, got {value!r}") from exc


def _model_status(st: _State, model: str) -> ModelStatus:
    try:
        return st.store.status().model(model)
    except KeyError:
        raise HTTPException(404, f"path.model: no requests of model {model!r} in the store") from None


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _shift(t: datetime, by: timedelta) -> datetime:
    """``t + by``, held at the ends of the calendar instead of overflowing (a stored year-9999 time)."""
    try:
        return t + by
    except OverflowError:
        return _LATEST if by > timedelta(0) else _EARLIEST


def _span(status: ModelStatus, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """``[since, until)`` defaulting to the week up to the model's latest request."""
    last = status.last_ts or datetime.now(UTC)
    hi = until or _shift(last, timedelta(microseconds=1))
    week = _shift(hi, -DIAGNOSIS_SPAN)
    lo = since or max(status.first_ts or week, week)
    return lo, hi


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _stats_sql(model: str, seconds: int, lo: datetime, hi: datetime, columns: set[str]) -> str:
    """Per-window volume, score quantiles, latency and rates; columns absent from the log are left out."""
    parts = ["count(*) AS requests"]
    if "score" in columns:
        parts += [f"quantile_cont(score, {q}) AS score_p{int(q * 100)}" for q in (0.1, 0.5, 0.9)]
    if "latency_ms" in columns:
        parts += ["quantile_cont(latency_ms, 0.5) AS latency_p50", "quantile_cont(latency_ms, 0.99) AS latency_p99"]
    if "prediction" in columns:
        parts.append("avg(TRY_CAST(prediction AS DOUBLE)) AS predicted_positive_rate")
    if "error" in columns:
        parts.append("avg(CASE WHEN error IS NULL OR error = '' THEN 0.0 ELSE 1.0 END) AS error_rate")
    label = "avg(TRY_CAST(l.label AS DOUBLE)) AS label_positive_rate"
    join = ""
    if "request_id" in columns:
        parts.append(label)
        join = " LEFT JOIN labels l ON l.request_id = g.request_id"
    return (f"SELECT time_bucket(INTERVAL '{seconds} seconds', g.ts) AS window_start, {', '.join(parts)} "
            f"FROM log g{join} WHERE g.model = {_lit(model)} AND g.ts >= {_lit(lo.isoformat())}::TIMESTAMPTZ "
            f"AND g.ts < {_lit(hi.isoformat())}::TIMESTAMPTZ GROUP BY 1 ORDER BY 1")


# ------------------------------------------------------------------------------------------------ the app


def create_app(config: ServerConfig, *,
               notify: Callable[[str, Mapping[str, object]], None] | None = None) -> FastAPI:
    """The ASGI application of ``mlsleuth serve``.

    Parameters
    ----------
    config
        Store, tokens, limits, alert rules (see :class:`ServerConfig`).
    notify
        Replaces the webhook POST (``notify(url, payload)``), for tests.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from fastapi.testclient import TestClient
    >>> app = create_app(ServerConfig(store=Path(tempfile.mkdtemp()) / "s", tokens={"t": Scope.READ}))
    >>> TestClient(app).get("/health").json()["status"]
    'ok'
    """
    state = _State(config, notify)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = None
        if config.rules and config.alert_interval > 0:
            task = asyncio.create_task(_schedule(state, config.alert_interval))
        try:
            yield
        finally:
            if task is not None:
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

    # -------------------------------------------------------------------------------- health, metrics, openapi

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness; the only route without authentication."""
        return {"status": "ok", "version": __version__}

    @app.get("/openapi.json", tags=["service"], include_in_schema=False, dependencies=[READ])
    def openapi() -> JSONResponse:
        """The OpenAPI spec of every route."""
        return JSONResponse(app.openapi())

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse, dependencies=[READ])
    def metrics() -> PlainTextResponse:
        """Prometheus exposition: ingested rows, drift scores, null rates and alert states per model and column."""
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    # -------------------------------------------------------------------------------- ingest

    async def _ingest_table(request: Request, model: str | None, times: str | None) -> pa.Table:
        body = await read_body(request, config.max_body_bytes)
        ctype = request.headers.get("content-type", "")

        def parse() -> pa.Table:  # off the event loop: a big body must not stall /health
            table = parse_table(body, ctype, config.limits)
            if model is not None and "model" not in table.column_names:
                table = table.append_column("model", pa.array([model] * table.num_rows, pa.string()))
            if "model" in table.column_names:
                for name in table.column("model").unique().to_pylist():
                    if name is not None:
                        check_model_name(name, "body[].model")
            if times is not None:
                check_years(table, times, config.limits)
            return table

        return await run_in_threadpool(parse)

    async def _json(request: Request) -> Any:
        body = await read_body(request, config.max_body_bytes)
        return await run_in_threadpool(json_body, body, config.limits)

    def _append(fn: Callable[..., AppendResult], table: pa.Table, source: str) -> AppendResult:
        with state.write_lock:
            return fn(table, source=source)

    @app.post("/v1/log", tags=["ingest"], dependencies=[WRITE])
    async def ingest_log(request: Request,
                         model: Annotated[str | None, Query(description="Model of rows without one.")] = None,
                         ) -> dict[str, Any]:
        """Store prediction-log rows: a JSON array of objects, or an Arrow IPC stream (the capture SDK's HttpSink).

        Rows that fail validation go to the store's quarantine; the answer counts them with reasons.
        """
        if model is not None:
            check_model_name(model, "query.model")
        table = await _ingest_table(request, model, "ts")
        if "ts" not in table.column_names:
            raise HTTPException(422, "body[].ts: every log row needs a 'ts' (ISO-8601 time); the rows have columns "
                                     f"{table.column_names[:20]}")
        result = await run_in_threadpool(_append, state.store.append_log, table, "http")
        names = table.column("model").unique().to_pylist() if "model" in table.column_names else ["_default"]
        state.record(result, str(names[0]) if len(names) == 1 else "*", "log")
        return _result(result)

    @app.post("/v1/labels", tags=["ingest"], dependencies=[WRITE])
    async def ingest_labels(request: Request) -> dict[str, Any]:
        """Store labels (``request_id``, ``label``, optional ``label_ts``): JSON rows or an Arrow IPC stream."""
        table = await _ingest_table(request, None, "label_ts")
        for col in ("request_id", "label"):
            if col not in table.column_names:
                raise HTTPException(422, f"body[].{col}: every label row needs a {col!r}; got columns "
                                         f"{table.column_names[:20]}")
        result = await run_in_threadpool(_append, state.store.append_labels, table, "http")
        state.record(result, "*", "labels")
        return _result(result)

    @app.post("/v1/events", tags=["ingest"], dependencies=[WRITE])
    async def ingest_events(request: Request) -> dict[str, Any]:
        """Store change events: a JSON array of ``{"id", "ts", "kind", "target", "description"}`` objects."""
        data = await _json(request)
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not data:
            raise HTTPException(422, "body: expected a non-empty JSON array of change events")
        if len(data) > config.limits.max_rows:
            raise HTTPException(413, f"body: {len(data):,} events exceed the limit of {config.limits.max_rows:,} "
                                     "per request (limits.max_rows)")

        def work() -> AppendResult:
            events = []
            for i, obj in enumerate(data):
                if not isinstance(obj, dict):
                    raise HTTPException(422, f"body[{i}]: expected an event object, got {type_name(obj)}")
                try:
                    events.append(ChangeEvent.from_mapping(obj))
                except (InputError, ValueError, TypeError, KeyError) as exc:
                    raise HTTPException(422, f"body[{i}]: {exc}") from exc
                check_event_year(events[-1].ts, config.limits, f"body[{i}].ts")
            with state.write_lock:
                return state.store.add_events(events)

        result = await run_in_threadpool(work)
        state.record(result, "*", "events")
        return _result(result)

    @app.post("/v1/lineage", tags=["ingest"], dependencies=[WRITE])
    async def ingest_lineage(request: Request) -> dict[str, Any]:
        """Store lineage: a JSON object mapping each column to the columns or sources it is computed from."""
        data = await _json(request)
        if not isinstance(data, dict) or not data:
            raise HTTPException(422, "body: expected a non-empty JSON object mapping columns to their parents")
        for k, v in data.items():
            if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
                raise HTTPException(422, f"body.{k}: expected an array of parent names, got {type_name(v)}")
        try:
            lineage = Lineage.from_mapping(data)
        except (InputError, ValueError) as exc:
            raise HTTPException(422, f"body: {exc}") from exc

        def work() -> AppendResult:
            with state.write_lock:
                return state.store.add_lineage(lineage)

        result = await run_in_threadpool(work)
        state.record(result, "*", "lineage")
        return _result(result)

    @app.post("/v1/models/{model}/reference", tags=["ingest"], dependencies=[WRITE])
    async def upload_reference(model: str, request: Request) -> dict[str, Any]:
        """Upload a model's reference (training) rows; they are profiled for monitors and kept for diagnosis."""
        check_model_name(model, "path.model")
        table = await _ingest_table(request, None, None)

        def work() -> dict[str, Any]:
            ref = build_reference(table)
            with state.write_lock:
                save_reference(state.store.path, model, ref)
                pq.write_table(table, reference_data_path(state.store, model))
            return {"model": model, "rows": table.num_rows, "columns": len(ref.profile.columns)}

        return await run_in_threadpool(work)

    # -------------------------------------------------------------------------------- queries

    @app.get("/v1/status", tags=["query"], dependencies=[READ])
    def status() -> dict[str, Any]:
        """What the store holds, per model."""
        s = state.store.status()
        return {"rows": s.rows, "labels": s.labels, "quarantined": s.quarantined, "events": s.events,
                "files": s.files, "bytes": s.bytes,
                "models": [{"name": m.name, "versions": list(m.versions), "rows": m.rows,
                            "first_ts": m.first_ts.isoformat() if m.first_ts else None,
                            "last_ts": m.last_ts.isoformat() if m.last_ts else None,
                            "last_request_id": m.last_request_id, "labelled_fraction": m.labelled_fraction}
                           for m in s.models]}

    @app.get("/v1/log", tags=["query"], dependencies=[READ])
    def read_log(model: str | None = None, since: str | None = None, until: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> dict[str, Any]:
        """Stored log rows of a model and time window (``[since, until)``), oldest first, at most ``limit``."""
        table = state.store.read_log(model=model, since=_ts(since, "since"), until=_ts(until, "until"))
        rows = table.slice(0, limit).to_pylist()
        return {"rows": json.loads(json.dumps(rows, default=_jsonable)), "total": table.num_rows}

    @app.get("/v1/events", tags=["query"], dependencies=[READ])
    def list_events(since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
        """Change events in ``[since, until)``."""
        return [e.to_dict() for e in state.store.events(_ts(since, "since"), _ts(until, "until"))]

    @app.get("/v1/models/{model}/monitors", tags=["query"], dependencies=[READ])
    def monitors(model: str, window: str = "1h", since: str | None = None, until: str | None = None,
                 segment: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
        """Run every monitor over windows of the model's requests against its stored reference."""
        ref = model_reference(state.store, model)
        if ref is None:
            raise HTTPException(404, f"path.model: no reference stored for {model!r}; upload one to "
                                     f"/v1/models/{model}/reference")
        report = run_monitors(state.store, ref, window=_window(window), segment=tuple(segment or ()), model=model,
                              since=_ts(since, "since"), until=_ts(until, "until"))
        return report.to_dict()

    @app.get("/v1/models/{model}/diagnosis", tags=["query"], dependencies=[READ])
    def diagnosis(model: str, since: str | None = None, until: str | None = None,
                  format: Annotated[str, Query(pattern="^(json|md|html)$")] = "json") -> Response:
        """Diagnose the model over ``[since, until)`` (default: the week up to its latest request).

        ``format`` picks the report: ``json`` (CONTRACT.md section 3), ``md`` or ``html`` (the post-mortem).
        """
        from mlsleuth.report import render

        d, _, _ = _diagnose(model, since, until)
        media = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html"}[format]
        return Response(render(d, format), media_type=media)

    @app.get("/v1/models/{model}/compare", tags=["query"], dependencies=[READ])
    def compare_versions(model: str, a: str, b: str, by: str = "model_version", since: str | None = None,
                         until: str | None = None,
                         format: Annotated[str, Query(pattern="^(json|md|html)$")] = "json") -> Response:
        """Compare two versions' logged traffic (A/B split or shadow): rates with tests, power, segments.

        Only logged versions are compared: the server never loads model files sent over HTTP.
        """
        from mlsleuth.replay import Selection
        from mlsleuth.replay import compare as run_compare
        from mlsleuth.report import render

        _model_status(state, model)
        sel = Selection(since=_ts(since, "since"), until=_ts(until, "until"), model=model)
        labels = state.store.sql("SELECT request_id, label FROM labels")
        result = run_compare(state.store, a=a, b=b, by=by, selection=sel, labels=labels if labels.num_rows else None)
        media = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html"}[format]
        return Response(render(result, format), media_type=media)

    @app.post("/v1/alerts/evaluate", tags=["alerts"], dependencies=[WRITE])
    async def evaluate_alerts() -> dict[str, Any]:
        """Evaluate every alert rule now; returns the alerts sent (after de-duplication and cooldown)."""
        sent = await run_in_threadpool(_evaluate, state)
        return {"sent": [a.to_dict() for a in sent], "skipped": dict(state.alerts.status.skipped)}

    @app.get("/v1/alerts", tags=["alerts"], dependencies=[READ])
    def list_alerts() -> dict[str, Any]:
        """The latest alert of each rule and column, and which are firing."""
        return {"alerts": [a.to_dict() for a in state.alerts.alerts()],
                "firing": [{"rule": r, "column": c} for (r, c), s in state.alerts.states.items() if s.firing]}

    # -------------------------------------------------------------------------------- dashboard

    def _diagnose(model: str, since: str | None, until: str | None) -> tuple[Any, datetime, datetime]:
        whole = state.store.status()
        try:
            status = whole.model(model)
        except KeyError:
            raise HTTPException(404, f"path.model: no requests of model {model!r} in the store") from None
        lo, hi = _span(status, _ts(since, "since"), _ts(until, "until"))
        key = (model, lo, hi, status.rows, whole.labels, whole.events)
        return state.diagnosis(key, model, lo, hi), lo, hi

    @app.get("/static/plotly.min.js", tags=["dashboard"], dependencies=[READ], include_in_schema=False)
    def plotly() -> Response:
        """plotly.js from the plotly package (no CDN)."""
        return Response(plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/login", tags=["dashboard"], response_class=HTMLResponse, include_in_schema=False)
    def login_form() -> HTMLResponse:
        """The login form; it POSTs the token, so the token is never in a URL (nor a log of URLs)."""
        return HTMLResponse(render_page("login", message=""), headers={"Cache-Control": "no-store"})

    @app.post("/login", tags=["dashboard"], include_in_schema=False)
    async def login(request: Request) -> Response:
        """Check the form's token and open a session: the cookie holds a random id, never the token."""
        from urllib.parse import parse_qs

        auth = state.auth
        auth.throttle(request)
        if not auth.same_origin(request):
            raise HTTPException(403, "the login form must be posted from this server's /login page")
        body = await read_body(request, _LOGIN_BODY)
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        scope = auth.token_scope(token) if token else None
        if scope is None:
            auth.failed(request)
            return HTMLResponse(render_page("login", message="Unknown token."), status_code=401,
                                headers={"Cache-Control": "no-store"})
        auth.close_session(request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(SESSION_COOKIE, auth.open_session(scope), max_age=int(config.auth.session_seconds),
                        httponly=True, samesite="strict", secure=auth.secure_cookie(request), path="/")
        return resp

    @app.post("/logout", tags=["dashboard"], include_in_schema=False)
    def logout(request: Request) -> RedirectResponse:
        """Close the browser's session."""
        state.auth.close_session(request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    def _health(m: ModelStatus) -> str:
        firing = [k for k, s in state.alerts.states.items() if s.firing and s.last_alert is not None
                  and s.last_alert.model == m.name]
        if firing:
            return f"alerting ({len(firing)})"
        try:
            return "ok" if model_reference(state.store, m.name) is not None else "no reference"
        except InputError:  # a name stored before names were checked: it must not break the page for others
            return "unusable name"

    @app.get("/", tags=["dashboard"], response_class=HTMLResponse, dependencies=[READ])
    def overview() -> HTMLResponse:
        """The models and their health, and recent alerts."""
        s = state.store.status()
        models = [{"name": m.name, "versions": m.versions, "rows": m.rows, "first_ts": _short(m.first_ts),
                   "last_ts": _short(m.last_ts), "labelled": m.labelled_fraction, "health": _health(m)}
                  for m in s.models]
        return HTMLResponse(render_page("overview", models=models, alerts=state.alerts.alerts()[:20],
                                        events=s.events, quarantined=s.quarantined))

    @app.get("/alerts", tags=["dashboard"], response_class=HTMLResponse, dependencies=[READ])
    def alerts_page() -> HTMLResponse:
        """Alerts and rules."""
        states = {r: "firing" for (r, _), s in state.alerts.states.items() if s.firing}
        return HTMLResponse(render_page("alerts", alerts=state.alerts.alerts(), rules=config.rules, states=states))

    @app.get("/models/{model}", tags=["dashboard"], response_class=HTMLResponse, dependencies=[READ])
    def model_page(model: str, window: str = "1h", since: str | None = None,
                   until: str | None = None) -> HTMLResponse:
        """A model's monitors over time: drift heat map, scores, volume, latency, rates; change events marked."""
        status = _model_status(state, model)
        seconds = _window(window)
        lo, hi = _span(status, _ts(since, "since"), _ts(until, "until"))
        events = state.store.events(lo, hi)
        columns = set(state.store.sql("SELECT * FROM log LIMIT 0").column_names)
        stats = state.store.sql(_stats_sql(model, seconds, lo, hi, columns))
        charts = []
        ref = model_reference(state.store, model)
        if ref is not None:
            m = drift_matrix(state.store, ref, model, window=timedelta(seconds=seconds), since=lo, until=hi)
            charts.append(to_div(drift_heatmap(m, events, "Drift vs training (Jensen-Shannon distance)"), "drift"))
        charts.append(to_div(series_chart(stats, "window_start", [("score_p10", "p10"), ("score_p50", "median"),
                                                                  ("score_p90", "p90")], events,
                                          "Score distribution"), "scores"))
        charts.append(to_div(series_chart(stats, "window_start", [("predicted_positive_rate", "predicted positive"),
                                                                  ("label_positive_rate", "labelled positive"),
                                                                  ("error_rate", "errors")], events,
                                          "Rates (performance)"), "rates"))
        charts.append(to_div(series_chart(stats, "window_start", [("requests", "requests")], events, "Volume",
                                          kind="bar"), "volume"))
        charts.append(to_div(series_chart(stats, "window_start", [("latency_p50", "p50"), ("latency_p99", "p99")],
                                          events, "Latency", yaxis_title="ms"), "latency"))
        from urllib.parse import quote, urlencode

        diag_url = f"/models/{quote(model)}/incident?" + urlencode({"since": lo.isoformat(), "until": hi.isoformat()})
        alerts = [a for a in state.alerts.alerts() if a.model == model]
        return HTMLResponse(render_page(
            "model", model=model, status=status, first=_short(status.first_ts), last=_short(status.last_ts),
            since=_short(lo), until=_short(hi), window=window,
            charts=charts, events=events, alerts=alerts, has_reference=ref is not None, diagnose_url=diag_url))

    @app.get("/models/{model}/incident", tags=["dashboard"], response_class=HTMLResponse, dependencies=[READ])
    def incident_page(model: str, since: str | None = None, until: str | None = None) -> HTMLResponse:
        """The diagnosis: triage, layers, ranked hypotheses with evidence, runbook; post-mortem export links."""
        from urllib.parse import quote, urlencode

        d, lo, hi = _diagnose(model, since, until)
        charts = []
        ref = model_reference(state.store, model)
        if d.top is not None and ref is not None:
            culprits = [c for c in (*d.top.features, *d.top.inputs)]
            m = drift_matrix(state.store, ref, model, window=timedelta(hours=1), since=lo, until=hi)
            rows = [i for i, c in enumerate(m.columns) if c in culprits]
            if rows:
                sub = pa.table({"window_start": pa.array(m.starts, pa.timestamp("us", tz="UTC")),
                                **{m.columns[i]: pa.array(nan_to_none(m.drift[i]), pa.float64()) for i in rows}})
                charts.append(to_div(series_chart(sub, "window_start", [(m.columns[i], m.columns[i]) for i in rows],
                                                  state.store.events(lo, hi), "Drift of the culprit columns"),
                                     "culprit-drift"))
        export = f"/v1/models/{quote(model)}/diagnosis?" + urlencode({"since": lo.isoformat(),
                                                                       "until": hi.isoformat()})
        return HTMLResponse(render_page("incident", model=model, d=d, tri=dict(d.triage), since=_short(lo),
                                        until=_short(hi), charts=charts, export_url=export))

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


def _short(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t is not None else ""


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return io.BytesIO(v).getvalue().hex()
    return str(v)


def _evaluate(state: _State) -> tuple[Any, ...]:
    sent = state.alerts.evaluate()
    m = state.metrics
    m.inc("mlsleuth_alert_evaluations_total", {})
    m.clear("mlsleuth_alert_firing")
    for (rule, column), s in state.alerts.states.items():
        m.set("mlsleuth_alert_firing", {"rule": rule, "column": column}, 1.0 if s.firing else 0.0)
    for a in sent:
        m.inc("mlsleuth_alerts_sent_total", {"rule": a.rule, "column": a.column})
    _refresh_gauges(state)
    return sent


def _refresh_gauges(state: _State) -> None:
    """Drift scores and null rates of the latest complete window of each model with alert rules."""
    for model in sorted({r.model for r in state.config.rules}):
        ref = model_reference(state.store, model)
        try:
            status = state.store.status().model(model)
        except KeyError:
            continue
        if ref is None or status.last_ts is None:
            continue
        window = min(r.window for r in state.config.rules if r.model == model)
        end = status.last_ts
        mtx = drift_matrix(state.store, ref, model, window=window, since=end - 3 * window, until=end)
        if not mtx.starts:
            continue
        j = len(mtx.starts) - 1
        state.metrics.clear("mlsleuth_drift_score", model=model)
        state.metrics.clear("mlsleuth_null_rate", model=model)
        state.metrics.set("mlsleuth_window_requests", {"model": model}, float(mtx.rows[j]))
        for i, c in enumerate(mtx.columns):
            if math.isfinite(mtx.drift[i, j]):
                state.metrics.set("mlsleuth_drift_score", {"model": model, "column": c}, mtx.drift[i, j])
            if math.isfinite(mtx.null_rate[i, j]):
                state.metrics.set("mlsleuth_null_rate", {"model": model, "column": c}, mtx.null_rate[i, j])


async def _schedule(state: _State, interval: float) -> None:
    """Evaluate the alert rules every ``interval`` seconds until cancelled; failures are logged, not raised."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(_evaluate, state)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the schedule alive; the failure is in the log
            log.exception("mlsleuth: alert evaluation failed")
