"""The capture SDK: the Logger never raises or blocks, loses nothing it does not count, and writes contract rows."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlsleuth.capture import (
    ARROW_STREAM_MEDIA_TYPE,
    CaptureMiddleware,
    Compression,
    HttpSink,
    Logger,
    LoggerStats,
    MemorySink,
    Sink,
    StoreSink,
    default_extract,
    table_to_ipc,
)
from mlsleuth.errors import CaptureError, ConfigError


def accounted(s: LoggerStats) -> int:
    return (
        s.sampled_out + s.queued + s.written + s.dropped_queue_full + s.dropped_sink_error + s.dropped_internal
        + s.dropped_closed
    )


class FailingSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, table: pa.Table) -> None:
        self.calls += 1
        raise OSError("disk on fire")


class BlockingSink(MemorySink):
    """Blocks in write() until released, so the queue behind it fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, table: pa.Table) -> None:
        self.entered.set()
        self.release.wait(30)
        super().write(table)


def log_from_threads(logger: Logger, n_threads: int, per_thread: int) -> None:
    def work(t: int) -> None:
        for i in range(per_thread):
            logger.log(
                f"t{t}-{i}",
                inputs={"amount": float(i), "country": "DE" if i % 2 else "FR"},
                features={"amount_log": i * 0.1},
                score=(i % 100) / 100,
                prediction=i % 2,
                latency_ms=1.5,
                region="EU",
            )

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


# -- volume and exactly-once ----------------------------------------------------------------------------------


def test_100k_requests_from_8_threads_reach_a_memory_sink_exactly_once() -> None:
    sink = MemorySink()
    logger = Logger(sink, model="fraud", model_version="3", max_queue=200_000)
    log_from_threads(logger, 8, 12_500)
    assert logger.flush(timeout=60)
    s = logger.stats()
    assert (s.logged, s.written, s.queued, s.dropped) == (100_000, 100_000, 0, 0)
    ids = sink.table().column("request_id")
    assert len(ids) == 100_000
    assert pc.count_distinct(ids).as_py() == 100_000
    logger.close()


def test_100k_requests_from_8_threads_reach_the_local_store_exactly_once(tmp_path: Any) -> None:
    from mlsleuth.store import LocalStore

    store = LocalStore.init(tmp_path / "store")
    sink = StoreSink(store)
    logger = Logger(sink, model="fraud", model_version="3", batch_size=10_000, max_queue=200_000)
    log_from_threads(logger, 8, 12_500)
    assert logger.close(timeout=120)
    s = logger.stats()
    assert (s.logged, s.written, s.dropped) == (100_000, 100_000, 0)
    assert (sink.accepted, sink.quarantined) == (100_000, 0)
    got = LocalStore.open(tmp_path / "store").sql(
        "SELECT count(*) AS n, count(DISTINCT request_id) AS d, min(model) AS m FROM log"
    ).to_pylist()[0]
    assert got == {"n": 100_000, "d": 100_000, "m": "fraud"}
    expected = {f"t{t}-{i}" for t in range(8) for i in range(12_500)}
    read = LocalStore.open(tmp_path / "store").read_log()
    assert set(read.column("request_id").to_pylist()) == expected


# -- failures are counted, never raised -----------------------------------------------------------------------


def test_store_sink_reports_the_rows_the_store_quarantined(tmp_path: Any) -> None:
    from mlsleuth.store import LocalStore

    sink = StoreSink(LocalStore.init(tmp_path / "store"))
    logger = Logger(sink, model="fraud")
    logger.log("r1", score=0.5)
    logger.log("r1", score=0.6)  # a duplicate id: the store keeps the first and quarantines the second
    logger.log("r2", score=None, prediction=None)  # neither score nor prediction
    assert logger.close()
    assert logger.stats().written == 3
    assert (sink.accepted, sink.quarantined) == (1, 2)
    assert LocalStore.open(tmp_path / "store").read_log().column("request_id").to_pylist() == ["r1"]


