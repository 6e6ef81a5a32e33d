"""Scale-out: a week written in batches into a store, diagnosed with its log on disk, on DuckDB and on Spark.

The Spark part shares one local session with the other Spark tests and is skipped, with the
reason, only when no Java runtime is installed.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlsleuth.cli import app
from mlsleuth.diagnosis import Diagnosis, LogView, diagnose, diagnose_store
from mlsleuth.diagnosis._data import LabelJoinEngine, reads_label, store_case
from mlsleuth.errors import InputError
from mlsleuth.monitors._windows import NumericRef, window_quantiles, window_summary
from mlsleuth.store import DuckDBEngine, LocalStore, TableKind
from mlsleuth.testing import LargeWeek, write_week

ROWS = 40_000


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> LargeWeek:
    return write_week(tmp_path_factory.mktemp("week"), rows=ROWS, batch_rows=10_000, seed=3)


@pytest.fixture(scope="module")
def on_duckdb(week: LargeWeek) -> Diagnosis:
    return diagnose_store(week.store, model_name="fraud", reference=week.reference)


def test_the_week_is_the_store_layout_with_the_partition_in_the_path_only(week: LargeWeek) -> None:
    files = sorted((week.store / "log").rglob("*.parquet"))
    days = {f.parent.name for f in files}
    assert {f.parent.parent.name for f in files} == {"model=fraud"}
    assert len(days) == 7 and all(d.startswith("date=2026-03-0") for d in days)
    assert len(files) == 7 * math.ceil(ROWS / 10_000)  # one file per batch and day
    assert "model" not in pq.read_schema(files[0]).names
    assert sum(pq.read_metadata(f).num_rows for f in files) == week.rows >= ROWS
    with LocalStore.open(week.store) as st:
        assert st.status().model("fraud").rows == week.rows
        assert 0 < week.labels == st.status().labels <= week.rows
        assert {e.id for e in st.events()} >= set(week.truth.events)
        assert "source:warehouse.customer_stats" in st.lineage().sources("feature.amount_to_avg_ratio")
    ids = pa.concat_tables([pq.read_table(f, columns=["request_id"]) for f in files]).column("request_id")
    assert len(ids.unique()) == len(ids)  # ids unique across batches


def test_the_store_diagnosis_finds_the_planted_incident(week: LargeWeek, on_duckdb: Diagnosis) -> None:
    top = on_duckdb.top
    truth = week.truth
    assert on_duckdb.verdict.value == "incident" and top is not None
    assert truth.cause is not None and top.cause.value == truth.cause.value
    assert truth.features[0] in top.features[:3] and truth.inputs[0] in top.inputs[:3]
    assert top.onset is not None and truth.onset is not None and abs(top.onset - truth.onset) <= timedelta(hours=1)
    assert truth.events[0] in top.events


def _stats(d: Diagnosis) -> dict[str, float]:
    """The numbers a diagnosis reports: confidences and every symptom's before/after/strength."""
    out = {f"h{i}.confidence": h.confidence for i, h in enumerate(d.hypotheses)}
    for s in d.symptoms:
        for k in ("before", "after", "strength"):
            v = getattr(s, k)
            if isinstance(v, float) and math.isfinite(v):
                out[f"{s.metric}.{k}"] = v
    return out


