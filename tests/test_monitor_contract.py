"""One contract for every monitor: quiet on unchanged data, catches its fault, deterministic, serialisable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlsleuth.monitors import (
    MONITORS,
    ArrowSource,
    Finding,
    Monitor,
    MonitorReport,
    StoredReference,
    build_reference,
    run_monitors,
)

START = datetime(2026, 3, 2, tzinfo=UTC)
WINDOW = "6h"


def stationary(n: int, seed: int, *, with_time: bool = True) -> pa.Table:
    """A week of a calibrated binary classifier's traffic with no change at all (no seasonality either)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.lognormal(0.0, 0.5, n)
    x = rng.normal(10.0, 2.0, n)
    cat = rng.choice(np.array(["A", "B", "C", "D"]), n, p=[0.4, 0.3, 0.2, 0.1])
    region = rng.choice(np.array(["EU", "US", "APAC"]), n, p=[0.5, 0.3, 0.2])
    score = 1.0 / (1.0 + np.exp(-(-1.5 + 1.2 * a + 0.8 * np.log(b))))
    cols: dict[str, object] = {
        "request_id": [f"r{seed}-{i}" for i in range(n)],
        "region": region,
        "input.x": x,
        "input.cat": cat,
        "feature.a": a,
        "feature.log_b": np.log(b),
        "feature.x_scaled": (x - 10.0) / 2.0,
        "score": score,
        "prediction": (score >= 0.5).astype(np.int64),
        "latency_ms": rng.lognormal(3.0, 0.3, n),
        "error": pc.if_else(pa.array(rng.random(n) < 0.005), "timeout", pa.scalar(None, pa.string())),
    }
    if with_time:
        offs = np.sort(rng.integers(0, 7 * 86_400 * 10**6, n))
        ts = pa.array(int(START.timestamp() * 10**6) + offs, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        cols = {"ts": ts, **cols}
    else:
        cols["label"] = (rng.random(n) < score).astype(np.int64)
    table = pa.table(cols)
    if with_time:
        y = (np.random.default_rng(seed + 1).random(n) < score).astype(np.int64)
        return table.append_column("_label", pa.array(y))
    return table


@pytest.fixture(scope="module")
def reference() -> StoredReference:
    return build_reference(stationary(50_000, 1, with_time=False))


@pytest.fixture(scope="module")
def healthy() -> tuple[pa.Table, pa.Table]:
    full = stationary(60_000, 2)
    labels = pa.table({"request_id": full.column("request_id"), "label": full.column("_label")})
    return full.drop_columns(["_label"]), labels


def all_monitor_classes() -> list[type[Monitor]]:
    seen: list[type[Monitor]] = []
    stack = list(Monitor.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: c.__name__)


EXAMPLES = [m for cls in MONITORS for m in cls.examples()]


def run(monitor: Monitor, ref: StoredReference, log: pa.Table, labels: pa.Table | None) -> MonitorReport:
    return run_monitors(ArrowSource(log, labels, threads=1), ref, [monitor], window=WINDOW, since=START,
                        until=START + timedelta(days=7))


def test_every_monitor_class_is_registered_and_has_examples() -> None:
    assert set(all_monitor_classes()) == set(MONITORS)
    assert all(cls.examples() for cls in MONITORS)


@pytest.mark.parametrize("monitor", EXAMPLES, ids=repr)
def test_unchanged_data_gives_no_finding(monitor: Monitor, reference: StoredReference,
                                         healthy: tuple[pa.Table, pa.Table]) -> None:
    report = run(monitor, reference, *healthy)
    assert report.skipped == ()
    assert report.findings == (), [f.reason for f in report.findings]


@pytest.mark.parametrize("monitor", EXAMPLES, ids=repr)
def test_injected_fault_is_found_deterministically_and_round_trips(
        monitor: Monitor, reference: StoredReference, healthy: tuple[pa.Table, pa.Table]) -> None:
    log, labels = type(monitor).example_fault(*healthy)
    first = run(monitor, reference, log, labels)
    assert first.findings, f"{monitor!r} missed its own fault"
    assert {f.monitor for f in first.findings} == {monitor.name}
    again = run(monitor, reference, log, labels)
    assert again.findings == first.findings
    text = json.dumps(first.to_dict())
    back = MonitorReport.from_dict(json.loads(text))
    assert back.findings == first.findings
    assert all(Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f for f in first.findings)


@pytest.mark.parametrize("monitor", EXAMPLES, ids=repr)
def test_spec_is_frozen_hashable_and_described(monitor: Monitor) -> None:
    assert hash(monitor) == hash(type(monitor)(**{k: getattr(monitor, k) for k in vars(monitor)}))
    with pytest.raises(AttributeError):
        setattr(monitor, next(iter(vars(monitor))), None)
    assert json.loads(json.dumps(monitor.to_dict()))["monitor"] == monitor.name
