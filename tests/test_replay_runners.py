"""Model and pipeline runners: estimators, entry points, pipelines, the in-memory runner, and a real HTTP endpoint."""

from __future__ import annotations

import json
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.linear_model import LogisticRegression

from mlsleuth.errors import ConfigError, ReadError, RunnerError, SchemaError
from mlsleuth.replay import (
    EstimatorRunner,
    Frame,
    FunctionRunner,
    HttpRunner,
    MemoryRunner,
    PipelineRunner,
    Runner,
    load_pipeline,
    load_runner,
)


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, pa.Table]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"ratio": rng.lognormal(0, 0.5, 500), "velocity": rng.random(500)})
    y = (x["ratio"] + rng.normal(0, 0.3, 500) > 1.2).astype(int)
    model = LogisticRegression().fit(x, y)
    # The log holds the features in a different order than the model was fitted with, plus other columns.
    table = pa.table({"request_id": [f"r{i}" for i in range(500)], "feature.velocity": x["velocity"],
                      "feature.ratio": x["ratio"], "score": np.zeros(500)})
    return model, table


def expected_scores(model: LogisticRegression, table: pa.Table) -> np.ndarray[Any, Any]:
    frame = pd.DataFrame({"ratio": table["feature.ratio"].to_numpy(), "velocity": table["feature.velocity"].to_numpy()})
    return np.asarray(model.predict_proba(frame)[:, 1])


def test_estimator_runner_orders_features_as_fitted_and_batches(fitted: tuple[LogisticRegression, pa.Table]) -> None:
    model, table = fitted
    want = expected_scores(model, table)
    runner = EstimatorRunner(model, batch_size=64)
    assert isinstance(runner, Runner)
    np.testing.assert_allclose(runner.run(table), want)
    np.testing.assert_allclose(EstimatorRunner(model, batch_size=None).run(table), want)


def test_estimator_runner_names_a_missing_feature(fitted: tuple[LogisticRegression, pa.Table]) -> None:
    model, table = fitted
    with pytest.raises(SchemaError, match=r"feature\.ratio"):
        EstimatorRunner(model).run(table.drop_columns(["feature.ratio"]))


