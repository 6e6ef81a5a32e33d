"""Request bodies: read within the size limit, parse JSON or Arrow IPC, and refuse what a batch may not hold.

Every check runs before anything is stored, so a refused request stores nothing. The checks on
an Arrow stream read only its metadata (row counts, field counts and the decompressed length that
prefixes each compressed buffer) before any buffer is decompressed, so a small zstd body that would
expand to gigabytes is refused without expanding it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from mlsleuth.server._config import Limits

__all__ = ["ARROW_STREAM", "check_event_year", "check_model_name", "check_table", "check_years", "json_body",
           "parse_table", "read_body", "type_name"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"

try:
    from fastapi import HTTPException, Request
except ImportError as _exc:  # pragma: no cover - the server extra installs it
    raise ImportError("mlsleuth's server needs fastapi and uvicorn: pip install 'mlsleuth[server]'") from _exc


# ------------------------------------------------------------------------------------------------ reading


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes.

    A ``Content-Encoding`` other than identity is refused (415): bodies are never inflated by the
    server; Arrow bodies carry their own compression, whose expansion :func:`parse_table` bounds.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPException(415, f"content-encoding: expected none, got {encoding!r}; send uncompressed JSON or an "
                                 "Arrow IPC stream with its own compression")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {int(declared):,} bytes exceeds the server's limit of {limit:,} "
                                 "bytes (max_body_mb); send smaller batches")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds the server's limit of {limit:,} bytes (max_body_mb); "
                                     "send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def type_name(v: Any) -> str:
    """``number`` for ints and floats, else the Python type's name, for error messages."""
    return "number" if isinstance(v, int | float) and not isinstance(v, bool) else type(v).__name__


def _too_deep(limits: Limits, where: str = "body") -> HTTPException:
    return HTTPException(422, f"{where}: JSON nested deeper than the limit of {limits.max_depth} levels "
                              "(limits.max_depth)")


def json_body(body: bytes, limits: Limits) -> Any:
    """Parse a JSON body; a body nested past ``limits.max_depth`` is refused (422), never a 500."""
    if not body.strip():
        raise HTTPException(422, "body: expected JSON, got an empty body")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc})") from exc
    except RecursionError:
        raise _too_deep(limits) from None
    _check_depth(data, limits, "body")
    return data


def _depth(v: Any, cap: int) -> int:
    """Nesting depth of ``v`` (a scalar is 0), counted no further than ``cap``."""
    if cap <= 0 or not isinstance(v, list | dict):
        return 0
    children = v.values() if isinstance(v, dict) else v
    return 1 + max((_depth(c, cap - 1) for c in children), default=0)


def _check_depth(data: Any, limits: Limits, where: str) -> None:
    if _depth(data, limits.max_depth + 1) > limits.max_depth:
        raise _too_deep(limits, where)


# ------------------------------------------------------------------------------------------------ JSON rows


def _check_rows(rows: list[Any], limits: Limits) -> list[str]:
    """Per-row and per-batch limits on JSON rows, naming the first row and field at fault; the fields of all
    rows, in the order they first appear."""
    if len(rows) > limits.max_rows:
        raise HTTPException(413, f"body: {len(rows):,} rows exceed the limit of {limits.max_rows:,} rows per request "
                                 "(limits.max_rows); send smaller batches")
    names: dict[str, None] = {}
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise HTTPException(422, f"body[{i}]: expected an object of column values, got {type_name(r)}")
        if len(r) > limits.max_columns:
            raise HTTPException(422, f"body[{i}]: {len(r):,} fields exceed the limit of {limits.max_columns:,} "
                                     "(limits.max_columns)")
        for k, v in r.items():
            if len(k) > limits.max_string_bytes:
                raise HTTPException(422, f"body[{i}]: a field name of {len(k):,} characters exceeds the limit of "
                                         f"{limits.max_string_bytes:,} (limits.max_string_bytes)")
            if isinstance(v, str) and len(v) > limits.max_string_bytes:
                raise HTTPException(422, f"body[{i}].{k}: a string of {len(v):,} characters exceeds the limit of "
                                         f"{limits.max_string_bytes:,} (limits.max_string_bytes)")
        if len(names) <= limits.max_columns:
            names.update(dict.fromkeys(r))
    if len(names) > limits.max_columns:
        raise HTTPException(422, f"body: the rows have more than {limits.max_columns:,} distinct fields "
                                 "(limits.max_columns)")
    return list(names)