def test_a_sink_that_always_fails_never_raises_and_every_drop_is_counted() -> None:
    sink = FailingSink()
    logger = Logger(sink, batch_size=100, retries=2, retry_backoff=0.0)
    for i in range(1_050):
        logger.log(i, score=0.5)
    assert logger.flush(timeout=30)
    s = logger.stats()
    assert s.logged == 1_050
    assert s.dropped_sink_error == 1_050
    assert s.written == 0 and s.batches_written == 0 and s.queued == 0
    assert accounted(s) == s.logged
    assert s.last_error is not None and "disk on fire" in s.last_error
    assert sink.calls == 11 * 3  # 11 batches, each tried 1 + 2 retries
    assert logger.close()


def test_a_sink_that_fails_now_and_then_loses_only_the_failed_batches() -> None:
    class Flaky(MemorySink):
        n = 0

        def write(self, table: pa.Table) -> None:
            self.n += 1
            if self.n % 2 == 0:
                raise RuntimeError("every second batch fails")
            super().write(table)

    sink = Flaky()
    logger = Logger(sink, batch_size=10)
    for i in range(100):
        logger.log(i, score=0.1)
        if i % 10 == 9:
            logger.flush()
    s = logger.stats()
    assert s.written == sink.num_rows == 50
    assert s.dropped_sink_error == 50
    assert accounted(s) == s.logged == 100


def test_a_full_queue_drops_and_counts_and_log_returns_at_once() -> None:
    sink = BlockingSink()
    logger = Logger(sink, batch_size=5, max_queue=10, flush_interval=60)
    for i in range(5):  # a full batch wakes the worker, which then blocks inside the sink
        logger.log(f"a{i}", score=0.1)
    assert sink.entered.wait(10)
    for i in range(100):  # 10 fit in the queue, 90 do not; none of these calls may wait for the sink
        logger.log(f"b{i}", score=0.2)
    s = logger.stats()
    assert s.dropped_queue_full == 90
    assert s.queued == 15  # 5 inside the sink + 10 waiting
    assert s.written == 0
    sink.release.set()
    assert logger.flush(timeout=30)
    s = logger.stats()
    assert s.written == 15 and s.dropped_queue_full == 90 and s.logged == 105
    assert accounted(s) == s.logged
    assert set(sink.table().column("request_id").to_pylist()) == {f"a{i}" for i in range(5)} | {
        f"b{i}" for i in range(10)
    }
    logger.close()


def test_records_the_logger_cannot_convert_are_dropped_alone_and_counted() -> None:
    sink = MemorySink()
    logger = Logger(sink, batch_size=10)
    logger.log("good1", inputs={"x": 1}, score=0.1)
    logger.log("bad", inputs=[1, 2, 3], score=0.2)  # type: ignore[arg-type]  # not a mapping
    logger.log("good2", inputs={"x": 2}, score=0.3)
    assert logger.flush()
    s = logger.stats()
    assert (s.written, s.dropped_internal, s.logged) == (2, 1, 3)
    assert sink.table().column("request_id").to_pylist() == ["good1", "good2"]
    assert s.last_error is not None


def test_logging_after_close_is_counted_not_raised() -> None:
    logger = Logger(MemorySink())
    logger.log("r1", score=0.5)
    assert logger.close()
    logger.log("r2", score=0.5)
    s = logger.stats()
    assert (s.written, s.dropped_closed, s.logged) == (1, 1, 2)
    assert logger.closed


def test_constructor_rejects_bad_settings_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        Logger(MemorySink(), batch_size=0)
    with pytest.raises(ConfigError, match="sample_rate"):
        Logger(MemorySink(), sample_rate=1.5)
    with pytest.raises(ConfigError, match="hash_key"):
        Logger(MemorySink(), hash_fields=["user_id"])
    with pytest.raises(ConfigError, match="write"):
        Logger(object())  # type: ignore[arg-type]


# -- batching by size and time, flush on close and on collection ---------------------------------------------


def test_a_partial_batch_is_written_after_flush_interval_without_any_flush_call() -> None:
    sink = MemorySink()
    logger = Logger(sink, batch_size=1000, flush_interval=0.05)
    logger.log("r1", score=0.5)
    deadline = time.monotonic() + 10
    while sink.num_rows == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.num_rows == 1
    logger.close()


