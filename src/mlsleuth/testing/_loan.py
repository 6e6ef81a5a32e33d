"""The loan-default world: ten weeks of credit decisions with a monthly cycle, labels that take weeks, a tree
ensemble that serves discrete scores, and column names without role prefixes (a model config names the roles)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlsleuth.testing._binary import BINARY_SCENARIOS, Arrays, BinaryWorld, Fault, build_world_case
from mlsleuth.testing._plan import DEFAULT_START
from mlsleuth.testing._regression import KindCase

__all__ = ["LOAN_SCENARIOS", "loan_case"]

#: Scenarios of :func:`loan_case` (the same for every binary world).
LOAN_SCENARIOS = BINARY_SCENARIOS

_EMPLOYMENT = np.array(["salaried", "self-employed", "contract", "retired"])
_EMP_RISK = {"salaried": 0.0, "self-employed": 0.6, "contract": 0.9, "retired": 0.3}
_CHANNELS = np.array(["branch", "online", "broker"])
_REGIONS = np.array(["northeast", "south", "midwest", "west"])
_INPUTS = ("applicant_income", "loan_amount", "monthly_debt", "credit_score", "employment_years", "employment_type",
           "inquiries_6m", "term_months", "time_on_page_s")
_FEATURES = ("dti", "lti", "credit_band", "emp_years_capped", "emp_type_risk", "recent_inquiries", "long_term")

_CONFIG = """\
# The loan team's model config: its columns carry no role prefixes.
name = "loan_default"
positive_class = 1
label_delay = "4w"
segments = ["channel", "region"]
fallback_score = 0.05

[roles]
application_id = "request_id"
decided_at = "time"
model_name = "model"
pd_score = "score"
predicted_default = "prediction"
serving_error = "error"
""" + "".join(f'{c} = "input"\n' for c in _INPUTS) + "".join(f'{c} = "feature"\n' for c in _FEATURES)

_LINEAGE = {
    "dti": ["monthly_debt", "applicant_income"],
    "lti": ["loan_amount", "applicant_income"],
    "credit_band": ["credit_score"],
    "emp_years_capped": ["employment_years"],
    "emp_type_risk": ["employment_type"],
    "recent_inquiries": ["inquiries_6m"],
    "long_term": ["term_months"],
    "applicant_income": ["source:bureau.income_verification"],
    "monthly_debt": ["source:bureau.tradelines"],
    "credit_score": ["source:bureau.scores"],
    "inquiries_6m": ["source:bureau.tradelines"],
    "employment_type": ["source:hr.employment_registry"],
    "employment_years": ["source:hr.employment_registry"],
}


def _steps(x: np.ndarray, edges: list[float], values: list[float], missing: float) -> np.ndarray:
    """A tree's split on one feature: piecewise constant, missing values sent down a fixed branch."""
    out = np.asarray(values, dtype=float)[np.digitize(np.nan_to_num(x, nan=-np.inf), edges)]
    return np.where(np.isnan(x), missing, out)


