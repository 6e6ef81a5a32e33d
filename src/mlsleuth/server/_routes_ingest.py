"""Ingest routes: prediction logs, labels, change events, lineage and model references (write scope).

Every body is read within ``max_body_mb`` and parsed and checked against the limits in a worker
thread; only a batch that passes every check reaches the store, in one atomic append.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlsleuth.errors import InputError
from mlsleuth.monitors import build_reference, save_reference
from mlsleuth.schema import ChangeEvent, Lineage
from mlsleuth.server._bodies import (
    check_event_year,
    check_model_name,
    check_years,
    json_body,
    parse_table,
    read_body,
    type_name,
)
from mlsleuth.server._state import WRITE, AppState, StateDep, append_result
from mlsleuth.server._views import reference_data_path
from mlsleuth.store import AppendResult

__all__ = ["router"]

try:
    from fastapi import APIRouter, HTTPException, Query, Request
    from starlette.concurrency import run_in_threadpool
except ImportError as _exc:  # pragma: no cover - the server extra installs them
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["ingest"], dependencies=[WRITE])


async def _table(state: AppState, request: Request, model: str | None, times: str | None) -> pa.Table:
    """The body's rows within the limits, ``model`` filled in where rows have none, names and times checked."""
    body = await read_body(request, state.config.max_body_bytes)
    ctype = request.headers.get("content-type", "")
    limits = state.config.limits

    def parse() -> pa.Table:  # off the event loop: a big body must not stall /health
        table = parse_table(body, ctype, limits)
        if model is not None and "model" not in table.column_names:
            table = table.append_column("model", pa.array([model] * table.num_rows, pa.string()))
        if "model" in table.column_names:
            for name in table.column("model").unique().to_pylist():
                if name is not None:
                    check_model_name(name, "body[].model")
        if times is not None:
            check_years(table, times, limits)
        return table

    return await run_in_threadpool(parse)


async def _json(state: AppState, request: Request) -> Any:
    body = await read_body(request, state.config.max_body_bytes)
    return await run_in_threadpool(json_body, body, state.config.limits)


async def _append(state: AppState, fn: Callable[..., AppendResult], *args: Any, **kwargs: Any) -> AppendResult:
    """One append under the write lock, in a worker thread."""
    def work() -> AppendResult:
        with state.write_lock:
            return fn(*args, **kwargs)

    return await run_in_threadpool(work)


@router.post("/v1/log")
async def ingest_log(request: Request, state: StateDep,
                     model: Annotated[str | None, Query(description="Model of rows without one.")] = None,
                     ) -> dict[str, Any]:
    """Store prediction-log rows: a JSON array of objects, or an Arrow IPC stream (the capture SDK's HttpSink).

    Rows that fail validation go to the store's quarantine; the answer counts them with reasons.
    """
    if model is not None:
        check_model_name(model, "query.model")
    table = await _table(state, request, model, "ts")
    if "ts" not in table.column_names:
        raise HTTPException(422, "body[].ts: every log row needs a 'ts' (ISO-8601 time); the rows have columns "
                                 f"{table.column_names[:20]}")
    result = await _append(state, state.store.append_log, table, source="http")
    names = table.column("model").unique().to_pylist() if "model" in table.column_names else ["_default"]
    state.record(result, str(names[0]) if len(names) == 1 else "*", "log")
    return append_result(result)


@router.post("/v1/labels")
async def ingest_labels(request: Request, state: StateDep) -> dict[str, Any]:
    """Store labels (``request_id``, ``label``, optional ``label_ts``): JSON rows or an Arrow IPC stream."""
    table = await _table(state, request, None, "label_ts")
    for col in ("request_id", "label"):
        if col not in table.column_names:
            raise HTTPException(422, f"body[].{col}: every label row needs a {col!r}; got columns "
                                     f"{table.column_names[:20]}")
    result = await _append(state, state.store.append_labels, table, source="http")
    state.record(result, "*", "labels")
    return append_result(result)


def _events(data: list[Any], state: AppState) -> list[ChangeEvent]:
    events = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise HTTPException(422, f"body[{i}]: expected an event object, got {type_name(obj)}")
        try:
            events.append(ChangeEvent.from_mapping(obj))
        except (InputError, ValueError, TypeError, KeyError) as exc:
            raise HTTPException(422, f"body[{i}]: {exc}") from exc
        check_event_year(events[-1].ts, state.config.limits, f"body[{i}].ts")
    return events


@router.post("/v1/events")
async def ingest_events(request: Request, state: StateDep) -> dict[str, Any]:
    """Store change events: a JSON array of ``{"id", "ts", "kind", "target", "description"}`` objects."""
    data = await _json(state, request)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise HTTPException(422, "body: expected a non-empty JSON array of change events")
    limit = state.config.limits.max_rows
    if len(data) > limit:
        raise HTTPException(413, f"body: {len(data):,} events exceed the limit of {limit:,} per request "
                                 "(limits.max_rows)")
    events = await run_in_threadpool(_events, data, state)
    result = await _append(state, state.store.add_events, events)
    state.record(result, "*", "events")
    return append_result(result)


def _lineage(data: Any) -> Lineage:
    if not isinstance(data, dict) or not data:
        raise HTTPException(422, "body: expected a non-empty JSON object mapping columns to their parents")
    for k, v in data.items():
        if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
            raise HTTPException(422, f"body.{k}: expected an array of parent names, got {type_name(v)}")
    try:
        return Lineage.from_mapping(data)
    except (InputError, ValueError) as exc:
        raise HTTPException(422, f"body: {exc}") from exc


@router.post("/v1/lineage")
async def ingest_lineage(request: Request, state: StateDep) -> dict[str, Any]:
    """Store lineage: a JSON object mapping each column to the columns or sources it is computed from."""
    lineage = await run_in_threadpool(_lineage, await _json(state, request))
    result = await _append(state, state.store.add_lineage, lineage)
    state.record(result, "*", "lineage")
    return append_result(result)


@router.post("/v1/models/{model}/reference")
async def upload_reference(model: str, request: Request, state: StateDep) -> dict[str, Any]:
    """Upload a model's reference (training) rows; they are profiled for monitors and kept for diagnosis."""
    check_model_name(model, "path.model")
    table = await _table(state, request, None, None)

    def work() -> dict[str, Any]:
        ref = build_reference(table)
        with state.write_lock:
            save_reference(state.store.path, model, ref)
            pq.write_table(table, reference_data_path(state.store, model))
        return {"model": model, "rows": table.num_rows, "columns": len(ref.profile.columns)}

    return await run_in_threadpool(work)
