"""Reading what a replay is asked to do from files and command-line text.

Segments written as ``col=val``, request-id lists, a diagnosis's hypothesis, and validated log,
labels, reference or offline tables: the small parsers the command line and scripts share, so
that neither holds logic of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlsleuth.errors import ConfigError, InputError, ReadError, SchemaError
from mlsleuth.schema import DataKind, read_table, validate

__all__ = ["parse_segments", "read_checked", "read_hypothesis", "read_request_ids"]

_TABLE_SUFFIXES = (".parquet", ".pq", ".parq", ".csv", ".csv.gz", ".tsv", ".jsonl", ".ndjson", ".jsonl.gz", ".json",
                   ".feather", ".arrow", ".ipc", ".arrows")


def parse_segments(items: Sequence[str]) -> tuple[dict[str, str | list[str]], ...]:
    """Segment criteria written as ``col=val``: one column's values are alternatives, columns must all hold.

    Returns the ``segments`` of a :class:`~mlsleuth.replay.Selection`: empty when ``items`` is,
    else one mapping.

    Raises
    ------
    ConfigError
        An item is not ``col=val`` with a non-empty column name.

    Examples
    --------
    >>> parse_segments(["region=EU", "region=UK", "channel=web"])
    ({'region': ['EU', 'UK'], 'channel': 'web'},)
    >>> parse_segments([])
    ()
    """
    values: dict[str, list[str]] = {}
    for item in items:
        col, sep, value = str(item).partition("=")
        col = col.strip()
        if not sep or not col:
            raise ConfigError(f"expected a segment as column=value, e.g. region=EU, got {item!r}", column="segment")
        bucket = values.setdefault(col, [])
        if value not in bucket:
            bucket.append(value)
    if not values:
        return ()
    return ({col: vs[0] if len(vs) == 1 else vs for col, vs in values.items()},)


def read_checked(path: str | Path, kind: DataKind) -> pa.Table:
    """Read a log, labels or reference file and keep the rows that pass :func:`~mlsleuth.schema.validate`.

    Parameters
    ----------
    path
        A Parquet file or folder, CSV or JSON Lines file.
    kind
        What the file holds.

    Raises
    ------
    ReadError
        The file cannot be read.
    SchemaError
        A required column is missing.
    InputError
        No row passed validation (the message gives the first reason).
    """
    checked = validate(read_table(path), kind, path=path)
    if checked.good.num_rows == 0:
        first = checked.rejected.column("reason")[0].as_py() if checked.n_rejected else "the file is empty"
        raise InputError(f"no usable rows in the {kind.value}; first reason: {first}", path=path)
    return checked.good


def read_request_ids(path: str | Path) -> tuple[str, ...]:
    """Request ids from a table with a ``request_id`` column, or a text file of one id per line.

    In a text file, blank lines and lines starting with ``#`` are skipped.

    Raises
    ------
    ReadError
        The file is missing or unreadable.
    SchemaError
        A table file has no ``request_id`` column.
    ConfigError
        The file holds no ids.
    """
    p = Path(path)
    if p.name.lower().endswith(_TABLE_SUFFIXES) or p.is_dir():
        table = read_table(p)
        if "request_id" not in table.column_names:
            raise SchemaError(f"expected a request_id column; the file has {table.column_names}", path=p,
                              column="request_id")
        ids = tuple(str(v) for v in table.column("request_id").drop_null().cast(pa.string()).to_pylist())
    else:
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ReadError("file not found", path=p) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ReadError(f"cannot read it as a text file of request ids: {e}", path=p) from e
        ids = tuple(s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#"))
    if not ids:
        raise ConfigError("expected request ids (one per line, or a request_id column), found none", path=p)
    return ids


def read_hypothesis(source: str | Path | Mapping[str, Any], number: int = 1) -> dict[str, Any]:
    """Hypothesis ``number`` (1 = most likely) of a diagnosis in its JSON form (docs/contract.md, the diagnosis JSON).

    Parameters
    ----------
    source
        A file written by ``mlsleuth diagnose --format json`` (or any JSON object with a
        ``hypotheses`` list), or the parsed object.
    number
        Rank of the hypothesis, from 1.

    Raises
    ------
    ReadError
        The file is missing or is not JSON.
    ConfigError
        The diagnosis has no hypotheses (it is healthy) or fewer than ``number``.

    Examples
    --------
    >>> read_hypothesis({"verdict": "incident", "hypotheses": [{"cause": "model_change", "onset": None}]})
    {'cause': 'model_change', 'onset': None}
    """
    path = None if isinstance(source, Mapping) else Path(source)
    if path is not None:
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReadError("diagnosis file not found", path=path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReadError(f"cannot read it as a diagnosis JSON ({e}); write one with "
                            "mlsleuth diagnose --format json --out FILE", path=path) from e
    else:
        data = source
    hyps = data.get("hypotheses") if isinstance(data, Mapping) else None
    if not isinstance(hyps, list):
        raise ConfigError("expected a diagnosis JSON object with a 'hypotheses' list", path=path,
                          column="hypotheses")
    if not hyps:
        raise ConfigError(f"the diagnosis has no hypotheses (verdict {data.get('verdict')!r}): nothing to replay",
                          path=path, column="hypotheses")
    if not 1 <= number <= len(hyps):
        raise ConfigError(f"expected a hypothesis number from 1 to {len(hyps)}, got {number}", path=path,
                          column="hypotheses")
    hyp = hyps[number - 1]
    if not isinstance(hyp, Mapping):
        raise ConfigError(f"expected hypothesis {number} as an object, got {type(hyp).__name__}", path=path,
                          column="hypotheses")
    return dict(hyp)
