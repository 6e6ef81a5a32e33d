"""The exception tree of mlsleuth.

Every error mlsleuth raises on purpose derives from :class:`MlsleuthError`; where a
builtin exception already carries the meaning, it is a second base so that callers
catching ``ValueError`` or ``OSError`` keep working::

    MlsleuthError
    ├── InputError(ValueError)        bad input from a user: a file, a column, a value
    │   ├── SchemaError               a column is missing, mistyped or of the wrong role
    │   ├── ReadError                 a file could not be read or parsed
    │   └── ConfigError               a config file or parameter is invalid
    ├── StoreError(OSError)           the store could not be opened, read or written
    │   └── StoreNotFoundError        no store at the given path (run ``mlsleuth init``)
    ├── EngineError(RuntimeError)     the query engine failed on a query
    ├── NotFittedError(RuntimeError)  an estimator-like object was used before ``fit``
    ├── RunnerError(RuntimeError)     a model, pipeline or endpoint failed while replaying requests
    └── CaptureError(RuntimeError)    a sink failed; the capture path counts these, never raises them

Errors carry the context a user needs to act on them (``path``, ``column``, ``line``) as
attributes, and their messages say what was expected, what arrived and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CaptureError",
    "ConfigError",
    "EngineError",
    "InputError",
    "MlsleuthError",
    "NotFittedError",
    "ReadError",
    "RunnerError",
    "SchemaError",
    "StoreError",
    "StoreNotFoundError",
]


class MlsleuthError(Exception):
    """Base class of every error mlsleuth raises on purpose."""


class InputError(MlsleuthError, ValueError):
    """Input from the user is unusable.

    Parameters
    ----------
    message
        What was expected, what arrived, and how to fix it.
    path
        The file the input came from, when there is one.
    column
        The column (or JSON field) at fault, when there is one.
    line
        The 1-based line or row number at fault, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        column: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.column = column
        self.line = line
        where = []
        if self.path is not None:
            where.append(self.path + (f":{line}" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class SchemaError(InputError):
    """A column is missing, has the wrong type, or cannot play its role."""


class ReadError(InputError):
    """A file could not be read or parsed."""


class ConfigError(InputError):
    """A configuration file or a parameter value is invalid."""


class StoreError(MlsleuthError, OSError):
    """The store could not be opened, read or written."""


class StoreNotFoundError(StoreError):
    """There is no mlsleuth store at the given path."""


class EngineError(MlsleuthError, RuntimeError):
    """The query engine failed to run a query."""


class NotFittedError(MlsleuthError, RuntimeError):
    """An estimator-like object was used before ``fit`` was called."""


class RunnerError(MlsleuthError, RuntimeError):
    """A model, feature pipeline or model endpoint failed on a batch of requests.

    Parameters
    ----------
    message
        What failed and how to fix it.
    runner
        A short description of the runner (the estimator class, entry point or URL).
    """

    def __init__(self, message: str, *, runner: str | None = None) -> None:
        self.runner = runner
        super().__init__(f"{runner}: {message}" if runner else message)


class CaptureError(MlsleuthError, RuntimeError):
    """A capture sink failed to write a batch.

    The capture path never lets this reach serving code: the logger counts the rows it
    drops because of it and reports them in ``Logger.stats()``.
    """
