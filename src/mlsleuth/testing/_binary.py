"""A generic generator of binary-classifier worlds: one scenario of one cause (or a healthy period) per case.

A world (:class:`BinaryWorld`) says what its traffic, inputs, features, model and outcomes are; :func:`build_world_case`
plants a scenario in it and writes down the truth. The worlds differ in what matters to a diagnosis: the traffic
cycle, the label delay, the model family (and so how discrete its scores are), the segments and the column names.

Every scenario keeps the real outcomes honest: labels come from the world's true mechanism applied to the true
values of the inputs, so a fault in the data path changes the scores and not the outcomes, a population shift
changes both the same way, and a concept drift changes the outcomes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.errors import ConfigError
from mlsleuth.testing._plan import DEFAULT_START
from mlsleuth.testing._regression import KindCase
from mlsleuth.testing._spec import Cause, Truth, Verdict

__all__ = ["BINARY_SCENARIOS", "BinaryWorld", "Fault", "build_world_case"]

#: Scenarios of the binary worlds (:func:`mlsleuth.testing.loan_case`, :func:`mlsleuth.testing.ads_case`).
BINARY_SCENARIOS = (
    "healthy",
    "healthy_drift",
    "upstream_scale",
    "upstream_category",
    "pipeline_nulls",
    "pipeline_constant",
    "skew",
    "shift",
    "degradation",
    "model_change",
    "infra_errors",
    "infra_latency",
    "infra_fallback",
)

_CAUSE: dict[str, Cause | None] = {
    "healthy": None,
    "healthy_drift": None,
    "upstream_scale": Cause.UPSTREAM_DATA_CHANGE,
    "upstream_category": Cause.UPSTREAM_DATA_CHANGE,
    "pipeline_nulls": Cause.SILENT_PIPELINE_FAILURE,
    "pipeline_constant": Cause.SILENT_PIPELINE_FAILURE,
    "skew": Cause.TRAINING_SERVING_SKEW,
    "shift": Cause.DISTRIBUTION_SHIFT,
    "degradation": Cause.MODEL_DEGRADATION,
    "model_change": Cause.MODEL_CHANGE,
    "infra_errors": Cause.SERVING_INFRASTRUCTURE,
    "infra_latency": Cause.SERVING_INFRASTRUCTURE,
    "infra_fallback": Cause.SERVING_INFRASTRUCTURE,
}
# Faults that can be confined to one segment (a region's source, a device's client, a datacenter).
_LOCALISABLE = {"upstream_scale", "upstream_category", "pipeline_nulls", "pipeline_constant", "skew", "degradation",
                "infra_errors", "infra_latency", "infra_fallback"}
_GRADUAL = {"shift", "degradation", "infra_latency"}

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Fault:
    """What a world's fault did, for the truth: the culprit columns, where it came from, and its story."""

    features: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    target: str = ""
    description: str = ""