class PredictOnly:
    """A duck-typed model (like a LightGBM/XGBoost regressor through the sklearn API): only ``predict``."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def predict(self, x: pd.DataFrame) -> np.ndarray[Any, Any]:
        self.seen.append(list(x.columns))
        return np.asarray(x["a"] * 0.1)


class ThreeClass:
    classes_ = np.array(["low", "mid", "high"])

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray[Any, Any]:
        return np.tile([0.2, 0.3, 0.5], (len(x), 1))


def test_duck_typed_models_and_class_choice() -> None:
    table = pa.table({"feature.b": [1.0, 2.0], "feature.a": [3.0, 4.0]})
    m = PredictOnly()
    np.testing.assert_allclose(EstimatorRunner(m, feature_order=["a", "feature.b"]).run(table), [0.3, 0.4])
    assert m.seen == [["a", "b"]]
    with pytest.raises(RunnerError, match="positive_class"):
        EstimatorRunner(ThreeClass()).run(table)
    np.testing.assert_allclose(EstimatorRunner(ThreeClass(), positive_class="mid").run(table), [0.3, 0.3])
    with pytest.raises(ConfigError, match="not among the model's classes"):
        EstimatorRunner(ThreeClass(), positive_class="nope")
    with pytest.raises(ConfigError, match="predict_proba or predict"):
        EstimatorRunner(object())


def test_model_errors_are_translated() -> None:
    class Broken:
        def predict(self, x: Any) -> Any:
            raise ValueError("bad input")

    with pytest.raises(RunnerError, match=r"Broken.*ValueError: bad input"):
        EstimatorRunner(Broken()).run(pa.table({"feature.a": [1.0]}))


def test_function_runner_frames() -> None:
    table = pa.table({"feature.a": [1.0, 2.0], "feature.b": [10.0, 20.0], "other": ["x", "y"]})

    def on_pandas(x):  # type: ignore[no-untyped-def]  # unannotated: the contract's DataFrame
        assert isinstance(x, pd.DataFrame) and list(x.columns) == ["a", "b"]
        return x["a"] / x["b"]

    def on_arrow(x: pa.Table) -> Any:
        return pc.divide(x["a"], x["b"]).to_numpy()

    def on_dict(x: dict[str, np.ndarray[Any, Any]]) -> Any:
        return x["a"] / x["b"]

    for fn, frame in ((on_pandas, Frame.PANDAS), (on_arrow, Frame.ARROW), (on_dict, Frame.NUMPY)):
        runner = FunctionRunner(fn)
        assert runner.frame is frame
        np.testing.assert_allclose(runner.run(table), [0.1, 0.1])
    with pytest.raises(RunnerError, match="expected 2 scores"):
        FunctionRunner(lambda x: [0.5]).run(table)


def test_memory_runner_counts_batches() -> None:
    runner = MemoryRunner(lambda t: pc.multiply(t["feature.x"], 2.0), batch_size=4)
    out = runner.run(pa.table({"feature.x": np.arange(10, dtype=float)}))
    np.testing.assert_allclose(out, np.arange(10) * 2.0)
    assert (runner.calls, runner.rows) == (3, 10)


def test_pipeline_runner_strips_and_adds_prefixes() -> None:
    table = pa.table({"input.amount": [10.0, 100.0], "input.avg": [20.0, 50.0], "feature.ratio": [0.0, 0.0]})

    def features(x: pd.DataFrame) -> pd.DataFrame:
        assert list(x.columns) == ["amount", "avg"]
        return pd.DataFrame({"ratio": x["amount"] / x["avg"], "feature.log_amount": np.log(x["amount"])})

    out = PipelineRunner(features, batch_size=1).run(table)
    assert out.column_names == ["feature.ratio", "feature.log_amount"]
    np.testing.assert_allclose(out["feature.ratio"].to_numpy(), [0.5, 2.0])

    def prefixed(x: dict[str, Any]) -> dict[str, Any]:
        return {"feature.ratio": x["input.amount"] / x["input.avg"]}

    out = load_pipeline(prefixed, keep_prefix=True).run(table)
    np.testing.assert_allclose(out["feature.ratio"].to_numpy(), [0.5, 2.0])
    with pytest.raises(RunnerError, match="expected 2 rows"):
        PipelineRunner(lambda x: {"ratio": [1.0]}).run(table)
    with pytest.raises(RunnerError, match="KeyError"):
        PipelineRunner(lambda x: {"ratio": x["missing"]}).run(table)


# --------------------------------------------------------------------------- loading from specs

MODULE = '''
import numpy as np

def score(x):
    return np.asarray(x["a"]) * 0.5

def features(x: dict) -> dict:
    return {"double": x["amount"] * 2}

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg / "models.py"
    for name in ("userpkg", "userpkg.models"):
        sys.modules.pop(name, None)


def test_load_runner_from_files_entry_points_and_urls(tmp_path: Path, user_module: Path,
                                                       fitted: tuple[LogisticRegression, pa.Table]) -> None:
    model, table = fitted
    want = expected_scores(model, table)
    joblib.dump(model, tmp_path / "model.joblib")
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    for name in ("model.joblib", "model.pkl"):
        runner = load_runner(tmp_path / name)
        assert isinstance(runner, EstimatorRunner)
        np.testing.assert_allclose(runner.run(table), want)
    small = pa.table({"feature.a": [1.0, 4.0]})
    for spec in ("userpkg.models:score", f"{user_module}:score"):
        np.testing.assert_allclose(load_runner(spec).run(small), [0.5, 2.0])
    assert isinstance(load_runner("http://127.0.0.1:9/predict"), HttpRunner)
    out = load_pipeline("userpkg.models:features").run(pa.table({"input.amount": [1.5]}))
    assert out.to_pydict() == {"feature.double": [3.0]}


def test_load_runner_errors_name_the_spec(tmp_path: Path, user_module: Path) -> None:
    with pytest.raises(ReadError, match=r"missing\.joblib.*not found"):
        load_runner(tmp_path / "missing.joblib")
    (tmp_path / "corrupt.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ReadError, match=r"corrupt\.pkl.*cannot load"):
        load_runner(tmp_path / "corrupt.pkl")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"unknown model file type .\.onnx."):
        load_runner(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match=r"cannot import module .nosuchpkg\.mod."):
        load_runner("nosuchpkg.mod:fn")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load_runner("userpkg.models:nope")
    with pytest.raises(ConfigError, match="estimator with predict_proba/predict or a callable, got int"):
        load_runner("userpkg.models:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="expected a model file"):
        load_runner("just some words")


# --------------------------------------------------------------------------- HTTP endpoint


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out leaves a broken pipe behind; that is the point of the test


class Endpoint:
    """A real HTTP model server on 127.0.0.1: scores ``a * 0.1``, with scripted failures."""

    def __init__(self) -> None:
        self.posts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_first: int = 0
        self.status_on_fail = 503
        self.delay = 0.0
        self.bodies: list[Any] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with endpoint.lock:
                    endpoint.posts += 1
                    n = endpoint.posts
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    endpoint.bodies.append(body)
                    time.sleep(endpoint.delay)
                finally:
                    # Out of flight before the answer leaves: once the client reads it, the same client
                    # thread may post its next batch before this handler thread is scheduled again.
                    with endpoint.lock:
                        endpoint.in_flight -= 1
                if n <= endpoint.fail_first:
                    self.send_response(endpoint.status_on_fail)
                    self.end_headers()
                    self.wfile.write(b"try later")
                    return
                scores = [None if r["a"] is None else r["a"] * 0.1 for r in body["instances"]]
                payload = json.dumps({"predictions": scores}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


def test_http_runner_batches_concurrently_within_the_limit(endpoint: Endpoint) -> None:
    endpoint.delay = 0.02
    table = pa.table({"feature.a": np.arange(95, dtype=float), "feature.b": np.ones(95)})
    runner = HttpRunner(endpoint.url, batch_size=10, max_concurrency=3, feature_order=["a"])
    np.testing.assert_allclose(runner.run(table), np.arange(95) * 0.1)
    assert endpoint.posts == 10
    assert endpoint.max_in_flight <= 3
    assert all(set(inst) == {"a"} for body in endpoint.bodies for inst in body["instances"])


def test_http_runner_sends_nan_as_null(endpoint: Endpoint) -> None:
    out = HttpRunner(endpoint.url).run(pa.table({"feature.a": [1.0, float("nan")]}))
    assert out[0] == pytest.approx(0.1) and np.isnan(out[1])
    assert endpoint.bodies[0]["instances"][1] == {"a": None}


def test_http_runner_retries_server_errors_with_backoff(endpoint: Endpoint) -> None:
    endpoint.fail_first = 2
    runner = HttpRunner(endpoint.url, retries=3, backoff=0.01)
    np.testing.assert_allclose(runner.run(pa.table({"feature.a": [2.0]})), [0.2])
    assert endpoint.posts == 3 and runner.attempts == 3


def test_http_runner_gives_up_after_retries(endpoint: Endpoint) -> None:
    endpoint.fail_first = 100
    with pytest.raises(RunnerError, match=r"no answer after 3 attempts.*HTTP 503"):
        HttpRunner(endpoint.url, retries=2, backoff=0.0).run(pa.table({"feature.a": [2.0]}))
    assert endpoint.posts == 3


def test_http_runner_does_not_retry_client_errors(endpoint: Endpoint) -> None:
    endpoint.fail_first = 100
    endpoint.status_on_fail = 400
    with pytest.raises(RunnerError, match="HTTP 400: try later"):
        HttpRunner(endpoint.url, retries=3, backoff=0.0).run(pa.table({"feature.a": [2.0]}))
    assert endpoint.posts == 1


def test_http_runner_times_out(endpoint: Endpoint) -> None:
    endpoint.delay = 0.5
    with pytest.raises(RunnerError, match="no answer after 2 attempts"):
        HttpRunner(endpoint.url, timeout=0.05, retries=1, backoff=0.0).run(pa.table({"feature.a": [2.0]}))


def test_http_runner_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="http"):
        HttpRunner("ftp://example.com")
    with pytest.raises(ConfigError, match="max_concurrency"):
        HttpRunner("http://127.0.0.1/", max_concurrency=0)


def test_the_replay_public_surface_changes_only_on_purpose() -> None:
    import subprocess

    import mlsleuth.replay as replay_api

    assert replay_api.__all__ == sorted(replay_api.__all__)
    assert replay_api.__all__ == [
        "Comparison", "Design", "EstimatorRunner", "FeatureSkew", "Frame", "FunctionRunner", "HttpRunner",
        "LogSource", "MemoryRunner", "Metric", "MetricCheck", "MetricTest", "Metrics", "Outcome", "PipelineRunner",
        "Rate", "ReplayResult", "RequestDiff", "Runner", "ScoreSummary", "SegmentComparison", "SegmentReplay",
        "Selection", "SkewReport", "Tolerance", "Verdict", "Verification", "compare", "compare_offline",
        "infer_threshold", "load_pipeline", "load_runner", "parse_segments", "read_checked", "read_hypothesis",
        "read_request_ids", "replay", "select", "skew_check", "verify",
    ]
    # Importing replay pulls in no ML framework, no pandas and no HTTP client: they load when a runner needs them.
    code = ("import sys, mlsleuth.replay; heavy = ('pandas', 'sklearn', 'httpx', 'joblib', 'mlsleuth.testing'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