def test_batches_are_cut_at_batch_size() -> None:
    sink = MemorySink()
    logger = Logger(sink, batch_size=7, flush_interval=60)
    for i in range(30):
        logger.log(i, score=0.5)
    assert logger.close()
    sizes = [t.num_rows for t in sink.tables]
    assert sum(sizes) == 30 and max(sizes) <= 7
    assert logger.stats().batches_written == len(sizes)


def test_a_garbage_collected_logger_flushes_what_it_queued() -> None:
    sink = MemorySink()
    logger = Logger(sink, flush_interval=60)
    logger.log("r1", score=0.5)
    del logger
    gc.collect()
    assert sink.table().column("request_id").to_pylist() == ["r1"]


# -- row format -----------------------------------------------------------------------------------------------


def test_rows_follow_the_log_contract() -> None:
    sink = MemorySink()
    logger = Logger(sink, model="fraud", model_version="3")
    before = datetime.now(UTC)
    logger.log(
        "r1",
        inputs={"amount": 12.5, "tags": ["a", "b"]},
        features={"amount_log": 2.5, "bucket": "high"},
        prediction="deny",
        score=0.93,
        latency_ms=4.2,
        lineage={"snapshot": "fs-2026-03-06"},
        region="EU",
    )
    logger.log(
        "r2", model="fraud-shadow", model_version="4", inputs={"amount": 3}, score=0.1, error="fallback",
        **{"ts": "user-supplied", "channel": "web"},  # type: ignore[arg-type]
    )
    assert logger.close()
    t = sink.table()
    assert t.column_names[:4] == ["request_id", "ts", "model", "model_version"]
    assert {"input.amount", "input.tags", "feature.amount_log", "feature.bucket", "score", "prediction",
            "latency_ms", "error", "lineage.snapshot", "region", "channel", "meta.ts"} <= set(t.column_names)
    assert t.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert t.schema.field("score").type == pa.float64()
    ts = t.column("ts").to_pylist()
    assert all(before - timedelta(seconds=1) <= x <= datetime.now(UTC) for x in ts)
    rows = t.to_pylist()
    assert rows[0]["model"] == "fraud" and rows[1]["model"] == "fraud-shadow"
    assert rows[1]["model_version"] == "4" and rows[1]["error"] == "fallback"
    assert rows[0]["input.tags"] == '["a","b"]'  # nested inputs are kept as JSON text
    assert rows[1]["feature.amount_log"] is None and rows[1]["meta.ts"] == "user-supplied"
    assert rows[0]["lineage.snapshot"] == "fs-2026-03-06"


# -- sampling, redaction, hashing -----------------------------------------------------------------------------


def test_sampling_keeps_about_the_configured_share_counts_the_rest_and_is_reproducible() -> None:
    def run(seed: int) -> tuple[LoggerStats, list[str]]:
        sink = MemorySink()
        logger = Logger(sink, sample_rate=0.25, seed=seed)
        for i in range(20_000):
            logger.log(str(i), score=0.5)
        assert logger.close()
        return logger.stats(), sink.table().column("request_id").to_pylist()

    s, kept = run(7)
    assert s.logged == 20_000
    assert s.written == len(kept) == 20_000 - s.sampled_out
    assert 4_700 <= s.written <= 5_300  # 25% of 20k; > 9 standard deviations apart from failing by chance
    assert run(7)[1] == kept
    assert run(8)[1] != kept


def test_redacted_fields_never_reach_the_sink_and_hashed_fields_still_join() -> None:
    key = b"secret-key"
    sink = MemorySink()
    logger = Logger(sink, redact=["email", "feature.name"], hash_fields=["user_id", "region"], hash_key=key)
    logger.log("r1", inputs={"email": "a@b.c", "user_id": 42, "amount": 1.0}, features={"name": "Ann"},
               score=0.2, region="EU")
    logger.log("r2", inputs={"email": None, "user_id": 42, "amount": 2.0}, features={"name": "Bob"},
               score=0.3, region="US")
    assert logger.close()
    rows = sink.table().to_pylist()
    assert [r["input.email"] for r in rows] == ["[redacted]", None]
    assert [r["feature.name"] for r in rows] == ["[redacted]", "[redacted]"]
    expected = hmac.new(key, b"42", "sha256").hexdigest()[:16]
    assert rows[0]["input.user_id"] == rows[1]["input.user_id"] == expected
    assert rows[0]["region"] != rows[1]["region"] and rows[0]["region"] != "EU"
    assert [r["input.amount"] for r in rows] == [1.0, 2.0]
    flat = str(rows)
    assert "a@b.c" not in flat and "Ann" not in flat and "Bob" not in flat


