"""The ad click-through world: a week of high-volume ad impressions with daily and weekly cycles, click labels that
arrive within minutes, a logistic model with continuous scores, and canary rollouts of new versions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlsleuth.testing._binary import BINARY_SCENARIOS, Arrays, BinaryWorld, Fault, build_world_case
from mlsleuth.testing._regression import KindCase

__all__ = ["ADS_SCENARIOS", "ads_case"]

#: Scenarios of :func:`ads_case` (the same for every binary world).
ADS_SCENARIOS = BINARY_SCENARIOS

_CATEGORIES = np.array(["retail", "travel", "finance", "gaming", "auto"])
_AFFINITY = {"retail": 0.15, "travel": 0.35, "finance": -0.25, "gaming": 0.45, "auto": -0.1}
_PLACEMENTS = np.array(["feed", "search", "sidebar"])
_DEVICES = np.array(["ios", "android", "desktop"])
_COUNTRIES = np.array(["US", "GB", "DE", "FR", "BR", "IN"])

_LINEAGE = {
    "feature.logit_ad_ctr": ["input.ad_ctr_hist"],
    "feature.logit_user_ctr": ["input.user_ctr_hist"],
    "feature.log_bid": ["input.bid_cents"],
    "feature.slot": ["input.position"],
    "feature.category_affinity": ["input.ad_category"],
    "input.ad_ctr_hist": ["source:ads.ctr_daily"],
    "input.user_ctr_hist": ["source:users.engagement"],
    "input.bid_cents": ["source:ads.auction"],
    "input.ad_category": ["source:ads.catalog"],
}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-4, 1 - 1e-4)
    return np.asarray(np.log(q / (1 - q)))


@dataclass(frozen=True)
class _Ads(BinaryWorld):
    def times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Busy in the evening, busier on the weekend."""
        span = self.days * 86400.0
        t = rng.uniform(0, span, 4 * n)
        hour = (t % 86400) / 3600
        weekday = np.floor(t / 86400).astype(np.int64) % 7  # the log starts on a Monday
        w = (0.25 + 0.75 * np.exp(-((hour - 20) / 4) ** 2) + 0.3 * np.exp(-((hour - 12.5) / 2) ** 2)) * np.where(
            weekday >= 5, 1.35, 1.0)
        keep = rng.uniform(0, w.max(), t.size) < w
        return np.sort(rng.choice(t[keep], n, replace=False))

    def population(self, rng: np.random.Generator, secs: np.ndarray) -> tuple[Arrays, Arrays]:
        n = secs.size
        segs: Arrays = {"placement": rng.choice(_PLACEMENTS, n, p=[0.55, 0.3, 0.15]),
                        "device": rng.choice(_DEVICES, n, p=[0.35, 0.4, 0.25]),
                        "country": rng.choice(_COUNTRIES, n, p=[0.35, 0.12, 0.12, 0.1, 0.16, 0.15])}
        inp: Arrays = {
            "input.bid_cents": np.round(rng.lognormal(3.9, 0.5, n), 1),
            "input.ad_ctr_hist": np.round(rng.beta(2.5, 80, n), 5),
            "input.user_ctr_hist": np.round(rng.beta(1.6, 55, n), 5),
            "input.position": np.minimum(rng.geometric(0.45, n), 6).astype(np.int64),
            "input.ad_category": rng.choice(_CATEGORIES, n, p=[0.35, 0.15, 0.15, 0.2, 0.15]).astype(object),
            "input.page_load_ms": np.round(rng.lognormal(6.2, 0.3, n), 0),
        }
        return inp, segs

    def features(self, inp: Arrays, segs: Arrays) -> Arrays:
        return {
            "feature.logit_ad_ctr": np.round(_logit(inp["input.ad_ctr_hist"]), 4),
            "feature.logit_user_ctr": np.round(_logit(inp["input.user_ctr_hist"]), 4),
            "feature.log_bid": np.round(np.log(inp["input.bid_cents"]), 4),
            "feature.slot": inp["input.position"].astype(float),
            "feature.category_affinity": np.array([_AFFINITY.get(str(c), 0.0) for c in inp["input.ad_category"]]),
            "feature.is_mobile": (segs["device"] != "desktop").astype(float),
        }

    def score(self, feats: Arrays, version: str, kind: str) -> np.ndarray:
        """Logistic regression; a missing feature is imputed with its training mean, as the serving code does."""
        means = {"feature.logit_ad_ctr": -3.5, "feature.logit_user_ctr": -3.6, "feature.log_bid": 3.9,
                 "feature.slot": 2.0, "feature.category_affinity": 0.15, "feature.is_mobile": 0.75}
        f = {k: np.where(np.isnan(v), means[k], v) for k, v in feats.items()}
        w_user = 0.45
        if version == self.versions[1] and kind == "bad_training":
            w_user = -0.1  # trained while the user CTR join was broken: it learned nothing from it
        z = (0.35 + 0.75 * (f["feature.logit_ad_ctr"] + 3.5) + w_user * (f["feature.logit_user_ctr"] + 3.6) - 3.6
             + 0.12 * (f["feature.log_bid"] - 3.9) - 0.28 * (f["feature.slot"] - 1) + f["feature.category_affinity"]
             + 0.2 * f["feature.is_mobile"])
        if version == self.versions[1] and kind == "miscalibrated":
            z = z + 0.8
        return np.round(1 / (1 + np.exp(-z)), 6)

    def true_logit(self, inp: Arrays, segs: Arrays, concept: np.ndarray) -> np.ndarray:
        f = self.features(inp, segs)
        z = (0.35 + 0.8 * (f["feature.logit_ad_ctr"] + 3.5) + 0.45 * (f["feature.logit_user_ctr"] + 3.6) - 3.6
             + 0.1 * (f["feature.log_bid"] - 3.9) - 0.3 * (f["feature.slot"] - 1) + f["feature.category_affinity"]
             + 0.2 * f["feature.is_mobile"])
        # Ad fatigue and a privacy change: the user's history stops predicting clicks, and clicks fall.
        return np.asarray(z - concept * (0.45 * (f["feature.logit_user_ctr"] + 3.6) + 0.9))

    def upstream(self, rng: np.random.Generator, kind: str, inp: Arrays, hit: np.ndarray) -> Fault:
        if kind == "category":
            inp["input.ad_category"] = np.where(hit & (inp["input.ad_category"] == "gaming"), "games",
                                                inp["input.ad_category"]).astype(object)
            return Fault(("feature.category_affinity",), ("input.ad_category",), "source:ads.catalog",
                         "ad_category value 'gaming' renamed 'games'")
        if rng.random() < 0.5:
            inp["input.ad_ctr_hist"] = np.where(hit, np.round(inp["input.ad_ctr_hist"] * 100, 3),
                                                inp["input.ad_ctr_hist"])
            return Fault(("feature.logit_ad_ctr",), ("input.ad_ctr_hist",), "source:ads.ctr_daily",
                         "ad_ctr_hist now sent in percent")
        inp["input.bid_cents"] = np.where(hit, np.round(inp["input.bid_cents"] / 100, 3), inp["input.bid_cents"])
        return Fault(("feature.log_bid",), ("input.bid_cents",), "source:ads.auction", "bids now sent in dollars")

    def pipeline(self, rng: np.random.Generator, kind: str, feats: Arrays, hit: np.ndarray) -> Fault:
        if kind == "nulls":
            feats["feature.logit_user_ctr"] = np.where(hit, np.nan, feats["feature.logit_user_ctr"])
            return Fault(("feature.logit_user_ctr",), (), "job:user_engagement_sync",
                         "logit_user_ctr arrives null: the user lookup lost its key")
        stale = float(np.median(feats["feature.logit_ad_ctr"]))
        feats["feature.logit_ad_ctr"] = np.where(hit, round(stale, 4), feats["feature.logit_ad_ctr"])
        return Fault(("feature.logit_ad_ctr",), (), "job:ctr_daily_refresh",
                     "logit_ad_ctr frozen at one stale value: the refresh job stopped")

    def skew(self, rng: np.random.Generator, inp: Arrays, feats: Arrays, hit: np.ndarray) -> Fault:
        if rng.random() < 0.5:
            feats["feature.log_bid"] = np.where(hit, np.round(np.log10(inp["input.bid_cents"]), 4),
                                                feats["feature.log_bid"])
            return Fault(("feature.log_bid",), (), description="serving takes log10 of the bid, training ln")
        feats["feature.slot"] = np.where(hit, feats["feature.slot"] - 1, feats["feature.slot"])
        return Fault(("feature.slot",), (), description="serving counts ad slots from 0, training from 1")

    def shift_segment(self, rng: np.random.Generator) -> tuple[str, str]:
        return ("device", "android")

    def shift(self, rng: np.random.Generator, inp: Arrays, segs: Arrays, hit: np.ndarray) -> Fault:
        k = int(hit.sum())
        inp["input.user_ctr_hist"] = inp["input.user_ctr_hist"].copy()
        inp["input.user_ctr_hist"][hit] = np.round(rng.beta(1.2, 110, k), 5)
        return Fault(("feature.logit_user_ctr",), ("input.user_ctr_hist",), "marketing:android_install_campaign",
                     "an install campaign brings new Android users who rarely click")

    def drift(self, rng: np.random.Generator, inp: Arrays, hit: np.ndarray) -> Fault:
        inp["input.page_load_ms"] = np.where(hit, np.round(inp["input.page_load_ms"] * 1.6, 0),
                                             inp["input.page_load_ms"])
        return Fault((), ("input.page_load_ms",), "service:cdn", "a CDN migration: publisher pages load slower")


