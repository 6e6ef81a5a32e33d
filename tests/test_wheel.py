"""The wheel a user installs works outside the checkout: build it, install it with the server extra into a fresh
virtual environment, and run ``mlsleuth demo`` and ``mlsleuth serve --help`` from another folder.

It runs offline. The wheel is built without build isolation (the test environment's setuptools, >= 77 through the
``dev`` extra), and installed with ``pip install --no-index``: the fresh environment sees the test environment's
already-installed dependencies through a ``.pth`` file (every distribution but mlsleuth itself), so pip resolves
the wheel's requirements, extras included, against them and downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    """The environment of the commands: none of the checkout's paths, no variable that would pick a store."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MLSLEUTH_STORE", "MLSLEUTH_ENGINE", "MLSLEUTH_RUNBOOKS")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(args: list[str | Path], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


def _dependencies_dir(target: Path) -> Path:
    """A folder of links to the test environment's installed distributions, mlsleuth's own left out."""
    target.mkdir()
    seen = set()
    for key in ("purelib", "platlib"):
        site = Path(sysconfig.get_paths()[key])
        if site in seen or not site.is_dir():
            continue
        seen.add(site)
        for entry in site.iterdir():
            name = entry.name.lower()
            if name.startswith(("mlsleuth", "__editable__")) or name.endswith(".pth") or (target / entry.name).exists():
                continue
            (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the built wheel installed with ``[server]``; its ``bin`` folder."""
    pytest.importorskip("setuptools", minversion="77")
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the sdist holds, so the build neither writes into the checkout nor sees more.
    src = tmp / "source"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    dist = tmp / "dist"
    build = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                  "--wheel-dir", dist, src], cwd=tmp)
    output = build.stdout + build.stderr
    assert "is deprecated" not in output and "SetuptoolsDeprecationWarning" not in output, output[-3000:]
    wheels = list(dist.glob("mlsleuth-*.whl"))
    assert len(wheels) == 1, wheels

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    deps = _dependencies_dir(tmp / "deps")
    (Path(purelib) / "test-environment-dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-index", "--find-links", dist,
          f"{wheels[0]}[server]"], cwd=tmp)
    return env_dir / "bin"


def test_wheel_installs_the_package_with_its_license_and_runbooks(installed: Path, tmp_path: Path) -> None:
    code = ("import importlib.metadata as m, importlib.resources as r, mlsleuth; print(mlsleuth.__file__); "
            "d = m.distribution('mlsleuth'); print(d.metadata['License-Expression']); "
            "print(any(str(f).endswith('licenses/LICENSE') for f in d.files)); "
            "print(r.files('mlsleuth.diagnosis').joinpath('runbooks', 'model_change.md').is_file())")
    out = _run([installed / "python", "-c", code], cwd=tmp_path).stdout.split()
    assert Path(out[0]).is_relative_to(installed.parent), out[0]  # the wheel's copy, not the checkout's
    assert out[1:] == ["Apache-2.0", "True", "True"]


def test_demo_runs_from_another_folder(installed: Path, tmp_path: Path) -> None:
    out = _run([installed / "mlsleuth", "demo", "--dir", "demo"], cwd=tmp_path).stdout
    assert "verdict: INCIDENT" in out and "upstream_data_change" in out
    assert "serve --store" in out and "/login and enter the token" in out
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "store" / "profiles" / "fraud" / "reference.json").is_file()


def test_serve_help_runs_with_the_server_extra(installed: Path, tmp_path: Path) -> None:
    out = _run([installed / "mlsleuth", "serve", "--help"], cwd=tmp_path).stdout
    assert "--config" in out and "MLSLEUTH_TOKENS" in out
    _run([installed / "python", "-c", "import fastapi, uvicorn, mlsleuth.server"], cwd=tmp_path)
