"""What a first run meets: runbook overrides named explicitly, a complete demo store, warnings left visible."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlsleuth.cli import _quiet_known_warnings, app
from mlsleuth.testing import Cause, make_case

CUSTOM = ("# Upstream data change\n\nOur team's way.\n\n"
          "## Next steps\n\n- page the data-platform on-call\n- freeze the job\n")


def run(*args: str | Path, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upstream change, whose top hypothesis reads the upstream_data_change runbook."""
    return make_case(Cause.UPSTREAM_DATA_CHANGE, seed=1, rows=20_000).write(tmp_path_factory.mktemp("case"))


def test_runbooks_option_replaces_the_steps_and_the_output_names_the_override(case_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ours"
    folder.mkdir()
    (folder / "upstream_data_change.md").write_text(CUSTOM, encoding="utf-8")
    result = run("diagnose", case_dir, "--runbooks", folder)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    top = out["hypotheses"][0]
    assert top["cause"] == "upstream_data_change"
    assert top["next_steps"] == ["page the data-platform on-call", "freeze the job"]
    assert out["runbook_source"] == str(folder / "upstream_data_change.md")
    assert "Our team's way." in out["runbook"]
    assert f"runbook from the override {folder / 'upstream_data_change.md'}" in result.stderr


def test_runbooks_folder_in_the_working_directory_is_not_read_unless_named(
        case_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "upstream_data_change.md").write_text(CUSTOM, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLSLEUTH_RUNBOOKS", raising=False)
    out = json.loads(run("diagnose", case_dir).stdout)
    assert out["runbook_source"] is None
    assert "page the data-platform on-call" not in out["hypotheses"][0]["next_steps"]
    named = json.loads(run("diagnose", case_dir, env={"MLSLEUTH_RUNBOOKS": "runbooks"}).stdout)
    assert named["runbook_source"] == str(Path("runbooks") / "upstream_data_change.md")
    assert named["hypotheses"][0]["next_steps"][0] == "page the data-platform on-call"


def test_runbooks_naming_a_missing_folder_is_an_error(case_dir: Path, tmp_path: Path) -> None:
    result = run("diagnose", case_dir, env={"MLSLEUTH_RUNBOOKS": str(tmp_path / "nowhere")})
    assert result.exit_code == 2
    assert "nowhere" in result.stderr and "--runbooks" in result.stderr


def test_library_refuses_a_runbook_folder_that_is_not_there(tmp_path: Path) -> None:
    from mlsleuth.diagnosis import runbook_text
    from mlsleuth.errors import InputError

    with pytest.raises(InputError, match="not a folder"):
        runbook_text(Cause.MODEL_CHANGE, tmp_path / "missing")


def test_demo_store_holds_the_reference_and_the_output_says_how_to_open_its_dashboard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from functools import partial

    import mlsleuth.testing

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlsleuth.server import Scope, ServerConfig, create_app

    monkeypatch.setattr(mlsleuth.testing, "build_demo", partial(mlsleuth.testing.build_demo, rows=20_000))
    result = run("demo", "--dir", tmp_path / "demo")
    assert result.exit_code == 0, result.stderr
    store = tmp_path / "demo" / "store"
    m = re.search(r"dashboard: MLSLEUTH_TOKENS=(\S+):read \S*mlsleuth serve --store (\S+)\n\s+then open "
                  r"http://127\.0\.0\.1:8000/login and enter the token (\S+)", result.stdout)
    assert m is not None, result.stdout
    assert m.group(1) == m.group(3) and Path(m.group(2)) == store
    client = TestClient(create_app(ServerConfig(store=store, tokens={m.group(1): Scope.READ})))
    page = client.post("/login", data={"token": m.group(1)}, headers={"origin": "http://testserver"},
                       follow_redirects=True)
    assert page.status_code == 200
    model = client.get("/models/fraud")
    assert model.status_code == 200
    assert "No reference uploaded" not in model.text


def test_only_the_named_third_party_warnings_are_hidden() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _quiet_known_warnings()
        warnings.warn("PySpark does not yet fully support pandas >= 3.0.0.", FutureWarning, stacklevel=1)
        warnings.warn("a column will change type", FutureWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a column will change type", "something else"]
