"""Generated cases for models whose score is not a binary probability: a delivery-time regressor and a
content-moderation multiclass classifier, each a week of logs with a daily cycle, labels, reference and events.

The models are fixed formulas (numpy only): what matters is how the world around them changes, not how they were fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.errors import ConfigError, StoreError
from mlsleuth.testing._case import write_case_dir
from mlsleuth.testing._plan import DEFAULT_START
from mlsleuth.testing._spec import Cause, Truth, Verdict

__all__ = ["MULTICLASS_SCENARIOS", "REGRESSION_SCENARIOS", "KindCase", "multiclass_case", "regression_case"]

#: Scenarios of :func:`regression_case`.
REGRESSION_SCENARIOS = ("healthy", "seasonal_drift", "model_change", "upstream_unit", "pipeline_constant")
#: Scenarios of :func:`multiclass_case`.
MULTICLASS_SCENARIOS = ("healthy", "model_change", "upstream_unit")

CLASSES = ("ok", "spam", "harassment", "adult", "violence")
_WEEK = 7 * 86400.0
_F64 = np.dtype(np.float64)


@dataclass(frozen=True, eq=False)
class KindCase:
    """One generated week of a regression or multiclass model, in the data layout of docs/contract.md.

    Attributes
    ----------
    name
        ``<kind>-<scenario>-s<seed>``.
    log, reference, labels
        The prediction log (sorted by ``ts``), the reference data (with ``label``), and the labels that arrived
        (``request_id``, ``label``, ``label_ts``).
    events
        Change events as contract objects.
    lineage
        The contract's lineage object.
    truth
        What really happened.
    config
        The model config (TOML text) written as ``model.toml``, or ``None`` when the names say every role.
    """

    name: str
    log: pa.Table
    reference: pa.Table
    labels: pa.Table
    events: list[dict[str, Any]]
    lineage: dict[str, list[str]]
    truth: Truth
    config: str | None = None

    def write(self, folder: str | Path) -> Path:
        """Write the case as a CASE_DIR (docs/contract.md, the diagnose command) plus ``truth.json``.

        Returns
        -------
        Path
            The folder.

        Raises
        ------
        StoreError
            When the folder cannot be created or written.
        """
        out = write_case_dir(folder, self.log, self.reference, self.labels, self.events, self.lineage, self.truth)
        if self.config is not None:
            try:
                (out / "model.toml").write_text(self.config, encoding="utf-8")
            except OSError as e:
                raise StoreError(f"cannot write the case's model config to {out / 'model.toml'}: {e}") from e
        return out


def _times(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds into the week, busier by day than by night (a daily cycle), sorted."""
    t = rng.uniform(0, _WEEK, 4 * n)
    hour = (t % 86400) / 3600
    keep = rng.uniform(0, 1, t.size) < 0.35 + 0.65 * np.exp(-((hour - 14) / 5) ** 2)
    return np.sort(rng.choice(t[keep], n, replace=False))


def _onset(rng: np.random.Generator) -> float:
    """An onset between day 3 and day 5, on a 5-minute boundary."""
    return float(np.floor(rng.uniform(2.5, 4.5) * 86400 / 300) * 300)


