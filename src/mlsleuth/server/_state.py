"""What the app holds, and the dependencies its routers share: the state, auth scopes, time ranges, models.

Each router reaches the state through :func:`get_state` (``StateDep``), checks the caller with
``READ`` or ``WRITE``, and reads ``since``/``until`` through :func:`time_range` (``RangeDep``), so
these rules are written once.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from mlsleuth.errors import InputError, MlsleuthError
from mlsleuth.incidents import IncidentChange, IncidentLog, IncidentTracker, incident_json, incident_text
from mlsleuth.monitors import parse_window
from mlsleuth.schema import parse_timestamp
from mlsleuth.server._alerts import DIAGNOSIS_SPAN, AlertEngine, post_webhook
from mlsleuth.server._auth import Authenticator
from mlsleuth.server._config import Scope, ServerConfig
from mlsleuth.server._metrics import Metrics
from mlsleuth.server._views import drift_matrix, model_reference, reference_data_path
from mlsleuth.store import AppendResult, LocalStore, ModelStatus

__all__ = ["READ", "WRITE", "AppState", "RangeDep", "StateDep", "TimeRange", "append_result", "get_state",
           "incident_link", "jsonable", "model_status", "parse_window_param", "schedule", "short",
           "span"]

log = logging.getLogger("mlsleuth.server")

#: How many diagnoses are kept (the key changes whenever the store does, so stale ones fall out).
_CACHED_DIAGNOSES = 16

try:
    from fastapi import Depends, HTTPException, Request
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc


def incident_link(base_url: str, model: str, ident: str) -> str:
    """The dashboard's page of one incident."""
    return f"{base_url.rstrip('/')}/models/{urllib.parse.quote(model, safe='')}/incidents/{urllib.parse.quote(ident)}"


