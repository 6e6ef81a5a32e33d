"""Hostile names and values through ingest -> monitors -> diagnose -> report: no file, no code, no leak.

A column name or a value is data, and data comes from whoever sends requests to a model whose
raw request JSON is logged. None of it may change what SQL mlsleuth runs: these tests send
quotes, semicolons, SQL keywords, DuckDB file functions, path separators and control characters
through every layer and check that nothing is written outside the store, that nothing from the
machine comes back, and that the diagnosis still works (or fails with an mlsleuth error).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlsleuth.capture import Logger, StoreSink
from mlsleuth.cli import app
from mlsleuth.diagnosis import Cause, diagnose, diagnose_store
from mlsleuth.errors import EngineError, MlsleuthError, SchemaError
from mlsleuth.monitors import build_reference, run_monitors
from mlsleuth.report import monitor_json, render
from mlsleuth.schema import MAX_COLUMN_NAME, DataKind, check_column_names, validate
from mlsleuth.store import DuckDBEngine, LocalStore, MemoryStore
from mlsleuth.testing import demo_case, make_case

#: What /etc/passwd starts with on every Unix: it must never appear in a result, a report or an error.
PASSWD_MARK = "root:x:0:0"


def _attack(target: Path) -> str:
    """The column name of the reported chain: it closes the quoted name, stacks a COPY, reopens a name."""
    return f"request_id\" FROM l; COPY (SELECT 'pwned' AS x) TO '{target}'; SELECT l.\"request_id"


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _no_leak(*texts: str) -> None:
    for t in texts:
        assert PASSWD_MARK not in t


@pytest.fixture(scope="module")
def demo() -> object:
    return demo_case(0, rows=20_000)


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A folder outside every store; the test fails when anything appears in it."""
    d = tmp_path / "outside"
    d.mkdir()
    yield d
    assert not any(d.iterdir()), f"written outside the store: {sorted(p.name for p in d.iterdir())}"


def _hostile_log(case: object, target: Path) -> tuple[pa.Table, pa.Table]:
    """The demo log and reference with hostile column names (and values) added and one feature renamed."""
    log: pa.Table = case.log  # type: ignore[attr-defined]
    ref: pa.Table = case.reference  # type: ignore[attr-defined]
    n = log.num_rows
    quoted = 'feature.amount "to" avg; ratio'  # a real feature whose name holds a double quote and a semicolon
    log = log.rename_columns([quoted if c == "feature.amount_to_avg_ratio" else c for c in log.column_names])
    ref = ref.rename_columns([quoted if c == "feature.amount_to_avg_ratio" else c for c in ref.column_names])
    values = ["EU' OR '1'='1", "read_text('/etc/passwd')", f"'); COPY (SELECT 1) TO '{target}'; --", "a\"b"]
    extra = {
        _attack(target): pa.array(["x"] * n),
        "input.x'; DROP TABLE log; --": pa.array([float(i % 7) for i in range(n)]),
        "SELECT": pa.array(["FROM"] * n),
        "input.y FROM log JOIN log": pa.array([float(i % 5) for i in range(n)]),
        "../../etc/passwd": pa.array([values[i % len(values)] for i in range(n)]),
        "channel; SELECT * FROM read_text('/etc/passwd')": pa.array([values[i % 2] for i in range(n)]),
    }
    for name, arr in extra.items():
        log = log.append_column(name, arr)
    return log, ref


# ----------------------------------------------------------------------------------------- the reported chain


def test_the_reported_column_name_runs_no_stacked_copy_in_file_mode(demo: object, outside: Path) -> None:
    """The chain of the report: a log column named like the attack, diagnosed with labels (``_join_labels``)."""
    target = outside / "pwned.csv"
    log: pa.Table = demo.log  # type: ignore[attr-defined]
    log = log.append_column(_attack(target), pa.array(["x"] * log.num_rows))
    d = diagnose(log, reference=demo.reference, labels=demo.labels)  # type: ignore[attr-defined]
    assert not target.exists()
    assert d.verdict.value == "incident"  # the demo incident is still found beside the hostile columns
    _no_leak(render(d, "json"), render(d, "md"), render(d, "html"))


