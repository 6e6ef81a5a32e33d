"""A store's Parquet layout read from URLs (``file://``, fsspec's ``memory://``): the same answers, read-only."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlsleuth.cli import app, store_location
from mlsleuth.errors import StoreError, StoreNotFoundError
from mlsleuth.monitors import build_reference, run_monitors, save_reference
from mlsleuth.schema import ChangeEvent
from mlsleuth.store import LocalStore, RemoteStore, open_store
from mlsleuth.testing import Case, demo_case


@pytest.fixture(scope="module")
def case() -> Case:
    return demo_case(0, rows=4_000)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, case: Case) -> Path:
    root = tmp_path_factory.mktemp("obj") / "store"
    with LocalStore.init(root, engine="duckdb") as store:
        store.append_log(case.log)
        assert case.labels is not None and case.events is not None
        store.append_labels(case.labels)
        store.add_events(ChangeEvent.from_mapping(e) if isinstance(e, dict) else e for e in case.events)
    save_reference(root, "fraud", build_reference(case.reference))
    return root


@pytest.fixture
def memory_url(local: Path) -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    bucket = f"/bucket-{uuid.uuid4().hex[:8]}/store"
    fs.put(str(local), bucket, recursive=True)
    yield f"memory://{bucket.lstrip('/')}"
    fs.rm(bucket.rsplit("/", 1)[0], recursive=True)


def _same_status(a: LocalStore, b: RemoteStore) -> None:
    sa, sb = a.status(), b.status()
    assert (sb.models, sb.labels, sb.events, sb.quarantined, sb.files) == (sa.models, sa.labels, sa.events,
                                                                             sa.quarantined, sa.files)


def test_a_copy_synced_during_a_compaction_counts_each_row_once(local: Path, tmp_path: Path) -> None:
    # `aws s3 sync` in the middle of a compaction copies the merged file, its inputs and the manifest.
    copy = tmp_path / "store"
    shutil.copytree(local, copy)
    part = next((copy / "log").glob("*/*"))
    olds = sorted(part.glob("*.parquet"))
    pq.write_table(pa.concat_tables([pq.read_table(f) for f in olds]), part / "part-merged.parquet")
    (part / "_compact-1-x.json").write_text(json.dumps({"new": "part-merged.parquet",
                                                        "old": [f.name for f in olds], "pid": 1}))
    (part / "_compact-2-y.json").write_text("{not json")  # not a manifest: ignored
    store = open_store(copy.as_uri(), engine="duckdb")
    with LocalStore.open(local, engine="duckdb") as ref:
        assert store.read_log().num_rows == ref.read_log().num_rows
        assert store.status().files == ref.status().files - len(olds) + 1


def test_a_file_url_opens_the_store_read_only_with_the_same_answers(local: Path) -> None:
    store = open_store(local.as_uri(), engine="duckdb")
    assert isinstance(store, RemoteStore)
    assert store.status().path == local.as_uri()
    with LocalStore.open(local, engine="duckdb") as ref:
        _same_status(ref, store)
        window = {"model": "fraud", "since": "2026-03-06T00:00:00Z", "until": "2026-03-07T00:00:00Z"}
        assert store.read_log_with_labels(**window).equals(ref.read_log_with_labels(**window))
        assert store.events() == ref.events()
        assert store.schema("fraud") == ref.schema("fraud")
    with pytest.raises(StoreError, match="read-only"):
        store.append_log(pa.table({"ts": ["2026-03-06T18:00:00Z"], "score": [0.5]}))
    with pytest.raises(StoreError, match="read-only"):
        store.compact()


def test_an_fsspec_url_runs_the_monitors_like_the_local_folder(local: Path, memory_url: str, case: Case,
                                                               assert_close: Any) -> None:
    store = open_store(memory_url, engine="duckdb")
    assert isinstance(store, RemoteStore)
    ref = build_reference(case.reference)
    with LocalStore.open(local, engine="duckdb") as loc:
        _same_status(loc, store)
        expected = run_monitors(loc, ref, window="1d", model="fraud")
        labels = loc.status().labels
    got = run_monitors(store, ref, window="1d", model="fraud")
    # Files read through a dataset arrive in other batches, so sums may differ in their last bits.
    assert_close([f.to_dict() for f in got.findings], [f.to_dict() for f in expected.findings], "findings")
    assert got.rows == expected.rows
    assert store.sql("SELECT count(*) AS n FROM labels").column("n").to_pylist() == [labels]


def test_a_url_without_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="no mlsleuth store"):
        open_store(tmp_path.as_uri())
    with pytest.raises(StoreNotFoundError):
        open_store(f"memory://nothing-{uuid.uuid4().hex[:8]}/here")


def test_urls_survive_the_command_lines_path_options() -> None:
    assert store_location(Path("s3://bucket/prefix/store")) == "s3://bucket/prefix/store"
    assert store_location(Path("file:///tmp/store")) == "file:///tmp/store"
    assert store_location(Path("memory://b/s")) == "memory://b/s"
    assert store_location("abfs://container@account.dfs.core.windows.net/x") == \
        "abfs://container@account.dfs.core.windows.net/x"
    assert store_location(Path("relative/store")) == "relative/store"


def test_cli_status_query_and_monitor_read_a_url(local: Path, memory_url: str, assert_close: Any) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--store", local.as_uri(), "--format", "json", "--engine", "duckdb"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["models"][0]["rows"] == 4_000
    res = runner.invoke(app, ["query", "SELECT count(*) AS n FROM log", "--store", memory_url, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"n": 4_000}]
    res = runner.invoke(app, ["monitor", "--store", memory_url, "--model", "fraud", "--format", "json"])
    assert res.exit_code == 0, res.output
    local_res = runner.invoke(app, ["monitor", "--store", str(local), "--model", "fraud", "--format", "json"])
    drop = ("seconds",)
    assert_close({k: v for k, v in json.loads(res.stdout).items() if k not in drop},
                 {k: v for k, v in json.loads(local_res.stdout).items() if k not in drop}, "monitor json")
    res = runner.invoke(app, ["status", "--store", str(local), "--engine", "oracle"])
    assert res.exit_code == 2 and "oracle" in res.output
