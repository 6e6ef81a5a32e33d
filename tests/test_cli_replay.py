"""``mlsleuth replay``, ``skew`` and ``compare`` on the demo incident, through typer's CliRunner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlsleuth.cli import app

FIXTURES = Path(__file__).with_name("fixtures_pipelines.py")
FIXED = f"{FIXTURES}:fixed_features"
BROKEN = f"{FIXTURES}:broken_features"
ONSET = "2026-03-06T18:00:00Z"
HOSTILE = "<script>alert(1)</script>|x"


@dataclass(frozen=True)
class Demo:
    dir: Path
    log: pa.Table
    threshold: float

    def __truediv__(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo incident (upstream change at Friday 18:00 UTC) written as a case folder."""
    from mlsleuth.testing import demo_case

    case = demo_case(seed=0, rows=60_000)
    folder = case.write(tmp_path_factory.mktemp("demo"))
    return Demo(folder, case.log, case.threshold)


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok_json(*args: str | Path) -> dict[str, Any]:
    result = run(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr + result.stdout
    out: dict[str, Any] = json.loads(result.stdout)
    return out


# --------------------------------------------------------------------------- replay and verify


def test_verify_passes_with_the_fixed_pipeline_taking_the_onset_from_the_diagnosis(demo: Demo) -> None:
    out = ok_json("replay", "--log", demo / "log.parquet", "--labels", demo / "labels.parquet",
                  "--model", demo / "model.joblib", "--pipeline", FIXED, "--keep-input-prefix",
                  "--diagnosis", demo / "truth.json", "--verify", "--baseline", "4d")
    assert out["verdict"] == "pass", out["summary"]
    assert out["onset"] == ONSET and out["incident_window"][0] == ONSET
    fpr = next(c for c in out["checks"] if c["metric"] == "fpr")
    assert fpr["detectable"] and fpr["restored"] and fpr["incident"] > 2 * fpr["baseline"]
    ratio = next(f for f in out["replay"]["features"]["features"] if f["feature"] == "feature.amount_to_avg_ratio")
    assert ratio["mismatch_rate"] == 1.0  # the fix recomputed the inflated ratio for every request


def test_verify_fails_with_the_still_broken_pipeline_and_still_exits_0(demo: Demo) -> None:
    out = ok_json("replay", "--log", demo / "log.parquet", "--labels", demo / "labels.parquet",
                  "--model", demo / "model.joblib", "--pipeline", BROKEN, "--keep-input-prefix",
                  "--verify", "--onset", ONSET, "--baseline", "4d")
    assert out["verdict"] == "fail"
    assert {"positive_rate", "fpr"} <= {c["metric"] for c in out["checks"] if not c["restored"]}
    assert out["replay"]["n_changed"] == 0
    assert out["tolerance"] == {"relative": 0.1, "absolute": 0.002, "z": 2.576,
                                "metrics": ["positive_rate", "fpr", "tpr", "score_mean"]}


def test_verify_tolerances_come_from_the_command_line(demo: Demo) -> None:
    # Allowing 250 % around the baseline, even the tripled false positives count neither as moved nor as failed.
    out = ok_json("replay", "--log", demo / "log.parquet", "--labels", demo / "labels.parquet",
                  "--model", demo / "model.joblib", "--verify", "--onset", ONSET, "--baseline", "4d",
                  "--tolerance-rel", "2.5", "--tolerance-abs", "0.001", "--z", "1")
    assert out["tolerance"]["relative"] == 2.5 and out["tolerance"]["z"] == 1.0
    assert out["verdict"] == "inconclusive"


def test_replay_selects_by_window_segment_and_request_ids(demo: Demo, tmp_path: Path) -> None:
    out = ok_json("replay", "--log", demo / "log.parquet", "--model", demo / "model.joblib",
                  "--since", "2026-03-05T00:00:00Z", "--until", "2026-03-05T06:00:00Z",
                  "--segment", "region=EU", "--segment", "channel=web", "--segment", "channel=app")
    assert out["selection"]["segments"] == [{"region": "EU", "channel": ["web", "app"]}]
    log = demo.log
    ts = log["ts"]
    mask = pc.and_(pc.and_(pc.greater_equal(ts, pa.scalar(datetime(2026, 3, 5, tzinfo=UTC), ts.type)),
                           pc.less(ts, pa.scalar(datetime(2026, 3, 5, 6, tzinfo=UTC), ts.type))),
                   pc.and_(pc.equal(log["region"], "EU"), pc.is_in(log["channel"], pa.array(["web", "app"]))))
    expected = pc.sum(mask.cast(pa.int64())).as_py()
    assert out["n"] == expected > 0
    assert {s["value"] for s in out["segments"] if s["column"] == "region"} == {"EU"}
    assert out["n_changed"] == 0 and out["n_flipped"] == 0  # the serving model on its own features

    ids = demo.log["request_id"].to_pylist()[100:137]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("# requests a customer complained about\n" + "\n".join(ids) + "\n\n", encoding="utf-8")
    out = ok_json("replay", "--log", demo / "log.parquet", "--model", demo / "model.joblib",
                  "--request-ids", id_file)
    assert out["n"] == 37 and sorted(out["selection"]["request_ids"]) == sorted(ids)


def test_replay_reads_from_a_store(demo: Demo, tmp_path: Path) -> None:
    store = tmp_path / "store"
    part = tmp_path / "part.parquet"
    pq.write_table(demo.log.slice(0, 5_000), part)
    result = run("ingest", "log", part, "--store", store)
    assert result.exit_code == 0, result.stderr
    out = ok_json("replay", "--store", store, "--model-name", "fraud", "--model", demo / "model.joblib")
    assert out["n"] == 5_000 and out["selection"]["model"] == "fraud" and out["n_changed"] == 0
    out = ok_json("skew", "--store", store, "--pipeline", BROKEN, "--keep-input-prefix")
    assert out["n"] == 5_000 and out["skewed"] == []


# --------------------------------------------------------------------------- skew


def test_skew_finds_a_planted_serving_bug_and_only_it(demo: Demo, tmp_path: Path) -> None:
    # Serving computed log_amount with log10 instead of log1p for EU requests.
    log = demo.log
    eu = pc.equal(log["region"], "EU")
    bad = pc.if_else(eu, pc.log10(pc.add(log["input.amount"], 1.0)), log["feature.log_amount"])
    planted = log.set_column(log.column_names.index("feature.log_amount"), "feature.log_amount", bad)
    path = tmp_path / "log_bug.parquet"
    pq.write_table(planted, path)
    out = ok_json("skew", "--log", path, "--pipeline", "mlsleuth.testing:compute_features", "--keep-input-prefix",
                  "--reference", demo / "reference.parquet")
    assert out["skewed"] == ["feature.log_amount"]
    log_amount = out["features"][0]
    assert log_amount["feature"] == "feature.log_amount"
    assert log_amount["n_mismatch"] == pc.sum(eu.cast(pa.int64())).as_py() > 0
    eu_ids = set(pc.filter(log["request_id"], eu).to_pylist())
    assert log_amount["examples"] and set(log_amount["examples"]) <= eu_ids
    assert all(f["n_mismatch"] == 0 for f in out["features"][1:])

    only = ok_json("skew", "--log", path, "--pipeline", "mlsleuth.testing:compute_features", "--keep-input-prefix",
                   "--features", "log_amount,feature.hour_sin", "--segment", "region=US")
    assert [f["feature"] for f in only["features"]] == ["feature.hour_sin", "feature.log_amount"]
    assert only["skewed"] == []  # no US request was hit


def test_skew_against_an_offline_feature_table(demo: Demo, tmp_path: Path) -> None:
    log = demo.log.slice(0, 2_000)
    ratio = log["feature.amount_to_avg_ratio"].to_numpy().copy()
    ratio[:25] *= 0.7  # the offline snapshot disagrees on 25 requests
    offline = pa.table({"id": log["request_id"], "amount_to_avg_ratio": ratio,
                        "log_amount": log["feature.log_amount"]})
    path = tmp_path / "offline.parquet"
    pq.write_table(offline, path)
    out = ok_json("skew", "--log", demo / "log.parquet", "--offline", path, "--on", "request_id",
                  "--offline-on", "id", "--until", "2026-03-02T02:00:00Z")
    assert out["method"] == "offline" and 25 < out["n"] < 2_000  # the first two hours: all in the table
    assert out["skewed"] == ["feature.amount_to_avg_ratio"]
    ratio, log_amount = out["features"]
    assert ratio["n_mismatch"] == 25 and set(ratio["examples"]) <= set(log["request_id"][:25].to_pylist())
    assert ratio["max_rel_diff"] == pytest.approx(0.3, abs=1e-6)
    assert log_amount["n_mismatch"] == 0 and len(out["not_recomputed"]) == 8


# --------------------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def ab_log(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Split traffic: every other request went to a v13 that scores 60 % higher."""
    log = demo.log.slice(0, 30_000)
    n = log.num_rows
    to_b = np.arange(n) % 2 == 1
    score = log["score"].to_numpy()
    new = np.where(to_b, np.minimum(score * 1.6, 1.0), score)
    version = np.where(to_b, "v13", "v12")
    out = log.set_column(log.column_names.index("score"), "score", pa.array(new))
    out = out.set_column(out.column_names.index("prediction"), "prediction",
                         pa.array((new >= demo.threshold).astype(np.int64)))
    out = out.set_column(out.column_names.index("model_version"), "model_version", pa.array(version))
    path = tmp_path_factory.mktemp("ab") / "log_ab.parquet"
    pq.write_table(out, path)
    return path


def test_compare_two_logged_versions_prints_a_verdict(demo: Demo, ab_log: Path) -> None:
    out = ok_json("compare", "--log", ab_log, "--labels", demo / "labels.parquet", "--a", "v12", "--b", "v13")
    assert out["verdict"] == "significant" and out["design"] == "split"
    assert (out["a"], out["b"]) == ("v12", "v13")
    pos = next(t for t in out["tests"] if t["metric"] == "positive_rate")
    assert pos["outcome"] == "significant" and pos["difference"] > 0
    assert {t["metric"] for t in out["tests"]} == {"positive_rate", "fpr", "tpr"}
    assert out["summary"].startswith("SIGNIFICANT: v13 vs v12 (split)")

    md = run("compare", "--log", ab_log, "--a", "v12", "--b", "v13", "--format", "md", "--min-effect", "0.01")
    assert md.exit_code == 0 and "**Verdict: significant**" in md.stdout
    assert "# mlsleuth compare: `v13` vs `v12`" in md.stdout


def test_compare_a_logged_version_with_a_model_is_shadow(demo: Demo) -> None:
    out = ok_json("compare", "--log", demo / "log.parquet", "--a", "v12", "--b", "retrained",
                  "--b-model", demo / "model.joblib", "--until", "2026-03-03T00:00:00Z")
    assert out["design"] == "shadow" and out["b"] == "retrained"
    assert out["agreement"] == 1.0 and out["verdict"] == "no_difference"  # the same model, rescored


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("args", "message"), [
    (["replay", "--log", "{log}"], "pass --model SPEC, --pipeline SPEC, or both"),
    (["replay", "--log", "{log}", "--model", "{model}", "--verify"], "--verify needs --onset"),
    (["replay", "--log", "{log}", "--pipeline", "{fixed}", "--verify", "--onset", ONSET], "needs --model"),
    (["replay", "--log", "{log}", "--model", "{model}", "--onset", ONSET], "--onset applies only with --verify"),
    (["replay", "--log", "{log}", "--model", "{model}", "--segment", "EU"], "column=value"),
    (["replay", "--log", "{dir}/nope.parquet", "--model", "{model}"], "file not found"),
    (["replay", "--log", "{log}", "--model", "{model}", "--since", "friday"], "ISO-8601"),
    (["replay", "--log", "{log}", "--model", "{model}", "--diagnosis", "{dir}/truth.json", "--hypothesis", "3"],
     "hypothesis number from 1 to 1"),
    (["replay", "--log", "{log}", "--model", "nomodule_xyz:score"], "cannot import module"),
    (["replay", "--log", "{log}", "--model", "{model}", "--verify", "--onset", "2026-03-02T00:00:00Z",
      "--until", "2026-03-02T01:00:00Z"], "no requests in the baseline window"),
    (["skew", "--log", "{log}"], "exactly one"),
    (["skew", "--log", "{log}", "--pipeline", "{fixed}", "--on", "request_id"], "only with --offline"),
    (["skew", "--log", "{log}", "--pipeline", "{fixed}", "--keep-input-prefix", "--features", "nope"], "nope"),
    (["compare", "--log", "{log}", "--a", "v12"], "side B is missing"),
    (["compare", "--log", "{log}", "--a", "v12", "--b", "v99"], "no requests of version 'v99'"),
    (["compare", "--log", "{log}", "--a", "v12", "--b", "v12", "--alpha", "2"], "0 < alpha < 1"),
])
def test_bad_arguments_give_one_line_and_exit_2(demo: Demo, args: list[str], message: str) -> None:
    subs = {"{log}": demo / "log.parquet", "{model}": demo / "model.joblib", "{fixed}": FIXED,
            "{dir}": str(demo.dir)}
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    result = run(*argv)
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlsleuth: error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""


