"""The Spark engine: the same DuckDB-dialect SQL, the same result types, the same store and monitor answers.

One local Spark session serves the whole module (a JVM takes 10-60 s to start). The tests are
skipped, with the reason, only when no Java runtime is installed.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsleuth.errors import EngineError
from mlsleuth.store import DuckDBEngine, Engine, transpile

pyspark = pytest.importorskip("pyspark", reason="PySpark is not installed (pip install 'mlsleuth[spark]')")


def _java() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and (Path(home) / "bin" / "java").exists()))


if not _java():
    pytest.skip("no Java runtime (java on PATH or JAVA_HOME): Spark cannot start", allow_module_level=True)

from mlsleuth.store import SparkEngine  # noqa: E402 - after the skip


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkEngine]:
    eng = SparkEngine(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    yield eng
    eng.close()


@pytest.fixture
def duck() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine(threads=1)
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
    view = spark.query("CREATE OR REPLACE TEMP VIEW w2 AS SELECT v FROM w WHERE v > 2; SELECT count(*) AS n FROM w2")
    assert view.column("n").to_pylist() == [2]


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
