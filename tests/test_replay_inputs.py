"""The parsers behind the replay commands: segments, request-id files, diagnosis hypotheses, checked tables."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from mlsleuth.errors import ConfigError, InputError, ReadError, SchemaError
from mlsleuth.replay import Selection, parse_segments, read_checked, read_hypothesis, read_request_ids
from mlsleuth.schema import DataKind


def test_segments_and_within_a_column_or_across_columns() -> None:
    segs = parse_segments(["region=EU", "channel=web", "region=UK", "region=EU", "note=a=b", "empty="])
    assert segs == ({"region": ["EU", "UK"], "channel": "web", "note": "a=b", "empty": ""},)
    table = pa.table({"region": ["EU", "UK", "US", "EU"], "channel": ["web", "web", "web", "app"],
                      "note": ["a=b"] * 4, "empty": [""] * 4})
    assert Selection(segments=segs).mask(table).to_pylist() == [True, True, False, False]
    for bad in ("EU", "=EU", " =EU"):
        with pytest.raises(ConfigError, match="column=value"):
            parse_segments([bad])


def test_request_ids_from_text_or_a_table(tmp_path: Path) -> None:
    text = tmp_path / "ids"
    text.write_text("# flagged by support\nreq-1\n\n  req-2  \n", encoding="utf-8")
    assert read_request_ids(text) == ("req-1", "req-2")
    csv = tmp_path / "ids.csv"
    pacsv.write_csv(pa.table({"request_id": ["a", "b"], "why": ["x", "y"]}), csv)
    assert read_request_ids(csv) == ("a", "b")
    pacsv.write_csv(pa.table({"id": ["a"]}), csv)
    with pytest.raises(SchemaError, match="request_id"):
        read_request_ids(csv)
    (tmp_path / "blank").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="found none"):
        read_request_ids(tmp_path / "blank")
    with pytest.raises(ReadError, match="not found"):
        read_request_ids(tmp_path / "missing")


def test_hypothesis_of_a_diagnosis_file(tmp_path: Path) -> None:
    diag = {"verdict": "incident", "hypotheses": [
        {"cause": "upstream_data_change", "onset": "2026-03-06T18:00:00Z", "segments": [{"region": "EU"}]},
        {"cause": "distribution_shift", "onset": None, "segments": []}]}
    path = tmp_path / "diag.json"
    path.write_text(json.dumps(diag), encoding="utf-8")
    first = read_hypothesis(path)
    assert first["cause"] == "upstream_data_change"
    assert Selection.from_hypothesis(first).to_dict()["segments"] == [{"region": "EU"}]
    assert read_hypothesis(path, 2)["cause"] == "distribution_shift"
    with pytest.raises(ConfigError, match="from 1 to 2, got 3"):
        read_hypothesis(path, 3)
    with pytest.raises(ConfigError, match=r"no hypotheses .*healthy"):
        read_hypothesis({"verdict": "healthy", "hypotheses": []})
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReadError, match="diagnosis JSON"):
        read_hypothesis(path)


def test_checked_tables_keep_good_rows_and_refuse_files_without_any(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    pacsv.write_csv(pa.table({"ts": ["2026-03-06T18:00:00Z", "yesterday"], "score": [0.1, 0.2]}), path)
    good = read_checked(path, DataKind.LOG)
    assert good.num_rows == 1 and pa.types.is_timestamp(good.schema.field("ts").type)
    pacsv.write_csv(pa.table({"ts": ["yesterday"], "score": [0.2]}), path)
    with pytest.raises(InputError, match="no usable rows in the log; first reason: ts: expected an ISO-8601"):
        read_checked(path, DataKind.LOG)
    with pytest.raises(SchemaError, match="needs a column"):
        read_checked(path, DataKind.LABELS)