def test_redaction_can_store_nulls_and_a_different_key_gives_different_hashes() -> None:
    def first_row(key: bytes) -> dict[str, Any]:
        sink = MemorySink()
        logger = Logger(sink, redact=["input.ssn"], redact_with=None, hash_fields=["user_id"], hash_key=key)
        logger.log("r", inputs={"ssn": "123", "user_id": "u1"}, score=0.1)
        assert logger.close()
        return sink.table().to_pylist()[0]

    a, b = first_row(b"k1"), first_row(b"k2")
    assert a["input.ssn"] is None
    assert a["input.user_id"] != b["input.user_id"]


def test_a_field_cannot_be_both_redacted_and_hashed() -> None:
    with pytest.raises(ConfigError, match=r"input\.email"):
        Logger(MemorySink(), redact=["email"], hash_fields=["input.email"], hash_key=b"k")


# -- fork -----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork")
def test_a_forked_child_logs_with_its_own_thread_and_not_the_parents_queue() -> None:
    sink = MemorySink()
    logger = Logger(sink, batch_size=1000, flush_interval=60)
    for i in range(3):
        logger.log(f"parent{i}", score=0.1)  # still queued at fork time
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only; never return into pytest
        code = 1
        try:
            ok = logger.stats().queued == 0
            for i in range(5):
                logger.log(f"child{i}", score=0.2)
            ok = ok and logger.flush(timeout=10)
            ids = sink.table().column("request_id").to_pylist() if sink.num_rows else []
            ok = ok and ids == [f"child{i}" for i in range(5)] and logger.stats().written == 5
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert logger.flush()
    assert sink.table().column("request_id").to_pylist() == [f"parent{i}" for i in range(3)]
    logger.close()


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork")
def test_a_forked_child_writes_to_the_store_through_its_own_handle(tmp_path: Any) -> None:
    from mlsleuth.store import LocalStore

    store = LocalStore.init(tmp_path / "store")
    store.sql("SELECT 1")  # the parent has used its engine before the fork
    logger = Logger(StoreSink(store), model="fraud")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(5):
                logger.log(f"child{i}", score=0.2)
            code = 0 if logger.close(timeout=20) and logger.stats().written == 5 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ids = LocalStore.open(tmp_path / "store").read_log().column("request_id").to_pylist()
    assert sorted(ids) == [f"child{i}" for i in range(5)]
    logger.close()


# -- decorator ------------------------------------------------------------------------------------------------


def test_capture_decorator_logs_score_latency_and_inputs() -> None:
    sink = MemorySink()
    logger = Logger(sink, model="fraud")

    @logger.capture(model_version="3", request_id=lambda row: row["id"], features=lambda row: {"x2": row["x"] * 2},
                    channel="api")
    def predict(row: dict[str, Any]) -> float:
        return 0.75

    assert predict({"id": "r1", "x": 2.0}) == 0.75
    assert predict.__name__ == "predict"
    assert logger.close()
    row = sink.table().to_pylist()[0]
    assert (row["request_id"], row["model"], row["model_version"], row["score"]) == ("r1", "fraud", "3", 0.75)
    assert row["input.x"] == 2.0 and row["feature.x2"] == 4.0 and row["channel"] == "api"
    assert row["latency_ms"] >= 0 and row["error"] is None


def test_capture_decorator_logs_the_error_and_reraises_the_callers_own_exception() -> None:
    sink = MemorySink()
    logger = Logger(sink)
    boom = ValueError("bad amount")

    @logger.capture(model="m")
    def predict(row: dict[str, Any]) -> float:
        raise boom

    with pytest.raises(ValueError) as info:
        predict({"x": 1})
    assert info.value is boom
    assert logger.close()
    row = sink.table().to_pylist()[0]
    assert row["error"] == "ValueError: bad amount" and row["score"] is None


