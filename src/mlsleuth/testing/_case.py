"""Generated cases: the :class:`Case` object, ``make_case``, ``demo_case``, ``scenario_suite`` and chunked logs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlsleuth.errors import ConfigError, StoreError
from mlsleuth.schema import TIMESTAMP
from mlsleuth.testing._plan import DEFAULT_START, plan_case, suite_variation
from mlsleuth.testing._simulate import build_events, build_truth, simulate, to_table
from mlsleuth.testing._spec import CaseSpec, Cause, LabelSpec, Truth, UpstreamChange, Variation, modes_of
from mlsleuth.testing._world import LINEAGE, AnyArray, fraud_world, to_us

__all__ = ["Case", "build_case", "demo_case", "demo_spec", "iter_log_batches", "make_case", "scenario_suite",
           "suite_specs", "widen_case"]


@dataclass(frozen=True, eq=False)
class Case:
    """One generated incident (or healthy week) in the data layout of docs/contract.md.

    Attributes
    ----------
    spec
        The plan it was built from (rebuilding it gives the same data).
    log
        The prediction log, sorted by ``ts``.
    reference
        The reference (training distribution) data, with ``label``.
    labels
        ``request_id``, ``label``, ``label_ts`` of the labels that arrived, or ``None``.
    events
        Change events as contract objects, or ``None``.
    lineage
        The contract's lineage object, or ``None``.
    model
        The fitted model (the version ``v12`` that serves unless a model change replaced it), or ``None``.
    truth
        What really happened.
    threshold
        The decision threshold of ``v12``: ``prediction`` is 1 when ``score >= threshold``.
    affected
        One boolean per log row: whether the incident acted on that request.

    Examples
    --------
    >>> case = make_case(Cause.SERVING_INFRASTRUCTURE, seed=1, rows=2_000)
    >>> case.truth.cause.value, case.log.num_rows >= 2_000
    ('serving_infrastructure', True)
    """

    spec: CaseSpec
    log: pa.Table
    reference: pa.Table
    labels: pa.Table | None
    events: list[dict[str, Any]] | None
    lineage: dict[str, list[str]] | None
    model: Any | None
    truth: Truth
    threshold: float
    affected: AnyArray

    @property
    def name(self) -> str:
        """The case's name, e.g. ``upstream_data_change-scale-s7``."""
        return self.spec.name

    def write(self, folder: str | Path) -> Path:
        """Write the case as a CASE_DIR (docs/contract.md, the diagnose command) plus ``truth.json``.

        Files: ``log.parquet``, ``reference.parquet``, ``labels.parquet``, ``events.jsonl``,
        ``lineage.json``, ``model.joblib`` (each when the case has it) and ``truth.json``.

        Returns
        -------
        Path
            The folder.

        Raises
        ------
        StoreError
            When the folder cannot be created or written.
        """
        return write_case_dir(folder, self.log, self.reference, self.labels, self.events, self.lineage, self.truth,
                              model=self.model)


