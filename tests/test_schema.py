"""The data model at the boundary: roles, config, readers and row validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsleuth.errors import ConfigError, ReadError, SchemaError
from mlsleuth.schema import (
    DataKind,
    Lineage,
    ModelConfig,
    Role,
    infer_schema,
    read_events,
    read_lineage,
    read_table,
    validate,
)


def test_roles_follow_names_and_low_cardinality_metadata_becomes_a_segment() -> None:
    n = 100
    t = pa.table({
        "request_id": [f"r{i}" for i in range(n)], "ts": pa.array([datetime(2026, 3, 1, tzinfo=UTC)] * n),
        "input.amount": [1.0] * n, "feature.ratio": [0.5] * n, "score": [0.1] * n,
        "region": ["EU", "US"] * (n // 2), "customer": [f"c{i}" for i in range(n)],
        "lineage.pipeline_version": ["p1"] * n,
    })
    s = infer_schema(t)
    assert s["input.amount"].role is Role.INPUT
    assert s["feature.ratio"].role is Role.FEATURE
    assert s.segments == ("region",)  # "customer" is unique per row: an id, not a segment
    assert s.provenance == ("lineage.pipeline_version",)
    assert s["ts"].role is Role.TIME


def test_config_segments_and_roles_override_inference(tmp_path: Path) -> None:
    cfg_path = tmp_path / "fraud.toml"
    cfg_path.write_text('name = "fraud"\nsegments = ["channel"]\nwindow = "15min"\n[roles]\ntxn_id = "request_id"\n')
    cfg = ModelConfig.from_toml(cfg_path)
    assert cfg.window == timedelta(minutes=15)
    t = pa.table({"txn_id": ["a", "b"], "ts": ["2026-03-01T00:00:00Z"] * 2, "score": [0.1, 0.2],
                  "channel": ["web", "app"], "region": ["EU", "EU"]})
    v = validate(t, DataKind.LOG, roles=cfg.roles)
    assert "request_id" in v.good.column_names
    assert infer_schema(v.good, segments=cfg.segments).segments == ("channel",)


@pytest.mark.parametrize(("text", "field"), [
    ('window = "soon"', "window"),
    ('[roles]\nx = "boss"', "roles.x"),
    ('colour = "red"', None),
])
def test_bad_config_names_the_file_and_key(tmp_path: Path, text: str, field: str | None) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_toml(p)
    assert str(p) in str(e.value)
    if field:
        assert field in str(e.value)


def test_validation_rejects_bad_rows_with_reasons_and_keeps_the_rest() -> None:
    t = pa.table({
        "ts": ["2026-03-06T18:00:00Z", "2026-03-06 18:00:01.5Z", "yesterday", None, "2026-03-06T20:00:00+02:00",
               "2026-03-06T18:00:03Z"],
        "request_id": ["a", "b", "c", "d", "a", "f"],
        "score": ["0.1", "0.2", "0.3", "0.4", "0.5", "high"],
        "feature.x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    })
    v = validate(t, DataKind.LOG, path="log.csv")
    assert v.good.column("request_id").to_pylist() == ["a", "b"]
    assert v.good.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert v.good.column("ts")[1].as_py() == datetime(2026, 3, 6, 18, 0, 1, 500000, tzinfo=UTC)
    reasons = dict(zip(v.rejected.column("row").to_pylist(), v.rejected.column("reason").to_pylist(), strict=True))
    assert "ts" in reasons[3] and "'yesterday'" in reasons[3]
    assert reasons[4] == "ts: missing timestamp"
    assert "duplicate" in reasons[5]
    assert "score" in reasons[6] and "'high'" in reasons[6]
    assert json.loads(v.rejected.column("data")[0].as_py())["request_id"] == "c"


def test_offsets_are_converted_to_utc() -> None:
    t = pa.table({"ts": ["2026-03-06T20:00:00+02:00"], "score": [0.5]})
    v = validate(t, DataKind.LOG)
    assert v.good.column("ts")[0].as_py() == datetime(2026, 3, 6, 18, 0, tzinfo=UTC)


def test_a_log_without_ts_or_score_is_unusable_and_says_which_column() -> None:
    with pytest.raises(SchemaError, match="ts"):
        validate(pa.table({"score": [0.1]}), DataKind.LOG, path="x.csv")
    with pytest.raises(SchemaError, match="score or prediction"):
        validate(pa.table({"ts": ["2026-03-06T18:00:00Z"]}), DataKind.LOG)


def test_numeric_column_with_a_stray_string_keeps_its_type_and_rejects_the_row(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("ts,score,feature.x\n2026-03-06T18:00:00Z,0.1,1.5\n2026-03-06T18:00:01Z,0.2,oops\n"
                 "2026-03-06T18:00:02Z,0.3,2.5\n" + "".join(f"2026-03-06T18:01:{i:02d}Z,0.3,{i}\n" for i in range(30)))
    v = validate(read_table(p), DataKind.LOG, path=p)
    assert v.good.schema.field("feature.x").type == pa.float64()
    assert v.rejected.column("reason").to_pylist() == ["feature.x: expected a number, got 'oops'"]


def test_readers_name_the_file_when_it_is_unreadable(tmp_path: Path) -> None:
    good = tmp_path / "log.parquet"
    pq.write_table(pa.table({"ts": ["2026-03-06T18:00:00Z"] * 1000, "score": [0.1] * 1000}), good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ReadError, match=r"truncated\.parquet"):
        read_table(truncated)
    with pytest.raises(ReadError, match="not found"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(ReadError, match="unknown format"):
        (tmp_path / "x.xlsx").write_text("x")
        read_table(tmp_path / "x.xlsx")


def test_hive_partitioned_folder_reads_with_partition_columns(tmp_path: Path) -> None:
    for d in ("2026-03-01", "2026-03-02"):
        part = tmp_path / "log" / "model=fraud" / f"date={d}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"ts": [f"{d}T01:00:00Z"], "score": [0.3]}), part / "a.parquet")
    t = read_table(tmp_path / "log")
    assert t.num_rows == 2 and "model" in t.column_names


def test_events_errors_name_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_text('{"id": "ev-1", "ts": "2026-03-06T17:45:00Z", "kind": "upstream", "target": "source:w.c"}\n'
                 '{"id": "ev-2", "ts": "last friday", "kind": "deployment"}\n')
    with pytest.raises(ReadError) as e:
        read_events(p)
    assert f"{p}:2" in str(e.value) and "'ts'" in str(e.value)


def test_events_and_lineage_round_trip_and_lineage_walks_to_sources(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_text('{"id": "ev-2", "ts": "2026-03-06T19:00:00Z", "kind": "config", "team": "risk"}\n'
                 '{"id": "ev-1", "ts": "2026-03-06T17:45:00Z", "kind": "upstream", "target": "source:w.c"}\n')
    events = read_events(p)
    assert [e.id for e in events] == ["ev-1", "ev-2"]
    assert events[0].target_kind == "source" and events[0].target_name == "w.c"
    assert events[1].to_dict()["team"] == "risk"
    lp = tmp_path / "lineage.json"
    lp.write_text(json.dumps({"feature.ratio": ["input.amount", "input.avg"], "input.avg": ["source:w.c"],
                              "input.amount": ["source:payments"]}))
    lin = read_lineage(lp)
    assert lin.ancestors("feature.ratio") == ("input.amount", "input.avg", "source:payments", "source:w.c")
    assert lin.sources("feature.ratio") == ("source:payments", "source:w.c")
    assert lin.descendants("source:w.c") == ("input.avg", "feature.ratio")
    assert Lineage.from_mapping(lin.to_mapping()) == lin


def test_openlineage_run_events_become_change_events_and_lineage(tmp_path: Path) -> None:
    ol = {"eventType": "COMPLETE", "eventTime": "2026-03-06T17:40:00.000Z",
          "run": {"runId": "3f1c"}, "job": {"namespace": "airflow", "name": "customer_stats_daily"},
          "inputs": [{"namespace": "pg", "name": "payments.transactions"}],
          "outputs": [{"namespace": "wh", "name": "warehouse.customer_stats", "facets": {"columnLineage": {
              "fields": {"avg_amount_30d": {"inputFields": [{"name": "payments.transactions", "field": "amount"}]}}}}}]}
    p = tmp_path / "ol.jsonl"
    p.write_text(json.dumps(ol) + "\n")
    (ev,) = read_events(p)
    assert ev.kind == "pipeline" and ev.target == "source:warehouse.customer_stats"
    assert ev.ts == datetime(2026, 3, 6, 17, 40, tzinfo=UTC)
    lin = read_lineage(p)
    assert "source:payments.transactions" in lin.parents("source:warehouse.customer_stats")
    assert lin.parents("source:warehouse.customer_stats.avg_amount_30d")[0] == "source:payments.transactions.amount"


@pytest.mark.parametrize("raw", [
    pa.array([1_772_502_479], pa.int64()),                       # epoch seconds
    pa.array([1_772_502_479_123], pa.int64()),                   # milliseconds
    pa.array([1_772_502_479_123_456], pa.int64()),               # microseconds
    pa.array([1_772_502_479_123_456_789], pa.int64()),           # nanoseconds (above 2**53: kept exact)
    pa.array([1_772_502_479_123_456_789], pa.timestamp("ns", tz="UTC")),  # what pandas writes
    pa.array([1_772_502_479_123_456_789], pa.timestamp("ns")),
])
def test_timestamps_of_every_unit_read_as_utc_microseconds(raw: pa.Array) -> None:
    t = pa.table({"request_id": ["r1"], "label": [1], "label_ts": raw})
    got = validate(t, DataKind.LABELS).good.column("label_ts")[0].as_py()
    assert got.replace(microsecond=0) == datetime(2026, 3, 3, 1, 47, 59, tzinfo=UTC)
    assert got.microsecond in (0, 123_000, 123_456)  # truncated, never rounded up past the true time
