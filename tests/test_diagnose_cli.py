"""The contract of ``mlsleuth diagnose`` (docs/contract.md: the command and its JSON), in process and as a process."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlsleuth.cli import app
from mlsleuth.testing import Case, Cause, make_case

CAUSES = {c.value for c in Cause}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
HYPOTHESIS_KEYS = {"cause", "confidence", "onset", "features", "inputs", "segments", "events", "evidence",
                   "next_steps"}


@dataclass(frozen=True)
class Written:
    """A generated case written as a CASE_DIR, with its diagnosis through the CLI (computed once)."""

    dir: Path
    case: Case
    out: dict[str, Any]

    def __truediv__(self, name: str) -> str:
        return str(self.dir / name)


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok_json(*args: str | Path) -> dict[str, Any]:
    result = run("diagnose", *args)
    assert result.exit_code == 0, result.stderr + result.stdout
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """An upstream change (all files of a CASE_DIR present), diagnosed once through the CASE_DIR form."""
    case = make_case(Cause.UPSTREAM_DATA_CHANGE, seed=1, rows=20_000)
    folder = case.write(tmp_path_factory.mktemp("incident"))
    return Written(folder, case, ok_json(folder))


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Written:
    case = make_case(None, seed=2, rows=20_000)
    folder = case.write(tmp_path_factory.mktemp("healthy"))
    return Written(folder, case, ok_json(folder))


def check_contract(out: dict[str, Any], log_columns: set[str], event_ids: set[str]) -> None:
    """Assert the diagnosis JSON of docs/contract.md, with the names checked against the case's files."""
    assert out["verdict"] in {"incident", "healthy"}
    hyps = out["hypotheses"]
    assert isinstance(hyps, list)
    if out["verdict"] == "healthy":
        assert hyps == []
    else:
        assert hyps, "an incident names at least one hypothesis"
    for h in hyps:
        assert set(h) >= HYPOTHESIS_KEYS, HYPOTHESIS_KEYS - set(h)
        assert h["cause"] in CAUSES
        assert isinstance(h["confidence"], float) and 0.0 <= h["confidence"] <= 1.0
        assert h["onset"] is None or (isinstance(h["onset"], str) and ISO_Z.match(h["onset"])), h["onset"]
        for key in ("features", "inputs"):
            assert isinstance(h[key], list)
            assert all(isinstance(c, str) and c in log_columns for c in h[key]), (key, h[key])
        assert all(c.startswith("feature.") for c in h["features"])
        assert all(c.startswith("input.") for c in h["inputs"])
        assert isinstance(h["segments"], list)
        for s in h["segments"]:
            assert isinstance(s, dict) and s
            assert all(isinstance(k, str) and k in log_columns and isinstance(v, str) for k, v in s.items()), s
        assert isinstance(h["events"], list) and set(h["events"]) <= event_ids, h["events"]
        assert isinstance(h["evidence"], list) and h["evidence"]
        assert all(isinstance(e, str) and e.strip() for e in h["evidence"])
        assert isinstance(h["next_steps"], list) and all(isinstance(s, str) and s for s in h["next_steps"])
    confidences = [h["confidence"] for h in hyps]
    assert confidences == sorted(confidences, reverse=True), "hypotheses come most likely first"


def event_ids(folder: Path) -> set[str]:
    path = folder / "events.jsonl"
    if not path.exists():
        return set()
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}


# --------------------------------------------------------------------------- the two forms and the JSON


def test_incident_json_follows_the_contract(incident: Written) -> None:
    check_contract(incident.out, set(incident.case.log.column_names), event_ids(incident.dir))
    assert incident.out["verdict"] == "incident"
    assert incident.out["hypotheses"][0]["cause"] == "upstream_data_change"


def test_case_dir_and_explicit_files_give_the_same_json(incident: Written) -> None:
    out = ok_json("--log", incident / "log.parquet", "--reference", incident / "reference.parquet",
                  "--labels", incident / "labels.parquet", "--events", incident / "events.jsonl",
                  "--lineage", incident / "lineage.json", "--model", incident / "model.joblib")
    assert out == incident.out


