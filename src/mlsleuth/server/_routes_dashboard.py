"""Dashboard routes: the browser login, the pages (overview, incidents, alerts, a model's monitors, its diagnosis) and
plotly.js.

The pages need the read scope, through a bearer token or the session cookie that ``POST /login``
opens; ``GET /login`` (the form), ``POST /login`` and ``POST /logout`` are open.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, quote, urlencode

import pyarrow as pa

from mlsleuth.errors import InputError
from mlsleuth.server._auth import SESSION_COOKIE
from mlsleuth.server._bodies import read_body
from mlsleuth.server._charts import drift_heatmap, nan_to_none, plotly_js, series_chart, timeline_chart, to_div
from mlsleuth.server._routes_diagnosis import diagnose_span
from mlsleuth.server._routes_incidents import find_incident
from mlsleuth.server._state import (
    READ,
    AppState,
    RangeDep,
    StateDep,
    TimeRange,
    model_status,
    parse_window_param,
    short,
    span,
)
from mlsleuth.server._templates import render_page
from mlsleuth.server._views import drift_matrix, model_reference
from mlsleuth.store import ModelStatus
from mlsleuth.store._engine import quote_literal

__all__ = ["router"]

#: The largest login form accepted.
_LOGIN_BODY = 4096

try:
    from fastapi import APIRouter, HTTPException, Request, Response
    from fastapi.responses import HTMLResponse, RedirectResponse
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc

router = APIRouter(tags=["dashboard"])

_NO_STORE = {"Cache-Control": "no-store"}


# ------------------------------------------------------------------------------------------------ login


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form() -> HTMLResponse:
    """The login form; it POSTs the token, so the token is never in a URL (nor a log of URLs)."""
    return HTMLResponse(render_page("login", message=""), headers=_NO_STORE)


@router.post("/login", include_in_schema=False)
async def login(request: Request, state: StateDep) -> Response:
    """Check the form's token and open a session: the cookie holds a random id, never the token."""
    auth = state.auth
    auth.throttle(request)
    if not auth.same_origin(request):
        raise HTTPException(403, "the login form must be posted from this server's /login page")
    body = await read_body(request, _LOGIN_BODY)
    token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
    scope = auth.token_scope(token) if token else None
    if scope is None:
        auth.failed(request)
        return HTMLResponse(render_page("login", message="Unknown token."), status_code=401, headers=_NO_STORE)
    auth.close_session(request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, auth.open_session(scope), max_age=int(state.config.auth.session_seconds),
                    httponly=True, samesite="strict", secure=auth.secure_cookie(request), path="/")
    return resp