def write_case_dir(folder: str | Path, log: pa.Table, reference: pa.Table, labels: pa.Table | None,
                   events: list[dict[str, Any]] | None, lineage: dict[str, list[str]] | None, truth: Truth, *,
                   model: Any | None = None) -> Path:
    """Write a generated case's files, each one it has, as the diagnose command's CASE_DIR plus ``truth.json``."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(log, out / "log.parquet")
        pq.write_table(reference, out / "reference.parquet")
        if labels is not None:
            pq.write_table(labels, out / "labels.parquet")
        if events is not None:
            (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
        if lineage is not None:
            (out / "lineage.json").write_text(json.dumps(lineage, indent=1) + "\n", encoding="utf-8")
        if model is not None:
            import joblib

            joblib.dump(model, out / "model.joblib")
        (out / "truth.json").write_text(json.dumps(truth.to_dict(), indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise StoreError(f"cannot write the case to {out}: {e}") from e
    return out


def _labels(spec: CaseSpec, rng: np.random.Generator, ts: AnyArray, label: AnyArray, ids: pa.Array) -> pa.Table | None:
    ls = spec.labels
    if ls is None:
        return None
    n = len(ts)
    lo = ls.min_delay.total_seconds() * 1e6
    hi = ls.max_delay.total_seconds() * 1e6
    label_ts = ts + rng.uniform(lo, hi, n).astype(np.int64)
    until = to_us(ls.observed_until or spec.end)
    keep = (rng.random(n) < ls.coverage) & (label_ts <= until)
    idx = np.flatnonzero(keep)
    return pa.table({
        "request_id": ids.take(pa.array(idx)),
        "label": pa.array(label[idx], type=pa.int64()),
        "label_ts": pa.array(label_ts[idx], type=pa.int64()).cast(TIMESTAMP),
    })


def build_case(spec: CaseSpec) -> Case:
    """Generate the data of a planned case (deterministic in the spec).

    Parameters
    ----------
    spec
        A plan from :func:`plan_case` (or one edited with :func:`dataclasses.replace`).
    """
    world = fraud_world(spec.world_seed)
    rng = np.random.default_rng([spec.seed, 0])
    sim = simulate(spec, spec.rows, rng)
    log = to_table(sim.columns)
    labels = _labels(spec, rng, sim.columns["ts"], sim.label, log.column("request_id").combine_chunks())
    events, culprits = build_events(spec) if spec.events else (None, ())
    lineage = {k: list(v) for k, v in LINEAGE.items()} if spec.lineage else None
    return Case(spec=spec, log=log, reference=world.reference, labels=labels, events=events, lineage=lineage,
                model=world.model if spec.model else None, truth=build_truth(spec, culprits),
                threshold=world.threshold, affected=sim.affected)


def make_case(
    cause: Cause | None,
    *,
    seed: int,
    variation: Variation | None = None,
    rows: int = 150_000,
    world_seed: int = 0,
    start: datetime = DEFAULT_START,
    days: int = 7,
    labels: LabelSpec | None = None,
) -> Case:
    """Generate one week of fraud-model traffic with an incident of ``cause`` (``None``: a healthy week).

    Parameters are those of :func:`plan_case`; this is ``build_case(plan_case(...))``.

    Examples
    --------
    >>> case = make_case(Cause.MODEL_CHANGE, seed=3, rows=3_000, variation=Variation(canary_share=0.2))
    >>> sorted(set(case.log.column("model_version").to_pylist()))
    ['v12', 'v13']
    """
    return build_case(plan_case(cause, seed=seed, variation=variation, rows=rows, world_seed=world_seed,
                                start=start, days=days, labels=labels))


#: Friday 2026-03-06 18:00 UTC: the demo's onset.
DEMO_ONSET = datetime(2026, 3, 6, 18, 0, tzinfo=UTC)

_DEMO_STORY = ("A fraud model's false positives tripled over a weekend while model, serving and pipeline looked "
               "healthy: on Friday at 18:00 UTC an upstream change in warehouse.customer_stats cut "
               "input.avg_amount_30d by 30 % for all traffic, inflating feature.amount_to_avg_ratio.")


def demo_case(seed: int = 0, *, rows: int = 200_000) -> Case:
    """The demo incident: the warehouse change of Friday evening that tripled false positives.

    An upstream change in ``source:warehouse.customer_stats`` multiplies ``input.avg_amount_30d``
    by 0.7 for **all traffic** (every region) from Friday 2026-03-06 18:00 UTC; the change event
    comes 18 minutes earlier. ``feature.amount_to_avg_ratio`` rises by 1/0.7 and the false-positive
    rate roughly triples over the weekend. Decoys: an unrelated deployment minutes from the onset, a
    schema change on another source, a harmless feature-pipeline release on Tuesday, and a checkout
    redesign on Wednesday that lengthens web sessions (a drift in a feature the model does not use).

    Parameters
    ----------
    seed
        Varies the traffic, never the story.
    rows
        Requests in the week.
    """
    return build_case(demo_spec(seed, rows=rows))


def demo_spec(seed: int = 0, *, rows: int = 200_000) -> CaseSpec:
    """The plan of :func:`demo_case` (cheap: no data generated), e.g. for a large week in batches."""
    variation = Variation(mode=UpstreamChange.SCALE, onset=DEMO_ONSET, decoy_events=True, harmless_drift=True)
    spec = plan_case(Cause.UPSTREAM_DATA_CHANGE, seed=seed, variation=variation, rows=rows)
    assert spec.incident is not None
    incident = replace(spec.incident, magnitude=0.7, input="input.avg_amount_30d", segment=None, full=DEMO_ONSET,
                       event_lead=timedelta(minutes=18))
    return replace(spec, name=f"demo-fraud-weekend-s{seed}", incident=incident, description=_DEMO_STORY,
                   harmless_drift_at=datetime(2026, 3, 4, 10, 30, tzinfo=UTC),
                   pipeline_release_at=datetime(2026, 3, 3, 14, 5, tzinfo=UTC))


def suite_specs(n: int, seed: int, *, world_seed: int = 0, min_rows: int = 20_000,
                max_rows: int = 200_000) -> Iterator[CaseSpec]:
    """The plans of :func:`scenario_suite` (cheap: no data generated)."""
    if n < 0 or not 100 <= min_rows <= max_rows:
        raise ConfigError(f"expected n >= 0 and 100 <= min_rows <= max_rows, got n={n}, min_rows={min_rows}, "
                          f"max_rows={max_rows}", column="scenario_suite")
    rng = np.random.default_rng([seed, 23])
    causes = list(Cause)
    k = 0
    for i in range(n):
        cause: Cause | None = None
        mode = None
        if i % 8 != 7:
            cause = causes[k % len(causes)]
            modes = modes_of(cause)
            mode = modes[(k // len(causes)) % len(modes)]
            k += 1
        variation = suite_variation(cause, rng, mode)
        rows = int(math.exp(rng.uniform(math.log(min_rows), math.log(max_rows))))
        yield plan_case(cause, seed=int(rng.integers(2**31 - 1)), variation=variation, rows=rows,
                        world_seed=world_seed)


def scenario_suite(n: int, seed: int, *, world_seed: int = 0, min_rows: int = 20_000,
                   max_rows: int = 200_000) -> Iterator[Case]:
    """``n`` varied cases for an accuracy bench, generated lazily one at a time.

    Causes cycle in the order of :class:`Cause`, with a healthy week every eighth case, and each
    cause cycles through its modes (:func:`modes_of`). Each case draws its progression (gradual
    about one in four), segment confinement (about one in three), decoys, harmless drift, missing
    labels or events, canary share and size (log-uniform in ``[min_rows, max_rows]``) from
    ``seed``. All share the world of ``world_seed``, so the model is trained once.
    """
    for spec in suite_specs(n, seed, world_seed=world_seed, min_rows=min_rows, max_rows=max_rows):
        yield build_case(spec)


def iter_log_batches(spec: CaseSpec, rows: int, batch_rows: int = 1_000_000) -> Iterator[pa.Table]:
    """Generate a large log of the planned week in bounded memory, one Arrow table per batch.

    Each batch is an independent sample of the week (sorted by ``ts`` within the batch), with
    request ids unique across batches; their union is a log of about ``rows`` requests with the
    spec's incident. Labels and events are not generated.

    Raises
    ------
    ConfigError
        When ``rows`` or ``batch_rows`` is not positive, or a batch exceeds 10**8 rows.
    """
    if rows <= 0 or not 0 < batch_rows <= 10**8 // 3:
        raise ConfigError(f"expected rows > 0 and 0 < batch_rows <= {10**8 // 3}, got {rows} and {batch_rows}",
                          column="batch_rows")
    for b in range(math.ceil(rows / batch_rows)):
        n = min(batch_rows, rows - b * batch_rows)
        rng = np.random.default_rng([spec.seed, 31, b])
        yield to_table(simulate(spec, n, rng, first_id=b * 10**8).columns)


def widen_case(case: Case, features: int, *, seed: int = 0) -> Case:
    """The case with ``features`` extra ``feature.extra_<i>`` noise columns in its log and reference.

    Fraud and ads models often read 500 to 2,000 features; these columns change nothing (the same
    distributions in the log and the reference, for the whole week), so a diagnosis of the widened
    case should say what it says of the case. Every tenth column is categorical (four values), the
    others numeric at varied scales. The model is left out: it was fitted without these columns.

    Raises
    ------
    ConfigError
        When ``features`` is negative.

    Examples
    --------
    >>> wide = widen_case(make_case(None, seed=1, rows=2_000), 30)
    >>> sum(c.startswith("feature.extra_") for c in wide.log.column_names)
    30
    """
    if features < 0:
        raise ConfigError(f"expected features >= 0, got {features}", column="features")

    def widen(table: pa.Table, salt: int) -> pa.Table:
        rng = np.random.default_rng([seed, salt])
        n = table.num_rows
        names = list(table.column_names)
        arrays = list(table.columns)
        for i in range(features):
            if i % 10 == 9:
                arrays.append(pa.DictionaryArray.from_arrays(rng.integers(0, 4, n).astype(np.int32),
                                                             pa.array(["a", "b", "c", "d"])).cast(pa.string()))
            else:
                arrays.append(pa.array(rng.normal(i % 7, 1 + i % 5, n)))
            names.append(f"feature.extra_{i}")
        return pa.Table.from_arrays(arrays, names=names)

    return replace(case, log=widen(case.log, 1), reference=widen(case.reference, 2), model=None)