def _ts(seconds: np.ndarray) -> pa.Array:
    start = np.datetime64(DEFAULT_START.replace(tzinfo=None), "us")
    return pa.array(start + (seconds * 1e6).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC"))


def _labels(rng: np.random.Generator, ids: pa.Array, secs: np.ndarray, label: pa.Array) -> pa.Table:
    """Labels that arrive one to three days after the request; the last day's are still partly missing."""
    delay = rng.uniform(1, 3, secs.size) * 86400
    arrived = secs + delay <= _WEEK + 86400
    idx = np.flatnonzero(arrived)
    return pa.table({"request_id": ids.take(pa.array(idx)), "label": label.take(pa.array(idx)),
                     "label_ts": _ts(secs[idx] + delay[idx])})


def _deploy(at: float, version: str, model: str, rng: np.random.Generator) -> dict[str, Any]:
    t = DEFAULT_START + timedelta(seconds=at)
    return {"id": f"ev-{int(rng.integers(100, 999))}", "ts": t.isoformat().replace("+00:00", "Z"),
            "kind": "deployment", "target": f"model:{model}", "description": f"{version} to all traffic"}


def _noise_events(rng: np.random.Generator, model: str) -> list[dict[str, Any]]:
    """Unrelated changes that happen in any week (a dashboard config, a job on another table)."""
    out = []
    for kind, target in (("config", "service:dashboard"), ("pipeline", "job:marketing_rollup")):
        t = DEFAULT_START + timedelta(seconds=float(rng.uniform(0.5, 6.5)) * 86400)
        out.append({"id": f"ev-{int(rng.integers(1000, 9999))}", "ts": t.isoformat().replace("+00:00", "Z"),
                    "kind": kind, "target": target, "description": "routine change"})
    return out


# --- regression: delivery time in minutes -------------------------------------------------------------------------

_REGIONS = ("north", "south", "east", "west")


def _delivery_inputs(rng: np.random.Generator, secs: np.ndarray, *, warming: float) -> dict[str, np.ndarray]:
    """Raw inputs of a delivery request. ``warming`` (degrees C) is added linearly over the week: a heat wave."""
    n = secs.size
    hour = (secs % 86400) / 3600
    day = secs / 86400
    temp = 12 + 6 * np.sin((hour - 9) / 24 * 2 * np.pi) + warming * day / 7 + rng.normal(0, 2, n)
    # Hot weather brings thunderstorms: rain follows the heat a little.
    rain = np.where(rng.uniform(0, 1, n) < 0.15 + 0.035 * np.clip(temp - 12, 0, None), rng.exponential(4, n), 0.0)
    return {
        "input.distance_km": np.round(rng.lognormal(1.1, 0.5, n), 2),
        "input.items": rng.poisson(2.5, n).astype(np.int64) + 1,
        "input.prep_min": np.round(rng.gamma(4, 3, n), 1),
        "input.temperature_c": np.round(temp, 1),
        "input.rain_mm": np.round(rain, 1),
        "hour": hour,
    }


def _delivery_features(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rush = np.exp(-((inp["hour"] - 12.5) / 1.5) ** 2) + np.exp(-((inp["hour"] - 19) / 1.5) ** 2)
    return {
        "feature.distance_km": inp["input.distance_km"].astype(_F64),
        "feature.items": inp["input.items"].astype(_F64),
        "feature.prep_min": inp["input.prep_min"].astype(_F64),
        "feature.temperature_c": inp["input.temperature_c"].astype(_F64),
        "feature.rain_mm": inp["input.rain_mm"].astype(_F64),
        "feature.rush": np.round(rush, 3),
    }


def _delivery_truth(f: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The true delivery time: what the model approximates, plus noise it cannot know."""
    y = (6 + 3.2 * f["feature.distance_km"] + 1.1 * f["feature.items"] + 0.9 * f["feature.prep_min"]
         + 1.5 * f["feature.rain_mm"] + 0.15 * np.abs(f["feature.temperature_c"] - 15) + 7 * f["feature.rush"])
    return y + rng.normal(0, 3.5, y.size)


def _delivery_model(f: dict[str, np.ndarray], version: str) -> np.ndarray:
    """The serving model; ``v8`` is sound, ``v9`` lost the rain and rush terms and over-weights distance."""
    if version == "v9":
        y = 9 + 4.6 * f["feature.distance_km"] + 1.1 * f["feature.items"] + 0.9 * f["feature.prep_min"]
    else:
        y = (6.3 + 3.15 * f["feature.distance_km"] + 1.1 * f["feature.items"] + 0.9 * f["feature.prep_min"]
             + 1.45 * f["feature.rain_mm"] + 0.15 * np.abs(f["feature.temperature_c"] - 15)
             + 7 * f["feature.rush"])
    return np.round(y * 2) / 2  # served to the half minute


def _frame(rng: np.random.Generator, secs: np.ndarray, inp: dict[str, np.ndarray], feats: dict[str, np.ndarray],
           pred: np.ndarray | list[str], score: np.ndarray, version: np.ndarray, model: str,
           segs: dict[str, np.ndarray], prefix: str) -> pa.Table:
    n = secs.size
    lat = np.round(rng.lognormal(np.log(18), 0.3, n), 2)
    cols: dict[str, Any] = {
        "request_id": pa.array([f"{prefix}{i:07d}" for i in range(n)]),
        "ts": _ts(secs),
        "model": pa.array([model] * n),
        "model_version": pa.array(version.tolist()),
        **{k: pa.array(v) for k, v in inp.items() if k != "hour"},
        **{k: pa.array(v) for k, v in feats.items()},
        "score": pa.array(np.asarray(score, dtype=_F64)),
        "prediction": pa.array(pred),
        "latency_ms": pa.array(lat),
        "error": pa.nulls(n, pa.string()),
        **{k: pa.array(v.tolist()) for k, v in segs.items()},
    }
    return pa.table(cols)


def regression_case(scenario: str, seed: int, rows: int | None = None) -> KindCase:
    """A week of a delivery-time regressor (``score`` and ``prediction`` are the predicted minutes).

    Parameters
    ----------
    scenario
        One of :data:`REGRESSION_SCENARIOS`: ``healthy`` (a calm week); ``seasonal_drift`` (a heat wave moves the
        temperature and the rain a lot, but the model handles both: its error is unchanged); ``model_change``
        (``v9`` is deployed at a logged event and its error doubles); ``upstream_unit`` (the distance input arrives
        in miles from the onset); ``pipeline_constant`` (the rain feature is served as 0 from the onset).
    seed
        The random seed; the same seed gives the same case.
    rows
        Requests in the week (default: 20,000 to 60,000, from the seed).

    Returns
    -------
    KindCase
        The case and its truth.

    Raises
    ------
    ConfigError
        When the scenario is unknown.
    """
    if scenario not in REGRESSION_SCENARIOS:
        raise ConfigError(f"unknown regression scenario {scenario!r}; expected one of {REGRESSION_SCENARIOS}")
    rng = np.random.default_rng([seed, 7_031])
    n = rows or int(rng.integers(20_000, 60_001))
    model = "delivery_eta"
    secs = _times(rng, n)
    onset = _onset(rng)
    after = secs >= onset
    warming = float(rng.uniform(10, 14)) if scenario == "seasonal_drift" else 0.0
    inp = _delivery_inputs(rng, secs, warming=warming)
    feats = _delivery_features(inp)
    label = _delivery_truth(feats, rng)  # the truth is the world's, before any fault in the pipeline
    version = np.full(n, "v8", dtype=object)
    events = _noise_events(rng, model)
    t_on = DEFAULT_START + timedelta(seconds=onset)
    truth = Truth(Verdict.HEALTHY, description="a calm week")
    if scenario == "seasonal_drift":
        truth = Truth(Verdict.HEALTHY, description="a heat wave moved temperature and rain; the model's error held")
    elif scenario == "model_change":
        version[after] = "v9"
        ev = _deploy(onset - 120, "v9", model, rng)
        events.append(ev)
        truth = Truth(Verdict.INCIDENT, Cause.MODEL_CHANGE, t_on, events=(ev["id"],), mode="worse_version",
                      description="v9 was deployed and its absolute error doubled")
    elif scenario == "upstream_unit":
        inp["input.distance_km"] = np.where(after, np.round(inp["input.distance_km"] * 0.621371, 2),
                                            inp["input.distance_km"])
        feats["feature.distance_km"] = inp["input.distance_km"].astype(_F64)
        truth = Truth(Verdict.INCIDENT, Cause.UPSTREAM_DATA_CHANGE, t_on, ("feature.distance_km",),
                      ("input.distance_km",), mode="unit", description="distance arrives in miles")
    elif scenario == "pipeline_constant":
        feats["feature.rain_mm"] = np.where(after, 0.0, feats["feature.rain_mm"])
        truth = Truth(Verdict.INCIDENT, Cause.SILENT_PIPELINE_FAILURE, t_on, ("feature.rain_mm",),
                      mode="zeros", description="the rain feature is served as 0")
    pred = np.empty(n)
    for v in ("v8", "v9"):
        sel = version == v
        pred[sel] = _delivery_model({k: a[sel] for k, a in feats.items()}, v)
    segs = {"region": rng.choice(np.array(_REGIONS), n), "channel": rng.choice(np.array(["app", "web"]), n,
                                                                                  p=[0.7, 0.3])}
    log = _frame(rng, secs, inp, feats, pred, pred, version, model, segs, "r")
    labels = _labels(rng, log.column("request_id").combine_chunks(), secs, pa.array(np.round(label, 2)))
    # The reference: a calm training week of the sound model, with labels.
    rsecs = _times(rng, 10_000)
    rinp = _delivery_inputs(rng, rsecs, warming=0.0)
    rfeats = _delivery_features(rinp)
    rlabel = _delivery_truth(rfeats, rng)
    rpred = _delivery_model(rfeats, "v8")
    rsegs = {"region": rng.choice(np.array(_REGIONS), rsecs.size), "channel": rng.choice(
        np.array(["app", "web"]), rsecs.size, p=[0.7, 0.3])}
    ref = _frame(rng, rsecs, rinp, rfeats, rpred, rpred, np.full(rsecs.size, "v8", dtype=object), model, rsegs, "t")
    ref = ref.append_column("label", pa.array(np.round(rlabel, 2)))
    lineage = {f: [f"input.{f.removeprefix('feature.')}"] for f in feats if f != "feature.rush"}
    lineage["input.distance_km"] = ["source:orders.routing"]
    lineage["input.rain_mm"] = ["source:weather.hourly"]
    lineage["input.temperature_c"] = ["source:weather.hourly"]
    return KindCase(f"regression-{scenario}-s{seed}", log, ref, labels, events, lineage, truth)


# --- multiclass: content moderation ----------------------------------------------------------------------------------

_LANGS = ("en", "es", "de", "pt")


def _post_inputs(rng: np.random.Generator, secs: np.ndarray) -> dict[str, np.ndarray]:
    n = secs.size
    return {
        "input.text_len": rng.lognormal(4.5, 0.9, n).astype(np.int64) + 1,
        "input.link_count": rng.poisson(0.6, n).astype(np.int64),
        "input.account_age_days": np.round(rng.lognormal(4.5, 1.3, n), 1),
        "input.toxicity": np.round(rng.beta(1.2, 6, n), 3),
        "input.skin_ratio": np.round(rng.beta(1.1, 8, n), 3),
        "input.gore_ratio": np.round(rng.beta(1.0, 12, n), 3),
    }


def _post_features(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "feature.log_text_len": np.round(np.log1p(inp["input.text_len"].astype(_F64)), 4),
        "feature.link_count": inp["input.link_count"].astype(_F64),
        "feature.log_account_age": np.round(np.log1p(inp["input.account_age_days"].astype(_F64)), 4),
        "feature.toxicity": inp["input.toxicity"].astype(_F64),
        "feature.skin_ratio": inp["input.skin_ratio"].astype(_F64),
        "feature.gore_ratio": inp["input.gore_ratio"].astype(_F64),
    }


def _post_logits(f: dict[str, np.ndarray], version: str = "v4") -> np.ndarray:
    """Class logits (``ok``, ``spam``, ``harassment``, ``adult``, ``violence``); ``v5`` over-weights links."""
    young = 4.5 - f["feature.log_account_age"]
    links = 1.6 if version == "v4" else 3.2
    return np.stack([
        np.full(f["feature.toxicity"].size, 2.5),
        -1.5 + links * f["feature.link_count"] + 0.8 * young - 0.3 * f["feature.log_text_len"],
        -3.0 + 14 * f["feature.toxicity"] + 0.3 * young,
        -2.5 + 18 * f["feature.skin_ratio"],
        -3.0 + 26 * f["feature.gore_ratio"] + 3 * f["feature.toxicity"],
    ], axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _classify(f: dict[str, np.ndarray], version: str) -> tuple[np.ndarray, np.ndarray]:
    p = _softmax(_post_logits(f, version))
    return p.argmax(axis=1), np.round(p.max(axis=1), 4)


def _true_class(f: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    z = _post_logits(f) * 1.6 + rng.gumbel(0, 1, (f["feature.toxicity"].size, len(CLASSES)))
    return z.argmax(axis=1)


def multiclass_case(scenario: str, seed: int, rows: int | None = None) -> KindCase:
    """A week of a content-moderation classifier (``prediction`` the class, ``score`` its confidence).

    Parameters
    ----------
    scenario
        One of :data:`MULTICLASS_SCENARIOS`: ``healthy``; ``model_change`` (``v5``, deployed at a logged event,
        over-weights links and calls many ordinary posts spam); ``upstream_unit`` (the account age arrives in
        hours instead of days from the onset).
    seed
        The random seed; the same seed gives the same case.
    rows
        Requests in the week (default: 20,000 to 60,000, from the seed).

    Returns
    -------
    KindCase
        The case and its truth.

    Raises
    ------
    ConfigError
        When the scenario is unknown.
    """
    if scenario not in MULTICLASS_SCENARIOS:
        raise ConfigError(f"unknown multiclass scenario {scenario!r}; expected one of {MULTICLASS_SCENARIOS}")
    rng = np.random.default_rng([seed, 9_113])
    n = rows or int(rng.integers(20_000, 60_001))
    model = "moderation"
    secs = _times(rng, n)
    onset = _onset(rng)
    after = secs >= onset
    inp = _post_inputs(rng, secs)
    label = _true_class(_post_features(inp), rng)
    version = np.full(n, "v4", dtype=object)
    events = _noise_events(rng, model)
    t_on = DEFAULT_START + timedelta(seconds=onset)
    truth = Truth(Verdict.HEALTHY, description="a calm week")
    if scenario == "model_change":
        version[after] = "v5"
        ev = _deploy(onset - 120, "v5", model, rng)
        events.append(ev)
        truth = Truth(Verdict.INCIDENT, Cause.MODEL_CHANGE, t_on, events=(ev["id"],), mode="worse_version",
                      description="v5 calls many ordinary posts spam")
    elif scenario == "upstream_unit":
        inp["input.account_age_days"] = np.where(after, np.round(inp["input.account_age_days"] * 24, 1),
                                                 inp["input.account_age_days"])
        truth = Truth(Verdict.INCIDENT, Cause.UPSTREAM_DATA_CHANGE, t_on, ("feature.log_account_age",),
                      ("input.account_age_days",), mode="unit", description="account age arrives in hours")
    feats = _post_features(inp)
    cls = np.empty(n, dtype=np.int64)
    conf = np.empty(n)
    for v in ("v4", "v5"):
        sel = version == v
        cls[sel], conf[sel] = _classify({k: a[sel] for k, a in feats.items()}, v)
    names = np.array(CLASSES)
    segs = {"lang": rng.choice(np.array(_LANGS), n, p=[0.55, 0.2, 0.15, 0.1]),
            "surface": rng.choice(np.array(["feed", "comments", "dm"]), n, p=[0.5, 0.35, 0.15])}
    log = _frame(rng, secs, inp, feats, names[cls].tolist(), conf, version, model, segs, "p")
    labels = _labels(rng, log.column("request_id").combine_chunks(), secs, pa.array(names[label].tolist()))
    rsecs = _times(rng, 10_000)
    rinp = _post_inputs(rng, rsecs)
    rfeats = _post_features(rinp)
    rlabel = _true_class(rfeats, rng)
    rcls, rconf = _classify(rfeats, "v4")
    rsegs = {"lang": rng.choice(np.array(_LANGS), rsecs.size, p=[0.55, 0.2, 0.15, 0.1]),
             "surface": rng.choice(np.array(["feed", "comments", "dm"]), rsecs.size, p=[0.5, 0.35, 0.15])}
    ref = _frame(rng, rsecs, rinp, rfeats, names[rcls].tolist(), rconf, np.full(rsecs.size, "v4", dtype=object),
                 model, rsegs, "t")
    ref = ref.append_column("label", pa.array(names[rlabel].tolist()))
    lineage = {
        "feature.log_text_len": ["input.text_len"], "feature.link_count": ["input.link_count"],
        "feature.log_account_age": ["input.account_age_days"], "feature.toxicity": ["input.toxicity"],
        "feature.skin_ratio": ["input.skin_ratio"], "feature.gore_ratio": ["input.gore_ratio"],
        "input.account_age_days": ["source:accounts.profile"],
    }
    return KindCase(f"multiclass-{scenario}-s{seed}", log, ref, labels, events, lineage, truth)