@dataclass(frozen=True)
class _Loan(BinaryWorld):
    def times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Busy by day and on weekdays, with a surge in the first days of each month (paydays)."""
        span = self.days * 86400.0
        t = rng.uniform(0, span, 5 * n)
        hour = (t % 86400) / 3600
        day = np.floor(t / 86400).astype(np.int64)
        dates = np.datetime64(DEFAULT_START.date()) + day.astype("timedelta64[D]")
        dom = (dates - dates.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
        weekday = (dates.astype(np.int64) + 3) % 7  # 0 = Monday
        w = ((0.15 + 0.85 * np.exp(-((hour - 13) / 4.5) ** 2)) * np.where(weekday >= 5, 0.45, 1.0)
             * (1 + 0.9 * np.exp(-((dom - 2) / 2.5) ** 2) + 0.4 * np.exp(-((dom - 15) / 1.5) ** 2)))
        keep = rng.uniform(0, w.max(), t.size) < w
        return np.sort(rng.choice(t[keep], n, replace=False))

    def onset(self, rng: np.random.Generator) -> float:
        # Changes land in working hours on a weekday, weeks before the end so their outcomes start to arrive.
        day = int(rng.integers(int(self.onset_days[0]), int(self.onset_days[1])))
        if day % 7 >= 5:  # a weekend (the log starts on a Monday): the next Monday
            day += 7 - day % 7
        return float(day * 86400 + np.floor(rng.uniform(9, 16) * 12) * 300)

    def population(self, rng: np.random.Generator, secs: np.ndarray) -> tuple[Arrays, Arrays]:
        n = secs.size
        income = np.round(rng.lognormal(8.35, 0.45, n), 0)
        emp = rng.choice(_EMPLOYMENT, n, p=[0.62, 0.18, 0.12, 0.08])
        inp: Arrays = {
            "applicant_income": income,
            "loan_amount": np.round(rng.lognormal(9.4, 0.6, n) / 50) * 50,
            "monthly_debt": np.round(income * rng.beta(2.2, 7, n), 0),
            "credit_score": np.clip(np.round(rng.normal(690, 65, n)), 300, 850).astype(np.int64),
            "employment_years": rng.poisson(5.5, n).astype(np.int64),
            "employment_type": emp.astype(object),
            "inquiries_6m": rng.poisson(1.1, n).astype(np.int64),
            "term_months": rng.choice(np.array([36, 60]), n, p=[0.6, 0.4]).astype(np.int64),
            "time_on_page_s": np.round(rng.lognormal(5.0, 0.5, n), 1),
        }
        segs: Arrays = {"channel": rng.choice(_CHANNELS, n, p=[0.3, 0.5, 0.2]),
                        "region": rng.choice(_REGIONS, n, p=[0.22, 0.35, 0.2, 0.23])}
        return inp, segs

    def features(self, inp: Arrays, segs: Arrays) -> Arrays:
        risk = np.array([_EMP_RISK.get(str(e), 0.0) for e in inp["employment_type"]])  # unknown: like salaried
        return {
            "dti": np.round(inp["monthly_debt"] / inp["applicant_income"], 3),
            "lti": np.round(inp["loan_amount"] / (12 * inp["applicant_income"]), 3),
            "credit_band": np.floor((inp["credit_score"] - 300) / 50).astype(float),
            "emp_years_capped": np.minimum(inp["employment_years"], 10).astype(float),
            "emp_type_risk": risk,
            "recent_inquiries": inp["inquiries_6m"].astype(float),
            "long_term": (inp["term_months"] == 60).astype(float),
        }

    def score(self, feats: Arrays, version: str, kind: str) -> np.ndarray:
        """A boosted ensemble of shallow trees: a sum of step functions, so scores repeat across applicants."""
        z = (-2.45
             + _steps(feats["dti"], [0.2, 0.3, 0.4, 0.5], [-0.55, -0.2, 0.2, 0.6, 1.0], -0.2)
             + _steps(feats["lti"], [0.25, 0.4, 0.6], [-0.35, 0.0, 0.35, 0.75], 0.0)
             + _steps(feats["credit_band"], [4, 6, 7, 8, 9], [1.3, 0.75, 0.3, 0.0, -0.35, -0.7], 0.0)
             + _steps(feats["emp_type_risk"], [0.5], [0.0, 0.45], 0.0)
             + _steps(feats["recent_inquiries"], [1, 3], [-0.1, 0.15, 0.55], 0.0)
             + _steps(feats["emp_years_capped"], [2], [0.3, -0.05], 0.0)
             + _steps(feats["long_term"], [0.5], [0.0, 0.25], 0.0))
        if version == self.versions[1]:
            if kind == "miscalibrated":
                z = z + 0.9
            else:  # retrained on a month whose dti was broken: it learned dti backwards
                z = z - 2 * _steps(feats["dti"], [0.2, 0.3, 0.4, 0.5], [-0.55, -0.2, 0.2, 0.6, 1.0], -0.2)
        return np.round(1 / (1 + np.exp(-z)), 4)

    def true_logit(self, inp: Arrays, segs: Arrays, concept: np.ndarray) -> np.ndarray:
        dti = inp["monthly_debt"] / inp["applicant_income"]
        lti = inp["loan_amount"] / (12 * inp["applicant_income"])
        risk = np.array([_EMP_RISK.get(str(e), 0.0) for e in inp["employment_type"]])
        z = (-2.55 + 2.8 * (dti - 0.25) + 1.6 * (lti - 0.3) - 0.011 * (inp["credit_score"] - 690)
             + 0.55 * risk + 0.2 * np.minimum(inp["inquiries_6m"], 5) + 0.25 * (inp["term_months"] == 60)
             - 0.03 * np.minimum(inp["employment_years"], 10))
        # A downturn hits incomes that are not salaried: defaults rise there while every input looks the same.
        return np.asarray(z + concept * (1.6 * (risk > 0.5) + 0.5))

    def upstream(self, rng: np.random.Generator, kind: str, inp: Arrays, hit: np.ndarray) -> Fault:
        if kind == "category":
            inp["employment_type"] = np.where(hit & (inp["employment_type"] == "self-employed"), "self_employed",
                                              inp["employment_type"]).astype(object)
            return Fault(("emp_type_risk",), ("employment_type",), "source:hr.employment_registry",
                         "employment_type value 'self-employed' renamed 'self_employed'")
        if rng.random() < 0.5:
            inp["applicant_income"] = np.where(hit, inp["applicant_income"] * 12, inp["applicant_income"])
            return Fault(("dti", "lti"), ("applicant_income",), "source:bureau.income_verification",
                         "applicant_income now reported per year instead of per month")
        inp["credit_score"] = np.where(hit, np.round(inp["credit_score"] * 1000 / 850), inp["credit_score"]).astype(
            np.int64)
        return Fault(("credit_band",), ("credit_score",), "source:bureau.scores",
                     "credit_score moved to the bureau's 0-1000 scale")

    def pipeline(self, rng: np.random.Generator, kind: str, feats: Arrays, hit: np.ndarray) -> Fault:
        if kind == "nulls":
            col = ("dti", "lti")[int(rng.integers(2))]
            feats[col] = np.where(hit, np.nan, feats[col])
            return Fault((col,), (), "job:loan_features_daily", f"{col} arrives null: a join lost its key")
        if rng.random() < 0.5:
            feats["recent_inquiries"] = np.where(hit, 0.0, feats["recent_inquiries"])
            return Fault(("recent_inquiries",), (), "job:bureau_sync", "recent_inquiries served as 0")
        feats["credit_band"] = np.where(hit, 7.0, feats["credit_band"])
        return Fault(("credit_band",), (), "job:bureau_sync", "credit_band frozen at a stale value")

    def skew(self, rng: np.random.Generator, inp: Arrays, feats: Arrays, hit: np.ndarray) -> Fault:
        if rng.random() < 0.5:
            feats["lti"] = np.where(hit, np.round(inp["loan_amount"] / inp["applicant_income"], 3), feats["lti"])
            return Fault(("lti",), (), description="serving computes lti against monthly income, training yearly")
        feats["credit_band"] = np.where(hit, np.floor((inp["credit_score"] - 300) / 100), feats["credit_band"])
        return Fault(("credit_band",), (), description="serving bins credit_score by 100 points, training by 50")

    def shift_segment(self, rng: np.random.Generator) -> tuple[str, str]:
        return ("channel", "broker")

    def shift(self, rng: np.random.Generator, inp: Arrays, segs: Arrays, hit: np.ndarray) -> Fault:
        k = int(hit.sum())
        inp["credit_score"] = inp["credit_score"].copy()
        inp["credit_score"][hit] = np.clip(np.round(rng.normal(615, 55, k)), 300, 850).astype(np.int64)
        inp["loan_amount"] = np.where(hit, np.round(inp["loan_amount"] * 1.6 / 50) * 50, inp["loan_amount"])
        return Fault(("credit_band", "lti"), ("credit_score", "loan_amount"), "marketing:broker_partnership",
                     "a broker partnership brings applicants with lower credit scores and larger loans")

    def drift(self, rng: np.random.Generator, inp: Arrays, hit: np.ndarray) -> Fault:
        inp["time_on_page_s"] = np.where(hit, np.round(inp["time_on_page_s"] * 1.8, 1), inp["time_on_page_s"])
        return Fault((), ("time_on_page_s",), "site:application_form",
                     "the application form was redesigned: applicants spend longer on it")


_WORLD = _Loan(
    name="loan", model="loan_default", salt=5_107, days=70, rows=(30_000, 80_001), onset_days=(21, 43),
    versions=("2025.11", "2026.02"), threshold=0.2, label_delay=(14 * 86400.0, 42 * 86400.0),
    names={"request_id": "application_id", "ts": "decided_at", "model": "model_name",
           "model_version": "model_version", "score": "pd_score", "prediction": "predicted_default",
           "latency_ms": "latency_ms", "error": "serving_error"},
    fault_segments=(("channel", "online"), ("channel", "broker"), ("region", "south"), ("region", "west")),
    fallback_score=0.05, config=_CONFIG, lineage=_LINEAGE,
    noise_targets=(("config", "service:underwriting-ui"), ("pipeline", "job:collections_rollup")),
    decoy_targets=("model:loan_limit", "service:document-ocr"), serving_target="service:credit-scoring",
    # A downturn has no single minute it began, and defaults surface weeks later: no onset an expert could name.
    always_gradual=frozenset({"degradation"}),
)


def loan_case(scenario: str, seed: int, rows: int | None = None) -> KindCase:
    """Ten weeks of a loan-default model's decisions with one scenario planted (docs/contract.md's CASE_DIR).

    The world: applications by day and on weekdays, surging in the first days of each month; early-default labels
    arrive two to six weeks after the decision (so recent weeks are only partly labelled); a tree ensemble whose
    scores repeat (``pd_score``); columns named without role prefixes (``applicant_income``, ``dti``), with a model
    config (``model.toml``) giving their roles, the segments ``channel`` and ``region``, the fallback score and
    the label delay.

    Parameters
    ----------
    scenario
        One of :data:`LOAN_SCENARIOS`: ``healthy``; ``healthy_drift`` (an unused input drifts after a logged form
        redesign); ``upstream_scale`` (income reported per year, or the credit score on another scale);
        ``upstream_category`` (an employment type renamed); ``pipeline_nulls`` and ``pipeline_constant`` (a feature
        null, zero or frozen); ``skew`` (serving computes a feature differently, from a feature-server release or
        from the first request); ``shift`` (a broker campaign brings riskier applicants); ``degradation`` (a
        downturn raises defaults of the self-employed over one to two weeks: no single onset); ``model_change`` (a
        new version, miscalibrated or trained on broken data); ``infra_errors``, ``infra_latency``,
        ``infra_fallback``. The seed also decides whether a fault is confined to one segment, whether a shift or a
        latency rise arrives gradually, and which events are logged.
    seed
        The random seed; the same seed gives the same case.
    rows
        Applications in the ten weeks (default: 30,000 to 80,000, from the seed).

    Returns
    -------
    KindCase
        The case, its model config and its truth.

    Raises
    ------
    ConfigError
        When the scenario is unknown or ``rows`` is below 1,000.

    Examples
    --------
    >>> case = loan_case("upstream_scale", seed=3, rows=3_000)
    >>> case.truth.cause.value, "pd_score" in case.log.column_names
    ('upstream_data_change', True)
    """
    return build_world_case(_WORLD, scenario, seed, rows)
