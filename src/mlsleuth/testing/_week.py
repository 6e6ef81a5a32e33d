"""Large demo weeks written straight into a store's Parquet layout, batch by batch, in bounded memory."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlsleuth.errors import ConfigError, StoreError
from mlsleuth.schema import ChangeEvent, Lineage
from mlsleuth.store import LocalStore
from mlsleuth.testing._case import _labels, demo_spec
from mlsleuth.testing._simulate import MODEL_NAME, build_events, build_truth, simulate, to_table
from mlsleuth.testing._spec import CaseSpec, Truth
from mlsleuth.testing._world import LINEAGE, fraud_world

__all__ = ["LargeWeek", "write_week"]

#: Request ids of batch ``b`` start at ``b * _ID_STRIDE`` (unique across batches, as in ``iter_log_batches``).
_ID_STRIDE = 10**8
_DAY_US = 86_400_000_000


@dataclass(frozen=True)
class LargeWeek:
    """What :func:`write_week` wrote.

    Attributes
    ----------
    folder
        The folder holding ``store/``, ``reference.parquet``, ``model.joblib`` and ``truth.json``.
    store
        The mlsleuth store (hive-partitioned Parquet) with the log, labels, events, lineage and the
        model's stored reference profile.
    reference, model
        The reference data file and the fitted model file.
    model_name
        The model the log rows belong to (``fraud``).
    rows, labels
        Log rows and label rows written.
    truth
        What really happened (the planted incident).
    seconds
        Wall time of the generation.
    files
        Parquet files written for the log.
    """

    folder: Path
    store: Path
    reference: Path
    model: Path
    model_name: str
    rows: int
    labels: int
    truth: Truth
    seconds: float
    files: int


def _day_text(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, tz=UTC).date().isoformat()


def _write_file(root: Path, directory: str, table: pa.Table, compression: str, level: int | None) -> None:
    """Write one Parquet file atomically (staging, then rename) as the store does."""
    final_dir = root / directory
    tmp = root / "_staging" / f"{os.getpid()}-{uuid.uuid4().hex}.parquet"
    try:
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        pq.write_table(table, tmp, compression=compression, compression_level=level,
                       use_dictionary=strings or False)
        final_dir.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final_dir / f"part-{uuid.uuid4().hex}.parquet")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{final_dir}: cannot write a generated file: {e}") from e


def _by_day(table: pa.Table, ts_us: np.ndarray) -> list[tuple[str, pa.Table]]:
    """Split a batch sorted by time into one table per UTC day."""
    days = ts_us // _DAY_US
    cuts = np.flatnonzero(np.diff(days)) + 1
    bounds = [0, *cuts.tolist(), len(days)]
    return [(_day_text(int(days[a])), table.slice(a, b - a)) for a, b in itertools.pairwise(bounds)
            if b > a]


def write_week(
    folder: str | Path,
    rows: int = 100_000_000,
    *,
    spec: CaseSpec | None = None,
    seed: int = 0,
    batch_rows: int = 500_000,
    compression: str = "zstd",
    progress: Callable[[int, float], None] | None = None,
) -> LargeWeek:
    """Write a week of fraud-model traffic with a known incident into a store, in bounded memory.

    The log is generated in independent batches of ``batch_rows`` requests (each a sample of the
    whole week, as :func:`iter_log_batches` makes them) and written straight into the store's
    layout, one Parquet file per batch and UTC day under ``log/model=fraud/date=YYYY-MM-DD/``.
    Labels arrive as the spec says (``labels/date=<day they arrived>/``); change events, lineage
    and the model's reference profile go through the store. Memory is that of one batch, whatever
    ``rows`` is.

    Parameters
    ----------
    folder
        Where to write: ``store/`` (an mlsleuth store), ``reference.parquet``, ``model.joblib``
        and ``truth.json``. The store must not hold a log yet.
    rows
        Requests in the week (a campaign incident adds some on top).
    spec
        The week's plan, e.g. from :func:`plan_case`; default the demo's: the upstream warehouse change
        of Friday 18:00 UTC that cuts ``input.avg_amount_30d`` by 30 % (:func:`demo_spec`).
    seed
        The traffic's randomness (with the default spec).
    batch_rows
        Requests generated and written at once; memory grows with it (about 1 kB per request).
    compression
        Parquet codec of the log and label files (``zstd`` level 1, or ``snappy``).
    progress
        Called after each batch with the rows written so far and the seconds elapsed.

    Raises
    ------
    ConfigError
        When ``rows`` or ``batch_rows`` is not positive.
    StoreError
        When the store already holds a log, or a file cannot be written.

    Examples
    --------
    >>> import tempfile
    >>> week = write_week(tempfile.mkdtemp(), rows=20_000, batch_rows=10_000)
    >>> week.rows >= 20_000, week.truth.cause.value
    (True, 'upstream_data_change')
    """
    if rows <= 0 or batch_rows <= 0:
        raise ConfigError(f"expected rows > 0 and batch_rows > 0, got {rows} and {batch_rows}", column="rows")
    if compression not in ("zstd", "snappy"):
        raise ConfigError(f"expected compression zstd or snappy, got {compression!r}", column="compression")
    import joblib

    from mlsleuth.monitors import build_reference, save_reference

    t0 = time.perf_counter()
    plan = spec if spec is not None else demo_spec(seed, rows=rows)
    out = Path(folder)
    store = LocalStore.init(out / "store")
    root = store.path
    if any((root / "log").rglob("*.parquet")):
        store.close()
        raise StoreError(f"{root}: the store already holds a log; write a large week into a new folder")
    level = 1 if compression == "zstd" else None
    world = fraud_world(plan.world_seed)
    written = labelled = files = 0
    model_dir = f"log/model={MODEL_NAME}"
    for b in range(math.ceil(rows / batch_rows)):
        n = min(batch_rows, rows - b * batch_rows)
        rng = np.random.default_rng([plan.seed, 31, b])
        sim = simulate(plan, n, rng, first_id=b * _ID_STRIDE)
        ts = np.asarray(sim.columns["ts"], dtype=np.int64)
        log = to_table(sim.columns).drop_columns(["model"])  # the partition lives in the path only
        for day, part in _by_day(log, ts):
            _write_file(root, f"{model_dir}/date={day}", part, compression, level)
            files += 1
        written += log.num_rows
        labels = _labels(plan, np.random.default_rng([plan.seed, 37, b]), ts, sim.label,
                         log.column("request_id").combine_chunks())
        if labels is not None and labels.num_rows:
            # Labels are stored by the day they arrived, with the time they were ingested.
            labels = labels.sort_by("label_ts").append_column("ingested_at", labels.column("label_ts"))
            arrived = pc.cast(labels.column("label_ts"), pa.int64()).to_numpy()
            for day, part in _by_day(labels, arrived):
                _write_file(root, f"labels/date={day}", part, compression, level)
            labelled += labels.num_rows
        del sim, log, labels
        if progress is not None:
            progress(written, time.perf_counter() - t0)
    events, culprits = build_events(plan) if plan.events else (None, ())
    if events:
        store.add_events(ChangeEvent.from_mapping(e) for e in events)
    if plan.lineage:
        store.add_lineage(Lineage.from_mapping({k: list(v) for k, v in LINEAGE.items()}))
    store.close()
    save_reference(root, MODEL_NAME, build_reference(world.reference))
    ref_path, model_path = out / "reference.parquet", out / "model.joblib"
    truth = build_truth(plan, culprits)
    try:
        pq.write_table(world.reference, ref_path)
        joblib.dump(world.model, model_path)
        (out / "truth.json").write_text(json.dumps(truth.to_dict(), indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise StoreError(f"cannot write the week's reference, model or truth to {out}: {e}") from e
    return LargeWeek(folder=out, store=root, reference=ref_path, model=model_path, model_name=MODEL_NAME,
                     rows=written, labels=labelled, truth=truth, seconds=time.perf_counter() - t0, files=files)

