"""The encoding matrix: the same incident written the ways real tools write a log gives the same diagnosis.

One demo week is built once; each encoding of its log (file formats, Arrow types, DataFrames, folders and
stores whose files came in different encodings) must give the verdict, the ranked causes with their
culprits, and the onset that plain Parquet gives. Files mlsleuth cannot read are refused with one line that
names the file, the column and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from mlsleuth.diagnosis import Diagnosis, diagnose, diagnose_store
from mlsleuth.errors import InputError
from mlsleuth.schema import read_table
from mlsleuth.schema._tables import VALUE_RTOL, at_least, at_most
from mlsleuth.store import LocalStore
from mlsleuth.testing import Case, demo_case

ROWS = 20_000

# pandas 3 deprecates epoch times in to_json, but they are what files written by pandas 2 hold.
pytestmark = pytest.mark.filterwarnings("ignore:.*(epoch|date format).*")


@pytest.fixture(scope="module")
def case() -> Case:
    return demo_case(0, rows=ROWS)


@pytest.fixture(scope="module")
def baseline(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Diagnosis:
    path = tmp_path_factory.mktemp("plain") / "log.parquet"
    pq.write_table(case.log, path)
    return diagnose(path, reference=case.reference, labels=case.labels)


def summary(d: Diagnosis) -> tuple[str, list[tuple[str, tuple[str, ...], tuple[str, ...], Any]]]:
    """What must not depend on the encoding: the verdict and each hypothesis's cause, culprits and segments."""
    return d.verdict.value, [(h.cause.value, h.features, h.inputs, h.segments) for h in d.hypotheses]


def assert_same(d: Diagnosis, base: Diagnosis) -> None:
    assert summary(d) == summary(base)
    assert d.top is not None and base.top is not None and d.top.onset is not None and base.top.onset is not None
    # Text times written to the millisecond (pandas JSON) may move the onset row by its sub-millisecond part.
    assert abs(d.top.onset - base.top.onset) < timedelta(milliseconds=1)


def _is_text(f: pa.Field) -> bool:
    return pa.types.is_string(f.type)


def _is_measure(f: pa.Field) -> bool:
    return pa.types.is_floating(f.type) and f.name.startswith(("feature.", "input."))


def retype(t: pa.Table, pick: Callable[[pa.Field], bool], to: pa.DataType) -> pa.Table:
    return t.cast(pa.schema([pa.field(f.name, to if pick(f) else f.type) for f in t.schema]))


def set_ts(t: pa.Table, values: pa.ChunkedArray | pa.Array) -> pa.Table:
    return t.set_column(t.column_names.index("ts"), "ts", values)


def _days(log: pa.Table) -> list[tuple[str, pa.Table]]:
    day = pc.strftime(log.column("ts"), "%Y-%m-%d")
    return [(d, log.filter(pc.equal(day, d))) for d in sorted(set(day.to_pylist()))]


def _write_day(part: pa.Table, path: Path, k: int) -> Path:
    """Day files as different tools wrote them: Parquet, float32 Parquet, CSV, pandas JSON Lines, Feather."""
    if k == 0:
        pq.write_table(part, out := path.with_suffix(".parquet"))
    elif k == 1:
        pq.write_table(retype(retype(part, _is_measure, pa.float32()), _is_text, pa.large_string()),
                       out := path.with_suffix(".parquet"))
    elif k == 2:
        pacsv.write_csv(part, out := path.with_suffix(".csv"))
    elif k == 3:
        part.to_pandas().to_json(out := path.with_suffix(".jsonl"), orient="records", lines=True, date_format="epoch")
    else:
        feather.write_feather(retype(part, _is_text, pa.string_view()), out := path.with_suffix(".feather"))
    return out