@pytest.mark.parametrize("store_kind", ["local", "memory"])
def test_hostile_files_ingested_monitored_diagnosed_and_reported_write_nothing(
        demo: object, tmp_path: Path, outside: Path, store_kind: str) -> None:
    target = outside / "pwned.csv"
    log, ref = _hostile_log(demo, target)
    files = tmp_path / "files"
    files.mkdir()
    pq.write_table(log, files / "log.parquet")
    pq.write_table(demo.labels, files / "labels.parquet")  # type: ignore[attr-defined]
    root = tmp_path / "store"
    store = LocalStore.init(root) if store_kind == "local" else MemoryStore()
    before = _files(tmp_path)
    with store:
        assert store.ingest(files / "log.parquet", "log").accepted == log.num_rows
        store.ingest(files / "labels.parquet", "labels")
        assert _attack(target) in store.schema().names  # stored under its own name, quoted in every query
        report = run_monitors(store, build_reference(ref), window="1d",
                              segment=("channel; SELECT * FROM read_text('/etc/passwd')",))
        d = diagnose_store(store, reference=ref)
    added = {p for p in _files(tmp_path) - before if root not in p.parents}
    assert not added, added
    assert not list(tmp_path.rglob("model.joblib"))
    assert report.rows == log.num_rows
    assert d.verdict.value == "incident"
    _no_leak(monitor_json(report), render(d, "json"), render(d, "md"), render(d, "html"))


def test_hostile_model_versions_and_values_are_compared_as_text(outside: Path) -> None:
    """A version with quotes reaches the version-change SQL of the diagnosis (``_diagnose``) as a literal."""
    case = make_case(Cause.MODEL_CHANGE, seed=3, rows=20_000)
    versions = sorted(set(case.log.column("model_version").to_pylist()))
    assert len(versions) == 2
    hostile = {versions[0]: "v1' OR '1'='1", versions[1]: f"v2'); COPY (SELECT 1) TO '{outside / 'v.csv'}'; --"}
    mv = pa.array([hostile[v] for v in case.log.column("model_version").to_pylist()])
    log = case.log.set_column(case.log.column_names.index("model_version"), "model_version", mv)
    d = diagnose(log, reference=case.reference, labels=case.labels)
    assert d.verdict.value == "incident"
    top = d.hypotheses[0]
    assert top.cause is Cause.MODEL_CHANGE
    assert hostile[versions[1]] in " ".join(top.evidence)  # the version is named as it is, not as SQL
    _no_leak(render(d, "json"), render(d, "md"))


# ----------------------------------------------------------------------------------------- names at ingest


@pytest.mark.parametrize("name", ["input.a\nb", "input.\x00", "feature.x\x1b[31m", "tab\there",
                                  "x" * (MAX_COLUMN_NAME + 1)])
def test_a_column_name_with_a_control_character_or_too_long_is_refused_by_name(name: str, tmp_path: Path) -> None:
    table = pa.table({"request_id": ["a"], "ts": ["2026-03-06T18:00:00Z"], "score": [0.5], name: [1.0]})
    with pytest.raises(SchemaError, match="column name") as info:
        validate(table, DataKind.LOG)
    assert repr(name[:60])[1:-1] in str(info.value)
    with LocalStore.init(tmp_path / "s") as store, pytest.raises(SchemaError):
        store.append_log(table)


@pytest.mark.parametrize("name", ['a"b', "it's", "x; DROP TABLE log; --", "SELECT", "../../etc/passwd", "naïve ü",
                                  "x" * MAX_COLUMN_NAME])
def test_quotes_semicolons_keywords_and_slashes_are_allowed_and_kept(name: str, tmp_path: Path) -> None:
    check_column_names([name])
    table = pa.table({"request_id": ["a", "b"], "ts": ["2026-03-06T18:00:00Z"] * 2, "model": ["m"] * 2,
                      "score": [0.1, 0.9], name: ["u", "v"]})
    with LocalStore.init(tmp_path / "s") as store:
        store.append_log(table)
        assert store.read_log().column(name).to_pylist() == ["u", "v"]
        assert store.read_log(where={name: "v"}).num_rows == 1