class AppState:
    """What the app holds: the store, the alert engine, the incidents, metrics, the authenticator, a diagnosis cache."""

    def __init__(self, config: ServerConfig, notify: Callable[[str, Mapping[str, object]], None] | None) -> None:
        self.config = config
        # An existing store is opened as it is, on the engine the config (serve --engine) names, else the store's.
        self.store = LocalStore.init(config.store, engine=config.engine, spark_master=config.spark_master)
        self.metrics = Metrics()
        self.notify = notify or post_webhook
        self.alerts = AlertEngine(self.store, config.rules, config.webhooks, base_url=config.public_url,
                                  notify=self.notify)
        # Kept beside the store's data, so the incidents (and their history) survive a restart.
        self.incidents = IncidentTracker(IncidentLog(self.store.path), config.incidents.policy())
        hooks = config.incidents.webhooks
        self.incident_webhooks = config.webhooks if hooks is None else hooks
        self.detect_lock = threading.Lock()
        # What each model's store looked like at its last check: a check runs again only once it moved.
        self.checked: dict[str, tuple[Any, ...]] = {}
        self.check_skipped: dict[str, str] = {}
        self.refresh_incident_gauge()
        self.auth = Authenticator(config.tokens, config.auth, config.public_url)
        self.write_lock = threading.Lock()
        self.diagnoses: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.diag_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self.cache_lock = threading.Lock()

    def diagnosis(self, key: tuple[Any, ...], model: str, lo: datetime, hi: datetime) -> Any:
        """The diagnosis of ``model`` over ``[lo, hi)``, cached by ``key`` (which changes when the store does).

        One lock per key: two requests for the same diagnosis compute it once, and diagnoses of
        other models or spans run side by side. It is the CLI's ``diagnose_store``; the scoring
        model, if any, is the one the operator's config names for ``model``: nothing in the store
        is ever unpickled.
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
                while len(self.diagnoses) > _CACHED_DIAGNOSES:
                    self.diagnoses.popitem(last=False)
                self.diag_locks.pop(key, None)
            return d

    def record(self, result: AppendResult, model: str, kind: str) -> None:
        """Count ingested and quarantined rows in the metrics."""
        self.metrics.inc("mlsleuth_ingested_rows_total", {"model": model, "kind": kind}, result.accepted)
        if result.quarantined:
            self.metrics.inc("mlsleuth_quarantined_rows_total", {"model": model, "kind": kind}, result.quarantined)

    def evaluate(self) -> tuple[Any, ...]:
        """Evaluate the alert rules now, update the alert and drift metrics; the alerts sent."""
        sent = self.alerts.evaluate()
        m = self.metrics
        m.inc("mlsleuth_alert_evaluations_total", {})
        m.clear("mlsleuth_alert_firing")
        for (rule, column), s in self.alerts.states.items():
            m.set("mlsleuth_alert_firing", {"rule": rule, "column": column}, 1.0 if s.firing else 0.0)
        for a in sent:
            m.inc("mlsleuth_alerts_sent_total", {"rule": a.rule, "column": a.column})
        self._refresh_gauges()
        return sent

    def detect(self, models: Sequence[str] | None = None) -> tuple[IncidentChange, ...]:
        """Check each model whose requests, labels or events moved since its last check; notify the changes.

        Each check is :meth:`IncidentTracker.check` at the model's latest request (data time), with the
        stored reference and the scoring model the operator's config names. A model whose check fails
        is logged and skipped (``check_skipped``); the others are still checked.
        """
        changes: list[IncidentChange] = []
        with self.detect_lock:
            whole = self.store.status()
            for m in whole.models:
                if m.last_ts is None or (models is not None and m.name not in models):
                    continue
                key = (m.last_ts, m.rows, whole.labels, whole.events)
                if self.checked.get(m.name) == key:
                    continue
                try:
                    ref = reference_data_path(self.store, m.name)
                    found = self.incidents.check(self.store, m.name, m.last_ts, first_seen=m.first_ts,
                                                 reference=ref if ref.exists() else None,
                                                 model=self.config.models.get(m.name))
                except MlsleuthError as exc:  # one model's bad data must not stop the others' checks
                    self.check_skipped[m.name] = str(exc)
                    log.warning("mlsleuth: incident check of model %s failed: %s", m.name, exc)
                    continue
                self.checked[m.name] = key
                self.check_skipped.pop(m.name, None)
                self.metrics.inc("mlsleuth_incident_checks_total", {"model": m.name})
                changes += found
            for change in changes:
                self._send_incident(change)
            self.refresh_incident_gauge()
        return tuple(changes)

    def _send_incident(self, change: IncidentChange) -> None:
        """One message per webhook; a webhook that fails is counted and logged, never raised."""
        i = change.incident
        link = incident_link(self.config.public_url, i.model, i.id)
        payload: Mapping[str, object] = (incident_json(change, link=link) if self.config.incidents.format == "json"
                                         else {"text": incident_text(change, link=link)})
        for url in self.incident_webhooks:
            try:
                self.notify(url, payload)
            except Exception as exc:  # whatever a hook raises, the other webhooks still get their message
                self.metrics.inc("mlsleuth_incident_notify_failures_total", {"model": i.model})
                log.warning("mlsleuth: could not notify %s of incident %s: %s", url, i.id, exc)
            else:
                self.metrics.inc("mlsleuth_incident_notifications_total", {"model": i.model,
                                                                             "kind": change.kind.value})

    def refresh_incident_gauge(self) -> None:
        """Active incidents by model and cause; a cause whose incidents all resolved reads 0."""
        counts: dict[tuple[str, str], int] = {}
        for i in self.incidents.log.all():
            key = (i.model, i.top.cause.value)
            counts[key] = counts.get(key, 0) + (1 if i.is_active else 0)
        self.metrics.clear("mlsleuth_incidents_open")
        for (model, cause), n in counts.items():
            self.metrics.set("mlsleuth_incidents_open", {"model": model, "cause": cause}, float(n))

    def _refresh_gauges(self) -> None:
        """Drift scores and null rates of the latest complete window of each model with alert rules."""
        for model in sorted({r.model for r in self.config.rules}):
            ref = model_reference(self.store, model)
            try:
                status = self.store.status().model(model)
            except KeyError:
                continue
            if ref is None or status.last_ts is None:
                continue
            window = min(r.window for r in self.config.rules if r.model == model)
            end = status.last_ts
            mtx = drift_matrix(self.store, ref, model, window=window, since=end - 3 * window, until=end)
            if not mtx.starts:
                continue
            j = len(mtx.starts) - 1
            self.metrics.clear("mlsleuth_drift_score", model=model)
            self.metrics.clear("mlsleuth_null_rate", model=model)
            self.metrics.set("mlsleuth_window_requests", {"model": model}, float(mtx.rows[j]))
            for i, c in enumerate(mtx.columns):
                if math.isfinite(mtx.drift[i, j]):
                    self.metrics.set("mlsleuth_drift_score", {"model": model, "column": c}, mtx.drift[i, j])
                if math.isfinite(mtx.null_rate[i, j]):
                    self.metrics.set("mlsleuth_null_rate", {"model": model, "column": c}, mtx.null_rate[i, j])


async def schedule(job: Callable[[], object], interval: float, what: str) -> None:
    """Run ``job`` in a thread every ``interval`` seconds until cancelled; failures are logged, not raised."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the schedule alive; the failure is in the log
            log.exception("mlsleuth: %s failed", what)


