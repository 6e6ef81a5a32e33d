"""Which stored requests to replay: a window, segments, request ids, or a diagnosis's affected set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import ConfigError, SchemaError
from mlsleuth.schema import TIMESTAMP, parse_timestamp, read_table
from mlsleuth.schema._tables import is_table_like, plain_types, read_log_rows

__all__ = ["LogSource", "Selection", "as_log_table", "attach_labels", "select"]


@runtime_checkable
class LogSource(Protocol):
    """What replay needs from a store (``LocalStore`` and ``MemoryStore`` both fit)."""

    def read_log(self, *, model: str | None = None, version: str | None = None, since: Any = None,
                 until: Any = None, where: Mapping[str, str] | None = None,
                 columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of the prediction log in ``[since, until)``, ``where`` being segment equalities."""
        ...

    def read_log_with_labels(self, *, model: str | None = None, version: str | None = None, since: Any = None,
                             until: Any = None, where: Mapping[str, str] | None = None,
                             columns: Sequence[str] | None = None) -> pa.Table:
        """The same rows with a ``label`` column joined on ``request_id`` (null where unknown)."""
        ...


def _ts(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"expected an ISO-8601 timestamp such as 2026-03-06T18:00:00Z, got {value!r}",
                          column=name) from e


def _freeze(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Selection:
    """A set of logged requests.

    Every criterion given must hold (AND); ``segments`` is a list of alternatives (OR), each a
    mapping of column to a value or a list of accepted values, as in a diagnosis's ``segments``.

    Parameters
    ----------
    since, until
        The window ``[since, until)`` on ``ts`` (ISO-8601 text or datetimes; naive means UTC).
    segments
        e.g. ``[{"region": "EU"}]`` or ``[{"region": ["EU", "UK"], "channel": "web"}]``.
    request_ids
        Only these requests.
    model, version
        Only requests of this model / model version.

    Examples
    --------
    >>> s = Selection(since="2026-03-06T18:00:00Z", segments=[{"region": "EU"}])
    >>> s.to_dict()["since"], s.to_dict()["segments"]
    ('2026-03-06T18:00:00Z', [{'region': 'EU'}])
    """

    since: datetime | None = None
    until: datetime | None = None
    segments: Any = ()
    request_ids: tuple[str, ...] | None = None
    model: str | None = None
    version: str | None = None
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        since, until = _ts(self.since, "since"), _ts(self.until, "until")
        if since is not None and until is not None and until <= since:
            raise ConfigError(f"expected until after since, got since={since.isoformat()} "
                              f"until={until.isoformat()}", column="until")
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        segs = self.segments
        if isinstance(segs, Mapping):
            segs = [segs]
        frozen = []
        for seg in segs:
            if not isinstance(seg, Mapping) and not (isinstance(seg, tuple) and all(
                    isinstance(p, tuple) and len(p) == 2 for p in seg)):
                raise ConfigError(f"expected each segment as a mapping of column to value(s), got {seg!r}",
                                  column="segments")
            items = seg.items() if isinstance(seg, Mapping) else seg
            frozen.append(tuple(sorted((str(k), _freeze(v)) for k, v in items)))
        object.__setattr__(self, "segments", tuple(frozen))
        if self.request_ids is not None:
            object.__setattr__(self, "request_ids", tuple(str(r) for r in _freeze(self.request_ids)))
        object.__setattr__(self, "_hash", hash((self.since, self.until, self.segments, self.request_ids,
                                                self.model, self.version)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def from_hypothesis(cls, hypothesis: Any, *, until: Any = None, model: str | None = None,
                        version: str | None = None) -> Selection:
        """The affected set of a diagnosis hypothesis: from its onset, in its segments.

        Parameters
        ----------
        hypothesis
            A ``Hypothesis`` object or its JSON form (a mapping with ``onset`` and ``segments``).
        until
            End of the window (default: open).
        """
        get = hypothesis.get if isinstance(hypothesis, Mapping) else lambda k, d=None: getattr(hypothesis, k, d)
        return cls(since=get("onset"), until=until, segments=tuple(get("segments", ()) or ()), model=model,
                   version=version)

    def replace(self, **changes: Any) -> Selection:
        """A copy with some criteria changed (``segments`` in either form)."""
        current = {"since": self.since, "until": self.until, "segments": self.segments,
                   "request_ids": self.request_ids, "model": self.model, "version": self.version}
        current.update(changes)
        return Selection(**current)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "since": None if self.since is None else self.since.isoformat().replace("+00:00", "Z"),
            "until": None if self.until is None else self.until.isoformat().replace("+00:00", "Z"),
            "segments": [{k: (v[0] if len(v) == 1 else list(v)) for k, v in seg} for seg in self.segments],
            "request_ids": None if self.request_ids is None else list(self.request_ids),
            "model": self.model,
            "version": self.version,
        }

    def mask(self, table: pa.Table) -> pa.Array:
        """A boolean mask of the rows of ``table`` in this selection."""
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        if self.since is not None or self.until is not None:
            ts = timestamps(table)
            if self.since is not None:
                keep &= _np_bool(pc.greater_equal(ts, pa.scalar(self.since, TIMESTAMP)))
            if self.until is not None:
                keep &= _np_bool(pc.less(ts, pa.scalar(self.until, TIMESTAMP)))
        for col, value in (("model", self.model), ("model_version", self.version)):
            if value is not None:
                keep &= _np_bool(pc.equal(_column(table, col, "selection"), pa.scalar(str(value))))
        if self.request_ids is not None:
            ids = _column(table, "request_id", "selection by request id")
            keep &= _np_bool(pc.is_in(ids.cast(pa.string()), value_set=pa.array(self.request_ids, pa.string())))
        if self.segments:
            any_seg = np.zeros(n, dtype=bool)
            for seg in self.segments:
                this = np.ones(n, dtype=bool)
                for col, values in seg:
                    arr = _column(table, col, "segment selection")
                    vs = pa.array(list(values))
                    if vs.type != arr.type:
                        arr, vs = arr.cast(pa.string()), vs.cast(pa.string())
                    this &= _np_bool(pc.is_in(arr, value_set=vs))
                any_seg |= this
            keep &= any_seg
        return pa.array(keep)


def _np_bool(arr: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _column(table: pa.Table, name: str, why: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise SchemaError(f"the {why} needs column {name!r}; the log has {table.column_names}", column=name)
    return table.column(name)


def timestamps(table: pa.Table) -> pa.ChunkedArray:
    """The ``ts`` column as UTC microsecond timestamps (ISO-8601 text is parsed)."""
    ts = _column(table, "ts", "time window")
    t = ts.type
    if pa.types.is_timestamp(t):
        return (ts if t.tz is not None else pc.assume_timezone(ts, "UTC")).cast(TIMESTAMP)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        norm = pc.replace_substring_regex(pc.utf8_trim_whitespace(ts), r"[zZ]$", "+00:00")
        norm = pc.replace_substring_regex(norm, r"^(\d{4}-\d{2}-\d{2}) ", r"\1T")
        try:
            return pc.cast(norm, TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaError(f"expected ISO-8601 timestamps ({e}); validate the log with mlsleuth.schema.validate "
                              "first", column="ts") from e
    raise SchemaError(f"expected timestamps, got {t}", column="ts")


def attach_labels(requests: pa.Table, labels: pa.Table | Any | None) -> pa.Table:
    """Left-join ``labels`` (``request_id``, ``label``, optional ``label_ts``) onto ``requests``.

    The latest label of a request wins (by ``label_ts``, else the last row); a ``label`` already in
    ``requests`` wins over the joined one.
    """
    if labels is None:
        return requests
    labels = read_table(labels)  # a table, a DataFrame or a file, with plain types
    for col in ("request_id", "label"):
        if col not in labels.column_names:
            raise SchemaError(f"labels need columns request_id and label; they have {labels.column_names}",
                              column=col)
    if "request_id" not in requests.column_names:
        raise SchemaError("joining labels needs a request_id column in the log", column="request_id")
    if "label_ts" in labels.column_names:  # the latest label of a request wins
        labels = labels.sort_by([("label_ts", "ascending")])
    lab = labels.select(["request_id", "label"])
    lab = lab.set_column(0, "request_id", lab.column(0).cast(pa.string()))
    lab = lab.group_by("request_id", use_threads=False).aggregate([("label", "last")]).rename_columns(
        ["request_id", "_label"])
    base = requests.append_column("_row", pa.array(np.arange(requests.num_rows)))
    base = base.set_column(base.column_names.index("request_id"), "request_id",
                           base.column("request_id").cast(pa.string()))
    joined = base.join(lab, "request_id", join_type="left outer", use_threads=False).sort_by("_row")
    label = joined.column("_label")
    if "label" not in requests.column_names:
        return requests.append_column("label", label)
    have = requests.column("label")
    try:
        merged = pc.coalesce(have, label.cast(have.type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise SchemaError(f"the log's labels are {have.type} but the labels file's are {label.type}",
                          column="label") from e
    out = requests.set_column(requests.column_names.index("label"), "label", merged)
    return out


def select(data: pa.Table | LogSource | Any, selection: Selection | None = None, *, labels: pa.Table | Any = None,
           with_labels: bool = False) -> pa.Table:
    """The requests of ``selection`` from a table or a store, with labels joined when asked.

    Parameters
    ----------
    data
        A prediction-log table, or a store with ``read_log`` / ``read_log_with_labels``; a file or a
        pandas/polars DataFrame is read and validated as a log (:func:`as_log_table`).
    selection
        Which requests (all when ``None``).
    labels
        A labels table (``request_id``, ``label``) to join: Arrow, a DataFrame or a file.
    with_labels
        For a store: read through ``read_log_with_labels``.
    """
    sel = selection or Selection()
    if not isinstance(data, pa.Table) and not isinstance(data, LogSource):
        data = as_log_table(data)
    if isinstance(data, pa.Table):
        data = plain_types(data)  # string_view, dictionary, float32 columns as every reader gives them
        table = data.filter(sel.mask(data)) if (sel != Selection()) else data
    elif isinstance(data, LogSource):
        # One segment of single values goes down to the store; anything else is filtered here.
        where = ({k: str(v[0]) for k, v in sel.segments[0]}
                 if len(sel.segments) == 1 and all(len(v) == 1 for _, v in sel.segments[0]) else None)
        args: dict[str, Any] = {"model": sel.model, "version": sel.version, "since": sel.since, "until": sel.until,
                                "where": where}
        table = None
        if with_labels and labels is None:
            try:
                table = data.read_log_with_labels(**args)
            except SchemaError:  # no request_id to join labels on: replay without labels
                table = None
        if table is None:
            table = data.read_log(**args)
        table = table.filter(sel.mask(table))
    else:
        raise ConfigError(f"expected a pyarrow Table or a store with read_log, got {type(data).__name__}")
    return attach_labels(table, labels)


def as_log_table(data: Any) -> pa.Table:
    """A prediction log given as a file or a pandas/polars DataFrame, read and validated (bad rows left out).

    Raises
    ------
    InputError
        When it cannot be read or no row passes validation (the message gives the first reason).
    """
    if not is_table_like(data) and not isinstance(data, str | Path):
        raise ConfigError(f"expected a pyarrow Table, a DataFrame, a file or a store with read_log, "
                          f"got {type(data).__name__}")
    return read_log_rows(data)


def window(since: Any, length: timedelta | None = None, until: Any = None) -> tuple[datetime | None, datetime | None]:
    """``(since, until)`` from a start and either a length or an end."""
    start = _ts(since, "since")
    end = _ts(until, "until")
    if end is None and length is not None and start is not None:
        end = start + length
    return start, end
