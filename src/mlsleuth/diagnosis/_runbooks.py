"""Runbooks per cause: Markdown files shipped in the package, overridable per project.

A team overrides or extends a runbook by putting ``<cause>.md`` in a folder named by
``$MLSLEUTH_RUNBOOKS`` (or ``./runbooks``); its "Next steps" list replaces the shipped one.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mlsleuth.diagnosis._result import Cause

__all__ = ["runbook_steps", "runbook_text"]


def _override_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("MLSLEUTH_RUNBOOKS")
    if env:
        dirs.append(Path(env))
    dirs.append(Path("runbooks"))
    return dirs


def runbook_text(cause: Cause) -> str:
    """The Markdown runbook of ``cause``: the project's override if present, else the shipped one."""
    name = f"{cause.value}.md"
    for d in _override_dirs():
        p = d / name
        if p.is_file():
            return p.read_text(encoding="utf-8")
    return resources.files("mlsleuth.diagnosis").joinpath("runbooks", name).read_text(encoding="utf-8")


def runbook_steps(cause: Cause) -> tuple[str, ...]:
    """The bullet points under the runbook's "Next steps" heading."""
    steps, inside = [], False
    for line in runbook_text(cause).splitlines():
        if line.startswith("#"):
            inside = line.lstrip("#").strip().lower().startswith("next steps")
            continue
        if inside and line.lstrip().startswith(("- ", "* ")):
            steps.append(line.lstrip()[2:].strip())
    return tuple(steps)
