"""The documentation builds without a warning, and every code block of docs/ and README.md runs.

Conventions the pages follow (CONTRIBUTING.md says the same):

- ```` ```python ```` blocks run in order, in one namespace per page, in a scratch folder that holds a small demo
  (``mlsleuth-demo/``: the seed's incident at 10,000 requests instead of 200,000).
- ```` ```bash ```` blocks run command by command: ``mlsleuth ...`` in process through typer's runner (``VAR=value``
  prefixes become its environment; ``mlsleuth demo`` builds the small demo), ``mlsleuth serve ...`` as a real
  server process on a free port until ``/health`` answers, ``python FILE`` as a process.
- ```` ```json ```` and ```` ```toml ```` blocks must parse; a TOML block marked ``model-config``, ``server-config`` or
  ``store-config`` must load with the matching loader.
- ```` ```text ```` blocks are output or layouts, and are not run.
- ``<!-- docs-test: file NAME -->`` before a block writes it to NAME in the scratch folder instead of running it;
  ``<!-- docs-test: skip (why) -->`` skips a block that needs what a test cannot have (a cluster, a bucket, the
  package index), and must say why.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")), "README.md"]
DEMO_ROWS = 10_000
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)")
RUN = {"python", "bash"}
PARSE = {"json", "toml"}
QUIET = {"text"}


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page, with the directive written just before it."""

    page: str
    line: int
    lang: str
    code: str
    directives: tuple[tuple[str, str], ...] = ()

    def arg(self, what: str) -> str | None:
        """The argument of directive ``what`` ("" when it has none), ``None`` when the block lacks it."""
        return next((arg for w, arg in self.directives if w == what), None)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """The fenced blocks of ``page`` in order (fences may be indented, inside list items)."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, lang, start = m.group("indent"), m.group("lang"), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        found: list[tuple[str, str]] = []
        j = start - 1
        while j >= 0 and (not lines[j].strip() or DIRECTIVE.match(lines[j])):
            if (d := DIRECTIVE.match(lines[j])) is not None:
                found.append((d.group("what"), d.group("arg")))
            elif found:
                break  # a blank line above the directives ends them
            j -= 1
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n", tuple(reversed(found))))
    return out


def commands(code: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# --------------------------------------------------------------------------- the site


def test_site_builds_with_no_warning(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0 and not warnings, proc.stderr[-3000:]
    site = tmp_path / "site"
    api = (site / "api" / "diagnosis" / "index.html").read_text(encoding="utf-8")
    assert "mlsleuth.diagnosis.diagnose" in api  # the API reference is generated from the docstrings
    assert (site / "img" / "report-timeline.svg").exists()


def test_nothing_points_outside_the_repository() -> None:
    offenders = []
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "docs").rglob("*.md"), ROOT / "README.md",
                 ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]:
        text = path.read_text(encoding="utf-8")
        if re.search(r"\.\./shared/|shared/(CONTRACT|STYLE)\.md|\bCONTRACT\.md|\bSTYLE\.md", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_every_environment_variable_the_code_reads_is_in_the_configuration_reference() -> None:
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "mlsleuth").rglob("*.py"))
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted({v for v in re.findall(r"\bMLSLEUTH_[A-Z_]+\b", code) if f"`{v}`" not in documented})
    assert missing == []


def test_every_block_has_a_language_and_every_skip_a_reason() -> None:
    bad = []
    for page in PAGES:
        for b in blocks(page):
            if b.lang not in RUN | PARSE | QUIET:
                bad.append(f"{b.where}: language {b.lang!r}; use one of {sorted(RUN | PARSE | QUIET)}")
            skip = b.arg("skip")
            if skip is not None and not re.fullmatch(r"\(.{10,}\)", skip):
                bad.append(f"{b.where}: a skip says why, in parentheses")
            for what, _ in b.directives:
                if what not in {"skip", "file", "model-config", "server-config", "store-config"}:
                    bad.append(f"{b.where}: unknown directive {what!r}")
    assert bad == []


# --------------------------------------------------------------------------- running the blocks


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mlsleuth-demo/`` as ``mlsleuth demo`` writes it, at DEMO_ROWS requests; built once."""
    from mlsleuth.testing import build_demo

    root = tmp_path_factory.mktemp("docs-demo")
    build_demo(root / "mlsleuth-demo", rows=DEMO_ROWS)
    return root / "mlsleuth-demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runner:
    """Runs one page's blocks in a scratch folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}

    def run(self, b: Block) -> None:
        file = b.arg("file")
        if b.arg("skip") is not None:
            return
        if file is not None:
            (self.folder / file).write_text(b.code, encoding="utf-8")
        if b.lang in QUIET:
            return
        if b.lang == "json":
            for doc in b.code.splitlines() if (file or "").endswith(".jsonl") else [b.code]:
                if doc.strip():
                    json.loads(doc)
        elif b.lang == "toml":
            self.toml(b)
        elif file is not None:
            return
        elif b.lang == "python":
            exec(compile(b.code, b.where, "exec"), self.namespace)
        elif b.lang == "bash":
            for cmd in commands(b.code):
                self.shell(cmd, b)

    def toml(self, b: Block) -> None:
        data = tomllib.loads(b.code)
        if b.arg("model-config") is not None:
            from mlsleuth.diagnosis import Thresholds
            from mlsleuth.schema import ModelConfig

            Thresholds.from_mapping(ModelConfig.from_mapping(data).thresholds)
        elif b.arg("server-config") is not None:
            from mlsleuth.server import load_config

            path = self.folder / "server-check.toml"
            path.write_text(b.code, encoding="utf-8")
            load_config(path, environ={})
        elif b.arg("store-config") is not None:
            from mlsleuth.store._local import settings_from_text

            settings_from_text(b.code, b.where)

    def shell(self, cmd: str, b: Block) -> None:
        argv = shlex.split(cmd, comments=True)
        env: dict[str, str] = {}
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
            key, _, value = argv.pop(0).partition("=")
            env[key] = value
        assert argv, f"{b.where}: an empty command: {cmd}"
        if argv[0] == "python":
            proc = subprocess.run([sys.executable, *argv[1:]], cwd=self.folder, env={**os.environ, **env},
                                  capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, f"{b.where}: {cmd}\n{proc.stderr[-2000:]}"
            return
        assert argv[0] == "mlsleuth", f"{b.where}: the docs test runs mlsleuth and python commands, not {cmd!r}"
        if argv[1:2] == ["serve"] and "--help" not in argv:
            self.serve(argv[1:], env, b)
            return
        from typer.testing import CliRunner

        from mlsleuth.cli import app

        result = CliRunner().invoke(app, argv[1:], env=env)
        assert result.exit_code == 0, f"{b.where}: {cmd}\n{result.stderr}\n{result.stdout[-2000:]}"

    def serve(self, args: list[str], env: dict[str, str], b: Block) -> None:
        """Start the server as the page says, on a free port, until /health answers; then stop it."""
        pytest.importorskip("fastapi")
        import httpx

        port = free_port()
        full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH",
                                                                                                       "")])}
        proc = subprocess.Popen([sys.executable, "-m", "mlsleuth.cli", *args, "--port", str(port)],
                                cwd=self.folder, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline, answered = time.monotonic() + 120, False
            while time.monotonic() < deadline and proc.poll() is None and not answered:
                try:
                    answered = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.3)
            token = env.get("MLSLEUTH_TOKENS", "").split(":")[0]
            if answered and token:
                r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
                assert r.status_code == 200, f"{b.where}: the dashboard answered {r.status_code}"
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert answered, f"{b.where}: mlsleuth {' '.join(args)} did not answer /health\n{err[-2000:]}"


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page: str, demo_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlsleuth.testing

    folder = tmp_path / "work"
    shutil.copytree(demo_template, folder / "mlsleuth-demo")
    monkeypatch.chdir(folder)
    monkeypatch.setattr(mlsleuth.testing, "build_demo", partial(mlsleuth.testing.build_demo, rows=DEMO_ROWS))
    for var in ("MLSLEUTH_STORE", "MLSLEUTH_ENGINE", "MLSLEUTH_RUNBOOKS", "MLSLEUTH_TOKENS", "MLSLEUTH_SPARK_MASTER"):
        monkeypatch.delenv(var, raising=False)
    runner = Runner(folder)
    for b in blocks(page):
        runner.run(b)
