"""The Spark engine: the same DuckDB-dialect SQL, the same result types, the same store and monitor answers.

One local Spark session serves the whole module (a JVM takes 10-60 s to start). The tests are
skipped, with the reason, only when no Java runtime is installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsleuth.errors import ConfigError, EngineError
from mlsleuth.monitors import ArrowSource, Performance, ServingHealth, StoredReference, build_reference, run_monitors
from mlsleuth.schema import ChangeEvent, Lineage
from mlsleuth.stats import auc, log_loss
from mlsleuth.store import (
    ENGINE_ENV,
    SPARK_MASTER_ENV,
    DuckDBEngine,
    Engine,
    EngineChoice,
    EngineKind,
    LocalStore,
    RemoteStore,
    SparkEngine,
    StoreSettings,
    make_engine,
    open_store,
    transpile,
)
from mlsleuth.testing import demo_case

# The `spark` fixture (a shared local SparkEngine) is in conftest.py.


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine(threads=1, allowed_directories=[tmp_path])
    yield eng
    eng.close()


def _hive(tmp_path: Path) -> list[str]:
    ts = pa.array([1_772_820_000_000_000, 1_772_820_001_500_000], pa.timestamp("us", tz="UTC"))
    for model in ("123", "fraud"):
        d = tmp_path / "log" / f"model={model}" / "date=2026-03-06"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"ts": ts, "feature.x": [1.0, None], "n": pa.array([1, 2], pa.int32())}),
                       d / "part-0.parquet")
    return [str(p) for p in sorted(tmp_path.glob("log/*/*/*.parquet"))]


def test_spark_engine_satisfies_the_engine_protocol(spark: SparkEngine) -> None:
    assert isinstance(spark, Engine)
    assert spark.dialect == "spark"
    assert spark.session.conf.get("spark.sql.session.timeZone") == "UTC"


def test_arrow_tables_bind_and_aggregate(spark: SparkEngine) -> None:
    spark.register("t", pa.table({"x": [1, 2, 3], "g": ["a", "b", "a"]}))
    out = spark.query("SELECT g, sum(x) AS s, count(*) AS n FROM t GROUP BY g ORDER BY g")
    assert out.column_names == ["g", "s", "n"]
    assert out.to_pylist() == [{"g": "a", "s": 4, "n": 2}, {"g": "b", "s": 2, "n": 1}]


def test_results_have_duckdbs_names_and_comparable_types(spark: SparkEngine, duck: DuckDBEngine,
                                                        tmp_path: Path) -> None:
    files = _hive(tmp_path)
    sql = ("SELECT model, date, epoch(ts) AS e, quantile_cont(\"feature.x\", 0.5) AS q, count(*) AS n, "
           "CAST(sum(n) AS BIGINT) AS s, CAST(1.5 AS DECIMAL(4, 1)) AS d, max(ts) AS last "
           "FROM log WHERE ts >= TIMESTAMPTZ '2026-03-06T18:00:00+00:00' GROUP BY model, date, ts ORDER BY model, e")
    got = {}
    for eng in (duck, spark):
        eng.register("log", files)
        got[eng.dialect] = eng.query(sql)
    d, s = got["duckdb"], got["spark"]
    assert s.column_names == d.column_names
    assert s.schema.field("n").type == pa.int64() and s.schema.field("s").type == pa.int64()
    assert s.schema.field("d").type == pa.float64()
    assert s.schema.field("last").type == pa.timestamp("us", tz="UTC") == d.schema.field("last").type
    assert s.schema.field("date").type == pa.date32() == d.schema.field("date").type
    assert s.schema.field("model").type == pa.string()
    rows_d, rows_s = d.to_pylist(), s.to_pylist()
    assert [r["model"] for r in rows_s] == ["123", "123", "fraud", "fraud"]  # partition values stay text
    for a, b in zip(rows_d, rows_s, strict=True):
        assert a["e"] == b["e"] and a["last"] == b["last"] and a["n"] == b["n"]
        assert (a["q"] is None and b["q"] is None) or math.isclose(a["q"], b["q"])
    assert rows_s[1]["e"] == 1_772_820_001.5  # epoch keeps the fraction of a second, as DuckDB's


def test_select_star_keeps_duckdbs_column_order(spark: SparkEngine, duck: DuckDBEngine, tmp_path: Path) -> None:
    files = _hive(tmp_path)
    duck.register("p", files)
    spark.register("p", files)
    assert spark.query("SELECT * FROM p LIMIT 0").column_names == duck.query("SELECT * FROM p LIMIT 0").column_names


def test_portable_forms_run_on_spark(spark: SparkEngine) -> None:
    spark.register("w", pa.table({"v": [1.0, 2.0, 3.0, 4.0], "k": ["a", "a", "b", None], "_rn": [1, 1, 1, 2]}))
    out = spark.query(
        "SELECT coalesce(k, '(null)') AS k, count_if(v > 1) AS c, TRY_CAST('x' AS DOUBLE) AS bad, 1 / 0 AS inf "
        "FROM w GROUP BY GROUPING SETS ((), (k)) ORDER BY k NULLS FIRST")
    assert out.column("c").to_pylist() == [3, 1, 1, 1]
    assert out.column("bad").to_pylist() == [None] * 4
    star = spark.query("SELECT * EXCLUDE (_rn) FROM w LIMIT 1")
    assert star.column_names == ["v", "k"]
    spark.query("CREATE OR REPLACE TEMP VIEW w2 AS SELECT v FROM w WHERE v > 2")
    assert spark.query("SELECT count(*) AS n FROM w2").column("n").to_pylist() == [2]
    with pytest.raises(EngineError, match="2 statements"):  # one statement per call, as on DuckDB
        spark.query("CREATE OR REPLACE TEMP VIEW w3 AS SELECT v FROM w; SELECT count(*) AS n FROM w3")


def test_spark_failures_are_engine_errors_naming_the_query(spark: SparkEngine) -> None:
    spark.register("t", pa.table({"x": [1]}))
    with pytest.raises(EngineError, match="SELECT nope FROM t") as info:
        spark.query("SELECT nope FROM t")
    assert info.value.__cause__ is not None
    with pytest.raises(EngineError, match="empty list"):
        spark.register("e", [])


def test_transpile_keeps_duckdbs_meaning_for_spark() -> None:
    sql = transpile("SELECT epoch(ts) AS e, quantile_cont(x, 0.5) AS q FROM log", "spark")
    assert "UNIX_MICROS" in sql and "PERCENTILE(" in sql


# ------------------------------------------------------------------------------------------ choosing the engine


def test_the_flag_wins_over_the_environment_which_wins_over_the_store_config() -> None:
    env = {ENGINE_ENV: "spark", SPARK_MASTER_ENV: "spark://env:7077"}
    assert EngineChoice.resolve("duckdb", environ=env, configured=EngineKind.SPARK).kind is EngineKind.DUCKDB
    chosen = EngineChoice.resolve(None, environ=env, configured=EngineKind.DUCKDB, configured_master="local[1]")
    assert (chosen.kind, chosen.spark_master) == (EngineKind.SPARK, "spark://env:7077")
    chosen = EngineChoice.resolve(None, environ={}, configured=EngineKind.SPARK, configured_master="local[1]")
    assert (chosen.kind, chosen.spark_master) == (EngineKind.SPARK, "local[1]")
    assert EngineChoice.resolve(None, environ={}).kind is EngineKind.DUCKDB
    with pytest.raises(ConfigError, match=r"MLSLEUTH_ENGINE.*'postgres'"):
        EngineChoice.resolve(None, environ={ENGINE_ENV: "postgres"})
    with pytest.raises(ConfigError, match="--engine"):
        make_engine("sqlite")


def test_the_store_config_keeps_its_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENGINE_ENV, "duckdb")  # the environment wins over the config: no JVM here
    settings = StoreSettings(engine=EngineKind.SPARK, spark_master="local[1]",
                             spark_conf=(("spark.sql.shuffle.partitions", "3"),))
    with LocalStore.init(tmp_path / "s", settings=settings) as store:
        assert isinstance(store.engine, DuckDBEngine)
    reopened = LocalStore.open(tmp_path / "s")
    assert reopened.settings == settings
    assert reopened.settings.engine_choice(environ={}).kind is EngineKind.SPARK
    text = (tmp_path / "s" / "mlsleuth.toml").read_text()
    assert 'engine = "spark"' in text and "[store.spark_conf]" in text
    (tmp_path / "s" / "mlsleuth.toml").write_text(text.replace('"spark"', '"oracle"'))
    with pytest.raises(ConfigError, match=r"store\.engine"):
        LocalStore.open(tmp_path / "s")


def test_a_store_config_naming_spark_opens_on_spark(spark: SparkEngine, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    with LocalStore.init(tmp_path / "s", settings=StoreSettings(engine=EngineKind.SPARK)) as store:
        assert isinstance(store.engine, SparkEngine)
        assert store.engine.session is spark.session  # one session per process
        assert store.status().rows == 0
    assert isinstance(LocalStore.open(tmp_path / "s", engine="duckdb").engine, DuckDBEngine)


# ------------------------------------------------------------------------------------------ parity with DuckDB


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StoredReference]:
    case = demo_case(0, rows=20_000)
    root = tmp_path_factory.mktemp("parity") / "store"
    with LocalStore.init(root, engine="duckdb") as store:
        store.append_log(case.log.slice(0, 12_000))
        store.append_log(case.log.slice(12_000))  # several files per partition
        assert case.labels is not None and case.events is not None and case.lineage is not None
        store.append_labels(case.labels)
        store.add_events(ChangeEvent.from_mapping(e) if isinstance(e, dict) else e for e in case.events)
        store.add_lineage(case.lineage if isinstance(case.lineage, Lineage) else Lineage.from_mapping(case.lineage))
    return root, build_reference(case.reference)


@pytest.mark.slow
def test_the_monitor_pass_finds_the_same_on_spark_as_on_duckdb(spark: SparkEngine,
                                                               demo_store: tuple[Path, StoredReference],
                                                               assert_close: Any) -> None:
    root, ref = demo_store
    reports = {}
    for engine in (DuckDBEngine(threads=1, allowed_directories=[root]), spark):
        with LocalStore.open(root, engine=engine) as store:
            reports[engine.dialect] = run_monitors(store, ref, window="1d", segment=("region",), model="fraud")
    duck, sp = reports["duckdb"], reports["spark"]
    assert duck.findings, "the demo incident gives findings"
    assert {f.monitor for f in duck.findings} >= {"feature_drift", "input_drift"}
    assert (sp.windows, sp.rows, sp.skipped) == (duck.windows, duck.rows, duck.skipped)
    assert_close([f.to_dict() for f in duck.findings], [f.to_dict() for f in sp.findings], "findings")


def test_store_reads_are_the_same_on_spark(spark: SparkEngine, demo_store: tuple[Path, StoredReference],
                                           assert_close: Any) -> None:
    root, _ = demo_store
    duck, sp = LocalStore.open(root, engine="duckdb"), LocalStore.open(root, engine=spark)
    a, b = duck.status(), sp.status()
    assert (b.models, b.labels, b.events, b.quarantined) == (a.models, a.labels, a.events, a.quarantined)
    assert sp.schema("fraud") == duck.schema("fraud")
    assert sp.events() == duck.events() and sp.lineage() == duck.lineage()
    since, until = "2026-03-06T12:00:00Z", "2026-03-06T20:00:00Z"
    log_d = duck.read_log_with_labels(model="fraud", since=since, until=until, where={"region": "EU"})
    log_s = sp.read_log_with_labels(model="fraud", since=since, until=until, where={"region": "EU"})
    assert log_s.num_rows == log_d.num_rows > 0
    assert log_s.column_names == log_d.column_names
    assert log_s.to_pylist() == log_d.to_pylist()
    sql = "SELECT model_version, count(*) AS n, avg(score) AS s FROM log GROUP BY ALL ORDER BY 1"
    assert_close(duck.sql(sql).to_pylist(), sp.sql(sql).to_pylist(), sql)
    sp.close()
    duck.close()


@pytest.mark.slow
def test_spark_reads_a_store_at_a_url(spark: SparkEngine, demo_store: tuple[Path, StoredReference],
                                      assert_close: Any) -> None:
    root, _ = demo_store
    duck = LocalStore.open(root, engine="duckdb")
    fs = fsspec.filesystem("memory")
    fs.put(str(root), "/spark-bucket/store", recursive=True)
    sql = "SELECT model, date, count(*) AS n, sum(score) AS s FROM log GROUP BY ALL ORDER BY date"
    expected = duck.sql(sql).to_pylist()
    for url in (root.as_uri(), "memory://spark-bucket/store"):  # Spark reads file:// itself, memory:// via pyarrow
        with open_store(url, engine=spark) as remote:
            assert isinstance(remote, RemoteStore)
            assert_close(remote.sql(sql).to_pylist(), expected, url)
            assert remote.status().models == duck.status().models
    fs.rm("/spark-bucket", recursive=True)
    duck.close()


def test_serve_takes_the_engine_from_its_flag_or_config(tmp_path: Path) -> None:
    from mlsleuth.server import load_config

    cfg = tmp_path / "server.toml"
    cfg.write_text('engine = "spark"\nspark_master = "spark://cfg:7077"\n')
    loaded = load_config(cfg, store=tmp_path / "s", environ={})
    assert (loaded.engine, loaded.spark_master) == (EngineKind.SPARK, "spark://cfg:7077")
    flagged = load_config(cfg, store=tmp_path / "s", environ={}, engine="duckdb", spark_master="local[1]")
    assert (flagged.engine, flagged.spark_master) == (EngineKind.DUCKDB, "local[1]")
    assert load_config(None, store=tmp_path / "s", environ={}).engine is None  # the store's own config decides
    with pytest.raises(ConfigError, match="engine"):
        load_config(None, store=tmp_path / "s", environ={}, engine="mysql")


def test_arrow_sources_sharing_a_session_keep_their_own_rows(spark: SparkEngine) -> None:
    ts = pa.array([1_772_820_000_000_000] * 3, pa.timestamp("us", tz="UTC"))
    one = ArrowSource(pa.table({"ts": ts[:1], "score": [0.1]}), engine=spark)
    two = ArrowSource(pa.table({"ts": ts[:2], "score": [0.2, 0.3]}),
                      pa.table({"request_id": ["a"], "label": [1]}), engine=spark)
    count = "SELECT count(*) AS n FROM log"
    assert one.sql(count).column("n").to_pylist() == [1]
    assert two.sql(count).column("n").to_pylist() == [2]
    assert one.sql(count).column("n").to_pylist() == [1]
    assert two.sql("SELECT count(*) AS n FROM labels").column("n").to_pylist() == [1]
    one.close()
    assert spark.query("SELECT 1 AS x").num_rows == 1  # a source leaves an engine it was given open


# ------------------------------------------------------------------------- statistics the same on every engine


def _week(n: int = 40_000) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Four days of requests; on the last day latency triples and half the labels are wrong."""
    rng = np.random.default_rng(7)
    t0 = 1_772_409_600  # 2026-03-02 00:00 UTC
    ts = np.sort(rng.uniform(t0, t0 + 4 * 86_400, n))
    last = ts >= t0 + 3 * 86_400
    score = rng.random(n)
    label = (rng.random(n) < score).astype(np.int64)
    label = np.where(last & (rng.random(n) < 0.5), 1 - label, label)
    latency = rng.lognormal(3.0, 0.4, n) * np.where(last, 3.0, 1.0)
    ids = pa.array([f"r{i}" for i in range(n)])
    log = pa.table({"request_id": ids, "ts": pa.array((ts * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
                    "score": score, "prediction": (score >= 0.5).astype(np.int64), "latency_ms": latency})
    ref_score = rng.random(n)
    reference = pa.table({"score": ref_score, "prediction": (ref_score >= 0.5).astype(np.int64),
                          "label": (rng.random(n) < ref_score).astype(np.int64)})
    return log, pa.table({"request_id": ids, "label": label}), reference


def test_latency_quantiles_are_within_one_percent_of_the_exact_ones() -> None:
    log, _, reference = _week()
    report = run_monitors(ArrowSource(log), build_reference(reference), [ServingHealth()], window="1d")
    found = [f for f in report.findings if f.column == "latency_ms"]
    assert {f.statistic for f in found} == {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
    ts = log.column("ts").cast(pa.int64()).to_numpy() / 1e6
    lat = log.column("latency_ms").to_numpy()
    for f in found:
        inside = (ts >= f.window_start.timestamp()) & (ts < f.window_end.timestamp())
        exact = float(np.quantile(lat[inside], int(f.statistic.split("_")[1][1:]) / 100))
        assert f.value == pytest.approx(exact, rel=0.01)


def test_performance_metrics_computed_in_the_engine_equal_the_row_level_ones() -> None:
    log, labels, reference = _week()
    report = run_monitors(ArrowSource(log, labels), build_reference(reference), [Performance()], window="1d")
    found = {f.statistic: f for f in report.findings}
    assert {"accuracy", "roc_auc", "log_loss"} <= found.keys()
    ts = log.column("ts").cast(pa.int64()).to_numpy() / 1e6
    f = found["accuracy"]
    inside = (ts >= f.window_start.timestamp()) & (ts < f.window_end.timestamp())
    s, p = log.column("score").to_numpy()[inside], log.column("prediction").to_numpy()[inside]
    y = labels.column("label").to_numpy()[inside]
    assert f.value == pytest.approx(float(np.mean(p == y)), abs=1e-12)
    assert found["roc_auc"].value == pytest.approx(auc(s, y).value, abs=1e-4)
    assert found["log_loss"].value == pytest.approx(log_loss(s, y), rel=1e-9)
    assert f.sample_size == int(inside.sum())


def test_cli_engine_flag_runs_the_commands_on_spark(spark: SparkEngine, demo_store: tuple[Path, StoredReference],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mlsleuth.cli import app

    root, _ = demo_store
    runner = CliRunner()
    out = {}
    for engine in ("duckdb", "spark"):
        res = runner.invoke(app, ["query", "SELECT model_version, count(*) AS n FROM log GROUP BY 1",
                                  "--store", str(root), "--format", "json", "--engine", engine])
        assert res.exit_code == 0, res.output
        out[engine] = json.loads(res.stdout)
    assert out["spark"] == out["duckdb"] == [{"model_version": "v12", "n": 20_000}]
    monkeypatch.setenv(ENGINE_ENV, "spark")  # the environment chooses when no flag does
    res = runner.invoke(app, ["status", "--store", str(root), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["models"][0]["rows"] == 20_000


def test_a_local_session_started_here_runs_wide_summaries_as_compiled_code(spark: SparkEngine) -> None:
    # Window summaries have hundreds of aggregates: without these, Spark interprets them 2-3x slower.
    assert spark.session.conf.get("spark.sql.codegen.maxFields") == "10000"
    java_options = spark.session.sparkContext.getConf().get("spark.driver.extraJavaOptions", "")
    assert "-XX:-DontCompileHugeMethods" in java_options