@dataclass(frozen=True)
class BinaryWorld:
    """The common part of a binary world; a subclass fills in the domain.

    Attributes
    ----------
    name, model
        The world's name (``loan``) and the model's name in the log.
    salt
        Mixed into every seed, so two worlds with the same seed draw different traffic.
    days
        The length of the log.
    rows
        The default range of requests in the log.
    onset_days
        The range of days (from the log's start) an onset is drawn from.
    versions
        The serving model version and the one a model change deploys.
    threshold
        ``prediction`` is 1 when ``score >= threshold``.
    label_delay
        The range of seconds a label takes to arrive.
    names
        The log's column names for the roles ``request_id``, ``ts``, ``model``, ``model_version``, ``score``,
        ``prediction``, ``latency_ms`` and ``error``.
    fault_segments
        ``(column, value)`` pairs a localised fault may be confined to.
    fallback_score
        The score the serving layer returns when it cannot score.
    always_gradual
        Scenarios that never have a single onset in this world (a downturn builds over weeks).
    config
        The model config (TOML) the case ships as ``model.toml``, or ``None``.
    """

    name: str
    model: str
    salt: int
    days: int
    rows: tuple[int, int]
    onset_days: tuple[float, float]
    versions: tuple[str, str]
    threshold: float
    label_delay: tuple[float, float]
    names: dict[str, str]
    fault_segments: tuple[tuple[str, str], ...]
    fallback_score: float
    reference_rows: int = 12_000
    config: str | None = None
    lineage: dict[str, list[str]] = field(default_factory=dict)
    noise_targets: tuple[tuple[str, str], ...] = ()
    decoy_targets: tuple[str, ...] = ()
    serving_target: str = "service:scoring"
    always_gradual: frozenset[str] = frozenset()
    feature_service: str = "service:feature-server"

    # --- what a subclass defines -----------------------------------------------------------------------------------
    def times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Seconds from the log's start of ``n`` requests, sorted."""
        raise NotImplementedError

    def onset(self, rng: np.random.Generator) -> float:
        """The second the scenario's change happens."""
        return float(np.floor(rng.uniform(*self.onset_days) * 86400 / 300) * 300)

    def population(self, rng: np.random.Generator, secs: np.ndarray) -> tuple[Arrays, Arrays]:
        """The raw inputs and the segment columns of the requests."""
        raise NotImplementedError

    def features(self, inp: Arrays, segs: Arrays) -> Arrays:
        """The features the model reads, as training computes them."""
        raise NotImplementedError

    def score(self, feats: Arrays, version: str, kind: str) -> np.ndarray:
        """The model's score of each request (``kind``: how the new version differs)."""
        raise NotImplementedError

    def true_logit(self, inp: Arrays, segs: Arrays, concept: np.ndarray) -> np.ndarray:
        """The log-odds of the positive outcome; ``concept`` (0..1 per row) is how far the relation has moved."""
        raise NotImplementedError

    def upstream(self, rng: np.random.Generator, kind: str, inp: Arrays, hit: np.ndarray) -> Fault:
        """Change what a source sends (``kind`` ``scale`` or ``category``) in the rows ``hit``."""
        raise NotImplementedError

    def pipeline(self, rng: np.random.Generator, kind: str, feats: Arrays, hit: np.ndarray) -> Fault:
        """Break a feature silently (``kind`` ``nulls`` or ``constant``) in the rows ``hit``."""
        raise NotImplementedError

    def skew(self, rng: np.random.Generator, inp: Arrays, feats: Arrays, hit: np.ndarray) -> Fault:
        """Compute a feature differently from training in the rows ``hit``."""
        raise NotImplementedError

    def shift(self, rng: np.random.Generator, inp: Arrays, segs: Arrays, hit: np.ndarray) -> Fault:
        """Bring a new population into the rows ``hit`` (inside :meth:`shift_segment`)."""
        raise NotImplementedError

    def shift_segment(self, rng: np.random.Generator) -> tuple[str, str]:
        """The segment a population shift grows in."""
        raise NotImplementedError

    def drift(self, rng: np.random.Generator, inp: Arrays, hit: np.ndarray) -> Fault:
        """A harmless drift in an input the model does not read; returns the decoy event's story."""
        raise NotImplementedError


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _iso(seconds: float) -> str:
    return (DEFAULT_START + timedelta(seconds=float(seconds))).isoformat().replace("+00:00", "Z")