def test_the_sdk_drops_and_counts_a_request_whose_raw_json_holds_a_control_key(tmp_path: Path,
                                                                                 outside: Path) -> None:
    """An end user's request JSON reaches ``Logger.log(inputs=...)``: a hostile key costs that request only."""
    with LocalStore.init(tmp_path / "s") as store:
        logger = Logger(StoreSink(store), model="m", batch_size=10)
        logger.log("ok-1", inputs={"amount": 1.0}, score=0.1)
        logger.log("bad", inputs={"amount\n": 2.0}, score=0.2)
        logger.log("quoted", inputs={_attack(outside / "sdk.csv"): 3.0, "a'b": "x"}, score=0.3)
        logger.log("ok-2", inputs={"amount": 4.0}, score=0.4)
        assert logger.flush(10)
        stats = logger.stats()
        logger.close()
        assert stats.dropped_internal == 1 and stats.written == 3
        got = store.read_log().sort_by("request_id")
        assert got.column("request_id").to_pylist() == ["ok-1", "ok-2", "quoted"]
        assert got.column("input." + _attack(outside / "sdk.csv")).to_pylist()[2] == 3.0


# ----------------------------------------------------------------------------------------- file mode


def test_file_mode_reads_a_csv_with_an_empty_column_name_and_quotes_in_names(demo: object, tmp_path: Path) -> None:
    """A CSV written with pandas' index has an empty first header; names with ``"`` and ``'`` are fine too."""
    log: pa.Table = demo.log  # type: ignore[attr-defined]
    log = log.rename_columns([{"feature.amount_to_avg_ratio": 'feature.amount "ratio"',
                               "input.avg_amount_30d": "input.avg'amount"}.get(c, c) for c in log.column_names])
    path = tmp_path / "x.csv"
    cols = log.column_names
    data = {c: log.column(c).to_pylist() for c in cols}
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", *cols])
        for i in range(log.num_rows):
            w.writerow([i, *(data[c][i] for c in cols)])
    labels = tmp_path / "labels.parquet"
    pq.write_table(demo.labels, labels)  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["diagnose", "--log", str(path), "--labels", str(labels), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["verdict"] == "incident"
    assert any("unnamed_0" in s for s in out["skipped"])


# ----------------------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT CAST(content AS INTEGER) FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "COPY (SELECT 1) TO '{out}/x.csv'",
    "SELECT 1; COPY (SELECT 1) TO '{out}/x.csv'",
    "ATTACH '{out}/x.duckdb'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "EXPORT DATABASE '{out}'",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
])
def test_the_engine_refuses_file_access_stacked_statements_and_setting_changes(sql: str, outside: Path) -> None:
    with DuckDBEngine(threads=1) as eng, pytest.raises(EngineError) as info:
        eng.query(sql.format(out=outside))
    _no_leak(str(info.value))


def test_a_store_query_cannot_write_into_the_store_nor_read_its_config(tmp_path: Path) -> None:
    """The engine of a store reads its data folders only: not ``mlsleuth.toml``, and writes nowhere, even inside."""
    with LocalStore.init(tmp_path / "s") as store:
        store.append_log(pa.table({"request_id": ["a"], "ts": ["2026-03-06T18:00:00Z"], "model": ["m"],
                                   "score": [0.5]}))
        before = _files(tmp_path)
        for sql in (f"SELECT * FROM read_text('{store.path / 'mlsleuth.toml'}')",
                    f"COPY (SELECT 1) TO '{store.path / 'log' / 'x.parquet'}'",
                    f"COPY (SELECT 1) TO '{store.path / 'profiles' / 'm' / 'model.joblib'}'",
                    "SELECT count(*) FROM log; SELECT 1"):
            with pytest.raises(EngineError):
                store.sql(sql)
        assert _files(tmp_path) == before
        assert store.sql("SELECT count(*) AS n FROM log").column("n").to_pylist() == [1]


def test_the_engine_reads_parquet_only_under_its_allowed_directories(tmp_path: Path) -> None:
    inside, other = tmp_path / "in", tmp_path / "other"
    inside.mkdir()
    other.mkdir()
    pq.write_table(pa.table({"x": [1]}), inside / "a.parquet")
    pq.write_table(pa.table({"x": [2]}), other / "b.parquet")
    with DuckDBEngine(allowed_directories=[inside]) as eng:
        eng.register("a", [str(inside / "a.parquet")])
        assert eng.query("SELECT x FROM a").column("x").to_pylist() == [1]
        with pytest.raises(EngineError, match="allowed_directories"):
            eng.register("b", [str(other / "b.parquet")])
        with pytest.raises(EngineError):
            eng.query(f"SELECT * FROM read_parquet('{inside}/../other/b.parquet')")
    with pytest.raises(EngineError, match="fixed"):
        DuckDBEngine(config={"enable_external_access": True})