_WORLD = _Ads(
    name="ads", model="ctr", salt=7_919, days=7, rows=(60_000, 100_001), onset_days=(2.5, 5.0),
    versions=("v31", "v32"), threshold=0.05, label_delay=(20.0, 1800.0),
    names={"request_id": "request_id", "ts": "ts", "model": "model", "model_version": "model_version",
           "score": "score", "prediction": "prediction", "latency_ms": "latency_ms", "error": "error"},
    fault_segments=(("device", "ios"), ("placement", "search"), ("country", "DE"), ("country", "BR")),
    fallback_score=0.02, reference_rows=20_000, lineage=_LINEAGE,
    noise_targets=(("config", "service:advertiser-portal"), ("pipeline", "job:billing_rollup")),
    decoy_targets=("model:ctr_video", "service:auction", "model:bid_shading"), serving_target="service:ctr-serving",
)


def ads_case(scenario: str, seed: int, rows: int | None = None) -> KindCase:
    """A week of an ad click-through model's impressions with one scenario planted (docs/contract.md's CASE_DIR).

    The world: high volume, busiest in the evening and on the weekend; click labels within half an hour of the
    impression (so every hour is labelled); a logistic model with continuous scores around 3 %; segments
    ``placement``, ``device`` and ``country``; the contract's ``input.``/``feature.`` names; new versions often go
    out as a canary.

    Parameters
    ----------
    scenario
        One of :data:`ADS_SCENARIOS` (as :func:`mlsleuth.testing.loan_case`): ``upstream_scale`` (the historical
        CTR in percent, or bids in dollars); ``upstream_category`` (a category renamed); ``pipeline_nulls`` (the user
        CTR lookup fails); ``pipeline_constant`` (the ad CTR frozen); ``skew`` (log10 for ln, or 0-based slots);
        ``shift`` (an install campaign brings Android users who rarely click); ``degradation`` (clicks fall and the
        user history stops predicting them); ``model_change`` (a new version, full or as a canary); ``infra_*``;
        ``healthy`` and ``healthy_drift`` (page load time drifts after a CDN migration).
    seed
        The random seed; the same seed gives the same case.
    rows
        Impressions in the week (default: 60,000 to 100,000, from the seed).

    Returns
    -------
    KindCase
        The case and its truth.

    Raises
    ------
    ConfigError
        When the scenario is unknown or ``rows`` is below 1,000.

    Examples
    --------
    >>> case = ads_case("pipeline_nulls", seed=2, rows=3_000)
    >>> case.truth.cause.value, case.truth.features
    ('silent_pipeline_failure', ('feature.logit_user_ctr',))
    """
    return build_world_case(_WORLD, scenario, seed, rows)