#: Rows parsed and converted per step. Each step is one short call into C that holds the GIL; between
#: steps other threads (the event loop answering /health) get it back, so a big body never stalls them.
_STEP = 2000

_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    """The position of the first non-whitespace character at or after ``i``."""
    m = _WS.match(text, i)
    return m.end() if m is not None else i


def _json_rows(body: bytes, limits: Limits) -> Any:
    """A JSON body that is an array of rows, decoded one row at a time (anything else: :func:`json_body`).

    ``json.loads`` of a 60 MiB body is one C call that holds the GIL for a second; decoding row by
    row does the same work in short calls, and refuses a body with too many rows as soon as it has.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc})") from exc
    i = _skip(text, 0)
    if not text.startswith("[", i):
        return json_body(body, limits)
    decoder = json.JSONDecoder()
    rows: list[Any] = []
    i = _skip(text, i + 1)
    try:
        if text.startswith("]", i):
            i += 1
        else:
            while True:
                row, i = decoder.raw_decode(text, i)
                rows.append(row)
                if len(rows) > limits.max_rows:
                    raise HTTPException(413, f"body: more than {limits.max_rows:,} rows per request "
                                             "(limits.max_rows); send smaller batches")
                i = _skip(text, i)
                if text.startswith(",", i):
                    i = _skip(text, i + 1)
                elif text.startswith("]", i):
                    i += 1
                    break
                else:
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        if _skip(text, i) != len(text):
            raise json.JSONDecodeError("Extra data", text, i)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc})") from exc
    except RecursionError:
        raise _too_deep(limits) from None
    _check_depth(rows, limits, "body")
    return rows


def _from_rows(rows: list[dict[str, Any]], names: list[str]) -> pa.Table:
    """The rows as a table of the columns ``names`` (a row without one holds null), ``_STEP`` rows at a time."""
    parts = [pa.Table.from_pydict({k: [r.get(k) for r in rows[j:j + _STEP]] for k in names})
             for j in range(0, len(rows), _STEP)]
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")


def _rows_table(rows: Any, limits: Limits) -> pa.Table:
    """A JSON array of row objects as an Arrow table; errors name the field path (``body[3].score``)."""
    if isinstance(rows, dict) and isinstance(rows.get("rows"), list):
        rows = rows["rows"]
    if not isinstance(rows, list):
        raise HTTPException(422, f"body: expected a JSON array of row objects, got {type_name(rows)}")
    if not rows:
        raise HTTPException(422, "body: expected at least one row, got an empty array")
    names = _check_rows(rows, limits)
    try:
        return _from_rows(rows, names)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        # Find the first value whose type differs from the column's first one, to name it.
        first: dict[str, tuple[int, str]] = {}
        for i, r in enumerate(rows):
            for k, v in r.items():
                if v is None:
                    continue
                t = type_name(v)
                if k not in first:
                    first[k] = (i, t)
                elif first[k][1] != t:
                    j, t0 = first[k]
                    raise HTTPException(422, f"body[{i}].{k}: expected a {t0} like body[{j}].{k}, got a {t}") from exc
        raise HTTPException(422, f"body: the rows do not form a table: {exc}") from exc


# ------------------------------------------------------------------------------------------------ Arrow streams

# Flatbuffer readers for the two tables of Arrow's Message.fbs the limits need (Message, RecordBatch).
_MESSAGE_HEADER, _DICTIONARY_BATCH, _RECORD_BATCH = 2, 2, 3


def _field(buf: memoryview, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` lies, ``None`` when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    entry = 4 + 2 * index
    if entry >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    off = struct.unpack_from("<H", buf, vtable + entry)[0]
    return table + off if off else None


def _ref(buf: memoryview, at: int) -> int:
    return at + struct.unpack_from("<I", buf, at)[0]


def _batch_size(meta: memoryview, body: memoryview | None) -> tuple[int, int, int] | None:
    """``(rows, fields, decompressed bytes)`` of a record or dictionary batch message, from its metadata."""
    root = _ref(meta, 0)
    kind_at = _field(meta, root, 1)
    header_at = _field(meta, root, _MESSAGE_HEADER)
    if kind_at is None or header_at is None:
        return None
    kind = meta[kind_at]
    batch = _ref(meta, header_at)
    if kind == _DICTIONARY_BATCH:
        data_at = _field(meta, batch, 1)
        if data_at is None:
            return None
        batch = _ref(meta, data_at)
    elif kind != _RECORD_BATCH:
        return None
    rows_at = _field(meta, batch, 0)
    rows = struct.unpack_from("<q", meta, rows_at)[0] if rows_at is not None else 0
    nodes_at = _field(meta, batch, 1)
    fields = struct.unpack_from("<I", meta, _ref(meta, nodes_at))[0] if nodes_at is not None else 0
    compressed = _field(meta, batch, 3) is not None
    decoded = 0
    buffers_at = _field(meta, batch, 2)
    if buffers_at is not None:
        vec = _ref(meta, buffers_at)
        for k in range(struct.unpack_from("<I", meta, vec)[0]):
            offset, length = struct.unpack_from("<qq", meta, vec + 4 + 16 * k)
            if compressed and length >= 8 and body is not None:
                # A compressed buffer starts with its decompressed length (-1: stored as is).
                size = struct.unpack_from("<q", body, offset)[0]
                decoded += length - 8 if size < 0 else size
            else:
                decoded += length
    return rows, fields, decoded


def _flat_fields(types: Iterable[pa.DataType], depth: int = 1) -> tuple[int, int]:
    """How many fields ``types`` hold with their children, and how deep the deepest nests."""
    count, deepest = 0, depth
    for t in types:
        count += 1
        if t.num_fields:
            c, d = _flat_fields((t.field(i).type for i in range(t.num_fields)), depth + 1)
            count, deepest = count + c, max(deepest, d)
    return count, deepest


def _scan_stream(body: bytes, limits: Limits) -> None:
    """Refuse a stream whose schema or batches pass the limits, reading metadata only."""
    reader = ipc.MessageReader.open_stream(pa.BufferReader(body))
    rows = decoded = 0
    while True:
        try:
            msg = reader.read_next_message()
        except StopIteration:
            break
        if msg is None:
            break
        if msg.type == "schema":
            schema = ipc.read_schema(msg)
            fields, depth = _flat_fields(f.type for f in schema)
            if fields > limits.max_columns:
                raise HTTPException(422, f"body: the Arrow schema has {fields:,} fields, more than the limit of "
                                         f"{limits.max_columns:,} (limits.max_columns)")
            if depth > limits.max_depth:
                raise HTTPException(422, f"body: an Arrow column nests {depth} levels deep, more than the limit of "
                                         f"{limits.max_depth} (limits.max_depth)")
            continue
        body_view = memoryview(msg.body) if msg.body is not None else None
        size = _batch_size(memoryview(msg.metadata), body_view)
        if size is None:
            continue
        n, _, d = size
        rows, decoded = rows + max(n, 0), decoded + max(d, 0)
        if rows > limits.max_rows:
            raise HTTPException(413, f"body: the Arrow stream holds more than {limits.max_rows:,} rows "
                                     "(limits.max_rows); send smaller batches")
        if decoded > limits.max_decoded_bytes:
            raise HTTPException(413, f"body: the Arrow stream decompresses to more than {limits.max_decoded_bytes:,} "
                                     "bytes (limits.max_decoded_mb); send smaller batches")


def _arrow_table(body: bytes, limits: Limits) -> pa.Table:
    try:
        _scan_stream(body, limits)
        with ipc.open_stream(pa.BufferReader(body)) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, struct.error, IndexError, ValueError) as exc:
        raise HTTPException(400, f"body: not an Arrow IPC stream ({exc})") from exc


def _longest(arr: pa.ChunkedArray | pa.Array) -> int:
    """The longest string or binary value in ``arr``, looking inside lists, structs and dictionaries."""
    t = arr.type
    if pa.types.is_dictionary(t):
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        return max((_longest(c.dictionary) for c in chunks), default=0)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return int(pc.max(pc.binary_length(arr)).as_py() or 0) if len(arr) else 0
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _longest(pc.list_flatten(arr))
    if pa.types.is_map(t):
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        return max((max(_longest(c.keys), _longest(c.items)) for c in chunks), default=0)
    if pa.types.is_struct(t):
        return max((_longest(pc.struct_field(arr, [i])) for i in range(t.num_fields)), default=0)
    return 0


def check_table(table: pa.Table, limits: Limits) -> None:
    """Column count and string lengths of a parsed batch (JSON or Arrow), naming the column at fault."""
    if table.num_columns > limits.max_columns:
        raise HTTPException(422, f"body: {table.num_columns:,} columns exceed the limit of {limits.max_columns:,} "
                                 "(limits.max_columns)")
    for name in table.column_names:
        if len(name) > limits.max_string_bytes:
            raise HTTPException(422, f"body: a column name of {len(name):,} characters exceeds the limit of "
                                     f"{limits.max_string_bytes:,} (limits.max_string_bytes)")
        longest = _longest(table.column(name))
        if longest > limits.max_string_bytes:
            raise HTTPException(422, f"body[].{name}: a value of {longest:,} bytes exceeds the limit of "
                                     f"{limits.max_string_bytes:,} (limits.max_string_bytes)")


def parse_table(body: bytes, content_type: str, limits: Limits | None = None) -> pa.Table:
    """Rows from a JSON array (``application/json``) or an Arrow IPC stream body, within ``limits``.

    Parameters
    ----------
    body
        The request body.
    content_type
        Its ``Content-Type``: ``application/json`` (or empty) or ``application/vnd.apache.arrow.stream``.
    limits
        Columns, rows, decompressed bytes, string length and nesting allowed (default :class:`Limits`).

    Returns
    -------
    pyarrow.Table
        The rows.

    Raises
    ------
    fastapi.HTTPException
        400 for a body that does not parse, 413 for one past a size limit, 415 for another content
        type, 422 for rows past a per-row limit or not forming a table; the detail names the field.
    """
    limits = limits or Limits()
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == ARROW_STREAM:
        table = _arrow_table(body, limits)
        if table.num_rows == 0:
            raise HTTPException(422, "body: the Arrow stream holds no rows")
    elif ctype in ("application/json", "", "text/json"):
        if not body.strip():
            raise HTTPException(422, "body: expected JSON, got an empty body")
        table = _rows_table(_json_rows(body, limits), limits)
    else:
        raise HTTPException(415, f"content-type: expected application/json or {ARROW_STREAM}, got {ctype!r}")
    check_table(table, limits)
    return table


# ------------------------------------------------------------------------------------------------ names and times

_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_model_name(name: object, where: str) -> str:
    """``name`` if it can name a model's pages and files: non-empty, no ``/``, ``\\`` or control
    characters, no leading ``.``, at most 200 characters; else 422 naming ``where``."""
    if not isinstance(name, str) or not name or name.startswith(".") or len(name) > 200 or _BAD_NAME.search(name):
        shown = name[:60] + "..." if isinstance(name, str) and len(name) > 60 else name
        raise HTTPException(422, f"{where}: a model name must be 1-200 characters without '/', '\\', control "
                                 f"characters or a leading '.', got {shown!r}")
    return name


#: Epoch numbers are read in the unit their largest magnitude implies (as the store does): s below 1e11,
#: ms below 1e14, µs below 1e17, else ns; each unit with its length in seconds.
_EPOCH = ((1e11, 1.0), (1e14, 1e-3), (1e17, 1e-6), (float("inf"), 1e-9))
_YEAR_SECONDS = 365.2425 * 86400


def _years(col: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The calendar year of each value of a time column (null where it has none); ``None`` for other types."""
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pc.year(col.cast(pa.timestamp("us")) if pa.types.is_date(t) else col)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        biggest = pc.max(pc.abs(col.cast(pa.float64()))).as_py()
        if biggest is None:
            return None
        seconds = next(s for bound, s in _EPOCH if biggest < bound)
        return pc.floor(pc.add(pc.divide(pc.multiply(col.cast(pa.float64()), seconds), _YEAR_SECONDS), 1970.0))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        year = pc.extract_regex(pc.utf8_trim_whitespace(col), r"^(?P<y>[+-]?\d{1,9})-")
        return pc.struct_field(year, "y").cast(pa.int64())
    return None


def check_years(table: pa.Table, column: str, limits: Limits) -> None:
    """Refuse (422) a batch with a ``column`` time outside ``[min_year, max_year]``, naming the first row."""
    if column not in table.column_names:
        return
    years = _years(table.column(column))
    if years is None:
        return
    bad = pc.or_(pc.less(years, limits.min_year), pc.greater(years, limits.max_year))
    i = pc.index(bad, True).as_py()
    if i is not None and i >= 0:
        value = table.column(column)[i].as_py()
        raise HTTPException(422, f"body[{i}].{column}: {value!s:.40} is outside the years {limits.min_year}-"
                                 f"{limits.max_year} this server accepts (limits.min_year, limits.max_year)")


def check_event_year(ts: datetime, limits: Limits, where: str) -> None:
    """Refuse (422) an event time outside ``[min_year, max_year]``."""
    if not limits.min_year <= ts.year <= limits.max_year:
        raise HTTPException(422, f"{where}: {ts.isoformat()} is outside the years {limits.min_year}-"
                                 f"{limits.max_year} this server accepts (limits.min_year, limits.max_year)")