# --------------------------------------------------------------------------- Markdown and HTML


def test_md_and_html_carry_the_key_numbers(demo: Demo, tmp_path: Path) -> None:
    args = ["replay", "--log", demo / "log.parquet", "--labels", demo / "labels.parquet", "--model",
            demo / "model.joblib", "--pipeline", FIXED, "--keep-input-prefix", "--verify", "--onset", ONSET,
            "--baseline", "4d"]
    out = ok_json(*args)
    fpr = next(c for c in out["checks"] if c["metric"] == "fpr")
    numbers = [f"{100 * fpr[k]:.2f}%" for k in ("baseline", "incident", "replayed")]
    numbers.append(f"{out['replay']['n']:,} requests")
    md = run(*args, "--format", "md")
    assert md.exit_code == 0 and md.stdout.startswith("# mlsleuth verify: PASS")
    page = tmp_path / "verify.html"
    html = run(*args, "--format", "html", "--out", page)
    assert html.exit_code == 0 and html.stdout == ""
    assert html.stderr.strip() == f"pass: report written to {page}"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "<script" not in text and "http" not in text
    for number in numbers:
        assert number in md.stdout and number in text
    assert "| fpr | " in md.stdout and "<td>fpr</td>" in text


def test_md_and_html_escape_user_data(demo: Demo, tmp_path: Path) -> None:
    log = demo.log.slice(0, 3_000)
    region = np.where(np.arange(log.num_rows) % 3 == 0, HOSTILE, log["region"].to_numpy(zero_copy_only=False))
    hostile = log.set_column(log.column_names.index("region"), "region", pa.array(region))
    hostile = hostile.set_column(hostile.column_names.index("model_version"), "model_version",
                                 pa.array(np.where(np.arange(log.num_rows) % 2 == 0, "v12", "v13`*<b>")))
    path = tmp_path / "hostile.parquet"
    pq.write_table(hostile, path)

    md = run("replay", "--log", path, "--model", demo / "model.joblib", "--format", "md").stdout
    assert "| `region` | `<script>alert(1)</script>\\|x` | 1,000 |" in md
    page = run("replay", "--log", path, "--model", demo / "model.joblib", "--format", "html").stdout
    assert "<script>" not in page and "<code>&lt;script&gt;alert(1)&lt;/script&gt;|x</code>" in page

    md = run("compare", "--log", path, "--a", "v12", "--b", "v13`*<b>", "--format", "md").stdout
    assert "# mlsleuth compare: ``v13`*<b>`` vs `v12`" in md
    page = run("compare", "--log", path, "--a", "v12", "--b", "v13`*<b>", "--format", "html").stdout
    assert "<b>" not in page and "<code>v13`*&lt;b&gt;</code>" in page
    assert "&lt;script&gt;" in page  # segment values are escaped in the per-segment tests too
