"""Simulating a planned week: traffic, true inputs and labels, injected faults, features, scores, serving.

The incident acts on the layer it belongs to, and everything downstream follows: an upstream change
edits ``input.*`` and the pipeline recomputes the features from them; a pipeline failure or a skew
edits ``feature.*``; the model re-scores whatever features arrive; serving faults edit latency, errors
and scores last. Labels always come from the true (unedited) inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.schema import TIMESTAMP
from mlsleuth.testing._spec import (
    CaseSpec,
    Cause,
    DegradationKind,
    IncidentSpec,
    InfraFault,
    ModelChangeKind,
    PipelineFault,
    Progression,
    ShiftKind,
    SkewKind,
    Truth,
    UpstreamChange,
    Verdict,
)
from mlsleuth.testing._world import (
    CHANNELS,
    FEATURE_INPUTS,
    FEATURES,
    INPUT_SOURCES,
    INPUTS,
    MERCHANT_SHARES,
    MERCHANTS,
    MODEL_FEATURES,
    PIPELINE_DEFAULTS,
    REGION_SHARES,
    REGIONS,
    SEGMENT_COLUMNS,
    US_PER_HOUR,
    AnyArray,
    FloatArray,
    Population,
    bad_model,
    compute_features,
    fraud_world,
    lookup,
    predict,
    sample_inputs,
    sample_traffic,
    to_us,
)

__all__ = ["BASE_VERSION", "DEFAULT_SCORE", "Simulated", "build_events", "build_truth", "simulate", "to_table"]

BASE_VERSION = "v12"
#: The score serving falls back to when a dependency times out.
DEFAULT_SCORE = 0.01
PIPELINE_VERSION = "fp-3.7.2"
RELEASE_VERSION = "fp-3.7.3"
BROKEN_VERSION = "fp-3.8.0"
MODEL_NAME = "fraud"
_PIPELINE_JOB = "job:fraud_feature_pipeline"


@dataclass(frozen=True, eq=False)
class Simulated:
    """One simulated batch of requests.

    Attributes
    ----------
    columns
        The log's columns in order, as numpy arrays (``ts`` in UTC microseconds, NaN for null numbers).
    label
        Every row's true label (0/1), whether or not it is ever observed.
    affected
        Rows the incident acts on: for an upstream change the rows whose input changed, for a
        distribution shift the rows of the changed population, for concept drift the rows whose
        fraud mechanism moved at all.
    """

    columns: dict[str, AnyArray]
    label: AnyArray
    affected: AnyArray


def _exposure(ts: AnyArray, inc: IncidentSpec | None) -> FloatArray:
    if inc is None:
        return np.zeros(len(ts))
    if inc.start is None:
        return np.ones(len(ts))
    s = to_us(inc.start)
    f = to_us(inc.full or inc.start)
    if inc.progression is Progression.SUDDEN or f <= s:
        return (ts >= s).astype(np.float64)
    return np.clip((ts - s) / (f - s), 0.0, 1.0)


def _segment_mask(cols: dict[str, AnyArray], segment: tuple[str, str] | None) -> AnyArray:
    n = len(cols["region"])
    if segment is None:
        return np.ones(n, dtype=bool)
    return np.asarray(cols[segment[0]] == segment[1], dtype=bool)


def _codes(values: AnyArray, names: tuple[str, ...]) -> AnyArray:
    return lookup(values, {v: float(i) for i, v in enumerate(names)}, 0.0).astype(np.int64)


def _grow_population(spec: CaseSpec, inc: IncidentSpec, rng: np.random.Generator, n: int,
                     true: dict[str, AnyArray], ts: AnyArray) -> tuple[dict[str, AnyArray], AnyArray, AnyArray]:
    """Add the requests of a new population (a market launch or a campaign) on top of the usual traffic."""
    assert inc.segment is not None
    col, value = inc.segment
    n_extra = round(inc.magnitude * float(np.mean(true[col] == value)) * n)
    shares = REGION_SHARES
    if col == "region":
        shares = np.zeros(len(REGIONS))
        shares[REGIONS.index(value)] = 1.0
    region, ets = sample_traffic(rng, n_extra, to_us(spec.start), spec.days, shares)
    keep = rng.random(n_extra) < _exposure(ets, inc)
    region, ets = region[keep], ets[keep]
    channel = np.full(len(ets), CHANNELS.index(value)) if col == "channel" else None
    if inc.mode is ShiftKind.CAMPAIGN:
        pop = Population(new_account_share=0.9, new_account_max_days=14, amount_factor=0.8)
    else:
        pop = Population(new_account_share=0.8, new_account_max_days=60, foreign_rate=0.25)
    extra = sample_inputs(rng, region, ets, pop, channel=channel)
    if col not in ("region", "channel"):
        extra[col] = np.full(len(ets), value, dtype=object)
    merged = {k: np.concatenate([true[k], extra[k]]) for k in true}
    new = np.concatenate([np.zeros(len(ts), dtype=bool), np.ones(len(ets), dtype=bool)])
    return merged, np.concatenate([ts, ets]), new


def _shift_in_place(inc: IncidentSpec, rng: np.random.Generator, true: dict[str, AnyArray], ts: AnyArray,
                    hit: AnyArray) -> None:
    if inc.mode is ShiftKind.HIGHER_AMOUNTS:
        true["input.amount"] = np.where(hit, np.round(true["input.amount"] * inc.magnitude, 2), true["input.amount"])
        return
    shares = MERCHANT_SHARES.copy()
    shares[MERCHANTS.index("travel")] *= inc.magnitude
    shares[MERCHANTS.index("electronics")] *= 0.8 * inc.magnitude
    idx = np.flatnonzero(hit)
    fresh = sample_inputs(rng, _codes(true["region"][idx], REGIONS), ts[idx],
                          Population(merchant_shares=tuple(shares / shares.sum())),
                          channel=_codes(true["channel"][idx], CHANNELS))
    for k in (*INPUTS, "country"):
        true[k][idx] = fresh[k]


def _upstream(inc: IncidentSpec, rng: np.random.Generator, obs: dict[str, AnyArray], hit: AnyArray) -> None:
    assert inc.input is not None
    col = inc.input
    v = obs[col]
    if inc.mode is UpstreamChange.SCALE:
        obs[col] = np.where(hit, np.round(v * inc.magnitude, 2), v)
    elif inc.mode is UpstreamChange.UNITS:
        obs[col] = np.where(hit, np.round(v * inc.magnitude), v)
    elif inc.mode is UpstreamChange.SENTINEL:
        obs[col] = np.where(hit, np.int64(inc.magnitude), v)
    elif inc.mode is UpstreamChange.CATEGORY_RENAMED:
        old, new = inc.detail.split("->")
        obs[col] = np.where(hit & (v == old), new, v)
    elif col == "input.txn_count_24h":
        obs[col] = np.where(hit, v * 3 + rng.poisson(2.0, len(v)), v)
    else:
        obs[col] = np.where(hit, np.round(v * (rng.poisson(22.0, len(v)) + 1), 2), v)


def _stale_pool(spec: CaseSpec, feature: str) -> FloatArray:
    ref = fraud_world(spec.world_seed).reference.column(feature).to_numpy()
    pick = np.random.default_rng([spec.seed, 13]).choice(len(ref), size=48, replace=False)
    return np.asarray(ref[pick], dtype=np.float64)


def _pipeline_fault(spec: CaseSpec, inc: IncidentSpec, features: dict[str, FloatArray], hit: AnyArray) -> None:
    assert inc.feature is not None
    f = features[inc.feature].copy()
    if inc.mode is PipelineFault.ZEROS:
        f[hit] = 0.0
    elif inc.mode is PipelineFault.NULLS:
        f[hit] = np.nan
    elif inc.mode is PipelineFault.CONSTANT:
        f[hit] = float(np.median(fraud_world(spec.world_seed).reference.column(inc.feature).to_numpy()))
    elif inc.mode is PipelineFault.STALE:
        pool = _stale_pool(spec, inc.feature)
        f[hit] = pool[np.arange(int(hit.sum())) % len(pool)]
    else:
        f[hit] = PIPELINE_DEFAULTS[inc.feature]
    features[inc.feature] = f


def _skew(inc: IncidentSpec, rng: np.random.Generator, obs: dict[str, AnyArray], features: dict[str, FloatArray],
          hit: AnyArray) -> None:
    assert inc.feature is not None
    f = features[inc.feature].copy()
    if inc.mode is SkewKind.LOG_BASE:
        served = np.log10(1.0 + np.maximum(obs["input.amount"].astype(np.float64), 0.0))
    elif inc.mode is SkewKind.WINDOW:
        avg_7d = obs["input.avg_amount_30d"] * np.exp(rng.normal(0.0, 0.45, len(f)))
        served = obs["input.amount"] / np.maximum(avg_7d, 1.0)
    else:
        served = np.log1p(np.maximum(obs["input.account_age_days"].astype(np.float64), 0.0) * 24.0)
    f[hit] = served[hit]
    features[inc.feature] = f


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def simulate(spec: CaseSpec, n: int, rng: np.random.Generator, *, first_id: int = 0) -> Simulated:
    """Simulate ``n`` requests of the planned week (a campaign or market launch adds some), sorted by time.

    Parameters
    ----------
    spec
        The plan.
    n
        Requests of the usual traffic.
    rng
        The randomness of this batch.
    first_id
        The number of the first request id of this batch.
    """
    world = fraud_world(spec.world_seed)
    inc = spec.incident
    region, ts = sample_traffic(rng, n, to_us(spec.start), spec.days)
    true = sample_inputs(rng, region, ts)
    new_rows = np.zeros(len(ts), dtype=bool)
    if inc is not None and inc.mode in (ShiftKind.COUNTRY_MIX, ShiftKind.CAMPAIGN):
        true, ts, new_rows = _grow_population(spec, inc, rng, n, true, ts)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    true = {k: v[order] for k, v in true.items()}
    new_rows = new_rows[order]
    n = len(ts)
    exposure = _exposure(ts, inc)
    in_seg = _segment_mask(true, None if inc is None else inc.segment)
    hit = in_seg & (rng.random(n) < exposure * (0.0 if inc is None else inc.share))
    if inc is not None and inc.mode in (ShiftKind.COUNTRY_MIX, ShiftKind.CAMPAIGN):
        hit = new_rows
    elif inc is not None and inc.mode in (ShiftKind.MERCHANT_MIX, ShiftKind.HIGHER_AMOUNTS):
        _shift_in_place(inc, rng, true, ts, hit)
    if spec.harmless_drift_at is not None:
        redesigned = (ts >= to_us(spec.harmless_drift_at)) & (true["channel"] == "web")
        true["input.session_seconds"] = np.where(redesigned, np.round(true["input.session_seconds"] * 1.6, 1),
                                                 true["input.session_seconds"])

    p = world.fraud_probability(true)
    if inc is not None and isinstance(inc.mode, DegradationKind):
        w = exposure * in_seg
        p = (1.0 - w) * p + w * world.fraud_probability(true, inc.mode)
        hit = w > 0
    label = (rng.random(n) < p).astype(np.int64)

    obs = dict(true)
    if inc is not None and inc.cause is Cause.UPSTREAM_DATA_CHANGE and inc.input is not None:
        _upstream(inc, rng, obs, hit)
        hit = np.asarray(obs[inc.input] != true[inc.input], dtype=bool)  # e.g. only the renamed category's rows
    features = compute_features(obs)
    pipeline_version = np.full(n, PIPELINE_VERSION, dtype=object)
    if spec.pipeline_release_at is not None:
        pipeline_version[ts >= to_us(spec.pipeline_release_at)] = RELEASE_VERSION
    if inc is not None and inc.cause is Cause.SILENT_PIPELINE_FAILURE:
        _pipeline_fault(spec, inc, features, hit)
        if inc.start is not None and inc.event_lead is not None:
            pipeline_version[ts >= to_us(inc.start - inc.event_lead)] = BROKEN_VERSION
    if inc is not None and inc.cause is Cause.TRAINING_SERVING_SKEW:
        _skew(inc, rng, obs, features, hit)

    version = np.full(n, BASE_VERSION, dtype=object)
    threshold = np.full(n, world.threshold)
    score = world.score(features)
    if inc is not None and inc.cause is Cause.MODEL_CHANGE:
        version[hit] = inc.detail
        if inc.mode is ModelChangeKind.MISCALIBRATED:
            score[hit] = 1.0 / (1.0 + np.exp(-(_logit(score[hit]) + inc.magnitude)))
        elif inc.mode is ModelChangeKind.BAD_TRAINING_DATA:
            score[hit] = predict(bad_model(spec.world_seed), {k: v[hit] for k, v in features.items()})
        else:
            threshold[hit] = float(np.round(np.quantile(world.reference.column("score").to_numpy(), inc.magnitude), 4))
    prediction = (score >= threshold).astype(np.int64)

    load = 1.0 + 0.25 * np.sin(2 * np.pi * ((ts // US_PER_HOUR) % 24 - 8) / 24.0)
    region_factor = lookup(true["region"], {"EU": 1.0, "US": 0.95, "APAC": 1.25, "LATAM": 1.15}, 1.0)
    latency = np.round(38.0 * region_factor * load * np.exp(rng.normal(0.0, 0.35, n)), 1)
    error = np.full(n, None, dtype=object)
    u = rng.random(n)
    error[u < 0.0015] = "warn: device fingerprint unavailable"
    error[(u >= 0.0015) & (u < 0.002)] = "retry: geo.ip_lookup returned 503, recovered"
    if inc is not None and isinstance(inc.mode, InfraFault):
        if inc.mode is InfraFault.LATENCY:
            latency[hit] = np.round(latency[hit] * inc.magnitude, 1)
            timeouts = hit & (rng.random(n) < 0.02)
            error[timeouts] = "timeout: feature-store read exceeded 250 ms, retried"
        else:
            latency[hit] = np.round(250.0 + rng.exponential(15.0, int(hit.sum())), 1)
            if inc.mode is InfraFault.ERRORS:
                error[hit] = "unavailable: feature-store did not answer"
                score[hit] = np.nan
            else:
                error[hit] = "fallback: feature-store timeout, default score"
                score[hit] = DEFAULT_SCORE
            prediction[hit] = 0

    cols: dict[str, AnyArray] = {
        "request_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "ts": ts,
        "model": np.full(n, MODEL_NAME, dtype=object),
        "model_version": version,
    }
    cols.update({k: true[k] for k in SEGMENT_COLUMNS})
    cols.update({k: obs[k] for k in INPUTS})
    cols.update({k: features[k] for k in FEATURES})
    cols.update({"score": score, "prediction": prediction, "latency_ms": latency, "error": error,
                 "lineage.pipeline_version": pipeline_version})
    return Simulated(columns=cols, label=label, affected=hit)


def request_ids(numbers: AnyArray) -> pa.Array:
    """``tx-`` and the number on 12 digits."""
    import pyarrow.compute as pc

    text = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width=12, padding="0")
    return pc.binary_join_element_wise("tx-", text, "")


def to_table(cols: dict[str, AnyArray]) -> pa.Table:
    """The log as Arrow: ids as text, ``ts`` as UTC microseconds, NaN as null."""
    arrays: dict[str, pa.Array] = {}
    for name, v in cols.items():
        if name == "request_id":
            arrays[name] = request_ids(v)
        elif name == "ts":
            arrays[name] = pa.array(v, type=pa.int64()).cast(TIMESTAMP)
        elif v.dtype == object:
            arrays[name] = pa.array(v, type=pa.string())
        elif v.dtype.kind == "f":
            arrays[name] = pa.array(v, type=pa.float64(), from_pandas=True)
        else:
            arrays[name] = pa.array(v)
    return pa.table(arrays)


# ---------------------------------------------------------------------------------------------------------------
# Change events


_SERVICES = ("checkout-web", "notifications", "loyalty-api", "search", "merchant-portal", "payouts")


def _culprit_event(inc: IncidentSpec) -> tuple[str, str, str] | None:
    """(kind, target, description) of the change that caused the incident, or None."""
    where = "" if inc.segment is None else f" ({inc.segment[1]} {inc.segment[0]} partition)"
    if inc.cause is Cause.UPSTREAM_DATA_CHANGE:
        assert inc.input is not None
        source = INPUT_SOURCES[inc.input]
        dataset = source.removeprefix("source:")
        column = inc.input.removeprefix("input.")
        text = {
            UpstreamChange.SCALE: (
                "upstream", f"{dataset}: {column} now computed from the new settlement-amount table{where}"),
            UpstreamChange.UNITS: ("schema_change", f"{dataset}: amount columns switched to minor units{where}"),
            UpstreamChange.SENTINEL: (
                "schema_change", f"{dataset}: {column} made nullable upstream, missing values encoded{where}"),
            UpstreamChange.CATEGORY_RENAMED: (
                "schema_change", f"{dataset}: reference codes updated to the 2026 code list{where}"),
            UpstreamChange.DEFINITION: ("upstream", f"{dataset}: {column} definition aligned with finance{where}"),
        }[inc.mode]  # type: ignore[index]
        return text[0], source, text[1]
    if inc.cause is Cause.SILENT_PIPELINE_FAILURE:
        return "pipeline", _PIPELINE_JOB, f"fraud_feature_pipeline release {BROKEN_VERSION} (join refactor){where}"
    if inc.cause is Cause.TRAINING_SERVING_SKEW:
        return ("deployment", "service:fraud-serving",
                "fraud-serving 2.4.0: online features computed by the shared feature library")
    if inc.cause is Cause.DISTRIBUTION_SHIFT:
        assert inc.segment is not None
        if inc.mode is ShiftKind.CAMPAIGN:
            return ("business", f"campaign:welcome-bonus-{inc.segment[1]}",
                    f"marketing: sign-up welcome bonus launched ({inc.segment[0]} {inc.segment[1]})")
        if inc.mode is ShiftKind.COUNTRY_MIX:
            return ("business", f"market:{inc.segment[1]}",
                    f"product launch: card issuing opens to new customers in {inc.segment[1]}")
        return None
    if inc.cause is Cause.MODEL_CHANGE:
        how = "" if inc.share >= 1.0 else f", canary {inc.share:.0%} of traffic"
        what = "decision threshold tuned" if inc.mode is ModelChangeKind.THRESHOLD else "retrained on February data"
        return "deployment", f"model:{MODEL_NAME}", f"{MODEL_NAME} {inc.detail} deployed ({what}{how}){where}"
    if inc.cause is Cause.SERVING_INFRASTRUCTURE:
        if inc.segment is None:
            return "infrastructure", "service:feature-store", "feature-store: node pool resized from 12 to 6 nodes"
        col, value = inc.segment
        target = f"service:fraud-serving-{value.lower()}" if col == "region" else f"service:{value}-gateway"
        return "infrastructure", target, f"{target.removeprefix('service:')}: network policy updated"
    return None


def _decoy_near(cause: Cause | None) -> tuple[str, str, str]:
    """An event of the culprit's kind on an unrelated target."""
    decoys: dict[Cause | None, tuple[str, str, str]] = {
        Cause.UPSTREAM_DATA_CHANGE: ("schema_change", "source:clickstream.sessions",
                                     "clickstream.sessions: added column utm_campaign"),
        Cause.SILENT_PIPELINE_FAILURE: ("pipeline", "job:marketing_attribution",
                                        "marketing_attribution: manual re-run for last week"),
        Cause.MODEL_CHANGE: ("deployment", "model:credit-limit", "credit-limit v7 deployed"),
        Cause.SERVING_INFRASTRUCTURE: ("infrastructure", "service:search", "search: cluster autoscaler settings"),
        Cause.TRAINING_SERVING_SKEW: ("deployment", "service:merchant-portal", "merchant-portal 3.1.0 deployed"),
    }
    return decoys.get(cause, ("config", "service:api-gateway", "api-gateway: raised request body limit"))


