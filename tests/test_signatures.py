"""The signature contract (every registered cause, on its own hand-built examples) and the arbitration rules."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import duckdb
import pytest

from mlsleuth.diagnosis import Cause, Hypothesis
from mlsleuth.diagnosis import _arbitration as rules
from mlsleuth.diagnosis._rank import SCORE_CAP, rank
from mlsleuth.diagnosis._runbooks import runbook_steps
from mlsleuth.diagnosis.signatures import REGISTRY, Candidate, Signature, context, is_material, match_all
from mlsleuth.diagnosis.signatures._base import terms
from mlsleuth.diagnosis.signatures._examples import column, metric, scope
from mlsleuth.schema import Role
from mlsleuth.store import _sql_hypotheses as sql

EXAMPLES = [(s, ex) for s in REGISTRY for ex in s.examples()]


def _ids(p: object) -> str:
    return p.cause.value if isinstance(p, Signature) else ""


# --- the contract every registered signature keeps -------------------------------------------------------------


def test_every_cause_has_exactly_one_signature() -> None:
    causes = [s.cause for s in REGISTRY]
    assert len(causes) == len(set(causes))
    assert set(causes) == set(Cause)


@pytest.mark.parametrize("sig", REGISTRY, ids=_ids)
def test_signature_declares_a_layer_a_runbook_and_examples_both_ways(sig: Signature) -> None:
    assert sig.layer in ("serving", "model", "features", "inputs")
    shipped = resources.files("mlsleuth.diagnosis") / "runbooks" / f"{sig.cause.value}.md"
    assert shipped.is_file()
    assert runbook_steps(sig.cause)
    fires = [ex.fires for ex in sig.examples()]
    assert True in fires and False in fires


@pytest.mark.parametrize(("sig", "ex"), EXAMPLES, ids=[f"{s.cause.value}: {ex.name}" for s, ex in EXAMPLES])
def test_signature_fires_only_on_its_examples(sig: Signature, ex: object) -> None:
    tr = ex.triage  # type: ignore[attr-defined]
    found = [c for c in match_all(tr)[0] if c.cause is sig.cause]
    if not ex.fires:  # type: ignore[attr-defined]
        assert not [c for c in found if is_material(tr, c)]
        return
    assert found
    again = [c for c in match_all(tr)[0] if c.cause is sig.cause]
    assert found == again  # deterministic
    for c in found:
        assert is_material(tr, c)
        assert c.terms and all(t.name for t in c.terms)
        assert c.score == sum(t.value for t in c.terms)
        assert 0.0 < c.score <= 1.5
        assert c.evidence and all(c.evidence)


def test_the_column_layer_classifies_each_changed_feature_once() -> None:
    tr = scope(metrics=[metric("positive_rate", "model", before=0.05, after=0.08)],
               columns=[column("feature.amount", null_before=0.0, null_after=0.4),
                        column("feature.age", shift=0.4), column("input.country", role=Role.INPUT, at=None)])
    ctx = context(tr)
    causes = {c.features[0]: c.cause for c in ctx.columns}
    assert causes == {"feature.amount": Cause.SILENT_PIPELINE_FAILURE, "feature.age": Cause.TRAINING_SERVING_SKEW}
    per_signature = [c for s in REGISTRY for c in s.match(tr, ctx) if c.features]
    assert sorted(c.features[0] for c in per_signature) == ["feature.age", "feature.amount"]


def test_the_fallback_is_offered_only_when_nothing_matched() -> None:
    moved = metric("positive_rate", "model", before=0.05, after=0.08)
    alone = match_all(scope(metrics=[moved]))[0]
    assert [(c.cause, c.terms[0].name) for c in alone] == [(Cause.DISTRIBUTION_SHIFT, "unlogged_shift")]
    with_feature = match_all(scope(metrics=[moved], columns=[column("feature.amount")]))[0]
    assert "unlogged_shift" not in {t.name for c in with_feature for t in c.terms}


# --- arbitration rules on hand-built candidates ----------------------------------------------------------------


def _cand(cause: Cause, score: float, onset: int | None = 48, **kw: object) -> Candidate:
    return Candidate(cause, onset, terms(("prior", score)), **kw)  # type: ignore[arg-type]


def test_focus_symptom_raises_only_candidates_timed_with_the_symptom() -> None:
    tr = scope(metrics=[metric("recall", "quality", before=0.8, after=0.6, at=50)])
    near, far, untimed = _cand(Cause.MODEL_DEGRADATION, 0.5, 48), _cand(Cause.MODEL_DEGRADATION, 0.5, 10), \
        _cand(Cause.TRAINING_SERVING_SKEW, 0.5, None)
    got = rules.focus_symptom(tr, [near, far, untimed], "recall")
    assert [t.name for t in got[0].terms] == ["prior", "matches_symptom"]
    assert got[0].score == pytest.approx(0.5 + rules.SYMPTOM_WEIGHT)
    assert got[1:] == [far, untimed]
    assert rules.focus_symptom(tr, [near], "no_such_metric") == [near]


def test_merge_keeps_the_strongest_and_gathers_culprits() -> None:
    tr = scope()
    weak = _cand(Cause.UPSTREAM_DATA_CHANGE, 0.5, 49, features=("feature.b",), evidence=("b moved",), material=True)
    strong = _cand(Cause.UPSTREAM_DATA_CHANGE, 0.7, 48, features=("feature.a",), evidence=("a moved",),
                   material=True)
    other = _cand(Cause.MODEL_CHANGE, 0.6, 48, evidence=("v2",), material=True)
    late = _cand(Cause.UPSTREAM_DATA_CHANGE, 0.4, 80, features=("feature.c",), material=True)
    merged = rules.merge_same_cause(tr, [weak, other, strong, late])
    assert [c.cause for c in merged] == [Cause.UPSTREAM_DATA_CHANGE, Cause.MODEL_CHANGE, Cause.UPSTREAM_DATA_CHANGE]
    assert merged[0].features == ("feature.a", "feature.b") and merged[0].evidence == ("a moved", "b moved")
    assert merged[0].score == 0.7 and merged[2].features == ("feature.c",)


def test_immaterial_candidates_become_findings_behind_a_material_one() -> None:
    kept, findings = rules.drop_immaterial([_cand(Cause.MODEL_CHANGE, 0.8, material=True, evidence=("v2",)),
                                            _cand(Cause.DISTRIBUTION_SHIFT, 0.6, inputs=("input.x",),
                                                  evidence=("input.x drifted",))])
    assert [c.cause for c in kept] == [Cause.MODEL_CHANGE]
    assert [(f.column, f.message) for f in findings] == [("input.x", "input.x drifted (no effect on the model's "
                                                                   "outputs)")]
    none_material = [_cand(Cause.DISTRIBUTION_SHIFT, 0.6)]
    assert rules.drop_immaterial(none_material) == (none_material, [])


def test_raising_to_a_score_is_exact_and_named() -> None:
    for start in (0.0, 0.3, 0.1 + 0.2, 0.45, 0.95):
        c = rules._raised_to(_cand(Cause.MODEL_CHANGE, start), 0.9, "model_rescoring_changed")
        assert c.score == pytest.approx(max(start, 0.9), abs=1e-15)
        assert (c.terms[-1].name == "model_rescoring_changed") == (start < 0.9)


def test_a_domain_break_settles_a_shift_as_upstream_and_says_why() -> None:
    broke = column("input.amount", role=Role.INPUT, oor_after=0.2)
    tr = scope(columns=[broke])
    c = _cand(Cause.DISTRIBUTION_SHIFT, 0.6, inputs=("input.amount",), evidence=("input.amount moved",))
    got = rules.settle_cause(tr, c, tr.time_of(48), [], tr.starts[0])
    assert got.cause is Cause.UPSTREAM_DATA_CHANGE
    assert got.evidence[0] == "input.amount moved" and "never had" in got.evidence[-1]
    assert got.terms == c.terms
    calm = scope(columns=[column("input.amount", role=Role.INPUT)])
    assert rules.settle_cause(calm, c, calm.time_of(48), [], calm.starts[0]) == c  # no labels, no events: kept


def test_slices_that_repeat_a_whole_traffic_candidate_are_dropped() -> None:
    tr = scope()
    whole = _cand(Cause.UPSTREAM_DATA_CHANGE, 0.7, 48, features=("feature.a",), material=True)
    same = _cand(Cause.UPSTREAM_DATA_CHANGE, 0.8, 49, features=("feature.a",), material=True)
    elsewhere = _cand(Cause.UPSTREAM_DATA_CHANGE, 0.8, 49, features=("feature.b",), material=True)
    tol = tr.th.windows(tr.th.near_hours, tr.window, at_least=2)
    assert rules._duplicates(same, [whole], tol=tol)
    assert not rules._duplicates(elsewhere, [whole], tol=tol)
    assert not rules._duplicates(replace(same, onset_index=48 + tol + 1), [whole], tol=tol)


# --- ranking ---------------------------------------------------------------------------------------------------


def test_rank_orders_by_the_sum_of_terms_and_exposes_them() -> None:
    low, high = _cand(Cause.DISTRIBUTION_SHIFT, 0.4), _cand(Cause.MODEL_CHANGE, 0.5).scored("change_event", 0.2)
    hyp = Hypothesis(Cause.DISTRIBUTION_SHIFT, 0.0, None)
    got = rank([(low, hyp), (high, replace(hyp, cause=Cause.MODEL_CHANGE))])
    assert [h.cause for h in got] == [Cause.MODEL_CHANGE, Cause.DISTRIBUTION_SHIFT]
    assert [t.name for t in got[0].score_terms] == ["prior", "change_event"]
    assert got[0].confidence == pytest.approx(0.7, abs=1e-3) and got[1].confidence < got[0].confidence
    assert got[0].to_dict()["score_terms"] == [{"term": "prior", "value": 0.5}, {"term": "change_event", "value": 0.2}]
    capped = rank([(_cand(Cause.MODEL_CHANGE, 0.8).scored("x", 0.5), hyp)])
    assert capped[0].confidence == SCORE_CAP


# --- the query builders --------------------------------------------------------------------------------------


def test_signal_builders_quote_names_and_values_that_came_from_data() -> None:
    con = duckdb.connect()
    con.execute("""CREATE TABLE log AS SELECT * FROM (VALUES ('v''2', 1.0), ('v1', NULL)) t(model_version, "a""b")""")
    got = con.execute(f"SELECT {sql.served_by('v' + chr(39) + '2')} AS s, {sql.is_null('a' + chr(34) + 'b')} AS n "
                      "FROM log ORDER BY 1 DESC").fetchall()
    assert got == [(1.0, 0.0), (0.0, 1.0)]


def test_the_diagnosis_package_stays_readable_and_runs_no_sql_of_its_own() -> None:
    """No function over 80 lines, and no SQL statement text: queries come from the store's builders."""
    import ast
    import re
    from pathlib import Path

    import mlsleuth.diagnosis as pkg

    statement = re.compile(r"^\s*(SELECT|WITH)\s|\bSELECT\b.+\bFROM\b", re.DOTALL)  # SQL as the builders write it
    long, sql = [], []
    for path in Path(pkg.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(d.body[0].value) for d in ast.walk(tree)  # docstrings
                if isinstance(d, ast.Module | ast.FunctionDef | ast.ClassDef) and d.body
                and isinstance(d.body[0], ast.Expr) and isinstance(d.body[0].value, ast.Constant)}
        skip |= {id(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call) and c.args  # regular expressions
                 and isinstance(c.func, ast.Attribute) and c.func.attr == "compile"}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None \
                    and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.name}:{node.name}")
            if id(node) in skip:
                continue
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else (
                "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
                if isinstance(node, ast.JoinedStr) else "")
            if text and statement.search(text):
                sql.append(f"{path.name}:{node.lineno}")
    assert long == []
    assert sql == []