def encodings() -> dict[str, Callable[[pa.Table, Path], Any]]:
    """Each way of writing the log: a function of (log, scratch folder) giving what is passed to ``diagnose``."""

    def hive(log: pa.Table, d: Path) -> Path:
        pads.write_dataset(log.append_column("date", pc.strftime(log.column("ts"), "%Y-%m-%d")), d / "log",
                           format="parquet", partitioning=["date"], partitioning_flavor="hive")
        return d / "log"

    def mixed_folder(log: pa.Table, d: Path) -> Path:
        (d / "log").mkdir()
        for k, (day, part) in enumerate(_days(log)):
            _write_day(part, d / "log" / day, k % 5)
        return d / "log"

    def excel_csv(log: pa.Table, d: Path) -> Path:
        frame = log.to_pandas()
        frame["ts"] = frame["ts"].dt.strftime("%d/%m/%Y %H:%M:%S.%f")
        frame.to_csv(d / "log.csv", sep=";", decimal=",", index=False)
        return d / "log.csv"

    def decimal(log: pa.Table, d: Path) -> pa.Table:
        # Money as databases keep it (two decimals), the computed features at full precision.
        money = retype(log, lambda f: f.name in ("input.amount", "input.avg_amount_30d"), pa.decimal128(12, 2))
        return retype(money, _is_measure, pa.decimal128(38, 18))

    def polars(log: pa.Table, d: Path) -> Any:
        import polars as pl

        return pl.from_arrow(log)

    return {
        "csv": lambda log, d: (pacsv.write_csv(log, d / "log.csv"), d / "log.csv")[1],
        # pandas writes JSON numbers with 10 significant digits and times as epoch milliseconds.
        "jsonl_pandas": lambda log, d: (log.to_pandas().to_json(d / "log.jsonl", orient="records", lines=True,
                                                                date_format="epoch"), d / "log.jsonl")[1],
        "json_array": lambda log, d: (log.to_pandas().to_json(d / "log.json", orient="records", date_format="epoch"),
                                      d / "log.json")[1],
        "json_array_iso": lambda log, d: (log.to_pandas().to_json(d / "log.json", orient="records",
                                                                  date_format="iso"), d / "log.json")[1],
        "feather": lambda log, d: (feather.write_feather(log, d / "log.feather"), d / "log.feather")[1],
        "arrow_ipc_string_view": lambda log, d: (
            feather.write_feather(retype(log, _is_text, pa.string_view()), d / "log.arrow"), d / "log.arrow")[1],
        "string_view": lambda log, d: retype(log, _is_text, pa.string_view()),
        "large_string": lambda log, d: retype(log, _is_text, pa.large_string()),
        "dictionary": lambda log, d: retype(log, _is_text, pa.dictionary(pa.int32(), pa.string())),
        "float32": lambda log, d: retype(log, _is_measure, pa.float32()),
        "decimal": decimal,
        "hive_folder": hive,
        "ns_timestamps": lambda log, d: set_ts(log, log.column("ts").cast(pa.timestamp("ns", tz="UTC"))),
        "naive_timestamps": lambda log, d: set_ts(log, log.column("ts").cast(pa.timestamp("us"))),
        "epoch_us": lambda log, d: set_ts(log, log.column("ts").cast(pa.int64())),
        "epoch_ns": lambda log, d: set_ts(log, pc.multiply(log.column("ts").cast(pa.int64()), 1000)),
        "pandas": lambda log, d: log.to_pandas(),
        "polars": polars,
        "mixed_folder": mixed_folder,
        "excel_csv": excel_csv,
    }


#: Options an encoding needs (what the refusal of the file without them says to pass).
OPTIONS = {"excel_csv": {"ts_format": "%d/%m/%Y %H:%M:%S.%f", "delimiter": ";"}}


@pytest.mark.parametrize("encoding", sorted(encodings()))
def test_every_encoding_gives_the_diagnosis_of_plain_parquet(encoding: str, case: Case, baseline: Diagnosis,
                                                               tmp_path: Path) -> None:
    log = encodings()[encoding](case.log, tmp_path)
    d = diagnose(log, reference=case.reference, labels=case.labels, **OPTIONS.get(encoding, {}))
    assert_same(d, baseline)


def test_the_reference_and_labels_as_dataframes_in_other_encodings(case: Case, baseline: Diagnosis) -> None:
    import polars as pl

    ref = pl.from_arrow(retype(case.reference, _is_measure, pa.float32()))
    assert case.labels is not None
    d = diagnose(case.log.to_pandas(), reference=ref, labels=case.labels.to_pandas())
    assert_same(d, baseline)


def test_float32_values_at_a_reference_edge_are_not_a_training_serving_skew(case: Case, baseline: Diagnosis) -> None:
    # float32(0.55) = 0.5500000119: compared exactly, every value at an edge moved past it.
    d = diagnose(retype(case.log, _is_measure, pa.float32()), reference=case.reference, labels=case.labels)
    assert "training_serving_skew" not in [h.cause.value for h in d.hypotheses]
    assert_same(d, baseline)


def test_a_store_whose_day_files_came_in_different_encodings_diagnoses_as_plain_parquet(
        case: Case, baseline: Diagnosis, tmp_path: Path) -> None:
    assert case.labels is not None
    with LocalStore.init(tmp_path / "store") as st:
        for k, (day, part) in enumerate(_days(case.log)):
            st.ingest(_write_day(part, tmp_path / day, k % 5), "log")
        st.append_labels(case.labels)
        d = diagnose_store(st, reference=case.reference)
    assert_same(d, baseline)


