"""The card-fraud world: traffic, raw inputs, the feature pipeline, the true fraud mechanism and the model.

Everything here is vectorised numpy over whole columns; loops run over categories (regions,
merchants), never over rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from mlsleuth.testing._spec import DegradationKind

__all__ = [
    "FEATURES",
    "INPUTS",
    "LINEAGE",
    "MODEL_FEATURES",
    "FraudWorld",
    "compute_features",
    "fraud_world",
]

FloatArray = npt.NDArray[np.float64]
AnyArray = npt.NDArray[Any]

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR

REGIONS = ("EU", "US", "APAC", "LATAM")
REGION_SHARES = np.array([0.34, 0.40, 0.16, 0.10])
_REGION_UTC_OFFSET = np.array([1.0, -5.0, 8.0, -4.0])  # for the daily traffic cycle
#: Card countries per region: (code, share within the region, UTC offset in hours).
COUNTRIES: Mapping[str, tuple[tuple[str, float, int], ...]] = {
    "EU": (("DE", 0.30, 1), ("FR", 0.22, 1), ("GB", 0.22, 0), ("ES", 0.13, 1), ("NL", 0.13, 1)),
    "US": (("US", 1.0, -5),),
    "APAC": (("JP", 0.35, 9), ("AU", 0.25, 10), ("SG", 0.15, 8), ("IN", 0.25, 5)),
    "LATAM": (("BR", 0.50, -3), ("MX", 0.35, -6), ("AR", 0.15, -3)),
}
ALL_COUNTRIES = tuple(c for r in REGIONS for c, _, _ in COUNTRIES[r])
_COUNTRY_OFFSET = {c: off for r in REGIONS for c, _, off in COUNTRIES[r]}
CHANNELS = ("web", "app", "pos")
#: Channel shares per region (rows follow REGIONS).
CHANNEL_SHARES = np.array([[0.35, 0.40, 0.25], [0.40, 0.30, 0.30], [0.25, 0.55, 0.20], [0.30, 0.50, 0.20]])
MERCHANTS = ("grocery", "restaurants", "fuel", "fashion", "electronics", "travel", "gaming", "digital_goods")
MERCHANT_SHARES = np.array([0.24, 0.16, 0.10, 0.12, 0.09, 0.07, 0.07, 0.15])
#: The pipeline's merchant risk table (historical fraud propensity per category).
MERCHANT_RISK: Mapping[str, float] = {"grocery": 0.05, "restaurants": 0.08, "fuel": 0.10, "fashion": 0.22,
                                      "electronics": 0.45, "travel": 0.35, "gaming": 0.50, "digital_goods": 0.55}
#: What the pipeline uses for a category it does not know (or when its join fails).
DEFAULT_MERCHANT_RISK = 0.15
_MERCHANT_AMOUNT_SHIFT = np.array([-0.25, -0.10, -0.10, 0.20, 0.60, 0.80, -0.20, -0.40])
_AVG_MEDIAN = np.array([48.0, 62.0, 55.0, 28.0])  # per region, in USD
DEVICES = ("desktop", "mobile", "tablet", "terminal")
_DEVICE_BY_CHANNEL = np.array([[0.70, 0.20, 0.10, 0.0], [0.0, 0.85, 0.15, 0.0], [0.0, 0.0, 0.0, 1.0]])

#: Raw inputs and the upstream source each comes from.
INPUT_SOURCES: Mapping[str, str] = {
    "input.amount": "source:payments.transactions",
    "input.merchant_category": "source:payments.transactions",
    "input.hour": "source:payments.transactions",
    "input.avg_amount_30d": "source:warehouse.customer_stats",
    "input.txn_count_24h": "source:stream.card_activity",
    "input.account_age_days": "source:crm.accounts",
    "input.card_country": "source:crm.accounts",
    "input.country": "source:geo.ip_lookup",
    "input.device_type": "source:device.fingerprint",
    "input.session_seconds": "source:clickstream.sessions",
}
INPUTS = tuple(INPUT_SOURCES)
#: Each feature and the inputs the pipeline computes it from, in the model's column order.
FEATURE_INPUTS: Mapping[str, tuple[str, ...]] = {
    "feature.amount_to_avg_ratio": ("input.amount", "input.avg_amount_30d"),
    "feature.log_amount": ("input.amount",),
    "feature.txn_velocity": ("input.txn_count_24h",),
    "feature.is_foreign": ("input.country", "input.card_country"),
    "feature.account_age_log": ("input.account_age_days",),
    "feature.merchant_risk": ("input.merchant_category",),
    "feature.hour_sin": ("input.hour",),
    "feature.hour_cos": ("input.hour",),
    "feature.is_mobile": ("input.device_type",),
    "feature.session_seconds_log": ("input.session_seconds",),
}
FEATURES = tuple(FEATURE_INPUTS)
#: The features the model uses: all but session length, which it drops (a harmless-drift decoy).
MODEL_FEATURES = tuple(f for f in FEATURES if f != "feature.session_seconds_log")
#: The contract's lineage: features to inputs, inputs to sources.
LINEAGE: Mapping[str, tuple[str, ...]] = {**FEATURE_INPUTS, **{k: (v,) for k, v in INPUT_SOURCES.items()}}
SEGMENT_COLUMNS = ("region", "channel", "country")
#: Default values the pipeline writes when a join fails.
PIPELINE_DEFAULTS: Mapping[str, float] = {
    "feature.amount_to_avg_ratio": 1.0,
    "feature.txn_velocity": 0.0,
    "feature.merchant_risk": DEFAULT_MERCHANT_RISK,
    "feature.account_age_log": 0.0,
    "feature.log_amount": 0.0,
    "feature.is_foreign": 0.0,
}
BASE_RATE = 0.015
TRAIN_ROWS = 80_000
REFERENCE_ROWS = 50_000
ALERT_RATE = 0.02


def _np(values: Any) -> AnyArray:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return values.to_numpy(zero_copy_only=False)
    return np.asarray(values)


def _num(values: Any) -> FloatArray:
    arr = _np(values)
    if arr.dtype == object:  # numbers with None for null: let Arrow turn them into floats with NaN
        arr = pa.array(arr, type=pa.float64(), from_pandas=True).to_numpy(zero_copy_only=False)
    return arr.astype(np.float64, copy=False)


def lookup(values: AnyArray, table: Mapping[str, float], default: float) -> FloatArray:
    """Map category strings to numbers (one dictionary look-up per distinct value, not per row)."""
    if len(values) == 0:
        return np.zeros(0)
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    mapped = np.array([table.get(str(u), default) for u in uniq], dtype=np.float64)
    return mapped[inverse.reshape(-1)]


def compute_features(inputs: Mapping[str, Any]) -> dict[str, FloatArray]:
    """The feature pipeline as training ran it: ``input.*`` columns in, ``feature.*`` columns out.

    Parameters
    ----------
    inputs
        Each ``input.*`` name of :data:`INPUTS` to a numpy array or Arrow array of equal length.

    Returns
    -------
    dict
        Each ``feature.*`` name of :data:`FEATURES` (in the model's column order) to a float64 array.

    Examples
    --------
    >>> f = compute_features({"input.amount": [30.0], "input.avg_amount_30d": [60.0], "input.txn_count_24h": [6],
    ...     "input.account_age_days": [-1], "input.merchant_category": ["travel"], "input.hour": [6],
    ...     "input.country": ["DE"], "input.card_country": ["FR"], "input.device_type": ["tablet"],
    ...     "input.session_seconds": [0.0]})
    >>> [round(float(f[k][0]), 3) for k in ("feature.amount_to_avg_ratio", "feature.txn_velocity",
    ...                                      "feature.is_foreign", "feature.account_age_log", "feature.hour_sin")]
    [0.5, 0.25, 1.0, 0.0, 1.0]
    """
    amount = _num(inputs["input.amount"])
    avg = _num(inputs["input.avg_amount_30d"])
    hour = _num(inputs["input.hour"])
    device = _np(inputs["input.device_type"])
    angle = 2.0 * np.pi * hour / 24.0
    return {
        "feature.amount_to_avg_ratio": amount / np.maximum(avg, 1.0),
        "feature.log_amount": np.log1p(np.maximum(amount, 0.0)),
        "feature.txn_velocity": _num(inputs["input.txn_count_24h"]) / 24.0,
        "feature.is_foreign": (_np(inputs["input.country"]) != _np(inputs["input.card_country"])).astype(np.float64),
        "feature.account_age_log": np.log1p(np.maximum(_num(inputs["input.account_age_days"]), 0.0)),
        "feature.merchant_risk": lookup(_np(inputs["input.merchant_category"]), MERCHANT_RISK, DEFAULT_MERCHANT_RISK),
        "feature.hour_sin": np.sin(angle),
        "feature.hour_cos": np.cos(angle),
        "feature.is_mobile": ((device == "mobile") | (device == "tablet")).astype(np.float64),
        "feature.session_seconds_log": np.log1p(np.maximum(_num(inputs["input.session_seconds"]), 0.0)),
    }


# ---------------------------------------------------------------------------------------------------------------
# Traffic and inputs


def _daily_shape(local_hour: FloatArray) -> FloatArray:
    def bump(center: float, width: float) -> FloatArray:
        d = np.abs(local_hour - center)
        d = np.minimum(d, 24.0 - d)
        return np.exp(-((d / width) ** 2))

    return 0.12 + 0.9 * bump(12.5, 3.0) + 1.0 * bump(19.5, 2.5)


_DAY_FACTOR = np.array([0.97, 0.98, 1.0, 1.02, 1.08, 0.93, 0.85])  # Monday .. Sunday


@functools.lru_cache(maxsize=32)
def _traffic_cdf(start_us: int, days: int) -> tuple[FloatArray, ...]:
    minutes = np.arange(days * 1440, dtype=np.float64)
    weekday = (datetime.fromtimestamp(start_us / 1e6, UTC).weekday() + minutes // 1440).astype(int) % 7
    utc_hour = (minutes % 1440) / 60.0
    out = []
    for off in _REGION_UTC_OFFSET:
        lam = _daily_shape((utc_hour + off) % 24.0) * _DAY_FACTOR[weekday]
        cdf = np.cumsum(lam)
        out.append(cdf / cdf[-1])
    return tuple(out)


def sample_traffic(rng: np.random.Generator, n: int, start_us: int, days: int,
                   region_shares: FloatArray = REGION_SHARES) -> tuple[AnyArray, npt.NDArray[np.int64]]:
    """Region codes and timestamps (UTC microseconds) of ``n`` requests with daily and weekly cycles."""
    region = rng.choice(len(REGIONS), size=n, p=region_shares)
    cdfs = _traffic_cdf(start_us, days)
    u = rng.random(n)
    minute = np.empty(n, dtype=np.int64)
    for r, cdf in enumerate(cdfs):
        m = region == r
        minute[m] = np.searchsorted(cdf, u[m], side="right")
    minute = np.minimum(minute, days * 1440 - 1)
    ts = start_us + minute * US_PER_MINUTE + rng.integers(0, US_PER_MINUTE, size=n)
    return region, ts


@dataclass(frozen=True)
class Population:
    """Parameters of the customer population that requests are drawn from."""

    merchant_shares: tuple[float, ...] = tuple(MERCHANT_SHARES)
    amount_factor: float = 1.0
    new_account_share: float = 0.06
    new_account_max_days: int = 30
    foreign_rate: float = 0.04


BASE_POPULATION = Population()


def _pick(rng: np.random.Generator, probs: FloatArray, rows: AnyArray) -> AnyArray:
    """For each row, draw a category index from ``probs[rows[i]]`` (a row of a probability table)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(len(rows))
    return (u[:, None] > cum[rows]).sum(axis=1)


def sample_inputs(rng: np.random.Generator, region: AnyArray, ts_us: npt.NDArray[np.int64],
                  pop: Population = BASE_POPULATION, channel: AnyArray | None = None) -> dict[str, AnyArray]:
    """Raw inputs and segment columns for requests of the given regions and times (true values)."""
    n = len(region)
    if channel is None:
        channel = _pick(rng, CHANNEL_SHARES, region)
    country = np.empty(n, dtype=object)
    offset = np.zeros(n)
    for r, name in enumerate(REGIONS):
        m = region == r
        codes = COUNTRIES[name]
        probs = np.array([s for _, s, _ in codes])
        idx = rng.choice(len(codes), size=int(m.sum()), p=probs / probs.sum())
        country[m] = np.array([c for c, _, _ in codes], dtype=object)[idx]
        offset[m] = np.array([o for _, _, o in codes], dtype=np.float64)[idx]
    utc_hour = (ts_us // US_PER_HOUR) % 24
    hour = ((utc_hour + offset) % 24).astype(np.int64)
    device = _pick(rng, _DEVICE_BY_CHANNEL, channel)
    shares = np.asarray(pop.merchant_shares, dtype=np.float64)
    merchant = rng.choice(len(MERCHANTS), size=n, p=shares / shares.sum())
    avg = np.round(_AVG_MEDIAN[region] * np.exp(rng.normal(0.0, 0.55, n)), 2)
    raw_amount = avg * np.exp(rng.normal(_MERCHANT_AMOUNT_SHIFT[merchant], 0.5)) * pop.amount_factor
    amount = np.round(np.maximum(raw_amount, 0.5), 2)
    count = rng.poisson(rng.gamma(2.0, 1.2, n)).astype(np.int64)
    new = rng.random(n) < pop.new_account_share
    age = np.where(new, rng.integers(0, pop.new_account_max_days + 1, n),
                   np.clip(np.exp(rng.normal(np.log(800.0), 0.8, n)), 31, 9000)).astype(np.int64)
    foreign = rng.random(n) < pop.foreign_rate + 0.30 * (merchant == MERCHANTS.index("travel"))
    all_c = np.array(ALL_COUNTRIES, dtype=object)
    other = all_c[rng.integers(0, len(all_c), n)]
    other = np.where(other == country, all_c[(rng.integers(1, len(all_c), n))], other)
    other = np.where(other == country, "CH", other)
    ip_country = np.where(foreign, other, country)
    session = np.where(channel == 2, 0.0, np.round(np.exp(rng.normal(np.log(95.0), 0.7, n)), 1))
    return {
        "region": np.array(REGIONS, dtype=object)[region],
        "channel": np.array(CHANNELS, dtype=object)[channel],
        "country": country,
        "input.amount": amount,
        "input.avg_amount_30d": avg,
        "input.txn_count_24h": count,
        "input.account_age_days": age,
        "input.merchant_category": np.array(MERCHANTS, dtype=object)[merchant],
        "input.hour": hour,
        "input.country": ip_country,
        "input.card_country": country.copy(),
        "input.device_type": np.array(DEVICES, dtype=object)[device],
        "input.session_seconds": session,
    }


# ---------------------------------------------------------------------------------------------------------------
# The true fraud mechanism


def _raw_logit(inputs: Mapping[str, AnyArray], drift: DegradationKind | None = None) -> FloatArray:
    """The fraud logit before its intercept: the mechanism the model learnt, or one fraudsters adapted into."""
    amount = inputs["input.amount"].astype(np.float64)
    avg = inputs["input.avg_amount_30d"].astype(np.float64)
    log_ratio = np.log(amount / avg)
    foreign = (inputs["input.country"] != inputs["input.card_country"]).astype(np.float64)
    risk = lookup(inputs["input.merchant_category"], MERCHANT_RISK, DEFAULT_MERCHANT_RISK)
    count = np.minimum(inputs["input.txn_count_24h"].astype(np.float64), 15.0)
    age = inputs["input.account_age_days"].astype(np.float64)
    hour = inputs["input.hour"]
    night = ((hour >= 0) & (hour < 6)).astype(np.float64)
    device = inputs["input.device_type"]
    mobile = ((device == "mobile") | (device == "tablet")).astype(np.float64)
    base = (3.0 * log_ratio + 1.3 * foreign + 4.0 * risk + 0.22 * count - 0.30 * np.log1p(age)
            + 1.0 * (age < 30) + 0.7 * night)
    if drift is None:
        return base
    if drift is DegradationKind.FRAUD_ADAPTS:
        everyday = np.isin(inputs["input.merchant_category"], ("grocery", "restaurants", "fuel")).astype(np.float64)
        return 0.25 * base + 1.6 * mobile + 1.8 * everyday - 1.2 * np.abs(log_ratio)
    old = (age > 1000).astype(np.float64)
    return 0.25 * base + 2.6 * old * night + 1.2 * old - 1.0 * foreign


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


def _calibrate(z: FloatArray, target: float) -> float:
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if _sigmoid(z + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# ---------------------------------------------------------------------------------------------------------------
# The model


def feature_frame(features: Mapping[str, AnyArray], columns: tuple[str, ...] = FEATURES) -> Any:
    """The DataFrame the model takes: ``feature.*`` columns without the prefix, in reference order."""
    import pandas as pd

    return pd.DataFrame({c.removeprefix("feature."): np.asarray(features[c], dtype=np.float64) for c in columns})


def _train(features: Mapping[str, AnyArray], label: AnyArray, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    used = [c.removeprefix("feature.") for c in MODEL_FEATURES]
    select = ColumnTransformer([("used", "passthrough", used)], remainder="drop", verbose_feature_names_out=False)
    clf = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.15, max_depth=4, min_samples_leaf=40,
                                         l2_regularization=1.0, early_stopping=False, random_state=seed)
    return Pipeline([("select", select), ("clf", clf)]).fit(feature_frame(features), label)


def predict(model: Any, features: Mapping[str, AnyArray]) -> FloatArray:
    """The model's positive-class probability for each row."""
    if len(next(iter(features.values()))) == 0:
        return np.zeros(0)
    return np.asarray(model.predict_proba(feature_frame(features))[:, 1], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class FraudWorld:
    """One fraud world: its fitted model, decision threshold, reference data and fraud mechanisms.

    Build it with :func:`fraud_world`, which caches one world per seed in the process.

    Attributes
    ----------
    seed
        The world's seed.
    model
        A scikit-learn pipeline whose ``predict_proba`` takes :func:`feature_frame` of the features.
    threshold
        Scores at or above it are alerts (``prediction`` 1); about 2 % of reference traffic.
    reference
        A held-out sample of the training distribution: segments, inputs, features, score, prediction, label.
    intercepts
        The calibrated intercept of each fraud mechanism (``None``: the one the model learnt; a
        :class:`DegradationKind`: one fraudsters adapted into), for a 1.5 % base rate.
    """

    seed: int
    model: Any
    threshold: float
    reference: pa.Table
    intercepts: Mapping[DegradationKind | None, float] = field(repr=False)

    def fraud_probability(self, inputs: Mapping[str, AnyArray], drift: DegradationKind | None = None) -> FloatArray:
        """P(fraud | true inputs) under the learnt mechanism, or under one fraudsters adapted into."""
        return _sigmoid(_raw_logit(inputs, drift) + self.intercepts[drift])

    def score(self, features: Mapping[str, AnyArray]) -> FloatArray:
        """The model's scores."""
        return predict(self.model, features)


_TRAINING_START = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1e6)


def _population_sample(rng: np.random.Generator, n: int, pop: Population = BASE_POPULATION) -> dict[str, AnyArray]:
    region, ts = sample_traffic(rng, n, _TRAINING_START, 28)
    return sample_inputs(rng, region, ts, pop)


@functools.lru_cache(maxsize=4)
def fraud_world(seed: int = 0) -> FraudWorld:
    """The fraud world of a seed: trained once per process, then reused.

    Examples
    --------
    >>> w = fraud_world(0)
    >>> 0.0 < w.threshold < 1.0 and w.reference.num_rows == REFERENCE_ROWS
    True
    """
    rng = np.random.default_rng([seed, 1])
    calib = _population_sample(rng, 100_000)
    intercepts = {d: _calibrate(_raw_logit(calib, d), BASE_RATE) for d in (None, *DegradationKind)}
    train = _population_sample(rng, TRAIN_ROWS)
    p = _sigmoid(_raw_logit(train) + intercepts[None])
    y = (rng.random(TRAIN_ROWS) < p).astype(np.int64)
    model = _train(compute_features(train), y, seed)
    ref = _population_sample(rng, REFERENCE_ROWS)
    ref_features = compute_features(ref)
    p_ref = _sigmoid(_raw_logit(ref) + intercepts[None])
    ref_label = (rng.random(REFERENCE_ROWS) < p_ref).astype(np.int64)
    score = predict(model, ref_features)
    threshold = float(np.round(np.quantile(score, 1.0 - ALERT_RATE), 4))
    cols: dict[str, Any] = {k: ref[k] for k in SEGMENT_COLUMNS}
    cols.update({k: ref[k] for k in INPUTS})
    cols.update(ref_features)
    cols.update({"score": score, "prediction": (score >= threshold).astype(np.int64), "label": ref_label})
    reference = pa.table({k: pa.array(v) for k, v in cols.items()})
    return FraudWorld(seed=seed, model=model, threshold=threshold, reference=reference, intercepts=intercepts)


@functools.lru_cache(maxsize=4)
def bad_model(seed: int = 0) -> Any:
    """A model version retrained on bad data: merchant risk broken (constant) and the ratio's source halved."""
    rng = np.random.default_rng([seed, 2])
    world = fraud_world(seed)
    train = _population_sample(rng, TRAIN_ROWS // 2)
    y = (rng.random(TRAIN_ROWS // 2) < world.fraud_probability(train)).astype(np.int64)
    broken = dict(train)
    broken["input.avg_amount_30d"] = train["input.avg_amount_30d"] * 0.5
    feats = compute_features(broken)
    feats["feature.merchant_risk"] = np.full(len(y), DEFAULT_MERCHANT_RISK)
    return _train(feats, y, seed + 1)


def to_us(ts: datetime) -> int:
    """A timezone-aware datetime as UTC microseconds since the epoch."""
    return round(ts.timestamp() * 1e6)


def from_us(us: int) -> datetime:
    """UTC microseconds since the epoch as an aware datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