def build_events(spec: CaseSpec) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The week's change events (routine ones, decoys and the culprit), and the culprit's id.

    Returns
    -------
    tuple
        The events as contract objects sorted by time with ids ``ev-1001``..., and the culprit ids.
    """
    rng = np.random.default_rng([spec.seed, 17])
    items: list[tuple[datetime, str, str, str, bool]] = []

    def at(base: datetime, lo_min: float, hi_min: float) -> datetime:
        return base + timedelta(seconds=float(rng.uniform(lo_min * 60, hi_min * 60)))

    for d in range(spec.days):
        day = spec.start + timedelta(days=d)
        items.append((at(day, 120, 140), "pipeline", _PIPELINE_JOB, "scheduled daily run of fraud_feature_pipeline "
                      "completed", False))
        items.append((at(day, 210, 240), "data_backfill", "source:warehouse.customer_stats",
                      "nightly refresh of customer_stats completed", False))
        items.append((at(day, 60, 75), "pipeline", "job:marketing_attribution", "nightly attribution run", False))
        weekday = day.weekday()
        if weekday < 5:
            for _ in range(int(rng.integers(1, 3))):
                svc = _SERVICES[int(rng.integers(len(_SERVICES)))]
                items.append((at(day, 9 * 60, 17 * 60), "deployment", f"service:{svc}",
                              f"{svc} {int(rng.integers(2, 9))}.{int(rng.integers(0, 30))}.0 deployed", False))
        if weekday in (1, 3):
            target = ("service:rate-limiter", "service:api-gateway")[int(rng.integers(2))]
            items.append((at(day, 10 * 60, 16 * 60), "config", target,
                          f"{target.removeprefix('service:')}: routine limits update", False))
        if weekday == 2:
            items.append((at(day, 13 * 60, 15 * 60), "infrastructure", "service:k8s-cluster-us",
                          "node OS patch rollout", False))
    if spec.harmless_drift_at is not None:
        items.append((spec.harmless_drift_at - timedelta(minutes=5), "deployment", "service:checkout-web",
                      "checkout-web 5.2.0: redesigned checkout flow", False))
    if spec.pipeline_release_at is not None:
        items.append((spec.pipeline_release_at, "pipeline", _PIPELINE_JOB,
                      f"fraud_feature_pipeline release {RELEASE_VERSION} (code clean-up, no feature changes)", False))
    inc = spec.incident
    culprit = None if inc is None or inc.event_lead is None or inc.start is None else _culprit_event(inc)
    if culprit is not None:
        assert inc is not None and inc.start is not None and inc.event_lead is not None
        items.append((inc.start - inc.event_lead + timedelta(seconds=float(rng.uniform(0, 59))), *culprit, True))
    if spec.decoy_events:
        if inc is not None and inc.start is not None:
            near = inc.start
        else:
            near = spec.start + timedelta(days=float(rng.uniform(1.5, 5.5)) * spec.days / 7)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        svc = ("notifications", "loyalty-api", "payouts")[int(rng.integers(3))]
        items.append((near + sign * timedelta(minutes=float(rng.uniform(3, 25))), "deployment", f"service:{svc}",
                      f"{svc} {int(rng.integers(2, 9))}.{int(rng.integers(0, 30))}.1 deployed (hotfix)", False))
        kind, target, desc = _decoy_near(None if inc is None else inc.cause)
        items.append((near - timedelta(hours=float(rng.uniform(1, 6))), kind, target, desc, False))
    items.sort(key=lambda it: it[0])
    events = []
    culprits = []
    for i, (ts, kind, target, desc, is_culprit) in enumerate(items):
        ev_id = f"ev-{1001 + i}"
        events.append({"id": ev_id, "ts": ts.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                       "kind": kind, "target": target, "description": desc})
        if is_culprit:
            culprits.append(ev_id)
    return events, tuple(culprits)


# ---------------------------------------------------------------------------------------------------------------
# Ground truth

_SHIFT_CULPRITS: dict[ShiftKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ShiftKind.COUNTRY_MIX: (("feature.account_age_log", "feature.is_foreign"),
                            ("input.account_age_days", "input.country")),
    ShiftKind.CAMPAIGN: (("feature.account_age_log",), ("input.account_age_days",)),
    ShiftKind.MERCHANT_MIX: (("feature.merchant_risk",), ("input.merchant_category",)),
    ShiftKind.HIGHER_AMOUNTS: (("feature.amount_to_avg_ratio", "feature.log_amount"), ("input.amount",)),
}


def culprit_columns(inc: IncidentSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(features, inputs) to blame for an incident, most responsible first."""
    if inc.cause is Cause.UPSTREAM_DATA_CHANGE:
        assert inc.input is not None
        return tuple(f for f in MODEL_FEATURES if inc.input in FEATURE_INPUTS[f]), (inc.input,)
    if inc.cause in (Cause.SILENT_PIPELINE_FAILURE, Cause.TRAINING_SERVING_SKEW):
        assert inc.feature is not None
        return (inc.feature,), ()
    if isinstance(inc.mode, ShiftKind):
        return _SHIFT_CULPRITS[inc.mode]
    return (), ()


def build_truth(spec: CaseSpec, culprit_events: tuple[str, ...]) -> Truth:
    """The ground truth of a planned case."""
    inc = spec.incident
    if inc is None:
        return Truth(Verdict.HEALTHY, description=spec.description)
    features, inputs = culprit_columns(inc)
    groups: list[tuple[tuple[str, str], ...]] = []
    group: list[tuple[str, str]] = [] if inc.segment is None else [inc.segment]
    if inc.cause is Cause.MODEL_CHANGE and inc.share < 1.0:
        group.append(("model_version", inc.detail))
    if group:
        groups.append(tuple(group))
    details = [("magnitude", str(inc.magnitude)), ("share", str(inc.share)),
               ("progression", inc.progression.value)]
    if inc.detail:
        details.append(("detail", inc.detail))
    return Truth(
        verdict=Verdict.INCIDENT,
        cause=inc.cause,
        onset=inc.start if inc.progression is Progression.SUDDEN else None,
        features=features,
        inputs=inputs,
        segments=tuple(groups),
        events=culprit_events,
        description=spec.description,
        mode=inc.mode.value,
        effect_start=inc.start,
        effect_full=inc.full,
        details=tuple(sorted(details)),
    )