# ------------------------------------------------------------------------------------------------ dependencies


def get_state(request: Request) -> AppState:
    """The app's state (a dependency)."""
    state: AppState = request.app.state.mlsleuth
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def _needs(scope: Scope) -> Any:
    def dep(request: Request) -> Scope:
        return get_state(request).auth.check(request, scope)

    return Depends(dep)


#: Route dependencies: the caller holds a read (or write) token or session; write routes need write.
READ = _needs(Scope.READ)
WRITE = _needs(Scope.WRITE)


def _ts(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value)
    except (InputError, ValueError, TypeError) as exc:
        raise HTTPException(422, f"query.{name}: expected an ISO-8601 time, got {value!r}") from exc


@dataclass(frozen=True)
class TimeRange:
    """``[since, until)`` from the query string; either end may be open (``None``)."""

    since: datetime | None
    until: datetime | None


def time_range(since: str | None = None, until: str | None = None) -> TimeRange:
    """The ``since`` and ``until`` query parameters as times (a dependency); 422 names the bad one."""
    return TimeRange(_ts(since, "since"), _ts(until, "until"))


RangeDep = Annotated[TimeRange, Depends(time_range)]


def parse_window_param(value: str, name: str = "window") -> int:
    """A window such as ``1h`` in seconds; 422 names the query parameter."""
    try:
        return parse_window(value)
    except (InputError, ValueError) as exc:
        raise HTTPException(422, f"query.{name}: expected a duration such as 15min, 1h or 1d, got {value!r}") from exc


def model_status(state: AppState, model: str) -> ModelStatus:
    """What the store holds of ``model``; 404 when it holds no request of it."""
    try:
        return state.store.status().model(model)
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


def span(status: ModelStatus, rng: TimeRange) -> tuple[datetime, datetime]:
    """``[since, until)`` defaulting to the week up to the model's latest request."""
    last = status.last_ts or datetime.now(UTC)
    hi = rng.until or _shift(last, timedelta(microseconds=1))
    week = _shift(hi, -DIAGNOSIS_SPAN)
    lo = rng.since or max(status.first_ts or week, week)
    return lo, hi


# ------------------------------------------------------------------------------------------------ answers


def append_result(r: AppendResult) -> dict[str, Any]:
    """An append's answer: rows accepted, quarantined, and why."""
    return {"accepted": r.accepted, "quarantined": r.quarantined,
            "reasons": [{"reason": k, "rows": n} for k, n in r.reasons]}


def short(t: datetime | None) -> str:
    """A time for a page (minutes, UTC)."""
    return t.strftime("%Y-%m-%d %H:%M UTC") if t is not None else ""


def jsonable(v: Any) -> Any:
    """A JSON value for what ``json.dumps`` cannot write (times, non-finite floats, bytes)."""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return io.BytesIO(v).getvalue().hex()
    return str(v)