def test_json_output_computes_no_chart_data_but_markdown_does(incident: Written,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Chart data is for md/html: ``--format json`` runs none of its queries and says ``charts: null``."""
    import mlsleuth.diagnosis._charts as charts

    assert incident.out["verdict"] == "incident" and incident.out["charts"] is None
    drawn = run("diagnose", incident.dir, "--format", "md")
    assert drawn.exit_code == 0, drawn.stderr
    assert "Marked on the charts:" in drawn.stdout

    def no_charts(*args: object, **kwargs: object) -> None:
        raise AssertionError("chart queries ran for JSON output")

    monkeypatch.setattr(charts, "_scope", no_charts)
    assert ok_json(incident.dir, "--format", "json") == incident.out
    assert run("diagnose", incident.dir, "--format", "md").exit_code != 0


def test_healthy_week_exits_0_with_verdict_healthy(healthy: Written) -> None:
    check_contract(healthy.out, set(healthy.case.log.column_names), event_ids(healthy.dir))
    assert healthy.out["verdict"] == "healthy" and healthy.out["hypotheses"] == []


def mlsleuth_exe() -> str:
    exe = shutil.which("mlsleuth") or str(Path(sys.executable).parent / "mlsleuth")
    assert Path(exe).exists(), f"the mlsleuth entry point is not installed next to {sys.executable}"
    return exe


def test_real_process_prints_the_same_json_and_exits_0(incident: Written) -> None:
    proc = subprocess.run([mlsleuth_exe(), "diagnose", str(incident.dir)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == incident.out


def test_real_process_unusable_input_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-case"
    proc = subprocess.run([mlsleuth_exe(), "diagnose", str(missing)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-case" in lines[0], proc.stderr


# --------------------------------------------------------------------------- unusable input


def _no_ts(folder: Path, case: Case) -> tuple[list[str], str]:
    path = folder / "log.parquet"
    pq.write_table(case.log.drop_columns(["ts"]), path)
    return [str(path)], "ts"


def _truncated(folder: Path, case: Case) -> tuple[list[str], str]:
    path = folder / "log.parquet"
    pq.write_table(case.log.slice(0, 2_000), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [str(path)], "log.parquet"


def _garbage_csv(folder: Path, case: Case) -> tuple[list[str], str]:
    path = folder / "log.csv"
    path.write_bytes(b"\x00\xff\xfe garbage \x01\x02\n;;;\"unterminated\n\x00\x00\x00" * 50)
    return [str(path)], "log.csv"


def _missing_reference(folder: Path, case: Case) -> tuple[list[str], str]:
    path = folder / "log.parquet"
    pq.write_table(case.log.slice(0, 2_000), path)
    return [str(path), "--reference", str(folder / "train-missing.parquet")], "train-missing.parquet"


@pytest.mark.parametrize("make_bad", [_no_ts, _truncated, _garbage_csv, _missing_reference],
                         ids=["no-ts-column", "truncated-parquet", "garbage-csv", "missing-reference"])
def test_unusable_log_exits_non_zero_with_one_line_naming_the_file_or_column(
        make_bad: Any, incident: Written, tmp_path: Path) -> None:
    args, name = make_bad(tmp_path, incident.case)
    result = run("diagnose", "--log", *args)
    assert result.exit_code not in (0, None), result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0], lines[0]
    assert "internal error" not in lines[0], lines[0]


def test_missing_case_folder_exits_non_zero_naming_it(tmp_path: Path) -> None:
    result = run("diagnose", tmp_path / "nowhere")
    assert result.exit_code not in (0, None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0], result.stderr


def test_folder_without_a_log_names_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "reference.parquet").write_bytes(b"")
    result = run("diagnose", tmp_path)
    assert result.exit_code not in (0, None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "log" in lines[0], result.stderr


def test_bad_since_timestamp_exits_non_zero_naming_the_option(incident: Written) -> None:
    result = run("diagnose", incident.dir, "--since", "last friday")
    assert result.exit_code not in (0, None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--since" in lines[0], result.stderr


def test_a_config_with_an_unknown_threshold_exits_non_zero_naming_the_file_and_the_known_names(
        incident: Written, tmp_path: Path) -> None:
    config = tmp_path / "model.toml"
    config.write_text("[thresholds]\nmin_chnge_z = 8\n", encoding="utf-8")
    result = run("diagnose", incident.dir, "--config", config)
    assert result.exit_code not in (0, None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.toml" in lines[0] and "'min_chnge_z'" in lines[0], result.stderr
    assert "min_change_z" in lines[0]


# --------------------------------------------------------------------------- window, formats, output file


def _window(incident: Written, since: datetime, until: datetime) -> dict[str, Any]:
    out = ok_json(incident.dir, "--since", since.isoformat().replace("+00:00", "Z"),
                  "--until", until.isoformat().replace("+00:00", "Z"))
    tri = out["triage"]
    ts = incident.case.log.column("ts").to_pylist()
    assert tri["rows"] == sum(1 for t in ts if since <= t < until)
    slack = timedelta(seconds=tri["window_seconds"])  # triage windows sit on a grid
    assert since - slack <= datetime.fromisoformat(tri["from"]) and datetime.fromisoformat(tri["to"]) <= until + slack
    return out


def test_since_until_narrow_the_window(incident: Written) -> None:
    onset = incident.case.truth.onset
    assert onset is not None
    start = incident.case.spec.start
    since, until = start + timedelta(days=1), start + timedelta(days=3)
    assert until <= onset
    out = _window(incident, since, until)
    # The window (Tuesday and Wednesday) ends before the upstream change: nothing happened in it.
    assert out["verdict"] == "healthy" and out["hypotheses"] == []


def test_a_window_of_partial_days_before_the_onset_is_healthy(incident: Written) -> None:
    onset = incident.case.truth.onset
    assert onset is not None
    out = _window(incident, incident.case.spec.start + timedelta(days=1), onset - timedelta(hours=1))
    assert out["verdict"] == "healthy", [(h["cause"], h["features"]) for h in out["hypotheses"]]


def test_markdown_report_names_the_top_cause_and_its_culprit(incident: Written) -> None:
    result = run("diagnose", incident.dir, "--format", "md")
    assert result.exit_code == 0, result.stderr
    top = incident.out["hypotheses"][0]
    assert result.stdout.startswith("# ")
    assert top["cause"] in result.stdout and top["features"][0] in result.stdout


def test_out_writes_the_html_report_to_the_file_not_stdout(incident: Written, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = run("diagnose", incident.dir, "--format", "html", "--out", target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert str(target) in result.stderr and "incident" in result.stderr
    page = target.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    top = incident.out["hypotheses"][0]
    assert top["cause"] in page and top["features"][0] in page


# --------------------------------------------------------------------------- only a log


def test_log_csv_alone_still_diagnoses_and_says_what_was_skipped(incident: Written, tmp_path: Path) -> None:
    log = incident.case.log
    # CSV cannot hold the timestamp type's time zone marker in every reader: write ISO text.
    ts = pa.array([t.isoformat().replace("+00:00", "Z") for t in log.column("ts").to_pylist()])
    pacsv.write_csv(log.set_column(log.column_names.index("ts"), "ts", ts), tmp_path / "log.csv")
    out = ok_json(tmp_path)
    check_contract(out, set(log.column_names), set())
    skipped = " ".join(out["skipped"]).lower()
    for what in ("reference", "labels", "events", "lineage", "model"):
        assert what in skipped, (what, out["skipped"])
    assert out["verdict"] == "incident"
    assert out["hypotheses"][0]["features"] or out["hypotheses"][0]["inputs"]
