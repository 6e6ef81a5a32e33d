"""The service under hostile input: no pickle from the store, error bodies without server paths or SQL,
limits that answer 4xx with nothing stored, names and timestamps that cannot break other models' pages,
and the browser login (POST form, opaque session cookie, Origin check, failed-auth rate limit)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("plotly")

from fastapi.testclient import TestClient

from mlsleuth.errors import ConfigError, EngineError
from mlsleuth.server import Scope, ServerConfig, create_app, load_config

READ, WRITE = "reader-token", "writer-token"
TOKENS = {READ: Scope.READ, WRITE: Scope.WRITE}


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _rows(n: int, model: str = "m", start: int = 0) -> list[dict[str, object]]:
    return [{"request_id": f"{model}-r{i}", "ts": f"2026-03-02T{i % 24:02d}:{i % 60:02d}:00Z", "model": model,
             "model_version": "v1", "feature.x": float(i % 50), "score": (i % 10) / 10, "prediction": i % 2}
            for i in range(start, start + n)]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ServerConfig(store=tmp_path / "store", tokens=TOKENS))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _stored(client: TestClient) -> int:
    return int(client.get("/v1/status", headers=_h(READ)).json()["rows"])


# ------------------------------------------------------------------------------------------------ no pickle


class _Planted:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_a_pickle_planted_in_the_store_is_never_loaded(client: TestClient, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ref = [{"feature.x": float(i % 50), "score": (i % 10) / 10, "prediction": i % 2} for i in range(300)]
    assert client.post("/v1/models/m/reference", json=ref, headers=_h(WRITE)).status_code == 200
    assert client.post("/v1/log", json=_rows(300), headers=_h(WRITE)).status_code == 200
    marker = tmp_path / "pwned"
    (store / "profiles" / "m" / "model.joblib").write_bytes(pickle.dumps(_Planted(marker)))
    r = client.get("/v1/models/m/diagnosis", headers=_h(READ))
    assert r.status_code == 200, r.text
    assert client.get("/models/m/incident", headers=_h(READ)).status_code == 200
    assert not marker.exists()


def test_scoring_models_come_from_the_operators_config_only(tmp_path: Path) -> None:
    p = tmp_path / "server.toml"
    p.write_text('store = "s"\n[diagnosis.models]\nfraud = "scoring.fraud:score"\n', encoding="utf-8")
    assert load_config(p, environ={}).models == {"fraud": "scoring.fraud:score"}
    with pytest.raises(ConfigError, match="inside the store"):
        ServerConfig(store=tmp_path / "s", models={"fraud": str(tmp_path / "s" / "profiles" / "fraud" / "m.joblib")})


# ------------------------------------------------------------------------------------------------ error bodies


def test_errors_and_status_show_no_server_paths_or_sql(client: TestClient, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store_path = str(tmp_path / "store")
    client.post("/v1/log", json=_rows(10), headers=_h(WRITE))
    status = client.get("/v1/status", headers=_h(READ))
    assert status.status_code == 200 and store_path not in status.text and "path" not in status.json()
    assert store_path not in client.get("/", headers=_h(READ)).text
    st = client.app.state.mlsleuth  # type: ignore[attr-defined]

    def boom(*args: object, **kwargs: object) -> object:
        raise EngineError(f"Binder Error: SELECT * FROM read_parquet('{store_path}/log/model=m/x.parquet')")

    monkeypatch.setattr(st.store, "status", boom)
    r = client.get("/v1/status", headers=_h(READ))
    assert r.status_code == 500
    assert store_path not in r.text and "SELECT" not in r.text and "error id" in r.json()["detail"]
