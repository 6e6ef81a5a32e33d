"""The log store: round trips, labels, events, lineage, quarantine, layout, compaction, threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from mlsleuth.errors import ConfigError, EngineError, ReadError, SchemaError, StoreNotFoundError
from mlsleuth.schema import ChangeEvent, DataKind, Lineage, ModelConfig, Role
from mlsleuth.store import (
    DEFAULT_MODEL,
    AppendResult,
    DuckDBEngine,
    Engine,
    LocalStore,
    MemoryStore,
    Store,
    TableKind,
    transpile,
)

T0 = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)


def log(n: int, *, start: int = 0, model: str | None = "fraud", version: str = "v1",
        t0: datetime = T0, step: timedelta = timedelta(minutes=10), region: str | None = None) -> pa.Table:
    """A small log: ``n`` requests ``step`` apart from ``t0``, alternating EU/US unless ``region`` is given."""
    cols: dict[str, object] = {
        "request_id": [f"r{start + i}" for i in range(n)],
        "ts": pa.array([t0 + i * step for i in range(n)], pa.timestamp("us", tz="UTC")),
        "model_version": [version] * n,
        "score": [round(0.1 + 0.8 * (i % 10) / 10, 2) for i in range(n)],
        "prediction": [i % 2 for i in range(n)],
        "feature.amount": [float(i) for i in range(n)],
        "region": [region or ("EU" if i % 2 else "US") for i in range(n)],
        "lineage.pipeline_version": ["p7"] * n,
    }
    if model is not None:
        cols["model"] = [model] * n
    return pa.table(cols)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = LocalStore.init(tmp_path / "store") if request.param == "local" else MemoryStore()
    yield s
    s.close()


# ----------------------------------------------------------------------------------------- round trips


def test_append_then_read_everything_back_in_time_order(store: Store) -> None:
    t = log(20)
    result = store.append_log(t.take(list(range(19, -1, -1))))  # reversed
    assert result == AppendResult(accepted=20, quarantined=0, reasons=(), files=result.files)
    assert len(result.files) == 2  # 22:00..23:50 on the 6th, 00:00..01:10 on the 7th
    got = store.read_log()
    assert got.num_rows == 20
    assert got.column("request_id").to_pylist() == [f"r{i}" for i in range(20)]
    assert got.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert got.column_names[:4] == ["request_id", "ts", "model", "model_version"]
    assert "date" not in got.column_names
    assert got.column("feature.amount").to_pylist() == [float(i) for i in range(20)]


def test_read_a_window_a_model_a_version_and_a_segment(store: Store) -> None:
    store.append_log(log(12, model="fraud", version="v1"))
    store.append_log(log(12, start=100, model="fraud", version="v2", t0=T0 + timedelta(hours=2)))
    store.append_log(log(6, start=200, model="churn"))
    assert store.read_log(model="churn").num_rows == 6
    assert store.read_log(model="fraud").num_rows == 24
    assert store.read_log(model="fraud", version="v2").column("request_id").to_pylist()[0] == "r100"
    window = store.read_log(model="fraud", since=T0 + timedelta(minutes=30), until="2026-03-06T23:00:00Z")
    # since is inclusive, until exclusive: 22:30, 22:40, 22:50 of v1
    assert window.column("request_id").to_pylist() == ["r3", "r4", "r5"]
    eu = store.read_log(model="fraud", version="v1", where={"region": "EU"})
    assert set(eu.column("region").to_pylist()) == {"EU"}
    assert eu.num_rows == 6
    assert store.read_log(model="nope").num_rows == 0
    two = store.read_log(model="churn", columns=["request_id", "score"])
    assert two.column_names == ["request_id", "score"]


def test_reading_unknown_columns_names_them(store: Store) -> None:
    store.append_log(log(3))
    with pytest.raises(SchemaError, match="nope"):
        store.read_log(where={"nope": "x"})
    with pytest.raises(SchemaError, match="nope"):
        store.read_log(columns=["ts", "nope"])
    with pytest.raises(ConfigError, match="since"):
        store.read_log(since="yesterday-ish")


def test_empty_store_reads_empty_tables(store: Store) -> None:
    assert store.read_log().num_rows == 0
    assert store.read_log_with_labels().num_rows == 0
    assert store.events() == ()
    assert store.lineage() == Lineage()
    status = store.status()
    assert (status.models, status.quarantined, status.events, status.labels) == ((), 0, 0, 0)
    assert store.sql("SELECT count(*) AS n FROM quarantine").column("n").to_pylist() == [0]


def test_rows_without_a_model_are_stored_under_the_default_model(store: Store) -> None:
    t = log(4, model=None)
    store.append_log(t)
    assert store.read_log().column("model").to_pylist() == [DEFAULT_MODEL] * 4
    store.append_log(log(2, start=10, model=None), config=ModelConfig(name="scoring"))
    assert store.read_log(model="scoring").num_rows == 2


def test_provenance_columns_are_kept_and_queryable(store: Store) -> None:
    t = log(4).append_column("lineage.source_snapshot", pa.array(["s1", "s1", "s2", "s2"]))
    store.append_log(t)
    got = store.sql('SELECT count(*) AS n FROM log WHERE "lineage.source_snapshot" = \'s2\'')
    assert got.column("n").to_pylist() == [2]
    assert store.read_log(where={"lineage.pipeline_version": "p7"}).num_rows == 4
    assert set(store.schema().provenance) == {"lineage.pipeline_version", "lineage.source_snapshot"}


def test_schema_of_the_stored_log_finds_segments_by_cardinality(store: Store) -> None:
    store.append_log(log(40).append_column("user", pa.array([f"u{i}" for i in range(40)])))
    s = store.schema()
    assert s.segments == ("region",)
    assert s["user"].role is Role.METADATA
    assert s["feature.amount"].role is Role.FEATURE
    assert s["model"].role is Role.MODEL
    assert "date" not in s


# ----------------------------------------------------------------------------------------- labels


def test_labels_latest_wins_with_repeated_and_late_labels(store: Store) -> None:
    store.append_log(log(4))
    day = T0 + timedelta(days=1)
    store.append_labels(pa.table({"request_id": ["r0", "r1"], "label": [0, 0],
                                  "label_ts": [day, day]}))
    # r0 relabelled later: wins. r1 gets a late-arriving but *older* label: loses.
    store.append_labels(pa.table({"request_id": ["r0", "r1"], "label": [1, 1],
                                  "label_ts": [day + timedelta(hours=1), day - timedelta(hours=1)]}))
    # r2 labelled twice in one batch without label_ts: the later row wins; then again: the later batch wins.
    store.append_labels(pa.table({"request_id": ["r2", "r2"], "label": [0, 1]}))
    joined = store.read_log_with_labels()
    assert joined.column("label").to_pylist() == [1, 0, 1, None]
    store.append_labels(pa.table({"request_id": ["r2"], "label": [0]}))
    assert store.read_log_with_labels().column("label").to_pylist() == [1, 0, 0, None]
    assert store.sql("SELECT count(*) AS n FROM labels_all").column("n").to_pylist() == [7]
    assert store.sql("SELECT count(*) AS n FROM labels").column("n").to_pylist() == [3]
    assert store.status().model("fraud").labelled_fraction == pytest.approx(0.75)


def test_labels_need_request_id_and_label(store: Store) -> None:
    with pytest.raises(SchemaError, match="label"):
        store.append_labels(pa.table({"request_id": ["r1"]}))
    r = store.append_labels(pa.table({"request_id": ["r1", None], "label": [1, 1]}))
    assert (r.accepted, r.quarantined) == (1, 1)
    assert r.reasons == (("request_id: missing", 1),)


# ----------------------------------------------------------------------------------------- events, lineage


def test_events_round_trip_dedupe_and_window(store: Store, tmp_path: Path) -> None:
    a = ChangeEvent.from_mapping({"id": "ev-1", "ts": "2026-03-06T17:45:00Z", "kind": "deployment",
                                  "target": "model:fraud", "description": "v2 rolled out", "team": "ml"})
    b = ChangeEvent.from_mapping({"id": "ev-2", "ts": "2026-03-07T09:00:00Z", "kind": "upstream",
                                  "target": "source:warehouse.stats"})
    assert store.add_events([b, a]).accepted == 2
    assert store.events() == (a, b)
    a2 = ChangeEvent.from_mapping({"id": "ev-1", "ts": "2026-03-06T17:50:00Z", "kind": "deployment",
                                   "target": "model:fraud", "description": "corrected time"})
    store.add_events([a2])
    assert store.events() == (a2, b)
    assert store.events(since="2026-03-07T00:00:00Z") == (b,)
    assert store.events(until=datetime(2026, 3, 7, tzinfo=UTC)) == (a2,)
    f = tmp_path / "events.jsonl"
    f.write_text(json.dumps({"id": "ev-3", "ts": "2026-03-08T00:00:00Z", "kind": "config"}) + "\n")
    assert store.ingest(f, "events").accepted == 1
    assert [e.id for e in store.events()] == ["ev-1", "ev-2", "ev-3"]
    assert store.status().events == 3


def test_lineage_round_trip_and_merge(store: Store, tmp_path: Path) -> None:
    store.add_lineage(Lineage.from_mapping({"feature.ratio": ["input.amount", "input.avg"]}))
    f = tmp_path / "lineage.json"
    f.write_text(json.dumps({"input.avg": ["source:warehouse.stats"], "feature.ratio": ["input.amount"]}))
    assert store.ingest(f, TableKind.LINEAGE).accepted == 2
    lin = store.lineage()
    assert lin.parents("feature.ratio") == ("input.amount", "input.avg")
    assert lin.sources("feature.ratio") == ("input.amount", "source:warehouse.stats")
    assert len(lin.edges) == 3


# ----------------------------------------------------------------------------------------- status


def test_status_counts_what_the_store_holds(store: Store) -> None:
    store.append_log(log(10, version="v1"))
    store.append_log(log(5, start=50, version="v2", t0=T0 + timedelta(days=2)))
    store.append_log(log(3, start=90, model="churn"))
    store.append_log(pa.table({"ts": ["garbage"], "score": [0.5]}))
    store.append_labels(pa.table({"request_id": ["r0", "r1", "r90"], "label": [1, 0, 1]}))
    store.add_events([ChangeEvent.from_mapping({"id": "e", "ts": "2026-03-06T00:00:00Z", "kind": "config"})])
    s = store.status()
    assert [m.name for m in s.models] == ["churn", "fraud"]
    fraud = s.model("fraud")
    assert fraud.versions == ("v1", "v2")
    assert fraud.rows == 15
    assert fraud.first_ts == T0
    assert fraud.last_ts == T0 + timedelta(days=2, minutes=40)
    assert fraud.last_request_id == "r54"
    assert fraud.labelled_fraction == pytest.approx(2 / 15)
    assert s.model("churn").labelled_fraction == pytest.approx(1 / 3)
    assert (s.rows, s.quarantined, s.events, s.labels) == (18, 1, 1, 3)
    assert s.files >= 6 and s.bytes > 0
    with pytest.raises(KeyError, match="churn"):
        s.model("nope")


# ----------------------------------------------------------------------------------------- bad input


def quarantine(store: Store) -> list[dict[str, object]]:
    return store.sql("SELECT kind, source, row, reason, data FROM quarantine ORDER BY ingested_at").to_pylist()


def test_each_malformed_row_is_quarantined_with_its_reason(store: Store) -> None:
    t = pa.table({
        "request_id": ["a", "b", "c", "d", "b", "f"],
        "ts": ["2026-03-06T18:00:00Z", None, "not a time", "2026-03-06T18:03:00Z", "2026-03-06T18:04:00Z",
               "2026-03-06T18:05:00Z"],
        "score": ["0.1", "0.2", "0.3", "high", "0.5", "0.6"],
        "model": ["fraud"] * 6,
    })
    r = store.append_log(t, source="batch-1.csv")
    assert (r.accepted, r.quarantined) == (2, 4)
    assert dict(r.reasons) == {
        "ts: missing timestamp": 1,
        "ts: expected an ISO-8601 timestamp such as 2026-03-06T18:00:00Z, got ...": 1,
        "score: expected a number, got ...": 1,
        "request_id: duplicate of an earlier row": 1,
    }
    q = quarantine(store)
    assert {(row["row"], row["reason"]) for row in q} == {
        (2, "ts: missing timestamp"),
        (3, "ts: expected an ISO-8601 timestamp such as 2026-03-06T18:00:00Z, got 'not a time'"),
        (4, "score: expected a number, got 'high'"),
        (5, "request_id: duplicate of an earlier row (b)"),
    }
    assert {row["source"] for row in q} == {"batch-1.csv"}
    assert json.loads(str(q[0]["data"]))["request_id"] in {"b", "c", "d"}
    assert store.read_log().column("request_id").to_pylist() == ["a", "f"]


def test_duplicates_of_stored_rows_are_quarantined_and_nothing_stored_is_lost(store: Store) -> None:
    store.append_log(log(10))
    again = pa.concat_tables([log(3, start=8), log(2, start=30)])  # r8, r9 stored; r10 new; r30, r31 new
    r = store.append_log(again)
    assert (r.accepted, r.quarantined) == (3, 2)
    assert r.reasons == (("request_id: already stored for this model and day", 2),)
    assert store.read_log().num_rows == 13
    assert store.read_log(columns=["request_id"]).column("request_id").to_pylist().count("r8") == 1
    # The same id under another model is a different request.
    assert store.append_log(log(2, start=8, model="churn")).accepted == 2


def test_a_value_that_cannot_take_the_stored_type_is_quarantined(store: Store) -> None:
    store.append_log(log(3))
    bad = log(2, start=10).set_column(5, "feature.amount", pa.array(["12.5", "lots"]))
    r = store.append_log(bad)
    assert (r.accepted, r.quarantined) == (1, 1)
    assert "feature.amount: expected a number, got 'lots'" in [q["reason"] for q in quarantine(store)]
    assert store.read_log().schema.field("feature.amount").type == pa.float64()
    # An integer column that receives fractions widens to float rather than losing rows.
    store.append_log(pa.table({"request_id": ["x"], "ts": [T0], "score": [0.5], "model": ["fraud"],
                               "count": [3]}))
    r = store.append_log(pa.table({"request_id": ["y"], "ts": [T0], "score": [0.5], "model": ["fraud"],
                                   "count": [2.5]}))
    assert r.accepted == 1
    assert sorted(v for v in store.read_log().column("count").to_pylist() if v is not None) == [2.5, 3]


def test_a_table_without_a_required_column_is_refused_whole(store: Store) -> None:
    with pytest.raises(SchemaError, match="ts"):
        store.append_log(pa.table({"request_id": ["a"], "score": [0.1]}))
    with pytest.raises(SchemaError, match="score or prediction"):
        store.append_log(pa.table({"ts": [T0], "region": ["EU"]}))
    assert store.status().rows == 0


def test_ingesting_a_truncated_parquet_file_names_it_and_stores_nothing(tmp_path: Path) -> None:
    good = tmp_path / "log.parquet"
    pq.write_table(log(50), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\xff\x13 not,a\ncsv")
    store = LocalStore.init(tmp_path / "store")
    with pytest.raises(ReadError, match=r"cut\.parquet"):
        store.ingest(cut, DataKind.LOG)
    with pytest.raises(ReadError, match=r"missing\.parquet"):
        store.ingest(tmp_path / "missing.parquet", "log")
    with pytest.raises((ReadError, SchemaError), match=r"garbage\.csv"):
        store.ingest(garbage, "log")
    assert store.status().rows == 0
    assert not list((tmp_path / "store" / "log").rglob("*.parquet"))
    assert store.ingest(good, "log").accepted == 50


def test_ingest_a_csv_with_config_roles_and_name(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    f.write_text("txn,event_time,score,region\n"
                 "t1,2026-03-06T18:00:00Z,0.1,EU\n"
                 "t2,2026-03-06T18:01:00Z,oops,EU\n"
                 "t1,2026-03-06T18:02:00Z,0.3,US\n")
    cfg = ModelConfig(name="fraud", roles={"txn": Role.REQUEST_ID, "event_time": Role.TIME})
    store = LocalStore.init(tmp_path / "store")
    r = store.ingest(f, "log", config=cfg)
    assert (r.accepted, r.quarantined) == (1, 2)
    assert store.read_log(model="fraud").column("request_id").to_pylist() == ["t1"]
    q = quarantine(store)
    assert {row["source"] for row in q} == {str(f)}
    assert sorted(int(str(row["row"])) for row in q) == [2, 3]
    with pytest.raises(ConfigError, match="reference"):
        store.ingest(f, DataKind.REFERENCE)


def test_a_date_column_in_the_input_is_kept_under_another_name(store: Store) -> None:
    store.append_log(log(2).append_column("date", pa.array(["yesterday", "today"])))
    got = store.read_log()
    assert got.column("date_orig").to_pylist() == ["yesterday", "today"]


# ----------------------------------------------------------------------------------------- layout


def test_layout_is_plain_hive_parquet_that_duckdb_and_pyarrow_read(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore.init(root)
    store.append_log(log(10, model="team/fraud v2", step=timedelta(minutes=20)))
    store.append_log(log(5, start=100, model="churn"))
    dirs = sorted(p.relative_to(root / "log").as_posix() for p in (root / "log").glob("*/*"))
    assert dirs == ["model=churn/date=2026-03-06", "model=team%2Ffraud%20v2/date=2026-03-06",
                    "model=team%2Ffraud%20v2/date=2026-03-07"]
    con = duckdb.connect()
    got = con.sql(f"SELECT model, count(*) AS n FROM read_parquet('{root}/log/**/*.parquet', "
                  "hive_partitioning=true) GROUP BY model ORDER BY model").fetchall()
    assert got == [("churn", 5), ("team/fraud v2", 10)]
    ds = pads.dataset(root / "log", format="parquet", partitioning="hive").to_table()
    assert ds.num_rows == 15
    assert sorted(set(ds.column("model").to_pylist())) == ["churn", "team/fraud v2"]
    assert store.read_log(model="team/fraud v2").num_rows == 10
    # Partition values live in the path only (Spark refuses a column both in the path and the file).
    one = next((root / "log").rglob("*.parquet"))
    assert {"model", "date"}.isdisjoint(pq.read_schema(one).names)
    assert (root / "mlsleuth.toml").read_text().count("format = 1") == 1


def test_catalog_views_work_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    store = LocalStore.init(root)
    store.append_log(log(6))
    store.append_labels(pa.table({"request_id": ["r1", "r1"], "label": [0, 1]}))
    store.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    con = duckdb.connect(str(root / "catalog.duckdb"), read_only=True)
    assert con.sql("SELECT count(*) FROM log").fetchall() == [(6,)]
    assert con.sql("SELECT label FROM labels WHERE request_id = 'r1'").fetchall() == [(1,)]
    # While a user holds the catalog open, the store still opens, appends and reads.
    other = LocalStore.open(root)
    other.append_log(log(2, start=500))
    other.add_events([ChangeEvent.from_mapping({"id": "e", "ts": "2026-03-06T00:00:00Z", "kind": "config"})])
    assert other.read_log().num_rows == 8
    con.close()


def test_a_moved_store_rewrites_its_catalog_on_open(tmp_path: Path) -> None:
    LocalStore.init(tmp_path / "a").append_log(log(3))
    (tmp_path / "a").rename(tmp_path / "b")
    LocalStore.open(tmp_path / "b").close()
    con = duckdb.connect(str(tmp_path / "b" / "catalog.duckdb"), read_only=True)
    assert con.sql("SELECT count(*) FROM log").fetchall() == [(3,)]
    con.close()


def test_open_without_a_store_hints_at_init(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="mlsleuth init"):
        LocalStore.open(tmp_path)
    LocalStore.init(tmp_path / "s").close()
    assert LocalStore.init(tmp_path / "s").status().rows == 0  # init on a store opens it


def test_staging_leftovers_of_a_dead_writer_are_cleaned_on_open(tmp_path: Path) -> None:
    root = tmp_path / "store"
    LocalStore.init(root).append_log(log(3))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = root / "_staging" / f"{int(dead.stdout)}-abc.parquet"
    leftover.write_bytes(b"PAR1 half a file")
    mine = root / "_staging" / f"{os.getpid()}-mine.parquet"
    mine.write_bytes(b"PAR1 being written")
    store = LocalStore.open(root)
    assert not leftover.exists()
    assert mine.exists()  # a live writer's file is left alone
    assert store.read_log().num_rows == 3


# ----------------------------------------------------------------------------------------- compaction


def test_compaction_merges_files_and_keeps_every_row(store: Store) -> None:
    for i in range(6):
        store.append_log(log(5, start=10 * i, t0=T0 - timedelta(hours=6) + timedelta(minutes=i)))
    store.append_labels(pa.table({"request_id": ["r0"], "label": [0]}))
    store.append_labels(pa.table({"request_id": ["r0"], "label": [1]}))
    before = store.read_log_with_labels()
    files = store.status().files
    assert store.compact() == 8
    assert store.compact() == 0
    after = store.read_log_with_labels()
    assert after.equals(before)
    assert store.status().files == files - 6
    # The duplicate check still sees the compacted rows.
    assert store.append_log(log(1, start=20, t0=T0 - timedelta(hours=6))).quarantined == 1


def test_a_reader_never_double_counts_while_compaction_runs(tmp_path: Path) -> None:
    store = LocalStore.init(tmp_path / "store")
    batch = 7
    counts: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        reading = LocalStore.open(tmp_path / "store")
        try:
            while not stop.is_set():
                counts.append(reading.sql("SELECT count(*) AS n FROM log").column("n")[0].as_py())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    n = 0
    try:
        for rnd in range(6):
            for i in range(8):
                day = T0 + timedelta(days=i % 2)
                store.append_log(log(batch, start=n, t0=day - timedelta(hours=10), step=timedelta(seconds=1)))
                n += batch
            assert store.compact() >= 2, rnd
    finally:
        stop.set()
        th.join()
    assert not errors, errors
    assert counts, "the reader never ran"
    assert max(counts) <= n
    assert all(c % batch == 0 for c in counts)
    assert counts == sorted(counts), "a count went down: a reader saw fewer rows during a compaction"
    assert store.read_log().num_rows == n


def test_an_interrupted_compaction_is_finished_and_never_double_counted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore.init(root)
    for i in range(3):
        store.append_log(log(4, start=10 * i, t0=T0 - timedelta(hours=3)))
    part = next((root / "log").glob("*/*"))
    olds = sorted(part.glob("*.parquet"))
    merged = pa.concat_tables([pq.read_table(f) for f in olds])
    # A compactor that died after renaming the merged file in, before deleting the old ones.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    pq.write_table(merged, part / "part-merged.parquet")
    (part / f"_compact-{pid}-x.json").write_text(json.dumps({"new": "part-merged.parquet",
                                                              "old": [f.name for f in olds], "pid": pid}))
    assert store.read_log().num_rows == 12  # the manifest hides the old files
    reopened = LocalStore.open(root)
    assert sorted(p.name for p in part.iterdir()) == ["part-merged.parquet"]
    assert reopened.read_log().num_rows == 12


# ----------------------------------------------------------------------------------------- threads


def test_threads_append_and_read_at_once(store: Store) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(10):
                store.append_log(log(5, start=1000 * k + 10 * i))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(15):
                n = store.read_log(model="fraud").num_rows
                assert n % 5 == 0
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)] + [threading.Thread(target=reader)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert store.read_log().num_rows == 150


# ----------------------------------------------------------------------------------------- engine


def test_engine_runs_duckdb_sql_and_reports_failures_with_the_query() -> None:
    eng = DuckDBEngine(threads=1)
    assert isinstance(eng, Engine)
    assert eng.threads == 1
    eng.register("t", pa.table({"x": [1, 2, 3]}))
    assert eng.query("SELECT sum(x) AS s FROM t").column("s").to_pylist() == [6]
    eng.register("t", pa.table({"x": [10]}))
    assert eng.query("SELECT sum(x) AS s FROM t").column("s").to_pylist() == [10]
    with pytest.raises(EngineError, match="SELECT nope FROM t"):
        eng.query("SELECT nope FROM t\nWHERE 1 = 1")
    seen: list[BaseException] = []

    def other_thread() -> None:
        try:
            eng.query("SELECT * FROM t")
        except EngineError as e:
            seen.append(e)

    th = threading.Thread(target=other_thread)
    th.start()
    th.join()
    assert len(seen) == 1  # another thread does not see this thread's bindings
    eng.close()
    with pytest.raises(EngineError):
        eng.query("SELECT 1")


def test_engine_reads_hive_parquet_with_partition_types(tmp_path: Path) -> None:
    d = tmp_path / "model=123" / "date=2026-03-06"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1.5]}), d / "a.parquet")
    eng = DuckDBEngine(allowed_directories=[tmp_path])
    eng.register("p", [str(d / "a.parquet")])
    t = eng.query("SELECT * FROM p")
    assert t.schema.field("model").type == pa.string()
    assert t.schema.field("date").type == pa.date32()
    assert t.column("model").to_pylist() == ["123"]


def test_transpile_turns_duckdb_sql_into_spark_sql() -> None:
    sql = "SELECT date_trunc('hour', ts) AS w, approx_quantile(score, 0.5) AS q FROM log GROUP BY ALL"
    assert transpile(sql, "duckdb") == sql
    spark = transpile(sql, "spark")
    assert "PERCENTILE_APPROX" in spark.upper() and "DATE_TRUNC" in spark.upper()
    with pytest.raises(EngineError, match="nodialect"):
        transpile("SELECT 1", "nodialect")


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryStore(), Store)
    assert isinstance(LocalStore.init(tmp_path / "s"), Store)


def test_request_id_hashes_are_stable_and_spread() -> None:
    from mlsleuth.store._core import hash_strings

    ids = pa.array(["", "a", "b", "ab", "ba", None, "r1", "r10", "r01", "é"] + [f"id{i}" for i in range(10_000)])
    h = hash_strings(ids)
    assert h.dtype == np.uint64
    assert len(np.unique(h[6:])) == len(ids) - 6  # no collisions among these distinct ids
    assert h[0] == h[5]  # null hashes as the empty string
    again = hash_strings(pa.chunked_array([ids.slice(0, 3), ids.slice(3)]))
    assert np.array_equal(h, again)  # chunking and slicing do not change a hash
    assert hash_strings(ids.slice(7, 1))[0] == h[7]


def test_the_memory_store_keeps_many_rows_fast_enough_for_tests() -> None:
    store = MemoryStore()
    rng = np.random.default_rng(0)
    n = 20_000
    t = pa.table({"request_id": [f"r{i}" for i in range(n)],
                  "ts": pa.array(np.full(n, 1_772_800_000_000_000), pa.timestamp("us", tz="UTC")),
                  "score": rng.random(n)})
    assert store.append_log(t).accepted == n
    assert store.append_log(t.slice(0, 10)).quarantined == 10


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs os.fork")
def test_a_forked_child_appends_through_the_store_it_inherited(tmp_path: Path) -> None:
    store = LocalStore.init(tmp_path / "store")
    store.append_log(log(3))
    assert store.read_log().num_rows == 3  # the parent's engine is in use before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:  # the write path never touches DuckDB, which is not fork-safe
            r = store.append_log(pa.concat_tables([log(2, start=100), log(1, start=0)]))
            code = 0 if (r.accepted, r.quarantined) == (2, 1) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.read_log().num_rows == 5
    assert store.status().quarantined == 1
