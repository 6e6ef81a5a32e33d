"""The service's incidents: detection on demand and on a schedule, one message per change and webhook, the API,
the pages, the Prometheus gauge, a restart, the config, and the demo's incident."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("plotly")

from fastapi.testclient import TestClient

from mlsleuth.errors import ConfigError
from mlsleuth.server import IncidentSettings, Scope, ServerConfig, create_app, load_config
from mlsleuth.store import LocalStore
from mlsleuth.testing import make_case

READ, WRITE = "incident-reader", "incident-writer"
TOKENS = {READ: Scope.READ, WRITE: Scope.WRITE}
HOOKS = ("http://hooks.example/a", "http://hooks.example/b")
BASE = "http://mlsleuth.example"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def faulty_week(errors_between: Any) -> tuple[pa.Table, datetime]:
    """A week of the fraud model whose serving starts failing on its third evening, and the onset."""
    case = make_case(None, seed=6, rows=40_000)
    start = case.log.column("ts")[0].as_py()
    onset = start + timedelta(days=2, hours=20)
    return errors_between(case.log, onset, onset + timedelta(days=2)), onset


def _until(log: pa.Table, t: datetime) -> pa.Table:
    ts = log.column("ts")
    return log.filter(pc.less(ts, pa.scalar(t, ts.type)))


def _config(store: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(store=store, tokens=TOKENS, webhooks=HOOKS, public_url=BASE, alert_interval=0, **kw)


@pytest.fixture
def posted() -> list[tuple[str, Any]]:
    return []


@pytest.fixture
def opened(tmp_path: Path, faulty_week: tuple[pa.Table, datetime],
           posted: list[tuple[str, Any]]) -> Iterator[tuple[TestClient, Path, dict[str, Any]]]:
    """A server whose store holds the fault's first two hours, after one check: the incident it opened."""
    log, onset = faulty_week
    store = LocalStore.init(tmp_path / "store")
    store.append_log(_until(log, onset + timedelta(hours=2)))
    store.close()
    app = create_app(_config(tmp_path / "store"), notify=lambda url, payload: posted.append((url, payload)))
    with TestClient(app) as client:
        r = client.post("/v1/incidents/check", headers=_h(WRITE))
        assert r.status_code == 200, r.text
        (change,) = r.json()["changes"]
        yield client, tmp_path / "store", change


def test_a_check_opens_one_incident_and_sends_one_message_per_webhook_naming_the_cause(
        opened: tuple[TestClient, Path, dict[str, Any]], posted: list[tuple[str, Any]],
        faulty_week: tuple[pa.Table, datetime]) -> None:
    client, _, change = opened
    _, onset = faulty_week
    incident = change["incident"]
    assert change["kind"] == "opened" and incident["model"] == "fraud" and incident["status"] == "open"
    assert incident["top"]["cause"] == "serving_infrastructure"
    assert abs(datetime.fromisoformat(incident["top"]["onset"]) - onset) <= timedelta(hours=1)
    assert sorted(url for url, _ in posted) == sorted(HOOKS)
    link = f"{BASE}/models/fraud/incidents/{incident['id']}"
    for _, payload in posted:
        assert "opened" in payload["text"] and "serving infrastructure" in payload["text"]
        assert f"<{link}|open the incident>" in payload["text"]
    # Nothing new in the store: no check runs and nothing is sent.
    again = client.post("/v1/incidents/check", headers=_h(WRITE))
    assert again.json()["changes"] == [] and len(posted) == 2
    metrics = client.get("/metrics", headers=_h(READ)).text
    assert 'mlsleuth_incidents_open{cause="serving_infrastructure",model="fraud"} 1.0' in metrics
    assert 'mlsleuth_incident_notifications_total{kind="opened",model="fraud"} 2.0' in metrics