def test_a_hive_date_folder_is_not_a_segment(case: Case, tmp_path: Path) -> None:
    folder = encodings()["hive_folder"](case.log, tmp_path)
    d = diagnose(folder, reference=case.reference, labels=case.labels)
    assert all("date" not in dict(s) for h in d.hypotheses for s in h.segments)
    assert any("partition date" in s for s in d.skipped)


def test_values_equal_to_an_edge_up_to_the_tolerance_count_as_equal() -> None:
    assert float(np.float32(0.55)) > 0.55 and float(np.float32(0.55)) <= at_most(0.55)
    assert float(np.float32(0.7)) < 0.7 and float(np.float32(0.7)) >= at_least(0.7)
    assert float(round(0.123456789123, 10)) <= at_most(0.123456789123)
    # A real change stays outside: one part in ten thousand is far beyond the tolerance.
    assert at_most(0.55) < 0.55 * (1 + 1e-4) and VALUE_RTOL < 1e-5


# ------------------------------------------------------------------------------------------ ignored inputs


def test_labels_without_a_prediction_column_are_said_in_skipped(case: Case) -> None:
    d = diagnose(case.log.drop_columns(["prediction"]), reference=case.reference, labels=case.labels)
    assert any("no prediction column" in s for s in d.skipped)


def test_a_log_of_two_models_needs_model_name_and_says_what_it_left_out(case: Case, tmp_path: Path) -> None:
    other = case.log.slice(0, 1000)
    other = other.set_column(other.column_names.index("model"), "model", pa.array(["churn"] * 1000))
    other = other.set_column(other.column_names.index("request_id"), "request_id",
                             pc.binary_join_element_wise("churn-", other.column("request_id"), ""))
    path = tmp_path / "log.parquet"
    pq.write_table(pa.concat_tables([case.log, other]), path)
    with pytest.raises(InputError) as err:
        diagnose(path, reference=case.reference)
    msg = str(err.value)
    assert str(path) in msg and "'model'" in msg and "--model-name" in msg and "\n" not in msg
    main = case.log.column("model")[0].as_py()
    d = diagnose(path, reference=case.reference, labels=case.labels, model_name=main)
    assert any("1,000 log rows of other models (churn)" in s for s in d.skipped)


# ------------------------------------------------------------------------------------------ refused files


def _refusal(source: Path, **kw: Any) -> str:
    with pytest.raises(InputError) as err:
        diagnose(source, **kw)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert str(source) in msg, msg
    return msg


def test_excel_dates_are_refused_with_the_column_and_the_ts_format_option(case: Case, tmp_path: Path) -> None:
    frame = case.log.slice(0, 500).to_pandas()
    frame["ts"] = frame["ts"].dt.strftime("%m/%d/%Y %H:%M")
    frame.to_csv(tmp_path / "log.csv", index=False)
    msg = _refusal(tmp_path / "log.csv")
    assert "'ts'" in msg and "--ts-format" in msg


def test_a_semicolon_csv_is_refused_with_the_delimiter_option(case: Case, tmp_path: Path) -> None:
    case.log.slice(0, 500).to_pandas().to_csv(tmp_path / "log.csv", sep=";", decimal=",", index=False)
    msg = _refusal(tmp_path / "log.csv")
    assert "--csv-delimiter ';'" in msg and "'request_id;" in msg


def test_an_unknown_format_is_refused_with_the_formats_that_are_read(tmp_path: Path) -> None:
    (tmp_path / "log.xlsx").write_bytes(b"PK\x03\x04")
    msg = _refusal(tmp_path / "log.xlsx")
    assert ".feather" in msg and ".json" in msg and ".parquet" in msg


