"""The service under hostile input: no pickle from the store, error bodies without server paths or SQL,
limits that answer 4xx with nothing stored, names and timestamps that cannot break other models' pages,
and the browser login (POST form, opaque session cookie, Origin check, failed-auth rate limit)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("plotly")

from fastapi.testclient import TestClient

from mlsleuth.capture import ARROW_STREAM_MEDIA_TYPE, Compression, table_to_ipc
from mlsleuth.errors import ConfigError, EngineError
from mlsleuth.server import AuthSettings, Limits, Scope, ServerConfig, create_app, load_config

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


# ------------------------------------------------------------------------------------------------ limits


def _limited(tmp_path: Path, **limits: int) -> TestClient:
    return TestClient(create_app(ServerConfig(store=tmp_path / "store", tokens=TOKENS, limits=Limits(**limits))),
                      raise_server_exceptions=False)


def _post_json(client: TestClient, body: bytes, path: str = "/v1/log") -> Any:
    return client.post(path, content=body, headers={**_h(WRITE), "Content-Type": "application/json"})


def test_a_row_of_100000_fields_is_refused_and_nothing_stored(client: TestClient) -> None:
    row = {"ts": "2026-03-02T00:00:00Z", "score": 0.1, **{f"f{i}": 0 for i in range(100_000)}}
    r = client.post("/v1/log", json=[row], headers=_h(WRITE))
    assert r.status_code == 422 and "body[0]" in r.json()["detail"] and "limits.max_columns" in r.json()["detail"]
    # Many narrow rows whose fields add up past the limit are refused too.
    rows = [{"ts": "2026-03-02T00:00:00Z", "score": 0.1, f"f{i}": i} for i in range(1500)]
    r = client.post("/v1/log", json=rows, headers=_h(WRITE))
    assert r.status_code == 422 and "distinct fields" in r.json()["detail"]
    wide = pa.table({"ts": ["2026-03-02T00:00:00Z"], "score": [0.1], **{f"f{i}": [0] for i in range(1200)}})
    r = client.post("/v1/log", content=table_to_ipc(wide, Compression.ZSTD),
                    headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.status_code == 422 and "1,202 fields" in r.json()["detail"]
    assert _stored(client) == 0


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  json.dumps([{"ts": "2026-03-02T00:00:00Z", "score": 0.1,
                                               "x": json.loads("[" * 30 + "]" * 30)}]).encode()])
def test_deeply_nested_json_is_a_422_not_a_500(client: TestClient, body: bytes) -> None:
    for path in ("/v1/log", "/v1/events", "/v1/lineage", "/v1/labels"):
        r = _post_json(client, body, path)
        assert r.status_code == 422, (path, r.text)
        assert "limits.max_depth" in r.json()["detail"]
    assert _stored(client) == 0


def test_a_compressed_arrow_body_that_expands_is_refused_unexpanded(client: TestClient, tmp_path: Path) -> None:
    n = 5_000_000
    bomb = pa.table({"ts": pa.array([0] * n, pa.int64()), "score": pa.array([0.0] * n)})
    body = table_to_ipc(bomb, Compression.ZSTD)
    assert len(body) < 100_000  # tiny on the wire, 80 MB decoded
    r = client.post("/v1/log", content=body, headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.status_code == 413 and "limits.max_rows" in r.json()["detail"]
    assert _stored(client) == 0
    small = _limited(tmp_path, max_decoded_bytes=1_000_000)
    table = pa.table({"ts": pa.array(["2026-03-02T00:00:00Z"] * 100_000), "score": pa.array([0.5] * 100_000)})
    r = small.post("/v1/log", content=table_to_ipc(table, Compression.ZSTD),
                   headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.status_code == 413 and "limits.max_decoded_mb" in r.json()["detail"]
    r = small.post("/v1/log", content=b"x", headers={**_h(WRITE), "Content-Type": "application/json",
                                                     "Content-Encoding": "gzip"})
    assert r.status_code == 415 and "content-encoding" in r.json()["detail"]
    assert _stored(small) == 0


def test_rows_per_request_and_string_length_are_limited(tmp_path: Path) -> None:
    client = _limited(tmp_path, max_rows=100, max_string_bytes=1000)
    r = client.post("/v1/log", json=_rows(101), headers=_h(WRITE))
    assert r.status_code == 413 and "limits.max_rows" in r.json()["detail"]
    rows = _rows(3)
    rows[2]["feature.note"] = "x" * 1001
    r = client.post("/v1/log", json=rows, headers=_h(WRITE))
    assert r.status_code == 422 and r.json()["detail"].startswith("body[2].feature.note")
    table = pa.Table.from_pylist(_rows(3)).append_column("feature.note", pa.array(["a", "b", "y" * 2000]))
    r = client.post("/v1/log", content=table_to_ipc(table, Compression.ZSTD),
                    headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.status_code == 422 and "body[].feature.note" in r.json()["detail"]
    nested = _rows(2)
    nested[1]["feature.tags"] = ["ok", "z" * 1001]  # inside a list: still one string value
    r = client.post("/v1/log", json=nested, headers=_h(WRITE))
    assert r.status_code == 422 and "body[].feature.tags" in r.json()["detail"]
    structs = pa.Table.from_pylist(_rows(2)).append_column(
        "feature.meta", pa.array([{"a": {"b": "w" * 1001}}, None]))
    r = client.post("/v1/log", content=table_to_ipc(structs, Compression.ZSTD),
                    headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.status_code == 422 and "body[].feature.meta" in r.json()["detail"]
    assert client.post("/v1/log", json=_rows(100), headers=_h(WRITE)).json()["accepted"] == 100


def test_extreme_timestamps_are_refused_naming_the_row(client: TestClient) -> None:
    rows = _rows(5)
    rows[3]["ts"] = "9999-12-31T23:59:59.999999Z"
    r = client.post("/v1/log", json=rows, headers=_h(WRITE))
    assert r.status_code == 422 and r.json()["detail"].startswith("body[3].ts")
    table = pa.Table.from_pylist(_rows(3)).set_column(1, "ts", pa.array([0, 1, 253_402_300_799_000_000],
                                                                         pa.timestamp("us", tz="UTC")))
    r = client.post("/v1/log", content=table_to_ipc(table, Compression.ZSTD),
                    headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.status_code == 422 and r.json()["detail"].startswith("body[2].ts")  # 1970 (0 µs) is fine
    r = client.post("/v1/labels", json=[{"request_id": "a", "label": 1, "label_ts": "0001-01-01T00:00:00Z"}],
                    headers=_h(WRITE))
    assert r.status_code == 422 and "body[0].label_ts" in r.json()["detail"]
    r = client.post("/v1/events", json=[{"id": "e", "ts": "9999-01-01T00:00:00Z", "kind": "deployment"}],
                    headers=_h(WRITE))
    assert r.status_code == 422 and "body[0].ts" in r.json()["detail"]
    assert _stored(client) == 0


def test_model_names_that_cannot_name_a_page_are_refused(client: TestClient) -> None:
    for name in ("team/fraud", ".hidden", "..", "a\\b", "tab\there"):
        r = client.post("/v1/log", json=_rows(2, model=name), headers=_h(WRITE))
        assert r.status_code == 422 and "body[].model" in r.json()["detail"], name
    r = client.post("/v1/log", params={"model": "../x"}, json=[{"ts": "2026-03-02T00:00:00Z", "score": 0.1}],
                    headers=_h(WRITE))
    assert r.status_code == 422 and "query.model" in r.json()["detail"]
    assert client.post("/v1/models/.x/reference", json=[{"score": 0.1}], headers=_h(WRITE)).status_code == 422
    assert _stored(client) == 0
    quoted = "o'brien \"q\" <b>"
    assert client.post("/v1/log", json=_rows(20, model=quoted), headers=_h(WRITE)).json()["accepted"] == 20
    from urllib.parse import quote

    page = client.get(f"/models/{quote(quoted, safe='')}", headers=_h(READ))
    assert page.status_code == 200 and "o&#39;brien" in page.text
    assert client.get("/", headers=_h(READ)).status_code == 200


def test_bad_names_and_times_already_stored_do_not_break_other_models(tmp_path: Path) -> None:
    from mlsleuth.store import LocalStore

    store = LocalStore.init(tmp_path / "store")
    rows = _rows(30, model="good") + _rows(3, model="team/fraud") + _rows(3, model=".hidden")
    future = _rows(3, model="future")
    future[-1]["ts"] = "9999-12-31T23:59:59.999999Z"
    assert store.append_log(pa.Table.from_pylist(rows + future)).accepted == 39
    store.close()
    with TestClient(create_app(ServerConfig(store=tmp_path / "store", tokens=TOKENS)),
                    raise_server_exceptions=False) as client:
        assert client.get("/", headers=_h(READ)).status_code == 200
        assert client.get("/models/good", headers=_h(READ)).status_code == 200
        assert client.get("/models/good/incident", headers=_h(READ)).status_code == 200
        assert client.get("/models/future", headers=_h(READ)).status_code == 200
        assert client.get("/v1/models/future/diagnosis", headers=_h(READ)).status_code < 500
        assert client.get("/models/future/incident", headers=_h(READ)).status_code < 500
        assert client.get("/v1/status", headers=_h(READ)).status_code == 200


def test_limits_from_the_config_file(tmp_path: Path) -> None:
    p = tmp_path / "server.toml"
    p.write_text('[limits]\nmax_columns = 50\nmax_decoded_mb = 2\nmin_year = 2000\n', encoding="utf-8")
    limits = load_config(p, environ={}).limits
    assert (limits.max_columns, limits.max_decoded_bytes, limits.min_year, limits.max_rows) == (50, 2 << 20, 2000,
                                                                                               Limits().max_rows)
    p.write_text('[limits]\nmax_colums = 50\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="max_colums"):
        load_config(p, environ={})


# ------------------------------------------------------------------------------------------------ tokens


OWN = {"Origin": "http://testserver"}


def _login(client: TestClient, token: str) -> Any:
    return client.post("/login", data={"token": token}, headers=OWN, follow_redirects=False)


def test_login_posts_the_token_and_the_cookie_is_an_opaque_session(client: TestClient) -> None:
    # A browser opening a page without a session is sent to the form; scripts still get 401.
    r = client.get("/models/m", headers={"Accept": "text/html,*/*"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/models/m").status_code == 401
    form = client.get("/login")
    assert form.status_code == 200 and 'method="post"' in form.text and 'type="password"' in form.text
    # A token in the URL logs nobody in, and a cookie holding a raw token (the old scheme) opens nothing.
    assert "set-cookie" not in client.get("/login", params={"token": READ}).headers
    client.cookies.set("mlsleuth_token", READ)
    assert client.get("/").status_code == 401
    client.cookies.clear()
    bad = _login(client, "wrong")
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    r = _login(client, READ)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert READ not in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    sid = r.cookies["mlsleuth_session"]
    assert len(sid) >= 32
    assert client.get("/", cookies={"mlsleuth_session": sid}).status_code == 200
    assert client.get("/", cookies={"mlsleuth_session": sid + "x"}).status_code == 401
    client.post("/logout", cookies={"mlsleuth_session": sid})
    assert client.get("/", cookies={"mlsleuth_session": sid}).status_code == 401
    # A login form posted from another site is refused (login CSRF).
    assert client.post("/login", data={"token": READ}, headers={"Origin": "https://evil.example"},
                       follow_redirects=False).status_code == 403


def test_the_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    app = create_app(ServerConfig(store=tmp_path / "s", tokens=TOKENS))
    with TestClient(app, base_url="https://mlsleuth.test") as client:
        r = client.post("/login", data={"token": READ}, headers={"Origin": "https://mlsleuth.test"},
                        follow_redirects=False)
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_cookie_writes_need_this_servers_origin(client: TestClient) -> None:
    sid = _login(client, WRITE).cookies["mlsleuth_session"]
    body = json.dumps(_rows(3)).encode()
    for headers in ({}, {"Content-Type": ""}, {"Origin": "https://evil.example"},
                    {"Origin": "null", "Referer": "https://evil.example/page"},
                    {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"}):
        r = client.post("/v1/log", content=body, headers=headers, cookies={"mlsleuth_session": sid})
        assert r.status_code == 403 and "Origin" in r.json()["detail"], headers
    assert _stored(client) == 0
    r = client.post("/v1/log", content=body, headers={**OWN, "Content-Type": "application/json"},
                    cookies={"mlsleuth_session": sid})
    assert r.status_code == 200 and r.json()["accepted"] == 3
    # Scripts with a bearer token send no Origin and need none.
    assert client.post("/v1/log", json=_rows(3, start=3), headers=_h(WRITE)).json()["accepted"] == 3


def test_failed_authentication_is_rate_limited_per_client(tmp_path: Path) -> None:
    cfg = ServerConfig(store=tmp_path / "s", tokens=TOKENS, auth=AuthSettings(max_failures=5, failure_window=600))
    with TestClient(create_app(cfg)) as client:
        for _ in range(5):
            assert client.get("/v1/status", headers=_h("guess")).status_code == 401
        r = client.get("/v1/status", headers=_h(READ))  # even the right token waits out the window
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert _login(client, READ).status_code == 429
        assert client.get("/health").status_code == 200


def test_sessions_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlsleuth.server._auth as auth_module

    now = [1000.0]
    monkeypatch.setattr(auth_module, "_clock", lambda: now[0])
    cfg = ServerConfig(store=tmp_path / "s", tokens=TOKENS, auth=AuthSettings(session_seconds=60, max_failures=2))
    with TestClient(create_app(cfg)) as client:
        sid = _login(client, READ).cookies["mlsleuth_session"]
        assert client.get("/v1/status", cookies={"mlsleuth_session": sid}).status_code == 200
        now[0] += 61
        for _ in range(3):  # an expired session is a 401, and reloading does not lock the browser out
            r = client.get("/v1/status", cookies={"mlsleuth_session": sid})
            assert r.status_code == 401 and "log in again" in r.json()["detail"]
        assert _login(client, READ).status_code == 303


def test_auth_settings_from_the_config_file(tmp_path: Path) -> None:
    p = tmp_path / "server.toml"
    p.write_text('[auth]\nsession_hours = 1\ncookie_secure = true\nmax_failures = 3\n', encoding="utf-8")
    auth = load_config(p, environ={}).auth
    assert (auth.session_seconds, auth.cookie_secure, auth.max_failures) == (3600, True, 3)
    p.write_text('[auth]\ncookie_secure = "sometimes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="cookie_secure"):
        load_config(p, environ={})


def test_security_md_and_the_shipped_config_list_every_setting_with_its_default() -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "SECURITY.md").read_text(encoding="utf-8")
    shipped = load_config(root / "deploy" / "mlsleuth-server.toml", environ={})
    assert shipped.limits == Limits() and shipped.auth == AuthSettings()
    keys = ["max_columns", "max_rows", "max_decoded_mb", "max_string_bytes", "max_depth", "min_year", "max_year",
            "session_hours", "cookie_secure", "max_failures", "failure_window_seconds", "diagnosis.models"]
    for key in keys:
        assert key in text, key
    assert "Reporting a hole" in text


def test_server_diagnosis_uses_the_scoring_model_the_config_names(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "srv_scoring.py").write_text(
        "import numpy as np\nCALLS = []\n\ndef score(frame):\n    CALLS.append(len(frame))\n"
        "    return np.asarray(frame['x'], dtype=float) / 50.0\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(pkg))
    cfg = ServerConfig(store=tmp_path / "store", tokens=TOKENS, models={"m": "srv_scoring:score"})
    with TestClient(create_app(cfg)) as client:
        ref = [{"feature.x": float(i % 50), "score": (i % 50) / 50, "prediction": i % 2} for i in range(400)]
        assert client.post("/v1/models/m/reference", json=ref, headers=_h(WRITE)).status_code == 200
        assert client.post("/v1/log", json=_rows(400), headers=_h(WRITE)).status_code == 200
        d = client.get("/v1/models/m/diagnosis", headers=_h(READ)).json()
    assert not any("no model" in s for s in d["skipped"]), d["skipped"]


def test_big_json_batches_are_read_row_by_row_with_the_same_answers(client: TestClient) -> None:
    # Parsed and converted a few thousand rows at a time (so /health keeps answering): the answers must be
    # those of one json.loads and one from_pylist.
    rows = _rows(5000)
    for r in rows[:2500]:
        r["feature.x"] = int(r["feature.x"])  # type: ignore[call-overload]
    assert client.post("/v1/log", json=rows, headers=_h(WRITE)).json()["accepted"] == 5000
    got = client.get("/v1/log", params={"model": "m", "limit": 5000}, headers=_h(READ)).json()["rows"]
    assert sorted(r["feature.x"] for r in got) == sorted(float(i % 50) for i in range(5000))
    bad = _rows(5000, model="n")
    bad[4321]["score"] = "high"
    r = client.post("/v1/log", json=bad, headers=_h(WRITE))
    assert r.status_code == 422 and r.json()["detail"].startswith("body[4321].score: expected a number")
    for body in (b'[{"ts": "2026-03-02T00:00:00Z", "score": 0.1}] trailing', b'[{"score": 0.1} {"score": 0.2}]',
                 b'[{"score": 0.1},', b'  [  ]  x'):
        r = _post_json(client, body)
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"], body
    assert _post_json(client, b" [ ] ").status_code == 422
    assert _stored(client) == 5000
    # A field that only a later row has is kept, not dropped with the first row's keys deciding the columns.
    late = _rows(3, model="late")
    late[2]["feature.late"] = 7.0
    assert client.post("/v1/log", json=late, headers=_h(WRITE)).json()["accepted"] == 3
    got = client.get("/v1/log", params={"model": "late"}, headers=_h(READ)).json()["rows"]
    assert sorted((r["feature.late"] for r in got), key=str) == [7.0, None, None]