def test_capture_decorator_swallows_only_its_own_failures() -> None:
    logger = Logger(MemorySink())

    def broken_id(*args: Any) -> str:
        raise KeyError("no id")

    @logger.capture(request_id=broken_id)
    def predict(row: dict[str, Any]) -> dict[str, Any]:
        return {"score": 0.4, "prediction": "ok"}

    assert predict({"x": 1}) == {"score": 0.4, "prediction": "ok"}
    assert logger.close()
    s = logger.stats()
    assert s.dropped_internal == 1 and "no id" in (s.last_error or "")


def test_capture_decorator_on_async_functions_and_with_an_extractor() -> None:
    sink = MemorySink()
    logger = Logger(sink)

    @logger.capture(extract=lambda out: (out[1], out[0]))
    async def predict(row: dict[str, Any]) -> tuple[str, float]:
        await asyncio.sleep(0)
        return ("approve", 0.05)

    assert asyncio.run(predict({"x": 1})) == ("approve", 0.05)
    assert logger.close()
    row = sink.table().to_pylist()[0]
    assert (row["prediction"], row["score"]) == ("approve", 0.05)


def test_default_extract_understands_numbers_labels_and_dicts() -> None:
    np = pytest.importorskip("numpy")
    assert default_extract(np.float32(0.5)) == (0.5, None)
    assert default_extract(np.array([0.25])) == (0.25, None)
    assert default_extract(True) == (None, True)
    assert default_extract({"prediction": 1}) == (None, 1)
    assert default_extract(object()) == (None, None)


# -- ASGI middleware ------------------------------------------------------------------------------------------


