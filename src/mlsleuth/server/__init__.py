"""The mlsleuth service: ingest and query API, dashboard, alerts, incidents and Prometheus metrics (``mlsleuth serve``).

Needs the ``server`` extra (FastAPI, uvicorn, Jinja2, Plotly). Routes are thin calls into the library.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from fastapi.testclient import TestClient
>>> from mlsleuth.server import Scope, ServerConfig, create_app
>>> app = create_app(ServerConfig(store=Path(tempfile.mkdtemp()) / "store", tokens={"w": Scope.WRITE}))
>>> client = TestClient(app, headers={"Authorization": "Bearer w"})
>>> client.post("/v1/log", json=[{"ts": "2026-03-06T18:00:00Z", "score": 0.2, "model": "m"}]).json()["accepted"]
1
"""

from mlsleuth.server._alerts import Alert, AlertEngine, AlertState, post_webhook
from mlsleuth.server._app import create_app, parse_table
from mlsleuth.server._config import (
    AlertRule,
    AuthSettings,
    IncidentSettings,
    Limits,
    Scope,
    ServerConfig,
    load_config,
    parse_tokens,
)
from mlsleuth.server._demo import demo_config, stream_week
from mlsleuth.server._metrics import Metrics
from mlsleuth.server._serve import serve
from mlsleuth.server._views import DriftMatrix, drift_matrix

__all__ = [
    "Alert",
    "AlertEngine",
    "AlertRule",
    "AlertState",
    "AuthSettings",
    "DriftMatrix",
    "IncidentSettings",
    "Limits",
    "Metrics",
    "Scope",
    "ServerConfig",
    "create_app",
    "demo_config",
    "drift_matrix",
    "load_config",
    "parse_table",
    "parse_tokens",
    "post_webhook",
    "serve",
    "stream_week",
]