def test_a_json_file_that_is_neither_lines_nor_an_array_of_records_is_refused(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_text('[1, 2, 3]')
    msg = _refusal(tmp_path / "log.json")
    assert "orient=\"records\"" in msg


# ------------------------------------------------------------------------------------------ readers


def test_read_table_makes_types_plain_whatever_wrote_them(tmp_path: Path) -> None:
    t = pa.table({"s": pa.array(["a", "b"], pa.string_view()),
                  "d": pa.array(["x", "x"]).dictionary_encode(),
                  "f": pa.array([0.55, 1.5], pa.float32()),
                  "m": pa.array([1, 2], pa.decimal128(5, 2))})
    got = read_table(t)
    assert got.schema.types == [pa.string(), pa.string(), pa.float64(), pa.float64()]
    assert got.column("d").to_pylist() == ["x", "x"]
    feather.write_feather(t.drop_columns(["m"]), tmp_path / "t.arrow")
    assert read_table(tmp_path / "t.arrow").column("s").type == pa.string()


def test_a_folder_of_mixed_formats_stacks_its_files(case: Case, tmp_path: Path) -> None:
    folder = encodings()["mixed_folder"](case.log, tmp_path)
    got = read_table(folder)
    assert got.num_rows == case.log.num_rows
    assert got.schema.field("feature.amount_to_avg_ratio").type == pa.float64()


def test_a_folder_with_ns_and_naive_times_and_a_spark_part_file_stacks_as_utc(tmp_path: Path) -> None:
    us = 1_772_800_000_000_000
    pq.write_table(pa.table({"ts": pa.array([us * 1000], pa.timestamp("ns", tz="UTC")), "x": [1]}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({"ts": pa.array([us + 1], pa.timestamp("us")), "x": [1.5]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"ts": pa.array([us + 2], pa.timestamp("us")), "x": [2.5]}), tmp_path / "part-00000")
    (tmp_path / "_SUCCESS").write_text("")
    got = read_table(tmp_path).sort_by("x")
    assert got.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert got.column("ts").cast(pa.int64()).to_pylist() == [us, us + 1, us + 2]
    assert got.column("x").to_pylist() == [1.0, 1.5, 2.5]


def test_labels_that_match_no_request_are_said_in_skipped(case: Case) -> None:
    assert case.labels is not None
    ids = pc.binary_join_element_wise("other-", case.labels.column("request_id"), "")
    d = diagnose(case.log, reference=case.reference, labels=case.labels.set_column(0, "request_id", ids))
    assert any("none of their request_ids is in the log" in s for s in d.skipped)


def test_monitors_find_the_same_in_a_dataframe_and_in_string_view_or_float32_tables(case: Case) -> None:
    import polars as pl

    from mlsleuth.monitors import ArrowSource, build_reference, run_monitors

    def key(report: Any) -> list[tuple[Any, ...]]:
        return [(f.monitor, f.column, f.window_start, f.segment, f.statistic) for f in report.findings]

    ref = build_reference(case.reference)
    plain = run_monitors(ArrowSource(case.log, case.labels), ref)
    assert plain.findings
    assert key(run_monitors(pl.from_arrow(case.log), case.reference.to_pandas(), labels=case.labels)) == key(plain)
    odd = retype(retype(case.log, _is_text, pa.string_view()), _is_measure, pa.float32())
    assert key(run_monitors(ArrowSource(odd, case.labels), ref)) == key(plain)


def test_replay_and_compare_take_dataframes_and_string_view_tables(case: Case, tmp_path: Path) -> None:
    import joblib

    from mlsleuth.replay import compare, replay

    joblib.dump(case.model, tmp_path / "model.joblib")
    assert case.labels is not None
    plain = replay(case.log, model=str(tmp_path / "model.joblib"), labels=case.labels)
    frame = replay(case.log.to_pandas(), model=str(tmp_path / "model.joblib"), labels=case.labels.to_pandas())
    assert (frame.n_flipped, frame.after.positive_rate.value) == (plain.n_flipped, plain.after.positive_rate.value)
    version = case.log.column("model_version")[0].as_py()
    a = compare(case.log, a=version, b=version)
    b = compare(retype(case.log, _is_text, pa.string_view()), a=version, b=version)
    assert a.to_dict() == b.to_dict()


def test_the_cli_reads_an_excel_export_with_ts_format_and_csv_delimiter(case: Case, baseline: Diagnosis,
                                                                       tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from mlsleuth.cli import app

    log = encodings()["excel_csv"](case.log, tmp_path)
    pq.write_table(case.reference, tmp_path / "reference.parquet")
    assert case.labels is not None
    pq.write_table(case.labels, tmp_path / "labels.parquet")
    args = ["diagnose", "--log", str(log), "--reference", str(tmp_path / "reference.parquet"),
            "--labels", str(tmp_path / "labels.parquet")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "--csv-delimiter" in refused.output
    ok = CliRunner().invoke(app, [*args, "--csv-delimiter", ";", "--ts-format", "%d/%m/%Y %H:%M:%S.%f"])
    assert ok.exit_code == 0, ok.output
    got = json.loads(ok.stdout)
    assert got["verdict"] == baseline.verdict.value
    assert [h["cause"] for h in got["hypotheses"]] == [h.cause.value for h in baseline.hypotheses]