def test_more_of_the_same_fault_joins_the_open_incident_silently(
        opened: tuple[TestClient, Path, dict[str, Any]], posted: list[tuple[str, Any]],
        faulty_week: tuple[pa.Table, datetime]) -> None:
    client, _, change = opened
    log, onset = faulty_week
    ts = log.column("ts")
    more = log.filter(pc.and_(pc.greater_equal(ts, pa.scalar(onset + timedelta(hours=2), ts.type)),
                              pc.less(ts, pa.scalar(onset + timedelta(hours=4), ts.type))))
    assert client.post("/v1/log", content=_ipc(more), headers={
        **_h(WRITE), "Content-Type": "application/vnd.apache.arrow.stream"}).json()["accepted"] == more.num_rows
    assert client.post("/v1/incidents/check", headers=_h(WRITE)).json()["changes"] == []
    assert len(posted) == 2
    (only,) = client.get("/v1/incidents", headers=_h(READ)).json()["incidents"]
    assert only["id"] == change["incident"]["id"]
    assert datetime.fromisoformat(only["last_seen"]) >= onset + timedelta(hours=3)


def _ipc(table: pa.Table) -> bytes:
    from mlsleuth.capture import Compression, table_to_ipc

    return table_to_ipc(table, Compression.ZSTD)