def _same(a: Diagnosis, b: Diagnosis) -> None:
    assert a.verdict == b.verdict
    ta, tb = a.top, b.top
    assert ta is not None and tb is not None
    assert (ta.cause, ta.features, ta.inputs, ta.onset, ta.events, ta.segments) == \
        (tb.cause, tb.features, tb.inputs, tb.onset, tb.events, tb.segments)
    assert [h.cause for h in a.hypotheses] == [h.cause for h in b.hypotheses]
    sa, sb = _stats(a), _stats(b)
    assert sa.keys() == sb.keys() and sa
    for k, v in sa.items():
        assert sb[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


def test_the_log_on_disk_is_diagnosed_as_the_same_rows_in_memory(week: LargeWeek, on_duckdb: Diagnosis) -> None:
    with LocalStore.open(week.store) as st:
        log = st.read_log(model="fraud")
        labels = st.sql("SELECT request_id, label, label_ts FROM labels")
        events, lineage = st.events(), st.lineage()
    in_memory = diagnose(log, reference=week.reference, labels=labels, events=events, lineage=lineage)
    _same(on_duckdb, in_memory)


def test_the_view_is_counted_by_the_engine_and_queries_without_labels_skip_the_join(week: LargeWeek) -> None:
    with LocalStore.open(week.store) as st, DuckDBEngine(threads=1, allowed_directories=[week.store]) as eng:
        case, used = store_case(st, engine=eng, reference=week.reference)
        assert isinstance(case.log, LogView) and used is eng
        assert case.log.num_rows == week.rows and case.has_labels
        assert "label" in case.log.column_names and "date" not in case.log.column_names
        q = case.log.bind(eng)
        both = q.query("SELECT count(*) AS n, count(label) AS k FROM log").to_pylist()[0]
        plain = q.query("SELECT count(*) AS n FROM log").to_pylist()[0]
        assert both["n"] == plain["n"] == week.rows and 0 < both["k"] <= week.labels


def test_the_store_diagnosis_reads_the_files_the_store_lists_publicly(week: LargeWeek) -> None:
    """``store_case`` scans what ``LocalStore.files`` lists (a subclass listing fewer days diagnoses fewer rows)."""
    last_day = "date=2026-03-07"

    class WithoutLastDay(LocalStore):
        def files(self, kind: TableKind | str, **kw: Any) -> list[Path]:
            out = super().files(kind, **kw)
            return [f for f in out if f.parent.name != last_day] if TableKind(kind) is TableKind.LOG else out

    with LocalStore.open(week.store) as st:
        assert st.log_models() == ["fraud"]
        log_files = st.files(TableKind.LOG, model="fraud")
        case, _ = store_case(st, reference=week.reference)
        assert isinstance(case.log, LogView)
        assert case.log.files == tuple(str(f) for f in log_files)
        assert case.log.label_files == tuple(str(f) for f in st.files("labels"))
    kept = [f for f in log_files if f.parent.name != last_day]
    assert 0 < len(kept) < len(log_files)
    with WithoutLastDay.open(week.store) as st:
        case, _ = store_case(st, reference=week.reference)
    assert case.log.files == tuple(str(f) for f in kept)
    assert case.log.num_rows == sum(pq.read_metadata(f).num_rows for f in kept) < week.rows


def test_a_store_diagnosis_without_charts_runs_none_of_their_queries(week: LargeWeek, on_duckdb: Diagnosis) -> None:
    plain = diagnose_store(week.store, model_name="fraud", reference=week.reference, charts=False)
    assert on_duckdb.charts is not None and plain.charts is None
    _same(on_duckdb, plain)


def test_a_relabelled_request_gets_its_latest_label_in_the_view(week: LargeWeek, tmp_path: Path) -> None:
    root = tmp_path / "relabelled"
    shutil.copytree(week.store, root)
    with LocalStore.open(root) as st:
        first = st.sql("SELECT request_id, label, label_ts FROM labels ORDER BY request_id LIMIT 50")
        flipped = pa.table({"request_id": first.column("request_id"),
                            "label": pa.array([1 - v for v in first.column("label").to_pylist()]),
                            "label_ts": pa.array([t + timedelta(days=1) for t in first.column("label_ts").to_pylist()],
                                                 first.schema.field("label_ts").type)})
        st.append_labels(flipped)
        latest = {r["request_id"]: r["label"] for r in st.sql("SELECT request_id, label FROM labels").to_pylist()}
        with DuckDBEngine(threads=1, allowed_directories=[root]) as eng:
            case, _ = store_case(st, engine=eng, reference=week.reference)
            assert isinstance(case.log, LogView) and not case.log.labels_unique  # 50 ids twice: de-duplicated
            q = case.log.bind(eng)
            seen = {r["request_id"]: r["label"] for r in
                    q.query("SELECT request_id, label FROM log WHERE label IS NOT NULL").to_pylist()}
    assert seen == latest
    assert all(seen[r] == 1 - v for r, v in zip(first.column("request_id").to_pylist(),
                                                first.column("label").to_pylist(), strict=True))


def test_labels_are_read_apart_from_the_wide_window_summary_with_the_same_numbers(week: LargeWeek) -> None:
    with LocalStore.open(week.store) as st, DuckDBEngine(threads=1, allowed_directories=[week.store]) as eng:
        case, _ = store_case(st, engine=eng, reference=week.reference)
        assert isinstance(case.log, LogView) and case.log.labels_unique
        q = case.log.bind(eng)
        assert isinstance(q, LabelJoinEngine)
        refs = {"score": NumericRef("score", edges=(0.1, 0.5, 0.9), cdf=(0.1, 0.5, 0.9), lo=0.0, hi=1.0, mean=0.5,
                                    std=0.3, null_rate=0.0, zero_rate=0.0, n=1000)}
        extra = {"nlab": "count(label)", "tp": "sum(CASE WHEN label = 1 AND prediction = 1 THEN 1 ELSE 0 END)",
                 "lat": "avg(latency_ms)"}
        kw: dict[str, Any] = {"window_seconds": 3600, "refs": refs, "extra": extra, "slices": ["region"]}
        apart = window_summary(q, "log", **kw)  # the label sums in a narrow scan of their own
        together = window_summary(q.inner, "log", **kw)  # one scan of the joined log
    keys = ["w", "slice:region"]
    a = apart.sort_by([(k, "ascending") for k in keys])
    b = together.sort_by([(k, "ascending") for k in keys]).select(a.column_names)
    assert a.schema == b.schema and a.num_rows == b.num_rows > 0
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if name == "lat":
            assert x == pytest.approx(y, rel=1e-12), name
        else:
            assert x == y, name
    assert sum(r for r in a.column("nlab").to_pylist() if r) > 0


@pytest.mark.parametrize(("sql", "needs"), [
    ("SELECT count(*) AS n FROM log", False),
    ("SELECT w, count(*) AS n FROM (SELECT *, 1 AS w FROM log) AS t GROUP BY w", False),
    ("WITH x AS (SELECT * FROM log) SELECT a FROM x", False),
    ("SELECT * FROM log", True),
    ("SELECT t.* FROM log AS t", True),
    ("SELECT * FROM (SELECT *, 1 AS w FROM log) AS t", True),
    ("WITH x AS (SELECT * FROM log) SELECT * FROM x", True),
    ("SELECT a FROM log UNION ALL SELECT * FROM log", True),
    ("SELECT count(label) AS k FROM log", True),
    ("SELECT 1 AS x FROM log AS b WHERE b.LABEL IS NOT NULL", True),
    ("SELECT ((( FROM log WHERE label", True),  # does not parse: the cautious answer
])
def test_only_queries_whose_result_can_hold_the_label_pay_the_join(sql: str, needs: bool) -> None:
    assert reads_label(sql) is needs


def test_a_store_of_several_models_needs_a_model_name(week: LargeWeek, tmp_path: Path) -> None:
    root = tmp_path / "two"
    shutil.copytree(week.store, root)
    shutil.copytree(root / "log" / "model=fraud", root / "log" / "model=churn")
    with pytest.raises(InputError, match="several models"):
        diagnose_store(root, reference=week.reference)


def test_latency_quantiles_from_the_histogram_are_within_one_percent(week: LargeWeek) -> None:
    with DuckDBEngine(threads=1, allowed_directories=[week.store]) as eng:
        eng.register("log", [str(f) for f in sorted((week.store / "log").rglob("*.parquet"))])
        hist = window_quantiles(eng, "log", "latency_ms", window_seconds=86400, quantiles=(0.5, 0.99),
                                slices=["region"])
        exact = eng.query("SELECT CAST(floor(epoch(ts) / 86400) AS BIGINT) AS w, quantile_cont(latency_ms, 0.5) AS e0, "
                          "quantile_cont(latency_ms, 0.99) AS e1 FROM log GROUP BY 1").to_pylist()
    whole = {r["w"]: r for r in hist.to_pylist() if r["slice:region"] is None}
    assert len(whole) == 7 and hist.num_rows > 7  # per day, and per day and region
    for r in exact:
        assert whole[r["w"]]["q0"] == pytest.approx(r["e0"], rel=0.01)
        assert whole[r["w"]]["q1"] == pytest.approx(r["e1"], rel=0.01)


def test_diagnose_store_on_the_command_line(week: LargeWeek) -> None:
    result = CliRunner().invoke(app, ["diagnose", "--store", str(week.store), "--reference", str(week.reference),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    assert week.truth.cause is not None
    assert out["verdict"] == "incident" and out["hypotheses"][0]["cause"] == week.truth.cause.value
    bad = CliRunner().invoke(app, ["diagnose", "--store", str(week.store), "--log", str(week.reference)])
    assert bad.exit_code == 2


# --------------------------------------------------------------------------------------------------- Spark


# The `spark` fixture (a shared local SparkEngine) is in conftest.py.


@pytest.mark.slow
def test_spark_gives_the_duckdb_diagnosis(week: LargeWeek, on_duckdb: Diagnosis, spark: Any) -> None:
    on_spark = diagnose_store(week.store, model_name="fraud", reference=week.reference, engine=spark)
    _same(on_duckdb, on_spark)
    # The per-window latency quantiles are the same numbers on both engines (no engine's approximation).
    with DuckDBEngine(threads=1, allowed_directories=[week.store]) as duck:
        files = [str(f) for f in sorted((week.store / "log").rglob("*.parquet"))]
        tables = []
        for eng in (duck, spark):
            eng.register("lat_log", files)
            t = window_quantiles(eng, "lat_log", "latency_ms", window_seconds=3600, quantiles=(0.5, 0.99))
            tables.append(t.sort_by("w"))
    assert tables[0].column("w").to_pylist() == tables[1].column("w").to_pylist()
    np.testing.assert_allclose(tables[0].column("q1").to_numpy(), tables[1].column("q1").to_numpy(), rtol=1e-9)
