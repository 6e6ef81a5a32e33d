"""Runbooks per cause: Markdown files shipped in the package, overridable per project.

A team overrides or extends a runbook by putting ``<cause>.md`` in a folder it names explicitly: the ``folder``
argument (``mlsleuth diagnose --runbooks DIR``) or ``$MLSLEUTH_RUNBOOKS``. Its "Next steps" list replaces the
shipped one, and :func:`runbook_source` says which file was used so the output can report it. Nothing is read
from the working directory unless it is named.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mlsleuth.diagnosis._result import Cause
from mlsleuth.errors import InputError

__all__ = ["RUNBOOKS_ENV", "runbook_source", "runbook_steps", "runbook_text"]

#: The environment variable naming the folder of runbook overrides.
RUNBOOKS_ENV = "MLSLEUTH_RUNBOOKS"


def _override_dir(folder: str | Path | None) -> Path | None:
    """The override folder named by ``folder``, else by ``$MLSLEUTH_RUNBOOKS``; an error when it is not a folder."""
    named = folder if folder is not None else os.environ.get(RUNBOOKS_ENV) or None
    if named is None:
        return None
    path = Path(named)
    if not path.is_dir():
        origin = "--runbooks" if folder is not None else f"${RUNBOOKS_ENV}"
        raise InputError(f"{origin} names {path}, which is not a folder; expected a folder of <cause>.md runbook "
                         f"overrides (e.g. upstream_data_change.md): create it or unset {origin}", path=str(path))
    return path


def runbook_source(cause: Cause, folder: str | Path | None = None) -> Path | None:
    """The override file that :func:`runbook_text` reads for ``cause``, ``None`` when the shipped one is used.

    Parameters
    ----------
    cause
        The root cause whose runbook is wanted.
    folder
        The override folder; default ``$MLSLEUTH_RUNBOOKS`` when set, else none.

    Raises
    ------
    InputError
        When the named folder does not exist.
    """
    d = _override_dir(folder)
    if d is None:
        return None
    p = d / f"{cause.value}.md"
    return p if p.is_file() else None


def runbook_text(cause: Cause, folder: str | Path | None = None) -> str:
    """The Markdown runbook of ``cause``: the override in ``folder`` (or ``$MLSLEUTH_RUNBOOKS``) if any, else shipped.

    Examples
    --------
    >>> from mlsleuth.diagnosis import Cause, runbook_text
    >>> runbook_text(Cause.UPSTREAM_DATA_CHANGE).startswith("#")
    True
    """
    override = runbook_source(cause, folder)
    if override is not None:
        return override.read_text(encoding="utf-8")
    name = f"{cause.value}.md"
    return resources.files("mlsleuth.diagnosis").joinpath("runbooks", name).read_text(encoding="utf-8")


def runbook_steps(cause: Cause, folder: str | Path | None = None) -> tuple[str, ...]:
    """The bullet points under the runbook's "Next steps" heading."""
    steps, inside = [], False
    for line in runbook_text(cause, folder).splitlines():
        if line.startswith("#"):
            inside = line.lstrip("#").strip().lower().startswith("next steps")
            continue
        if inside and line.lstrip().startswith(("- ", "* ")):
            steps.append(line.lstrip()[2:].strip())
    return tuple(steps)
