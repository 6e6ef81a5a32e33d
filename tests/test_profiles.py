"""Profiles are monoids (hypothesis), serialise losslessly and feed drift decisions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlsleuth.errors import InputError, ReadError
from mlsleuth.profiles import (
    FORMAT_VERSION,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    drift,
    edges_from_reference,
    profile_categorical,
    profile_like,
    profile_numeric,
    profile_reference,
)
from mlsleuth.stats import DriftMethod

EDGES = (-10.0, -1.0, 0.0, 0.5, 2.0, 100.0)
numbers = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, -10.0, 100.0, math.nan, math.inf, -math.inf]),
)
samples = st.lists(numbers, max_size=40)
words = st.lists(st.one_of(st.sampled_from(["EU", "US", "APAC", "", "0"]), st.none(), st.text(max_size=3)), max_size=40)
VOCAB = ("EU", "US", "0")


@settings(max_examples=150, deadline=None)
@given(samples, samples, samples)
def test_numeric_profiles_are_a_monoid(a: list[float], b: list[float], c: list[float]) -> None:
    pa_, pb, pc = (profile_numeric(x, EDGES) for x in (a, b, c))
    assert pa_.merge(pb) == profile_numeric(a + b, EDGES)
    assert NumericProfile.zero(EDGES).merge(pa_) == pa_ == pa_.merge(NumericProfile.zero(EDGES))
    assert pa_.merge(pb).merge(pc) == pa_.merge(pb.merge(pc))
    assert NumericProfile.from_dict(json.loads(json.dumps(pa_.to_dict()))) == pa_


@settings(max_examples=150, deadline=None)
@given(words, words, words, st.booleans())
def test_categorical_profiles_are_a_monoid(
    a: list[str | None], b: list[str | None], c: list[str | None], closed: bool
) -> None:
    vocab = VOCAB if closed else None
    pa_, pb, pc = (profile_categorical(x, vocabulary=vocab) for x in (a, b, c))
    assert pa_.merge(pb) == profile_categorical(a + b, vocabulary=vocab)
    assert CategoricalProfile.zero(vocab).merge(pa_) == pa_ == pa_.merge(CategoricalProfile.zero(vocab))
    assert pa_.merge(pb).merge(pc) == pa_.merge(pb.merge(pc))
    # an open window merged into a closed reference-vocabulary profile is projected first
    assert profile_categorical(a).merge(pb.restricted(VOCAB)) == profile_categorical(a + b, vocabulary=VOCAB)
    assert CategoricalProfile.from_dict(json.loads(json.dumps(pa_.to_dict()))) == pa_


def test_numeric_profile_counts_nulls_zeros_and_outer_bins() -> None:
    p = profile_numeric(pa.array([None, 0.0, -20.0, 100.0, 150.0, float("nan"), 1.0]), EDGES)
    assert p.counts == (1, 0, 0, 1, 1, 1, 1)  # 100.0 closes the last inner bin; 150 overflows
    assert (p.nulls, p.zeros, p.count, p.rows) == (2, 1, 5, 7)
    assert p.null_rate == pytest.approx(2 / 7)
    assert (p.min, p.max) == (-20.0, 150.0)
    assert p.mean == pytest.approx(np.mean([0.0, -20.0, 100.0, 150.0, 1.0]))
    assert p.std == pytest.approx(np.std([0.0, -20.0, 100.0, 150.0, 1.0]))


def test_from_counts_builds_the_same_profile_as_raw_values() -> None:
    values = np.array([0.0, 0.2, 1.0, 3.0, -50.0])
    p = profile_numeric(values, EDGES)
    q = NumericProfile.from_counts(
        EDGES, np.array(p.counts), nulls=0, zeros=1, total=values.sum(), total_sq=(values**2).sum(),
        min=-50.0, max=3.0,
    )  # fmt: skip
    assert p == q


def test_quantiles_are_within_one_reference_bin() -> None:
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=20_000)
    p = profile_numeric(x, edges_from_reference(x, n_bins=20))
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        assert abs(np.mean(x <= p.quantile(q)) - q) <= 1 / 20, q
    assert p.quantile(0.0) == x.min() and p.quantile(1.0) == x.max()


def test_edges_are_deduplicated_and_a_constant_column_still_has_a_bin() -> None:
    e = edges_from_reference(np.r_[np.zeros(90), np.arange(10.0)], n_bins=10)
    assert len(set(e)) == len(e) and e[0] == 0.0 and e[-1] == 9.0
    const = edges_from_reference([5.0] * 10)
    assert const[0] == 5.0 and len(const) == 2
    assert profile_numeric([5.0, 5.0, 6.0], const).counts == (0, 2, 1)


def test_merging_profiles_on_different_edges_or_vocabularies_fails_clearly() -> None:
    with pytest.raises(InputError, match="different edges"):
        NumericProfile.zero((0.0, 1.0)).merge(NumericProfile.zero((0.0, 2.0)))
    with pytest.raises(InputError, match="different vocabularies"):
        CategoricalProfile.zero(["a"]).merge(CategoricalProfile.zero(["b"]))


def test_capped_reference_keeps_the_top_values_and_counts_the_rest_as_other() -> None:
    p = profile_categorical(["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"]).capped(2)
    assert p.values == ("a", "b") and p.other == 4 and p.closed  # b wins the tie with c by name
    window = profile_categorical(["a", "z", "z", None], vocabulary=p.values)
    assert (window.counts, window.other, window.nulls) == ((1, 0), 2, 1)
    assert window.other_rate == pytest.approx(2 / 3)


def test_reference_profile_round_trips_through_json_and_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "feature.amount": rng.lognormal(size=1000),
            "feature.count": rng.integers(0, 5, size=1000),
            "region": rng.choice(["EU", "US", "APAC"], size=1000),
            "flag": rng.integers(0, 2, size=1000).astype(bool),
        }
    )
    ref = profile_reference(table, version="train-1", created_at="2026-03-01T00:00:00+00:00")
    assert isinstance(ref["feature.amount"], NumericProfile)
    assert isinstance(ref["region"], CategoricalProfile) and isinstance(ref["flag"], CategoricalProfile)
    assert ref.rows == 1000 and len(ref) == 4
    assert json.loads(ref.to_json())["format_version"] == FORMAT_VERSION
    path = ref.save(tmp_path / "ref.json")
    assert ReferenceProfile.load(path) == ref
    assert ReferenceProfile.zero().merge(ref) == ref
    with pytest.raises(InputError, match=r"no column 'feature\.nope'"):
        ref["feature.nope"]


def test_loading_a_newer_or_broken_profile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "new.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "columns": {}}))
    with pytest.raises(ReadError, match="format_version"):
        ReferenceProfile.load(tmp_path / "new.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReadError, match=r"bad\.json"):
        ReferenceProfile.load(tmp_path / "bad.json")


def test_drift_on_profiles_finds_a_shift_an_unseen_category_and_nothing_when_unchanged() -> None:
    rng = np.random.default_rng(2)
    ref = profile_reference({"x": rng.normal(size=50_000), "c": rng.choice(["a", "b", "c"], size=50_000)})
    same_x = profile_like(ref["x"], rng.normal(size=5_000))
    moved_x = profile_like(ref["x"], rng.normal(0.2, 1, size=5_000))
    assert not drift(ref["x"], same_x).drifted
    assert drift(ref["x"], moved_x).drifted
    assert drift(ref["x"], moved_x, method=DriftMethod.WASSERSTEIN).statistic == pytest.approx(0.2, abs=0.05)
    new_value = profile_like(ref["c"], rng.choice(["a", "b", "c", "zz"], p=[0.32, 0.32, 0.32, 0.04], size=5_000))
    result = drift(ref["c"], new_value)
    assert result.drifted and result.n_bins == 4
    assert not drift(ref["c"], profile_like(ref["c"], rng.choice(["a", "b", "c"], size=5_000))).drifted
