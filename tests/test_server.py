"""The service: auth, limits, validation, ingest/query round trips, the capture SDK over HTTP, alerts, metrics."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("plotly")

from fastapi.testclient import TestClient

from mlsleuth.capture import ARROW_STREAM_MEDIA_TYPE, Compression, HttpSink, table_to_ipc
from mlsleuth.errors import CaptureError, ConfigError
from mlsleuth.server import AlertRule, Scope, ServerConfig, create_app, load_config, parse_tokens

READ, WRITE = "reader-token", "writer-token"
TOKENS = {READ: Scope.READ, WRITE: Scope.WRITE}


def _rows(n: int, start: int = 0, model: str = "m") -> list[dict[str, object]]:
    return [{"request_id": f"r{i}", "ts": f"2026-03-02T{i % 24:02d}:{i % 60:02d}:00Z", "model": model,
             "model_version": "v1", "feature.x": float(i), "score": (i % 10) / 10, "prediction": i % 2,
             "latency_ms": 5.0 + i % 7} for i in range(start, start + n)]


@pytest.fixture
def app_and_store(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    app = create_app(ServerConfig(store=tmp_path / "store", tokens=TOKENS, max_body_bytes=64 * 1024))
    with TestClient(app) as client:
        yield client, tmp_path / "store"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _rows_stored(client: TestClient) -> int:
    return int(client.get("/v1/status", headers=_h(READ)).json()["rows"])


# ------------------------------------------------------------------------------------------------ auth


def test_health_is_open_and_everything_else_needs_a_token(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    assert client.get("/health").json()["status"] == "ok"
    for path in ("/v1/status", "/metrics", "/", "/openapi.json", "/v1/log", "/static/plotly.min.js", "/alerts"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert "bearer token" in r.json()["detail"]
        assert client.get(path, headers=_h("not-a-token")).status_code == 401, path
    assert client.get("/v1/status", headers=_h(READ)).status_code == 200


def test_read_token_cannot_write(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    for path in ("/v1/log", "/v1/labels", "/v1/events", "/v1/lineage", "/v1/models/m/reference",
                 "/v1/alerts/evaluate"):
        r = client.post(path, json=_rows(2), headers=_h(READ))
        assert r.status_code == 403, path
        assert "needs write" in r.json()["detail"]
    assert _rows_stored(client) == 0
    assert client.post("/v1/log", json=_rows(2), headers=_h(WRITE)).status_code == 200


def test_openapi_spec_lists_the_ingest_routes(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    spec = client.get("/openapi.json", headers=_h(READ)).json()
    assert {"/v1/log", "/v1/labels", "/v1/events", "/v1/lineage", "/v1/status", "/v1/models/{model}/diagnosis",
            "/metrics", "/health"} <= set(spec["paths"])


def test_cookie_login_opens_the_dashboard(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    own = {"Origin": "http://testserver"}
    assert client.post("/login", data={"token": "wrong"}, headers=own).status_code == 401
    r = client.post("/login", data={"token": READ}, headers=own)
    assert r.status_code == 200 and "Models" in r.text  # redirected to the overview with the session cookie set


# ------------------------------------------------------------------------------------------------ limits, validation


def test_oversize_bodies_are_refused_with_413_and_nothing_stored(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    big = json.dumps(_rows(2000)).encode()
    assert len(big) > 64 * 1024
    r = client.post("/v1/log", content=big, headers={**_h(WRITE), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert "limit of 65,536 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = client.post("/v1/log", content=chunks(), headers={**_h(WRITE), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert _rows_stored(client) == 0


@pytest.mark.parametrize(("body", "ctype", "code", "says"), [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"", "application/json", 422, "empty body"),
    (b'{"a": 1}', "application/json", 422, "expected a JSON array"),
    (b"[]", "application/json", 422, "at least one row"),
    (b'[{"ts": "2026-03-02T00:00:00Z", "score": 0.1}, 3]', "application/json", 422, "body[1]: expected an object"),
    (b'[{"ts": "2026-03-02T00:00:00Z", "score": 0.1}, {"ts": "2026-03-02T00:01:00Z", "score": "high"}]',
     "application/json", 422, "body[1].score: expected a number like body[0].score, got a str"),
    (b'[{"score": 0.1}]', "application/json", 422, "body[].ts"),
    (b"\x00\x01garbage", ARROW_STREAM_MEDIA_TYPE, 400, "not an Arrow IPC stream"),
    (b"a,b\n1,2\n", "text/csv", 415, "content-type"),
])
def test_malformed_bodies_get_a_clear_4xx_naming_the_field(app_and_store: tuple[TestClient, Path], body: bytes,
                                                           ctype: str, code: int, says: str) -> None:
    client, _ = app_and_store
    r = client.post("/v1/log", content=body, headers={**_h(WRITE), "Content-Type": ctype})
    assert r.status_code == code, r.text
    assert says in r.json()["detail"]
    assert _rows_stored(client) == 0


def test_query_parameter_errors_name_the_parameter(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    r = client.get("/v1/log", params={"limit": 0}, headers=_h(READ))
    assert r.status_code == 422 and "query.limit" in r.json()["detail"]
    r = client.get("/v1/log", params={"since": "last tuesday"}, headers=_h(READ))
    assert r.status_code == 422 and "query.since" in r.json()["detail"]
    r = client.post("/v1/events", json=[{"id": "e1", "kind": "deployment"}], headers=_h(WRITE))
    assert r.status_code == 422 and "body[0]" in r.json()["detail"]
    r = client.post("/v1/lineage", json={"feature.x": "input.x"}, headers=_h(WRITE))
    assert r.status_code == 422 and "body.feature.x" in r.json()["detail"]


# ------------------------------------------------------------------------------------------------ round trips


def test_ingest_then_query_round_trip(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    r = client.post("/v1/log", json=_rows(30), headers=_h(WRITE))
    assert r.json() == {"accepted": 30, "quarantined": 0, "reasons": []}
    arrow = pa.Table.from_pylist(_rows(20, start=30))
    r = client.post("/v1/log", content=table_to_ipc(arrow, Compression.ZSTD),
                    headers={**_h(WRITE), "Content-Type": ARROW_STREAM_MEDIA_TYPE})
    assert r.json()["accepted"] == 20
    # The same request ids again are duplicates, not new rows.
    client.post("/v1/log", json=_rows(5), headers=_h(WRITE))
    assert client.post("/v1/labels", json=[{"request_id": "r1", "label": 1}, {"request_id": "r2", "label": 0}],
                       headers=_h(WRITE)).json()["accepted"] == 2
    assert client.post("/v1/events", json=[{"id": "ev-1", "ts": "2026-03-02T05:00:00Z", "kind": "deployment",
                                            "target": "model:m", "description": "v2"}],
                       headers=_h(WRITE)).json()["accepted"] == 1
    assert client.post("/v1/lineage", json={"feature.x": ["input.x"]}, headers=_h(WRITE)).status_code == 200

    status = client.get("/v1/status", headers=_h(READ)).json()
    assert status["rows"] == 50 and status["labels"] == 2 and status["events"] == 1
    assert status["models"][0]["name"] == "m"
    got = client.get("/v1/log", params={"model": "m", "limit": 100}, headers=_h(READ)).json()
    assert got["total"] == 50
    assert sorted(r["request_id"] for r in got["rows"]) == sorted(f"r{i}" for i in range(50))
    one = next(r for r in got["rows"] if r["request_id"] == "r7")
    assert one["score"] == pytest.approx(0.7) and one["feature.x"] == 7.0
    window = client.get("/v1/log", params={"since": "2026-03-02T05:00:00Z", "until": "2026-03-02T06:00:00Z"},
                        headers=_h(READ)).json()
    assert {r["request_id"] for r in window["rows"]} == {f"r{i}" for i in range(50) if i % 24 == 5}
    assert [e["id"] for e in client.get("/v1/events", headers=_h(READ)).json()] == ["ev-1"]
    metrics = client.get("/metrics", headers=_h(READ)).text
    assert 'mlsleuth_ingested_rows_total{kind="log",model="m"} 50.0' in metrics


def test_reference_upload_then_monitors_and_pages(app_and_store: tuple[TestClient, Path]) -> None:
    client, store = app_and_store
    ref = [{"feature.x": float(i % 50), "score": (i % 10) / 10, "prediction": i % 2} for i in range(400)]
    r = client.post("/v1/models/m/reference", json=ref, headers=_h(WRITE))
    assert r.status_code == 200 and r.json()["rows"] == 400
    assert (store / "profiles" / "m" / "reference.json").exists()
    client.post("/v1/log", json=_rows(200), headers=_h(WRITE))
    report = client.get("/v1/models/m/monitors", params={"window": "1d"}, headers=_h(READ)).json()
    assert report["rows"] == 200 and "findings" in report
    assert client.get("/v1/models/m/monitors", params={"window": "soon"}, headers=_h(READ)).status_code == 422
    assert client.get("/v1/models/nope/monitors", headers=_h(READ)).status_code == 404
    page = client.get("/models/m", headers=_h(READ))
    assert page.status_code == 200 and 'id="drift"' in page.text and "Plotly.newPlot" in page.text
    assert "cdn" not in page.text.lower()
    js = client.get("/static/plotly.min.js", headers=_h(READ))
    assert js.status_code == 200 and "plotly" in js.text[:2000].lower()


def test_pages_escape_user_data(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    evil = "<script>alert(1)</script>"
    client.post("/v1/log", json=_rows(50, model="m"), headers=_h(WRITE))
    client.post("/v1/events", json=[{"id": evil, "ts": "2026-03-02T05:00:00Z", "kind": "config", "target": evil,
                                     "description": evil}], headers=_h(WRITE))
    page = client.get("/models/m", headers=_h(READ)).text
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ------------------------------------------------------------------------------------------------ the SDK over HTTP


@pytest.fixture
def live_server(tmp_path: Path, serve_app: Any) -> Iterator[tuple[str, Path]]:
    with serve_app(lambda _base: create_app(ServerConfig(store=tmp_path / "live", tokens=TOKENS))) as base:
        yield base, tmp_path / "live"


def test_http_sink_lands_rows_in_the_store(live_server: tuple[str, Path]) -> None:
    from mlsleuth.store import LocalStore

    url, store = live_server
    sink = HttpSink(url, token=WRITE, trust_env=False, retries=0)
    sink.write(pa.Table.from_pylist(_rows(120)))
    sink.write(pa.Table.from_pylist(_rows(80, start=120)))
    s = LocalStore.open(store)
    assert s.status().rows == 200
    assert set(s.read_log(model="m").column("request_id").to_pylist()) == {f"r{i}" for i in range(200)}
    with pytest.raises(CaptureError, match="403"):
        HttpSink(url, token=READ, trust_env=False, retries=0).write(pa.Table.from_pylist(_rows(3, start=500)))
    assert LocalStore.open(store).status().rows == 200


# ------------------------------------------------------------------------------------------------ config


def test_config_from_toml_and_environment(tmp_path: Path) -> None:
    p = tmp_path / "server.toml"
    p.write_text('store = "s"\nmax_body_mb = 2\n[tokens]\n"a" = "read"\n[alerts]\ninterval_seconds = 5\n'
                 'webhooks = ["http://127.0.0.1:9/hook"]\n[[alerts.rules]]\nname = "r1"\nmodel = "fraud"\n'
                 'monitor = "prediction_drift"\ncolumn = "score"\nwindow = "1h"\ncooldown = "12h"\n',
                 encoding="utf-8")
    cfg = load_config(p, environ={"MLSLEUTH_TOKENS": "b:write,a:write"})
    assert cfg.store == Path("s") and cfg.max_body_bytes == 2 * 1024 * 1024
    assert cfg.tokens == {"a": Scope.WRITE, "b": Scope.WRITE}
    assert cfg.rules[0].cooldown == timedelta(hours=12) and cfg.rules[0].column == "score"
    assert cfg.alert_interval == 5
    with pytest.raises(ConfigError, match="'read' or 'write'"):
        parse_tokens("a:admin")
    with pytest.raises(ConfigError, match="unknown monitor 'drifty'"):
        AlertRule("x", "m", "drifty")
    p.write_text('[[alerts.rules]]\nname = "r"\nmodel = "m"\nmonitor = "volume"\nwindow = "often"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"alerts.rules\[0\].window"):
        load_config(p, environ={})


# ------------------------------------------------------------------------------------------------ alerts on the demo


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(json.loads(self.rfile.read(n)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: ClassVar[list[dict[str, object]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    finally:
        httpd.shutdown()
        thread.join(5)


@pytest.mark.slow
def test_demo_week_streamed_day_by_day_fires_exactly_one_alert(tmp_path: Path,
                                                               webhook: tuple[str, list[dict[str, object]]]) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mlsleuth.testing import DEMO_ONSET, demo_case

    url, received = webhook
    case = demo_case(0, rows=40_000)
    case_dir = case.write(tmp_path / "case")
    rule = AlertRule("fraud-score-drift", "fraud", "prediction_drift", column="score", window=timedelta(hours=1),
                     lookback=timedelta(days=1), cooldown=timedelta(days=2))
    cfg = ServerConfig(store=tmp_path / "store", tokens=TOKENS, rules=(rule,), webhooks=(url,), alert_interval=0,
                       public_url="http://mlsleuth.test")
    with TestClient(create_app(cfg), headers=_h(WRITE)) as client:
        ref = pq.read_table(case_dir / "reference.parquet")
        assert client.post("/v1/models/fraud/reference", content=table_to_ipc(ref, Compression.ZSTD),
                           headers={"Content-Type": ARROW_STREAM_MEDIA_TYPE}).status_code == 200
        events = [json.loads(line) for line in (case_dir / "events.jsonl").read_text().splitlines() if line]
        assert client.post("/v1/events", json=events).status_code == 200
        assert client.post("/v1/lineage", content=(case_dir / "lineage.json").read_bytes(),
                           headers={"Content-Type": "application/json"}).status_code == 200
        log = case.log
        days = pc.floor_temporal(log.column("ts"), unit="day")
        sent_after: list[str] = []
        for day in sorted(set(days.to_pylist())):
            part = log.filter(pc.equal(days, pa.scalar(day, days.type)))
            r = client.post("/v1/log", content=table_to_ipc(part, Compression.ZSTD),
                            headers={"Content-Type": ARROW_STREAM_MEDIA_TYPE})
            assert r.status_code == 200 and r.json()["accepted"] == part.num_rows
            # Twice per day: the second evaluation must not repeat an alert (de-duplication).
            for _ in range(2):
                if client.post("/v1/alerts/evaluate").json()["sent"]:
                    sent_after.append(day.date().isoformat())
        assert len(received) == 1, received
        assert sent_after == [DEMO_ONSET.date().isoformat()]
        text = str(received[0]["text"])
        assert "fraud-score-drift" in text and "prediction_drift" in text
        assert "http://mlsleuth.test/models/fraud/incident?" in text

        metrics = client.get("/metrics").text
        assert 'mlsleuth_alert_firing{column="score",rule="fraud-score-drift"} 1.0' in metrics
        assert 'mlsleuth_drift_score{column="feature.amount_to_avg_ratio",model="fraud"}' in metrics
        assert 'mlsleuth_alerts_sent_total{column="score",rule="fraud-score-drift"} 1.0' in metrics

        link = text.split("<", 1)[1].split("|", 1)[0].removeprefix("http://mlsleuth.test")
        page = client.get(link)
        assert page.status_code == 200
        assert "upstream_data_change" in page.text and "feature.amount_to_avg_ratio" in page.text
        md = client.get("/v1/models/fraud/diagnosis", params={"format": "md"})
        assert "Post-mortem" in md.text
        overview = client.get("/").text
        assert "alerting" in overview and "open the diagnosis" in overview


def test_shipped_config_and_grafana_dashboard_match_the_server() -> None:
    import re

    from mlsleuth.server import Metrics

    deploy = Path(__file__).resolve().parent.parent / "deploy"
    cfg = load_config(deploy / "mlsleuth-server.toml", environ={})
    assert [r.name for r in cfg.rules] == ["fraud-score-drift", "fraud-feature-drift"]
    exposed = set(re.findall(r"^# TYPE (\w+) ", Metrics().render(), flags=re.M))
    dashboard = json.loads((deploy / "grafana" / "mlsleuth-dashboard.json").read_text(encoding="utf-8"))
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"mlsleuth_\w+", t["expr"])}
    assert used and used <= exposed, used - exposed


def test_stream_week_sends_log_events_and_due_labels(live_server: tuple[str, Path]) -> None:
    from mlsleuth.server import stream_week
    from mlsleuth.store import LocalStore

    url, store = live_server
    log = pa.Table.from_pylist(_rows(48)).set_column(1, "ts", pa.array(
        [f"2026-03-02T{i // 2:02d}:{(i % 2) * 30:02d}:00Z" for i in range(48)]).cast(pa.timestamp("us", tz="UTC")))
    labels = pa.table({"request_id": ["r0", "r1"], "label": [1, 0],
                       "label_ts": pa.array(["2026-03-02T03:00:00Z", "2099-01-01T00:00:00Z"]).cast(
                           pa.timestamp("us", tz="UTC"))})
    seen: list[int] = []
    sent = stream_week(url, WRITE, model="m", log=log, reference=pa.Table.from_pylist(_rows(200)), labels=labels,
                       events=[{"id": "ev", "ts": "2026-03-02T10:00:00Z", "kind": "deployment"}],
                       lineage={"feature.x": ["input.x"]}, seconds_per_step=0.0,
                       on_step=lambda clock, n: seen.append(n))
    assert sent == 48 and seen[-1] == 48 and len(seen) == 24
    s = LocalStore.open(store)
    status = s.status()
    assert status.rows == 48 and status.events == 1 and status.labels == 1  # the 2099 label is not due yet
    assert (store / "profiles" / "m" / "reference.json").exists()


def test_alert_engine_deduplicates_and_respects_the_cooldown(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from mlsleuth.monitors import Finding, Severity
    from mlsleuth.server import AlertEngine
    from mlsleuth.store import LocalStore

    firing = {"now": True}

    class Scripted(AlertEngine):
        def _findings(self, rule: AlertRule, clock: datetime) -> list[Finding]:
            if not firing["now"]:
                return []
            return [Finding("prediction_drift", "score", clock - timedelta(hours=1), clock, (), "jensen_shannon",
                            0.3, 0.2, Severity.WARNING, 500, "js vs training", "score moved")]

    posted: list[tuple[str, object]] = []
    rule = AlertRule("r", "m", "prediction_drift", column="score", cooldown=timedelta(hours=6))
    engine = Scripted(LocalStore.init(tmp_path / "s"), [rule], ["http://hook"], base_url="http://x",
                      notify=lambda url, payload: posted.append((url, payload)))
    t0 = datetime(2026, 3, 6, 18, tzinfo=UTC)
    assert len(engine.evaluate(t0)) == 1
    assert engine.evaluate(t0 + timedelta(hours=1)) == ()  # still firing: de-duplicated
    firing["now"] = False
    assert engine.evaluate(t0 + timedelta(hours=2)) == ()  # resolved
    firing["now"] = True
    assert engine.evaluate(t0 + timedelta(hours=3)) == ()  # fires again inside the cooldown: held back
    firing["now"] = False
    engine.evaluate(t0 + timedelta(hours=4))
    firing["now"] = True
    again = engine.evaluate(t0 + timedelta(hours=7))  # after the cooldown: sent
    assert len(again) == 1 and len(posted) == 2
    assert posted[0][0] == "http://hook" and "http://x/models/m/incident?" in str(posted[0][1])


def test_rules_are_evaluated_on_a_schedule(tmp_path: Path) -> None:
    rule = AlertRule("r", "nobody", "volume")
    app = create_app(ServerConfig(store=tmp_path / "s", tokens=TOKENS, rules=(rule,), alert_interval=0.05))
    with TestClient(app, headers=_h(READ)) as client:
        deadline = time.monotonic() + 20
        while "mlsleuth_alert_evaluations_total 0" in client.get("/metrics").text or \
                "mlsleuth_alert_evaluations_total " not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the schedule never evaluated the rules"
            time.sleep(0.05)


def test_compare_two_logged_versions(app_and_store: tuple[TestClient, Path]) -> None:
    client, _ = app_and_store
    rows = _rows(300)
    for r in rows[150:]:
        r["model_version"] = "v2"
    for i in range(0, 300, 100):
        client.post("/v1/log", json=rows[i:i + 100], headers=_h(WRITE))
    r = client.get("/v1/models/m/compare", params={"a": "v1", "b": "v2"}, headers=_h(READ))
    assert r.status_code == 200, r.text
    assert r.json()["design"] == "split"
    missing = client.get("/v1/models/m/compare", params={"a": "v1", "b": "v9"}, headers=_h(READ))
    assert missing.status_code == 422 and "v9" in missing.json()["detail"]
    assert client.get("/v1/models/m/compare", params={"a": "v1"}, headers=_h(READ)).status_code == 422


def test_public_names_of_the_server_package() -> None:
    import mlsleuth.server as server

    assert server.__all__ == sorted(server.__all__)
    assert set(server.__all__) == {
        "Alert", "AlertEngine", "AlertRule", "AlertState", "AuthSettings", "DriftMatrix", "IncidentSettings", "Limits",
        "Metrics", "Scope", "ServerConfig", "create_app", "demo_config", "drift_matrix", "load_config", "parse_table",
        "parse_tokens", "post_webhook", "serve", "stream_week"}
    assert all(hasattr(server, name) for name in server.__all__)
