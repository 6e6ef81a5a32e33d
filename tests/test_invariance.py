"""Invariance: what the diagnosis says of a case must not depend on how the case is named, stored or ordered.

A few generated fraud weeks are diagnosed once as written (a CASE_DIR of Parquet files), then again after one
transformation that changes nothing a user would call the data: feature and input columns renamed (their prefixes
kept), segment values and model versions renamed, every timestamp shifted by whole weeks, the rows of every table
shuffled, or the tables written as CSV or JSON Lines instead of Parquet. The verdict, and the top hypothesis's
cause, culprits, onset, segments and events (mapped through the same renaming or shift) must be the ones of the
plain case. A healthy week with measurement noise added to its inputs and features stays healthy.

The cases ship no model file (a renamed feature could not reach a model fitted on the old names), and they are
small, so the file runs in about a minute.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mlsleuth.diagnosis import diagnose, find_case_files
from mlsleuth.testing import (
    INPUTS,
    Case,
    Cause,
    PipelineFault,
    UpstreamChange,
    Variation,
    compute_features,
    fraud_world,
    make_case,
)

ROWS = 8_000  # a change confined to one segment needs this many to show
SMALL = 5_000
SHIFT = timedelta(weeks=13)  # whole weeks: the weekday of every request stays the same

pytestmark = pytest.mark.filterwarnings("ignore:.*(epoch|date format).*")


@dataclass(frozen=True)
class Written:
    """A case written to a folder, with the maps that undo the transformation applied to it."""

    folder: Path
    columns: dict[str, str]  # new name -> original name
    values: dict[str, str]  # new segment value -> original
    shift: timedelta = timedelta(0)


def _cases() -> dict[str, Case]:
    nomodel = {"model": False}
    return {
        # An upstream change confined to one region: culprits, inputs, a segment and a change event.
        "upstream_segment": make_case(Cause.UPSTREAM_DATA_CHANGE, seed=12, rows=ROWS, variation=Variation(
            mode=UpstreamChange.UNITS, segment=("region", "EU"), **nomodel)),
        # Nulls in one feature of the app channel: a silent failure with no input culprit.
        "pipeline_segment": make_case(Cause.SILENT_PIPELINE_FAILURE, seed=13, rows=ROWS, variation=Variation(
            mode=PipelineFault.NULLS, segment=("channel", "app"), **nomodel)),
        # A new model version at a logged deployment: versions and events.
        "model_change": make_case(Cause.MODEL_CHANGE, seed=12, rows=SMALL, variation=Variation(**nomodel)),
        "healthy": make_case(None, seed=13, rows=SMALL, variation=Variation(**nomodel)),
    }


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    warnings.filterwarnings("ignore")
    return _cases()


def _write_tables(folder: Path, tables: dict[str, pa.Table], fmt: str) -> None:
    for name, table in tables.items():
        if fmt == "parquet":
            pq.write_table(table, folder / f"{name}.parquet")
        elif fmt == "csv":
            pacsv.write_csv(table, folder / f"{name}.csv")
        else:
            # pandas writes timestamps as ISO text and keeps 15 significant digits of each float.
            df = table.to_pandas()
            df.to_json(folder / f"{name}.jsonl", orient="records", lines=True, date_format="iso", date_unit="us",
                       double_precision=15)


def write(case: Case, folder: Path, *, fmt: str = "parquet", rename: bool = False, shift: timedelta = timedelta(0),
          shuffle: int | None = None) -> Written:
    """Write ``case`` as a CASE_DIR after the given transformation; return the maps that undo it."""
    folder.mkdir(parents=True)
    log, ref, labels = case.log, case.reference, case.labels
    assert labels is not None and case.events is not None and case.lineage is not None
    events = [dict(e) for e in case.events]
    lineage = {k: list(v) for k, v in case.lineage.items()}
    columns: dict[str, str] = {}
    values: dict[str, str] = {}
    if rename:
        # Opaque names that keep each column's role prefix and say nothing of the original.
        old = [c for c in log.column_names if c.startswith(("feature.", "input."))]
        new = {c: f"{c.split('.', 1)[0]}.c{i:02d}" for i, c in enumerate(sorted(old, reverse=True))}
        columns = {v: k for k, v in new.items()}
        seg_new: dict[str, dict[str, str]] = {}
        for col in ("region", "channel", "country"):
            vals = sorted(set(log.column(col).to_pylist()) | set(ref.column(col).to_pylist()))
            seg_new[col] = {v: f"{col[:3]}_{j}" for j, v in enumerate(reversed(vals))}
            values.update({n: o for o, n in seg_new[col].items()})
        # Version names that sort the other way round (hashes, not numbers).
        versions = {"v12": "9f31c0a", "v13": "0b7e4d1"}

        def table(t: pa.Table) -> pa.Table:
            for col, m in seg_new.items():
                t = t.set_column(t.column_names.index(col), col, pa.array([m[v] for v in t.column(col).to_pylist()]))
            if "model_version" in t.column_names:
                t = t.set_column(t.column_names.index("model_version"), "model_version",
                                 pa.array([versions.get(v, v) for v in t.column("model_version").to_pylist()]))
            return t.rename_columns([new.get(c, c) for c in t.column_names])

        log, ref = table(log), table(ref)
        lineage = {new.get(k, k): [new.get(p, p) for p in ps] for k, ps in lineage.items()}
        for e in events:
            kind, _, target = e["target"].partition(":")
            if f"{kind}.{target}" in new:
                e["target"] = f"{kind}:{new[f'{kind}.{target}'].split('.', 1)[1]}"
            for a, b in [*new.items(), *versions.items()]:
                e["description"] = e["description"].replace(a, b)
    if shift:
        def moved(t: pa.Table, col: str) -> pa.Table:
            return t.set_column(t.column_names.index(col), col,
                                pc.add(t.column(col), pa.scalar(shift, pa.duration("us"))))

        log = moved(log, "ts")
        labels = moved(labels, "label_ts")
        if "ts" in ref.column_names:
            ref = moved(ref, "ts")
        for e in events:
            t = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) + shift
            e["ts"] = t.isoformat().replace("+00:00", "Z")
    if shuffle is not None:
        rng = np.random.default_rng(shuffle)
        log, ref, labels = (t.take(pa.array(rng.permutation(t.num_rows))) for t in (log, ref, labels))
        rng.shuffle(events)  # type: ignore[arg-type]
    _write_tables(folder, {"log": log, "reference": ref, "labels": labels}, fmt)
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    (folder / "lineage.json").write_text(json.dumps(lineage), encoding="utf-8")
    return Written(folder, columns, values, shift)


def verdict_of(w: Written) -> dict[str, Any]:
    """The diagnosis of a written case, mapped back to the original names and times."""
    files: dict[str, Any] = dict(find_case_files(w.folder))
    d = diagnose(files.pop("log"), **files)
    out: dict[str, Any] = {"verdict": d.verdict.value, "causes": [h.cause.value for h in d.hypotheses]}
    if d.top is not None:
        h = d.top
        out |= {
            "cause": h.cause.value,
            "features": [w.columns.get(c, c) for c in h.features],
            "inputs": [w.columns.get(c, c) for c in h.inputs],
            "onset": None if h.onset is None else h.onset - w.shift,
            "segments": sorted(sorted((k, w.values.get(v, v)) for k, v in s.items()) for s in h.segments),
            "events": list(h.events),
        }
    return out


@pytest.fixture(scope="module")
def baselines(cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("plain")
    return {name: verdict_of(write(c, root / name)) for name, c in cases.items()}


def test_baselines_are_right(cases: dict[str, Case], baselines: dict[str, dict[str, Any]]) -> None:
    # The invariances below mean something only if the plain diagnoses find what happened.
    for name, case in cases.items():
        truth = case.truth.to_dict()
        assert baselines[name]["verdict"] == truth["verdict"], name
        if truth["hypotheses"]:
            assert baselines[name]["cause"] == truth["hypotheses"][0]["cause"], name
    assert baselines["upstream_segment"]["segments"] == [[("region", "EU")]]
    assert baselines["pipeline_segment"]["segments"] == [[("channel", "app")]]


TRANSFORMS: dict[str, Callable[[Case, Path], Written]] = {
    "renamed": lambda c, p: write(c, p, rename=True),
    "shifted": lambda c, p: write(c, p, shift=SHIFT),
    "shuffled": lambda c, p: write(c, p, shuffle=5),
    "csv": lambda c, p: write(c, p, fmt="csv"),
    "jsonl": lambda c, p: write(c, p, fmt="jsonl"),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_diagnosis_is_invariant(transform: str, cases: dict[str, Case], baselines: dict[str, dict[str, Any]],
                                tmp_path: Path) -> None:
    for name, case in cases.items():
        got = verdict_of(TRANSFORMS[transform](case, tmp_path / name))
        assert got == baselines[name], f"{name} {transform}"


def test_noise_alone_stays_healthy(cases: dict[str, Case], tmp_path: Path) -> None:
    # Measurement noise (0.5 %) on every continuous input, carried through the feature pipeline and the model as
    # production would carry it, is not an incident.
    case = cases["healthy"]
    world = fraud_world(case.spec.world_seed)
    rng = np.random.default_rng(3)
    log = case.log
    inputs = {c: log.column(c).to_numpy(zero_copy_only=False) for c in INPUTS}
    for c in ("input.amount", "input.avg_amount_30d", "input.session_seconds"):
        inputs[c] = np.round(inputs[c] * rng.normal(1, 0.005, log.num_rows), 2)
    feats = compute_features(inputs)
    score = world.score(feats)
    new = {**inputs, **feats, "score": score, "prediction": (score >= world.threshold).astype(np.int64)}
    for c, v in new.items():
        log = log.set_column(log.column_names.index(c), c, pa.array(v, log.schema.field(c).type))
    noisy = dataclasses.replace(case, log=log)
    got = verdict_of(write(noisy, tmp_path / "noisy"))
    assert got["verdict"] == "healthy", got