@router.post("/logout", include_in_schema=False)
def logout(request: Request, state: StateDep) -> RedirectResponse:
    """Close the browser's session."""
    state.auth.close_session(request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


# ------------------------------------------------------------------------------------------------ pages


@router.get("/static/plotly.min.js", dependencies=[READ], include_in_schema=False)
def plotly() -> Response:
    """plotly.js from the plotly package (no CDN)."""
    return Response(plotly_js(), media_type="application/javascript",
                    headers={"Cache-Control": "private, max-age=86400"})


def _health(state: AppState, m: ModelStatus) -> str:
    firing = [k for k, s in state.alerts.states.items() if s.firing and s.last_alert is not None
              and s.last_alert.model == m.name]
    if firing:
        return f"alerting ({len(firing)})"
    try:
        return "ok" if model_reference(state.store, m.name) is not None else "no reference"
    except InputError:  # a name stored before names were checked: it must not break the page for others
        return "unusable name"


@router.get("/", response_class=HTMLResponse, dependencies=[READ])
def overview(state: StateDep) -> HTMLResponse:
    """The models and their health, and recent alerts."""
    s = state.store.status()
    models = [{"name": m.name, "versions": m.versions, "rows": m.rows, "first_ts": short(m.first_ts),
               "last_ts": short(m.last_ts), "labelled": m.labelled_fraction, "health": _health(state, m)}
              for m in s.models]
    active = [i for i in state.incidents.log.all() if i.is_active]
    return HTMLResponse(render_page("overview", models=models, alerts=state.alerts.alerts()[:20],
                                    open_incidents=active, when=short, events=s.events, quarantined=s.quarantined))


@router.get("/incidents", response_class=HTMLResponse, dependencies=[READ])
def incidents_page(state: StateDep) -> HTMLResponse:
    """Every incident, most recently opened first."""
    interval = state.config.incidents.interval if state.config.incidents.enabled else None
    return HTMLResponse(render_page("incidents", incidents=state.incidents.log.all(), when=short,
                                    interval=None if interval is None else f"{interval:g}"))


@router.get("/models/{model}/incidents/{ident}", response_class=HTMLResponse, dependencies=[READ])
def incident_detail_page(model: str, ident: str, state: StateDep) -> HTMLResponse:
    """One incident: its cause, its history, and the diagnosis and post-mortem of its span."""
    i = find_incident(state, model, ident)
    # The span a check diagnosed: the lookback before the onset (or opening), up to its last check.
    start = (i.top.onset or i.opened_at) - state.incidents.policy.lookback
    end = max(i.resolved_at or i.updated_at, i.last_seen or i.updated_at) + timedelta(microseconds=1)
    q = urlencode({"since": start.isoformat(), "until": end.isoformat()})
    m = quote(model, safe="")
    charts, note = [], ""
    # The diagnosis of that span (cached, and the one its link opens) draws the affected metric's timeline; the
    # incident's record stands on its own when its data is gone or cannot be diagnosed.
    try:
        d, lo, hi = diagnose_span(state, model, TimeRange(start, end))
    except HTTPException as exc:
        note = str(exc.detail)
    except InputError as exc:
        note = str(exc).replace(str(state.store.path), "<store>")
    else:
        timeline = d.charts.timeline if d.charts is not None else None
        if timeline is not None and timeline.series:
            charts.append(to_div(timeline_chart(timeline, state.store.events(lo, hi), i.top.onset,
                                                "The affected metric, the onset and change events"),
                                 "incident-timeline"))
    return HTMLResponse(render_page("incident_page", i=i, when=short, diagnose_url=f"/models/{m}/incident?{q}",
                                    export_url=f"/v1/models/{m}/diagnosis?{q}", charts=charts, note=note))


@router.get("/alerts", response_class=HTMLResponse, dependencies=[READ])
def alerts_page(state: StateDep) -> HTMLResponse:
    """Alerts and rules."""
    states = {r: "firing" for (r, _), s in state.alerts.states.items() if s.firing}
    return HTMLResponse(render_page("alerts", alerts=state.alerts.alerts(), rules=state.config.rules,
                                    states=states))


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
    join = ""
    if "request_id" in columns:
        parts.append("avg(TRY_CAST(l.label AS DOUBLE)) AS label_positive_rate")
        join = " LEFT JOIN labels l ON l.request_id = g.request_id"
    return (f"SELECT time_bucket(INTERVAL '{int(seconds)} seconds', g.ts) AS window_start, {', '.join(parts)} "
            f"FROM log g{join} WHERE g.model = {quote_literal(model)} "
            f"AND g.ts >= {quote_literal(lo.isoformat())}::TIMESTAMPTZ "
            f"AND g.ts < {quote_literal(hi.isoformat())}::TIMESTAMPTZ GROUP BY 1 ORDER BY 1")


@router.get("/models/{model}", response_class=HTMLResponse, dependencies=[READ])
def model_page(model: str, state: StateDep, rng: RangeDep, window: str = "1h") -> HTMLResponse:
    """A model's monitors over time: drift heat map, scores, volume, latency, rates; change events marked."""
    status = model_status(state, model)
    seconds = parse_window_param(window)
    lo, hi = span(status, rng)
    store = state.store
    events = store.events(lo, hi)
    columns = set(store.sql("SELECT * FROM log LIMIT 0").column_names)
    stats = store.sql(_stats_sql(model, seconds, lo, hi, columns))
    charts = []
    ref = model_reference(store, model)
    if ref is not None:
        m = drift_matrix(store, ref, model, window=timedelta(seconds=seconds), since=lo, until=hi)
        charts.append(to_div(drift_heatmap(m, events, "Drift vs training (Jensen-Shannon distance)"), "drift"))
    for series, title, div, extra in (
            ([("score_p10", "p10"), ("score_p50", "median"), ("score_p90", "p90")], "Score distribution", "scores",
             {}),
            ([("predicted_positive_rate", "predicted positive"), ("label_positive_rate", "labelled positive"),
              ("error_rate", "errors")], "Rates (performance)", "rates", {}),
            ([("requests", "requests")], "Volume", "volume", {"kind": "bar"}),
            ([("latency_p50", "p50"), ("latency_p99", "p99")], "Latency", "latency", {"yaxis_title": "ms"})):
        charts.append(to_div(series_chart(stats, "window_start", series, events, title, **extra), div))
    diag_url = f"/models/{quote(model, safe='')}/incident?" + urlencode({"since": lo.isoformat(),
                                                                        "until": hi.isoformat()})
    alerts = [a for a in state.alerts.alerts() if a.model == model]
    return HTMLResponse(render_page(
        "model", model=model, status=status, first=short(status.first_ts), last=short(status.last_ts),
        since=short(lo), until=short(hi), window=window,
        charts=charts, events=events, alerts=alerts, has_reference=ref is not None, diagnose_url=diag_url))


@router.get("/models/{model}/incident", response_class=HTMLResponse, dependencies=[READ])
def incident_page(model: str, state: StateDep, rng: RangeDep) -> HTMLResponse:
    """The diagnosis: triage, layers, ranked hypotheses with evidence, runbook; post-mortem export links."""
    d, lo, hi = diagnose_span(state, model, rng)
    charts = []
    ref = model_reference(state.store, model)
    if d.top is not None and ref is not None:
        culprits = [*d.top.features, *d.top.inputs]
        m = drift_matrix(state.store, ref, model, window=timedelta(hours=1), since=lo, until=hi)
        rows = [i for i, c in enumerate(m.columns) if c in culprits]
        if rows:
            sub = pa.table({"window_start": pa.array(m.starts, pa.timestamp("us", tz="UTC")),
                            **{m.columns[i]: pa.array(nan_to_none(m.drift[i]), pa.float64()) for i in rows}})
            charts.append(to_div(series_chart(sub, "window_start", [(m.columns[i], m.columns[i]) for i in rows],
                                              state.store.events(lo, hi), "Drift of the culprit columns"),
                                 "culprit-drift"))
    export = f"/v1/models/{quote(model, safe='')}/diagnosis?" + urlencode({"since": lo.isoformat(),
                                                                          "until": hi.isoformat()})
    return HTMLResponse(render_page("incident", model=model, d=d, tri=dict(d.triage), since=short(lo),
                                    until=short(hi), charts=charts, export_url=export))