def ts_array(seconds: np.ndarray) -> pa.Array:
    """Seconds from the default start as a UTC microsecond timestamp array."""
    start = np.datetime64(DEFAULT_START.replace(tzinfo=None), "us")
    return pa.array(start + np.round(seconds * 1e6).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC"))


class _Events:
    """Change events with ids unique within a case."""

    def __init__(self, world: BinaryWorld, rng: np.random.Generator) -> None:
        self.world, self.rng = world, rng
        self.items: list[dict[str, Any]] = []
        self._next = int(rng.integers(100, 900)) * 10

    def add(self, at: float, kind: str, target: str, description: str) -> str:
        self._next += int(self.rng.integers(1, 9))
        ev_id = f"ev-{self.world.name}-{self._next}"
        self.items.append({"id": ev_id, "ts": _iso(at), "kind": kind, "target": target, "description": description})
        return ev_id


def _frame(world: BinaryWorld, rng: np.random.Generator, secs: np.ndarray, inp: Arrays, feats: Arrays,
           score: np.ndarray, version: np.ndarray, segs: Arrays, prefix: str,
           latency: np.ndarray | None = None, error: list[str | None] | None = None) -> pa.Table:
    n = secs.size
    nm = world.names
    valid = ~np.isnan(score)
    pred = np.where(valid & (score >= world.threshold), 1, 0).astype(np.int64)
    lat = latency if latency is not None else np.round(rng.lognormal(np.log(25), 0.35, n), 2)
    cols: dict[str, Any] = {
        nm["request_id"]: pa.array([f"{prefix}{i:07d}" for i in range(n)]),
        nm["ts"]: ts_array(secs),
        nm["model"]: pa.array([world.model] * n),
        nm["model_version"]: pa.array(version.tolist()),
    }
    for k, v in inp.items():
        cols[k] = pa.array(v.tolist()) if v.dtype == object else pa.array(v)
    for k, v in feats.items():
        cols[k] = pa.array(v, from_pandas=True)  # NaN is a null: a feature that did not arrive
    cols[nm["score"]] = pa.array(score, from_pandas=True)
    cols[nm["prediction"]] = pa.array(pred)
    cols[nm["latency_ms"]] = pa.array(lat)
    cols[nm["error"]] = pa.array(error if error is not None else [None] * n, pa.string())
    for k, v in segs.items():
        cols[k] = pa.array(v.tolist())
    return pa.table(cols)


def build_world_case(world: BinaryWorld, scenario: str, seed: int, rows: int | None = None) -> KindCase:
    """Plant ``scenario`` in a period of ``world`` (deterministic in ``seed``) and write down its truth.

    Raises
    ------
    ConfigError
        When the scenario is unknown or ``rows`` is below 1,000.
    """
    if scenario not in BINARY_SCENARIOS:
        raise ConfigError(f"unknown {world.name} scenario {scenario!r}; expected one of {BINARY_SCENARIOS}",
                          column="scenario")
    if rows is not None and rows < 1_000:
        raise ConfigError(f"expected rows >= 1000, got {rows}", column="rows")
    rng = np.random.default_rng([seed, world.salt, BINARY_SCENARIOS.index(scenario)])
    cause = _CAUSE[scenario]
    n = rows or int(rng.integers(*world.rows))
    secs = world.times(rng, n)
    onset = world.onset(rng)
    gradual = scenario in _GRADUAL and (bool(rng.random() < 0.35) or scenario in world.always_gradual)
    from_start = scenario == "skew" and bool(rng.random() < 1 / 3)
    if from_start:
        expo = np.ones(n)
    elif gradual:
        ramp = float(rng.uniform(1.5, 3.0)) * 86400 * max(1.0, world.days / 14)
        expo = np.clip((secs - onset) / ramp, 0.0, 1.0)
    else:
        expo = (secs >= onset).astype(float)
    inp, segs = world.population(rng, secs)
    segment: tuple[str, str] | None = None
    if scenario == "shift":
        segment = world.shift_segment(rng)
    elif scenario in _LOCALISABLE and rng.random() < 1 / 3:
        segment = world.fault_segments[int(rng.integers(len(world.fault_segments)))]
    inseg = np.ones(n, bool) if segment is None else segs[segment[0]] == segment[1]
    hit = (rng.random(n) < expo) & inseg
    events = _Events(world, rng)
    for kind, target in world.noise_targets:  # routine changes of any period
        events.add(float(rng.uniform(0.05, 0.95)) * world.days * 86400, kind, target, "routine change")
    if scenario != "healthy_drift" and world.decoy_targets and rng.random() < 0.6:
        # An unrelated release close to the onset: a change nearby is not a cause.
        target = world.decoy_targets[int(rng.integers(len(world.decoy_targets)))]
        events.add(onset + float(rng.choice([-1, 1]) * rng.uniform(1200, 4 * 3600)), "deployment", target,
                   "unrelated release")
    lead = float(rng.uniform(120, 1800))
    logged = bool(rng.random() < 0.85)
    culprit_events: tuple[str, ...] = ()
    fault = Fault(())
    true_inp = {k: v.copy() for k, v in inp.items()}
    version = np.full(n, world.versions[0], dtype=object)
    new_kind = "miscalibrated" if rng.random() < 0.5 else "bad_training"
    canary = False
    if scenario == "shift":
        share = float(rng.uniform(0.5, 0.85))
        hit &= rng.random(n) < share
        fault = world.shift(rng, inp, segs, hit)
        true_inp = {k: v.copy() for k, v in inp.items()}  # the new people are real: outcomes follow them
        if logged and rng.random() < 0.6:
            culprit_events = (events.add(onset - lead, "campaign", fault.target, fault.description),)
    elif scenario == "healthy_drift":
        fault = world.drift(rng, inp, secs >= onset)
        true_inp = {k: v.copy() for k, v in inp.items()}
        events.add(onset - lead, "launch", fault.target, fault.description)
    elif scenario.startswith("upstream_"):
        fault = world.upstream(rng, scenario.removeprefix("upstream_"), inp, hit)
        if logged:
            culprit_events = (events.add(onset - lead, "upstream" if scenario == "upstream_scale" else "schema_change",
                                         fault.target, fault.description),)
    feats = world.features(inp, segs)
    if scenario.startswith("pipeline_"):
        fault = world.pipeline(rng, scenario.removeprefix("pipeline_"), feats, hit)
        if logged and rng.random() < 0.5:
            culprit_events = (events.add(onset - lead, "pipeline", fault.target, fault.description),)
    elif scenario == "skew":
        fault = world.skew(rng, inp, feats, hit)
        if not from_start and logged:
            culprit_events = (events.add(onset - float(rng.uniform(120, 900)), "deployment", world.feature_service,
                                         fault.description),)
    elif scenario == "model_change":
        canary = world.name == "ads" and bool(rng.random() < 0.5)
        share = float(rng.uniform(0.15, 0.3)) if canary else 1.0
        version[hit & (rng.random(n) < share)] = world.versions[1]
        what = "scores shifted up (not recalibrated)" if new_kind == "miscalibrated" else "trained on broken data"
        where = f"{share:.0%} of traffic (canary)" if canary else "all traffic"
        culprit_events = (events.add(onset - float(rng.uniform(120, 900)), "deployment", f"model:{world.model}",
                                     f"{world.versions[1]} to {where}"),)
        fault = Fault((), description=f"{world.versions[1]} deployed to {where}: {what}")
    score = np.empty(n)
    for v in world.versions:
        sel = version == v
        if sel.any():
            score[sel] = world.score({k: a[sel] for k, a in feats.items()}, v, new_kind)
    latency = np.round(rng.lognormal(np.log(25), 0.35, n), 2)
    error: list[str | None] = [None] * n
    if scenario.startswith("infra_"):
        kind = scenario.removeprefix("infra_")
        if kind == "latency":
            factor = float(rng.uniform(3, 6))
            latency = np.where(inseg, np.round(latency * (1 + (factor - 1) * expo), 2), latency)
            fault = Fault((), description=f"serving latency grew {factor:.1f}x")
        else:
            rate = float(rng.uniform(0.12, 0.35))
            bad = hit & (rng.random(n) < rate)
            msg = "timeout: feature store" if kind == "errors" else "fallback: scoring timeout, default score"
            score = np.where(bad, np.nan if kind == "errors" else world.fallback_score, score)
            error = [msg if b else None for b in bad.tolist()]
            fault = Fault((), description=f"{rate:.0%} of requests {'failed' if kind == 'errors' else 'fell back'}")
        if logged and rng.random() < 0.6:
            culprit_events = (events.add(onset - float(rng.uniform(60, 900)), "infrastructure", world.serving_target,
                                         "node pool resized"),)
    concept = expo * inseg if scenario == "degradation" else np.zeros(n)
    y = (rng.random(n) < _sigmoid(world.true_logit(true_inp, segs, concept))).astype(np.int64)
    if scenario == "degradation":
        fault = Fault((), description="the relation between inputs and outcomes moved")
    log = _frame(world, rng, secs, inp, feats, score, version, segs, f"{world.name[0]}", latency, error)
    delay = rng.uniform(*world.label_delay, n)
    arrived = np.flatnonzero(secs + delay <= world.days * 86400)
    ids = log.column(world.names["request_id"]).combine_chunks()
    labels = pa.table({"request_id": ids.take(pa.array(arrived)), "label": pa.array(y[arrived]),
                       "label_ts": ts_array(secs[arrived] + delay[arrived])})
    # The reference: an earlier calm period of the serving model, with outcomes.
    rsecs = world.times(rng, world.reference_rows) - world.days * 86400
    rinp, rsegs = world.population(rng, rsecs)
    rfeats = world.features(rinp, rsegs)
    rscore = world.score(rfeats, world.versions[0], new_kind)
    ry = (rng.random(rsecs.size) < _sigmoid(world.true_logit(rinp, rsegs, np.zeros(rsecs.size)))).astype(np.int64)
    ref = _frame(world, rng, rsecs, rinp, rfeats, rscore, np.full(rsecs.size, world.versions[0], dtype=object),
                 rsegs, "t")
    ref = ref.append_column("label", pa.array(ry))
    truth = _truth(scenario, cause, onset, gradual or from_start, fault, segment, canary, world, culprit_events)
    return KindCase(f"{world.name}-{scenario}-s{seed}", log, ref, labels, events.items,
                    {k: list(v) for k, v in world.lineage.items()}, truth, config=world.config)


def _truth(scenario: str, cause: Cause | None, onset: float, no_onset: bool, fault: Fault,
           segment: tuple[str, str] | None, canary: bool, world: BinaryWorld, events: tuple[str, ...]) -> Truth:
    start = DEFAULT_START + timedelta(seconds=onset)
    if cause is None:
        story = "a calm period" if scenario == "healthy" else f"a calm period; {fault.description} (harmless)"
        return Truth(Verdict.HEALTHY, description=story, mode=None,
                     details=(("scenario", scenario), ("world", world.name)))
    groups: tuple[tuple[tuple[str, str], ...], ...] = ()
    if segment is not None:
        groups = ((segment,),)
    elif canary:
        groups = ((("model_version", world.versions[1]),),)
    return Truth(
        Verdict.INCIDENT, cause, None if no_onset else start, fault.features, fault.inputs, groups, events,
        description=fault.description, mode=scenario, effect_start=None if scenario == "skew" and no_onset else start,
        details=(("progression", "gradual" if no_onset and scenario != "skew" else "sudden"), ("world", world.name)),
    )