def test_hostile_values_in_filters_and_segments_are_literals(tmp_path: Path) -> None:
    values = ["EU' OR '1'='1", "read_text('/etc/passwd')", "x'); SELECT 1; --", "back\\slash"]
    table = pa.table({"request_id": [f"r{i}" for i in range(4)], "ts": ["2026-03-06T18:00:00Z"] * 4,
                      "model": ["m'; --"] * 4, "model_version": values, "score": [0.1, 0.2, 0.3, 0.4],
                      "region": values})
    with LocalStore.init(tmp_path / "s") as store:
        store.append_log(table)
        for v in values:
            got = store.read_log(model="m'; --", version=v, where={"region": v})
            assert got.column("region").to_pylist() == [v]
        assert list(store.schema(model="m'; --").names[:2]) == ["request_id", "ts"]
        assert pc.sum(store.read_log().column("score")).as_py() == pytest.approx(1.0)


def test_quoted_names_and_values_come_back_as_they_were() -> None:
    from mlsleuth.store._engine import quote_ident, quote_literal

    assert quote_ident('a"b') == '"a""b"'
    assert quote_literal("it's") == "'it''s'"
    with pytest.raises(EngineError, match="empty name"):
        quote_ident("")
    with pytest.raises(EngineError, match="NUL"):
        quote_ident("a\x00b")  # DuckDB would cut the name there
    texts = ["it's", 'a"b', "x'; COPY (SELECT 1) TO '/tmp/x'; --", "back\\slash", "line\nbreak", "ü"]
    with DuckDBEngine(threads=1) as eng:
        sel = ", ".join(f"{quote_literal(t)} AS {quote_ident(t)}" for t in texts)
        assert eng.query(f"SELECT {sel}").to_pylist() == [{t: t for t in texts}]
        assert eng.query(f"SELECT {quote_literal('nul' + chr(0))} AS v").column("v").to_pylist() == ["nul\x00"]


def test_a_hostile_name_fails_with_an_mlsleuth_error_never_a_raw_one(tmp_path: Path) -> None:
    """A file whose header holds a control character is refused with the column named, in file mode too."""
    path = tmp_path / "log.jsonl"
    rows = [{"request_id": f"r{i}", "ts": "2026-03-06T18:00:00Z", "score": 0.5, "input.a\u2028b": 1} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(MlsleuthError, match="control character"):
        diagnose(path)


def test_hostile_names_and_values_survive_the_translation_to_spark(spark: object, tmp_path: Path,
                                                                   outside: Path) -> None:
    """sqlglot turns DuckDB's quoting into Spark's backticks; odd names and values keep their meaning."""
    from mlsleuth.store import SparkEngine
    from mlsleuth.store._engine import quote_ident, quote_literal

    assert isinstance(spark, SparkEngine)
    names = ['a"b', "it's", "x`y", "x; DROP TABLE t; --", "SELECT", "feature.x y"]
    values = ["EU' OR '1'='1", "read_text('/etc/passwd')", "back\\slash", "x`y"]
    folder = tmp_path / "t"
    folder.mkdir()
    pq.write_table(pa.table({**{n: [i, i + 1, i + 2, i + 3] for i, n in enumerate(names)}, "v": values}),
                   folder / "part-0.parquet")
    for eng in (spark, DuckDBEngine(threads=1, allowed_directories=[folder])):
        eng.register("hostile_t", [str(folder / "part-0.parquet")])  # type: ignore[attr-defined]
        cols = ", ".join(f"sum({quote_ident(n)}) AS {quote_ident(n)}" for n in names)
        got = eng.query(f"SELECT {cols} FROM hostile_t").to_pylist()[0]  # type: ignore[attr-defined]
        assert got == {n: 4 * i + 6 for i, n in enumerate(names)}
        for v in values:
            rows = eng.query(f"SELECT v FROM hostile_t WHERE v = {quote_literal(v)}")  # type: ignore[attr-defined]
            assert rows.column("v").to_pylist() == [v]
        for sql in (f"SELECT 1 AS x; CREATE TABLE pwned USING csv LOCATION '{outside}' AS SELECT 1",
                    f"CREATE TABLE pwned AS SELECT * FROM read_csv('{outside}/x.csv')",
                    f"COPY (SELECT 1) TO '{outside}/x.csv'"):
            with pytest.raises(EngineError):
                eng.query(sql)  # type: ignore[attr-defined]