def test_the_incident_is_listed_readable_acknowledged_with_write_and_kept_across_a_restart(
        opened: tuple[TestClient, Path, dict[str, Any]], posted: list[tuple[str, Any]]) -> None:
    client, store, change = opened
    ident = change["incident"]["id"]
    listed = client.get("/v1/incidents", params={"model": "fraud", "status": "open"}, headers=_h(READ)).json()
    assert [i["id"] for i in listed["incidents"]] == [ident]
    assert client.get("/v1/incidents", params={"status": "resolved"}, headers=_h(READ)).json()["incidents"] == []
    assert client.get("/v1/incidents", params={"model": "other"}, headers=_h(READ)).json()["incidents"] == []
    bad = client.get("/v1/incidents", params={"status": "closed"}, headers=_h(READ))
    assert bad.status_code == 422 and "status" in bad.json()["detail"]
    one = client.get(f"/v1/models/fraud/incidents/{ident}", headers=_h(READ)).json()
    assert one["history"][0]["kind"] == "opened" and one["link"].endswith(f"/models/fraud/incidents/{ident}")
    missing = client.get("/v1/models/fraud/incidents/nope", headers=_h(READ))
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]

    url = f"/v1/models/fraud/incidents/{ident}/acknowledge"
    denied = client.post(url, headers=_h(READ))
    assert denied.status_code == 403 and "needs write" in denied.json()["detail"]
    assert client.post("/v1/incidents/check", headers=_h(READ)).status_code == 403
    acked = client.post(url, params={"by": "oncall"}, headers=_h(WRITE)).json()
    assert acked["status"] == "acknowledged" and acked["history"][-1]["note"] == "oncall"
    assert client.post("/v1/models/fraud/incidents/nope/acknowledge", headers=_h(WRITE)).status_code == 404
    # The page's button (a browser) is sent back to the page, which no longer offers it.
    page = client.get(f"/models/fraud/incidents/{ident}", headers=_h(READ)).text
    assert 'id="acknowledge"' not in page and ">acknowledged<" in page
    back = client.post(url, headers={**_h(WRITE), "Accept": "text/html"}, follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == f"/models/fraud/incidents/{ident}"

    # A new server on the same store: the incident and its acknowledgement are still there, and counted.
    with TestClient(create_app(_config(store), notify=lambda url, payload: posted.append((url, payload)))) as again:
        (kept,) = again.get("/v1/incidents", headers=_h(READ)).json()["incidents"]
        assert kept["id"] == ident and kept["status"] == "acknowledged"
        assert 'mlsleuth_incidents_open{cause="serving_infrastructure",model="fraud"} 1.0' in again.get(
            "/metrics", headers=_h(READ)).text


def test_the_pages_list_the_incident_and_show_its_cause_and_history_escaped(
        opened: tuple[TestClient, Path, dict[str, Any]]) -> None:
    client, _, change = opened
    ident = change["incident"]["id"]
    page = client.get("/incidents", headers=_h(READ))
    assert page.status_code == 200 and ident in page.text and "serving_infrastructure" in page.text
    assert 'href="/incidents"' in page.text
    overview = client.get("/", headers=_h(READ)).text
    assert overview.index(ident) < overview.index("Recent alerts")
    detail = client.get(f"/models/fraud/incidents/{ident}", headers=_h(READ))
    assert detail.status_code == 200 and f'action="/v1/models/fraud/incidents/{ident}/acknowledge"' in detail.text
    for part in ("serving_infrastructure", "opened", "/models/fraud/incident?since=", "format=md",
                 'id="incident-timeline"'):
        assert part in detail.text, part
    assert client.get("/models/fraud/incidents/nope", headers=_h(READ)).status_code == 404
    assert client.get("/incidents").status_code == 401


def test_the_incident_page_escapes_what_came_from_data(tmp_path: Path) -> None:
    from mlsleuth.diagnosis import Cause
    from mlsleuth.incidents import Incident, IncidentCause, IncidentLog

    evil = "<script>alert(1)</script>"
    cause = IncidentCause(Cause.UPSTREAM_DATA_CHANGE, 0.9, datetime.fromisoformat("2026-03-06T18:00:00+00:00"),
                          features=(evil,), events=(evil,), first_step=evil)
    incident = Incident.open("fraud", cause, datetime.fromisoformat("2026-03-06T18:20:00+00:00"))
    LocalStore.init(tmp_path / "s").close()
    IncidentLog(tmp_path / "s").put(incident)
    with TestClient(create_app(_config(tmp_path / "s"))) as client:
        for path in ("/incidents", f"/models/fraud/incidents/{incident.id}"):
            text = client.get(path, headers=_h(READ)).text
            assert evil not in text and "&lt;script&gt;" in text, path
        # Its data is gone (or was never here): the record still shows, saying why there is no timeline.
        assert "no requests of model" in client.get(f"/models/fraud/incidents/{incident.id}", headers=_h(READ)).text


def test_the_generic_json_format_and_a_failing_webhook_that_is_counted_not_raised(
        tmp_path: Path, faulty_week: tuple[pa.Table, datetime]) -> None:
    log, onset = faulty_week
    store = LocalStore.init(tmp_path / "s")
    store.append_log(_until(log, onset + timedelta(hours=2)))
    store.close()
    got: list[tuple[str, Any]] = []

    def notify(url: str, payload: Any) -> None:
        if url.endswith("/down"):
            raise OSError("connection refused")
        if url.endswith("/broken"):
            raise ValueError("a hook with a bug")
        got.append((url, payload))

    settings = IncidentSettings(webhooks=("http://hooks.example/down", "http://hooks.example/broken",
                                          "http://hooks.example/json"), format="json")
    with TestClient(create_app(_config(tmp_path / "s", incidents=settings), notify=notify)) as client:
        (change,) = client.post("/v1/incidents/check", headers=_h(WRITE)).json()["changes"]
        metrics = client.get("/metrics", headers=_h(READ)).text
    ((url, body),) = got  # the alerts' webhooks are replaced by the incidents' own
    assert url == "http://hooks.example/json" and body["event"] == "incident.opened"
    assert body["incident"]["id"] == change["incident"]["id"]
    assert body["incident"]["top"]["cause"] == "serving_infrastructure"
    assert 'mlsleuth_incident_notify_failures_total{model="fraud"} 2.0' in metrics


def test_detection_runs_on_its_schedule(tmp_path: Path, faulty_week: tuple[pa.Table, datetime],
                                        posted: list[tuple[str, Any]]) -> None:
    import time

    log, onset = faulty_week
    store = LocalStore.init(tmp_path / "s")
    store.append_log(_until(log, onset + timedelta(hours=2)))
    store.close()
    settings = IncidentSettings(interval=0.05)
    app = create_app(_config(tmp_path / "s", incidents=settings), notify=lambda u, p: posted.append((u, p)))
    with TestClient(app) as client:
        deadline = time.monotonic() + 600
        while not client.get("/v1/incidents", headers=_h(READ)).json()["incidents"]:
            assert time.monotonic() < deadline, "the schedule never opened the incident"
            time.sleep(0.2)
    assert len(posted) == len(HOOKS)


def test_the_incidents_config_is_read_and_its_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[alerts]\nwebhooks = ["https://hooks.example/alerts"]\n[incidents]\ninterval_seconds = 30\n'
                    'lookback = "2d"\nresolve_after = "12h"\njoin_hours = 3\nformat = "json"\n', encoding="utf-8")
    cfg = load_config(path, store=tmp_path / "s", environ={})
    inc = cfg.incidents
    assert (inc.enabled, inc.interval, inc.format, inc.webhooks) == (True, 30.0, "json", None)
    policy = inc.policy()
    assert (policy.lookback, policy.resolve_after, policy.join_hours) == (timedelta(days=2), timedelta(hours=12),
                                                                          3.0)
    assert load_config(None, store=tmp_path / "s", environ={}).incidents == IncidentSettings()
    for body, key in (('format = "xml"', "incidents.format"), ('lookback = "soon"', "incidents.lookback"),
                      ('resolve_after = "0s"', "incidents.resolve_after"),
                      ('interval_seconds = "often"', "incidents.interval_seconds"),
                      ("interval_seconds = 0", "incidents.interval_seconds"),
                      ("join_hours = -1", "incidents.join_hours"), ('enabled = "yes"', "incidents.enabled"),
                      ('webhooks = ["ftp://x"]', "incidents.webhooks"), ("colour = 1", "incidents")):
        path.write_text(f"[incidents]\n{body}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
            load_config(path, store=tmp_path / "s", environ={})
        assert info.value.column == key, body
    path.write_text('incidents = "on"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="incidents"):
        load_config(path, store=tmp_path / "s", environ={})


def test_the_demo_store_opens_one_incident_naming_the_upstream_data_change(tmp_path: Path) -> None:
    from mlsleuth.testing import DEMO_ONSET, demo_case, ingest_case

    case = demo_case(0, rows=40_000)
    (upstream,) = [e["id"] for e in case.events or () if e["kind"] == "upstream"
                   and e["target"] == "source:warehouse.customer_stats"]
    ingest_case(case.write(tmp_path / "case"), tmp_path / "store").close()
    posted: list[tuple[str, Any]] = []
    with TestClient(create_app(_config(tmp_path / "store"), notify=lambda u, p: posted.append((u, p)))) as client:
        (change,) = client.post("/v1/incidents/check", headers=_h(WRITE)).json()["changes"]
    top = change["incident"]["top"]
    assert change["kind"] == "opened" and change["incident"]["model"] == "fraud"
    assert top["cause"] == "upstream_data_change"
    assert "feature.amount_to_avg_ratio" in top["features"] and "input.avg_amount_30d" in top["inputs"]
    assert top["events"][:1] == [upstream]
    assert abs(datetime.fromisoformat(top["onset"]) - DEMO_ONSET) <= timedelta(minutes=30)
    assert len(posted) == len(HOOKS)
    for part in ("upstream data change", "feature.amount_to_avg_ratio", upstream, "Fri 2026-03-06 1"):
        assert part in posted[0][1]["text"], part


def test_the_demo_config_checks_for_incidents_every_two_seconds_and_keeps_the_operators_settings(
        tmp_path: Path) -> None:
    from mlsleuth.server import AlertRule, demo_config

    mine = AlertRule("mine", "fraud", "volume")
    cfg = demo_config(_config(tmp_path / "s", rules=(mine,), incidents=IncidentSettings(format="json")), "tok")
    assert cfg.incidents.interval == 2.0 and cfg.incidents.format == "json" and cfg.incidents.enabled
    assert cfg.alert_interval == 2.0 and cfg.rules == (mine,)
    assert cfg.tokens["tok"] is Scope.WRITE and cfg.tokens[READ] is Scope.READ


def test_stream_week_runs_detection_every_check_every_of_data_time(tmp_path: Path, serve_app: Any) -> None:
    import httpx

    from mlsleuth.server import stream_week

    rows = [{"request_id": f"r{i}", "ts": f"2026-03-02T{i // 4:02d}:{(i % 4) * 15:02d}:00Z", "model": "m",
             "feature.x": float(i), "score": (i % 10) / 10} for i in range(20)]  # five hours
    log = pa.Table.from_pylist(rows)
    log = log.set_column(1, "ts", log.column("ts").cast(pa.timestamp("us", tz="UTC")))
    # The server's own schedule is off: every check is one the stream asked for.
    off = IncidentSettings(enabled=False)
    with serve_app(lambda _base: create_app(_config(tmp_path / "s", incidents=off))) as base:
        sent = stream_week(base, WRITE, model="m", log=log, reference=log, seconds_per_step=0.0,
                           check_every=timedelta(hours=2))
        metrics = httpx.get(f"{base}/metrics", headers=_h(READ), trust_env=False).text
    assert sent == 20
    # After the second and the fourth hour; the fifth is not two hours past the last check.
    assert 'mlsleuth_incident_checks_total{model="m"} 2.0' in metrics