def make_app(logger: Logger) -> Any:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> dict[str, Any]:
        return {"score": body["amount"] / 100, "prediction": "deny" if body["amount"] > 50 else "approve"}

    @app.post("/predict/broken")
    async def broken(body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("model not loaded")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(CaptureMiddleware, logger=logger, model="fraud", model_version="3")
    return app


def test_middleware_logs_model_requests_with_inputs_outputs_and_request_ids() -> None:
    testclient = pytest.importorskip("fastapi.testclient")
    sink = MemorySink()
    logger = Logger(sink)
    client = testclient.TestClient(make_app(logger))
    r = client.post("/predict", json={"amount": 80.0, "country": "DE"}, headers={"X-Request-ID": "req-1"})
    assert r.json() == {"score": 0.8, "prediction": "deny"}
    r2 = client.post("/predict", json={"amount": 10.0, "country": "FR"})
    generated = r2.headers["x-request-id"]
    assert client.get("/health").status_code == 200
    assert logger.close()
    rows = sink.table().to_pylist()
    assert [r["request_id"] for r in rows] == ["req-1", generated]
    assert len(generated) == 32
    assert rows[0]["input.amount"] == 80.0 and rows[0]["input.country"] == "DE"
    assert (rows[0]["score"], rows[0]["prediction"], rows[0]["model"], rows[0]["model_version"]) == (
        0.8, "deny", "fraud", "3"
    )
    assert rows[1]["prediction"] == "approve" and rows[0]["error"] is None
    assert all(r["latency_ms"] > 0 for r in rows)


def test_middleware_records_server_errors_and_leaves_the_response_alone() -> None:
    testclient = pytest.importorskip("fastapi.testclient")
    sink = MemorySink()
    logger = Logger(sink)
    client = testclient.TestClient(make_app(logger), raise_server_exceptions=False)
    r = client.post("/predict/broken", json={"amount": 1.0})
    assert r.status_code == 500
    assert logger.close()
    row = sink.table().to_pylist()[0]
    assert "model not loaded" in row["error"] and row["input.amount"] == 1.0 and row["score"] is None


# -- HTTP sink ------------------------------------------------------------------------------------------------


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], pa.Table]]
    statuses: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            table = pa.ipc.open_stream(io.BytesIO(body)).read_all()
            self.received.append((self.path, dict(self.headers), table))
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Collector]]]:
    handler = type("Handler", (_Collector,), {"received": [], "statuses": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_sink_posts_arrow_batches_with_the_token(server: tuple[str, type[_Collector]]) -> None:
    url, handler = server
    sink = HttpSink(url + "/", token="s3cret", compression="zstd", trust_env=False)
    assert isinstance(sink, Sink)
    logger = Logger(sink, model="fraud", batch_size=50)
    for i in range(120):
        logger.log(f"r{i}", inputs={"amount": float(i)}, score=0.5)
    assert logger.close()
    assert logger.stats().written == 120
    paths = {p for p, _, _ in handler.received}
    assert paths == {"/v1/log"}
    headers = handler.received[0][1]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == ARROW_STREAM_MEDIA_TYPE
    table = pa.concat_tables([t for _, _, t in handler.received])
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(120))


def test_http_sink_retries_server_errors_but_not_rejections(server: tuple[str, type[_Collector]]) -> None:
    url, handler = server
    batch = pa.table({"request_id": ["a"], "score": [0.1]})
    handler.statuses[:] = [503, 500]
    HttpSink(url, retries=2, backoff=0.0, compression=Compression.NONE, trust_env=False).write(batch)
    assert len(handler.received) == 1
    handler.statuses[:] = [401]
    with pytest.raises(CaptureError, match="401"):
        HttpSink(url, retries=5, backoff=0.0, trust_env=False).write(batch)
    assert handler.statuses == []  # exactly one attempt


def _free_port() -> int:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _collector_on(port: int) -> Iterator[type[_Collector]]:
    """The collecting server of the ``server`` fixture, on a port chosen beforehand (the server comes back)."""
    handler = type("Handler", (_Collector,), {"received": [], "statuses": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    th = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        yield handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _ids(handler: type[_Collector]) -> list[str]:
    return [i for _, _, t in handler.received for i in t.column("request_id").to_pylist()]


def test_http_sink_to_nowhere_without_a_spool_fails_into_the_logger_counters() -> None:
    port = _free_port()
    sink = HttpSink(f"http://127.0.0.1:{port}", retries=1, backoff=0.0, timeout=2, trust_env=False,
                    spool_max_bytes=0)
    logger = Logger(sink)
    logger.log("r1", score=0.1)
    assert logger.close()
    s = logger.stats()
    assert s.dropped_sink_error == 1 and "127.0.0.1" in (s.last_error or "")


def test_an_in_memory_spool_closed_while_the_server_is_down_counts_its_rows_as_dropped() -> None:
    sink = HttpSink(f"http://127.0.0.1:{_free_port()}", retries=0, backoff=0.01, trust_env=False)
    logger = Logger(sink)
    logger.log("r1", score=0.1)
    assert logger.close()
    assert logger.stats().written == 1  # the sink took it, into its spool
    assert sink.stats().spooled_rows == 1
    assert not sink.close(timeout=0.2)
    s = sink.stats()
    assert (s.spooled_rows, s.dropped_rows, s.dropped_batches) == (0, 1, 1)
    assert "127.0.0.1" in (s.last_error or "")


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_a_server_down_longer_than_the_retry_budget_loses_nothing_once_it_returns(tmp_path: Any,
                                                                                   on_disk: bool) -> None:
    port = _free_port()
    sink = HttpSink(f"http://127.0.0.1:{port}", retries=1, backoff=0.01, max_backoff=0.1, trust_env=False,
                    spool_dir=tmp_path / "spool" if on_disk else None)
    logger = Logger(sink, model="fraud", batch_size=50)
    for i in range(230):
        logger.log(f"r{i:03d}", inputs={"amount": float(i)}, score=0.5)
    assert logger.flush()
    s = logger.stats()
    assert (s.written, s.dropped) == (230, 0)  # nothing dropped: the batches wait in the spool
    spooled = sink.stats()
    assert spooled.spooled_rows == 230 and spooled.sent_rows == 0
    if on_disk:  # one file per batch
        assert len(list((tmp_path / "spool").glob("*/*.arrows"))) == spooled.spooled_batches
    with _collector_on(port) as handler:  # the server is back, on the same port
        assert sink.flush(timeout=30)
        logger.log("r230", score=0.5)  # after the spool drained, batches go straight out again
        assert logger.close()
    assert _ids(handler) == [f"r{i:03d}" for i in range(231)]  # all of them, once, in the order logged
    st = sink.stats()
    assert (st.sent_rows, st.resent_rows, st.spooled_rows, st.dropped_rows) == (231, 230, 0, 0)
    if on_disk:
        assert list((tmp_path / "spool").glob("*/*.arrows")) == []


def _ids_batch(first: int, n: int = 20) -> pa.Table:
    return pa.table({"request_id": [f"r{i:04d}" for i in range(first, first + n)], "score": [0.5] * n})


def test_a_spool_over_its_cap_drops_the_oldest_batches_and_counts_them(tmp_path: Any) -> None:
    port = _free_port()
    size = len(table_to_ipc(_ids_batch(0), Compression.NONE))
    # room for two batches and a half; the resender's first retry waits long enough not to interfere
    sink = HttpSink(f"http://127.0.0.1:{port}", retries=0, backoff=60.0, compression="none", trust_env=False,
                    spool_dir=tmp_path, spool_max_bytes=2 * size + size // 2)
    for k in range(5):
        sink.write(_ids_batch(20 * k))
    s = sink.stats()
    assert (s.spooled_batches, s.dropped_batches, s.dropped_rows) == (2, 3, 60)
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("*/*.arrows")) == ["20.arrows", "20.arrows"]
    sink.close(timeout=0)
    with _collector_on(port) as handler:
        revived = HttpSink(f"http://127.0.0.1:{port}", trust_env=False, spool_dir=tmp_path)
        assert revived.flush(timeout=30)
    assert _ids(handler) == [f"r{i:04d}" for i in range(60, 100)]  # the newest two batches survived


def test_a_batch_bigger_than_the_whole_spool_is_dropped_and_counted() -> None:
    sink = HttpSink(f"http://127.0.0.1:{_free_port()}", retries=0, trust_env=False, spool_max_bytes=10)
    logger = Logger(sink)
    logger.log("r1", score=0.1)
    assert logger.flush()
    assert (sink.stats().dropped_rows, sink.stats().spooled_rows) == (1, 0)


_DIE_AFTER_SPOOLING = """
import os, signal, sys
import pyarrow as pa
from mlsleuth.capture import HttpSink
sink = HttpSink(sys.argv[1], retries=0, trust_env=False, spool_dir=sys.argv[2])
sink.write(pa.table({"request_id": ["a1", "a2", "a3"], "score": [0.1, 0.2, 0.3]}))
sink.write(pa.table({"request_id": ["a4"], "score": [0.4]}))
assert sink.stats().spooled_rows == 4
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="adopting a dead process's spool needs flock")
def test_a_spool_left_by_a_killed_process_is_resent_by_the_next_one_and_a_live_ones_is_not(tmp_path: Any) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # a live sink's spool in the same folder belongs to it, not to the next sink
    alive = HttpSink(f"http://127.0.0.1:{_free_port()}", retries=0, backoff=60.0, trust_env=False,
                     spool_dir=tmp_path)
    alive.write(pa.table({"request_id": ["b1"], "score": [0.5]}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _DIE_AFTER_SPOOLING, url, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(list(tmp_path.glob("*/*.arrows"))) == 3
    with _collector_on(port) as handler:
        sink = HttpSink(url, trust_env=False, spool_dir=tmp_path)  # starts resending what the dead one left
        assert sink.flush(timeout=30)
        assert _ids(handler) == ["a1", "a2", "a3", "a4"]
        assert sink.stats().resent_rows == 4
    assert alive.stats().spooled_rows == 1
    assert len(list(tmp_path.glob("*/*.arrows"))) == 1  # b1, still waiting for its own server
    alive.close(timeout=0)


def test_http_sink_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="url"):
        HttpSink("ftp://x")
    with pytest.raises(ConfigError, match="compression"):
        HttpSink("http://x", compression="brotli")
    with pytest.raises(ConfigError, match="spool_max_bytes"):
        HttpSink("http://x", spool_max_bytes=-1)
    with pytest.raises(ConfigError, match="spool_dir"):
        HttpSink("http://x", spool_dir=__file__)  # a file, not a folder


def test_rows_with_different_keys_are_unioned_into_columns_with_nulls() -> None:
    sink = MemorySink()
    logger = Logger(sink)
    logger.log("r1", features={"a": 1.0, "b": 2.0}, score=0.1)
    logger.log("r2", features={"a": 3.0, "c": 4.0}, score=0.2)  # same number of keys, not the same keys
    logger.log("r3", features=None, score=0.3)
    assert logger.close()
    t = sink.table()
    assert t.column("feature.a").to_pylist() == [1.0, 3.0, None]
    assert t.column("feature.b").to_pylist() == [2.0, None, None]
    assert t.column("feature.c").to_pylist() == [None, 4.0, None]


def test_middleware_takes_query_parameters_as_inputs_and_an_extractor_for_features() -> None:
    fastapi = pytest.importorskip("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")
    app = fastapi.FastAPI()

    @app.get("/predict/score")
    async def score(amount: float) -> float:
        return amount / 10

    sink = MemorySink()
    logger = Logger(sink)
    app.add_middleware(CaptureMiddleware, logger=logger, model="m",
                       extract=lambda req, resp: {"features": {"scaled": resp}, "channel": "api"})
    client = testclient.TestClient(app)
    assert client.get("/predict/score", params={"amount": "4"}).json() == 0.4
    assert logger.close()
    row = sink.table().to_pylist()[0]
    assert (row["input.amount"], row["score"], row["feature.scaled"], row["channel"]) == ("4", 0.4, 0.4, "api")


class _LoseFirstAnswer:
    """ASGI wrapper: the first ``POST /v1/log`` is stored by the app but answered 503, as when the server dies
    between storing a batch and answering."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lost = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/log" and not self.lost:
            self.lost += 1

            async def swallow(message: Any) -> None:
                pass

            await self.app(scope, receive, swallow)
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def test_a_batch_resent_after_its_answer_was_lost_is_stored_once(tmp_path: Any, serve_app: Any) -> None:
    from mlsleuth.server import Scope, ServerConfig, create_app
    from mlsleuth.store import LocalStore

    store = tmp_path / "store"
    wrapper = _LoseFirstAnswer(create_app(ServerConfig(store=store, tokens={"w": Scope.WRITE})))
    with serve_app(lambda _base: wrapper) as url:
        sink = HttpSink(url, token="w", retries=0, backoff=0.01, trust_env=False)
        logger = Logger(sink, model="fraud", batch_size=100)
        for i in range(100):
            logger.log(f"r{i}", score=0.5)
        assert logger.flush()
        assert sink.flush(timeout=30)
        assert logger.close()
    assert wrapper.lost == 1
    s = sink.stats()
    assert (s.sent_rows, s.resent_rows, s.dropped_rows) == (100, 100, 0)  # it was sent twice
    counts = LocalStore.open(store).sql(
        "SELECT count(*) AS n, count(DISTINCT request_id) AS ids FROM log").to_pylist()[0]
    assert counts == {"n": 100, "ids": 100}  # and stored once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_spools_into_a_folder_of_its_own_and_no_batch_is_sent_twice(tmp_path: Any) -> None:
    port = _free_port()
    sink = HttpSink(f"http://127.0.0.1:{port}", retries=0, backoff=0.01, max_backoff=0.1, trust_env=False,
                    spool_dir=tmp_path)
    sink.write(pa.table({"request_id": ["p1"], "score": [0.1]}))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            sink.write(pa.table({"request_id": ["c1"], "score": [0.2]}))
            code = 0 if sink.stats().spooled_rows == 1 else 1  # its own batch, not the parent's
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len([d for d in tmp_path.iterdir() if any(d.glob("*.arrows"))]) == 2
    with _collector_on(port) as handler:
        assert sink.flush(timeout=30)  # the parent sends its own batch
        later = HttpSink(f"http://127.0.0.1:{port}", trust_env=False, spool_dir=tmp_path)  # adopts the child's
        assert later.flush(timeout=30)
    assert sorted(_ids(handler)) == ["c1", "p1"]
    sink.close(timeout=0)
