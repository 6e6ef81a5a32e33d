"""The HTTP service: ingest and query API, dashboard pages, alerts on a schedule, Prometheus metrics.

Routes are thin: each parses and checks its input, calls the library (store, monitors, diagnosis,
report) and shapes the answer. Every route needs a bearer token except ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from mlsleuth._version import __version__
from mlsleuth.errors import ConfigError, InputError, MlsleuthError, ReadError, SchemaError
from mlsleuth.monitors import build_reference, parse_window, run_monitors, save_reference
from mlsleuth.schema import ChangeEvent, Lineage, parse_timestamp
from mlsleuth.server._alerts import DIAGNOSIS_SPAN, AlertEngine
from mlsleuth.server._charts import drift_heatmap, nan_to_none, plotly_js, series_chart, to_div
from mlsleuth.server._config import Scope, ServerConfig
from mlsleuth.server._metrics import Metrics
from mlsleuth.server._templates import render_page
from mlsleuth.server._views import drift_matrix, model_reference, reference_data_path
from mlsleuth.store import AppendResult, LocalStore, ModelStatus

__all__ = ["create_app"]

log = logging.getLogger("mlsleuth.server")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
TOKEN_COOKIE = "mlsleuth_token"

try:
    from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as _exc:  # pragma: no cover - the server extra installs them
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc


# ------------------------------------------------------------------------------------------------ body parsing


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {int(declared):,} bytes exceeds the server's limit of {limit:,} "
                                 "bytes (max_body_mb); send smaller batches")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the server's limit of {limit:,} bytes (max_body_mb); "
                                     "send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(body: bytes) -> Any:
    if not body.strip():
        raise HTTPException(422, "body: expected JSON, got an empty body")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc})") from exc


def _type_name(v: Any) -> str:
    return "number" if isinstance(v, int | float) and not isinstance(v, bool) else type(v).__name__


def _rows_table(rows: Any) -> pa.Table:
    """A JSON array of row objects as an Arrow table; errors name the field path (``body[3].score``)."""
    if isinstance(rows, dict) and isinstance(rows.get("rows"), list):
        rows = rows["rows"]
    if not isinstance(rows, list):
        raise HTTPException(422, f"body: expected a JSON array of row objects, got {_type_name(rows)}")
    if not rows:
        raise HTTPException(422, "body: expected at least one row, got an empty array")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise HTTPException(422, f"body[{i}]: expected an object of column values, got {_type_name(r)}")
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        # Find the first value whose type differs from the column's first one, to name it.
        first: dict[str, tuple[int, str]] = {}
        for i, r in enumerate(rows):
            for k, v in r.items():
                if v is None:
                    continue
                t = _type_name(v)
                if k not in first:
                    first[k] = (i, t)
                elif first[k][1] != t:
                    j, t0 = first[k]
                    raise HTTPException(422, f"body[{i}].{k}: expected a {t0} like body[{j}].{k}, got a {t}") from exc
        raise HTTPException(422, f"body: the rows do not form a table: {exc}") from exc


def _arrow_table(body: bytes) -> pa.Table:
    try:
        with ipc.open_stream(pa.BufferReader(body)) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise HTTPException(400, f"body: not an Arrow IPC stream ({exc})") from exc


def parse_table(body: bytes, content_type: str) -> pa.Table:
    """Rows from a JSON array (``application/json``) or an Arrow IPC stream body."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == ARROW_STREAM:
        table = _arrow_table(body)
        if table.num_rows == 0:
            raise HTTPException(422, "body: the Arrow stream holds no rows")
        return table
    if ctype in ("application/json", "", "text/json"):
        return _rows_table(_json_body(body))
    raise HTTPException(415, f"content-type: expected application/json or {ARROW_STREAM}, got {ctype!r}")


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
        self.write_lock = threading.Lock()
        self.diagnoses: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.diag_lock = threading.Lock()

    def check(self, token: str | None, needed: Scope, path: str) -> Scope:
        if not token:
            raise HTTPException(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        scope = None
        for known, s in self.config.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                scope = s
        if scope is None:
            raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not scope.allows(needed):
            raise HTTPException(403, f"this token has the {scope.value} scope; {path} needs {needed.value}")
        return scope

    def record(self, result: AppendResult, model: str, kind: str) -> None:
        self.metrics.inc("mlsleuth_ingested_rows_total", {"model": model, "kind": kind}, result.accepted)
        if result.quarantined:
            self.metrics.inc("mlsleuth_quarantined_rows_total", {"model": model, "kind": kind}, result.quarantined)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(TOKEN_COOKIE)


def _needs(scope: Scope) -> Any:
    def dep(request: Request) -> Scope:
        st: _State = request.app.state.mlsleuth
        return st.check(_token(request), scope, request.url.path)

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


def _span(status: ModelStatus, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """``[since, until)`` defaulting to the week up to the model's latest request."""
    last = status.last_ts or datetime.now(UTC)
    hi = until or last + timedelta(microseconds=1)
    lo = since or max(status.first_ts or hi - DIAGNOSIS_SPAN, hi - DIAGNOSIS_SPAN)
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
        code = 404 if isinstance(exc, ReadError) else 422 if isinstance(exc, SchemaError | ConfigError | InputError) \
            else 500
        return JSONResponse({"detail": str(exc)}, status_code=code)

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

    async def _ingest_table(request: Request, model: str | None) -> pa.Table:
        body = await read_body(request, config.max_body_bytes)
        table = parse_table(body, request.headers.get("content-type", ""))
        if model is not None and "model" not in table.column_names:
            table = table.append_column("model", pa.array([model] * table.num_rows, pa.string()))
        return table

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
        table = await _ingest_table(request, model)
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
        table = await _ingest_table(request, None)
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
        data = _json_body(await read_body(request, config.max_body_bytes))
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not data:
            raise HTTPException(422, "body: expected a non-empty JSON array of change events")
        events = []
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise HTTPException(422, f"body[{i}]: expected an event object, got {_type_name(obj)}")
            try:
                events.append(ChangeEvent.from_mapping(obj))
            except (InputError, ValueError, TypeError, KeyError) as exc:
                raise HTTPException(422, f"body[{i}]: {exc}") from exc
        with state.write_lock:
            result = state.store.add_events(events)
        state.record(result, "*", "events")
        return _result(result)

    @app.post("/v1/lineage", tags=["ingest"], dependencies=[WRITE])
    async def ingest_lineage(request: Request) -> dict[str, Any]:
        """Store lineage: a JSON object mapping each column to the columns or sources it is computed from."""
        data = _json_body(await read_body(request, config.max_body_bytes))
        if not isinstance(data, dict) or not data:
            raise HTTPException(422, "body: expected a non-empty JSON object mapping columns to their parents")
        for k, v in data.items():
            if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
                raise HTTPException(422, f"body.{k}: expected an array of parent names, got {_type_name(v)}")
        try:
            lineage = Lineage.from_mapping(data)
        except (InputError, ValueError) as exc:
            raise HTTPException(422, f"body: {exc}") from exc
        with state.write_lock:
            result = state.store.add_lineage(lineage)
        state.record(result, "*", "lineage")
        return _result(result)

    @app.post("/v1/models/{model}/reference", tags=["ingest"], dependencies=[WRITE])
    async def upload_reference(model: str, request: Request) -> dict[str, Any]:
        """Upload a model's reference (training) rows; they are profiled for monitors and kept for diagnosis."""
        table = await _ingest_table(request, None)

        def work() -> dict[str, Any]:
            ref = build_reference(table)
            with state.write_lock:
                path = save_reference(state.store.path, model, ref)
                pq.write_table(table, reference_data_path(state.store, model))
            return {"model": model, "rows": table.num_rows, "columns": len(ref.profile.columns), "path": str(path)}

        return await run_in_threadpool(work)

    # -------------------------------------------------------------------------------- queries

    @app.get("/v1/status", tags=["query"], dependencies=[READ])
    def status() -> dict[str, Any]:
        """What the store holds, per model."""
        s = state.store.status()
        return {"path": s.path, "rows": s.rows, "labels": s.labels, "quarantined": s.quarantined, "events": s.events,
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

        ``format`` picks the report: ``json`` (the diagnosis JSON of docs/contract.md), ``md`` or ``html`` (the
        post-mortem).
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
        from mlsleuth.diagnosis import diagnose

        whole = state.store.status()
        try:
            status = whole.model(model)
        except KeyError:
            raise HTTPException(404, f"path.model: no requests of model {model!r} in the store") from None
        lo, hi = _span(status, _ts(since, "since"), _ts(until, "until"))
        key = (model, lo, hi, status.rows, whole.labels, whole.events)
        with state.diag_lock:
            if key in state.diagnoses:
                state.diagnoses.move_to_end(key)
                return state.diagnoses[key], lo, hi
            ref_path = reference_data_path(state.store, model)
            model_file = ref_path.with_name("model.joblib")
            lineage = state.store.lineage()
            d = diagnose(state.store.read_log(model=model, since=lo, until=hi),
                         reference=ref_path if ref_path.exists() else None,
                         labels=state.store.sql("SELECT request_id, label FROM labels"),
                         events=state.store.events(), lineage=lineage if lineage.edges else None,
                         model=model_file if model_file.exists() else None)
            state.diagnoses[key] = d
            while len(state.diagnoses) > 16:
                state.diagnoses.popitem(last=False)
            return d, lo, hi

    @app.get("/static/plotly.min.js", tags=["dashboard"], dependencies=[READ], include_in_schema=False)
    def plotly() -> Response:
        """plotly.js from the plotly package (no CDN)."""
        return Response(plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/login", tags=["dashboard"], include_in_schema=False)
    def login(token: str, request: Request) -> RedirectResponse:
        """Check ``token`` and keep it in a cookie so a browser can open the pages."""
        state.check(token, Scope.READ, "/login")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp

    def _health(m: ModelStatus) -> str:
        firing = [k for k, s in state.alerts.states.items() if s.firing and s.last_alert is not None
                  and s.last_alert.model == m.name]
        if firing:
            return f"alerting ({len(firing)})"
        return "ok" if model_reference(state.store, m.name) is not None else "no reference"

    @app.get("/", tags=["dashboard"], response_class=HTMLResponse, dependencies=[READ])
    def overview() -> HTMLResponse:
        """The models and their health, and recent alerts."""
        s = state.store.status()
        models = [{"name": m.name, "versions": m.versions, "rows": m.rows, "first_ts": _short(m.first_ts),
                   "last_ts": _short(m.last_ts), "labelled": m.labelled_fraction, "health": _health(m)}
                  for m in s.models]
        return HTMLResponse(render_page("overview", models=models, alerts=state.alerts.alerts()[:20],
                                        store=s.path, events=s.events, quarantined=s.quarantined))

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
